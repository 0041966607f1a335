"""Replay of a topic: the records of a recorded topic range, copied into another prefix.

:func:`replay_topic` copies the records of a topic whose *record timestamp* lies in a window
into another topic (usually the same topic under the prefix of another run: a backtest is a
replay of a topic), key, value bytes, headers and timestamps unchanged.

The source run's in-band watermarks are not copied: they describe that run's progress, not the
range. A copy of ``market.ticks`` gets watermarks of its own instead, as a file replay writes
them, so it can drive the topology: the partitions are interleaved back into event-time order
(:mod:`.interleave`), a watermark goes to every quiet partition whenever event time advances,
and ``end_of_stream`` closes the copy with the final watermark, which lets every merge drain.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from streams import kafka_io
from streams.adapters.market_files import TimeWindow
from streams.adapters.replay import ReplayError, SameTopicError
from streams.adapters.replay.interleave import PartitionInterleave, Released
from streams.adapters.replay.watermarks import WatermarkWriter
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer

#: Seconds a topic replay may see nothing before it reports a stall instead of hanging.
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0
#: Seconds the broker gets to acknowledge every copied record at the end.
FLUSH_TIMEOUT_S: Final = 60.0
#: Records of one partition an ordered copy buffers before it pauses that partition's fetch.
MAX_BUFFERED: Final = 20_000


@dataclass
class TopicReplaySummary:
    """What a topic replay did, per partition: records scanned, copied, outside the window."""

    source: str
    target: str
    window: TimeWindow
    scanned: Counter[int] = field(default_factory=Counter)
    copied: Counter[int] = field(default_factory=Counter)
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    #: watermark records written into the target (0 unless the copy carries watermarks)
    watermarks_sent: int = 0
    #: the copy ends with the end-of-stream watermark
    end_of_stream: bool = False
    #: copied records whose timestamp was earlier than their predecessor's on their partition
    late_records: int = 0

    @property
    def total_copied(self) -> int:
        """Records written to the target."""
        return sum(self.copied.values())


def base_topic_of(name: str) -> str:
    """The topology topic a prefixed name ends with (``run41.market.ticks``: ``market.ticks``)."""
    matches = [t.value for t in Topic if name.endswith(t.value)]
    return max(matches, key=len) if matches else name


def target_topic_for(source: str, into: str | None, default_prefix: str) -> str:
    """Where a topic replay writes: ``<into or configured prefix><base topic>``, never source."""
    target = f"{default_prefix if into is None else into}{base_topic_of(source)}"
    if target == source:
        raise SameTopicError(
            f"refusing to replay {source!r} into itself; pass --into <prefix> (e.g. --into run42.) "
            "or a different --prefix"
        )
    return target


@dataclass
class _PartitionRange:
    """Where one partition's copy starts and the watermark it stops at.

    ``stop`` is the high watermark at the start: records at offsets >= stop are not copied. It
    comes from ListOffsets, then is raised once to the high watermark of the first Fetch
    response, because some brokers (the embedded Tansu, bug B1) answer ListOffsets with the
    base offset of the newest batch + 1, short of the log end.
    """

    partition: int
    start: int
    stop: int
    done: bool = False
    refined: bool = False


def _start_offset(
    consumer: Consumer, source: str, partition: int, start_ms: int, low: int, timeout_s: float
) -> int | None:
    """First offset to read: the time index's answer (a hint), ``None`` if nothing is that late.

    A coarse index answers early, which only costs records that the timestamp filter drops.
    """
    from confluent_kafka import TopicPartition

    wanted = TopicPartition(source, partition, start_ms)
    hint = consumer.offsets_for_times([wanted], timeout=timeout_s)[0].offset
    return None if hint < 0 else max(hint, low)


def _partition_ranges(
    consumer: Consumer,
    bootstrap: str,
    source: str,
    window: TimeWindow,
    trust_time_index: bool,
    timeout_s: float,
) -> list[_PartitionRange]:
    """Start offset (time-index hint or low watermark) and captured high watermark per partition."""
    from confluent_kafka import TopicPartition

    ranges: list[_PartitionRange] = []
    for partition in kafka_io.topic_partitions(consumer, bootstrap, source, timeout_s):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(source, partition), timeout=timeout_s, cached=False
        )
        start: int | None = low
        if trust_time_index and window.start_ms is not None and high > low:
            start = _start_offset(consumer, source, partition, window.start_ms, low, timeout_s)
        empty = high <= low or start is None
        ranges.append(_PartitionRange(partition, start or low, high, done=empty))
    return ranges


def _refine_stop(consumer: Consumer, source: str, rng: _PartitionRange) -> None:
    """Raise ``stop`` to the first Fetch's high watermark (see :class:`_PartitionRange`)."""
    from confluent_kafka import TopicPartition

    _low, fetched_high = consumer.get_watermark_offsets(
        TopicPartition(source, rng.partition), cached=True
    )
    rng.stop = max(rng.stop, fetched_high)
    rng.refined = True


