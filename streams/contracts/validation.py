"""Fast record validation against a parsed Avro schema, with field paths in the errors.

fastavro's writer coerces silently (``1.5`` written to a ``long`` becomes ``1``, ``True``
becomes ``1``) and its validator reports record-qualified names without array indices. This
module compiles a schema once into nested checker closures: the happy path builds no strings
and allocates nothing; only a failure assembles the path (``votes[2].confidence``) while the
error propagates outwards.

On top of Avro's own rules, ``float``/``double`` values must be finite: a NaN price or
feature is a bug upstream, and the contract is where it is stopped.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], None]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class Violation(Exception):
    """A value broke the schema; ``path`` is built innermost-first while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str] = []

    @property
    def path(self) -> str:
        """Dotted path from the record root, e.g. ``legs[1].price``."""
        out = ""
        for part in reversed(self.parts):
            out += part if part.startswith("[") or not out else "." + part
        return out


def compile_validator(schema: Any) -> Check:
    """A checker for fastavro-parsed ``schema``; raises :class:`Violation` on a bad datum."""
    return _Compiler().compile(schema)


def _describe(value: Any) -> str:
    text = repr(value)
    return (
        f"{text[:60]}... ({type(value).__name__})"
        if len(text) > 60
        else f"{text} ({type(value).__name__})"
    )


def _is_integral(value: Any) -> bool:
    return type(value) is int or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
    )


def _int_check(bounds: tuple[int, int], avro_type: str) -> Check:
    low, high = bounds

    def check(value: Any) -> None:
        if not _is_integral(value):
            raise Violation(f"expected {avro_type}, got {_describe(value)}")
        if not low <= value <= high:
            raise Violation(f"{value} is out of range for {avro_type}")

    return check


def _float_check(avro_type: str) -> Check:
    def check(value: Any) -> None:
        if type(value) is not float and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)
        ):
            raise Violation(f"expected {avro_type}, got {_describe(value)}")
        if not math.isfinite(value):
            raise Violation(f"{avro_type} must be finite, got {value}")

    return check


def _type_check(types: tuple[type, ...], avro_type: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, types):
            raise Violation(f"expected {avro_type}, got {_describe(value)}")

    return check


def _boolean(value: Any) -> None:
    if type(value) is not bool:
        raise Violation(f"expected boolean, got {_describe(value)}")


def _null(value: Any) -> None:
    if value is not None:
        raise Violation(f"expected null, got {_describe(value)}")


_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int_check(_INT32, "int"),
    "long": _int_check(_INT64, "long"),
    "float": _float_check("float"),
    "double": _float_check("double"),
    "string": _type_check((str,), "string"),
    "bytes": _type_check((bytes, bytearray), "bytes"),
}


def _float_array(items: Check) -> Check:
    """Arrays of float/double: one C-level ``fsum`` checks type and finiteness of all items."""

    def check(value: Any) -> None:
        if type(value) is not list and type(value) is not tuple:
            raise Violation(f"expected array (list or tuple), got {_describe(value)}")
        try:
            if math.isfinite(math.fsum(value)):
                return
        except (TypeError, ValueError, OverflowError):
            pass
        _check_items(items, value)  # locate the culprit (or accept a huge-but-finite sum)

    return check


def _check_items(items: Check, value: Any) -> None:
    for index, item in enumerate(value):
        try:
            items(item)
        except Violation as exc:
            exc.parts.append(f"[{index}]")
            raise


def _array(items: Check) -> Check:
    def check(value: Any) -> None:
        if type(value) is not list and type(value) is not tuple:
            raise Violation(f"expected array (list or tuple), got {_describe(value)}")
        _check_items(items, value)

    return check


def _map(values: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Violation(f"expected map, got {_describe(value)}")
        for key, item in value.items():
            if type(key) is not str:
                raise Violation(f"map keys must be strings, got {_describe(key)}")
            try:
                values(item)
            except Violation as exc:
                exc.parts.append(f"[{key!r}]")
                raise

    return check


def _enum(symbols: list[str], name: str) -> Check:
    allowed = frozenset(symbols)

    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise Violation(f"{_describe(value)} is not a symbol of {name} {sorted(allowed)}")

    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> None:
        if value is not None:
            inner(value)

    return check


def _union(branches: list[Check], label: str) -> Check:
    def check(value: Any) -> None:
        for branch in branches:
            try:
                branch(value)
                return
            except Violation:
                continue
        raise Violation(f"{_describe(value)} matches no branch of {label}")

    return check


def _fixed(size: int, name: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, bytes | bytearray) or len(value) != size:
            raise Violation(f"expected {size} bytes for fixed {name}, got {_describe(value)}")

    return check


def _record(fields: list[tuple[str, Check, bool]], name: str) -> Check:
    names = frozenset(f[0] for f in fields)

    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Violation(f"expected record {name} (a mapping), got {_describe(value)}")
        for field, field_check, has_default in fields:
            if field in value:
                try:
                    field_check(value[field])
                except Violation as exc:
                    exc.parts.append(field)
                    raise
            elif not has_default:
                missing = Violation(f"required field of {name} is missing")
                missing.parts.append(field)
                raise missing
        if len(value) > len(names) or not names.issuperset(value):
            unknown = sorted(str(k) for k in value if k not in names)
            raise Violation(f"unknown field(s) for {name}: {', '.join(unknown)}")

    return check


class _Compiler:
    """Compiles named types once; recursive references resolve lazily."""

    def __init__(self) -> None:
        self.named: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if isinstance(schema, str):
            return self._named_or_primitive(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        if kind == "record" or kind == "error":
            return self._record(schema)
        if kind == "enum":
            return self._register(schema["name"], _enum(schema["symbols"], schema["name"]))
        if kind == "fixed":
            return self._register(schema["name"], _fixed(schema["size"], schema["name"]))
        if kind == "array":
            return self._array(schema["items"])
        if kind == "map":
            return _map(self.compile(schema["values"]))
        return self.compile(kind)  # {"type": "long", "logicalType": ...}

    def _named_or_primitive(self, name: str) -> Check:
        if name in _PRIMITIVES:
            return _PRIMITIVES[name]
        if name in self.named:
            return self.named[name]
        return lambda value: self.named[name](value)  # recursive type, defined later

    def _register(self, name: str, check: Check) -> Check:
        self.named[name] = check
        return check

    def _union(self, branches: list[Any]) -> Check:
        non_null = [b for b in branches if b != "null"]
        if len(branches) == 2 and len(non_null) == 1:
            return _optional(self.compile(non_null[0]))
        return _union([self.compile(b) for b in branches], str(branches))

    def _array(self, items: Any) -> Check:
        check = self.compile(items)
        if items in ("float", "double"):
            return _float_array(check)
        return _array(check)

    def _record(self, schema: Mapping[str, Any]) -> Check:
        name = schema["name"]
        self.named[name] = lambda value: self.named[name](value)  # allow self-reference
        fields = [(f["name"], self.compile(f["type"]), "default" in f) for f in schema["fields"]]
        return self._register(name, _record(fields, name))
