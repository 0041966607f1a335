"""Memory benchmark: the worker's RSS over a long replay of the development data.

``python -m tests.benchmarks memory [--brokers kafka,embedded] [--symbols N|A,B] [--days D]
[--max-bars N] [--every S]`` replays the development data (default
``../shared/data/binance/spot_1m``: 29 spot symbols x 35 days of 1-minute klines, 1.41 M bars)
into ``market.ticks`` of a fresh topic prefix and runs one worker of the whole topology on it
(the demo's settings: 50% confidence gate, 5-minute feedback lag, 4 partitions, spans to a
file as a deployed worker writes them) until it drained. Every ``--every`` seconds a sampler
reads:

* the worker's ``VmRSS`` and ``VmHWM`` (``/proc/<pid>/status``), and the broker's ``VmRSS``;
* **events**: the sum of the worker's ``qt_stage_records_total`` (data records handled by all
  stages; watermarks are not counted) and **bars**: the features stage's ticks;
* **event time**: how far the whole topology got: the lowest watermark on the outputs of the
  feedback loops' writers (closed trades, rewards, intents), read as the demo's drain wait reads
  them (:class:`ProgressWatcher`); the stages' ``/health`` watermarks are only the in-band marks
  they received, which dense ticks do not need.

**Pacing.** By default the replay is flow-controlled (:class:`FlowControl`): it runs at most
``--lead-minutes`` (30) of event time ahead of the topology, after a ``--warmup-lead-minutes``
(150) allowance for the feature windows, so the merges buffer what a live feed would make them
buffer, however fast or slow the worker is. When the topology's event time stops moving for 5
minutes while the replay waits for it, the run stops and says so. ``--lead-minutes 0`` replays
unpaced: the worker reads a backlog all the time and the merges hold whatever their slowest
input has not passed (the catch-up case).

**Warm-up and verdict.** The warm-up is the first ``--warmup-share`` (default 25%) of the
run's events: feature windows (64 bars), bias windows (200 signals), correlation returns (120
per symbol), the tracer's bounded buffers (20,000 undecided traces, 20,000 decided trace ids:
about 700 minutes of 29 symbols), the ensemble's drift window (24 hours of event time) and the
allocator's arenas all fill in it. After it, the
RSS samples are fitted with a least-squares line against events and against event time: the
slope in MB per million events and in MB per hour of event time. The verdict is **flat** when
the slope is at most ``--bound-mb-per-million`` (default 2 MB per million events: a worker of
these 29 symbols handles about 0.29 M events per day of market time, so that is under 0.6 MB
a day, 210 MB a year, within the RSS noise of a single run) and at least
``--min-post-warmup-events`` (default 500,000) events came after the warm-up; **growing**
when the slope exceeds the bound (a short run can show growth, not flatness); otherwise
**inconclusive**.

``--probe`` runs the worker as :mod:`tests.benchmarks.apps.memory_worker`, which logs every
stage's state size (Faust table bytes, JSON bytes of each part of each instance's state) and
the most numerous Python object types every ``--probe-every`` seconds; ``--tracemalloc N``
adds tracemalloc snapshots with N frames, and the suite writes the top allocation growth
between the warm-up and the end. Both are for finding what grows; the figures come from a run
without tracemalloc.

``--max-wall S`` (default 4 hours, so ``make bench`` ends) stops the replay and the wait after S
seconds of wall time and reports what was measured, marked as not drained; ``--max-wall 0``
runs to the end whatever it takes.

Writes ``tests/benchmarks/results/memory.json``, ``memory.md`` and ``memory.png`` (matplotlib;
the markdown has an ASCII plot too). With several brokers the files are per broker suffixed
when not Kafka (``memory-embedded.*``). Figures are measured on a shared machine and
reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.benchmarks.apps.memory_worker import vm_rss_kb
from tests.benchmarks.bench_topology import (
    PROBE_WATERMARK,
    ROOT,
    BenchError,
    Broker,
    bench_settings,
    embedded_broker,
    kafka_broker,
)
from tests.shared_data import BINANCE

if TYPE_CHECKING:
    from streams.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = BINANCE / "spot_1m"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DRAIN_TIMEOUT_S = 6 * 3600.0
#: Default wall-clock cap (``make bench`` runs every suite with its defaults).
MAX_WALL_S = 4 * 3600.0
WORKER_MODULE = "tests.benchmarks.apps.memory_worker"


class StopRun(Exception):
    """``--max-wall`` reached: stop replaying and waiting, report what was measured."""


# --------------------------------------------------------------------------- sampling


def vm_hwm_kb(pid: int) -> int | None:
    """``VmHWM`` (peak resident set) of ``pid`` in kB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def records_by_stage(metrics_text: str) -> dict[str, dict[str, float]]:
    """``qt_stage_records_total`` per stage and topic from a ``/metrics`` scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in ("qt_stage_records", "qt_stage_records_total"):
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                stage = out.setdefault(s.labels["stage"], {})
                stage[s.labels["topic"]] = stage.get(s.labels["topic"], 0.0) + s.value
    return out


def _get(port: int, path: str, timeout_s: float = 5.0) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return bytes(r.read())
    except OSError as exc:  # 503 from /health still carries the body
        body = getattr(exc, "read", None)
        return body() if callable(body) else None


def stage_watermarks(port: int) -> dict[str, int]:
    """Each stage's watermark (event time its input reached) from ``/health``."""
    raw = _get(port, "/health")
    if not raw:
        return {}
    with contextlib.suppress(ValueError):
        stages = json.loads(raw).get("stages") or {}
        return {
            name: int(s["watermark_ms"])
            for name, s in stages.items()
            if isinstance(s, dict) and s.get("watermark_ms") is not None
        }
    return {}


