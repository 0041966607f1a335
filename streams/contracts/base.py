"""Conversion between frozen record dataclasses and the plain dicts fastavro reads and writes.

Every contract record subclasses :class:`AvroRecord`. The conversion plan of a class (which
fields need a nested conversion, which are already in Avro form) is derived once from its type
hints and cached, so ``to_avro``/``from_avro`` do no introspection per record.

Why a plan instead of ``dataclasses.asdict``: ``asdict`` deep-copies every field (slow for
feature windows) and cannot rebuild enums, tuples and nested records on the way back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, ClassVar, Self, cast

Converter = Callable[[Any], Any]


class AvroRecord:
    """Base of every contract record (frozen, slotted, keyword-only dataclasses).

    The Avro record name of a subclass is its class name; its namespace is
    :data:`AVRO_NAMESPACE`. ``to_avro`` returns the dict fastavro writes; ``from_avro``
    accepts the dict fastavro reads.
    """

    __slots__ = ()
    AVRO_NAMESPACE: ClassVar[str] = "quantum_trader.v1"

    @classmethod
    def avro_fullname(cls) -> str:
        """Full Avro name, e.g. ``quantum_trader.v1.TickReceived``."""
        return f"{cls.AVRO_NAMESPACE}.{cls.__name__}"

    def to_avro(self) -> dict[str, Any]:
        """The record as a plain dict for fastavro (enums stay ``StrEnum``, i.e. strings)."""
        out: dict[str, Any] = {}
        for name, to_avro, _ in _plan(type(self)):
            value = getattr(self, name)
            out[name] = value if to_avro is None or value is None else to_avro(value)
        return out

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> Self:
        """Build the record from a dict as fastavro reads it (lists, strings, nested dicts)."""
        kwargs: dict[str, Any] = {}
        for name, _, from_avro in _plan(cls):
            value = data[name]
            kwargs[name] = value if from_avro is None or value is None else from_avro(value)
        return cls(**kwargs)


# (field name, to-avro converter or None for identity, from-avro converter or None)
FieldPlan = tuple[str, Converter | None, Converter | None]
_PLANS: dict[type, tuple[FieldPlan, ...]] = {}


def _plan(cls: type) -> tuple[FieldPlan, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = tuple(
            (f.name, *_converters(hints[f.name])) for f in dataclasses.fields(cast(Any, cls))
        )
        _PLANS[cls] = plan
    return plan


def field_types(cls: type[AvroRecord]) -> dict[str, Any]:
    """Resolved type hints of a record's fields, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cast(Any, cls))}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported in records, got {hint}")
        return args[0], True
    return hint, False


def _converters(hint: Any) -> tuple[Converter | None, Converter | None]:
    """(to_avro, from_avro) for one type hint; None means the value passes unchanged.

    ``None`` values never reach a converter (the callers short-circuit), so optional types
    use the converters of their inner type.
    """
    inner, _ = unwrap_optional(hint)
    origin = typing.get_origin(inner)
    if isinstance(inner, type) and issubclass(inner, AvroRecord):
        return _record_to_avro, inner.from_avro
    if isinstance(inner, type) and issubclass(inner, Enum):
        return None, inner  # StrEnum members are str: fastavro writes them as they are
    if origin is tuple:
        return _sequence_converters(typing.get_args(inner)[0])
    if origin in (Mapping, dict):
        return _mapping_converters(typing.get_args(inner)[1])
    if inner in (int, float, str, bool, bytes):
        return None, None
    raise TypeError(f"unsupported field type in a contract record: {hint}")


def _record_to_avro(value: AvroRecord) -> dict[str, Any]:
    return value.to_avro()


def _sequence_converters(item: Any) -> tuple[Converter | None, Converter | None]:
    to_item, from_item = _converters(item)
    to_avro: Converter | None = None
    if to_item is not None:
        to_avro = _mapper(to_item)
    if from_item is None:
        return to_avro, tuple
    return to_avro, _tuple_mapper(from_item)


def _mapping_converters(value: Any) -> tuple[Converter | None, Converter | None]:
    to_value, from_value = _converters(value)
    if to_value is None and from_value is None:
        return None, dict
    return _dict_mapper(to_value), _dict_mapper(from_value)


def _mapper(fn: Converter) -> Converter:
    return lambda values: [fn(v) for v in values]


def _tuple_mapper(fn: Converter) -> Converter:
    return lambda values: tuple(fn(v) for v in values)


def _dict_mapper(fn: Converter | None) -> Converter:
    if fn is None:
        return dict
    return lambda values: {k: fn(v) for k, v in values.items()}
