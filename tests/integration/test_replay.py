"""Replay in, end to end on a real Apache Kafka (``kafka_bootstrap``), plus its pure parts.

Records are read back by a plain confluent-kafka Consumer and decoded by confluent-kafka's own
``AvroDeserializer`` against the same (mock://) Schema Registry client the replay registered
its schemas in: what any registry-aware consumer outside this project would do.
"""

from __future__ import annotations

import csv
import gzip
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.adapters.market_files import TimeWindow
from streams.adapters.replay import ReplayError, SameTopicError
from streams.adapters.replay.files import (
    Encode,
    Pacer,
    default_encoders,
    parse_speed,
    replay_files,
)
from streams.adapters.replay.topic import base_topic_of, replay_topic, target_topic_for
from streams.contracts.records import TickKind, TickReceived
from streams.contracts.ticks import TickReason
from streams.kafka_io import (
    BrokerUnreachableError,
    DeliveryFailedError,
    ProducerOptions,
    UnknownTopicError,
)
from streams.ordering import WATERMARK_HEADER
from tests.shared_data import BINANCE

DATA = BINANCE
FUTURES = DATA / "um_futures_1m_2025"
DAY_START = 1746403200000  # 2025-05-05T00:00Z
DAY_END = DAY_START + 86_400_000
HOUR = 3_600_000


# ------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int
    headers: tuple[tuple[str, bytes], ...]


@pytest.fixture
def registry_client() -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": "mock://replay-tests"})


@pytest.fixture
def encoders(registry_client: Any) -> tuple[Encode, Encode]:
    from streams.contracts.registry import ConfluentSchemaRegistry

    return default_encoders(ConfluentSchemaRegistry("mock://replay-tests", registry_client))


