"""Where a restarted ingest resumes: the newest kline of each symbol already in ``market.ticks``.

A tick's key is its symbol and its record timestamp its event time (watermarks have no key),
so the tail of each partition answers without decoding a value. Each partition is read
backwards in growing windows until every wanted symbol placed on it was found or the start of
the partition was reached.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

from streams import kafka_io

#: Records read back per partition at first (a few minutes of a 200-symbol universe).
FIRST_WINDOW: Final = 4_096


def last_kline_times(
    bootstrap: str, topic: str, symbols: Iterable[str], timeout_s: float = 15.0
) -> dict[str, int]:
    """``{symbol: newest open time}`` for the wanted symbols that have a tick in ``topic``."""
    from confluent_kafka import TopicPartition

    wanted = set(symbols)
    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, f"{topic}-live-resume"))
    found: dict[str, int] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}  # no topic yet: nothing to resume from
        for partition in sorted(metadata.partitions):
            low, high = _watermarks(consumer, TopicPartition(topic, partition), timeout_s)
            on_partition = {
                s
                for s in wanted
                if kafka_io.partition_for(s, len(metadata.partitions)) == partition
            }
            found.update(_scan_back(consumer, topic, partition, low, high, on_partition, timeout_s))
    finally:
        consumer.close()
    return found


def written_values(bootstrap: str, topic: str, timeout_s: float = 15.0) -> list[bytes]:
    """Every value of the one-partition ``topic`` in written order (the universe's changes)."""
    from confluent_kafka import TopicPartition

    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, f"{topic}-live-resume"))
    out: list[bytes] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []  # no topic yet: no earlier run
        low, high = _watermarks(consumer, TopicPartition(topic, 0), timeout_s)
        consumer.assign([TopicPartition(topic, 0, low)])
        position, misses = low, 0
        while position < high and misses < int(timeout_s):
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                misses += msg is None
                continue
            position = (msg.offset() or 0) + 1
            value = msg.value()
            if value is not None:
                out.append(value)
    finally:
        consumer.close()
    return out


def _watermarks(consumer: Any, tp: Any, timeout_s: float) -> tuple[int, int]:
    """A partition's (low, high) offsets, waiting out a leader election (a topic just created)."""
    from confluent_kafka import KafkaError, KafkaException

    electing = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART}  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in electing or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _scan_back(
    consumer: object,
    topic: str,
    partition: int,
    low: int,
    high: int,
    wanted: set[str],
    timeout_s: float,
) -> dict[str, int]:
    window = FIRST_WINDOW
    found: dict[str, int] = {}
    end = high
    while wanted - found.keys() and end > low:
        start = max(low, end - window)
        for key, timestamp in _read_range(consumer, topic, partition, start, end, timeout_s):
            symbol = key.decode(errors="replace")
            if symbol in wanted:
                found[symbol] = max(found.get(symbol, timestamp), timestamp)
        end, window = start, window * 4
    return found


def _read_range(
    consumer: object, topic: str, partition: int, start: int, end: int, timeout_s: float
) -> list[tuple[bytes, int]]:
    from confluent_kafka import Consumer, TopicPartition

    assert isinstance(consumer, Consumer)
    consumer.assign([TopicPartition(topic, partition, start)])
    out: list[tuple[bytes, int]] = []
    position = start
    misses = 0
    while position < end and misses < int(timeout_s):
        msg = consumer.poll(1.0)
        if msg is None:
            misses += 1
            continue
        if msg.error() is not None:
            continue
        position = (msg.offset() or 0) + 1
        key = msg.key()
        if key:
            out.append((key, msg.timestamp()[1]))
    return out
