"""The one-command demo: a real broker, a real Faust worker, a replay, a report.

``quantum-trader demo`` (``make demo``):

1. uses ``QT_KAFKA_BOOTSTRAP`` or starts the embedded broker on loopback;
2. creates the topology's topics under a fresh run prefix (a replay never mixes with another);
3. starts one Faust worker of the whole topology as a subprocess (``python -m streams.app``), or
   several (``DemoPlan.workers``: they split the per-symbol partitions, and the replay starts
   once they hold every input partition between them, each once);
4. replays the bundled real data into ``market.ticks``, ending with the end-of-stream watermark;
5. waits until every execution partition has announced the end of stream on ``trades.closed``
   (the topology has drained: every merge released everything), watching the worker: its
   ``/health`` is polled every second, and a crashed stage or a dead worker stops the demo at
   once with the stage's error and the worker log's path (:class:`~streams.workers.Fleet`);
6. reads every output topic back, decodes it with the registry codec and builds the run folder
   (``report.json``, ``trades.csv``, ``decisions.jsonl.gz``, ``equity.png``) with the same
   builder as the backtest.

``DemoPlan.recorded`` feeds step 4 from a recorded ``market.ticks`` range instead of files (a
topic replay with watermarks of its own), which is how a recorded stretch is run again.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams import kafka_io
from streams.adapters.market_files import ALL_TIME, TimeWindow
from streams.config import PROJECT_ROOT, Settings, run_configuration
from streams.contracts.records import TickReceived
from streams.contracts.ticks import DEFAULT_MAX_EVENT_SKEW_MS, TickHistory, TickRejected
from streams.ordering import (
    END_OF_STREAM,
    SEQ_HEADER,
    SOURCE_HEADER,
    WATERMARK_HEADER,
    Redeliveries,
    header_value,
)
from streams.topics import Topic, topic_name
from streams.topology import drain_marks, partitions_of, reported_topics
from streams.workers import (
    WORKER_COMMAND,
    Fleet,
    WorkerError,
    WorkerWatch,
    input_partitions,
    running_fleet,
    scrape_stage_latency,
    worker_env,
)

SAMPLE_DATA = PROJECT_ROOT / "data" / "sample" / "um_futures_1m_2025"
#: ``python -m`` arguments of the worker subprocess: the whole topology.
#: Topics whose records make the report (in pipeline order).
REPORTED_TOPICS = reported_topics()


class DemoError(WorkerError):
    """The demo could not complete; the message says where and what to look at."""


@dataclass(frozen=True)
class RecordedTicks:
    """A recorded ``market.ticks`` topic (broker-side name) and the event-time range to copy."""

    topic: str
    window: TimeWindow = ALL_TIME


@dataclass(frozen=True)
class DemoPlan:
    """What to replay and where the run goes."""

    data: Path = SAMPLE_DATA
    symbols: tuple[str, ...] = ()
    window: TimeWindow = ALL_TIME
    run_dir: Path | None = None
    timeout_s: float = 1800.0
    #: Called with (bootstrap, topic prefix) after the data and before the end-of-stream
    #: watermark, while the topology is still busy (tests inject malformed records here).
    before_end: Callable[[str, str], None] | None = None
    #: ``python -m`` arguments of the worker (tests run a harness app of the same topology).
    worker_command: tuple[str, ...] = WORKER_COMMAND
    #: Called once the run's topics exist and its worker runs (``demo --dashboard`` starts the
    #: dashboard on the live topics here); what it returns is called before the broker stops.
    on_live: Callable[[LiveRun], Callable[[], None] | None] | None = None
    #: Feed the run from a recorded ticks topic (a topic replay) instead of ``data``.
    recorded: RecordedTicks | None = None
    #: Faust workers of the topology; with more than one, the replay starts once they have
    #: split the partitions (one worker consumes as the replay produces, as always).
    workers: int = 1
    #: How long several workers may take to start and split the partitions.
    start_timeout_s: float = 180.0
    #: Called with the run's workers after the data, before the end-of-stream watermark,
    #: while the topology is busy (``Fleet.join`` starts one more worker: a rebalance).
    with_workers: Callable[[Fleet], None] | None = None
    #: Entered with (bootstrap, the run's settings) once the worker runs, left after the drain:
    #: the testnet venue's gateway (``QT_MODE=testnet``; see streams/adapters/venues/binance).
    venue: Callable[[str, Settings], contextlib.AbstractContextManager[Any]] | None = None
    #: The run's topic prefix (default ``demo-<id>.``); it must not hold a run yet.
    prefix: str | None = None
    #: Called with (bootstrap, topic prefix) once the run's topics exist, before any worker
    #: starts (``quantum-trader incident replay`` seeds the stages' state changelogs here).
    before_workers: Callable[[str, str], None] | None = None


@dataclass(frozen=True)
class LiveRun:
    """What a reader of a demo in progress needs: its broker, topics, worker and span file."""

    bootstrap: str
    prefix: str
    worker_port: int
    run_dir: Path
    trace_file: Path


@dataclass
class DemoResult:
    """What the demo measured."""

    run_dir: Path
    report: dict[str, Any]


def with_min_confidence(settings: Settings, gate: float) -> Settings:
    """``settings`` with the supervisor's bare confidence gate at ``gate`` (not the edge gate)."""
    policy = settings.supervisor.model_copy(update={"gate": "confidence", "min_confidence": gate})
    return settings.model_copy(update={"supervisor": policy})


