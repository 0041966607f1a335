"""`quantum-trader schemas diff` on deliberately changed schemas: change list, verdict, users."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.contracts.registry import ConfluentSchemaRegistry, FileSchemaRegistry
from streams.contracts.schema_diff import all_diffs, schema_changes, subject_rule, verdict
from streams.contracts.schema_loader import SCHEMAS_DIR
from streams.topics import Topic

AVSC = "signals.ensemble.avsc"


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    """A copy of the project's schemas folder and file registry, free to change."""
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, folder)
    return folder


def edit(folder: Path, change: Any) -> None:
    path = folder / AVSC
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def field(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


def vote_record(doc: dict[str, Any]) -> dict[str, Any]:
    return field(doc, "votes")["type"]["items"]


def incompatible_change(doc: dict[str, Any]) -> None:
    vote = vote_record(doc)
    vote["fields"].append({"name": "calibrated", "type": "boolean", "doc": "Calibrated."})
    vote["fields"] = [f for f in vote["fields"] if f["name"] != "latency_us"]
    weight = field(vote, "weight")
    weight["name"], weight["aliases"] = "vote_weight", ["weight"]
    field(vote, "action")["type"]["symbols"].append("CLOSE")
    field(doc, "confidence")["doc"] = "Weighted probability of the action."
    field(doc, "symbol")["type"] = "int"
    doc["fields"].append({"name": "note", "type": "string", "default": "", "doc": "A note."})


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["schemas", "diff", *args], env={"COLUMNS": "200"})


def test_unchanged_schemas_have_nothing_to_show(schemas: Path) -> None:
    assert all_diffs(FileSchemaRegistry(schemas), schemas) == []
    result = cli("--schemas-dir", str(schemas))
    assert result.exit_code == 0
    assert "no schema differs from its latest released version" in result.output


def test_a_changed_schema_lists_every_change_with_the_verdict_and_users(schemas: Path) -> None:
    edit(schemas, incompatible_change)
    result = cli("--schemas-dir", str(schemas))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "signals.ensemble-value (since v3; BACKWARD: INCOMPATIBLE)"
    assert lines[1:10] == [
        "  SignalScored.symbol: type string -> int",
        "  SignalScored.confidence: doc 'Ensemble probability of action, in [0, 1].' -> "
        "'Weighted probability of the action.'",
        '  SignalScored.note: added string (default "")',
        "  ModelVote.vote_weight: renamed weight -> vote_weight (alias keeps old data)",
        "  ModelVote.calibrated: added boolean (no default)",
        "  ModelVote.latency_us: removed long",
        "  Action: symbols added CLOSE",
        "  incompatible: new schema cannot read v3 data: type_mismatch at /fields/1/type: "
        "reader type: int not compatible with writer type: string",
        "  incompatible: new schema cannot read v3 data: reader_field_missing_default_value at "
        "/fields/4/type/items/fields/7: calibrated",
    ]
    assert "  producers: stage ensemble" in lines
    assert "  consumers: stage supervisor, run report (demo read-back)" in lines


def test_a_compatible_change_passes_and_markdown_is_a_pr_comment(
    schemas: Path, tmp_path: Path
) -> None:
    def compatible(doc: dict[str, Any]) -> None:
        doc["fields"].append({"name": "note", "type": ["null", "string"], "default": None,
                              "doc": "A note."})  # fmt: skip

    edit(schemas, compatible)
    out = tmp_path / "comment.md"
    result = cli("--schemas-dir", str(schemas), "--markdown", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text == result.output
    assert text.startswith("## Schema changes: 1 topic(s), all compatible\n")
    assert "### ✅ `signals.ensemble-value` (since v3; BACKWARD: compatible)" in text
    assert "| `SignalScored.note` | added |  | null \\| string | default null |" in text
    assert "Producers: stage ensemble. Consumers: stage supervisor" in text


def test_each_rule_judges_its_own_direction() -> None:
    old = (SCHEMAS_DIR / "released" / "signals.ensemble-value" / "v2.avsc").read_text()
    doc = json.loads(old)
    doc["fields"] = [f for f in doc["fields"] if f["name"] != "volatility"]  # no default
    new = json.dumps(doc)
    assert verdict("BACKWARD", new, [(2, old)]).compatible  # new readers ignore it
    forward = verdict("FORWARD", new, [(2, old)])
    assert not forward.compatible
    assert forward.reasons[0].startswith("v2 readers cannot read new data: ")
    assert not verdict("FULL_TRANSITIVE", new, [(2, old)]).compatible
    assert verdict("NONE", new, [(2, old)]).compatible
    assert not verdict("SIDEWAYS", new, [(2, old)]).compatible


def test_a_new_subject_and_a_removed_type_are_named() -> None:
    text = (SCHEMAS_DIR / AVSC).read_text()
    assert [c.text() for c in schema_changes(None, text)] == [
        "SignalScored: new subject first release"
    ]
    doc = json.loads(text)
    vote = vote_record(doc)
    field(vote, "action")["type"] = "string"  # the Action enum is gone from the schema
    kinds = {(c.where, c.kind) for c in schema_changes(text, json.dumps(doc))}
    assert ("Action", "enum removed") in kinds
    assert ("ModelVote.action", "type") in kinds


def test_the_rule_comes_from_an_http_registry(schemas: Path) -> None:
    from streams.contracts.http_registry import serve_registry

    edit(schemas, incompatible_change)
    with serve_registry(FileSchemaRegistry(schemas), "127.0.0.1", 0, False) as url:
        registry = ConfluentSchemaRegistry(url)
        assert subject_rule(registry, "signals.ensemble-value") == "BACKWARD"
        (diff,) = all_diffs(registry, schemas)
        assert diff.topic is Topic.SIGNALS_ENSEMBLE and not diff.verdict.compatible
        result = cli("--schemas-dir", str(schemas), "--registry-url", url)
        assert result.exit_code == 1 and "BACKWARD: INCOMPATIBLE" in result.output
