"""Incident replay reproduces a recorded run's range, decision by decision, on real Kafka.

A day of the bundled data is recorded through the whole topology (a Faust worker, the
confidence gate so it trades); then 6 hours from its middle, starting while positions are open,
are replayed into a fresh
prefix with every stage warmed to its state at the range's start (stored documents from the
state changelogs plus the recorded inputs after them). Every signal, veto, size, verdict,
order, fill and closed trade of the range must equal the recorded one (cold, the features
stage alone would emit no signal for two hours, and risk would start from the starting
equity); the same replay with a lower leverage cap must differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings, with_overrides
from streams.decisions import load_run_folder
from streams.demo import DemoPlan, run_demo
from streams.incident import IncidentPlan, run_incident
from streams.vocabulary import DecisionKind
from tests.run_diffs import assert_same_decisions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECORDED = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))
#: Positions opened at 17:24 are open at the start; a trade closed at 15:01, before it.
START, END = "2025-05-21T17:25", "2025-05-21T23:25"
RANGE = TimeWindow(parse_time_bound(START), parse_time_bound(END))


def settings_for(bootstrap: str, runs_dir: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap, partitions=2, supervisor={"gate": "confidence",
        "min_confidence": 0.5}, runs_dir=runs_dir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def recorded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A recorded day (its settings, topic prefix and run folder), checked to be a real test."""
    import uuid

    tmp_path = tmp_path_factory.mktemp("incident")
    settings = settings_for(kafka_bootstrap, tmp_path)
    source = f"t{uuid.uuid4().hex[:10]}rec."
    run = run_demo(
        settings, DemoPlan(window=RECORDED, prefix=source, run_dir=tmp_path / "recorded",
                           timeout_s=900),
    )  # fmt: skip
    rows = load_run_folder(run.run_dir).rows
    start_ms = parse_time_bound(START)
    sized_before = {
        r.decision_id for r in rows if r.kind is DecisionKind.SIZE and r.event_time_ms < start_ms
    }
    trades = [r for r in rows if r.kind is DecisionKind.TRADE]
    assert any(RANGE.contains(r.event_time_ms) for r in trades), "the range must trade"
    assert any(r.event_time_ms < start_ms for r in trades), "risk's equity is not the seed's"
    assert any(r.decision_id in sized_before and RANGE.contains(r.event_time_ms) for r in trades), (
        "a position open at the start closes inside the range"
    )
    return settings, source, run.run_dir


WINDOW_ARGS = ("--start", START, "--end", END)


def test_a_replayed_range_with_warm_state_decides_as_recorded(
    recorded: tuple, tmp_path: Path, unique_prefix: str
) -> None:
    settings, source, recorded_dir = recorded
    same = run_incident(
        settings, settings,
        IncidentPlan(source, RANGE, f"{unique_prefix}same.", tmp_path / "same", timeout_s=900),
    )  # fmt: skip
    assert_same_decisions(recorded_dir, same.run_dir, *WINDOW_ARGS)
    assert same.report["counts"]["signals"] == 5 * 6 * 60  # warm features: a signal every bar


def test_the_same_replay_with_a_lower_leverage_cap_shows_the_diff(
    recorded: tuple, tmp_path: Path, unique_prefix: str
) -> None:
    settings, source, recorded_dir = recorded
    lower = with_overrides(settings, ["risk.max_leverage=10"])
    changed = run_incident(
        settings, lower,
        IncidentPlan(source, RANGE, f"{unique_prefix}lev10.", tmp_path / "lev10", timeout_s=900),
    )  # fmt: skip
    result = CliRunner().invoke(
        __import__("streams.cli", fromlist=["app"]).app,
        ["diff", str(recorded_dir), str(changed.run_dir), *WINDOW_ARGS],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1, result.output
    assert "risk.max_leverage: A 30.0, B 10.0" in result.output
    assert "first divergence at 2025-05-21T1" in result.output  # inside the range
