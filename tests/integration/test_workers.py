"""Two Faust workers of the topology on a real Kafka trade exactly as one (and as the runner).

The workers split the per-symbol partitions between them; the portfolio-wide stages (risk,
learning) read only single-partition topics (risk's bars come from ``market.bars``), and Faust
co-assigns topics of one partition count, so whichever worker holds them sees the whole
portfolio. The replay starts once the two hold every input partition of the topology between
them, each exactly once (``Fleet.wait_until_assigned``).

The harness is the demo's (``DemoPlan(workers=N)``); ``DemoPlan.with_workers`` hands a test the
running :class:`~streams.workers.Fleet` mid-run, where ``fleet.join()`` starts another worker
(the rebalance test: a second worker joins mid-run and takes partitions, with their stage
state, over from the first).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings, SupervisorPolicy
from streams.demo import SAMPLE_DATA, DemoPlan, run_demo
from streams.workers import Fleet

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))
COMPARED = ("signals_by_action", "vetoes_by_reason", "decisions", "rejections_by_rule", "fills")


def settings_for(bootstrap: str, runs_dir: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        partitions=4,  # two per worker of every per-symbol topic
        supervisor=SupervisorPolicy(gate="confidence", min_confidence=0.5),  # one day must trade
        runs_dir=runs_dir,
    )


def runner_report(settings: Settings) -> dict:
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder
    from streams.runner import run

    builder = ReportBuilder(settings.risk.starting_equity_usd)
    run(SAMPLE_DATA, EnsembleScorer.from_registry(settings.registry_dir), builder, settings,
        window=WINDOW)  # fmt: skip
    return builder.build(model_versions={})


def test_two_workers_from_the_start_trade_exactly_as_the_in_process_runner(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path)
    runner = runner_report(settings)
    assert runner["counts"]["closed_trades"] >= 3, "the window must trade to be a test"

    fleets: list[Fleet] = []
    plan = DemoPlan(window=WINDOW, timeout_s=900, workers=2, with_workers=fleets.append)
    two = run_demo(settings, plan).report

    (fleet,) = fleets
    assert len(fleet.watches) == 2 and two["workers"] == 2
    assert two["trades_sha256"] == runner["trades_sha256"]
    assert two["counts"]["closed_trades"] == runner["counts"]["closed_trades"]
    for key in COMPARED:
        assert two["counts"].get(key) == runner["counts"].get(key), key


def test_a_second_worker_joining_mid_run_takes_over_partitions_and_changes_no_trade(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import threading
    import time

    from streams.workers import worker_health

    settings = settings_for(kafka_bootstrap, tmp_path)
    runner = runner_report(settings)
    fleets: list[Fleet] = []
    took_over: set[str] = set()

    def watch_second(port: int) -> None:  # until the run stops it
        for _ in range(3600):
            health = worker_health(port, timeout_s=1.0)
            stages = (health[1].get("stages") or {}) if health else {}
            took_over.update(n for n, s in stages.items() if s.get("last_progress_s_ago"))
            time.sleep(0.5)

    def join(fleet: Fleet) -> None:
        fleet.join()  # the replay is in and the first worker busy: Faust rebalances
        fleets.append(fleet)
        threading.Thread(target=watch_second, args=(fleet.watches[1].port,), daemon=True).start()

    report = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=900, with_workers=join)).report
    (fleet,) = fleets
    assert len(fleet.watches) == 2
    assert took_over, "the second worker processed nothing: no rebalance happened"
    assert report["trades_sha256"] == runner["trades_sha256"]
    for key in COMPARED:
        assert report["counts"].get(key) == runner["counts"].get(key), key
