"""Schema registries: where schema ids come from.

* :class:`FileSchemaRegistry` — ``schemas/registry.json`` plus the released schema texts in
  ``schemas/released/<subject>/v<N>.avsc``. Reviewed in pull requests like code; ids are
  assigned once, monotonically, and never reused. Used when ``QT_SCHEMA_REGISTRY_URL`` is unset.
* :class:`ConfluentSchemaRegistry` — any Confluent-compatible HTTP registry (Confluent, Apicurio
  ``/apis/ccompat/v7``, ``quantum-trader schemas serve``) through confluent-kafka's
  ``SchemaRegistryClient``.

Both enforce BACKWARD compatibility on registration (the HTTP registry server-side).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from streams.contracts.compat import check_backward
from streams.contracts.errors import IncompatibleSchemaError, RegistryError
from streams.contracts.schema_loader import SCHEMAS_DIR, parse_schema_text

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.config import Settings

REGISTRY_FILE = "registry.json"
RELEASED_DIR = "released"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema_text: str


class SchemaRegistry(Protocol):
    """What the codec and ``schemas`` commands need from a registry."""

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        ...

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first; empty when the subject is unknown."""
        ...

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema | None:
        """The version of ``subject`` whose schema equals ``schema_text``, if any."""
        ...

    def register(self, subject: str, schema_text: str) -> RegisteredSchema:
        """Register ``schema_text`` as the next version (idempotent); refuses BACKWARD breaks."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text with ``schema_id``; raises :class:`RegistryError` when unknown."""
        ...


def latest(registry: SchemaRegistry, subject: str) -> RegisteredSchema | None:
    """The newest version of ``subject``, or None when nothing is registered."""
    found = registry.versions(subject)
    return found[-1] if found else None


# --------------------------------------------------------------------------- file registry


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    schema_id: int
    fingerprint: str
    canonical_fingerprint: str
    schema: str  # path relative to the schemas directory

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.schema_id,
            "fingerprint": self.fingerprint,
            "canonical_fingerprint": self.canonical_fingerprint,
            "schema": self.schema,
        }


