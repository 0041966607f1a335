"""The one-command demo: a real broker, a real Faust worker, a replay, a report.

``quantum-trader demo`` (``make demo``):

1. uses ``QT_KAFKA_BOOTSTRAP`` or starts the embedded broker on loopback;
2. creates the topology's topics under a fresh run prefix (a replay never mixes with another);
3. starts one Faust worker of the whole topology as a subprocess (``python -m streams.app``);
4. replays the bundled real data into ``market.ticks``, ending with the end-of-stream watermark;
5. waits until every execution partition has announced the end of stream on ``trades.closed``
   (the topology has drained: every merge released everything), watching the worker: its
   ``/health`` is polled every second, and a crashed stage or a dead worker stops the demo at
   once with the stage's error and the worker log's path (:class:`WorkerWatch`);
6. reads every output topic back, decodes it with the registry codec and builds the run folder
   (``report.json``, ``trades.csv``, ``equity.png``) with the same builder as the backtest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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
from streams.brokers.embedded import free_port
from streams.config import PROJECT_ROOT, Settings, run_configuration, settings_env
from streams.contracts.records import TickReceived
from streams.contracts.ticks import DEFAULT_MAX_EVENT_SKEW_MS, TickHistory, TickRejected
from streams.ordering import END_OF_STREAM, SOURCE_HEADER, WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name
from streams.topology import STAGES, drain_marks, partitions_of, reported_topics

SAMPLE_DATA = PROJECT_ROOT / "data" / "sample" / "um_futures_1m_2025"
#: ``python -m`` arguments of the worker subprocess: the whole topology.
WORKER_COMMAND = ("streams.app", "--loglevel", "warning")
#: Topics whose records make the report (in pipeline order).
REPORTED_TOPICS = reported_topics()


class DemoError(RuntimeError):
    """The demo could not complete; the message says where and what to look at."""


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
    #: Faust workers of the topology; the replay starts once they have split the partitions.
    workers: int = 1
    #: How long the workers may take to start and split the partitions.
    start_timeout_s: float = 180.0


@dataclass
class DemoResult:
    """What the demo measured."""

    run_dir: Path
    report: dict[str, Any]


def with_min_confidence(settings: Settings, gate: float) -> Settings:
    """``settings`` with the supervisor's confidence gate (the only one) set to ``gate``."""
    return settings.model_copy(
        update={
            "supervisor": settings.supervisor.model_copy(update={"min_confidence": gate}),
        }
    )


def worker_env(
    settings: Settings, bootstrap: str, prefix: str, embedded: bool, trace_file: Path | None = None
) -> dict[str, str]:
    """Environment of the worker subprocess: every setting of this run, plus its broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(settings_env(settings))
    env.update(
        {
            "QT_KAFKA_BOOTSTRAP": bootstrap,
            "QT_KAFKA_EMBEDDED": "true" if embedded else "false",
            "QT_TOPIC_PREFIX": prefix,
            "QT_WEB_PORT": str(free_port()),
        }
    )
    if trace_file is not None and settings.trace_file is None:
        env["QT_TRACE_FILE"] = str(trace_file)  # each run its own spans, unless configured
    return env


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], log_path: Path, command: tuple[str, ...] = WORKER_COMMAND
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m *command`` (a Faust worker) for the block (SIGTERM, then SIGKILL after 30 s)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def worker_health(port: int, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]] | None:
    """Status and JSON body of the worker's ``/health``; None while it does not answer."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 503: the body says why
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):  # not listening yet, or busy: not a verdict
        return None


def crashed_stages(body: dict[str, Any]) -> dict[str, str]:
    """``{stage: error}`` of every crashed stage in a ``/health`` body."""
    stages = body.get("stages") or {}
    return {
        name: str(stage["crashed"])
        for name, stage in stages.items()
        if isinstance(stage, dict) and stage.get("crashed")
    }