def consume_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Consumed]:
    """Every data record of ``topic`` up to its end, by a plain consumer (no group commit)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        records: list[Consumed] = []
        import time

        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                if msg.offset() >= ends[msg.partition()]:
                    pending.discard(msg.partition())
                continue
            assert error is None, error
            if any(k == WATERMARK_HEADER for k, _ in msg.headers() or ()):
                continue  # in-band watermarks are control records, not data
            records.append(
                Consumed(
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    msg.timestamp()[1],
                    tuple(msg.headers() or ()),
                )
            )
        assert not pending, f"timed out reading {topic}: partitions {pending} unfinished"
        return records
    finally:
        consumer.close()


def decoder(client: Any, topic: str) -> Any:
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserialize = AvroDeserializer(client)
    context = SerializationContext(topic, MessageField.VALUE)
    return lambda value: deserialize(value, context)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def first_lines(path: Path, count: int) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


def in_order(values: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


# ------------------------------------------------------------------------------ file replay


@pytest.mark.kafka
def test_one_day_of_btcusdt_yields_one_record_per_row_in_time_order(
    kafka_bootstrap: str, unique_prefix: str, registry_client: Any, encoders: Any
) -> None:
    summary = replay_files(
        FUTURES,
        bootstrap=kafka_bootstrap,
        prefix=unique_prefix,
        symbols=["BTCUSDT"],
        window=TimeWindow(DAY_START, DAY_END),
        encoders=encoders,
        show_progress=False,
    )
    expected = [
        r for r in csv_rows(FUTURES / "BTCUSDT.csv.gz")
        if DAY_START <= int(r["open_time_ms"]) < DAY_END
    ]  # fmt: skip
    assert summary.produced == summary.ticks == len(expected) == 1440
    assert summary.dead_letters == 0

    topic = f"{unique_prefix}market.ticks"
    records = consume_all(kafka_bootstrap, topic)
    decode = decoder(registry_client, topic)
    assert len(records) == 1440
    assert {r.partition for r in records} == {records[0].partition}  # one key, one partition
    records.sort(key=lambda r: r.offset)
    for record, row in zip(records, expected, strict=True):
        value = decode(record.value)
        assert record.key == b"BTCUSDT"
        assert record.timestamp == value["event_time_ms"] == int(row["open_time_ms"])
        assert value["kind"] == "KLINE_1M" and value["interval_ms"] == 60_000
        assert [value[c] for c in ("open", "high", "low", "close", "volume")] == [
            float(row[c]) for c in ("open", "high", "low", "close", "volume")
        ]
        assert value["source"] == "replay-file:um_futures_1m_2025/BTCUSDT.csv.gz"
    assert consume_all(kafka_bootstrap, f"{unique_prefix}deadletter") == []


@pytest.mark.kafka
def test_symbols_land_where_faust_hashes_them_and_each_partition_is_time_ordered(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any
) -> None:
    from aiokafka.partitioner import murmur2

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "LINKUSDT"]
    summary = replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=unique_prefix, symbols=symbols,
        window=TimeWindow(DAY_START, DAY_START + 2 * HOUR), encoders=encoders,
        partitions=4, show_progress=False,
    )  # fmt: skip
    records = consume_all(kafka_bootstrap, f"{unique_prefix}market.ticks")
    assert len(records) == summary.produced == 6 * 120
    for record in records:
        assert record.key is not None
        # Faust (aiokafka) partitions keys with murmur2; so must the replay producer.
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 4
    for partition in {r.partition for r in records}:
        stamps = [r.timestamp for r in sorted(records, key=lambda r: r.offset)
                  if r.partition == partition]  # fmt: skip
        assert in_order(stamps)


def write_with_bad_rows(tmp_path: Path) -> tuple[Path, dict[int, TickReason], list[str]]:
    """A real file's first rows with one bad row per reason injected; returns line -> reason."""
    real = first_lines(FUTURES / "ETHUSDT.csv.gz", 61)
    header, good = real[0], real[1:]
    t0 = int(good[0].split(",")[0])
    bad_rows = [
        ("not,a,row", TickReason.UNPARSABLE),
        ("{t},NaN,1,1,1,1", TickReason.NAN),
        ("{t},1,1,0,1,1", TickReason.NON_POSITIVE_PRICE),
        ("{t},1,1,1,1,-3", TickReason.NEGATIVE_VOLUME),
        ("{t},1,1,2,1,1", TickReason.HIGH_BELOW_LOW),
        ("{t},3,2,1,1,1", TickReason.OPEN_CLOSE_OUTSIDE_RANGE),
        ("{t_odd},1,1,1,1,1", TickReason.MISALIGNED_TIME),
        ("{t_same},1,1,1,1,1", TickReason.DUPLICATE_TIME),
        ("{t0},1,1,1,1,1", TickReason.OUT_OF_ORDER_TIME),
    ]
    lines, expected = [header], {}
    for index, (template, reason) in enumerate(bad_rows):
        lines.extend(good[index * 5 : index * 5 + 5])
        last = int(lines[-1].split(",")[0])
        lines.append(template.format(t=last + 60_000, t_odd=last + 60_001, t_same=last, t0=t0))
        expected[len(lines)] = reason
    lines.extend(good[len(bad_rows) * 5 :])
    path = tmp_path / "ETHUSDT.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path, expected, good