def _copy_message(
    msg: Message,
    rng: _PartitionRange,
    producer: Producer,
    target: str,
    keep_partition: bool,
    tracker: kafka_io.DeliveryTracker,
) -> None:
    kwargs: dict[str, Any] = {"timestamp": msg.timestamp()[1], "on_delivery": tracker}
    headers = msg.headers()
    if headers:
        kwargs["headers"] = headers
    if keep_partition:
        kwargs["partition"] = rng.partition
    kafka_io.produce(producer, target, msg.key(), msg.value(), **kwargs)


def _handle_message(
    msg: Message,
    ranges: Mapping[int, _PartitionRange],
    summary: TopicReplaySummary,
    stop_at_end_time: bool,
    copy: Callable[[Message, _PartitionRange], None],
) -> None:
    """Filter one consumed record by its timestamp and copy it; mark its partition done."""
    rng = ranges[msg.partition() or 0]
    offset = msg.offset() or 0
    if rng.done or offset >= rng.stop:
        rng.done = True
        return
    summary.scanned[rng.partition] += 1
    if header_value(msg.headers(), WATERMARK_HEADER) is not None:
        # The source run's watermarks describe that run's progress, not data in the range.
        if offset + 1 >= rng.stop:
            rng.done = True
        return
    timestamp = msg.timestamp()[1]
    window = summary.window
    if stop_at_end_time and window.is_past(timestamp):
        rng.done = True
        return
    if window.contains(timestamp):
        copy(msg, rng)
        summary.copied[rng.partition] += 1
        first = summary.first_timestamp_ms
        summary.first_timestamp_ms = timestamp if first is None else min(first, timestamp)
        summary.last_timestamp_ms = max(summary.last_timestamp_ms or timestamp, timestamp)
    if offset + 1 >= rng.stop:
        rng.done = True


def _consume_ranges(
    consumer: Consumer,
    ranges: Mapping[int, _PartitionRange],
    summary: TopicReplaySummary,
    stop_at_end_time: bool,
    copy: Callable[[Message, _PartitionRange], None],
    idle_timeout_s: float,
    after_poll: Callable[[], None] = lambda: None,
) -> None:
    from confluent_kafka import KafkaError

    idle_since = time.monotonic()
    while not all(r.done for r in ranges.values()):
        after_poll()  # an ordered copy writes what the records handled so far released
        msg = consumer.poll(0.5)
        if msg is None:
            if time.monotonic() - idle_since > idle_timeout_s:
                pending = sorted(p for p, r in ranges.items() if not r.done)
                raise ReplayError(
                    f"{summary.source}: no records for {idle_timeout_s} s on {pending}"
                )
            continue
        idle_since = time.monotonic()
        error = msg.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            rng = ranges[msg.partition() or 0]
            rng.done = rng.done or (msg.offset() or 0) >= rng.stop
        elif error is not None:
            raise ReplayError(f"consuming {summary.source}: {kafka_io.describe(error)}")
        else:
            rng = ranges[msg.partition() or 0]
            if not rng.refined:
                _refine_stop(consumer, summary.source, rng)
            _handle_message(msg, ranges, summary, stop_at_end_time, copy)


