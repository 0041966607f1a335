"""Codec: round trips of every schema's example, the wire format, validation both ways."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.contracts.codec import (
    AvroCodec,
    TopicCodec,
    deserializer_for,
    register_faust_codecs,
    serializer_for,
    split_wire,
)
from streams.contracts.errors import ContractError, UnreleasedSchemaError
from streams.contracts.examples import load_example
from streams.contracts.records import TickKind, TickReceived, record_type
from streams.contracts.registry import FileSchemaRegistry
from streams.contracts.schema_loader import SCHEMAS_DIR, load_topic_schema, subject_for
from streams.topics import Topic
from tests.shared_data import BINANCE

DATA = BINANCE / "um_futures_1m_2025" / "BTCUSDT.csv.gz"


@pytest.fixture(scope="module")
def registry() -> FileSchemaRegistry:
    return FileSchemaRegistry(SCHEMAS_DIR)


def registered_id(topic: Topic) -> int:
    """The id registry.json gives the current schema (read independently of the codec)."""
    doc = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    return int(doc["subjects"][subject_for(topic)][-1]["id"])


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_example_round_trips_through_the_codec(topic: Topic, registry: FileSchemaRegistry) -> None:
    example = load_example(topic)
    data = serializer_for(topic, registry)(example)
    assert deserializer_for(topic, registry)(data) == example
    record = deserializer_for(topic, registry, as_record=True)(data)
    assert isinstance(record, record_type(topic))
    assert record == record_type(topic).from_avro(example)
    # a typed record encodes to exactly the same bytes as its dict form
    assert serializer_for(topic, registry)(record) == data


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_wire_format_is_magic_byte_big_endian_id_and_plain_avro_body(
    topic: Topic, registry: FileSchemaRegistry
) -> None:
    example = load_example(topic)
    data = serializer_for(topic, registry)(example)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == registered_id(topic)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_topic_schema(topic).schema.parsed, example)
    assert data[5:] == body.getvalue()


def test_real_ticks_of_one_day_round_trip(registry: FileSchemaRegistry) -> None:
    with gzip.open(DATA, "rt") as fh:
        rows = [row for _, row in zip(range(1440), csv.DictReader(fh), strict=False)]
    ticks = [
        TickReceived(
            symbol="BTCUSDT",
            event_time_ms=int(r["open_time_ms"]),
            kind=TickKind.KLINE_1M,
            open=float(r["open"]),
            high=float(r["high"]),
            low=float(r["low"]),
            close=float(r["close"]),
            volume=float(r["volume"]),
            interval_ms=60_000,
            source=f"replay-file:{DATA.name}",
        )
        for r in rows
    ]
    encode = serializer_for(Topic.MARKET_TICKS, registry)
    decode = deserializer_for(Topic.MARKET_TICKS, registry, as_record=True)
    assert [decode(encode(t)) for t in ticks] == ticks
    assert len(ticks) == 1440


def _supervised() -> dict[str, Any]:
    return load_example(Topic.SIGNALS_SUPERVISED)


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (
            lambda r: r["signal"]["votes"][1].update(confidence="high"),
            "signal.votes[1].confidence",
            "expected double",
        ),
        (
            lambda r: r["signal"]["votes"][2].update(latency_us=1.5),
            "signal.votes[2].latency_us",
            "expected long",
        ),
        (
            lambda r: r["signal"]["votes"][0].update(action="STRONG_BUY"),
            "signal.votes[0].action",
            "not a symbol",
        ),
        (
            lambda r: r["signal"]["probabilities"].__setitem__(2, math.nan),
            "signal.probabilities[2]",
            "finite",
        ),
        (lambda r: r["bias"].pop("overall_window"), "bias.overall_window", "missing"),
        (lambda r: r["bias"].update(symbol_window=2**31), "bias.symbol_window", "out of range"),
        (lambda r: r.update(vetoed=1), "vetoed", "expected boolean"),
        (
            lambda r: r["veto_reasons"][0].update(observed="x"),
            "veto_reasons[0].observed",
            "expected double",
        ),
        (
            lambda r: r.update(extra_field=1),
            "",
            "unknown field(s) for quantum_trader.v1.SignalSupervised: extra_field",
        ),
    ],
    ids=[
        "str-for-double",
        "float-for-long",
        "bad-enum",
        "nan",
        "missing",
        "int-range",
        "int-for-bool",
        "nullable",
        "unknown",
    ],
)
def test_produce_rejects_bad_records_with_field_path(
    mutate: Any, path: str, reason: str, registry: FileSchemaRegistry
) -> None:
    record = _supervised()
    mutate(record)
    with pytest.raises(ContractError) as caught:
        serializer_for(Topic.SIGNALS_SUPERVISED, registry)(record)
    err = caught.value
    assert (err.topic, err.subject, err.direction) == (
        "signals.supervised",
        "signals.supervised-value",
        "produce",
    )
    assert err.field_path == path
    assert reason in err.reason
    assert f"'{path}'" in str(err) or not path


def _consume_error(topic: Topic, data: bytes, registry: FileSchemaRegistry) -> ContractError:
    with pytest.raises(ContractError) as caught:
        deserializer_for(topic, registry)(data)
    assert caught.value.direction == "consume"
    assert caught.value.topic == topic.value
    return caught.value


def test_consume_rejects_bad_framing_ids_and_bodies(registry: FileSchemaRegistry) -> None:
    good = serializer_for(Topic.MARKET_TICKS, registry)(load_example(Topic.MARKET_TICKS))
    assert (
        "magic byte is 1" in _consume_error(Topic.MARKET_TICKS, b"\x01" + good[1:], registry).reason
    )
    assert "shorter than" in _consume_error(Topic.MARKET_TICKS, good[:3], registry).reason
    unknown = b"\x00" + struct.pack(">I", 999_999) + good[5:]
    assert "999999" in _consume_error(Topic.MARKET_TICKS, unknown, registry).reason
    assert "undecodable" in _consume_error(Topic.MARKET_TICKS, good[:-3], registry).reason
    assert "trailing bytes" in _consume_error(Topic.MARKET_TICKS, good + b"\x00", registry).reason
    fill = serializer_for(Topic.EXECUTION_FILLS, registry)(load_example(Topic.EXECUTION_FILLS))
    wrong_topic = _consume_error(Topic.MARKET_TICKS, fill, registry)
    assert "FillExecuted" in wrong_topic.reason and wrong_topic.schema_id == registered_id(
        Topic.EXECUTION_FILLS
    )


def test_consume_validates_decoded_values(registry: FileSchemaRegistry) -> None:
    """A foreign producer can write NaN (legal Avro); our consumer refuses it with the path."""
    tick = load_example(Topic.MARKET_TICKS) | {"close": math.nan}
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", registered_id(Topic.MARKET_TICKS)))
    fastavro.schemaless_writer(out, load_topic_schema(Topic.MARKET_TICKS).schema.parsed, tick)
    err = _consume_error(Topic.MARKET_TICKS, out.getvalue(), registry)
    assert err.field_path == "close" and "finite" in err.reason


def test_unreleased_schema_cannot_be_produced(tmp_schemas: Path) -> None:
    path = tmp_schemas / "market.ticks.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(
        {"name": "venue", "type": "string", "default": "binance", "doc": "Venue."}
    )
    path.write_text(json.dumps(schema))
    codec = TopicCodec(Topic.MARKET_TICKS, FileSchemaRegistry(tmp_schemas), schemas_dir=tmp_schemas)
    with pytest.raises(UnreleasedSchemaError, match="schemas release"):
        codec.encode(load_example(Topic.MARKET_TICKS))


def test_old_data_reads_with_the_new_schema_after_a_compatible_release(tmp_schemas: Path) -> None:
    registry = FileSchemaRegistry(tmp_schemas)
    v1 = TopicCodec(Topic.MARKET_TICKS, registry, schemas_dir=tmp_schemas)
    old_bytes = v1.encode(load_example(Topic.MARKET_TICKS))
    path = tmp_schemas / "market.ticks.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(
        {"name": "venue", "type": "string", "default": "binance", "doc": "Venue."}
    )
    path.write_text(json.dumps(schema))
    doc = json.loads((tmp_schemas / "registry.json").read_text())
    next_id, versions = doc["next_id"], len(doc["subjects"]["market.ticks-value"])
    released = registry.register("market.ticks-value", path.read_text())
    assert released.version == versions + 1
    assert released.schema_id == next_id  # a fresh id: ids are never reused
    v2 = TopicCodec(Topic.MARKET_TICKS, registry, schemas_dir=tmp_schemas)
    decoded = v2.decode(old_bytes)
    assert decoded["venue"] == "binance"  # the reader default fills the field v1 lacked
    assert split_wire(v2.encode(decoded))[0] == released.schema_id


def test_faust_codec_and_registered_names(registry: FileSchemaRegistry) -> None:
    from faust.serializers import codecs

    example = load_example(Topic.ORDERS_INTENTS)
    codec = AvroCodec(topic=Topic.ORDERS_INTENTS, registry=registry)
    data = codec.dumps(example)
    assert codec.loads(data) == example
    typed = AvroCodec(topic=Topic.ORDERS_INTENTS, registry=registry, as_record=True)
    assert typed.loads(data) == record_type(Topic.ORDERS_INTENTS).from_avro(example)
    names = register_faust_codecs(registry)
    assert "avro:orders.intents" in names
    assert codecs.dumps("avro:orders.intents", example) == data
    assert codecs.loads("avro:orders.intents", data) == example
