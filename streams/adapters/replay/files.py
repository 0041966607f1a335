"""Replay of market files: a data set into ``market.ticks`` and ``deadletter``.

:func:`replay_files` reads a data set (:mod:`streams.adapters.market_files`), produces every
valid row to ``market.ticks`` (key = symbol, record timestamp = event time, value = the Avro
``TickReceived``) with in-band watermarks (:mod:`.watermarks`), and every rejected row to
``deadletter`` (``DeadLettered`` with the reason, file, line and raw bytes), then flushes and
returns a :class:`ReplaySummary`.

Pacing (``speed``) uses the wall clock on purpose: it is the edge that turns event time into
arrival time. The clock and the sleep are injected so tests need not wait.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from streams import kafka_io
from streams.adapters.market_files import (
    ALL_TIME,
    MarketFileReader,
    TimeWindow,
    format_epoch_ms,
    open_data_set,
)
from streams.adapters.market_rows import RejectedRow, ReplayItem, dead_letter
from streams.adapters.replay import ReplayError
from streams.adapters.replay.watermarks import REPLAY_SOURCE, WatermarkWriter
from streams.contracts.base import AvroRecord
from streams.contracts.records import TickReceived
from streams.ordering import SOURCE_HEADER
from streams.topics import Topic

if TYPE_CHECKING:
    from confluent_kafka import Producer
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from streams.contracts.registry import SchemaRegistry

#: Rows between two progress refreshes: cheap enough, smooth enough.
PROGRESS_EVERY: Final = 2_000
#: Seconds the broker gets to acknowledge everything at the end.
FLUSH_TIMEOUT_S: Final = 60.0

Encode = Callable[[AvroRecord], bytes]


# ---------------------------------------------------------------------------------------------
# Pure parts: pacing, summary
# ---------------------------------------------------------------------------------------------


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

    def wait_for(
        self, event_time_ms: int, before_sleep: Callable[[int], None] | None = None
    ) -> None:
        """Sleep until ``event_time_ms`` is due; returns at once with ``speed=None``.

        ``before_sleep(event_time_ms)`` runs only when the pacer is about to sleep.
        """
        if self.speed is None:
            return
        if self._anchor is None:
            self._anchor = (event_time_ms, self._clock())
            return
        first_event_ms, first_wall = self._anchor
        due = first_wall + (event_time_ms - first_event_ms) / 1000.0 / self.speed
        delay = due - self._clock()
        if delay > 0:
            if before_sleep is not None:
                before_sleep(event_time_ms)
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


# ---------------------------------------------------------------------------------------------
# Sinks
# ---------------------------------------------------------------------------------------------


class TickSink(Protocol):
    """Where replayed rows go: the broker, or nowhere in a dry run."""

    def send_tick(self, tick: TickReceived) -> None:
        """Send one valid tick."""

    def send_rejected(self, row: RejectedRow) -> None:
        """Send one rejected row's dead letter."""

    def flush(self) -> None:
        """Wait until everything sent is acknowledged; raise on any failure."""

    def announce(self, event_time_ms: int) -> None:
        """Nothing before ``event_time_ms`` follows (a paced replay is about to wait for it)."""


class NullSink:
    """Dry run: validate only."""

    def send_tick(self, tick: TickReceived) -> None:
        """Drop the tick."""

    def send_rejected(self, row: RejectedRow) -> None:
        """Drop the dead letter."""

    def flush(self) -> None:
        """Nothing to wait for."""

    def announce(self, event_time_ms: int) -> None:
        """Nothing to announce."""


#: Headers of every replayed tick: its writer, as the topology declares it (``INGEST``).
TICK_HEADERS = [(SOURCE_HEADER, REPLAY_SOURCE)]