@pytest.mark.kafka
def test_each_bad_row_becomes_one_dead_letter_and_every_good_row_is_delivered(
    kafka_bootstrap: str, unique_prefix: str, registry_client: Any, encoders: Any, tmp_path: Path
) -> None:
    path, expected, good = write_with_bad_rows(tmp_path)
    summary = replay_files(
        path, bootstrap=kafka_bootstrap, prefix=unique_prefix, encoders=encoders,
        show_progress=False,
    )  # fmt: skip
    assert summary.produced == len(good) == 60
    assert summary.dead_letters == len(expected) == 9

    dead_topic = f"{unique_prefix}deadletter"
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    decode_dead = decoder(registry_client, dead_topic)
    letters = {}
    for record in consume_all(kafka_bootstrap, dead_topic):
        value = decode_dead(record.value)
        assert record.key == value["source_file"].encode()
        letters[value["source_line"]] = value
    assert {line: TickReason(v["reason"]) for line, v in letters.items()} == expected
    for line_no, value in letters.items():
        assert value["raw"] == lines[line_no - 1].encode()
        assert value["source_file"] == f"{tmp_path.name}/ETHUSDT.csv.gz"
        assert value["stage"] == "replay" and value["detail"]
        assert value["dead_letter_id"] == f"replay:{tmp_path.name}/ETHUSDT.csv.gz:{line_no}"

    ticks_topic = f"{unique_prefix}market.ticks"
    decode_tick = decoder(registry_client, ticks_topic)
    ticks = sorted(consume_all(kafka_bootstrap, ticks_topic), key=lambda r: r.offset)
    assert [decode_tick(r.value)["event_time_ms"] for r in ticks] == [
        int(g.split(",")[0]) for g in good
    ]


@pytest.mark.kafka
def test_trades_replay_with_trade_fields(
    kafka_bootstrap: str, unique_prefix: str, registry_client: Any, encoders: Any
) -> None:
    path = DATA / "trades_um_futures" / "BTCUSDT.csv.gz"
    summary = replay_files(
        path, bootstrap=kafka_bootstrap, prefix=unique_prefix, encoders=encoders,
        show_progress=False,
    )  # fmt: skip
    rows = csv_rows(path)
    assert summary.produced == len(rows) == 11_455
    topic = f"{unique_prefix}market.ticks"
    decode = decoder(registry_client, topic)
    records = sorted(consume_all(kafka_bootstrap, topic), key=lambda r: r.offset)
    values = [decode(r.value) for r in records]
    assert [v["trade_id"] for v in values] == [int(r["trade_id"]) for r in rows]
    assert [v["is_buyer_maker"] for v in values] == [r["is_buyer_maker"] == "true" for r in rows]
    assert all(v["kind"] == "TRADE" and v["open"] == v["close"] for v in values)


@pytest.mark.kafka
def test_delivery_failure_is_raised_not_swallowed(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any
) -> None:
    from tests.kafka_topics import create_topics

    # The broker refuses every batch of this topic (too large), so nothing can be delivered.
    ticks = f"{unique_prefix}market.ticks"
    create_topics(kafka_bootstrap, [ticks], partitions=1, config={"max.message.bytes": "64"})
    with pytest.raises(DeliveryFailedError, match=ticks):
        replay_files(
            FUTURES / "BTCUSDT.csv.gz", bootstrap=kafka_bootstrap, prefix=unique_prefix,
            window=TimeWindow(DAY_START, DAY_START + HOUR), encoders=encoders,
            show_progress=False,
        )  # fmt: skip


def test_unreachable_broker_is_a_clear_error(encoders: Any) -> None:
    with pytest.raises(BrokerUnreachableError, match=r"127\.0\.0\.1:1 unreachable"):
        replay_files(
            FUTURES / "BTCUSDT.csv.gz", bootstrap="127.0.0.1:1",
            window=TimeWindow(DAY_START, DAY_START + HOUR), encoders=encoders,
            show_progress=False,
        )  # fmt: skip


# ------------------------------------------------------------------------------ topic replay