@dataclass
class Sampler:
    """Samples the worker (and broker) every ``every_s`` seconds on its own thread."""

    worker_pid: int
    broker_pid: int | None
    port: int
    every_s: float
    progress: ProgressWatcher | None = None
    live_file: Path | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    last_records: dict[str, dict[str, float]] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    def sample(self) -> dict[str, Any]:
        """One sample now (also used for the first and the last one)."""
        raw = _get(self.port, "/metrics")
        if raw:
            self.last_records = records_by_stage(raw.decode())
        marks = stage_watermarks(self.port)
        rss = vm_rss_kb(self.worker_pid)
        broker_rss = vm_rss_kb(self.broker_pid) if self.broker_pid else None
        row = {
            "t_s": round(time.perf_counter() - self._t0, 2),
            "wall": time.time(),
            "rss_mb": None if rss is None else rss / 1024,
            "hwm_mb": (vm_hwm_kb(self.worker_pid) or 0) / 1024,
            "broker_rss_mb": None if broker_rss is None else broker_rss / 1024,
            "events": int(sum(sum(t.values()) for t in self.last_records.values())),
            "bars": int(sum(self.last_records.get("features", {}).values())),
            "event_time_ms": self.progress.event_time_ms if self.progress else None,
            "received_watermark_max_ms": max(marks.values()) if marks else None,
            "load_1m": os.getloadavg()[0],
        }
        self.samples.append(row)
        if self.live_file is not None:
            with self.live_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        return row

    def run(self, stop: threading.Event) -> None:
        """Sample until ``stop`` is set."""
        while not stop.wait(self.every_s):
            row = self.sample()
            if row["rss_mb"] is None:
                return  # the worker is gone


