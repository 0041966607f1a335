"""Replay in: recorded market files or a recorded topic range into the topology's topics.

* :func:`replay_files` reads a data set (:mod:`streams.adapters.market_files`), produces every
  valid row to ``market.ticks`` (key = symbol, record timestamp = event time, value = Avro
  ``TickReceived``) and every rejected row to ``deadletter`` (``DeadLettered`` with the reason,
  file, line and raw bytes), then flushes and returns a :class:`ReplaySummary`.
* :func:`replay_topic` copies the records of a topic whose *record timestamp* lies in a window
  into another topic, key, value bytes, headers and timestamps unchanged.

Pacing (``speed``) uses the wall clock on purpose: it is the edge that turns event time into
arrival time. The clock and the sleep are injected so tests need not wait.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from streams.adapters.market_files import (
    ALL_TIME,
    MarketFileReader,
    MarketTick,
    RejectedRow,
    ReplayItem,
    TimeWindow,
    format_epoch_ms,
    open_data_set,
)
from streams.contracts.deadletters import bounded_payload
from streams.ordering import (
    END_OF_STREAM,
    SOURCE_HEADER,
    WATERMARK_EVERY_MS,
    WATERMARK_HEADER,
    header_value,
)
from streams.topics import Topic

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from streams.contracts.registry import SchemaRegistry

STAGE: Final = "replay"
#: Rows between two progress refreshes: cheap enough, smooth enough.
PROGRESS_EVERY: Final = 2_000
#: Seconds a topic replay may see nothing before it reports a stall instead of hanging.
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0

Encode = Callable[[Mapping[str, Any]], bytes]


class ReplayError(Exception):
    """A replay cannot go on; the message names the topic, file or broker involved."""


class BrokerUnreachableError(ReplayError):
    """No answer from the bootstrap servers."""


class DeliveryFailedError(ReplayError):
    """The broker refused or lost records; the replay stops instead of skipping them."""


class SameTopicError(ReplayError):
    """A topic replay would write into the topic it reads."""


# ---------------------------------------------------------------------------------------------
# Pure parts: records, pacing, summary, topic names
# ---------------------------------------------------------------------------------------------


def tick_record(tick: MarketTick) -> dict[str, Any]:
    """The ``TickReceived`` value of a tick (schemas/market.ticks.avsc)."""
    return {
        "symbol": tick.symbol,
        "event_time_ms": tick.event_time_ms,
        "kind": tick.kind.value,
        "open": tick.open,
        "high": tick.high,
        "low": tick.low,
        "close": tick.close,
        "volume": tick.volume,
        "interval_ms": tick.interval_ms,
        "source": f"replay-file:{tick.source}",
        "trade_id": tick.trade_id,
        "is_buyer_maker": tick.is_buyer_maker,
    }


def dead_letter_record(row: RejectedRow) -> dict[str, Any]:
    """The ``DeadLettered`` value of a rejected row (schemas/deadletter.avsc).

    The id is deterministic (stage, file, line) so a second replay of the same file yields the
    same dead letters and a sink can deduplicate them.
    """
    return {
        "dead_letter_id": f"{STAGE}:{row.file}:{row.line_no}",
        "reason": row.reason_code.value,
        "error_type": "RejectedRow",
        "stage": STAGE,
        "symbol": row.symbol,
        "event_time_ms": row.event_time_ms,
        "source_topic": None,
        "source_partition": None,
        "source_offset": None,
        "source_file": row.file,
        "source_line": row.line_no,
        # A line can be megabytes (a file without newlines): cut, with its length and sha256.
        **bounded_payload(row.raw_line, None, row.detail),
    }


def parse_speed(text: str) -> float | None:
    """``max`` (``None``: no pacing) or a positive factor of real time (``60`` = 1 h per min)."""
    value = text.strip().lower()
    if value in {"max", "inf", ""}:
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ReplayError(f"speed {text!r} is neither 'max' nor a number") from None
    if not speed > 0:
        raise ReplayError(f"speed {text!r} must be > 0")
    return speed


class Pacer:
    """Holds each event back until ``(event time - first event time) / speed`` has elapsed."""

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[int, float] | None = None

    def wait_for(self, event_time_ms: int) -> None:
        """Sleep until ``event_time_ms`` is due; returns at once with ``speed=None``."""
        if self.speed is None:
            return
        if self._anchor is None:
            self._anchor = (event_time_ms, self._clock())
            return
        first_event_ms, first_wall = self._anchor
        due = first_wall + (event_time_ms - first_event_ms) / 1000.0 / self.speed
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)


@dataclass
class ReplaySummary:
    """What a file replay did: rows read, ticks produced, dead letters by reason, time range."""

    rows_read: int = 0
    ticks: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    ticks_by_symbol: Counter[str] = field(default_factory=Counter)
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    produced: int = 0
    dry_run: bool = False

    def count(self, item: ReplayItem) -> None:
        """Account for one row read."""
        self.rows_read += 1
        if isinstance(item, RejectedRow):
            self.dead_lettered[item.reason_code.value] += 1
            return
        self.ticks += 1
        self.ticks_by_symbol[item.symbol] += 1
        if self.first_event_ms is None:
            self.first_event_ms = item.event_time_ms
        self.last_event_ms = item.event_time_ms

    @property
    def dead_letters(self) -> int:
        """Rows sent (or, in a dry run, to be sent) to the dead-letter topic."""
        return sum(self.dead_lettered.values())


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


# ---------------------------------------------------------------------------------------------
# Kafka edge
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Producer tuning. ``idempotence`` must be off for the embedded Tansu broker."""

    bootstrap: str
    idempotence: bool = True
    linger_ms: int = 20
    batch_bytes: int = 1_000_000
    compression: str = "lz4"
    extra: Mapping[str, str | int | bool] = field(default_factory=dict)

    def config(self) -> dict[str, str | int | bool]:
        """librdkafka configuration of the producer."""
        return {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": self.idempotence,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_bytes,
            "compression.type": self.compression,
            # Java, aiokafka and so Faust hash keys with murmur2; librdkafka's default differs.
            # Same hash = a symbol lands on the partition the Faust agents expect.
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 200_000,
            **self.extra,
        }


