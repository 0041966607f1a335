"""The demo stops within seconds of a crashed stage or a dead worker, and says why.

Real Kafka, the real worker of the whole topology (``tests.integration.apps.crashing_worker``:
the stock worker with one stage made to fail outside any record's handling, or to die by
SIGKILL), the real demo. Without the watch, the demo would wait for its timeout (10 minutes
here) with the topology stuck.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.demo import DemoPlan, run_demo
from streams.workers import WorkerError

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-21T06:00"))
HARNESS = ("tests.integration.apps.crashing_worker",)


@pytest.mark.parametrize(("mode", "expected"), [
    ("raise", "stage risk crashed: HarnessCrash: risk failed after 20 batches"),
    ("exit", "the worker exited with code -9"),
])  # fmt: skip
def test_the_demo_stops_within_seconds_with_the_error_and_the_log(
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    expected: str,
) -> None:
    mark = tmp_path / "crashed_at"
    monkeypatch.setenv("QTTEST_CRASH_STAGE", "risk")
    monkeypatch.setenv("QTTEST_CRASH_AFTER", "20")
    monkeypatch.setenv("QTTEST_CRASH_MODE", mode)
    monkeypatch.setenv("QTTEST_CRASH_MARK", str(mark))
    settings = Settings(kafka_bootstrap=kafka_bootstrap, partitions=2, runs_dir=tmp_path)
    plan = DemoPlan(window=WINDOW, run_dir=tmp_path / "run", timeout_s=600,
                    worker_command=HARNESS)  # fmt: skip

    with pytest.raises(WorkerError) as caught:
        run_demo(settings, plan)
    noticed = time.time()

    assert mark.exists(), f"the harness never failed; the demo said: {caught.value}"
    took = noticed - float(mark.read_text())
    message = str(caught.value)
    assert expected in message
    assert str(tmp_path / "run" / "worker.log") in message  # where to look
    assert took < 10.0, f"noticed {took:.1f} s after the failure"