@dataclass
class WorkerWatch:
    """Fails fast while waiting on the topology: a dead worker or a crashed stage.

    :meth:`check` is cheap to call in a loop: the process is polled every time, ``/health``
    at most every ``every_s`` seconds.
    """

    worker: subprocess.Popen[bytes]
    port: int
    log_path: Path
    every_s: float = 1.0
    _next_s: float = 0.0

    def check(self) -> None:
        """Raise :class:`DemoError` (with the error and the log's path) if the worker failed."""
        if self.worker.poll() is not None:
            raise DemoError(
                f"the worker exited with code {self.worker.returncode}; worker log: "
                f"{self.log_path}; it ends:\n{_log_tail(self.log_path)}"
            )
        now = time.monotonic()
        if now < self._next_s:
            return
        self._next_s = now + self.every_s
        health = worker_health(self.port)
        if health is None or health[0] == 200:
            return
        crashed = crashed_stages(health[1])
        if crashed:
            what = "; ".join(f"stage {name} crashed: {error}" for name, error in crashed.items())
            raise DemoError(
                f"{what}; worker log: {self.log_path}; it ends:\n{_log_tail(self.log_path)}"
            )


@dataclass
class Fleet:
    """The run's workers, watched together (the first one's log names the run)."""

    watches: list[WorkerWatch]

    @property
    def log_path(self) -> Path:
        """The first worker's log (each worker's log sits next to it)."""
        return self.watches[0].log_path

    def check(self) -> None:
        """Raise :class:`DemoError` if any worker died or any stage crashed."""
        for watch in self.watches:
            watch.check()

    def wait_until_assigned(self, expected: set[str], timeout_s: float) -> None:
        """Block until the workers hold every input partition of the topology between them,
        each partition once (a rebalance has settled), and each worker holds some.

        Only then is input produced: no record can arrive while a worker is still starting.
        """
        deadline = time.monotonic() + timeout_s
        held: list[set[str]] = []
        while True:
            self.check()
            bodies = [worker_health(w.port) for w in self.watches]
            if all(b is not None for b in bodies):
                held = [set(b[1].get("assignment") or ()) & expected for b in bodies if b]
                if (
                    all(held)
                    and set().union(*held) == expected
                    and sum(map(len, held)) == len(expected)
                ):
                    return
            if time.monotonic() > deadline:
                split = [len(h) for h in held] or "no answer"
                raise DemoError(
                    f"{len(self.watches)} worker(s) did not take the topology's "
                    f"{len(expected)} input partitions within {timeout_s:.0f} s (held: {split}); "
                    f"worker log: {self.log_path}"
                )
            time.sleep(0.5)


def input_partitions(prefix: str, partitions: int) -> set[str]:
    """``topic/partition`` of every partition some stage of the topology reads."""
    return {
        f"{topic_name(topic, prefix)}/{p}"
        for stage in STAGES
        for topic in stage.input_topics
        for p in range(partitions_of(topic, partitions))
    }