class _DeliveryTracker:
    """Counts delivered records and keeps the first failure to raise it on the caller's thread."""

    def __init__(self) -> None:
        self.delivered: Counter[str] = Counter()
        self.failure: str | None = None
        self.failures = 0

    def __call__(self, err: Any, msg: Message) -> None:
        if err is None:
            self.delivered[msg.topic() or ""] += 1
            return
        self.failures += 1
        if self.failure is None:
            key = msg.key()
            self.failure = f"topic {msg.topic()} key {key!r}: {err}"

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise DeliveryFailedError(
                f"{self.failures} record(s) not delivered; first: {self.failure}"
            )


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    **kwargs: Any,
) -> None:
    """Produce, waiting for queue space instead of failing when librdkafka's buffer is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def _flush(producer: Producer, tracker: _DeliveryTracker, timeout_s: float) -> None:
    remaining = producer.flush(timeout_s)
    tracker.raise_if_failed()
    if remaining:
        raise DeliveryFailedError(f"{remaining} record(s) still unacknowledged after {timeout_s} s")


class TickSink(Protocol):
    """Where replayed rows go: the broker, or nowhere in a dry run."""

    def send_tick(self, tick: MarketTick) -> None:
        """Send one valid tick."""

    def send_rejected(self, row: RejectedRow) -> None:
        """Send one rejected row's dead letter."""

    def flush(self) -> None:
        """Wait until everything sent is acknowledged; raise on any failure."""


class NullSink:
    """Dry run: validate only."""

    def send_tick(self, tick: MarketTick) -> None:
        """Drop the tick."""

    def send_rejected(self, row: RejectedRow) -> None:
        """Drop the dead letter."""

    def flush(self) -> None:
        """Nothing to wait for."""


