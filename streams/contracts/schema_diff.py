"""What changed in a topic contract since its last release: ``quantum-trader schemas diff``.

For a reviewer, per topic whose ``schemas/<topic>.avsc`` differs from the latest released
version of its subject:

* a field-by-field change list (:func:`schema_changes`): every named type (the top-level record
  and each nested record and enum) is compared with its namesake in the released schema, so a
  change reads ``ModelVote.latency_us: removed`` wherever the type is used; fields added (with
  or without a default), removed, renamed (an ``aliases`` entry naming the old field), type,
  default and doc changes, enum symbols added or removed, record and enum docs;
* the compatibility verdict under the subject's rule (:func:`verdict`): BACKWARD, FORWARD,
  FULL (each optionally ``_TRANSITIVE``) or NONE, checked with the Apache ``avro`` package's
  reader/writer checker, with the reason for each incompatibility;
* who is affected (:func:`users_of`): the stages of ``streams/topology.py`` that write and read
  the topic, plus the journal sink and the run report where the declaration says so.

Pure apart from reading the schema folder and asking the registry for versions and rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streams.contracts.compat import check_backward
from streams.contracts.registry import ConfluentSchemaRegistry, SchemaRegistry
from streams.contracts.schema_loader import SCHEMAS_DIR, load_topic_schema, subject_for
from streams.topics import Topic

#: The project's rule for every subject (schemas/README.md) when the registry states none.
PROJECT_RULE: Final = "BACKWARD"
RULES: Final = (
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
    "FULL_TRANSITIVE", "NONE",
)  # fmt: skip
_PRIMITIVES: Final = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NO_DEFAULT: Final = object()


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One change: where (``Type.field``), what kind, the old and new values, a remark."""

    where: str
    kind: str  # added, removed, renamed, type, default, doc, symbols added, ...
    old: str | None = None
    new: str | None = None
    note: str = ""

    def text(self) -> str:
        """One readable line."""
        if self.old is not None and self.new is not None:
            body = f"{self.old} -> {self.new}"
        else:
            body = self.new if self.new is not None else (self.old or "")
        line = f"{self.where}: {self.kind}" + (f" {body}" if body else "")
        return line + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the change passes the subject's rule, and why not."""

    rule: str
    compatible: bool
    reasons: tuple[str, ...] = ()
    against: tuple[int, ...] = ()  # the released versions checked


@dataclass(frozen=True, slots=True)
class TopicDiff:
    """One topic's pending contract change."""

    topic: Topic
    subject: str
    released_version: int | None  # None: a subject never released
    changes: tuple[SchemaChange, ...]
    verdict: Verdict
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


# ------------------------------------------------------------------ type names and walking


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def type_text(avro: Any) -> str:
    """A type as a reviewer reads it: ``long``, ``null | string``, ``array<ModelVote>``."""
    if isinstance(avro, str):
        return avro if avro in _PRIMITIVES else _short(avro)
    if isinstance(avro, list):
        return " | ".join(type_text(t) for t in avro)
    kind = avro.get("type")
    if kind == "array":
        return f"array<{type_text(avro['items'])}>"
    if kind == "map":
        return f"map<{type_text(avro['values'])}>"
    if kind in ("record", "error", "enum", "fixed"):
        return _short(str(avro["name"]))
    logical = avro.get("logicalType")
    return f"{kind} ({logical})" if logical else str(kind)


def named_types(avro: Any) -> dict[str, dict[str, Any]]:
    """Every record, enum and fixed defined in ``avro`` by short name, outermost first."""
    found: dict[str, dict[str, Any]] = {}
    _collect(avro, found)
    return found


def _collect(avro: Any, found: dict[str, dict[str, Any]]) -> None:
    if isinstance(avro, list):
        for branch in avro:
            _collect(branch, found)
    elif isinstance(avro, dict):
        kind = avro.get("type")
        if kind in ("array", "map"):
            _collect(avro["items" if kind == "array" else "values"], found)
        elif kind in ("record", "error", "enum", "fixed"):
            found.setdefault(_short(str(avro["name"])), avro)
            for field in avro.get("fields", ()):
                _collect(field["type"], found)


def _default(field: Mapping[str, Any]) -> Any:
    return field.get("default", _NO_DEFAULT)


def _show_default(value: Any) -> str:
    return "none" if value is _NO_DEFAULT else json.dumps(value)


# ------------------------------------------------------------------ the change list


