"""A Faust table survives a worker restart: its state comes back from the changelog.

The counter app (tests/integration/apps/counter.py) counts real Binance klines per symbol in a
table. A worker subprocess processes the first half, is stopped (SIGTERM: clean shutdown;
SIGKILL: no commit, no flush), and a new worker with an empty data directory and an in-memory
store must rebuild the table from the changelog, then count the second half. The published
totals must equal the totals computed here from the same files, exactly.

On the embedded broker this needs the B1 workaround (Tansu's ListOffsets answers short, so an
unpatched Faust stops recovery early and the totals come out low).

Input is produced once a worker is ready, so this test is about the table alone. Input that
arrives during start-up and recovery (which unpatched Faust 0.15.3 can lose, faust-streaming
#596) is tested by test_startup_recovery.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.integration.apps.harness import (
    FaustWorker,
    Kline,
    TopicWatcher,
    interleave,
    produce_klines,
    read_klines,
)
from tests.kafka_topics import create_topics

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ROWS_PER_HALF = 150
WAIT_S = 180.0
STOP_SIGNALS = [signal.SIGTERM, signal.SIGKILL]


def expected_totals(klines: list[Kline]) -> dict[str, dict[str, float]]:
    """Count and volume per symbol, summed in feed order exactly as the agent does."""
    out: dict[str, dict[str, float]] = {}
    for k in klines:
        state = out.setdefault(k.symbol, {"n": 0, "volume": 0.0})
        state["n"] += 1
        state["volume"] += k.volume
    return out


def counted(expected: Mapping[str, Mapping[str, float]]) -> Callable[[Mapping], bool]:
    return lambda latest: all(latest.get(s, {}).get("n", 0) >= e["n"] for s, e in expected.items())


def half_counted(expected: Mapping[str, Mapping[str, float]]) -> Callable[[Mapping], bool]:
    return lambda latest: (
        sum(v.get("n", 0) for v in latest.values()) >= sum(e["n"] for e in expected.values()) // 2
    )


def run_restart_scenario(
    bootstrap: str, *, embedded: bool, prefix: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    series = [read_klines(s, 2 * ROWS_PER_HALF) for s in SYMBOLS]
    first = interleave(*(s[:ROWS_PER_HALF] for s in series))
    second = interleave(*(s[ROWS_PER_HALF:] for s in series))
    in_topic, out_topic = f"{prefix}klines", f"{prefix}totals"
    create_topics(bootstrap, [in_topic], partitions=2)
    create_topics(bootstrap, [out_topic], partitions=1)

    def worker(n: int) -> FaustWorker:
        return FaustWorker(
            "tests.integration.apps.counter",
            bootstrap=bootstrap,
            embedded=embedded,
            prefix=prefix,
            datadir=tmp_path / f"data-{n}",  # a fresh store: state must come from Kafka
            log_path=tmp_path / f"worker-{n}.log",
        )

    watcher = TopicWatcher(bootstrap, out_topic)
    w1, w2 = worker(1), worker(2)
    try:
        # Input is produced once the worker is ready (see the module docstring).
        w1.start()
        w1.wait_ready()
        produce_klines(bootstrap, in_topic, first)
        # SIGTERM after everything was counted; SIGKILL in the middle of the stream.
        first_done = counted(expected_totals(first))
        first_half = half_counted(expected_totals(first))
        until = first_done if stop_signal == signal.SIGTERM else first_half
        watcher.wait_until(until, timeout_s=WAIT_S, worker=w1)
        w1.stop(stop_signal)

        w2.start()
        w2.wait_ready()
        produce_klines(bootstrap, in_topic, second)
        want = expected_totals(first + second)
        watcher.wait_until(counted(want), timeout_s=WAIT_S, worker=w2)
        watcher.poll(2.0)  # anything beyond the totals (double counting) would show up now
    finally:
        w1.stop(signal.SIGKILL)
        w2.stop()
        watcher.close()

    got = {s: {"n": v["n"], "volume": v["volume"]} for s, v in watcher.latest.items()}
    assert got == want, f"worker 2 log:\n{w2.tail()}"


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", STOP_SIGNALS, ids=["sigterm", "sigkill"])
def test_table_recovers_from_changelog_on_kafka(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    run_restart_scenario(
        kafka_bootstrap,
        embedded=False,
        prefix=unique_prefix,
        tmp_path=tmp_path,
        stop_signal=stop_signal,
    )


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", STOP_SIGNALS, ids=["sigterm", "sigkill"])
def test_table_recovers_from_changelog_on_embedded_broker(
    embedded_bootstrap: str, unique_prefix: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    run_restart_scenario(
        embedded_bootstrap,
        embedded=True,
        prefix=unique_prefix,
        tmp_path=tmp_path,
        stop_signal=stop_signal,
    )