@pytest.mark.kafka
@pytest.mark.parametrize("trust_time_index", [True, False])
def test_topic_replay_copies_exactly_the_records_in_the_time_range(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any, trust_time_index: bool
) -> None:
    source_prefix, target_prefix = f"{unique_prefix}rec.", f"{unique_prefix}run42."
    replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=source_prefix,
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], encoders=encoders, partitions=3,
        window=TimeWindow(DAY_START, DAY_START + 6 * HOUR), show_progress=False,
    )  # fmt: skip
    source = f"{source_prefix}market.ticks"
    target = target_topic_for(source, target_prefix, "")
    assert target == f"{target_prefix}market.ticks"
    start, end = DAY_START + 2 * HOUR + 17 * 60_000, DAY_START + 4 * HOUR + 3 * 60_000
    summary = replay_topic(
        source, target, TimeWindow(start, end), bootstrap=kafka_bootstrap,
        trust_time_index=trust_time_index,
    )  # fmt: skip

    def fingerprint(r: Consumed) -> tuple[Any, ...]:
        return (r.partition, r.key, r.value, r.timestamp, r.headers)

    wanted = sorted(
        fingerprint(r) for r in consume_all(kafka_bootstrap, source) if start <= r.timestamp < end
    )
    copied = consume_all(kafka_bootstrap, target)
    assert len(wanted) == 3 * (end - start) // 60_000
    assert sorted(fingerprint(r) for r in copied) == wanted
    assert summary.total_copied == len(wanted)
    for partition in {r.partition for r in copied}:
        stamps = [r.timestamp for r in sorted(copied, key=lambda r: r.offset)
                  if r.partition == partition]  # fmt: skip
        assert in_order(stamps)