def _field_changes(owner: str, old: dict[str, Any], new: dict[str, Any]) -> list[SchemaChange]:
    old_fields = {f["name"]: f for f in old.get("fields", ())}
    new_fields = {f["name"]: f for f in new.get("fields", ())}
    renamed = {
        alias: name
        for name, f in new_fields.items()
        if name not in old_fields
        for alias in f.get("aliases", ())
        if alias in old_fields and alias not in new_fields
    }
    changes: list[SchemaChange] = []
    for name, f in new_fields.items():
        where = f"{owner}.{name}"
        before = old_fields.get(name)
        if before is None:
            source = next((o for o, n in renamed.items() if n == name), None)
            if source is not None:
                changes.append(SchemaChange(where, "renamed", source, name, "alias keeps old data"))
                same_but_aliases = _compare_field(where, old_fields[source], f)
                changes += [c for c in same_but_aliases if c.kind != "aliases"]
                continue
            has_default = _default(f) is not _NO_DEFAULT
            note = f"default {_show_default(_default(f))}" if has_default else "no default"
            changes.append(SchemaChange(where, "added", None, type_text(f["type"]), note))
        else:
            changes += _compare_field(where, before, f)
    for name, f in old_fields.items():
        if name not in new_fields and name not in renamed:
            changes.append(SchemaChange(f"{owner}.{name}", "removed", type_text(f["type"])))
    return changes


