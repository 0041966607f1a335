"""BACKWARD compatibility check with the Apache ``avro`` package's reader/writer checker.

BACKWARD (the project's rule, and Confluent's default): consumers using the *new* schema can
read everything written with the *previous* one. In Avro terms the new schema is the reader and
the old one the writer. In practice: a new field needs a default, a removed field is fine, a
type may only be promoted (int -> long -> float -> double, string <-> bytes), an enum may gain
symbols (or lose some when it declares a default).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import avro.compatibility
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from streams.contracts.errors import SchemaLoadError


@dataclass(frozen=True, slots=True)
class CompatProblem:
    """One reason the new schema cannot read old data, located by JSON pointer."""

    kind: str  # e.g. reader_field_missing_default_value, type_mismatch
    message: str
    location: str  # JSON pointer in the reader schema, e.g. /fields/12/type

    def __str__(self) -> str:
        return f"{self.kind} at {self.location}: {self.message}"


@dataclass(frozen=True, slots=True)
class CompatResult:
    """Outcome of checking one new schema against one earlier version."""

    compatible: bool
    problems: tuple[CompatProblem, ...] = ()


def _parse(text: str, label: str) -> avro.schema.Schema:
    try:
        return avro.schema.parse(text)
    except Exception as exc:  # avro raises SchemaParseException and plain errors alike
        raise SchemaLoadError(label, f"the avro package cannot parse it: {exc}") from exc


_RECORDING = threading.Lock()


@contextlib.contextmanager
def _recorded_incompatibilities() -> Iterator[list[CompatProblem]]:
    """Each incompatibility as the checker finds it, kind, message and location together.

    The checker's result keeps messages and locations as two unordered sets, so with several
    problems nothing says which message belongs where; its module-level ``incompatible``
    factory still sees them together, so it is wrapped for the duration of one check.
    """
    found: list[CompatProblem] = []
    original = avro.compatibility.incompatible

    def record(kind: Any, message: str, location: list[str]) -> Any:
        result = original(kind, message, location)
        (where,) = result.locations
        found.append(CompatProblem(kind.value, message, where))
        return result

    with _RECORDING:
        avro.compatibility.incompatible = record  # type: ignore[assignment]
        try:
            yield found
        finally:
            avro.compatibility.incompatible = original


def check_backward(new_text: str, old_text: str) -> CompatResult:
    """Can a reader with ``new_text`` read data written with ``old_text``?"""
    reader = _parse(new_text, "new schema")
    writer = _parse(old_text, "previous schema")
    with _recorded_incompatibilities() as found:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return CompatResult(True)
    # Union branches are tried one by one: keep only what the final result still reports.
    kept = [f for f in found if f.message in result.messages and f.location in result.locations]
    if kept:
        return CompatResult(False, tuple(dict.fromkeys(kept)))
    kinds = [i.value for i in result.incompatibilities]
    messages = sorted(str(m) for m in result.messages)
    locations = sorted(result.locations - {"/"}) or ["/"]
    # The checker reports sets, not aligned lists: pair them when the counts agree, otherwise
    # report every message with all locations so nothing is hidden.
    if len(kinds) == len(messages) == len(locations):
        problems = tuple(map(CompatProblem, kinds, messages, locations))
    else:
        where = ", ".join(locations)
        kind = ",".join(sorted(set(kinds)))
        problems = tuple(CompatProblem(kind, m, where) for m in messages)
    return CompatResult(False, problems)


def check_backward_all(new_text: str, previous: Sequence[str], *, transitive: bool) -> CompatResult:
    """Check against the latest previous version, or every previous one when ``transitive``."""
    targets = list(previous) if transitive else list(previous[-1:])
    problems: list[CompatProblem] = []
    for old in targets:
        problems.extend(check_backward(new_text, old).problems)
    return CompatResult(not problems, tuple(problems))
