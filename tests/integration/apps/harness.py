"""Run Faust workers as real subprocesses and watch topics, for integration tests."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("QTTEST_SHARED_DATA", ROOT.parent / "shared" / "data"))


#: --without-web: the CLI would override the apps' web_enabled=False and bind port 6066, which
#: two workers (or two test sessions) cannot share.
WORKER_ARGS = ("--without-web", "-l", "info")


class WorkerError(RuntimeError):
    """A worker subprocess died, or its output never reached the expected state."""


@dataclass(frozen=True)
class Kline:
    """One real 1-minute kline (only what the tests need)."""

    symbol: str
    open_time_ms: int
    volume: float


def read_klines(symbol: str, rows: int, folder: str = "binance/spot_1m") -> list[Kline]:
    """The first ``rows`` klines of ``symbol`` from the shared real Binance data."""
    path = SHARED_DATA / folder / f"{symbol}.csv.gz"
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip().split(",")
        t_col, v_col = header.index("open_time_ms"), header.index("volume")
        out = []
        for line, _ in zip(handle, range(rows), strict=False):
            cells = line.strip().split(",")
            out.append(Kline(symbol, int(cells[t_col]), float(cells[v_col])))
    return out


def interleave(*series: list[Kline]) -> list[Kline]:
    """Klines of several symbols in event-time order (ties by symbol), as a feed sends them."""
    return sorted((k for s in series for k in s), key=lambda k: (k.open_time_ms, k.symbol))


def produce_klines(bootstrap: str, topic: str, klines: Iterable[Kline]) -> int:
    """Send klines keyed by symbol with JSON values; returns how many were acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    errors: list[str] = []
    sent = 0

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for k in klines:
        value = json.dumps({"open_time_ms": k.open_time_ms, "volume": k.volume})
        producer.produce(
            topic, key=k.symbol.encode(), value=value.encode(), on_delivery=on_delivery
        )
        sent += 1
    producer.flush(30)
    if errors:
        raise WorkerError(f"{len(errors)} of {sent} klines not delivered to {topic}: {errors[:3]}")
    return sent


class TrickleProducer:
    """Produces klines in small acknowledged chunks from a thread until stopped or out of data.

    For tests that need input to keep arriving while something else happens (a worker
    starting, recovering, rebalancing). :attr:`sent` is exactly what the broker acknowledged,
    in order, once :meth:`stop` returned.
    """

    def __init__(
        self, bootstrap: str, topic: str, klines: list[Kline], *, chunk: int, every_s: float
    ) -> None:
        import threading

        self.sent: list[Kline] = []
        self._args = (bootstrap, topic, klines, chunk, every_s)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"trickle-{topic}", daemon=True)

    def start(self) -> None:
        """Start producing."""
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> list[Kline]:
        """Stop after the chunk in flight; returns what was sent. Raises what the thread hit."""
        self._stop.set()
        if self._thread.ident is None:  # never started
            return self.sent
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise WorkerError(f"producer thread still running after {timeout_s} s")
        if self._error is not None:
            raise WorkerError(f"producer failed after {len(self.sent)} klines") from self._error
        return self.sent

    def _run(self) -> None:
        bootstrap, topic, klines, chunk, every_s = self._args
        try:
            for start in range(0, len(klines), chunk):
                if self._stop.is_set():
                    return
                part = klines[start : start + chunk]
                produce_klines(bootstrap, topic, part)
                self.sent.extend(part)
                self._stop.wait(every_s)
        except BaseException as exc:  # reported by stop()
            self._error = exc


class FaustWorker:
    """``python -m faust -A <module> worker`` with the QTTEST_* environment of one test."""

    def __init__(
        self,
        module: str,
        *,
        bootstrap: str,
        embedded: bool,
        prefix: str,
        datadir: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.module = module
        self.log_path = log_path
        self._env = {
            **(env or {}),
            **{k: v for k, v in os.environ.items() if not k.startswith("QT_")},
            "QTTEST_BOOTSTRAP": bootstrap,
            "QTTEST_EMBEDDED": "1" if embedded else "0",
            "QTTEST_PREFIX": prefix,
            "QTTEST_DATADIR": str(datadir),
            "PYTHONUNBUFFERED": "1",
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker process (output appended to ``log_path``)."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", self.module, "worker", *WORKER_ARGS],
                cwd=ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until Faust logs that recovery is done and streams are flowing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if "Worker ready" in self.tail(max_chars=10**7):
                return
            time.sleep(0.2)
        raise WorkerError(f"worker {self.module} not ready after {timeout_s} s:\n{self.tail()}")

    def check_alive(self) -> None:
        """Raise with the log tail if the worker has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            raise WorkerError(f"worker {self.module} exited {code}:\n{self.tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit; SIGKILL after ``timeout_s``. Returns the code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        return int(proc.returncode)

    def tail(self, max_chars: int = 4000) -> str:
        """The end of the worker's log."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")[-max_chars:]
        return "(no log)"


class TopicWatcher:
    """Reads a topic from the beginning and keeps the latest JSON value per key.

    Partitions are assigned, not subscribed: no consumer group, so no JoinGroup wait (which
    Tansu holds for half the session timeout). The topic must exist.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self.latest: dict[str, dict[str, float]] = {}
        self.count = 0
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"watch-{topic}",  # required by librdkafka, never joined
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )

    def poll(self, seconds: float) -> None:
        """Consume whatever arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            self.count += 1
            self.latest[msg.key().decode()] = json.loads(msg.value())

    def wait_until(
        self,
        done: Callable[[Mapping[str, dict[str, float]]], bool],
        *,
        timeout_s: float,
        worker: FaustWorker | None = None,
    ) -> None:
        """Poll until ``done(latest)``; fail fast when the worker dies, loudly on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.5)
            if done(self.latest):
                return
            if worker is not None:
                worker.check_alive()
        tail = worker.tail() if worker is not None else ""
        raise WorkerError(f"{self.topic} never reached the expected state: {self.latest}\n{tail}")

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def roundtrip_with_headers(bootstrap: str, topic: str, count: int = 50) -> list[tuple]:
    """Produce ``count`` keyed records with a W3C traceparent header, consume them back.

    Returns ``(key, value, headers)`` tuples as consumed, in partition order.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        trace = f"00-{i:032x}-{i:016x}-01"
        producer.produce(
            topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("traceparent", trace)]
        )
    if producer.flush(30) != 0:
        raise WorkerError(f"records still unsent to {topic} after 30 s")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rt-{topic}"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[tuple] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value(), msg.headers()))
    consumer.close()
    return got


def expected_roundtrip(count: int = 50) -> list[tuple]:
    """What :func:`roundtrip_with_headers` must return for ``count`` records."""
    return [
        (f"k{i}".encode(), f"v{i}".encode(), [("traceparent", f"00-{i:032x}-{i:016x}-01".encode())])
        for i in range(count)
    ]
