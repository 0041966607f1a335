"""Topology benchmark: the one-hop ceiling, the full topology over a broker, the in-process runner.

``python -m tests.benchmarks topology [--brokers embedded,kafka] [--runner-reps N]`` runs, on the
same data (the bundled sample ``data/sample/um_futures_1m_2025``, 5 symbols x 6,480 klines):

* **one hop** (the ceiling): :mod:`tests.benchmarks.apps.passthrough`, one Faust agent taking
  ``take_events`` batches from ``market.ticks`` and producing each record to one topic, with the
  topology's worker settings; records/s from the start of the replay
  (:func:`streams.adapters.replay.files.replay_files`, the demo's producer) to the moment the
  end-of-stream watermark of every partition came out of the hop;
* **full topology**: :func:`streams.demo.run_demo` itself, with two measuring hooks: its worker
  is :mod:`tests.benchmarks.apps.timed_worker` (the stock worker plus per-stage batch timers) and
  the replay starts only once the worker's consumer group owns every partition, so start-up is
  reported apart (``cold_s``) and the figure compares with the hop's. Events/s = records handled
  by all agents (data and watermarks) / (replay start to drained); bars/s likewise;
* **in-process runner**: :func:`streams.runner.run` with every promoted model (bars/s), via
  :func:`tests.benchmarks.bench_runner.bench`.

Both broker kinds by default: the embedded Tansu broker (started here) and a real Kafka
(``QT_KAFKA_BOOTSTRAP``, else the development broker on 127.0.0.1:19092 if running, else started
with ``infra/kafka/kafka.sh`` when Java is present and stopped afterwards). The topology's trades
are checked against the runner's (same ``trades_sha256``): a fast wrong run is no figure.

Writes ``tests/benchmarks/results/topology.json`` and ``topology.md``. Figures are wall-clock
on a shared machine; they are reported as measured, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Bound at import, before run() patches streams.workers.running_worker (which the demo's fleet
# starts its workers with) with the timed worker.
from streams.workers import running_worker as start_worker

if TYPE_CHECKING:
    from streams.config import Settings

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
KAFKA_SH = ROOT / "infra" / "kafka" / "kafka.sh"
DEV_KAFKA = "127.0.0.1:19092"
#: Goals from the topology issue.
GOAL_TOPOLOGY_SHARE_OF_HOP = 0.5
GOAL_RUNNER_BARS_PER_S = 20_000.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 1800.0


class BenchError(RuntimeError):
    """A benchmark run could not complete; the message names the step and where to look."""


@dataclass(frozen=True)
class Broker:
    """A broker the figures are measured on."""

    kind: str  # "embedded" | "kafka"
    bootstrap: str
    pid: int | None

    @property
    def embedded(self) -> bool:
        """True for the embedded Tansu broker (its workarounds apply)."""
        return self.kind == "embedded"


# --------------------------------------------------------------------------- process helpers


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a live process has used so far (Linux ``/proc``)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


#: The readiness probe: a watermark at event time 0 ("no tick before 1970 follows" is true of
#: every data set, so no stage's output changes), with the replay's own source name so merges do
#: not wait for a new source.
PROBE_WATERMARK = 0


def send_probe(bootstrap: str, topic: str, partitions: int) -> None:
    """The probe watermark on every partition of ``topic``."""
    from confluent_kafka import Producer

    from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER

    producer = Producer({"bootstrap.servers": bootstrap})
    headers: list[tuple[str, str | bytes | None]] = [
        (SOURCE_HEADER, b"replay"),
        (WATERMARK_HEADER, str(PROBE_WATERMARK).encode()),
    ]
    for partition in range(partitions):
        producer.produce(topic, b"", None, partition=partition, headers=headers, timestamp=0)
    if producer.flush(30):
        raise BenchError(f"probe watermarks to {topic} not acknowledged within 30 s")


def wait_until_ready(
    bootstrap: str,
    probe: tuple[str, str, int],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float = READY_TIMEOUT_S,
) -> float:
    """Send the probe and block until a watermark is on every partition of the output; seconds.

    ``probe`` is (input topic, output topic, partitions). Only then does a worker consume:
    replaying earlier would time its start-up (JoinGroup alone takes seconds on Tansu, bug
    B3) instead of its throughput. Asking the group coordinator does not work on Tansu, whose
    DescribeGroups answers STABLE with no members.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from streams.ordering import WATERMARK_HEADER, header_value

    source, output, partitions = probe
    started = time.perf_counter()
    send_probe(bootstrap, source, partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ready-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(output, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen: set[int] = set()
    try:
        while len(seen) < partitions:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with {proc.returncode}:\n{_log_tail(log_path)}")
            if time.perf_counter() - started > timeout_s:
                raise BenchError(f"{output}: no probe after {timeout_s} s; worker log {log_path}")
            for msg in consumer.consume(100, 0.2):
                if msg.error() is None and header_value(msg.headers(), WATERMARK_HEADER):
                    seen.add(msg.partition() or 0)
    finally:
        consumer.close()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- brokers


def _kafka_running(bootstrap: str) -> bool:
    from streams.brokers.embedded import metadata_answers

    return metadata_answers(bootstrap, 3.0)


def _kafka_pid() -> int | None:
    pid_file = ROOT / ".kafka" / DEV_KAFKA.rsplit(":", 1)[1] / "kafka.pid"
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text().strip())
    return None


@contextlib.contextmanager
def kafka_broker() -> Iterator[Broker | None]:
    """A real Kafka: configured, already running, or started here (and then stopped)."""
    configured = os.environ.get("QT_KAFKA_BOOTSTRAP")
    if configured:
        yield Broker("kafka", configured, None)
        return
    if _kafka_running(DEV_KAFKA):
        yield Broker("kafka", DEV_KAFKA, _kafka_pid())
        return
    if shutil.which("java") is None:
        yield None
        return
    subprocess.run(["bash", str(KAFKA_SH), "start"], check=True, cwd=ROOT)
    try:
        yield Broker("kafka", DEV_KAFKA, _kafka_pid())
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop"], check=False, cwd=ROOT)


@contextlib.contextmanager
def embedded_broker() -> Iterator[Broker | None]:
    """The embedded Tansu broker on a free loopback port, for this benchmark only."""
    from streams.brokers.embedded import EmbeddedBroker

    broker = EmbeddedBroker()
    bootstrap = broker.start()
    try:
        yield Broker("embedded", bootstrap, broker.pid)
    finally:
        broker.stop()


# --------------------------------------------------------------------------- one hop


@dataclass
class EndWatcher:
    """Consumes the hop's output; notes when every partition delivered its end-of-stream mark."""

    bootstrap: str
    topic: str
    partitions: int
    records: int = 0
    watermarks: int = 0
    ended_at: float | None = None
    error: str | None = None
    _ended: set[int] = field(default_factory=set)

    def run(self, stop: threading.Event) -> None:
        """Poll until all partitions ended or ``stop`` is set (runs on its own thread)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from streams.ordering import END_OF_STREAM, WATERMARK_HEADER, header_value

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)]
        )
        try:
            while not stop.is_set() and len(self._ended) < self.partitions:
                for msg in consumer.consume(1000, 0.2):
                    if msg.error() is not None:
                        self.error = str(msg.error())
                        continue
                    wm = header_value(msg.headers(), WATERMARK_HEADER)
                    if wm is not None and int(wm) == PROBE_WATERMARK:
                        continue  # the readiness probe, not part of the replay
                    self.records += 1
                    if wm is None:
                        continue
                    self.watermarks += 1
                    if int(wm) >= END_OF_STREAM:
                        self._ended.add(msg.partition() or 0)
            if len(self._ended) == self.partitions:
                self.ended_at = time.perf_counter()
        finally:
            consumer.close()


def _worker_env(
    broker: Broker, prefix: str, partitions: int, extra: dict[str, str]
) -> dict[str, str]:
    from streams.brokers.embedded import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(
        {
            "QT_KAFKA_BOOTSTRAP": broker.bootstrap,
            "QT_KAFKA_EMBEDDED": "true" if broker.embedded else "false",
            "QT_TOPIC_PREFIX": prefix,
            "QT_PARTITIONS": str(partitions),
            "QT_WEB_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    return env


def one_hop(broker: Broker, partitions: int, work_dir: Path) -> dict[str, Any]:
    """The pass-through ceiling on ``broker`` (see the module doc)."""
    from streams.adapters.replay.files import replay_files
    from streams.config import get_settings
    from streams.kafka_io import ProducerOptions, ensure_topics
    from streams.topics import Topic, topic_name
    from tests.benchmarks.apps.passthrough import OUTPUT_TOPIC

    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    source, sink = topic_name(Topic.MARKET_TICKS, prefix), f"{prefix}{OUTPUT_TOPIC}"
    deadletter = topic_name(Topic.DEADLETTER, prefix)
    ensure_topics(
        broker.bootstrap, dict.fromkeys((source, sink, deadletter), partitions),
        replication_factor=1, exact_partitions=False,
    )  # fmt: skip
    log_path = work_dir / f"hop-{broker.kind}.log"
    # The ceiling's producer lingers as the topology's does (QT_PRODUCER_LINGER_MS).
    linger = {"QT_PRODUCER_LINGER_MS": str(get_settings().producer_linger_ms)}
    env = _worker_env(broker, prefix, partitions, linger)
    spawned = time.perf_counter()
    with start_worker(env, log_path, ("tests.benchmarks.apps.passthrough",)) as proc:
        ready_s = wait_until_ready(broker.bootstrap, (source, sink, partitions), proc, log_path)
        watcher = EndWatcher(broker.bootstrap, sink, partitions)
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        cpu0, broker_cpu0 = cpu_seconds(proc.pid), cpu_seconds(broker.pid)
        t0 = time.perf_counter()
        summary = replay_files(
            SAMPLE,
            bootstrap=broker.bootstrap,
            prefix=prefix,
            options=ProducerOptions(broker.bootstrap, idempotence=not broker.embedded),
            partitions=partitions,
            show_progress=False,
            end_of_stream=True,
        )
        replayed = time.perf_counter()
        thread.join(DRAIN_TIMEOUT_S)
        stop.set()
        thread.join(5)
        cpu1, broker_cpu1 = cpu_seconds(proc.pid), cpu_seconds(broker.pid)
    if watcher.ended_at is None:
        raise BenchError(f"one hop on {broker.kind}: no end of stream after {DRAIN_TIMEOUT_S} s")
    wall = watcher.ended_at - t0
    return {
        "ticks": summary.ticks,
        "records_out": watcher.records,
        "watermarks_out": watcher.watermarks,
        "ready_s": ready_s,
        "replay_s": replayed - t0,
        "wall_s": wall,
        "cold_s": watcher.ended_at - spawned,
        "records_per_s": watcher.records / wall,
        "ticks_per_s": summary.ticks / wall,
        "replay_records_per_s": watcher.records / (replayed - t0),
        "worker_cpu_s": _delta(cpu0, cpu1),
        "broker_cpu_s": _delta(broker_cpu0, broker_cpu1),
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


# --------------------------------------------------------------------------- full topology


@contextlib.contextmanager
def sampling_profiler(pid: int, out: Path | None, rate_hz: int = 50) -> Iterator[None]:
    """py-spy samples ``pid`` (all threads, not pausing it) for the block; no-op without ``out``.

    Written as collapsed stacks (``--format raw``); :func:`profile_summary` reads them.
    """
    if out is None:
        yield
        return
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [spy_bin, "record", "-p", str(pid), "-o", str(out), "--format", "raw"]
    cmd += ["--rate", str(rate_hz), "--nonblocking"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            _, err = spy.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not out.exists():  # the figures stand without it; say why it is missing
            print(
                f"py-spy wrote no profile ({' '.join(cmd)}): {err.decode()[-500:]}", file=sys.stderr
            )


def scrape_metrics(port: int, timeout_s: float = 10.0) -> str | None:
    """The worker's ``/metrics`` page (Prometheus text), ``None`` when it does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return str(r.read().decode())
    except OSError:
        return None


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """PromQL's ``histogram_quantile``: linear within the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return None


def stage_latency_from_metrics(text: str) -> dict[str, dict[str, float | None]]:
    """Per stage p50/p99 (µs) and count of ``qt_stage_latency_seconds`` from a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "qt_stage_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets.setdefault(sample.labels["stage"], []).append((le, sample.value))
    out: dict[str, dict[str, float | None]] = {}
    for stage, rows in sorted(buckets.items()):
        rows.sort()
        p50, p99 = _bucket_quantile(rows, 0.5), _bucket_quantile(rows, 0.99)
        out[stage] = {
            "p50_us": None if p50 is None else p50 * 1e6,
            "p99_us": None if p99 is None else p99 * 1e6,
            "count": rows[-1][1],
        }
    return out


@dataclass
class DemoHooks:
    """Where run_demo's clock marks and the worker's figures land."""

    stats_path: Path
    profile_path: Path | None
    broker_pid: int | None
    ready_s: float = 0.0
    replay_started: float = 0.0
    replay_ended: float = 0.0
    ticks: int = 0
    drained: float = 0.0
    worker_cpu_s: float | None = None
    broker_cpu_s: float | None = None
    metrics_text: str | None = None

    def running_worker(
        self, env: dict[str, str], log_path: Path, _command: tuple[str, ...] = ()
    ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        """Stands in for :func:`streams.workers.running_worker`: the timed worker, ready first."""
        extra = {"QTBENCH_STATS": str(self.stats_path), "PYTHONPATH": str(ROOT)}
        return self._ready_worker({**env, **extra}, log_path)

    @contextlib.contextmanager
    def _ready_worker(
        self, env: dict[str, str], log_path: Path
    ) -> Iterator[subprocess.Popen[bytes]]:
        from streams.topics import Topic, topic_name

        prefix, partitions = env["QT_TOPIC_PREFIX"], int(env["QT_PARTITIONS"])
        # The features stage forwards the probe: the worker consumes and produces.
        probe = (
            topic_name(Topic.MARKET_TICKS, prefix),
            topic_name(Topic.MARKET_FEATURES, prefix),
            partitions,
        )
        with start_worker(env, log_path, ("tests.benchmarks.apps.timed_worker",)) as proc:
            self.ready_s = wait_until_ready(env["QT_KAFKA_BOOTSTRAP"], probe, proc, log_path)
            cpu0, broker_cpu0 = cpu_seconds(proc.pid), cpu_seconds(self.broker_pid)
            with sampling_profiler(proc.pid, self.profile_path):
                try:
                    yield proc
                finally:  # also when the drain times out: the figures say how far it got
                    self.worker_cpu_s = _delta(cpu0, cpu_seconds(proc.pid))
                    self.broker_cpu_s = _delta(broker_cpu0, cpu_seconds(self.broker_pid))
                    self.metrics_text = scrape_metrics(int(env["QT_WEB_PORT"]))

    def wrap_replay(self, replay: Callable[..., Any]) -> Callable[..., Any]:
        """Mark the replay's start and end around :func:`replay_files`; keep its tick count."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.replay_started = time.perf_counter()
            summary = replay(*args, **kwargs)
            self.replay_ended = time.perf_counter()
            self.ticks = summary.ticks
            return summary

        return timed

    def wrap_drain(self, wait: Callable[..., None]) -> Callable[..., None]:
        """Mark the moment :func:`streams.demo.wait_until_drained` saw every end-of-stream mark."""

        def timed(*args: Any, **kwargs: Any) -> None:
            wait(*args, **kwargs)
            self.drained = time.perf_counter()

        return timed


def stage_figures(batches: dict[str, list[list[int]]], wall_s: float) -> dict[str, dict[str, Any]]:
    """Per stage: records handled, batch size, per-record handling time, share of the wall time.

    Handling time per record is the batch's dispatch time (decode + stage logic) divided by its
    events, counted once per event, so percentiles are over records, not batches.
    """
    out: dict[str, dict[str, Any]] = {}
    for stage, rows in sorted(batches.items()):
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        events, marks, dispatch_ns, send_ns, items = arr.T
        per_record_us = np.repeat(
            dispatch_ns / np.maximum(events, 1) / 1e3, events.astype(np.int64)
        )
        out[stage] = {
            "events": int(events.sum()),
            "watermarks_in": int(marks.sum()),
            "items_out": int(items.sum()),
            "batches": len(rows),
            "mean_batch": float(events.mean()),
            "handle_p50_us": float(np.percentile(per_record_us, 50)) if per_record_us.size else 0.0,
            "handle_p99_us": float(np.percentile(per_record_us, 99)) if per_record_us.size else 0.0,
            "handle_s": float(dispatch_ns.sum() / 1e9),
            "send_s": float(send_ns.sum() / 1e9),
            "busy_share": float((dispatch_ns.sum() + send_ns.sum()) / 1e9 / wall_s),
        }
    return out


def did_not_drain(hooks: DemoHooks, error: str, timeout_s: float) -> dict[str, Any]:
    """What a topology run that did not drain in time got through (from the worker's counters)."""
    handled = {}
    if hooks.metrics_text:
        handled = {k: v["count"] for k, v in stage_latency_from_metrics(hooks.metrics_text).items()}
    stats = json.loads(hooks.stats_path.read_text()) if hooks.stats_path.exists() else {}
    wall = timeout_s + (hooks.replay_ended - hooks.replay_started)
    return {
        "drained": False,
        "error": error[:600],
        "bars": hooks.ticks,
        "ready_s": hooks.ready_s,
        "wall_s_at_least": wall,
        "worker_cpu_s": hooks.worker_cpu_s,
        "broker_cpu_s": hooks.broker_cpu_s,
        "events_handled_by_stage": handled,
        "stages": stage_figures(stats, wall) if stats else {},
    }


def topology(
    broker: Broker, base: Settings, work_dir: Path, profile: bool, timeout_s: float
) -> dict[str, Any]:
    """The full topology through :func:`streams.demo.run_demo` on ``broker`` (module doc)."""
    from unittest import mock

    from rich.console import Console

    import streams.adapters.replay.files as replay_module
    import streams.demo as demo
    import streams.workers as workers

    tag = f"{broker.kind}{'-profile' if profile else ''}"
    hooks = DemoHooks(
        work_dir / f"stages-{tag}.json",
        work_dir / f"worker-{tag}.pyspy" if profile else None,
        broker.pid,
    )
    settings = base.model_copy(
        update={"kafka_bootstrap": broker.bootstrap, "kafka_embedded": broker.embedded}
    )
    plan = demo.DemoPlan(data=SAMPLE, run_dir=work_dir / f"demo-{tag}", timeout_s=timeout_s)
    with (
        mock.patch.object(workers, "running_worker", hooks.running_worker),
        mock.patch.object(demo, "wait_until_drained", hooks.wrap_drain(demo.wait_until_drained)),
        mock.patch.object(
            replay_module, "replay_files", hooks.wrap_replay(replay_module.replay_files)
        ),
    ):
        try:
            result = demo.run_demo(settings, plan, Console(file=io.StringIO()))
        except demo.DemoError as exc:
            return did_not_drain(hooks, str(exc), timeout_s)
    wall = hooks.drained - hooks.replay_started
    batches = json.loads(hooks.stats_path.read_text())
    stages = stage_figures(batches, wall)
    events = sum(s["events"] for s in stages.values())
    counts = result.report["counts"]
    bars = hooks.ticks  # what the replay produced (the report counts what it read back)
    return {
        "drained": True,
        "bars": bars,
        "events_handled": events,
        "ready_s": hooks.ready_s,
        "replay_s": hooks.replay_ended - hooks.replay_started,
        "wall_s": wall,
        "cold_s": float(result.report["throughput"]["elapsed_s"]),
        "events_per_s": events / wall,
        "bars_per_s": bars / wall,
        "worker_cpu_s": hooks.worker_cpu_s,
        "broker_cpu_s": hooks.broker_cpu_s,
        "counts": {k: v for k, v in counts.items() if isinstance(v, int)},
        "trades_sha256": result.report["trades_sha256"],
        "stages": stages,
        # The worker's own histogram (dispatch + send per record, amortised per batch).
        "metrics_latency": (
            stage_latency_from_metrics(hooks.metrics_text) if hooks.metrics_text else None
        ),
        "models": result.report["model_versions"],
        "profile": str(hooks.profile_path) if hooks.profile_path else None,
    }


# --------------------------------------------------------------------------- runner, profile


def bench_settings(min_confidence: float | None) -> Settings:
    """The settings of every run here: the environment's, with the demo's confidence gate.

    ``quantum-trader demo`` runs at a 50% gate by default (the bundled models make no decision
    in the sample at the seed's 65%); a benchmark of a topology that never trades would not
    exercise risk, exits, execution or learning.
    """
    from streams.config import get_settings
    from streams.demo import with_min_confidence

    settings = get_settings()
    return settings if min_confidence is None else with_min_confidence(settings, min_confidence)


def runner(settings: Settings, reps: int) -> dict[str, Any]:
    """The in-process runner with every promoted model and the topology's settings (bars/s)."""
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder
    from streams.runner import run

    scorer = EnsembleScorer.from_registry(settings.registry_dir)
    rates: list[float] = []
    for _ in range(reps):
        builder = ReportBuilder(settings.risk.starting_equity_usd)
        stats = run(SAMPLE, scorer, builder, settings, block_minutes=240)
        rates.append(stats.bars_per_s)
    stage_ns = {k: sum(v) for k, v in stats.latency_ns.items()}
    report = builder.build(model_versions=stats.model_versions)
    return {
        "bars": stats.bars,
        "bars_per_s": {"best": max(rates), "median": float(np.median(rates)), "runs": rates},
        "stage_time_share": {k: v / (stats.elapsed_s * 1e9) for k, v in sorted(stage_ns.items())},
        "models": stats.model_versions,
        "closed_trades": report["counts"]["closed_trades"],
        "trades_sha256": report["trades_sha256"],
    }


def _function_of(frame: str) -> str:
    """``"send (faust/topics.py:455)"`` -> ``"send (faust/topics.py)"``: one row per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(Path(path).parts[-2:]) if path else "?"
    return f"{name} ({short})"


def profile_summary(collapsed: Path, limit: int = 15) -> dict[str, Any]:
    """Top functions by own (leaf) samples and by inclusive samples, from py-spy's raw output.

    Each line is ``frame;frame;...;leaf count`` (root first). Inclusive counts a function once
    per stack, however often it recurses.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        functions = [_function_of(f) for f in stack.split(";")]
        own[functions[-1]] = own.get(functions[-1], 0) + count
        for fn in set(functions):
            inclusive[fn] = inclusive.get(fn, 0) + count

    def top(table: dict[str, int]) -> list[dict[str, Any]]:
        rows = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        return [{"function": fn, "samples": n, "share": n / max(total, 1)} for fn, n in rows]

    return {"samples": total, "top_own": top(own), "top_inclusive": top(inclusive)}


# --------------------------------------------------------------------------- main


def measure(
    broker: Broker, settings: Settings, work_dir: Path, profile: bool, timeout_s: float
) -> dict[str, Any]:
    """The hop and the topology on one broker; py-spy samples the topology's worker if asked."""
    hop = one_hop(broker, settings.partitions, work_dir)
    topo = topology(broker, settings, work_dir, profile, timeout_s)
    out: dict[str, Any] = {"bootstrap": broker.bootstrap, "one_hop": hop, "topology": topo}
    if topo["drained"]:
        out["topology_share_of_hop"] = topo["events_per_s"] / hop["records_per_s"]
    if topo["profile"] and Path(topo["profile"]).exists():
        out["profile"] = profile_summary(Path(topo["profile"]))
    return out


def bench(
    timeouts: Mapping[str, float], settings: Settings, runner_reps: int, profile: str | None
) -> dict[str, Any]:
    """Every figure of the suite (module doc) on the brokers of ``timeouts`` (kind: drain timeout).

    Brokers that cannot run are listed as skipped; a topology that does not drain within its
    timeout is reported with how far it got.
    """
    results: dict[str, Any] = {
        "suite": "topology",
        "data": str(SAMPLE.relative_to(ROOT)),
        "partitions": settings.partitions,
        "min_confidence": settings.supervisor.min_confidence,
        "feedback_lag_ms": settings.feedback_lag_ms,
        "producer_linger_ms": settings.producer_linger_ms,
        "brokers": {},
        "skipped": {},
    }
    makers = {"embedded": embedded_broker, "kafka": kafka_broker}
    with tempfile.TemporaryDirectory(prefix="qt-bench-topology-") as tmp:
        for kind, timeout_s in timeouts.items():
            with makers[kind]() as broker:
                if broker is None:
                    results["skipped"][kind] = "no broker: set QT_KAFKA_BOOTSTRAP or install Java"
                    continue
                print(f"topology bench: {kind} at {broker.bootstrap}", flush=True)
                results["brokers"][kind] = measure(
                    broker, settings, Path(tmp), profile == kind, timeout_s
                )
    results["runner"] = runner(settings, runner_reps)
    results["goals"] = goals(results)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_avg_1m_at_end": os.getloadavg()[0],
    }
    return results


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals against the figures, met or missed, and trade parity with the runner."""
    runner_sha = results["runner"]["trades_sha256"]
    out: dict[str, Any] = {
        "runner_bars_per_s": {
            "goal": GOAL_RUNNER_BARS_PER_S,
            "best": results["runner"]["bars_per_s"]["best"],
            "met": results["runner"]["bars_per_s"]["best"] >= GOAL_RUNNER_BARS_PER_S,
        }
    }
    for kind, res in results["brokers"].items():
        if not res["topology"]["drained"]:
            out[f"topology_share_of_hop_{kind}"] = {
                "goal": GOAL_TOPOLOGY_SHARE_OF_HOP,
                "met": False,
            }
            continue
        out[f"topology_share_of_hop_{kind}"] = {
            "goal": GOAL_TOPOLOGY_SHARE_OF_HOP,
            "measured": res["topology_share_of_hop"],
            "met": res["topology_share_of_hop"] >= GOAL_TOPOLOGY_SHARE_OF_HOP,
        }
        out[f"trades_match_runner_{kind}"] = {
            "match": res["topology"]["trades_sha256"] == runner_sha,
            "closed_trades": res["topology"]["counts"]["closed_trades"],
        }
    return out


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _run_row(label: str, records: int, per_s: float, r: dict[str, Any]) -> str:
    bars_per_s = r.get("bars_per_s", r.get("ticks_per_s"))
    cpu = f"{_fmt(r['worker_cpu_s'], '.1f')} | {_fmt(r['broker_cpu_s'], '.1f')}"
    return (
        f"| {label} | {records:,} | {r['wall_s']:.1f} | {_fmt(per_s)} | {_fmt(bars_per_s)} | "
        f"{cpu} | {r['ready_s']:.1f} | {r['cold_s']:.1f} |"
    )


def _undrained_md(kind: str, res: dict[str, Any]) -> list[str]:
    hop, topo = res["one_hop"], res["topology"]
    handled = ", ".join(f"{k} {v:,.0f}" for k, v in topo["events_handled_by_stage"].items())
    return [
        f"## {kind} broker ({res['bootstrap']})",
        "",
        "| | records | wall s | records/s | bars/s | worker CPU s | broker CPU s | ready s "
        "| cold s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        _run_row("one hop (ceiling)", hop["records_out"], hop["records_per_s"], hop),
        "",
        f"**The full topology did not drain** within {topo['wall_s_at_least']:.0f} s "
        f"(worker CPU {_fmt(topo['worker_cpu_s'], '.0f')} s, broker CPU "
        f"{_fmt(topo['broker_cpu_s'], '.0f')} s). Events handled by then: {handled}.",
        "",
    ]


def _broker_md(kind: str, res: dict[str, Any]) -> list[str]:
    if not res["topology"]["drained"]:
        return _undrained_md(kind, res)
    hop, topo = res["one_hop"], res["topology"]
    lines = [
        f"## {kind} broker ({res['bootstrap']})",
        "",
        "| | records | wall s | records/s | bars/s | worker CPU s | broker CPU s | ready s "
        "| cold s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        _run_row("one hop (ceiling)", hop["records_out"], hop["records_per_s"], hop),
        _run_row("full topology", topo["events_handled"], topo["events_per_s"], topo),
        "",
        f"Topology events/s = **{res['topology_share_of_hop']:.0%} of the one-hop ceiling** "
        f"(goal {GOAL_TOPOLOGY_SHARE_OF_HOP:.0%}). Replay alone: {hop['replay_s']:.1f} s for "
        f"the hop's input ({_fmt(hop['replay_records_per_s'])} records/s).",
        "",
        "| stage | events in | of which watermarks | items out | mean batch | handle p50 µs | "
        "handle p99 µs | /metrics p50 µs | /metrics p99 µs | handle s | send s | busy share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    scraped = topo.get("metrics_latency") or {}
    for stage, s in topo["stages"].items():
        m = scraped.get(stage, {})
        lines.append(
            f"| {stage} | {s['events']:,} | {s['watermarks_in']:,} | {s['items_out']:,} | "
            f"{s['mean_batch']:.1f} | {s['handle_p50_us']:.1f} | {s['handle_p99_us']:.1f} | "
            f"{_fmt(m.get('p50_us'), '.1f')} | {_fmt(m.get('p99_us'), '.1f')} | "
            f"{s['handle_s']:.2f} | {s['send_s']:.2f} | {s['busy_share']:.1%} |"
        )
    if "profile" in res:
        prof = res["profile"]
        lines += [
            "",
            f"py-spy, {prof['samples']:,} samples of the worker's busy threads during this run "
            "(idle time excluded):",
            "",
            "| function (own time) | share | | function (inclusive) | share |",
            "|---|---:|---|---|---:|",
        ]
        for mine, incl in zip(prof["top_own"], prof["top_inclusive"], strict=False):
            lines.append(
                f"| `{mine['function']}` | {mine['share']:.1%} | | "
                f"`{incl['function']}` | {incl['share']:.1%} |"
            )
    return [*lines, ""]


def markdown(res: dict[str, Any]) -> str:
    """``topology.md``: the figures of ``topology.json`` as tables."""
    run = res["runner"]
    lines = [
        "# Topology benchmark",
        "",
        f"Data: `{res['data']}` ({run['bars']:,} klines), {res['partitions']} partitions, "
        f"confidence gate {res['min_confidence']:.0%}, feedback lag "
        f"{res['feedback_lag_ms'] / 60000:.0f} min, models {run['models']}; "
        f"{res['machine']['cpus']} CPUs shared with other work (1-minute load "
        f"{res['machine']['load_avg_1m_at_end']:.1f} at the end). "
        "Generated by `python -m tests.benchmarks topology`; method in the suite's docstring, "
        "findings in `docs/performance.md`.",
        "",
    ]
    for kind, broker_res in res["brokers"].items():
        lines += _broker_md(kind, broker_res)
    for kind, why in res["skipped"].items():
        lines += [f"## {kind} broker: skipped ({why})", ""]
    rates = run["bars_per_s"]
    shares = ", ".join(f"{k} {v:.0%}" for k, v in run["stage_time_share"].items())
    lines += [
        "## In-process runner (full ensemble)",
        "",
        f"best {_fmt(rates['best'])} bars/s, median {_fmt(rates['median'])} bars/s over "
        f"{len(rates['runs'])} run(s) (goal {GOAL_RUNNER_BARS_PER_S:,.0f}); wall-time share: "
        f"{shares}. Closed trades: {run['closed_trades']}.",
        "",
        "## Goals",
        "",
    ]
    for name, goal in res["goals"].items():
        lines.append(f"- {name}: {json.dumps(goal)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/topology.json`` and ``topology.md``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks topology")
    parser.add_argument("--brokers", default="embedded,kafka", help="comma list: embedded,kafka")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--min-confidence", type=float, default=0.5, help="confidence gate (the demo's default)"
    )
    parser.add_argument("--runner-reps", type=int, default=2)
    parser.add_argument("--kafka-timeout", type=float, default=1800.0, help="drain timeout, s")
    parser.add_argument("--embedded-timeout", type=float, default=900.0, help="drain timeout, s")
    parser.add_argument(
        "--profile", choices=("embedded", "kafka", "none"), default="kafka",
        help="sample the topology's worker with py-spy on this broker (same run)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    unknown = set(kinds) - {"embedded", "kafka"}
    if unknown:
        parser.error(f"unknown broker kind(s): {sorted(unknown)}")
    profile = None if args.profile == "none" else args.profile
    try:
        timeouts = {k: args.kafka_timeout if k == "kafka" else args.embedded_timeout for k in kinds}
        settings = bench_settings(args.min_confidence).model_copy(
            update={"partitions": args.partitions}
        )
        res = bench(timeouts, settings, args.runner_reps, profile)
    except BenchError as exc:
        print(f"topology bench failed: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "topology.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.out / "topology.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return 0
