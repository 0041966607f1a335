"""Drift between the record dataclasses and the .avsc files, and the docs lint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.contracts.check import lint_docs
from streams.contracts.drift import record_drift
from streams.contracts.records import RECORD_TYPES, record_type
from streams.contracts.schema_loader import load_topic_schema, parse_schema_text
from streams.topics import Topic


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_dataclass_mirrors_schema(topic: Topic) -> None:
    assert record_drift(record_type(topic), load_topic_schema(topic).schema.parsed) == []


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_schema_is_documented_and_namespaced(topic: Topic) -> None:
    raw = json.loads(load_topic_schema(topic).schema.text)
    assert raw["namespace"] == "quantum_trader.v1"
    assert raw["name"] == record_type(topic).__name__
    assert lint_docs(raw) == []


def test_every_topic_has_a_record() -> None:
    assert set(RECORD_TYPES) == set(Topic)


def _mutated(topic: Topic, change: Any) -> Any:
    raw = json.loads(load_topic_schema(topic).schema.text)
    change(raw)
    return parse_schema_text(json.dumps(raw)).parsed


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


@pytest.mark.parametrize(
    ("topic", "change", "expected"),
    [
        (Topic.MARKET_TICKS, lambda r: r["fields"].reverse(), "fields differ"),
        (Topic.MARKET_TICKS, lambda r: _field(r, "volume").update(type="string"), "string expects"),
        (
            Topic.MARKET_TICKS,
            lambda r: _field(r, "trade_id").update(type=["null", "long", "string"]),
            "unions",
        ),
        (
            Topic.MARKET_TICKS,
            lambda r: _field(r, "source").update(type=["null", "string"], default=None),
            "Avro default None missing",
        ),
        (
            Topic.MARKET_FEATURES,
            lambda r: _field(r, "window_columns").update(default=6),
            "default differs",
        ),
        (
            Topic.MARKET_TICKS,
            lambda r: _field(r, "kind")["type"]["symbols"].append("BOOK"),
            "enum symbols differ",
        ),
        (
            Topic.SIGNALS_SUPERVISED,
            lambda r: _field(r, "signal")["type"]["fields"][4]["type"]["items"]["fields"].pop(),
            "ModelVote",
        ),
        (
            Topic.CONTROL_COMMANDS,
            lambda r: _field(r, "args").update(type={"type": "map", "values": "long"}),
            "long expects",
        ),
    ],
    ids=["order", "type", "union", "nullable", "default", "enum", "nested", "map"],
)
def test_drift_is_reported(topic: Topic, change: Any, expected: str) -> None:
    problems = record_drift(record_type(topic), _mutated(topic, change))
    assert problems and any(expected in p for p in problems), problems


def test_lint_finds_missing_docs_in_nested_types() -> None:
    raw = json.loads(load_topic_schema(Topic.SIGNALS_SUPERVISED).schema.text)
    del _field(raw, "bias")["type"]["fields"][0]["doc"]
    del raw["namespace"]
    problems = lint_docs(raw)
    assert any("bias.symbol_buy_share: field has no doc" in p for p in problems)
    assert any("namespace" in p for p in problems)
