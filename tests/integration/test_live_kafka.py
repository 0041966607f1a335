"""Live ingest on a real Kafka: with disconnects, a stall, duplicates and gaps, ``market.ticks``
holds exactly the ticks the file replay writes for the same klines (keys, partitions,
timestamps, headers, values; only ``source`` names the stream instead of the file), and its
in-band watermarks are true and prompt: every partition hears that a minute is complete once its
klines are out (the replay, which never waits, lets the next minute's ticks say it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from streams.adapters.live.sink import kafka_live_sink
from streams.adapters.market_files import TimeWindow
from streams.adapters.replay.files import replay_files
from streams.contracts.codec import topic_codec
from streams.kafka_io import ProducerOptions
from streams.ordering import END_OF_STREAM, WATERMARK_HEADER
from streams.topics import Topic
from tests.fakes.binance import FakeBinance, Faults
from tests.fakes.live_support import FUTURES, MINUTE, SYMBOLS, T0, recorded, run_ingest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4


def read_topic(bootstrap: str, topic: str) -> dict[int, list[tuple[Any, ...]]]:
    """Per partition, every record in order: (key, timestamp, headers, value or tick)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    codec = topic_codec(Topic.MARKET_TICKS)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.check",
                         "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    out: dict[int, list[tuple[Any, ...]]] = {p: [] for p in range(PARTITIONS)}
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                if msg.offset() >= ends[msg.partition()]:
                    pending.discard(msg.partition())
                continue
            headers = tuple(msg.headers() or ())
            value: Any = msg.value()
            if not any(k == WATERMARK_HEADER for k, _ in headers):
                value = dataclasses.replace(codec.decode_record(value), source="")
            out[msg.partition()].append((msg.key(), msg.timestamp()[1], headers, value))
    finally:
        consumer.close()
    return out


async def test_live_market_ticks_equal_the_replay_of_the_same_klines(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    end = T0 + 100 * MINUTE
    until = T0 + 90 * MINUTE
    data = recorded(SYMBOLS, T0, end)
    m = lambda n: T0 + n * MINUTE  # noqa: E731
    faults = Faults(
        drop_before={m(35), m(48), m(61)}, abort_before={m(42), m(70)}, stall_before={m(55)},
        duplicate={m(38), m(66)}, swap={m(52)}, skip_ws={("SOLUSDT", m(45)), ("BTCUSDT", m(75))},
        rate_limit_requests={3},
    )  # fmt: skip
    live_prefix, replay_prefix = f"{unique_prefix}live.", f"{unique_prefix}replay."
    sink = kafka_live_sink(kafka_bootstrap, live_prefix, partitions=PARTITIONS)
    server = await FakeBinance(data, m(30), 600.0, faults).start()
    try:
        summary = await run_ingest(server, sink, starts=dict.fromkeys(SYMBOLS, T0), until_ms=until)
    finally:
        await server.stop()
    # Every injected fault fired (5 disconnects, a stall, ...): each ended a session.
    assert summary.backfilled > 0 and summary.sequencer.duplicates > 0
    assert server.connections >= len(summary.connections) + 6
    assert not (faults.drop_before | faults.abort_before | faults.stall_before | faults.duplicate)

    replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=replay_prefix, symbols=SYMBOLS,
        window=TimeWindow(T0, until), options=ProducerOptions(kafka_bootstrap),
        partitions=PARTITIONS, show_progress=False, end_of_stream=True,
    )  # fmt: skip
    live = read_topic(kafka_bootstrap, f"{live_prefix}market.ticks")
    replayed = read_topic(kafka_bootstrap, f"{replay_prefix}market.ticks")
    assert sum(len(r) for r in live.values()) > 90 * len(SYMBOLS)
    streamed = set(range(m(30), until, MINUTE))  # minutes the fake streams (before: backfill)
    for partition in range(PARTITIONS):
        ticks, marks = split_watermarks(live[partition])
        assert ticks == split_watermarks(replayed[partition])[0], f"partition {partition} differs"
        assert marks[-1] == END_OF_STREAM
        # Most streamed minutes are announced on every partition (a reconnect's backfill
        # releases its minutes together, under one announcement).
        announced = {w - MINUTE for w in marks} & streamed
        assert len(announced) >= len(streamed) - 20, f"partition {partition}: {len(announced)}"


def split_watermarks(records: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[int]]:
    """A partition's ticks, and its watermarks after checking each was true when written."""
    ticks: list[tuple[Any, ...]] = []
    marks: list[int] = []
    for record in records:
        header = dict(record[2]).get(WATERMARK_HEADER)
        if header is None:
            assert not marks or record[1] >= marks[-1], f"tick at {record[1]} after {marks[-1]}"
            ticks.append(record)
        else:
            mark = int(header)
            assert not marks or mark >= marks[-1]
            marks.append(mark)
    return ticks, marks
