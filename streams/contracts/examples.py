"""Example records in ``schemas/examples/<topic>.json``.

An example is the record as the codec accepts it (plain values, unions untagged), written as
JSON; ``bytes`` values follow the Avro JSON convention: a string whose code points 0-255 are
the bytes (ISO-8859-1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.contracts.errors import SchemaLoadError
from streams.contracts.schema_loader import SCHEMAS_DIR, ParsedSchema, load_topic_schema
from streams.topics import Topic


def example_path(topic: Topic | str, schemas_dir: Path = SCHEMAS_DIR) -> Path:
    """``schemas/examples/<topic>.json``."""
    return schemas_dir / "examples" / f"{Topic(topic).value}.json"


def load_example(topic: Topic | str, schemas_dir: Path = SCHEMAS_DIR) -> dict[str, Any]:
    """The example record of ``topic`` as a codec-ready dict (bytes decoded)."""
    path = example_path(topic, schemas_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaLoadError(str(path), f"cannot read example: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SchemaLoadError(str(path), f"example is not JSON: {exc}") from exc
    schema = load_topic_schema(topic, schemas_dir).schema.parsed
    datum: dict[str, Any] = json_to_datum(schema, raw, named={})
    return datum


def json_to_datum(schema: ParsedSchema, value: Any, named: dict[str, Any]) -> Any:
    """Turn JSON strings into bytes where ``schema`` says bytes; everything else unchanged."""
    if value is None:
        return None
    if isinstance(schema, str):
        if schema == "bytes" and isinstance(value, str):
            return value.encode("latin-1")
        return json_to_datum(named[schema], value, named) if schema in named else value
    if isinstance(schema, list):
        return _union(schema, value, named)
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
    if kind == "record" and isinstance(value, dict):
        types = {f["name"]: f["type"] for f in schema["fields"]}
        return {k: json_to_datum(types[k], v, named) if k in types else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [json_to_datum(schema["items"], v, named) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: json_to_datum(schema["values"], v, named) for k, v in value.items()}
    if kind in ("bytes", "fixed") and isinstance(value, str):
        return value.encode("latin-1")
    return value


def _union(branches: list[Any], value: Any, named: dict[str, Any]) -> Any:
    non_null = [b for b in branches if b != "null"]
    # Examples use untagged unions; only the nullable form is supported for bytes decoding.
    return json_to_datum(non_null[0], value, named) if len(non_null) == 1 else value
