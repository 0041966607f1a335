"""Load the topic schemas in ``schemas/`` and derive what the registry and the codec need.

A schema is parsed once with fastavro (named types resolved) and cached. Two fingerprints:
``fingerprint`` (sha256 of the schema's normalized JSON, docs and defaults included) decides
whether a schema changed and must be released; ``canonical_fingerprint`` (CRC-64-AVRO of the
Avro Parsing Canonical Form, which ignores docs and defaults) tells whether the bytes on the
wire would differ.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from streams.config import PROJECT_ROOT
from streams.contracts.errors import SchemaLoadError
from streams.topics import Topic

SCHEMAS_DIR = PROJECT_ROOT / "schemas"

#: What fastavro returns from ``parse_schema`` (a dict for record schemas).
ParsedSchema = Any


@dataclass(frozen=True, slots=True)
class LoadedSchema:
    """One schema text, parsed, with its identity."""

    name: str  # full Avro name of the top-level record
    text: str  # compact JSON, as registered (docs kept)
    parsed: ParsedSchema  # fastavro-parsed, named types expanded
    fingerprint: str  # sha256 of the normalized JSON: any change, docs included
    canonical_fingerprint: str  # CRC-64-AVRO of the Parsing Canonical Form


@dataclass(frozen=True, slots=True)
class TopicSchema:
    """The value schema of a topic as found in ``schemas/<topic>.avsc``."""

    topic: Topic
    subject: str
    path: Path
    schema: LoadedSchema


def subject_for(topic: Topic | str) -> str:
    """Registry subject of a topic's values (Confluent TopicNameStrategy, base name)."""
    return f"{Topic(topic).value}-value"


def schema_path(topic: Topic | str, schemas_dir: Path = SCHEMAS_DIR) -> Path:
    """``schemas/<topic>.avsc``."""
    return schemas_dir / f"{Topic(topic).value}.avsc"


def normalized_json(raw: Any) -> str:
    """Compact JSON with sorted keys: equal schemas give equal strings."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=512)
def parse_schema_text(text: str, source: str = "<schema>") -> LoadedSchema:
    """Parse a schema given as JSON text (cached: registry lookups by id hit this often)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaLoadError(source, f"not JSON: {exc}") from exc
    return _loaded(raw, source)


def _loaded(raw: Any, source: str) -> LoadedSchema:
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaLoadError(source, "a topic value schema must be a single Avro record")
    try:
        parsed = fastavro.parse_schema(raw, _write_hint=True)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise SchemaLoadError(source, f"invalid Avro schema: {exc}") from exc
    canonical = to_parsing_canonical_form(parsed)
    return LoadedSchema(
        name=str(cast(dict[str, Any], parsed)["name"]),
        text=json.dumps(raw, separators=(",", ":"), ensure_ascii=False),
        parsed=parsed,
        fingerprint=hashlib.sha256(normalized_json(raw).encode()).hexdigest(),
        canonical_fingerprint=str(avro_fingerprint(canonical, "CRC-64-AVRO")),
    )


def load_schema_file(path: Path) -> LoadedSchema:
    """Read and parse one ``.avsc`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaLoadError(str(path), f"cannot read: {exc.strerror}") from exc
    return parse_schema_text(text, str(path))


def load_topic_schema(topic: Topic | str, schemas_dir: Path = SCHEMAS_DIR) -> TopicSchema:
    """The current value schema of ``topic`` from ``schemas_dir``."""
    path = schema_path(topic, schemas_dir)
    return TopicSchema(Topic(topic), subject_for(topic), path, load_schema_file(path))


def load_all(schemas_dir: Path = SCHEMAS_DIR) -> dict[Topic, TopicSchema]:
    """Every topic's current value schema; raises on the first missing or invalid one."""
    return {topic: load_topic_schema(topic, schemas_dir) for topic in Topic}