def _compare_field(
    where: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[SchemaChange]:
    changes = []
    if type_text(old["type"]) != type_text(new["type"]):
        changes.append(SchemaChange(where, "type", type_text(old["type"]), type_text(new["type"])))
    if _default(old) != _default(new):
        changes.append(
            SchemaChange(
                where, "default", _show_default(_default(old)), _show_default(_default(new))
            )
        )
    if old.get("doc") != new.get("doc"):
        changes.append(SchemaChange(where, "doc", repr(old.get("doc")), repr(new.get("doc"))))
    if list(old.get("aliases", ())) != list(new.get("aliases", ())):
        changes.append(
            SchemaChange(where, "aliases", str(old.get("aliases", [])), str(new.get("aliases", [])))
        )
    return changes


def _enum_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[SchemaChange]:
    before, after = list(old.get("symbols", ())), list(new.get("symbols", ()))
    changes = []
    added = [s for s in after if s not in before]
    removed = [s for s in before if s not in after]
    if added:
        changes.append(SchemaChange(name, "symbols added", None, ", ".join(added)))
    if removed:
        note = "" if new.get("default") else "old data with these symbols cannot be read"
        changes.append(SchemaChange(name, "symbols removed", ", ".join(removed), None, note))
    if not added and not removed and before != after:
        changes.append(SchemaChange(name, "symbols reordered", ", ".join(before), ", ".join(after)))
    if old.get("default") != new.get("default"):
        changes.append(
            SchemaChange(name, "default", str(old.get("default")), str(new.get("default")))
        )
    return changes


def _type_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[SchemaChange]:
    changes: list[SchemaChange] = []
    if old.get("type") != new.get("type"):
        return [SchemaChange(name, "kind", str(old.get("type")), str(new.get("type")))]
    if old.get("namespace") != new.get("namespace"):
        changes.append(
            SchemaChange(name, "namespace", str(old.get("namespace")), str(new.get("namespace")))
        )
    if old.get("doc") != new.get("doc"):
        changes.append(SchemaChange(name, "doc", repr(old.get("doc")), repr(new.get("doc"))))
    if new.get("type") == "enum":
        return changes + _enum_changes(name, old, new)
    if new.get("type") == "fixed" and old.get("size") != new.get("size"):
        changes.append(SchemaChange(name, "size", str(old.get("size")), str(new.get("size"))))
    return changes + _field_changes(name, old, new)


def schema_changes(old_text: str | None, new_text: str) -> list[SchemaChange]:
    """Every change from ``old_text`` (``None``: nothing released yet) to ``new_text``."""
    new = json.loads(new_text)
    if old_text is None:
        return [SchemaChange(_short(str(new["name"])), "new subject", None, "first release")]
    old_types, new_types = named_types(json.loads(old_text)), named_types(new)
    changes: list[SchemaChange] = []
    top_old, top_new = _short(str(json.loads(old_text)["name"])), _short(str(new["name"]))
    if top_old != top_new:
        changes.append(SchemaChange("record", "renamed", top_old, top_new))
        old_types[top_new] = old_types.pop(top_old)
    for name, definition in new_types.items():
        before = old_types.get(name)
        if before is None:
            changes.append(SchemaChange(name, f"{definition['type']} added"))
        else:
            changes += _type_changes(name, before, definition)
    changes += [
        SchemaChange(name, f"{d['type']} removed") for name, d in old_types.items()
        if name not in new_types
    ]  # fmt: skip
    return changes


# ------------------------------------------------------------------ verdict and users


def subject_rule(registry: SchemaRegistry, subject: str) -> str:
    """The subject's compatibility rule: an HTTP registry's (subject, else global), else ours."""
    if isinstance(registry, ConfluentSchemaRegistry):
        level = registry.compatibility(subject)
        if level:
            return level.upper()
    return PROJECT_RULE


def verdict(rule: str, new_text: str, released: Sequence[tuple[int, str]]) -> Verdict:
    """Does ``new_text`` pass ``rule`` against the released ``(version, text)`` pairs?"""
    if rule not in RULES:
        return Verdict(rule, False, (f"unknown compatibility rule {rule!r}; known: {RULES}",))
    if rule == "NONE" or not released:
        return Verdict(rule, True)
    targets = list(released) if rule.endswith("_TRANSITIVE") else list(released[-1:])
    base = rule.removesuffix("_TRANSITIVE")
    reasons: list[str] = []
    for version, old_text in targets:
        if base in ("BACKWARD", "FULL"):
            result = check_backward(new_text, old_text)  # new readers, old data
            reasons += [f"new schema cannot read v{version} data: {p}" for p in result.problems]
        if base in ("FORWARD", "FULL"):
            result = check_backward(old_text, new_text)  # old readers, new data
            reasons += [f"v{version} readers cannot read new data: {p}" for p in result.problems]
    return Verdict(rule, not reasons, tuple(reasons), tuple(v for v, _ in targets))


def users_of(topic: Topic) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(producers, consumers) of ``topic`` by the topology declaration."""
    from streams.topology import consumers_of, topic_spec, writers_of

    spec = topic_spec(topic)
    readers = [f"stage {s.name}" for s in consumers_of(topic)]
    if spec.journaled:
        readers.append("journal sink (quantum-trader journal)")
    if spec.reported:
        readers.append("run report (demo read-back)")
    writers = [w if w != "replay" else "ingest (replay / live feed)" for w in writers_of(topic)]
    writers = [w if w.startswith("ingest") else f"stage {w}" for w in writers]
    return tuple(writers), tuple(readers)


def topic_diff(
    topic: Topic, registry: SchemaRegistry, schemas_dir: Path = SCHEMAS_DIR
) -> TopicDiff | None:
    """The pending change of ``topic`` (``None`` when its schema equals the latest release)."""
    subject = subject_for(topic)
    current = load_topic_schema(topic, schemas_dir).schema.text
    versions = registry.versions(subject)
    found = registry.lookup(subject, current)
    if versions and found is not None and found.version == versions[-1].version:
        return None
    released = [(v.version, v.schema_text) for v in versions]
    latest = released[-1][1] if released else None
    producers, consumers = users_of(topic)
    return TopicDiff(
        topic, subject, versions[-1].version if versions else None,
        tuple(schema_changes(latest, current)),
        verdict(subject_rule(registry, subject), current, released), producers, consumers,
    )  # fmt: skip


def all_diffs(registry: SchemaRegistry, schemas_dir: Path = SCHEMAS_DIR) -> list[TopicDiff]:
    """Every topic whose schema differs from its latest release, in topology order."""
    return [d for t in Topic if (d := topic_diff(t, registry, schemas_dir)) is not None]


# ------------------------------------------------------------------ rendering


def _status(d: TopicDiff) -> str:
    verdict_text = "compatible" if d.verdict.compatible else "INCOMPATIBLE"
    since = f"since v{d.released_version}" if d.released_version else "never released"
    return f"{since}; {d.verdict.rule}: {verdict_text}"


def render_text(diffs: Sequence[TopicDiff]) -> str:
    """Plain text for a terminal."""
    if not diffs:
        return "no schema differs from its latest released version\n"
    lines: list[str] = []
    for d in diffs:
        lines.append(f"{d.subject} ({_status(d)})")
        lines += [f"  {c.text()}" for c in d.changes] or ["  (formatting only)"]
        lines += [f"  incompatible: {r}" for r in d.verdict.reasons]
        lines.append(f"  producers: {', '.join(d.producers) or 'none declared'}")
        lines.append(f"  consumers: {', '.join(d.consumers) or 'none declared'}")
    return "\n".join(lines) + "\n"


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|").replace("\n", " ")


def render_markdown(diffs: Sequence[TopicDiff]) -> str:
    """Markdown for a pull-request comment: one section and one change table per topic."""
    if not diffs:
        return "**Schemas:** no contract differs from its latest released version.\n"
    bad = [d for d in diffs if not d.verdict.compatible]
    head = f"## Schema changes: {len(diffs)} topic(s)"
    head += f", **{len(bad)} incompatible**" if bad else ", all compatible"
    lines = [head, ""]
    for d in diffs:
        mark = "✅" if d.verdict.compatible else "❌"
        lines += [f"### {mark} `{d.subject}` ({_status(d)})", ""]
        lines += ["| where | change | old | new | note |", "|---|---|---|---|---|"]
        lines += [
            f"| `{_cell(c.where)}` | {_cell(c.kind)} | {_cell(c.old)} | {_cell(c.new)} "
            f"| {_cell(c.note)} |"
            for c in d.changes
        ] or ["| | formatting only | | | |"]
        if d.verdict.reasons:
            lines += ["", "Incompatible:"] + [f"- {_cell(r)}" for r in d.verdict.reasons]
        lines += [
            "",
            f"Producers: {', '.join(d.producers) or 'none declared'}. "
            f"Consumers: {', '.join(d.consumers) or 'none declared'}.",
            "",
        ]
    return "\n".join(lines)
