"""BACKWARD compatibility: the checker, `schemas check` exit codes and `schemas release`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.commands.schemas import app
from streams.contracts.compat import check_backward, check_backward_all
from streams.contracts.errors import IncompatibleSchemaError
from streams.contracts.registry import FileSchemaRegistry
from streams.topics import Topic

runner = CliRunner()
Schema = dict[str, Any]


def _field(schema: Schema, name: str) -> Schema:
    return next(f for f in schema["fields"] if f["name"] == name)


def add_required_field(s: Schema) -> None:
    s["fields"].append({"name": "exchange", "type": "string", "doc": "Exchange name."})


def change_long_to_string(s: Schema) -> None:
    _field(s, "interval_ms")["type"] = "string"


def drop_enum_symbol(s: Schema) -> None:
    _field(s, "kind")["type"]["symbols"] = ["KLINE_1M"]


def rename_field(s: Schema) -> None:
    _field(s, "volume")["name"] = "base_volume"


def make_required_field_nullable_then_back(s: Schema) -> None:
    # reading a nullable writer field into a non-null reader field fails
    _field(s, "trade_id")["type"] = "long"
    del _field(s, "trade_id")["default"]


INCOMPATIBLE: list[Callable[[Schema], None]] = [
    add_required_field, change_long_to_string, drop_enum_symbol, rename_field,
    make_required_field_nullable_then_back,
]  # fmt: skip


def add_defaulted_field(s: Schema) -> None:
    s["fields"].append(
        {"name": "exchange", "type": "string", "default": "binance", "doc": "Exchange."}
    )


def edit_tick_schema(schemas: Path, change: Callable[[Schema], None]) -> Path:
    path = schemas / "market.ticks.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))
    return path


def registry_bytes(schemas: Path) -> bytes:
    return (schemas / "registry.json").read_bytes()


@pytest.mark.parametrize("change", INCOMPATIBLE, ids=lambda f: f.__name__)
def test_incompatible_change_is_caught_by_checker_check_and_release(
    tmp_schemas: Path, change: Callable[[Schema], None]
) -> None:
    old = (tmp_schemas / "market.ticks.avsc").read_text()
    new = edit_tick_schema(tmp_schemas, change).read_text()
    result = check_backward(new, old)
    assert not result.compatible and result.problems

    checked = runner.invoke(app, ["check", "--schemas-dir", str(tmp_schemas)])
    assert checked.exit_code == 1
    assert "INCOMPATIBLE" in checked.output and "market.ticks-value" in checked.output

    before = registry_bytes(tmp_schemas)
    released = runner.invoke(app, ["release", "--schemas-dir", str(tmp_schemas)])
    assert released.exit_code == 1 and "nothing was released" in released.output
    assert registry_bytes(tmp_schemas) == before
    with pytest.raises(IncompatibleSchemaError, match=r"market\.ticks-value"):
        FileSchemaRegistry(tmp_schemas).register("market.ticks-value", new)


def test_the_problem_names_the_field(tmp_schemas: Path) -> None:
    old = (tmp_schemas / "market.ticks.avsc").read_text()
    new = edit_tick_schema(tmp_schemas, add_required_field).read_text()
    (problem,) = check_backward(new, old).problems
    assert problem.kind == "reader_field_missing_default_value"
    assert "exchange" in problem.message


def test_compatible_change_must_be_released_then_passes(tmp_schemas: Path) -> None:
    edit_tick_schema(tmp_schemas, add_defaulted_field)
    # the dataclass does not have the field yet: check must report drift too
    checked = runner.invoke(app, ["check", "--schemas-dir", str(tmp_schemas)])
    assert checked.exit_code == 1
    assert "unreleased" in checked.output and "fields differ" in checked.output
    # drift blocks the release until streams/contracts/records.py is updated
    refused = runner.invoke(app, ["release", "--schemas-dir", str(tmp_schemas)])
    assert refused.exit_code == 1


def test_release_registers_new_version_with_fresh_id(tmp_schemas: Path) -> None:
    path = tmp_schemas / "market.ticks.avsc"
    schema = json.loads(path.read_text())
    _field(schema, "source")["doc"] = "Origin of the tick (doc-only change)."
    path.write_text(json.dumps(schema, indent=2))
    fresh = json.loads(registry_bytes(tmp_schemas))["next_id"]  # every id below is taken
    assert runner.invoke(app, ["check", "--schemas-dir", str(tmp_schemas)]).exit_code == 1
    before = json.loads(registry_bytes(tmp_schemas))
    fresh = before["next_id"]
    version = len(before["subjects"]["market.ticks-value"]) + 1
    released = runner.invoke(app, ["release", "--schemas-dir", str(tmp_schemas)])
    assert released.exit_code == 0, released.output
    assert f"released market.ticks-value v{version} as schema id {fresh}" in released.output
    assert runner.invoke(app, ["check", "--schemas-dir", str(tmp_schemas)]).exit_code == 0
    doc = json.loads(registry_bytes(tmp_schemas))
    ids = [e["id"] for entries in doc["subjects"].values() for e in entries]
    assert len(ids) == len(set(ids)) and fresh in ids and doc["next_id"] == fresh + 1
    old, new = doc["subjects"]["market.ticks-value"][-2:]
    assert old["canonical_fingerprint"] == new["canonical_fingerprint"]  # same wire format
    assert old["fingerprint"] != new["fingerprint"]
    assert (tmp_schemas / new["schema"]).exists()


def test_type_promotion_and_defaulted_field_are_compatible(tmp_schemas: Path) -> None:
    old = (tmp_schemas / "market.features.avsc").read_text()
    schema = json.loads(old)
    _field(schema, "window_rows")["type"] = "long"  # int -> long promotion
    schema["fields"].append(
        {"name": "tick_count", "type": "int", "default": 0, "doc": "Ticks seen."}
    )
    assert check_backward(json.dumps(schema), old).compatible
    # ... but not the other way round (long -> int narrows)
    assert not check_backward(old, json.dumps(schema)).compatible


def test_transitive_check_looks_at_every_previous_version() -> None:
    v1 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]})
    v2 = json.dumps({"type": "record", "name": "R", "fields": []})
    v3 = json.dumps(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string", "default": ""}]}
    )
    assert check_backward_all(v3, [v1, v2], transitive=False).compatible
    assert not check_backward_all(v3, [v1, v2], transitive=True).compatible


def test_check_passes_on_the_project_schemas() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert f"all {len(Topic)} schemas" in result.output