class KafkaTickSink:
    """Produces ticks to ``market.ticks`` and rejected rows to ``deadletter``."""

    def __init__(
        self,
        producer: Producer,
        ticks_topic: str,
        deadletter_topic: str,
        encode_tick: Encode,
        encode_dead_letter: Encode,
        flush_timeout_s: float = 60.0,
        partitions: int = 1,
    ) -> None:
        self.producer = producer
        self.ticks_topic = ticks_topic
        self.deadletter_topic = deadletter_topic
        self._encode_tick = encode_tick
        self._encode_dead_letter = encode_dead_letter
        self._flush_timeout_s = flush_timeout_s
        self.tracker = _DeliveryTracker()
        self.partitions = partitions
        self._watermark = -1
        self.watermarks_sent = 0
        self._quiet: set[int] = set(range(partitions))  # got no tick since the last watermark
        self._partition_of: dict[str, int] = {}

    def send_watermark(self, watermark: int, partitions: Iterable[int] | None = None) -> None:
        """Tell ``partitions`` (all by default) that no tick before ``watermark`` follows.

        See docs/determinism.md. A partition that just received a tick needs none: its next
        tick implies the same progress.
        """
        # Record timestamp in event time too (the final one at the last tick's time), so
        # time-range readers of the topic never see a wall-clock or far-future timestamp.
        timestamp = max(self._watermark, 0) if watermark == END_OF_STREAM else watermark
        self._watermark = watermark
        targets = sorted(range(self.partitions) if partitions is None else partitions)
        self.watermarks_sent += len(targets)
        headers = [(SOURCE_HEADER, b"replay"), (WATERMARK_HEADER, str(watermark).encode())]
        for partition in targets:
            _produce(
                self.producer, self.ticks_topic, None, b"", partition=partition,
                headers=headers, timestamp=timestamp, on_delivery=self.tracker,
            )  # fmt: skip

    def send_tick(self, tick: MarketTick) -> None:
        """Key = symbol, record timestamp = event time; a watermark first when time moved on."""
        if tick.event_time_ms >= self._watermark + WATERMARK_EVERY_MS:
            self.send_watermark(tick.event_time_ms, self._quiet)
            self._quiet = set(range(self.partitions))
        self._quiet.discard(self._partition(tick.symbol))
        value = self._encode_tick(tick_record(tick))
        _produce(
            self.producer, self.ticks_topic, tick.symbol.encode(), value,
            timestamp=tick.event_time_ms, on_delivery=self.tracker,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def _partition(self, symbol: str) -> int:
        partition = self._partition_of.get(symbol)
        if partition is None:
            from streams.stages import partition_for  # the producer's murmur2 placement

            partition = self._partition_of[symbol] = partition_for(symbol, self.partitions)
        return partition

    def send_rejected(self, row: RejectedRow) -> None:
        """Key = source file; timestamp = the row's own time when it could be read."""
        value = self._encode_dead_letter(dead_letter_record(row))
        extra = {} if row.event_time_ms is None else {"timestamp": row.event_time_ms}
        _produce(
            self.producer, self.deadletter_topic, row.file.encode(), value,
            on_delivery=self.tracker, **extra,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def end_stream(self) -> None:
        """Close a bounded replay: the last watermark lets every downstream merge drain."""
        self.send_watermark(END_OF_STREAM)

    def flush(self) -> None:
        """Block until every record is acknowledged; raise :class:`DeliveryFailedError` if not."""
        _flush(self.producer, self.tracker, self._flush_timeout_s)

    @property
    def delivered_ticks(self) -> int:
        """Ticks acknowledged by the broker (watermarks share the topic but are not ticks)."""
        return self.tracker.delivered[self.ticks_topic] - self.watermarks_sent


def pump(
    items: Iterable[ReplayItem],
    sink: TickSink,
    pacer: Pacer,
    summary: ReplaySummary,
    on_progress: Callable[[ReplaySummary], None] = lambda _s: None,
) -> ReplaySummary:
    """Send every item in order, pacing ticks by event time; flush at the end."""
    for item in items:
        if isinstance(item, MarketTick):
            pacer.wait_for(item.event_time_ms)
            sink.send_tick(item)
        else:
            sink.send_rejected(item)
        summary.count(item)
        if summary.rows_read % PROGRESS_EVERY == 0:
            on_progress(summary)
    sink.flush()
    on_progress(summary)
    return summary


def _kafka_error(bootstrap: str, action: str, exc: BaseException) -> ReplayError:
    text = str(exc)
    if any(word in text.lower() for word in ("transport", "timed out", "resolve")):
        return BrokerUnreachableError(f"broker {bootstrap} unreachable while {action}: {text}")
    return ReplayError(f"{action} on {bootstrap} failed: {text}")


def _create(admin: AdminClient, topics: list[NewTopic], bootstrap: str, timeout_s: float) -> None:
    from confluent_kafka import KafkaError, KafkaException

    for name, future in admin.create_topics(topics, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise _kafka_error(bootstrap, f"creating topic {name}", exc) from exc


def ensure_topics(
    bootstrap: str, names: Sequence[str], partitions: int, replication: int, timeout_s: float = 10
) -> dict[str, int]:
    """Create missing topics; return every topic's partition count."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    # librdkafka logs every failed connect attempt; the exception below says it once, clearly.
    quiet = logging.getLogger(f"{__name__}.admin")
    quiet.setLevel(logging.CRITICAL)
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    admin = AdminClient(config)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
        missing = [NewTopic(n, partitions, replication) for n in names if n not in existing]
        if missing:
            _create(admin, missing, bootstrap, timeout_s)
        topics = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise _kafka_error(bootstrap, "listing topics", exc) from exc
    return {n: len(topics[n].partitions) for n in names if n in topics}


def default_encoders(registry: SchemaRegistry | None = None) -> tuple[Encode, Encode]:
    """Value serializers of ``market.ticks`` and ``deadletter`` (Confluent wire format).

    ``registry=None``: the registry of the settings (``QT_SCHEMA_REGISTRY_URL`` or the file one).
    """
    from streams.contracts.codec import serializer_for

    return (
        serializer_for(Topic.MARKET_TICKS, registry),
        serializer_for(Topic.DEADLETTER, registry),
    )


# ---------------------------------------------------------------------------------------------
# Progress bar
# ---------------------------------------------------------------------------------------------


def _progress(console: Console | None) -> Progress:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TextColumn(
            "{task.fields[rows]:,} rows {task.fields[rate]:,.0f}/s "
            "[red]{task.fields[dead]:,} dead[/red] [dim]{task.fields[at]}"
        ),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _file_progress_updater(
    progress: Progress, task: TaskID, readers: Sequence[MarketFileReader]
) -> Callable[[ReplaySummary], None]:
    def update(summary: ReplaySummary) -> None:
        elapsed = progress.tasks[task].elapsed or 0.0
        at = format_epoch_ms(summary.last_event_ms) if summary.last_event_ms is not None else ""
        progress.update(
            task,
            completed=sum(r.bytes_read for r in readers),
            rows=summary.rows_read,
            rate=summary.rows_read / elapsed if elapsed > 0 else 0.0,
            dead=summary.dead_letters,
            at=at,
        )

    return update


# ---------------------------------------------------------------------------------------------
# File replay
# ---------------------------------------------------------------------------------------------


def replay_files(
    data: Path,
    *,
    bootstrap: str | None,
    prefix: str = "",
    symbols: Sequence[str] = (),
    window: TimeWindow = ALL_TIME,
    speed: float | None = None,
    options: ProducerOptions | None = None,
    partitions: int = 4,
    replication: int = 1,
    encoders: tuple[Encode, Encode] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    end_of_stream: bool = False,
) -> ReplaySummary:
    """Replay a data set (folder or file) into ``<prefix>market.ticks`` and ``<prefix>deadletter``.

    Watermarks (empty records with the ``qt-watermark`` header) go to every partition whenever
    event time advances; ``end_of_stream`` ends with the final one, so a bounded replay drains
    the whole topology. ``bootstrap=None`` is a dry run: validate and count only. Missing topics
    are created with ``partitions``. Raises
    :class:`~streams.adapters.market_files.MarketFileError` for an unusable data set and
    :class:`ReplayError` subclasses for broker trouble.
    """
    readers, items = open_data_set(data, symbols, window)
    summary = ReplaySummary(dry_run=bootstrap is None)
    sink: TickSink = NullSink()
    if bootstrap is not None:
        sink = _kafka_sink(bootstrap, prefix, options, partitions, replication, encoders)
    pacer = Pacer(speed, clock, sleep)
    with _progress(console) as progress:
        total = sum(r.size for r in readers)
        label = f"{len(readers)} file(s)"
        task = progress.add_task(
            label, total=total, rows=0, rate=0.0, dead=0, at="", visible=show_progress
        )
        pump(items, sink, pacer, summary, _file_progress_updater(progress, task, readers))
    if isinstance(sink, KafkaTickSink) and end_of_stream:
        sink.end_stream()
        sink.flush()
    if isinstance(sink, KafkaTickSink):
        summary.produced = sink.delivered_ticks
    return summary


def _kafka_sink(
    bootstrap: str,
    prefix: str,
    options: ProducerOptions | None,
    partitions: int,
    replication: int,
    encoders: tuple[Encode, Encode] | None,
) -> KafkaTickSink:
    from confluent_kafka import Producer

    ticks_topic = f"{prefix}{Topic.MARKET_TICKS.value}"
    dead_topic = f"{prefix}{Topic.DEADLETTER.value}"
    ensure_topics(bootstrap, [ticks_topic, dead_topic], partitions, replication)
    encode_tick, encode_dead = encoders or default_encoders()
    producer = Producer((options or ProducerOptions(bootstrap)).config())
    # Watermarks go to every partition the topic really has (it may predate this replay).
    try:
        actual = len(producer.list_topics(ticks_topic, timeout=15).topics[ticks_topic].partitions)
    except Exception as exc:  # KafkaException or a missing topic entry: name the broker
        raise _kafka_error(bootstrap, "reading the partitions of " + ticks_topic, exc) from exc
    return KafkaTickSink(
        producer, ticks_topic, dead_topic, encode_tick, encode_dead, partitions=actual or partitions
    )


# ---------------------------------------------------------------------------------------------
# Topic replay
# ---------------------------------------------------------------------------------------------


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
    consumer: Consumer, source: str, window: TimeWindow, trust_time_index: bool, timeout_s: float
) -> list[_PartitionRange]:
    """Start offset (time-index hint or low watermark) and captured high watermark per partition."""
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(source, timeout=timeout_s)
    topic = metadata.topics.get(source)
    if topic is None or topic.error is not None or not topic.partitions:
        raise ReplayError(f"topic {source!r} does not exist on the broker")
    ranges: list[_PartitionRange] = []
    for partition in sorted(topic.partitions):
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
    tracker: _DeliveryTracker,
) -> None:
    kwargs: dict[str, Any] = {"timestamp": msg.timestamp()[1], "on_delivery": tracker}
    headers = msg.headers()
    if headers:
        kwargs["headers"] = headers
    if keep_partition:
        kwargs["partition"] = rng.partition
    _produce(producer, target, msg.key(), msg.value(), **kwargs)


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
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    idle_since = time.monotonic()
    while not all(r.done for r in ranges.values()):
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
            raise ReplayError(f"consuming {summary.source}: {KafkaException(error)}")
        else:
            rng = ranges[msg.partition() or 0]
            if not rng.refined:
                _refine_stop(consumer, summary.source, rng)
            _handle_message(msg, ranges, summary, stop_at_end_time, copy)


def replay_topic(
    source: str,
    target: str,
    window: TimeWindow,
    *,
    bootstrap: str,
    options: ProducerOptions | None = None,
    trust_time_index: bool = True,
    stop_at_end_time: bool = True,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    timeout_s: float = 15.0,
    replication: int = 1,
) -> TopicReplaySummary:
    """Copy the records of ``source`` with ``window.start_ms <= timestamp < window.end_ms``.

    ``offsets_for_times`` only positions the read (``trust_time_index=False`` starts at the low
    watermark, for brokers whose time index is coarse or uses append time); every record is
    still filtered on its own timestamp. Each partition stops at the first record past the end
    (``stop_at_end_time``; turn off for topics whose timestamps are not ordered per partition)
    or at the high watermark captured at the start, so records arriving meanwhile are not copied.
    Key, value bytes, headers and timestamps are copied unchanged; the partition too when both
    topics have the same partition count (else the key hash picks it).
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    if source == target:
        raise SameTopicError(f"refusing to replay {source!r} into itself")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"qt-replay-topic.{target}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    summary = TopicReplaySummary(source, target, window)
    try:
        ranges = {
            r.partition: r
            for r in _partition_ranges(consumer, source, window, trust_time_index, timeout_s)
        }
        counts = ensure_topics(bootstrap, [target], len(ranges), replication, timeout_s)
        keep_partition = counts.get(target) == len(ranges)
        producer = Producer((options or ProducerOptions(bootstrap)).config())
        tracker = _DeliveryTracker()
        consumer.assign(
            [TopicPartition(source, r.partition, r.start) for r in ranges.values() if not r.done]
        )

        def copy(msg: Message, rng: _PartitionRange) -> None:
            _copy_message(msg, rng, producer, target, keep_partition, tracker)

        _consume_ranges(consumer, ranges, summary, stop_at_end_time, copy, idle_timeout_s)
        _flush(producer, tracker, 60.0)
    except KafkaException as exc:
        raise _kafka_error(bootstrap, f"replaying {source}", exc) from exc
    finally:
        consumer.close()
    return summary
