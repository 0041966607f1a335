"""What ``quantum-trader schemas check`` verifies, as plain functions returning a report.

Per topic: the schema parses; it has a namespace and a ``doc`` on the record, every nested
named type and every field; the record dataclass mirrors it (drift); the example validates and
round-trips through the codec and the dataclass; and the registry state: the schema equals its
subject's latest version, or else it is reported as unreleased (with its BACKWARD check
against the latest version) or as incompatible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.contracts.codec import TopicCodec
from streams.contracts.compat import check_backward
from streams.contracts.drift import record_drift
from streams.contracts.errors import ContractsError
from streams.contracts.examples import load_example
from streams.contracts.records import record_type
from streams.contracts.registry import MemorySchemaRegistry, SchemaRegistry
from streams.contracts.schema_loader import SCHEMAS_DIR, TopicSchema, load_topic_schema
from streams.topics import Topic

OK, UNRELEASED, INCOMPATIBLE, INVALID = "released", "unreleased", "INCOMPATIBLE", "invalid"


@dataclass(frozen=True, slots=True)
class TopicReport:
    """Outcome of the checks of one topic's value schema."""

    topic: Topic
    subject: str
    status: str  # released | unreleased | INCOMPATIBLE | invalid
    version: int | None  # latest registered version of the subject
    schema_id: int | None  # id of the current schema when it is the latest version
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing needs fixing or releasing."""
        return not self.problems


def check_all(registry: SchemaRegistry, schemas_dir: Path = SCHEMAS_DIR) -> list[TopicReport]:
    """Check every topic of the topology."""
    return [check_topic(topic, registry, schemas_dir) for topic in Topic]


def check_topic(
    topic: Topic, registry: SchemaRegistry, schemas_dir: Path = SCHEMAS_DIR
) -> TopicReport:
    """Run every check on one topic; never raises for a contract problem."""
    subject = f"{topic.value}-value"
    try:
        current = load_topic_schema(topic, schemas_dir)
    except ContractsError as exc:
        return TopicReport(topic, subject, INVALID, None, None, (str(exc),))
    problems = lint_docs(json.loads(current.schema.text))
    problems += record_drift(record_type(topic), current.schema.parsed)
    problems += check_example(current, schemas_dir)
    status, version, schema_id, registry_problems = registry_state(current, registry)
    return TopicReport(
        topic, subject, status, version, schema_id, tuple(problems + registry_problems)
    )


def lint_docs(schema: Any, where: str = "") -> list[str]:
    """Namespace on the top-level record; a non-empty doc on every named type and field."""
    problems = []
    if not where and not schema.get("namespace"):
        problems.append(f"{schema.get('name')}: top-level record has no namespace")
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        where = where or str(schema["name"])
        if not schema.get("doc"):
            problems.append(f"{where}: {schema['type']} {schema['name']} has no doc")
        for field in schema.get("fields", []):
            path = f"{where}.{field['name']}"
            if not field.get("doc"):
                problems.append(f"{path}: field has no doc")
            problems += _lint_type(field["type"], path)
    return problems


def _lint_type(avro: Any, where: str) -> list[str]:
    if isinstance(avro, list):
        return [p for branch in avro for p in _lint_type(branch, where)]
    if not isinstance(avro, dict):
        return []
    if avro["type"] == "array":
        return _lint_type(avro["items"], where + "[]")
    if avro["type"] == "map":
        return _lint_type(avro["values"], where + "{}")
    return lint_docs(avro, where)


def check_example(current: TopicSchema, schemas_dir: Path = SCHEMAS_DIR) -> list[str]:
    """The example validates, survives codec encode/decode and the dataclass round trip."""
    try:
        example = load_example(current.topic, schemas_dir)
        codec = TopicCodec(
            current.topic, MemorySchemaRegistry(), schemas_dir=schemas_dir, auto_register=True
        )
        decoded = codec.decode(codec.encode(example))
    except ContractsError as exc:
        return [f"example: {exc}"]
    problems = []
    missing = sorted(set(decoded) - set(example)) if isinstance(decoded, dict) else []
    if missing:
        problems.append(f"example: lacks {', '.join(missing)} (the codec filled the defaults)")
    elif decoded != example:
        problems.append("example: codec round trip changed the record (float32 rounding?)")
    cls = record_type(current.topic)
    try:
        if cls.from_avro(decoded) != cls.from_avro(example):
            problems.append(f"example: {cls.__name__}.from_avro round trip differs")
    except (KeyError, TypeError, ValueError) as exc:  # e.g. a field the example lacks
        problems.append(f"example: {cls.__name__}.from_avro cannot read it ({exc!r})")
    return problems


def registry_state(
    current: TopicSchema, registry: SchemaRegistry
) -> tuple[str, int | None, int | None, list[str]]:
    """(status, latest version, schema id, problems) of the current schema in ``registry``."""
    versions = registry.versions(current.subject)
    if not versions:
        hint = "new subject, not released: run `quantum-trader schemas release`"
        return UNRELEASED, None, None, [hint]
    latest = versions[-1]
    found = registry.lookup(current.subject, current.schema.text)
    if found is not None and found.version == latest.version:
        return OK, latest.version, latest.schema_id, []
    if found is not None:
        reason = f"equals old version {found.version} but the latest is {latest.version}"
        return UNRELEASED, latest.version, None, [reason]
    result = check_backward(current.schema.text, latest.schema_text)
    if result.compatible:
        hint = (
            f"changed since v{latest.version} (BACKWARD compatible): "
            "run `quantum-trader schemas release`"
        )
        return UNRELEASED, latest.version, None, [hint]
    problems = [f"BACKWARD-incompatible with v{latest.version}: {p}" for p in result.problems]
    return INCOMPATIBLE, latest.version, None, problems
