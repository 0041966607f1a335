"""The topology's worker processes: start them, watch them, read their metrics.

``quantum-trader demo`` (and the benchmarks and tests that run the topology) start Faust workers
of ``streams.app`` as subprocesses, watched while the caller waits on the
topology: a worker that exits or a stage that crashes ends the wait within about a second, with
the error and the worker's log (:class:`WorkerWatch`, ``/health`` of the worker's web port).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.brokers.embedded import free_port
from streams.config import PROJECT_ROOT, Settings, settings_env
from streams.topics import topic_name
from streams.topology import STAGES, partitions_of

#: ``python -m`` arguments of a worker of the whole topology.
WORKER_COMMAND = ("streams.app", "--loglevel", "warning")


class WorkerError(RuntimeError):
    """A worker died, a stage crashed, or the workers never took their partitions."""


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


def stalled_stages(body: dict[str, Any]) -> dict[str, str]:
    """``{stage: what}`` of every stalled stage in a ``/health`` body (pending, no progress)."""
    stages = body.get("stages") or {}
    out = {}
    for name, stage in stages.items():
        if isinstance(stage, dict) and stage.get("stalled"):
            quiet = stage.get("last_progress_s_ago")
            since = "never progressed" if quiet is None else f"no progress for {quiet:.0f} s"
            out[name] = f"{stage.get('pending')} pending, {since}"
    return out


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
    #: The stalled stages the last ``/health`` answer named (see :func:`stalled_stages`).
    stalled: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`WorkerError` (with the error and the log's path) if the worker failed."""
        if self.worker.poll() is not None:
            raise WorkerError(
                f"the worker exited with code {self.worker.returncode}; worker log: "
                f"{self.log_path}; it ends:\n{_log_tail(self.log_path)}"
            )
        now = time.monotonic()
        if now < self._next_s:
            return
        self._next_s = now + self.every_s
        health = worker_health(self.port)
        if health is not None:
            self.stalled = stalled_stages(health[1])
        if health is None or health[0] == 200:
            return
        crashed = crashed_stages(health[1])
        if crashed:
            what = "; ".join(f"stage {name} crashed: {error}" for name, error in crashed.items())
            raise WorkerError(
                f"{what}; worker log: {self.log_path}; it ends:\n{_log_tail(self.log_path)}"
            )


def input_partitions(prefix: str, partitions: int) -> set[str]:
    """``topic/partition`` of every partition some stage of the topology reads (broker names)."""
    return {
        f"{topic_name(topic, prefix)}/{p}"
        for stage in STAGES
        for topic in stage.input_topics
        for p in range(partitions_of(topic, partitions))
    }


@dataclass
class Fleet:
    """The workers of one run, watched together; :meth:`join` starts one more.

    Made by :func:`running_fleet`, which stops every worker (also those that joined) at the
    end of its block. ``spawn(n)`` starts the n-th worker (0-based) and returns its watch.
    """

    spawn: Callable[[int], WorkerWatch]
    watches: list[WorkerWatch] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        """The first worker's log (the others sit next to it)."""
        return self.watches[0].log_path

    @property
    def port(self) -> int:
        """The first worker's web port."""
        return self.watches[0].port

    def join(self) -> WorkerWatch:
        """Start one more worker of the same run (a rebalance follows)."""
        watch = self.spawn(len(self.watches))
        self.watches.append(watch)
        return watch

    def check(self) -> None:
        """Raise :class:`WorkerError` if any worker died or any stage crashed."""
        for watch in self.watches:
            watch.check()

    @property
    def stalled(self) -> dict[str, str]:
        """The stalled stages of every worker, as their last ``/health`` answers named them."""
        return {name: what for w in self.watches for name, what in w.stalled.items()}

    def wait_until_assigned(self, expected: set[str], timeout_s: float) -> None:
        """Block until the workers hold every partition of ``expected`` between them, each
        exactly once (the group has settled), and each worker holds some.

        Only then is input produced: no record arrives while the group is still rebalancing.
        """
        deadline = time.monotonic() + timeout_s
        held: list[set[str]] = []
        while True:
            self.check()
            bodies = [worker_health(w.port) for w in self.watches]
            if all(b is not None for b in bodies):
                held = [set(b[1].get("assignment") or ()) & expected for b in bodies if b]
                if all(held) and sum(map(len, held)) == len(expected) == len(set().union(*held)):
                    return
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"{len(self.watches)} worker(s) did not split the topology's "
                    f"{len(expected)} input partitions within {timeout_s:.0f} s (held: "
                    f"{[len(h) for h in held] or 'no answer'}); worker log: {self.log_path}"
                )
            time.sleep(0.5)


@contextlib.contextmanager
def running_fleet(
    env: Callable[[], dict[str, str]],
    log_dir: Path,
    workers: int = 1,
    command: tuple[str, ...] = WORKER_COMMAND,
) -> Iterator[Fleet]:
    """``workers`` worker processes of one run for the block (each its own env from ``env()``,
    i.e. its own web port); logs ``worker.log``, ``worker-2.log``, ... in ``log_dir``."""
    with contextlib.ExitStack() as stack:

        def spawn(n: int) -> WorkerWatch:
            worker_env_n = env()
            log = log_dir / ("worker.log" if n == 0 else f"worker-{n + 1}.log")
            proc = stack.enter_context(running_worker(worker_env_n, log, command))
            return WorkerWatch(proc, int(worker_env_n["QT_WEB_PORT"]), log)

        fleet = Fleet(spawn)
        for _ in range(workers):
            fleet.join()
        yield fleet


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