class _OrderedCopy:
    """Writes a ticks copy in event-time order with watermarks of its own (see the module doc).

    Records are pushed as they are consumed and produced once :class:`PartitionInterleave`
    releases them; a partition that runs :data:`MAX_BUFFERED` records ahead is paused until
    the others catch up, so memory stays bounded whatever the range.
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        summary: TopicReplaySummary,
        ranges: Mapping[int, _PartitionRange],
        target_partitions: int,
        tracker: kafka_io.DeliveryTracker,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.summary = summary
        self.ranges = ranges
        self.target_partitions = target_partitions
        self.tracker = tracker
        self.writer = WatermarkWriter(producer, summary.target, target_partitions, tracker)
        self.interleave: PartitionInterleave[Message] = PartitionInterleave(ranges)
        self._paused: set[int] = set()
        self._closed = {p for p, r in ranges.items() if r.done}
        for partition in self._closed:
            self.interleave.close(partition)

    def push(self, msg: Message, rng: _PartitionRange) -> None:
        """Buffer one record of the range; pause its partition when it is far ahead."""
        self.interleave.push(rng.partition, msg.timestamp()[1], msg)
        if self.interleave.buffered(rng.partition) >= MAX_BUFFERED:
            self._set_paused(rng.partition, paused=True)

    def step(self) -> None:
        """Close finished partitions, write what is ready, resume partitions that caught up."""
        for partition, rng in self.ranges.items():
            if rng.done and partition not in self._closed:
                self._closed.add(partition)
                self.interleave.close(partition)
        for released in self.interleave.pop_ready():
            self._write(released)
        for partition in sorted(self._paused):
            if self.interleave.buffered(partition) < MAX_BUFFERED // 2:
                self._set_paused(partition, paused=False)

    def finish(self, end_of_stream: bool) -> None:
        """Write the rest; then, if asked, the final watermark on every target partition."""
        for released in self.interleave.drain():
            self._write(released)
        if end_of_stream:
            last = self.summary.last_timestamp_ms
            if last is not None:
                self.writer.send(last)  # the end-of-stream record then carries this timestamp
            self.writer.end_stream()
            self.summary.end_of_stream = True
        self.summary.watermarks_sent = self.writer.sent

    def _write(self, released: Released[Message]) -> None:
        msg = released.item
        partition = self._target_partition(msg, released.partition)
        self.writer.before_record(partition, released.time_ms)
        self.summary.late_records += released.late
        kwargs: dict[str, Any] = {
            "timestamp": msg.timestamp()[1], "partition": partition, "on_delivery": self.tracker,
        }  # fmt: skip
        if msg.headers():
            kwargs["headers"] = msg.headers()
        kafka_io.produce(self.producer, self.summary.target, msg.key(), msg.value(), **kwargs)
        self.tracker.raise_if_failed()

    def _target_partition(self, msg: Message, source_partition: int) -> int:
        """The source's partition when the counts agree, else where the key hashes to."""
        if self.target_partitions == len(self.ranges):
            return source_partition
        key = msg.key()
        if key is None:
            return source_partition % self.target_partitions
        return kafka_io.partition_for(key.decode("utf-8", "replace"), self.target_partitions)

    def _set_paused(self, partition: int, *, paused: bool) -> None:
        from confluent_kafka import TopicPartition

        tp = [TopicPartition(self.summary.source, partition)]
        if paused and partition not in self._paused:
            self.consumer.pause(tp)
            self._paused.add(partition)
        elif not paused and partition in self._paused:
            self.consumer.resume(tp)
            self._paused.discard(partition)