DRAIN_TASK = "topology (event time)"


def drain_description(stalled: dict[str, str]) -> str:
    """The drain bar's label: the stalled stages (``/ready`` fails on them) when there are."""
    if not stalled:
        return DRAIN_TASK
    return f"{DRAIN_TASK} [yellow]stalled: {', '.join(sorted(stalled))}[/]"


def wait_until_drained(
    bootstrap: str,
    prefix: str,
    partitions: int,
    watch: Fleet | WorkerWatch,
    timeout_s: float,
    progress: Progress,
    last_tick_ms: int,
) -> None:
    """Block until the last stages all announced the end of stream (see :func:`drain_marks`).

    ``watch`` is checked on every poll: a crashed stage or a dead worker ends the wait with
    its error within about a second.
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    marks = drain_marks(partitions)
    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, f"{prefix}demo-drain"))
    consumer.assign(
        [
            TopicPartition(topic_name(Topic(t), prefix), p, OFFSET_BEGINNING)
            for t in {t for t, _ in marks}
            for p in range(partitions_of(Topic(t), partitions))
        ]
    )
    task = progress.add_task(DRAIN_TASK, total=100.0)
    first: int | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while min(marks.values()) < END_OF_STREAM:
            watch.check()
            # A stalled stage is said while the bar waits, not only at the timeout.
            progress.update(task, description=drain_description(watch.stalled))
            if time.monotonic() > deadline:
                stalled = "; ".join(f"{n}: {w}" for n, w in watch.stalled.items()) or "none"
                raise DemoError(
                    f"the topology did not drain within {timeout_s:.0f} s; stalled stages: "
                    f"{stalled}; watermarks {marks}; worker log: {watch.log_path}"
                )
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            wm = header_value(msg.headers(), WATERMARK_HEADER)
            source = (header_value(msg.headers(), SOURCE_HEADER) or b"").decode()
            key = ((msg.topic() or "").removeprefix(prefix), source)
            if wm is None or key not in marks:
                continue
            marks[key] = max(marks[key], int(wm))
            low = min(marks.values())
            if first is None and low > -(2**62):
                first = low
            if first is not None and low < END_OF_STREAM and last_tick_ms > first:
                done = 100.0 * (low - first) / (last_tick_ms - first)
                progress.update(task, completed=min(done, 100.0))
        progress.update(task, completed=100.0)
    finally:
        consumer.close()


def read_back(
    bootstrap: str, prefix: str, partitions: int, max_event_skew_ms: int = DEFAULT_MAX_EVENT_SKEW_MS
) -> Iterator[Any]:
    """Every data record of the reported topics, decoded (watermarks skipped)."""
    for record, _trace in read_back_traced(bootstrap, prefix, partitions, max_event_skew_ms):
        yield record


def read_back_traced(
    bootstrap: str, prefix: str, partitions: int, max_event_skew_ms: int = DEFAULT_MAX_EVENT_SKEW_MS
) -> Iterator[tuple[Any, str | None]]:
    """:func:`read_back` with the W3C trace id each record carried (``None`` if none).

    Ticks pass the same rule as in the topology (:class:`TickHistory`, per partition), so a
    tick the stages dead-lettered is not counted as market data in the report either.
    """
    from streams.contracts.codec import topic_codec
    from streams.contracts.errors import ContractError
    from streams.decisions import trace_id_of

    ticks = TickHistory(max_event_skew_ms)
    for base in REPORTED_TOPICS:
        codec = topic_codec(base)
        for msg in topic_messages(
            bootstrap, topic_name(base, prefix), partitions_of(base, partitions)
        ):
            try:
                record = codec.decode_record(msg.value() or b"")
                if isinstance(record, TickReceived):
                    ticks.admit(msg.partition() or 0, record, msg.key())
            except (ContractError, TickRejected):
                continue  # the stage that read it dead-lettered it; counted from there
            yield record, trace_id_of(msg.headers())


def topic_messages(
    bootstrap: str, name: str, partitions: int, *, copies: bool = False, watermarks: bool = False
) -> Iterator[Any]:
    """Every data message (not watermarks) of ``name``'s ``partitions``, up to today's end.

    A record a worker re-sent after a crash (same ``qt-seq``) is read once, unless ``copies``;
    ``watermarks`` yields the watermark records too (what a stage reads).

    A partition is done at its end-of-partition event, whose offset is the end the broker's
    Fetch reports: the embedded Tansu broker's ListOffsets answers the newest *batch's* base
    offset + 1 (tansu_workarounds.py), so stopping at that offset lost the records after it.
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    options = kafka_io.ConsumerOptions(bootstrap, f"{name}-demo-read", partition_eof=True)
    consumer = kafka_io.consumer(options)
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in range(partitions)])
        pending = {p for p, end in ends.items() if end > 0}
        seen = Redeliveries()
        while pending:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            partition, offset, error = msg.partition() or 0, msg.offset() or 0, msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise DemoError(f"reading {name}: {kafka_io.describe(error)}")
                if offset >= ends[partition]:
                    pending.discard(partition)
                continue
            headers = msg.headers() or []
            if header_value(headers, WATERMARK_HEADER) is not None:
                if watermarks:
                    yield msg
                continue
            # A worker that crashed after sending re-sends with the same numbers: one copy.
            source, seq = header_value(headers, SOURCE_HEADER), header_value(headers, SEQ_HEADER)
            if copies or seen.fresh(name, partition, source, seq):
                yield msg
    finally:
        consumer.close()


