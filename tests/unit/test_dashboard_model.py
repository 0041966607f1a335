"""The dashboard's read model on the records of a real run (the in-process runner, real data).

The read model must agree with the run's report (same trades, PnL, fees, counts) whatever order
the topics deliver their records in, keep its bounds under a flood of signals, and rebuild the
learners' tables with the stages' own rules.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    ControlCommand,
    DecisionSized,
    OrderApproved,
    OrderRejected,
    RewardComputed,
    SignalScored,
    SignalSupervised,
    TradeClosed,
)
from streams.dashboard import model as board
from streams.dashboard.model import ReadModel, select_rows
from streams.ordering import END_OF_STREAM
from streams.report import ReportBuilder
from streams.vocabulary import CommandKind, Learner

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
REGISTRY = ROOT / "models" / "registry"
WINDOW = TimeWindow(parse_time_bound("2025-05-21"), parse_time_bound("2025-05-22T12:00"))

pytestmark = pytest.mark.skipif(
    not (REGISTRY / "index.json").is_file() or not SAMPLE.is_dir(),
    reason="needs the bundled sample data and a promoted model registry",
)


@pytest.fixture(scope="module")
def records() -> list[AvroRecord]:
    """Every record a day and a half of three symbols makes, in the runner's order."""
    from models.scorer import EnsembleScorer
    from streams.config import Settings, SupervisorPolicy
    from streams.runner import run

    out: list[AvroRecord] = []
    settings = Settings(supervisor=SupervisorPolicy(gate="confidence", min_confidence=0.5))
    scorer = EnsembleScorer.from_registry(REGISTRY)
    run(SAMPLE, scorer, out.append, settings, ("BTCUSDT", "ETHUSDT", "SOLUSDT"), WINDOW)
    assert sum(isinstance(r, TradeClosed) for r in out) >= 3, "the window must trade"
    return out


def fed(records: list[AvroRecord]) -> ReadModel:
    return ReadModel(10_000.0).apply_all(records)


def test_overview_agrees_with_the_report(records: list[AvroRecord]) -> None:
    report = ReportBuilder(10_000.0).add_all(records).build(model_versions={})
    o = fed(records).overview()
    perf = report["performance"]
    assert o["realized_pnl_usd"] == pytest.approx(perf["net_pnl_usd"])
    assert len(o["equity_curve"]["t"]) == report["counts"]["closed_trades"]
    assert o["equity_curve"]["equity"][-1] == pytest.approx(perf["final_equity_usd"])
    assert max(o["equity_curve"]["drawdown"]) == pytest.approx(perf["max_drawdown_pct"])
    fills = [r for r in records if type(r).__name__ == "FillExecuted"]
    assert o["fees_usd"] == pytest.approx(sum(f.fee for f in fills))  # type: ignore[attr-defined]
    assert o["counts"]["rejections_by_rule"] == report["counts"]["rejections_by_rule"]
    assert o["counts"]["vetoes_by_rule"] == report["counts"]["vetoes_by_reason"]


def test_every_decision_row_carries_its_verdict(records: list[AvroRecord]) -> None:
    model = fed(records)
    verdicts = {r.decision_id: r for r in records if isinstance(r, OrderApproved | OrderRejected)}
    decisions = [r for r in records if isinstance(r, DecisionSized)]
    rows = {r["decision_id"]: r for r in model.signal_rows() if r["decision_id"]}
    assert len(rows) == len(decisions) > 0
    for d in decisions:
        row, verdict = rows[d.decision_id], verdicts[d.decision_id]
        assert row["signal_id"] == d.signal_id and row["strategy"] == d.strategy
        if isinstance(verdict, OrderRejected):
            assert (row["outcome"], row["risk_rule"]) == ("REJECTED", verdict.rule.value)
        else:
            assert row["outcome"] == "APPROVED"
        assert len(row["votes"]) == 4


def test_the_topics_order_does_not_matter(records: list[AvroRecord]) -> None:
    """Topics are read side by side: a verdict may come before its decision, a veto before
    its ensemble signal. Reversed and shuffled feeds give the same views."""
    expected = fed(records)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    for order in (records[::-1], shuffled):
        model = fed(order)
        assert model.overview()["realized_pnl_usd"] == pytest.approx(
            expected.overview()["realized_pnl_usd"]
        )
        assert model.overview()["positions"] == expected.overview()["positions"]
        decided = {r["signal_id"]: r["outcome"] for r in model.signal_rows() if r["decision_id"]}
        assert decided == {
            r["signal_id"]: r["outcome"] for r in expected.signal_rows() if r["decision_id"]
        }