def carries_watermarks(topic: str) -> bool:
    """Whether a copy into ``topic`` gets watermarks by default: the topology's input only."""
    return base_topic_of(topic) == Topic.MARKET_TICKS.value


def replay_topic(
    source: str,
    target: str,
    window: TimeWindow,
    *,
    bootstrap: str,
    options: kafka_io.ProducerOptions | None = None,
    trust_time_index: bool = True,
    stop_at_end_time: bool = True,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    timeout_s: float = 15.0,
    replication: int = 1,
    watermarks: bool | None = None,
    end_of_stream: bool = False,
) -> TopicReplaySummary:
    """Copy the records of ``source`` with ``window.start_ms <= timestamp < window.end_ms``.

    ``offsets_for_times`` only positions the read (``trust_time_index=False`` starts at the low
    watermark, for brokers whose time index is coarse or uses append time); every record is
    still filtered on its own timestamp. Each partition stops at the first record past the end
    (``stop_at_end_time``; turn off for topics whose timestamps are not ordered per partition)
    or at the high watermark captured at the start, so records arriving meanwhile are not copied.
    Key, value bytes, headers and timestamps are copied unchanged; the partition too when both
    topics have the same partition count (else the key hash picks it).

    ``watermarks`` (default: when the target is a ``market.ticks``) writes the copy in event-time
    order across partitions with in-band watermarks, as a file replay does, so the copy can drive
    the topology; ``end_of_stream`` then ends it with the final watermark (a bounded replay
    drains; leave it off to append another range later). Without watermarks records are copied
    as they are consumed and ``end_of_stream`` is refused.
    """
    from confluent_kafka import KafkaException, TopicPartition

    if source == target:
        raise SameTopicError(f"refusing to replay {source!r} into itself")
    ordered = carries_watermarks(target) if watermarks is None else watermarks
    if end_of_stream and not ordered:
        raise ReplayError(
            f"an end-of-stream marker needs watermarks: {target!r} is not a market.ticks topic "
            "(pass watermarks=True to write them anyway)"
        )
    group = f"qt-replay-topic.{target}"
    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, group, partition_eof=True))
    summary = TopicReplaySummary(source, target, window)
    try:
        found = _partition_ranges(consumer, bootstrap, source, window, trust_time_index, timeout_s)
        ranges = {r.partition: r for r in found}
        # A target that predates this replay is kept as it is, whatever its partition count.
        kafka_io.ensure_topics(
            bootstrap, {target: len(ranges)}, replication_factor=replication,
            timeout_s=timeout_s, exact_partitions=False, keep_forever=True,
        )  # fmt: skip
        producer = kafka_io.producer(options or kafka_io.ProducerOptions(bootstrap))
        target_partitions = kafka_io.topic_partitions(producer, bootstrap, target, timeout_s)
        keep_partition = len(target_partitions) == len(ranges)
        tracker = kafka_io.DeliveryTracker()
        consumer.assign(
            [TopicPartition(source, r.partition, r.start) for r in ranges.values() if not r.done]
        )
        if ordered:
            copier = _OrderedCopy(
                consumer, producer, summary, ranges, len(target_partitions), tracker
            )
            _consume_ranges(consumer, ranges, summary, stop_at_end_time, copier.push,
                            idle_timeout_s, after_poll=copier.step)  # fmt: skip
            copier.finish(end_of_stream)
        else:

            def copy(msg: Message, rng: _PartitionRange) -> None:
                _copy_message(msg, rng, producer, target, keep_partition, tracker)

            _consume_ranges(consumer, ranges, summary, stop_at_end_time, copy, idle_timeout_s)
        kafka_io.flush(producer, tracker, FLUSH_TIMEOUT_S)
    except KafkaException as exc:
        raise kafka_io.broker_error(bootstrap, f"replaying {source}", exc) from exc
    finally:
        consumer.close()
    return summary