@pytest.mark.kafka
@pytest.mark.parametrize("trust_time_index", [True, False])
def test_topic_replay_keeps_key_headers_and_timestamp(
    kafka_bootstrap: str, unique_prefix: str, trust_time_index: bool
) -> None:
    from confluent_kafka import Producer

    from tests.kafka_topics import create_topics

    source, target = f"{unique_prefix}src.market.ticks", f"{unique_prefix}dst.market.ticks"
    create_topics(kafka_bootstrap, [source], partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for i in range(40):
        headers = [("traceparent", f"00-{i:032x}-{i:016x}-01".encode())]
        producer.produce(
            source, f"v{i}".encode(), f"k{i % 3}".encode(),
            timestamp=DAY_START + i * 1000, headers=headers,
        )  # fmt: skip
    producer.flush(30)
    window = TimeWindow(DAY_START + 10_000, DAY_START + 30_000)
    summary = replay_topic(
        source, target, window, bootstrap=kafka_bootstrap, trust_time_index=trust_time_index
    )
    copied = consume_all(kafka_bootstrap, target)
    assert sorted(r.value for r in copied) == sorted(f"v{i}".encode() for i in range(10, 30))
    for record in copied:
        i = int(record.value[1:])
        assert record.headers == (("traceparent", f"00-{i:032x}-{i:016x}-01".encode()),)
        assert record.timestamp == DAY_START + i * 1000 and record.key == f"k{i % 3}".encode()
    assert summary.total_copied == 20


def test_topic_replay_refuses_its_own_topic() -> None:
    with pytest.raises(SameTopicError, match="into itself"):
        target_topic_for("run42.market.ticks", None, "run42.")
    with pytest.raises(SameTopicError):
        replay_topic("a.market.ticks", "a.market.ticks", TimeWindow(), bootstrap="127.0.0.1:1")


# ------------------------------------------------------------------------------ pure parts


def test_target_topic_keeps_the_base_topic_under_the_new_prefix() -> None:
    assert base_topic_of("run41.market.ticks") == "market.ticks"
    assert base_topic_of("market.ticks") == "market.ticks"
    assert base_topic_of("custom") == "custom"
    assert target_topic_for("market.ticks", "run42.", "") == "run42.market.ticks"
    assert target_topic_for("run41.market.ticks", None, "run42.") == "run42.market.ticks"


def test_speed_parsing() -> None:
    assert parse_speed("max") is None
    assert parse_speed("60") == 60.0
    for bad in ("0", "-2", "fast"):
        with pytest.raises(ReplayError):
            parse_speed(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_spaces_events_by_event_time_over_speed() -> None:
    clock = FakeClock()
    pacer = Pacer(60.0, clock, clock.sleep)
    for minute in range(4):
        pacer.wait_for(DAY_START + minute * 60_000)
        clock.now += 0.25  # work done per event
    # One event-minute at 60x = 1 s of wall time; 0.25 s of it was spent working.
    assert clock.sleeps == pytest.approx([0.75, 0.75, 0.75])
    unpaced = Pacer(None, clock, clock.sleep)
    unpaced.wait_for(DAY_START)
    unpaced.wait_for(DAY_END)
    assert len(clock.sleeps) == 3


def test_the_pacer_calls_before_sleep_only_when_it_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(60.0, clock, clock.sleep)
    announced: list[int] = []
    for t in (DAY_START, DAY_START, DAY_START + 60_000, DAY_START + 60_000):
        pacer.wait_for(t, announced.append)
    # The anchor and the second tick of a minute are due at once: nothing to announce.
    assert announced == [DAY_START + 60_000]
    assert clock.sleeps == pytest.approx([1.0])


@pytest.mark.kafka
def test_a_paced_replay_announces_each_minute_before_it_waits_and_sends_the_same_ticks(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any
) -> None:
    from streams.ordering import header_value

    clock = FakeClock()
    runs = {}
    for name, speed in (("paced", 60.0), ("unpaced", None)):
        prefix = f"{unique_prefix}{name}."
        replay_files(
            FUTURES, bootstrap=kafka_bootstrap, prefix=prefix, encoders=encoders,
            symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], partitions=3, speed=speed,
            window=TimeWindow(DAY_START, DAY_START + 10 * 60_000), show_progress=False,
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip
        runs[name] = raw_records(kafka_bootstrap, f"{prefix}market.ticks")
    assert len(clock.sleeps) == 9  # one wait per minute after the first
    for partition, records in runs["paced"].items():
        data = [m for m in records if header_value(m.headers(), WATERMARK_HEADER) is None]
        unpaced = [
            m for m in runs["unpaced"][partition]
            if header_value(m.headers(), WATERMARK_HEADER) is None
        ]  # fmt: skip
        assert [(m.key(), m.value()) for m in data] == [(m.key(), m.value()) for m in unpaced]
        # Before each later minute's first tick, every partition was told that minute had come.
        marks = {
            int(mark) for m in records if (mark := header_value(m.headers(), WATERMARK_HEADER))
        }
        assert {DAY_START + i * 60_000 for i in range(1, 10)} <= marks
        promised = -1
        for msg in records:
            mark = header_value(msg.headers(), WATERMARK_HEADER)
            if mark is not None:
                promised = max(promised, int(mark))
            else:
                assert msg.timestamp()[1] >= promised


def test_a_replayed_trade_tick_encodes_as_a_valid_tick_received(
    registry_client: Any, encoders: Any
) -> None:
    encode_tick, _ = encoders
    tick = TickReceived(
        symbol="BTCUSDT", event_time_ms=DAY_START, kind=TickKind.TRADE, open=2.0, high=2.0,
        low=2.0, close=2.0, volume=0.5, interval_ms=0,
        source="replay-file:trades_spot/BTCUSDT.csv.gz", trade_id=7, is_buyer_maker=True,
    )  # fmt: skip
    decoded = decoder(registry_client, "market.ticks")(encode_tick(tick))
    assert decoded == {**tick.to_avro(), "kind": "TRADE"}


@pytest.mark.kafka
def test_topic_replay_of_a_missing_topic_is_a_clear_error(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    source = f"{unique_prefix}missing.market.ticks"
    with pytest.raises(UnknownTopicError, match=f"topic '{source}' does not exist"):
        replay_topic(
            source, f"{unique_prefix}copy.market.ticks", TimeWindow(), bootstrap=kafka_bootstrap
        )


@pytest.mark.kafka
def test_replaying_twice_appends_byte_identical_records(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any
) -> None:
    def run() -> None:
        replay_files(
            FUTURES, bootstrap=kafka_bootstrap, prefix=unique_prefix, symbols=["ETHUSDT"],
            window=TimeWindow(DAY_START, DAY_START + HOUR), encoders=encoders,
            show_progress=False,
        )  # fmt: skip

    run()
    run()  # the topics exist now: the second run must reuse them
    records = sorted(
        consume_all(kafka_bootstrap, f"{unique_prefix}market.ticks"), key=lambda r: r.offset
    )
    assert len(records) == 120
    first, second = records[:60], records[60:]
    assert [(r.key, r.value, r.timestamp) for r in first] == [
        (r.key, r.value, r.timestamp) for r in second
    ]


# ------------------------------------------------------------------------------ command line


def run_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from streams.cli import app

    return CliRunner().invoke(app, ["replay", *args], env={"COLUMNS": "160"})


def flat(text: str) -> str:
    """Console output with runs of whitespace collapsed (table padding varies)."""
    return " ".join(text.split())


def test_cli_dry_run_prints_dead_letters_by_reason(tmp_path: Path) -> None:
    path, expected, good = write_with_bad_rows(tmp_path)
    result = run_cli("--data", str(path), "--dry-run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing sent" in result.output
    assert f"valid ticks │ {len(good)} │" in flat(result.output)
    for reason in expected.values():
        assert f"│ {reason.value} │ 1 │" in flat(result.output)


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = run_cli("--data", str(tmp_path / "nope"), "--dry-run")
    assert missing.exit_code == 1
    assert "no such file or directory" in missing.output
    assert "Traceback" not in missing.output
    both = run_cli("--data", "x", "--topic", "market.ticks")
    assert both.exit_code == 2 and "exactly one of --data PATH or --topic NAME" in both.output
    unknown = run_cli("--data", str(FUTURES), "--symbols", "FOOUSDT", "--dry-run")
    assert unknown.exit_code == 1 and "no file for symbols FOOUSDT" in unknown.output


@pytest.mark.kafka
def test_cli_replays_files_then_a_topic_range(kafka_bootstrap: str, unique_prefix: str) -> None:
    common = ("--bootstrap", kafka_bootstrap, "--no-progress")
    files = run_cli(
        "--data", str(FUTURES), "--symbols", "BTCUSDT,ETHUSDT", "--start", "2025-05-05",
        "--end", "2025-05-05T01:00", "--prefix", unique_prefix, *common,
    )  # fmt: skip
    assert files.exit_code == 0, files.output
    assert f"produced to {unique_prefix}market.ticks │ 120 │" in flat(files.output)
    topic = run_cli(
        "--topic", f"{unique_prefix}market.ticks", "--start", "2025-05-05T00:30",
        "--end", "2025-05-05T00:45", "--into", f"{unique_prefix}copy.", *common,
    )  # fmt: skip
    assert topic.exit_code == 0, topic.output
    assert "copied 30 of" in topic.output
    assert len(consume_all(kafka_bootstrap, f"{unique_prefix}copy.market.ticks")) == 30


@pytest.mark.embedded
@pytest.mark.parametrize("trust_time_index", [True, False])
def test_replay_in_and_topic_range_on_the_embedded_broker(
    embedded_bootstrap: str, unique_prefix: str, encoders: Any, trust_time_index: bool
) -> None:
    # The demo's broker: idempotence off; its ListOffsets high watermark is short (bug B1) and
    # its time index coarse (B2): the copy must still be exact.
    options = ProducerOptions(embedded_bootstrap, idempotence=False)
    summary = replay_files(
        FUTURES, bootstrap=embedded_bootstrap, prefix=unique_prefix,
        symbols=["BTCUSDT", "ETHUSDT"], window=TimeWindow(DAY_START, DAY_START + 2 * HOUR),
        options=options, encoders=encoders, show_progress=False,
    )  # fmt: skip
    assert summary.produced == 240
    source = f"{unique_prefix}market.ticks"
    assert len(consume_all(embedded_bootstrap, source)) == 240
    window = TimeWindow(DAY_START + HOUR, DAY_START + HOUR + 15 * 60_000)
    copied = replay_topic(
        source, f"{unique_prefix}copy.market.ticks", window, bootstrap=embedded_bootstrap,
        options=options, trust_time_index=trust_time_index,
    )  # fmt: skip
    assert copied.total_copied == 30
    target = consume_all(embedded_bootstrap, f"{unique_prefix}copy.market.ticks")
    assert sorted(r.timestamp for r in target) == sorted(
        DAY_START + HOUR + m * 60_000 for m in range(15) for _ in range(2)
    )


def raw_records(bootstrap: str, topic: str) -> dict[int, list[Any]]:
    """Every record of ``topic`` (watermarks included) per partition, in offset order."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.raw",
                         "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: dict[int, list[Any]] = {p: [] for p in partitions}
        pending = set(partitions)
        while pending:
            msg = consumer.poll(5.0)
            assert msg is not None, f"timed out reading {topic}"
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                pending.discard(msg.partition())
                continue
            out[msg.partition()].append(msg)
        return out
    finally:
        consumer.close()


@pytest.mark.kafka
def test_a_ticks_copy_carries_watermarks_of_its_own_and_ends_the_stream(
    kafka_bootstrap: str, unique_prefix: str, encoders: Any
) -> None:
    from streams.ordering import END_OF_STREAM, WATERMARK_EVERY_MS, header_value

    source_prefix, target_prefix = f"{unique_prefix}rec.", f"{unique_prefix}copy."
    replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=source_prefix, encoders=encoders,
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"], partitions=3,
        window=TimeWindow(DAY_START, DAY_START + 3 * HOUR), show_progress=False,
        end_of_stream=True,
    )  # fmt: skip
    source, target = f"{source_prefix}market.ticks", f"{target_prefix}market.ticks"
    window = TimeWindow(DAY_START + HOUR, DAY_START + 2 * HOUR)
    summary = replay_topic(source, target, window, bootstrap=kafka_bootstrap, end_of_stream=True)
    assert summary.end_of_stream and summary.watermarks_sent > 0

    copied = raw_records(kafka_bootstrap, target)
    originals = raw_records(kafka_bootstrap, source)
    for partition, records in copied.items():
        data = [m for m in records if header_value(m.headers(), WATERMARK_HEADER) is None]
        wanted = [
            m for m in originals[partition]
            if header_value(m.headers(), WATERMARK_HEADER) is None
            and window.contains(m.timestamp()[1])
        ]  # fmt: skip
        # Each partition is the source's in its order; the source run's watermarks are not.
        assert [(m.key(), m.value()) for m in data] == [(m.key(), m.value()) for m in wanted]
        last = header_value(records[-1].headers(), WATERMARK_HEADER)
        assert last is not None and int(last) == END_OF_STREAM, "the copy ends the stream"
        # A watermark is a promise: no later record of its partition is behind it.
        promised = -1
        for msg in records[:-1]:
            mark = header_value(msg.headers(), WATERMARK_HEADER)
            if mark is not None:
                assert int(mark) >= promised
                promised = int(mark)
            else:
                assert msg.timestamp()[1] >= promised
        # Time moves on in-band even where a partition has few symbols: a mark per minute
        # at least, wherever the partition got no tick of that minute.
        times = sorted({m.timestamp()[1] for m in records[:-1]})
        assert all(b - a <= WATERMARK_EVERY_MS for a, b in itertools.pairwise(times))
    assert summary.total_copied == 4 * 60


def test_a_copy_of_another_topic_refuses_an_end_of_stream() -> None:
    # Only a market.ticks copy gets watermarks (the topology's input); nothing is read first.
    with pytest.raises(ReplayError, match="end-of-stream marker needs watermarks"):
        replay_topic("a.trades.closed", "b.trades.closed", TimeWindow(),
                     bootstrap="127.0.0.1:1", end_of_stream=True)  # fmt: skip