def test_redelivered_trades_count_once(records: list[AvroRecord]) -> None:
    trades = [r for r in records if isinstance(r, TradeClosed)]
    once, twice = fed(records), fed([*records, *trades])
    assert twice.overview()["realized_pnl_usd"] == once.overview()["realized_pnl_usd"]


def test_tables_stay_bounded_and_keep_the_decisions(
    records: list[AvroRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board, "RECENT_SIGNALS", 50)
    monkeypatch.setattr(board, "PUSH_ROWS", 20)
    model = fed(records)
    signals = sum(isinstance(r, SignalScored) for r in records)
    decisions = sum(isinstance(r, DecisionSized) for r in records)
    assert signals > 500
    assert len(model.recent) == 50
    assert len(model.decided) == decisions  # a flood of HOLDs pushes no decision out
    changes = model.drain_changes()
    assert 0 < len(changes) <= 20
    assert model.drain_changes() == []  # drained: the next push carries only new changes


def test_signal_filters(records: list[AvroRecord]) -> None:
    rows = fed(records).signal_rows()
    approved = select_rows(rows, outcome="APPROVED", limit=1000)
    assert approved and all(r["outcome"] == "APPROVED" for r in approved)
    eth = select_rows(rows, symbol="ETHUSDT", limit=7)
    assert len(eth) == 7 and {r["symbol"] for r in eth} == {"ETHUSDT"}
    vetoed = select_rows(rows, outcome="VETOED")
    assert vetoed and all(r["veto_reasons"] for r in vetoed)
    supervised = {r.signal_id for r in records if isinstance(r, SignalSupervised) and r.vetoed}
    assert {r["signal_id"] for r in vetoed} <= supervised


def test_q_table_and_bandit_follow_the_stage_rules(records: list[AvroRecord]) -> None:
    from streams.config import SelectorConfig, SizingConfig

    learning = fed(records).learning()
    rewards = [r for r in records if isinstance(r, RewardComputed)]
    assert rewards
    alpha, q, n = SizingConfig().alpha, {}, Counter[tuple[str, str, str]]()
    for r in rewards:
        if r.learner is Learner.SIZING:
            key = (r.symbol, r.state, r.action)
            q[key] = q.get(key, 0.0) + alpha * (r.reward - q.get(key, 0.0))
            n[key] += 1
    for (symbol, state, action), value in q.items():
        cell = learning["qtables"][symbol][state][action]
        assert cell == {"q": pytest.approx(value), "n": n[(symbol, state, action)]}
    min_step = SelectorConfig().min_step
    arms: dict[tuple[str, str], tuple[int, float]] = {}
    for r in rewards:
        if r.learner is Learner.STRATEGY:
            key = (r.symbol, f"{r.regime.value}/{r.strategy}")
            count, value = arms.get(key, (0, 0.0))
            count += 1
            arms[key] = (count, value + max(1.0 / count, min_step) * (r.reward - value))
    for (symbol, arm), (count, value) in arms.items():
        assert learning["bandits"][symbol][arm] == {"count": count, "value": pytest.approx(value)}


def _command(kind: CommandKind, at: int, issued: int) -> ControlCommand:
    return ControlCommand(
        command_id=f"{kind}-{at}-{issued}", command=kind, event_time_ms=at, issued_at_ms=issued,
        issued_by="test", reason="because",
    )  # fmt: skip


def test_the_kill_switch_is_the_latest_command_by_event_time() -> None:
    model = ReadModel(10_000.0)
    model.apply(_command(CommandKind.HALT, 2_000, 10))
    assert model.overview()["kill_switch"]["halted"]
    model.apply(_command(CommandKind.RESUME, 1_000, 20))  # applies earlier: the halt stands
    assert model.overview()["kill_switch"]["halted"]
    model.apply(_command(CommandKind.RESUME, 3_000, 30))
    ks = model.overview()["kill_switch"]
    assert not ks["halted"] and ks["command"]["event_time_ms"] == 3_000
    assert [c["command"] for c in model.overview()["commands"]] == ["RESUME", "RESUME", "HALT"]


def test_a_finished_replays_progress_reads_end_of_stream() -> None:
    # A finished replay's risk stage has sent END_OF_STREAM as its progress: no calendar time
    # (the page threw "Invalid time value" on it, the API's text raised).
    model = ReadModel(10_000.0)
    model.apply(_command(CommandKind.HALT, 2_000, 10))
    risk = {
        "portfolio": True,
        "halted": False,
        "daily_drawdown": 0.0,
        "weekly_drawdown": 0.0,
        "max_daily_drawdown": 0.05,
        "max_weekly_drawdown": 0.1,
        "progress_ms": END_OF_STREAM,
    }
    mode = model.trading_mode(risk)
    assert mode["pending"] and mode["mode"] == "HALTED"
    sent = "HALT sent on control.commands for event time 1970-01-01 00:00:02"
    assert mode["detail"].startswith(sent)
    assert "it is at end of stream" in mode["detail"]


def test_the_live_universe_is_the_latest_change_per_symbol_once_each() -> None:
    from streams.contracts.records import UniverseChanged
    from streams.vocabulary import UniverseChangeKind, UniverseVerdict

    def change(symbol: str, t: int, kind: UniverseChangeKind) -> UniverseChanged:
        joined = kind is UniverseChangeKind.JOINED
        return UniverseChanged(
            event_id=f"universe:{t}:{symbol}", symbol=symbol, event_time_ms=t, change=kind,
            verdict=UniverseVerdict.SELECTED if joined else None, rank=1 if joined else None,
            universe_size=2, server_time_ms=t, reason="test",
        )  # fmt: skip

    model = ReadModel(10_000.0)
    assert model.overview()["universe"] == {"members": [], "winding_down": [], "changes": []}
    for u in (
        change("BTCUSDT", 1_000, UniverseChangeKind.JOINED),
        change("SOLUSDT", 1_000, UniverseChangeKind.JOINED),
        change("SOLUSDT", 5_000, UniverseChangeKind.LEFT),
        change("SOLUSDT", 1_000, UniverseChangeKind.JOINED),  # written again after a restart
        change("ETHUSDT", 9_000, UniverseChangeKind.JOINED),
    ):
        model.apply(u)
    universe = model.overview()["universe"]
    assert universe["members"] == ["BTCUSDT", "ETHUSDT"]
    assert universe["winding_down"] == ["SOLUSDT"]
    assert [(c["symbol"], c["event_time_ms"], c["change"]) for c in universe["changes"]] == [
        ("ETHUSDT", 9_000, "JOINED"), ("SOLUSDT", 5_000, "LEFT"),
        ("SOLUSDT", 1_000, "JOINED"), ("BTCUSDT", 1_000, "JOINED"),
    ]  # fmt: skip
    assert (
        universe["changes"][0]["verdict"] == "SELECTED" and universe["changes"][1]["rank"] is None
    )


def test_the_policy_mode_is_the_newest_approvals(records: list[AvroRecord]) -> None:
    import dataclasses

    from streams.contracts.records import OrderApproved
    from streams.vocabulary import TradingMode

    approvals = [r for r in records if isinstance(r, OrderApproved)]
    assert len(approvals) >= 2
    model = ReadModel(10_000.0)
    assert model.overview()["policy_mode"] is None
    newest = max(approvals, key=lambda a: (a.event_time_ms, a.order_id))
    defensive = dataclasses.replace(newest, trading_mode=TradingMode.DEFENSIVE,
                                    mode_reasons=("drawdown 21.00% from peak >= 20%",))  # fmt: skip
    model.apply(defensive)
    model.apply_all(a for a in approvals if a is not newest)  # older ones arrive later
    assert model.overview()["policy_mode"] == {
        "mode": "DEFENSIVE", "reasons": ["drawdown 21.00% from peak >= 20%"],
        "event_time_ms": newest.event_time_ms, "symbol": newest.symbol,
    }  # fmt: skip


def test_the_snapshot_is_json() -> None:
    import json

    snapshot = ReadModel(10_000.0).snapshot()
    assert json.loads(json.dumps(snapshot))["overview"]["equity_usd"] == 10_000.0


def test_mode_changes_are_listed_newest_first_once_each() -> None:
    from streams.contracts.records import TradingModeChanged
    from streams.vocabulary import TradingMode

    def change(t: int, mode: TradingMode, previous: TradingMode) -> TradingModeChanged:
        return TradingModeChanged(
            event_id=f"mode:c{t}", event_time_ms=t, mode=mode, previous=previous,
            reasons=() if mode is TradingMode.NORMAL else (f"{mode.value} test",), cause=f"c{t}",
            equity_usd=9_000.0, peak_equity_usd=10_000.0, drawdown=0.1,
        )  # fmt: skip

    model = ReadModel(10_000.0)
    assert model.overview()["mode_changes"] == []
    halt = change(2_000, TradingMode.HALT, TradingMode.NORMAL)
    for m in (halt, change(5_000, TradingMode.NORMAL, TradingMode.HALT), halt):  # halt twice
        model.apply(m)
    rows = model.overview()["mode_changes"]
    assert [(r["event_time_ms"], r["previous"], r["mode"]) for r in rows] == [
        (5_000, "HALT", "NORMAL"), (2_000, "NORMAL", "HALT")
    ]  # fmt: skip
    assert rows[1]["reasons"] == ["HALT test"] and rows[1]["cause"] == "c2000"


def test_a_shadow_shows_the_gates_standing_then_its_verdict() -> None:
    """signals.shadow rows (one re-sent, as a restarted shadow stage may): the page's tally is
    the promotion stage's over the same rows, with the rule's reasons so far; once the verdict
    is on models.events the shadow shows it, and later rows change nothing."""
    import dataclasses

    from streams.config import PromotionRule, Settings
    from streams.contracts.codec import topic_codec
    from streams.contracts.examples import load_example
    from streams.contracts.records import ModelEventRecorded
    from streams.stages.promotion import PromotionStage
    from streams.topics import Topic
    from streams.vocabulary import Action, ModelEventKind

    codec = topic_codec(Topic.SIGNALS_SHADOW)
    example = codec.decode_record(codec.encode(load_example(Topic.SIGNALS_SHADOW)))
    rng = random.Random(7)
    rows = [
        dataclasses.replace(
            example, symbol=symbol, event_time_ms=example.event_time_ms + i * 60_000,
            decided_ms=example.decided_ms + i * 60_000,
            candidate_action=rng.choice([Action.BUY, Action.SELL, Action.HOLD]),
            candidate_pnl=rng.gauss(0.0, 0.002), champion_pnl=rng.gauss(0.0, 0.001),
        )
        for i in range(300) for symbol in ("BTCUSDT", "ETHUSDT")
    ]  # fmt: skip
    settings = Settings(promotion=PromotionRule(min_decisions=10_000))  # never decides here
    model = ReadModel.from_settings(settings)
    model.apply_all([*rows, rows[5]])
    stage = PromotionStage.from_settings(settings)
    for row in rows:
        stage.on_shadow(row)
    expected = stage.tallies[example.shadow_id].decide(stage.rule, stage.bias_limit)

    (shown,) = model.models()["shadows"]
    assert shown["rows"] == len(rows) == expected.candidate.rows
    assert shown["scores"]["candidate"] == dataclasses.asdict(expected.candidate)
    assert shown["scores"]["champion"] == dataclasses.asdict(expected.champion)
    assert (shown["diff_lower"], shown["diff_upper"]) == (expected.diff_lower,
                                                         expected.diff_upper)  # fmt: skip
    assert shown["status"] == "open" and shown["reasons"] == list(expected.reasons)
    assert shown["reasons"][0].endswith("shadow decisions < 10000")

    (model_name, version), = [(m, v) for m, v in example.candidate.items()
                              if example.champion.get(m) != v]  # fmt: skip
    refused = ModelEventRecorded(
        event_id="refused", model=model_name, version=version,
        kind=ModelEventKind.PROMOTION_REFUSED, event_time_ms=rows[-1].event_time_ms,
        detail="refused: too few decisions",
    )  # fmt: skip
    later = dataclasses.replace(rows[-1], event_time_ms=rows[-1].event_time_ms + 60_000)
    model.apply_all([refused, later])
    (shown,) = model.models()["shadows"]
    assert shown["status"] == "PROMOTION_REFUSED" and shown["rows"] == len(rows)
    assert shown["reasons"] == ["refused: too few decisions"]