def feed_ticks(
    plan: DemoPlan, bootstrap: str, prefix: str, settings: Settings, embedded: bool,
    console: Console,
) -> int:  # fmt: skip
    """Replay the plan's files, or copy its recorded ticks range, into the run's
    ``market.ticks`` (watermarks included, no end of stream yet); returns the last tick time."""
    from streams.adapters.replay.files import replay_files
    from streams.adapters.replay.topic import replay_topic

    options = kafka_io.ProducerOptions(bootstrap, idempotence=not embedded)
    if plan.recorded is not None:
        copied = replay_topic(
            plan.recorded.topic, topic_name(Topic.MARKET_TICKS, prefix), plan.recorded.window,
            bootstrap=bootstrap, options=options, watermarks=True,
            replication=settings.replication_factor,
        )  # fmt: skip
        console.print(
            f"[bold]copied[/] {copied.total_copied:,} records of {plan.recorded.topic} "
            f"with {copied.watermarks_sent:,} watermarks"
        )
        return copied.last_timestamp_ms or 0
    summary = replay_files(
        plan.data, bootstrap=bootstrap, prefix=prefix, symbols=plan.symbols, window=plan.window,
        options=options, partitions=settings.partitions, console=console,
    )  # fmt: skip
    return summary.last_event_ms or 0


def _source_of(plan: DemoPlan) -> dict[str, str]:
    """Where the run's ticks came from, for ``report.json``."""
    if plan.recorded is None:
        return {"data_path": str(plan.data)}
    window = plan.recorded.window
    return {
        "source_topic": plan.recorded.topic,
        "source_window": f"{window.start_ms}..{window.end_ms}",
    }


def send_end_of_stream(bootstrap: str, prefix: str, partitions: int, last_tick_ms: int) -> None:
    """The final watermark on every partition of ``market.ticks``: the topology drains."""
    from streams.adapters.replay.watermarks import WatermarkWriter

    # No idempotence: the demo's broker may be the embedded Tansu (bug TX).
    producer = kafka_io.producer(kafka_io.ProducerOptions(bootstrap, idempotence=False))
    tracker = kafka_io.DeliveryTracker()
    writer = WatermarkWriter(producer, topic_name(Topic.MARKET_TICKS, prefix), partitions, tracker)
    writer.send(last_tick_ms)
    writer.end_stream()
    kafka_io.flush(producer, tracker, timeout_s=60.0)


