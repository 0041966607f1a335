"""Drift check: does each record dataclass still mirror its Avro schema?

Compares, recursively, field names and order, types (long/int -> int, double/float -> float,
string -> str, boolean -> bool, bytes -> bytes, enum -> StrEnum with the same symbols,
array -> tuple, map -> Mapping[str, ...], record -> AvroRecord subclass of the same name,
["null", X] -> X | None) and defaults. Returns human-readable differences; empty = in sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, cast, get_args, get_origin

from streams.contracts.base import AvroRecord, field_types, unwrap_optional
from streams.contracts.schema_loader import ParsedSchema

_PRIMITIVE_PY = {
    "long": int, "int": int, "double": float, "float": float,
    "string": str, "boolean": bool, "bytes": bytes,
}  # fmt: skip


def record_drift(cls: type[AvroRecord], schema: ParsedSchema) -> list[str]:
    """Differences between ``cls`` and the parsed record ``schema`` (empty when in sync)."""
    drift = _Drift()
    drift.collect(schema)
    return drift.record(cls, schema, cls.__name__)


class _Drift:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def collect(self, avro: Any) -> None:
        """Index every named type first, so references resolve even after an early mismatch."""
        if isinstance(avro, list):
            for branch in avro:
                self.collect(branch)
        elif isinstance(avro, dict):
            if avro["type"] in ("record", "enum", "fixed"):
                self.named[avro["name"]] = avro
            for field in avro.get("fields", []):
                self.collect(field["type"])
            self.collect(avro.get("items"))
            self.collect(avro.get("values"))

    def record(self, cls: type, schema: Any, where: str) -> list[str]:
        if not (isinstance(cls, type) and issubclass(cls, AvroRecord)):
            return [f"{where}: schema has record {schema['name']}, Python has {cls}"]
        problems = []
        if schema["name"] != cls.avro_fullname():
            problems.append(f"{where}: Avro name {schema['name']} != {cls.avro_fullname()}")
        types = field_types(cls)
        avro_names = [f["name"] for f in schema["fields"]]
        if list(types) != avro_names:
            problems.append(
                f"{where} ({cls.__name__}): fields differ: "
                f"Python {list(types)} vs Avro {avro_names}"
            )
            return problems
        defaults = {f.name: f for f in dataclasses.fields(cast(Any, cls))}
        for avro_field in schema["fields"]:
            name = avro_field["name"]
            path = f"{where}.{name}"
            problems += self.type(types[name], avro_field["type"], path)
            problems += _default(defaults[name], avro_field, path)
        return problems

    def type(self, hint: Any, avro: Any, where: str) -> list[str]:
        if isinstance(avro, str) and avro in self.named:
            avro = self.named[avro]
        inner, optional = unwrap_optional(hint)
        if isinstance(avro, list):
            non_null = [b for b in avro if b != "null"]
            if not (optional and "null" in avro and len(non_null) == 1):
                return [f"{where}: only ['null', X] unions map to `X | None` (got {avro})"]
            return self.type(inner, non_null[0], where)
        if optional:
            return [f"{where}: Python allows None, Avro type {_label(avro)} does not"]
        if isinstance(avro, str):
            expected = _PRIMITIVE_PY.get(avro)
            return [] if inner is expected else [f"{where}: {avro} expects {expected}, got {inner}"]
        return self.complex(inner, avro, where)

    def complex(self, hint: Any, avro: Mapping[str, Any], where: str) -> list[str]:
        kind = avro["type"]
        if kind == "record":
            return self.record(hint, avro, where)
        if kind == "enum":
            return _enum(hint, avro, where)
        if kind == "array":
            if get_origin(hint) is not tuple:
                return [f"{where}: array expects tuple[..., ...], got {hint}"]
            return self.type(get_args(hint)[0], avro["items"], f"{where}[]")
        if kind == "map":
            if get_origin(hint) not in (Mapping, dict):
                return [f"{where}: map expects Mapping[str, ...], got {hint}"]
            return self.type(get_args(hint)[1], avro["values"], f"{where}{{}}")
        return self.type(hint, kind, where)  # logical types wrap a primitive


def _enum(hint: Any, avro: Mapping[str, Any], where: str) -> list[str]:
    if not (isinstance(hint, type) and issubclass(hint, Enum)):
        return [f"{where}: enum {avro['name']} expects an Enum class, got {hint}"]
    symbols = [m.value for m in hint]
    if symbols != list(avro["symbols"]):
        return [f"{where}: enum symbols differ: Python {symbols} vs Avro {avro['symbols']}"]
    return []


def _default(
    py_field: dataclasses.Field[Any], avro_field: Mapping[str, Any], where: str
) -> list[str]:
    has_py = py_field.default is not dataclasses.MISSING
    has_py_factory = py_field.default_factory is not dataclasses.MISSING
    if "default" not in avro_field:
        return [f"{where}: Python has a default, Avro has none"] if has_py or has_py_factory else []
    if has_py_factory:
        value = cast(Callable[[], Any], py_field.default_factory)()
    elif has_py:
        value = py_field.default
    else:
        return [f"{where}: Avro default {avro_field['default']!r} missing in Python"]
    if isinstance(value, tuple):
        value = list(value)
    if value != avro_field["default"]:
        return [f"{where}: default differs: Python {value!r} vs Avro {avro_field['default']!r}"]
    return []


def _label(avro: Any) -> str:
    return avro if isinstance(avro, str) else str(avro.get("type"))