@dataclass
class ProgressWatcher:
    """How far the whole topology got in event time, read as the demo's drain wait reads it.

    Consumes the watermarks on the outputs of the feedback loops' writers
    (:func:`streams.topology.drain_marks`: closed trades, rewards, orders), which reach the end
    of stream last; the lowest of them is the topology's event time. (The stages' ``/health``
    watermarks are the in-band marks they *received*: a partition full of ticks needs none, so
    for dense data they stay near the start.)
    """

    bootstrap: str
    prefix: str
    partitions: int
    error: str | None = None
    marks: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def low(self) -> int | None:
        """The lowest mark, or None before every source sent one."""
        from streams.ordering import END_OF_STREAM

        low = min(self.marks.values()) if self.marks else -(2**62)
        return None if low <= -(2**61) else min(low, END_OF_STREAM)

    @property
    def event_time_ms(self) -> int | None:
        """:attr:`low` while the run is on (None before it started and after the end)."""
        from streams.ordering import END_OF_STREAM

        low = self.low
        return None if low is None or low >= END_OF_STREAM else low

    def run(self, stop: threading.Event) -> None:
        """Poll the mark topics until ``stop`` is set (its own thread)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from streams import kafka_io
        from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, header_value
        from streams.topics import Topic, topic_name
        from streams.topology import drain_marks, partitions_of

        self.marks = drain_marks(self.partitions)
        options = kafka_io.ConsumerOptions(self.bootstrap, f"{self.prefix}memory-progress")
        consumer = kafka_io.consumer(options)
        consumer.assign(
            [
                TopicPartition(topic_name(Topic(t), self.prefix), p, OFFSET_BEGINNING)
                for t in {t for t, _ in self.marks}
                for p in range(partitions_of(Topic(t), self.partitions))
            ]
        )
        try:
            while not stop.is_set():
                for msg in consumer.consume(500, 0.5):
                    if msg.error():
                        continue
                    wm = header_value(msg.headers(), WATERMARK_HEADER)
                    source = (header_value(msg.headers(), SOURCE_HEADER) or b"").decode()
                    key = ((msg.topic() or "").removeprefix(self.prefix), source)
                    if wm is not None and int(wm) > PROBE_WATERMARK and key in self.marks:
                        self.marks[key] = max(self.marks[key], int(wm))
        except Exception as exc:  # reported with the results, not swallowed
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            consumer.close()

    def wait_drained(self, check: Any, timeout_s: float, stop_at: float | None = None) -> None:
        """Block until every mark reached the end of stream; ``check`` fails on a dead worker.

        :class:`StopRun` at ``stop_at`` (``time.monotonic()``), :class:`BenchError` after
        ``timeout_s``.
        """
        from streams.ordering import END_OF_STREAM

        deadline = time.monotonic() + timeout_s
        while (self.low or 0) < END_OF_STREAM:
            check()
            if stop_at is not None and time.monotonic() > stop_at:
                raise StopRun("--max-wall")
            if self.error:
                raise BenchError(f"progress watcher failed: {self.error}")
            if time.monotonic() > deadline:
                raise BenchError(f"not drained within {timeout_s:.0f} s; marks {self.marks}")
            time.sleep(1.0)


@dataclass
class FlowControl:
    """Holds the replay at most ``lead_ms`` of event time ahead of the whole topology.

    Plugged into :func:`~streams.adapters.replay.files.replay_files` as the clock and sleep of
    its pacer (``speed=1``): the clock reads :class:`ProgressWatcher` (how far the whole topology
    got), so a tick at event time ``t`` waits until the topology reached
    ``t - lead_ms``. Then the stages' merges never buffer more than the lead, as with a live
    feed; without it the replay races ahead and the merges hold the whole backlog (docstring).
    """

    progress: ProgressWatcher
    start_ms: int
    lead_ms: int
    check: Any  # WorkerWatch.check: fails the wait when the worker died or a stage crashed
    warmup_ms: int = 0
    deadline: float | None = None  # time.monotonic() after which the run stops (StopRun)
    stall_s: float = 300.0
    poll_s: float = 0.5
    waited_s: float = 0.0
    _first: bool = True
    _last: float = 0.0

    def allowed_ms(self) -> int:
        """Event time the replay may reach now: the topology's plus the lead, or the warm-up
        allowance until the topology announced any progress (no stage passes anything on
        before its windows are full: features needs about two hours of bars)."""
        low = self.progress.low
        if low is None or low <= self.start_ms:
            return self.start_ms + max(self.lead_ms, self.warmup_ms)
        return low + self.lead_ms

    def clock(self) -> float:
        """Seconds of event time the replay may reach (0 at the pacer's anchor)."""
        if self._first:
            self._first = False
            return 0.0
        self._last = (self.allowed_ms() - self.start_ms) / 1000.0
        return self._last

    def sleep(self, delay_s: float) -> None:
        """Block until the topology moved ``delay_s`` of event time further."""
        target, t0 = self._last + delay_s, time.perf_counter()
        moved_at, seen = time.monotonic(), self.progress.low
        while self.clock() < target:
            self.check()
            now = time.monotonic()
            if self.deadline is not None and now > self.deadline:
                raise StopRun("--max-wall")
            if self.progress.low != seen:
                moved_at, seen = now, self.progress.low
            elif now - moved_at > self.stall_s:
                raise StopRun(
                    f"stalled: the topology's event time stayed at {_when(seen)} for "
                    f"{self.stall_s:.0f} s while the replay waited for it"
                )
            time.sleep(self.poll_s)
        self.waited_s += time.perf_counter() - t0


# --------------------------------------------------------------------------- data selection


def first_open_ms(data: Path, symbols: tuple[str, ...]) -> int:
    """The earliest open time of the selected files (their first data line)."""
    import gzip

    from streams.adapters.market_files import discover_files

    starts = []
    for spec in discover_files(data, symbols):
        opener = gzip.open if spec.path.name.endswith(".gz") else open
        with opener(spec.path, "rt") as f:  # type: ignore[operator]
            next(f)
            starts.append(int(next(f).split(",", 1)[0]))
    if not starts:
        raise BenchError(f"no market files in {data} for symbols {symbols or 'all'}")
    return min(starts)


def select(data: Path, symbols_arg: str | None) -> tuple[str, ...]:
    """``--symbols``: a count (the first N files by name) or a comma list; empty = all."""
    from streams.adapters.market_files import discover_files

    if not symbols_arg:
        return ()
    if symbols_arg.isdigit():
        return tuple(sorted(s.symbol for s in discover_files(data))[: int(symbols_arg)])
    return tuple(s.strip().upper() for s in symbols_arg.split(",") if s.strip())


def window_of(
    data: Path, symbols: tuple[str, ...], days: float | None, max_bars: int | None
) -> tuple[int | None, int | None]:
    """[start, end) of the replay: ``--days`` from the first bar; ``--max-bars`` as minutes of
    all selected symbols (a symbol with a gap yields fewer)."""
    from streams.adapters.market_files import discover_files

    if days is None and max_bars is None:
        return None, None
    start = first_open_ms(data, symbols)
    ends = []
    if days is not None:
        ends.append(start + int(days * 24 * HOUR_MS))
    if max_bars is not None:
        n = max(len(discover_files(data, symbols)), 1)
        ends.append(start + math.ceil(max_bars / n) * MINUTE_MS)
    return start, min(ends)


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunPlan:
    """What one broker's run replays and how it samples."""

    data: Path
    symbols: tuple[str, ...]
    window: tuple[int | None, int | None]
    every_s: float
    probe_every_s: float | None
    tracemalloc_frames: int
    timeout_s: float
    lead_minutes: float
    max_wall_s: float | None = None
    warmup_lead_minutes: float = 150.0
    live_samples: Path | None = None


def _pid_of(broker: Broker) -> int | None:
    """The broker's pid; for a configured Kafka, from ``.kafka/<port>/kafka.pid`` if ours."""
    if broker.pid is not None:
        return broker.pid
    port = broker.bootstrap.rsplit(":", 1)[-1]
    with contextlib.suppress(OSError, ValueError):
        return int((ROOT / ".kafka" / port / "kafka.pid").read_text().strip())
    return None


def _delete_run_topics(bootstrap: str, run_tag: str) -> None:
    """Drop the run's topics (and Faust's changelogs of its app id): they hold GBs."""
    from streams.kafka_io import admin_client

    with contextlib.suppress(Exception):
        admin = admin_client(bootstrap, quiet=True)
        names = [t for t in admin.list_topics(timeout=10).topics if run_tag in t]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result(60)


def _worker_env(
    settings: Settings, broker: Broker, prefix: str, plan: RunPlan, work: Path
) -> dict[str, str]:
    from streams.workers import worker_env

    env = worker_env(settings, broker.bootstrap, prefix, broker.embedded, work / "traces.jsonl")
    env["PYTHONPATH"] = str(ROOT)
    if plan.probe_every_s:
        env["QTBENCH_MEMPROBE"] = str(work / "probe")
        env["QTBENCH_PROBE_S"] = str(plan.probe_every_s)
    if plan.tracemalloc_frames:
        env["QTBENCH_TRACEMALLOC"] = str(plan.tracemalloc_frames)
    return env


def wait_assigned(proc: Any, port: int, log_path: Path, timeout_s: float = 180.0) -> float:
    """Seconds until the worker's ``/health`` says its consumer holds partitions and its models
    are loaded. (Not the topology suite's probe watermark at event time 0: the merges would
    floor their feedback inputs at 1970 and the loops start from there.)"""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise BenchError(f"worker exited with {proc.returncode}; log {log_path}")
        raw = _get(port, "/health")
        with contextlib.suppress(ValueError, TypeError):
            body = json.loads(raw or b"")
            if body.get("assigned") and body.get("models"):
                return time.perf_counter() - started
        time.sleep(0.5)
    raise BenchError(f"worker not assigned after {timeout_s:.0f} s; log {log_path}")


def run_once(broker: Broker, base: Settings, plan: RunPlan, work: Path) -> dict[str, Any]:
    """Replay, drain and sample on ``broker``; the samples and the run's counts."""
    from streams import kafka_io
    from streams.adapters.market_files import TimeWindow
    from streams.adapters.replay.files import replay_files
    from streams.app import ensure_topics
    from streams.demo import send_end_of_stream
    from streams.workers import WorkerError, WorkerWatch, running_worker

    run_tag = f"memory-{uuid.uuid4().hex[:8]}"
    prefix = f"{run_tag}."
    settings = base.model_copy(
        update={"kafka_bootstrap": broker.bootstrap, "kafka_embedded": broker.embedded}
    )
    run_settings = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(broker.bootstrap, run_settings, keep_forever=True)
    env = _worker_env(settings, broker, prefix, plan, work)
    log_path = work / "worker.log"
    start, end = plan.window
    stop_at = None if plan.max_wall_s is None else time.monotonic() + plan.max_wall_s
    try:
        with running_worker(env, log_path, (WORKER_MODULE,)) as proc:
            port = int(env["QT_WEB_PORT"])
            ready_s = wait_assigned(proc, port, log_path)
            progress = ProgressWatcher(broker.bootstrap, prefix, settings.partitions)
            sampler = Sampler(
                proc.pid, _pid_of(broker), port, plan.every_s, progress, plan.live_samples
            )
            watch = WorkerWatch(proc, port, log_path)
            flow = FlowControl(
                progress, start or first_open_ms(plan.data, plan.symbols),
                int(plan.lead_minutes * MINUTE_MS), watch.check,
                int(plan.warmup_lead_minutes * MINUTE_MS), stop_at,
            )  # fmt: skip
            pacing: dict[str, Any] = (
                {"speed": 1.0, "clock": flow.clock, "sleep": flow.sleep}
                if plan.lead_minutes > 0
                else {}
            )
            stop = threading.Event()
            threads = [
                threading.Thread(target=progress.run, args=(stop,), daemon=True),
                threading.Thread(target=sampler.run, args=(stop,), daemon=True),
            ]
            for thread in threads:
                thread.start()
            sampler.sample()
            t0 = time.perf_counter()
            summary, replay_s, drained_s, stopped = None, None, None, ""
            try:
                summary = replay_files(
                    plan.data,
                    bootstrap=broker.bootstrap,
                    prefix=prefix,
                    symbols=plan.symbols,
                    window=TimeWindow(start, end),
                    options=kafka_io.ProducerOptions(
                        broker.bootstrap, idempotence=not broker.embedded
                    ),
                    partitions=settings.partitions,
                    show_progress=False,
                    **pacing,
                )
                replay_s = time.perf_counter() - t0
                print(f"memory bench: replayed {summary.ticks:,} bars in {replay_s:.0f} s")
                send_end_of_stream(
                    broker.bootstrap, prefix, settings.partitions, summary.last_event_ms or 0
                )
                progress.wait_drained(watch.check, plan.timeout_s, stop_at)
                drained_s = time.perf_counter() - t0
            except StopRun as why:
                stopped = str(why)
                print(f"memory bench: stopped ({stopped})")
            stop.set()
            for thread in threads:
                thread.join(30)
            sampler.sample()
    except WorkerError as exc:
        raise BenchError(f"{broker.kind}: {exc}") from exc
    finally:
        _delete_run_topics(broker.bootstrap, run_tag)
    last = sampler.samples[-1] if sampler.samples else {}
    return {
        "bootstrap": broker.bootstrap,
        "drained": drained_s is not None,
        "stopped": stopped or None,
        "bars_replayed": summary.ticks if summary else last.get("bars", 0),
        "first_event_ms": summary.first_event_ms if summary else flow.start_ms,
        "last_event_ms": summary.last_event_ms if summary else last.get("event_time_ms"),
        "dead_lettered": dict(summary.dead_lettered) if summary else {},
        "ready_s": ready_s,
        "replay_s": replay_s,
        "replay_waited_s": flow.waited_s,
        "lead_minutes": plan.lead_minutes,
        "drained_s": drained_s,
        "records_by_stage": sampler.last_records,
        "samples": sampler.samples,
    }


# --------------------------------------------------------------------------- analysis


def _fit(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of ``y`` against ``x`` (None for fewer than 3 distinct points)."""
    if len(x) < 3 or float(np.ptp(x)) == 0.0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def analyse(
    samples: list[dict[str, Any]], warmup_share: float, bound: float, min_post: int
) -> dict[str, Any]:
    """Warm-up point, post-warm-up slopes and the verdict (module doc)."""
    rows = [s for s in samples if s["rss_mb"] is not None]
    if not rows:
        return {"verdict": "inconclusive", "why": "no RSS samples"}
    total = rows[-1]["events"]
    warm_index = next(
        (i for i, s in enumerate(rows) if s["events"] >= warmup_share * total), len(rows) - 1
    )
    warm, post = rows[warm_index], rows[warm_index:]
    ev = np.array([s["events"] for s in post], dtype=float) / 1e6
    rss = np.array([s["rss_mb"] for s in post], dtype=float)
    timed = [s for s in post if s["event_time_ms"] is not None]
    hours = np.array([s["event_time_ms"] for s in timed], dtype=float) / HOUR_MS
    per_million = _fit(ev, rss)
    per_hour = _fit(hours, np.array([s["rss_mb"] for s in timed], dtype=float))
    post_events = total - warm["events"]
    # Halves of the post-warm-up part: a slope that falls towards zero is still filling up.
    mid = len(post) // 2
    halves = [_fit(ev[:mid], rss[:mid]), _fit(ev[mid:], rss[mid:])] if len(post) >= 6 else []
    # A short run can show growth, not flatness.
    if per_million is not None and per_million > bound:
        verdict, why = "growing", f"slope {per_million:.2f} > {bound:g} MB per million events"
    elif per_million is None or post_events < min_post:
        verdict, why = "inconclusive", f"only {post_events:,} events after the warm-up"
    else:
        verdict, why = "flat", f"slope {per_million:.2f} <= {bound:g} MB per million events"
    return {
        "warmup_share": warmup_share,
        "warmup": {
            k: warm[k] for k in ("t_s", "wall", "events", "bars", "rss_mb", "event_time_ms")
        },
        "start_rss_mb": rows[0]["rss_mb"],
        "end_rss_mb": rows[-1]["rss_mb"],
        "peak_rss_mb": max(s["rss_mb"] for s in rows),
        "peak_hwm_mb": max(s["hwm_mb"] for s in rows),
        "post_warmup_min_mb": float(rss.min()),
        "post_warmup_max_mb": float(rss.max()),
        "post_warmup_events": post_events,
        "post_warmup_event_hours": float(np.ptp(hours)) if len(hours) else 0.0,
        "slope_mb_per_million_events": per_million,
        "slope_mb_per_event_hour": per_hour,
        "slope_mb_per_million_events_halves": halves,
        "bound_mb_per_million_events": bound,
        "min_post_warmup_events": min_post,
        "verdict": verdict,
        "why": why,
    }


def broker_rss(samples: list[dict[str, Any]]) -> dict[str, float] | None:
    """The broker's RSS at the start, end and peak of the run (None when not sampled)."""
    values = [s["broker_rss_mb"] for s in samples if s.get("broker_rss_mb") is not None]
    if not values:
        return None
    return {"start_mb": values[0], "end_mb": values[-1], "peak_mb": max(values)}


# --------------------------------------------------------------------------- tracemalloc, probe


def probe_summary(probe_dir: Path, warm_wall_s: float | None) -> dict[str, Any] | None:
    """State sizes and object counts at the first probe after warm-up and at the last one."""
    path = probe_dir / "probe.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    first = next((r for r in rows if warm_wall_s is None or r["wall_s"] >= warm_wall_s), rows[0])
    last = rows[-1]

    def sizes(row: dict[str, Any]) -> dict[str, int]:
        out = {}
        for stage, s in row["stages"].items():
            out[f"{stage} table bytes"] = s["table_bytes"]
            out[f"{stage} ledgers json"] = s["ledger_json_bytes"]
            for part, n in s["state_json_bytes"].items():
                out[f"{stage}.{part} json"] = n
        return out

    a, b = sizes(first), sizes(last)
    for k, v in first.get("tracer", {}).items():
        a[f"tracer {k}"] = v
    for k, v in last.get("tracer", {}).items():
        b[f"tracer {k}"] = v
    growth = sorted(
        ({"what": k, "after_warmup": a.get(k, 0), "end": v, "growth": v - a.get(k, 0)}
         for k, v in b.items()),
        key=lambda r: -abs(r["growth"]),
    )  # fmt: skip
    types = sorted(
        ({"type": k, "after_warmup": first["gc"].get(k, 0), "end": v,
          "growth": v - first["gc"].get(k, 0)} for k, v in last["gc"].items()),
        key=lambda r: -abs(r["growth"]),
    )  # fmt: skip
    return {
        "probes": len(rows),
        "probe_s_max": max(r["probe_s"] for r in rows),
        "state_growth": growth[:25],
        "object_growth": types[:15],
        "state_end": b,
    }


def tracemalloc_diff(probe_dir: Path, warm_wall_s: float | None, limit: int = 25) -> Any:
    """Top allocation growth (by traceback) between the snapshot after warm-up and the last."""
    import tracemalloc

    snaps = sorted(probe_dir.glob("snap-*.pickle"))
    if len(snaps) < 2:
        return None
    mtimes = [p.stat().st_mtime for p in snaps]
    first_i = next((i for i, m in enumerate(mtimes) if warm_wall_s and m >= warm_wall_s), 0)
    first_i = min(first_i, len(snaps) - 2)
    old = tracemalloc.Snapshot.load(str(snaps[first_i]))
    new = tracemalloc.Snapshot.load(str(snaps[-1]))
    rows = []
    for stat in new.compare_to(old, "traceback")[:limit]:
        rows.append(
            {
                "size_diff_kb": stat.size_diff / 1024,
                "count_diff": stat.count_diff,
                "size_kb": stat.size / 1024,
                "traceback": [f"{f.filename}:{f.lineno}" for f in stat.traceback][-6:],
            }
        )
    return {"from": snaps[first_i].name, "to": snaps[-1].name, "top": rows}


# --------------------------------------------------------------------------- report


def ascii_plot(samples: list[dict[str, Any]], width: int = 64, height: int = 14) -> str:
    """RSS (y, MB) against events (x, millions) as text."""
    pts = [(s["events"] / 1e6, s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    if len(pts) < 2:
        return "(not enough samples)"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs) or 1.0, min(ys), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1
    grid = [[" "] * width for _ in range(height)]
    for x, y in pts:
        col = int((x - x0) / ((x1 - x0) or 1) * (width - 1))
        row = height - 1 - int((y - y0) / (y1 - y0) * (height - 1))
        grid[row][col] = "*"
    lines = []
    for i, row in enumerate(grid):
        label = y1 - (y1 - y0) * i / (height - 1)
        lines.append(f"{label:8.1f} |{''.join(row)}")
    lines.append(" " * 9 + "+" + "-" * width)
    lines.append(" " * 10 + f"{x0:<.2f}" + f"{'M events':^{width - 12}}" + f"{x1:.2f}")
    return "\n".join(lines)


def png_plot(res: dict[str, Any], path: Path) -> bool:
    """RSS against events (and the broker's), the warm-up line and the fit; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples, a = res["samples"], res["analysis"]
    rows = [s for s in samples if s["rss_mb"] is not None]
    ev = np.array([s["events"] for s in rows]) / 1e6
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(ev, [s["rss_mb"] for s in rows], label="worker VmRSS", lw=1.2)
    broker = [s.get("broker_rss_mb") for s in rows]
    if any(b is not None for b in broker):
        ax.plot(ev, [np.nan if b is None else b for b in broker], label="broker VmRSS", lw=1)
    if "warmup" in a:
        w = a["warmup"]["events"] / 1e6
        ax.axvline(w, color="grey", ls="--", lw=1, label="end of warm-up")
        if a.get("slope_mb_per_million_events") is not None:
            xs = ev[ev >= w]
            ys = np.array([s["rss_mb"] for s in rows])[ev >= w]
            k, c = np.polyfit(xs, ys, 1)
            ax.plot(xs, k * xs + c, color="black", lw=1, label=f"fit {k:+.2f} MB / M events")
    ax.set_xlabel("events handled (millions, qt_stage_records_total)")
    ax.set_ylabel("MB")
    ax.set_title(f"{res['broker']}: {res['bars_replayed']:,} bars, verdict {a['verdict']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _when(ms: int | None) -> str:
    from streams.adapters.market_files import format_epoch_ms

    return "n/a" if ms is None else format_epoch_ms(int(ms))


def _table(samples: list[dict[str, Any]], rows: int = 24) -> list[str]:
    step = max(1, math.ceil(len(samples) / rows))
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    out = [
        "| wall s | events | bars | event time reached (UTC) | worker RSS MB | broker RSS MB "
        "| load |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for s in picked:
        broker = "n/a" if s.get("broker_rss_mb") is None else f"{s['broker_rss_mb']:.0f}"
        rss = "n/a" if s["rss_mb"] is None else f"{s['rss_mb']:.1f}"
        out.append(
            f"| {s['t_s']:.0f} | {s['events']:,} | {s['bars']:,} | "
            f"{_when(s['event_time_ms'])} | {rss} | {broker} | {s['load_1m']:.1f} |"
        )
    return out


def _f(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _run_state(res: dict[str, Any]) -> str:
    if res["drained"]:
        return f"replay {res['replay_s']:.0f} s, drained after {res['drained_s']:.0f} s"
    return f"**not drained: stopped after {res['samples'][-1]['t_s']:.0f} s ({res['stopped']})**"


def _growth_row(label: str, r: dict[str, Any]) -> str:
    return f"| {label} | {r['after_warmup']:,} | {r['end']:,} | {r['growth']:+,} |"


def markdown(res: dict[str, Any], png: str | None) -> str:
    """``memory.md``: the figures of ``memory.json``."""
    a = res["analysis"]
    events = res["samples"][-1]["events"] if res["samples"] else 0
    lines = [
        f"# Memory benchmark ({res['broker']} broker)",
        "",
        f"Data: `{res['data']}` ({res['symbols_label']}), {res['bars_replayed']:,} bars from "
        f"{_when(res['first_event_ms'])} to {_when(res['last_event_ms'])}; "
        f"{events:,} events handled (sum of `qt_stage_records_total`, watermarks excluded); "
        f"{res['partitions']} partitions, confidence gate {res['min_confidence']:.0%}, state "
        f"flush every {res['state_flush_ms'] / 1000:g} s, replay lead {res['lead_minutes']:g} "
        f"min; {_run_state(res)}; samples every "
        f"{res['every_s']:g} s; {res['machine']['cpus']} CPUs shared with other work (1-minute "
        f"load {res['machine']['load_min']:.1f} to {res['machine']['load_max']:.1f}). Generated "
        "by `python -m tests.benchmarks memory`; method in the suite's docstring.",
        "",
    ]
    if "warmup" in a:
        w = a["warmup"]
        lines += [
            f"**Verdict: {a['verdict']}** ({a['why']}; bound {a['bound_mb_per_million_events']:g}"
            f" MB per million events after at least {a['min_post_warmup_events']:,} "
            "post-warm-up events).",
            "",
            "| | |",
            "|---|---:|",
            f"| worker RSS at start (ready, before the replay) | {a['start_rss_mb']:.1f} MB |",
            f"| end of warm-up (first {a['warmup_share']:.0%} of events): events / bars | "
            f"{w['events']:,} / {w['bars']:,} |",
            f"| end of warm-up: event time, wall time | {_when(w['event_time_ms'])}, "
            f"{w['t_s']:.0f} s |",
            f"| worker RSS at end of warm-up | {w['rss_mb']:.1f} MB |",
            f"| worker RSS after warm-up: min / max / at the end | "
            f"{a['post_warmup_min_mb']:.1f} / {a['post_warmup_max_mb']:.1f} / "
            f"{a['end_rss_mb']:.1f} MB |",
            f"| worker peak (VmHWM) | {a['peak_hwm_mb']:.1f} MB |",
            f"| after warm-up: events, event time | {a['post_warmup_events']:,}, "
            f"{a['post_warmup_event_hours']:.0f} h |",
            f"| **slope after warm-up** | **{_f(a['slope_mb_per_million_events'])} MB per million"
            f" events**, {_f(a['slope_mb_per_event_hour'], '.4f')} MB per hour of event time |",
            "| slope, first / second half of the post-warm-up part | "
            + " / ".join(_f(h) for h in a["slope_mb_per_million_events_halves"])
            + " MB per million events |",
        ]
        if res.get("broker_rss"):
            b = res["broker_rss"]
            lines.append(
                f"| broker RSS: start / end / peak | {b['start_mb']:.0f} / {b['end_mb']:.0f} / "
                f"{b['peak_mb']:.0f} MB |"
            )
        lines.append("")
    else:
        lines += [f"**Verdict: {a['verdict']}** ({a.get('why')})", ""]
    if png:
        lines += [f"![worker RSS over events]({png})", ""]
    lines += ["```", ascii_plot(res["samples"]), "```", "", "## RSS over time", ""]
    lines += [*_table(res["samples"]), ""]
    lines += ["## Records handled per stage", "", "| stage | topic | records |", "|---|---|---:|"]
    for stage, topics in sorted(res["records_by_stage"].items()):
        for topic, n in sorted(topics.items()):
            lines.append(f"| {stage} | `{topic}` | {n:,.0f} |")
    lines.append("")
    probe = res.get("probe")
    if probe:
        lines += [
            "## State sizes (probe): after warm-up -> end",
            "",
            "| what | after warm-up | end | growth |",
            "|---|---:|---:|---:|",
        ]
        for r in probe["state_growth"][:15]:
            lines.append(_growth_row(r["what"], r))
        lines += ["", "| object type | after warm-up | end | growth |", "|---|---:|---:|---:|"]
        for r in probe["object_growth"]:
            lines.append(_growth_row(r["type"], r))
        lines.append("")
    tm = res.get("tracemalloc")
    if tm:
        lines += [f"## tracemalloc growth ({tm['from']} -> {tm['to']})", "",
                  "| KB | blocks | where (innermost last) |", "|---:|---:|---|"]  # fmt: skip
        for r in tm["top"][:15]:
            where = " <- ".join(reversed(r["traceback"][-3:]))
            lines.append(f"| {r['size_diff_kb']:+,.0f} | {r['count_diff']:+,} | `{where}` |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def bench(kind: str, settings: Settings, plan: RunPlan, args: argparse.Namespace) -> dict[str, Any]:
    """One broker's run and its analysis."""
    makers = {"embedded": embedded_broker, "kafka": kafka_broker}
    with tempfile.TemporaryDirectory(prefix="qt-bench-memory-") as tmp:
        work = Path(tmp)
        with makers[kind]() as broker:
            if broker is None:
                raise BenchError(f"no {kind} broker: set QT_KAFKA_BOOTSTRAP or install Java")
            print(f"memory bench: {kind} at {broker.bootstrap}", flush=True)
            run = run_once(broker, settings, plan, work)
        samples = run["samples"]
        analysis = analyse(samples, args.warmup_share, args.bound_mb_per_million,
                           args.min_post_warmup_events)  # fmt: skip
        warm_wall = analysis["warmup"]["wall"] if "warmup" in analysis else None
        extra: dict[str, Any] = {}
        if plan.probe_every_s:
            extra["probe"] = probe_summary(work / "probe", warm_wall)
        if plan.tracemalloc_frames:
            extra["tracemalloc"] = tracemalloc_diff(work / "probe", warm_wall)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in ("worker.log", "probe/probe.jsonl"):
                if (work / name).exists():
                    (args.keep_logs / f"{kind}-{Path(name).name}").write_bytes(
                        (work / name).read_bytes()
                    )
    loads = [s["load_1m"] for s in samples] or [os.getloadavg()[0]]
    return {
        "suite": "memory",
        "broker": kind,
        "data": str(plan.data),
        "symbols_label": (", ".join(plan.symbols) if plan.symbols else "all symbols"),
        "window": list(plan.window),
        "partitions": settings.partitions,
        "min_confidence": settings.supervisor.min_confidence,
        "feedback_lag_ms": settings.feedback_lag_ms,
        "state_flush_ms": settings.state_flush_ms,
        "every_s": plan.every_s,
        **{k: v for k, v in run.items() if k != "samples"},
        "analysis": analysis,
        "broker_rss": broker_rss(samples),
        **extra,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_min": min(loads),
            "load_max": max(loads),
        },
        "samples": samples,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The suite's options (module doc)."""
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks memory")
    p.add_argument("--brokers", default="kafka", help="comma list: kafka,embedded")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--symbols", default=None, help="a count (first N by name) or A,B,C")
    p.add_argument("--days", type=float, default=None, help="days of data from the first bar")
    p.add_argument("--max-bars", type=int, default=None, help="about this many bars in all")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--min-confidence", type=float, default=0.5)
    p.add_argument(
        "--lead-minutes", type=float, default=30.0,
        help="replay at most this far (event time) ahead of the topology; 0 = unpaced backlog",
    )  # fmt: skip
    p.add_argument(
        "--warmup-lead-minutes", type=float, default=150.0,
        help="how far the replay may go before the topology announced any progress",
    )  # fmt: skip
    p.add_argument(
        "--max-wall", type=float, default=MAX_WALL_S, metavar="S",
        help="stop after S seconds and report what was measured, not drained (0: no limit)",
    )  # fmt: skip
    p.add_argument(
        "--state-flush-ms", type=int, default=None,
        help="QT_STATE_FLUSH_MS of the worker (default: the settings', 1 s)",
    )  # fmt: skip
    p.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup-share", type=float, default=0.25)
    p.add_argument("--bound-mb-per-million", type=float, default=2.0)
    p.add_argument("--min-post-warmup-events", type=int, default=500_000)
    p.add_argument("--probe", action="store_true", help="log state sizes and object counts")
    p.add_argument("--probe-every", type=float, default=300.0)
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    p.add_argument("--timeout", type=float, default=DRAIN_TIMEOUT_S, help="drain timeout, s")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep-logs", type=Path, default=None, help="copy worker.log, probe here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/memory.json``, ``memory.md`` and ``memory.png``."""
    args = parse_args(argv)
    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    if set(kinds) - {"embedded", "kafka"}:
        print(f"unknown broker kind(s) in {args.brokers!r}", file=sys.stderr)
        return 2
    symbols = select(args.data, args.symbols)
    plan = RunPlan(
        data=args.data,
        symbols=symbols,
        window=window_of(args.data, symbols, args.days, args.max_bars),
        every_s=args.every,
        probe_every_s=args.probe_every if (args.probe or args.tracemalloc) else None,
        tracemalloc_frames=args.tracemalloc,
        timeout_s=args.timeout,
        lead_minutes=args.lead_minutes,
        max_wall_s=args.max_wall or None,
        warmup_lead_minutes=args.warmup_lead_minutes,
        live_samples=(args.keep_logs / "samples.jsonl") if args.keep_logs else None,
    )
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    # SIGTERM (kill <pid>) unwinds like Ctrl-C: the worker is stopped, the run's topics dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    update: dict[str, Any] = {"partitions": args.partitions}
    if args.state_flush_ms:
        update["state_flush_ms"] = args.state_flush_ms
    settings = bench_settings(args.min_confidence).model_copy(update=update)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for kind in kinds:
        try:
            res = bench(kind, settings, plan, args)
        except BenchError as exc:
            print(f"memory bench failed: {exc}", file=sys.stderr)
            status = 1
            continue
        stem = "memory" if kind == "kafka" else f"memory-{kind}"
        png = f"{stem}.png" if png_plot(res, args.out / f"{stem}.png") else None
        (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        (args.out / f"{stem}.md").write_text(markdown(res, png), encoding="utf-8")
        print(markdown(res, png))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