def run_demo(settings: Settings, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Run the whole demo (see the module doc) and write its run folder."""
    from streams.app import ensure_topics
    from streams.brokers.faust_settings import resolve_bootstrap
    from streams.dashboard.model import ReadModel
    from streams.dashboard.sources import read_stored_states, write_snapshot
    from streams.report import ReportBuilder, write_run

    console = console or Console()
    run_id = uuid.uuid4().hex[:8]
    prefix = plan.prefix or f"demo-{run_id}."
    run_dir = plan.run_dir or settings.runs_dir / f"demo-{run_id}"
    started = time.perf_counter()
    # Live readers (plan.on_live) stop before the broker does, whatever happens.
    with resolve_bootstrap(settings) as broker, contextlib.ExitStack() as live_readers:
        embedded = broker.embedded or settings.kafka_embedded
        where = "embedded Tansu broker" if embedded else "Kafka"
        console.print(f"[bold]broker[/] {where} at {broker.bootstrap}; topics under '{prefix}'")
        run_settings = settings.model_copy(update={"topic_prefix": prefix})
        ensure_topics(broker.bootstrap, run_settings, keep_forever=True)
        if plan.before_workers is not None:
            plan.before_workers(broker.bootstrap, prefix)
        traces = run_dir / "traces.jsonl"

        def env() -> dict[str, str]:  # each worker its own web port
            return worker_env(settings, broker.bootstrap, prefix, embedded, traces)

        venue = (
            plan.venue(broker.bootstrap, run_settings) if plan.venue else contextlib.nullcontext()
        )
        with running_fleet(env, run_dir, plan.workers, plan.worker_command) as watch, venue:
            for w in watch.watches:
                console.print(f"[bold]worker[/] pid {w.worker.pid}, log {w.log_path}")
            if plan.workers > 1:  # they must split the partitions before any input arrives
                watch.wait_until_assigned(
                    input_partitions(prefix, settings.partitions), plan.start_timeout_s
                )
            live = LiveRun(broker.bootstrap, prefix, watch.port, run_dir,
                           settings.trace_file or traces)  # fmt: skip
            stop_watching = plan.on_live(live) if plan.on_live is not None else None
            if stop_watching is not None:
                live_readers.callback(stop_watching)
            last_tick = feed_ticks(plan, broker.bootstrap, prefix, settings, embedded, console)
            watch.check()
            if plan.before_end is not None:
                plan.before_end(broker.bootstrap, prefix)
            if plan.with_workers is not None:
                plan.with_workers(watch)
            send_end_of_stream(broker.bootstrap, prefix, settings.partitions, last_tick)
            columns = (
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            )  # fmt: skip
            with Progress(*columns, console=console) as progress:
                wait_until_drained(
                    broker.bootstrap, prefix, settings.partitions, watch,
                    plan.timeout_s, progress, last_tick,
                )  # fmt: skip
            latency = scrape_stage_latency(watch.port)
        elapsed = time.perf_counter() - started
        builder = ReportBuilder(settings.risk.starting_equity_usd)
        board = ReadModel.from_settings(settings)
        try:  # the stages' last stored state, for the run folder's learning and overview views
            read_stored_states(board, broker.bootstrap, settings.app_id, prefix, "at the run's end")
        except (kafka_io.KafkaIOError, TimeoutError, RuntimeError) as exc:
            console.print(f"[yellow]stored state not read for dashboard.json[/]: {exc}")
        for record, trace in read_back_traced(
            broker.bootstrap, prefix, settings.partitions, settings.max_event_skew_ms
        ):
            builder.add(record, trace)
            board.apply(record)
    from models.scorer import promoted_versions

    report = builder.build(
        model_versions={**promoted_versions(settings.registry_dir), **settings.model_versions},
        elapsed_s=elapsed,
        bars=builder.counts["TickReceived"],
        extra={
            "latency": latency,
            "mode": "kafka",
            "broker": "embedded-tansu" if embedded else "kafka",
            "topic_prefix": prefix,
            "workers": plan.workers,
            "config": run_configuration(settings),
            **_source_of(plan),
        },
    )
    write_run(run_dir, report, builder.trades, builder.decisions)
    write_snapshot(run_dir, board)
    return DemoResult(run_dir, report)