class KafkaTickSink:
    """Produces ticks and their watermarks to ``market.ticks``, dead letters to ``deadletter``."""

    def __init__(
        self,
        producer: Producer,
        ticks_topic: str,
        deadletter_topic: str,
        encode_tick: Encode,
        encode_dead_letter: Encode,
        partitions: int = 1,
    ) -> None:
        self.producer = producer
        self.ticks_topic = ticks_topic
        self.deadletter_topic = deadletter_topic
        self._encode_tick = encode_tick
        self._encode_dead_letter = encode_dead_letter
        self.tracker = kafka_io.DeliveryTracker()
        self.watermarks = WatermarkWriter(producer, ticks_topic, partitions, self.tracker)

    def send_tick(self, tick: TickReceived) -> None:
        """Key = symbol, record timestamp = event time; a watermark first when time moved on.

        The tick names its writer (``qt-source``) like the watermarks do: a merge downstream
        counts a source's records as its progress, so a partition that gets ticks moves on
        without waiting for an explicit watermark (which only quiet partitions get).
        """
        self.watermarks.before_tick(tick.symbol, tick.event_time_ms)
        kafka_io.produce(
            self.producer, self.ticks_topic, tick.symbol.encode(), self._encode_tick(tick),
            timestamp=tick.event_time_ms, on_delivery=self.tracker, headers=TICK_HEADERS,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def send_rejected(self, row: RejectedRow) -> None:
        """Key = source file; timestamp = the row's own time when it could be read."""
        value = self._encode_dead_letter(dead_letter(row))
        extra = {} if row.event_time_ms is None else {"timestamp": row.event_time_ms}
        kafka_io.produce(
            self.producer, self.deadletter_topic, row.file.encode(), value,
            on_delivery=self.tracker, **extra,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def announce(self, event_time_ms: int) -> None:
        """Tell every partition now that nothing before ``event_time_ms`` follows.

        A paced replay knows this before it sleeps until the next tick is due. Without it the
        merges downstream (strategy, risk, execution) could release a minute only once the
        next minute's ticks arrive: a tick's decision would wait one bar of wall time.
        """
        self.watermarks.announce(event_time_ms)
        self.producer.poll(0)  # serve delivery callbacks; librdkafka sends after its linger

    def end_stream(self) -> None:
        """Close a bounded replay: the last watermark lets every downstream merge drain."""
        self.watermarks.end_stream()

    def flush(self) -> None:
        """Block until every record is acknowledged; raise :class:`DeliveryFailedError` if not."""
        kafka_io.flush(self.producer, self.tracker, FLUSH_TIMEOUT_S)

    @property
    def delivered_ticks(self) -> int:
        """Ticks acknowledged by the broker (watermarks share the topic but are not ticks)."""
        return self.tracker.delivered[self.ticks_topic] - self.watermarks.sent


#: A :class:`KafkaTickSink` or a subclass of it (the live edge's).
SinkT = TypeVar("SinkT", bound=KafkaTickSink)


def pump(
    items: Iterable[ReplayItem],
    sink: TickSink,
    pacer: Pacer,
    summary: ReplaySummary,
    on_progress: Callable[[ReplaySummary], None] = lambda _s: None,
) -> ReplaySummary:
    """Send every item in order, pacing ticks by event time; flush at the end."""
    for item in items:
        if isinstance(item, TickReceived):
            pacer.wait_for(item.event_time_ms, sink.announce)
            sink.send_tick(item)
        else:
            sink.send_rejected(item)
        summary.count(item)
        if summary.rows_read % PROGRESS_EVERY == 0:
            on_progress(summary)
    sink.flush()
    on_progress(summary)
    return summary


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
    options: kafka_io.ProducerOptions | None = None,
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
    :class:`~streams.kafka_io.KafkaIOError` subclasses for broker trouble.
    """
    readers, items = open_data_set(data, symbols, window)
    summary = ReplaySummary(dry_run=bootstrap is None)
    sink: TickSink = NullSink()
    if bootstrap is not None:
        sink = kafka_tick_sink(
            bootstrap, prefix, options, partitions, replication, encoders, KafkaTickSink
        )
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


def kafka_tick_sink(
    bootstrap: str,
    prefix: str,
    options: kafka_io.ProducerOptions | None,
    partitions: int,
    replication: int,
    encoders: tuple[Encode, Encode] | None,
    sink_type: type[SinkT],
) -> SinkT:
    """A ``sink_type`` on ``<prefix>market.ticks`` and ``<prefix>deadletter`` (the live edge
    passes its subclass), creating the topics with ``partitions`` when missing."""
    ticks_topic = f"{prefix}{Topic.MARKET_TICKS.value}"
    dead_topic = f"{prefix}{Topic.DEADLETTER.value}"
    # Topics that predate this replay are kept as they are, whatever their partition count.
    kafka_io.ensure_topics(
        bootstrap, {ticks_topic: partitions, dead_topic: partitions},
        replication_factor=replication, timeout_s=10, exact_partitions=False,
        keep_forever=True,  # replayed (and live) ticks carry event time: see ensure_topics
    )  # fmt: skip
    encode_tick, encode_dead = encoders or default_encoders()
    producer = kafka_io.producer(options or kafka_io.ProducerOptions(bootstrap))
    # Watermarks go to every partition the topic really has (it may predate this replay).
    actual = kafka_io.topic_partitions(producer, bootstrap, ticks_topic, timeout_s=15)
    return sink_type(
        producer, ticks_topic, dead_topic, encode_tick, encode_dead, partitions=len(actual)
    )