def wait_until_drained(
    bootstrap: str,
    prefix: str,
    partitions: int,
    watch: WorkerWatch | Fleet,
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
    task = progress.add_task("topology (event time)", total=100.0)
    first: int | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while min(marks.values()) < END_OF_STREAM:
            watch.check()
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the topology did not drain within {timeout_s:.0f} s; watermarks {marks}; "
                    f"worker log: {watch.log_path}"
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
    """Every data record of the reported topics, decoded (watermarks skipped).

    Ticks pass the same rule as in the topology (:class:`TickHistory`, per partition), so a
    tick the stages dead-lettered is not counted as market data in the report either.
    """
    from streams.contracts.codec import topic_codec
    from streams.contracts.errors import ContractError

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
            yield record


def topic_messages(bootstrap: str, name: str, partitions: int) -> Iterator[Any]:
    """Every data message (not watermarks) of ``name``'s ``partitions``, up to today's end."""
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
            if offset >= ends[partition] - 1:
                pending.discard(partition)
            if header_value(msg.headers(), WATERMARK_HEADER) is None:
                yield msg
    finally:
        consumer.close()


def histogram_quantiles(exposition: str, metric: str, label: str) -> dict[str, dict[str, float]]:
    """p50/p99 (µs) per ``label`` value of a Prometheus histogram, from its buckets.

    Linear interpolation inside the bucket that holds the quantile (as PromQL's
    ``histogram_quantile`` does), so a figure is only as fine as the bucket edges.
    """
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = sample.labels[label]
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    out: dict[str, dict[str, float]] = {}
    for key, points in buckets.items():
        points.sort()
        total = points[-1][1]
        if total <= 0:
            continue
        out[key] = {f"p{int(q * 100)}_us": _quantile(points, q * total) * 1e6 for q in (0.5, 0.99)}
        out[key]["count"] = total
    return out


def _quantile(points: list[tuple[float, float]], rank: float) -> float:
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in points:
        if count >= rank:
            if edge == float("inf"):
                return lower_edge
            width = count - lower_count
            return lower_edge + (edge - lower_edge) * ((rank - lower_count) / width if width else 1)
        lower_edge, lower_count = edge, count
    return lower_edge


def scrape_stage_latency(port: int) -> dict[str, dict[str, float]]:
    """Per-stage handling latency of the worker on ``port`` (empty if it cannot be read)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return histogram_quantiles(text, "qt_stage_latency_seconds", "stage")


def send_end_of_stream(bootstrap: str, prefix: str, partitions: int, summary: Any) -> None:
    """The final watermark on every partition of ``market.ticks``: the topology drains."""
    from streams.adapters.replay.watermarks import WatermarkWriter

    # No idempotence: the demo's broker may be the embedded Tansu (bug TX).
    producer = kafka_io.producer(kafka_io.ProducerOptions(bootstrap, idempotence=False))
    tracker = kafka_io.DeliveryTracker()
    writer = WatermarkWriter(producer, topic_name(Topic.MARKET_TICKS, prefix), partitions, tracker)
    writer.send(summary.last_event_ms or 0)
    writer.end_stream()
    kafka_io.flush(producer, tracker, timeout_s=60.0)


def run_demo(settings: Settings, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Run the whole demo (see the module doc) and write its run folder."""
    from streams.adapters.replay.files import replay_files
    from streams.app import ensure_topics
    from streams.brokers.faust_settings import resolve_bootstrap
    from streams.report import ReportBuilder, write_run

    console = console or Console()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"demo-{run_id}."
    run_dir = plan.run_dir or settings.runs_dir / f"demo-{run_id}"
    log_path = run_dir / "worker.log"
    started = time.perf_counter()
    with resolve_bootstrap(settings) as broker:
        embedded = broker.embedded or settings.kafka_embedded
        where = "embedded Tansu broker" if embedded else "Kafka"
        console.print(f"[bold]broker[/] {where} at {broker.bootstrap}; topics under '{prefix}'")
        run_settings = settings.model_copy(update={"topic_prefix": prefix})
        ensure_topics(broker.bootstrap, run_settings, keep_forever=True)
        trace_file = run_dir / "traces.jsonl"
        with contextlib.ExitStack() as stack:
            watches: list[WorkerWatch] = []
            for i in range(plan.workers):
                env = worker_env(settings, broker.bootstrap, prefix, embedded, trace_file)
                log = log_path if i == 0 else run_dir / f"worker-{i + 1}.log"
                worker = stack.enter_context(running_worker(env, log, plan.worker_command))
                console.print(f"[bold]worker[/] pid {worker.pid}, log {log}")
                watches.append(WorkerWatch(worker, int(env["QT_WEB_PORT"]), log))
            watch = Fleet(watches)
            watch.wait_until_assigned(
                input_partitions(prefix, settings.partitions), plan.start_timeout_s
            )
            summary = replay_files(
                plan.data,
                bootstrap=broker.bootstrap,
                prefix=prefix,
                symbols=plan.symbols,
                window=plan.window,
                options=kafka_io.ProducerOptions(broker.bootstrap, idempotence=not embedded),
                partitions=settings.partitions,
                console=console,
            )
            watch.check()
            if plan.before_end is not None:
                plan.before_end(broker.bootstrap, prefix)
            send_end_of_stream(broker.bootstrap, prefix, settings.partitions, summary)
            last_tick = summary.last_event_ms or 0
            columns = (
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            )  # fmt: skip
            with Progress(*columns, console=console) as progress:
                wait_until_drained(
                    broker.bootstrap, prefix, settings.partitions, watch,
                    plan.timeout_s, progress, last_tick,
                )  # fmt: skip
            latency = scrape_stage_latency(watches[0].port)
        elapsed = time.perf_counter() - started
        builder = ReportBuilder(settings.risk.starting_equity_usd)
        builder.add_all(
            read_back(broker.bootstrap, prefix, settings.partitions, settings.max_event_skew_ms)
        )
    from models.scorer import promoted_versions

    report = builder.build(
        model_versions=promoted_versions(settings.registry_dir),
        elapsed_s=elapsed,
        bars=builder.counts["TickReceived"],
        extra={
            "latency": latency,
            "mode": "kafka",
            "broker": "embedded-tansu" if embedded else "kafka",
            "topic_prefix": prefix,
            "workers": plan.workers,
            "config": run_configuration(settings),
            "data_path": str(plan.data),
        },
    )
    write_run(run_dir, report, builder.trades)
    return DemoResult(run_dir, report)
