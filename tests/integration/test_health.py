"""Health that tells the truth, on a real worker over a real Kafka.

The worker is this module run as a subprocess (``python -m tests.integration.test_health``):
the real topology app of ``streams.app.build_app`` plus one test-only page that stops an
agent, the way a hung stage stops (the process and its web server keep answering). The test
replays real data, stops the ensemble mid-run, replays more, and expects ``/ready`` to turn
503 naming the stalled stage within ``QT_STALL_AFTER_S`` (plus a refresh period), the
``qt_stage_stalled`` metric to fire for it, and ``/health`` to stay 200 (no agent crashed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings, settings_env
from streams.workers import running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STALL_AFTER_S = 3.0
#: Three hours: features warm up after 128 bars, then the ensemble scores.
FIRST = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-21T03:00"))
SECOND = TimeWindow(parse_time_bound("2025-05-21T03:00"), parse_time_bound("2025-05-21T05:00"))


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET path`` on the worker's web port (errors included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, proc: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def worker(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from streams.app import ensure_topics
    from streams.brokers.embedded import free_port

    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=unique_prefix,
        partitions=1,
        stall_after_s=STALL_AFTER_S,
        runs_dir=tmp_path,
        web_port=free_port(),
    )
    ensure_topics(kafka_bootstrap, settings, keep_forever=True)  # old event-time stamps
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(settings_env(settings))
    with running_worker(env, tmp_path / "worker.log", ("tests.integration.test_health",)) as proc:
        yield {"settings": settings, "proc": proc, "port": settings.web_port, "log": tmp_path}


def replay(settings: Settings, window: TimeWindow) -> None:
    from streams.adapters.replay.files import replay_files
    from streams.demo import SAMPLE_DATA
    from streams.kafka_io import ProducerOptions

    assert settings.kafka_bootstrap
    replay_files(
        SAMPLE_DATA, bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix,
        window=window, options=ProducerOptions(settings.kafka_bootstrap),
        partitions=settings.partitions, show_progress=False,
    )  # fmt: skip


def test_a_stopped_stage_turns_ready_unhealthy_while_the_process_answers(
    worker: dict[str, Any],
) -> None:
    port, proc, settings = worker["port"], worker["proc"], worker["settings"]
    wait_for("/ready 200", lambda: get(port, "/ready")[0] == 200, 120, proc)
    ready = json.loads(get(port, "/ready")[1])
    assert ready["models"] and ready["assigned"] is True

    replay(settings, FIRST)

    def ensemble_scored() -> bool:
        text = get(port, "/metrics")[1]
        return (sample(text, "qt_stage_records_total", stage="ensemble") or 0) > 0

    wait_for("the ensemble to score", ensemble_scored, 120, proc)
    assert get(port, "/ready")[0] == 200, "a working topology is ready"

    status, body = get(port, "/test/stop/ensemble")
    assert status == 200, body
    replay(settings, SECOND)  # input keeps coming; the ensemble no longer takes it
    pending_from = time.monotonic()

    def not_ready() -> dict[str, Any] | None:
        status, body = get(port, "/ready")
        return json.loads(body) if status == 503 else None

    verdict = wait_for("/ready 503", not_ready, 60, proc)
    took = time.monotonic() - pending_from
    assert any(r.startswith("ensemble stalled") for r in verdict["reasons"]), verdict["reasons"]
    assert verdict["stages"]["ensemble"]["stalled"] is True
    assert verdict["stages"]["ensemble"]["pending"] > 0
    assert took < STALL_AFTER_S + 30, "stall detection is bounded by the configured time"

    text = get(port, "/metrics")[1]
    assert sample(text, "qt_stage_stalled", stage="ensemble") == 1.0
    assert (sample(text, "qt_consumer_lag", topic=f"{settings.topic_prefix}market.features",
                   partition="0") or 0) > 0  # fmt: skip
    status, body = get(port, "/health")
    assert status == 200, body  # stalled is not crashed: the process is alive and answers
    assert json.loads(body)["stages"]["ensemble"]["crashed"] is None
    assert proc.poll() is None


def _worker_main() -> None:  # pragma: no cover - runs in the subprocess
    import faust

    from streams.app import build_app
    from streams.config import get_settings

    settings = get_settings()
    assert settings.kafka_bootstrap
    app = build_app(settings, settings.kafka_bootstrap, embedded=False)

    @app.page("/test/stop/{stage}")
    async def stop_agent(view: Any, request: Any, stage: str) -> Any:
        agent = app.agents[stage]
        await agent.stop()
        return view.json({"stopped": stage})

    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    sys.argv = sys.argv[:1]
    _worker_main()