class FileSchemaRegistry:
    """A registry kept in ``<schemas_dir>/registry.json`` and ``<schemas_dir>/released/``.

    Reads are served from memory (loaded once); :meth:`register` rewrites the file atomically.
    Not meant for concurrent writers: releases happen in pull requests, one at a time.
    """

    def __init__(self, schemas_dir: Path = SCHEMAS_DIR) -> None:
        self.schemas_dir = schemas_dir
        self.path = schemas_dir / REGISTRY_FILE
        self._next_id, self._subjects = self._read()
        self._texts: dict[int, str] = {}

    def _read(self) -> tuple[int, dict[str, list[_Entry]]]:
        if not self.path.exists():
            return 1, {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            subjects = {
                subject: [
                    _Entry(
                        e["version"],
                        e["id"],
                        e["fingerprint"],
                        e["canonical_fingerprint"],
                        e["schema"],
                    )
                    for e in entries
                ]
                for subject, entries in doc["subjects"].items()
            }
            return int(doc["next_id"]), subjects
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{self.path} is not a valid registry file: {exc!r}") from exc

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        return sorted(self._subjects)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first."""
        return [self._registered(subject, e) for e in self._subjects.get(subject, [])]

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema | None:
        """The version of ``subject`` with the same normalized schema (docs included)."""
        fingerprint = parse_schema_text(schema_text).fingerprint
        for entry in self._subjects.get(subject, []):
            if entry.fingerprint == fingerprint:
                return self._registered(subject, entry)
        return None

    def schema_by_id(self, schema_id: int) -> str:
        """The released schema text with ``schema_id``."""
        text = self._texts.get(schema_id)
        if text is not None:
            return text
        for entries in self._subjects.values():
            for entry in entries:
                if entry.schema_id == schema_id:
                    return self._text(entry)
        raise RegistryError(f"schema id {schema_id} is not in {self.path}")

    def register(self, subject: str, schema_text: str) -> RegisteredSchema:
        """Release ``schema_text`` as the next version of ``subject`` (no-op if already there)."""
        existing = self.lookup(subject, schema_text)
        if existing is not None:
            return existing
        entries = self._subjects.setdefault(subject, [])
        if entries:
            result = check_backward(schema_text, self._text(entries[-1]))
            if not result.compatible:
                raise IncompatibleSchemaError(subject, [str(p) for p in result.problems])
        loaded = parse_schema_text(schema_text)
        version = entries[-1].version + 1 if entries else 1
        rel = f"{RELEASED_DIR}/{subject}/v{version}.avsc"
        target = self.schemas_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_pretty(schema_text), encoding="utf-8")
        entry = _Entry(
            version, self._next_id, loaded.fingerprint, loaded.canonical_fingerprint, rel
        )
        entries.append(entry)
        self._next_id += 1
        self._write()
        return self._registered(subject, entry)

    def _registered(self, subject: str, entry: _Entry) -> RegisteredSchema:
        return RegisteredSchema(subject, entry.version, entry.schema_id, self._text(entry))

    def _text(self, entry: _Entry) -> str:
        text = self._texts.get(entry.schema_id)
        if text is None:
            path = self.schemas_dir / entry.schema
            try:
                text = parse_schema_text(path.read_text(encoding="utf-8"), str(path)).text
            except OSError as exc:
                raise RegistryError(f"released schema {path} is missing: {exc.strerror}") from exc
            self._texts[entry.schema_id] = text
        return text

    def _write(self) -> None:
        doc = {
            "comment": "Schema registry of the topic contracts. Written by `quantum-trader "
            "schemas release`; ids are never reused. Review changes like code.",
            "format": _FORMAT,
            "next_id": self._next_id,
            "subjects": {
                s: [e.as_json() for e in self._subjects[s]] for s in sorted(self._subjects)
            },
        }
        _atomic_write(self.path, json.dumps(doc, indent=2) + "\n")


def _pretty(schema_text: str) -> str:
    return json.dumps(json.loads(schema_text), indent=2, ensure_ascii=False) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a crash never leaves half a registry."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- HTTP registry

_SUBJECT_NOT_FOUND = 40401
_VERSION_NOT_FOUND = 40402
_SCHEMA_NOT_FOUND = 40403
_NOT_FOUND_CODES = {_SUBJECT_NOT_FOUND, _VERSION_NOT_FOUND, _SCHEMA_NOT_FOUND}


class ConfluentSchemaRegistry:
    """A Confluent-compatible HTTP registry through confluent-kafka's ``SchemaRegistryClient``.

    ``url`` may be ``mock://...`` for confluent-kafka's in-process mock client.
    """

    def __init__(self, url: str, client: SchemaRegistryClient | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.url = url
        self.client = client or SchemaRegistryClient.new_client({"url": url})

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        return sorted(self._call("list subjects", self.client.get_subjects))

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first."""
        numbers = self._call(f"versions of {subject}", self.client.get_versions, subject)
        if numbers is None:
            return []
        return [self._version(subject, n) for n in sorted(numbers)]

    def _version(self, subject: str, number: int) -> RegisteredSchema:
        got = self._call(f"{subject} v{number}", self.client.get_version, subject, number)
        if got is None:
            raise RegistryError(f"{self.url}: {subject} version {number} vanished")
        return RegisteredSchema(subject, got.version, got.schema_id, got.schema.schema_str)

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema | None:
        """The version of ``subject`` registered with this schema, if any."""
        from confluent_kafka.schema_registry import Schema

        got = self._call(
            f"lookup in {subject}", self.client.lookup_schema, subject, Schema(schema_text, "AVRO")
        )
        if got is None:
            return None
        return RegisteredSchema(subject, got.version, got.schema_id, schema_text)

    def register(self, subject: str, schema_text: str) -> RegisteredSchema:
        """Register (the server checks compatibility: HTTP 409 when incompatible)."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            self.client.register_schema(subject, Schema(schema_text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise IncompatibleSchemaError(subject, [exc.error_message]) from exc
            raise RegistryError(f"{self.url}: cannot register {subject}: {exc}") from exc
        found = self.lookup(subject, schema_text)
        if found is None:
            raise RegistryError(f"{self.url}: {subject} registered but not found by lookup")
        return found

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text with ``schema_id``."""
        got = self._call(f"schema id {schema_id}", self.client.get_schema, schema_id)
        if got is None:
            raise RegistryError(f"{self.url}: schema id {schema_id} is unknown")
        return str(got.schema_str)

    def compatibility(self, subject: str) -> str | None:
        """The subject's compatibility level, else the registry's global one (``None``: unset)."""
        level = self._call(f"compatibility of {subject}", self.client.get_compatibility, subject)
        if level is None:
            level = self._call("global compatibility", self.client.get_compatibility)
        return None if level is None else str(level)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Call the client; None for 'not found', :class:`RegistryError` for anything else."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in _NOT_FOUND_CODES:
                return None
            raise RegistryError(f"{self.url}: {what} failed: {exc}") from exc
        except Exception as exc:  # connection refused, DNS, timeouts: all surface as ours
            raise RegistryError(f"{self.url}: {what} failed: {exc!r}") from exc


def registry_from_settings(settings: Settings) -> SchemaRegistry:
    """The HTTP registry at ``QT_SCHEMA_REGISTRY_URL`` when set, else the file registry."""
    if settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url)
    return FileSchemaRegistry(SCHEMAS_DIR)


class MemorySchemaRegistry:
    """An in-process registry with the same rules (BACKWARD on register, ids never reused).

    For tests and for round-tripping a schema that is not released yet (``schemas check``).
    """

    def __init__(self, first_id: int = 1) -> None:
        self._next_id = first_id
        self._subjects: dict[str, list[RegisteredSchema]] = {}
        self._by_id: dict[int, str] = {}

    def subjects(self) -> list[str]:
        """Every subject, sorted."""
        return sorted(self._subjects)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first."""
        return list(self._subjects.get(subject, []))

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema | None:
        """The version of ``subject`` with the same normalized schema."""
        fingerprint = parse_schema_text(schema_text).fingerprint
        for found in self._subjects.get(subject, []):
            if parse_schema_text(found.schema_text).fingerprint == fingerprint:
                return found
        return None

    def register(self, subject: str, schema_text: str) -> RegisteredSchema:
        """Register as the next version; refuses BACKWARD-incompatible schemas."""
        existing = self.lookup(subject, schema_text)
        if existing is not None:
            return existing
        entries = self._subjects.setdefault(subject, [])
        if entries:
            result = check_backward(schema_text, entries[-1].schema_text)
            if not result.compatible:
                raise IncompatibleSchemaError(subject, [str(p) for p in result.problems])
        text = parse_schema_text(schema_text).text
        found = RegisteredSchema(subject, len(entries) + 1, self._next_id, text)
        entries.append(found)
        self._by_id[self._next_id] = text
        self._next_id += 1
        return found

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text with ``schema_id``."""
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise RegistryError(f"schema id {schema_id} is not registered") from None
