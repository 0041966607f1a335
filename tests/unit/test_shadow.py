"""Shadow scoring on the stream and the promotion stage's decision, on real models and rows.

The shadow stage scores real Binance feature rows with the promoted champion and a registered
candidate (real ONNX sessions); its gate tables are given here, so the test knows which votes
would trade. The promotion stage's tally must decide exactly as the offline rule does on the same
rows (``models.promotion.decide``), at the row that completes the shadow.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from models.edge import block_ids
from models.promotion import ShadowTally, decide, shadow_score
from streams.agents.registry import load_scorer
from streams.config import PromotionRule, Settings
from streams.contracts.records import FeaturesComputed, ModelEventRecorded, ShadowScored
from streams.stages.edge import EdgeBucket, EdgeGate
from streams.stages.ensemble import EnsembleStage
from streams.stages.promotion import PromotionStage
from streams.stages.shadow import ShadowStage, shadow_id
from streams.vocabulary import CLASSES, Action, ModelEventKind
from tests.shared_data import feature_rows

HORIZON = 15
COST = 0.001
CANDIDATE = {"xgboost": "v1"}  # registered, never promoted


def _gate(versions: Mapping[str, str]) -> EdgeGate:
    """A table that lets every BUY and SELL of ``versions`` through (one bucket per side)."""
    buckets = tuple(
        EdgeBucket(action=a, prob_lo=0.0, prob_hi=1.0, vol_bucket=0, n=500, hit_rate=0.5,
                   mean_net_return=0.001, lower=0.0005, upper=0.002, tradeable=True)
        for a in (Action.BUY, Action.SELL)
    )  # fmt: skip
    return EdgeGate(members=dict(versions), weights=dict.fromkeys(versions, 0.25),
                    horizon_bars=HORIZON, round_trip_cost=COST, prob_edges=(), vol_edges=(),
                    buckets=buckets, evidence={})  # fmt: skip


def _event(kind: ModelEventKind, t: int, version: str = "v1") -> ModelEventRecorded:
    return ModelEventRecorded(
        event_id=f"xgboost:{version}:{kind.value}:{t}", model="xgboost", version=version,
        event_time_ms=t, kind=kind, detail="test",
    )  # fmt: skip


def _stage() -> ShadowStage:
    settings = Settings()
    weights = settings.ensemble_weights
    champion = EnsembleStage(load_scorer(settings), weights)

    def read_gate(versions: Mapping[str, str]) -> tuple[EdgeGate | None, str]:
        if dict(versions) == CANDIDATE:
            return _gate(versions), ""
        return None, "the champion has no table here"  # it stands aside: HOLD everywhere

    return ShadowStage(champion, lambda v: EnsembleStage(load_scorer(settings, v), weights),
                       read_gate)  # fmt: skip


@pytest.fixture(scope="module")
def rows() -> list[FeaturesComputed]:
    return feature_rows("um_futures_1m_2025", ["SOLUSDT"], "2025-05-21", "2025-05-21T03:00Z")


def _drive(stage: ShadowStage, rows: list[FeaturesComputed], start: int, end: int
           ) -> list[ShadowScored]:  # fmt: skip
    stage.on_model_event(_event(ModelEventKind.SHADOW_STARTED, start))
    out: list[ShadowScored] = []
    for row in rows:
        if row.event_time_ms == end:
            stage.on_model_event(_event(ModelEventKind.PROMOTION_REFUSED, end))
        out.extend(stage.on_features(row))
    return out


def test_the_candidate_votes_from_its_start_to_its_verdict_and_settles_at_the_horizon(
    rows: list[FeaturesComputed],
) -> None:
    t0 = rows[0].event_time_ms
    start, end = t0 + 30 * 60_000, t0 + 90 * 60_000
    records = _drive(_stage(), rows, start, end)
    close = {r.event_time_ms: r.close for r in rows}
    decided = [r.decided_ms for r in records]
    assert decided == list(range(start, end, 60_000))  # every covered row, in order, once
    for r in records:
        assert r.shadow_id == shadow_id(start) and r.candidate == CANDIDATE
        assert r.event_time_ms == r.decided_ms + HORIZON * 60_000
        assert r.forward_return == pytest.approx(close[r.event_time_ms] / close[r.decided_ms] - 1)
        sign = {Action.BUY: 1.0, Action.SELL: -1.0}.get(r.candidate_action, 0.0)
        want = sign * r.forward_return - COST if sign else 0.0
        assert r.candidate_pnl == pytest.approx(want, abs=1e-15)
        assert r.candidate_action is r.votes[0].action  # the table lets every vote through
        assert r.champion_action is Action.HOLD and r.champion_pnl == 0.0  # no table: aside
    assert {r.candidate_action for r in records} - {Action.HOLD}, "the candidate never voted"


def test_a_row_whose_bar_one_horizon_later_is_missing_is_dropped(
    rows: list[FeaturesComputed],
) -> None:
    t0 = rows[0].event_time_ms
    start, end = t0 + 30 * 60_000, t0 + 90 * 60_000
    gap = start + (10 + HORIZON) * 60_000  # the row that would settle the one decided at +10
    records = _drive(_stage(), [r for r in rows if r.event_time_ms != gap], start, end)
    decided = {r.decided_ms for r in records}
    assert start + 10 * 60_000 not in decided
    assert start + 9 * 60_000 in decided and start + 11 * 60_000 in decided


def test_a_shadow_stage_restored_mid_run_sends_the_same_records(
    rows: list[FeaturesComputed],
) -> None:
    t0 = rows[0].event_time_ms
    start, end = t0 + 30 * 60_000, t0 + 90 * 60_000
    whole = _drive(_stage(), rows, start, end)
    first = _stage()
    cut = next(i for i, r in enumerate(rows) if r.event_time_ms == start + 20 * 60_000)
    head = _drive(first, rows[:cut], start, end)
    restored = _stage()
    restored.load_state(first.to_state())
    tail = []
    for row in rows[cut:]:
        if row.event_time_ms == end:
            restored.on_model_event(_event(ModelEventKind.PROMOTION_REFUSED, end))
        tail.extend(restored.on_features(row))
    assert head + tail == whole


# ---------------------------------------------------------------------------- promotion

RULE = PromotionRule(min_decisions=100, n_boot=500, max_shadow_ms=10 * 86_400_000)
BLOCK_MS = 240 * 60_000


def _records(n: int, mean: float, seed: int = 3) -> list[ShadowScored]:
    """``n`` settled rows one minute apart: the candidate trades every third (both sides), its
    PnL ~ N(mean, 0.2 %); the champion trades every row and loses the costs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        acts = i % 3 == 0
        action = (Action.BUY if i % 2 else Action.SELL) if acts else Action.HOLD
        t = 1_747_800_000_000 + i * 60_000
        out.append(ShadowScored(
            shadow_id="shadow:1", symbol="BTCUSDT", event_time_ms=t + HORIZON * 60_000,
            decided_ms=t, candidate=CANDIDATE, champion={"xgboost": "v2"}, votes=(),
            candidate_action=action, candidate_confidence=0.6, champion_action=Action.BUY,
            champion_confidence=0.5, volatility=0.001, forward_return=0.0, round_trip_cost=COST,
            candidate_pnl=float(rng.normal(mean, 0.002)) if acts else 0.0, champion_pnl=-COST,
        ))  # fmt: skip
    return out


def test_the_stream_tally_decides_as_the_offline_rule_on_the_same_rows() -> None:
    records = _records(900, 0.001)
    tally = ShadowTally(CANDIDATE, {"xgboost": "v2"}, records[0].decided_ms)
    for r in records:
        tally.add(r.decided_ms // BLOCK_MS, r.candidate_action, r.candidate_pnl,
                  r.champion_action, r.champion_pnl)  # fmt: skip
    stream = tally.decide(RULE, 0.7)
    times = np.array([r.decided_ms for r in records], dtype=np.int64)
    blocks = block_ids(times, 240)
    cand_act = np.array([CLASSES.index(r.candidate_action) for r in records])
    champ_act = np.array([CLASSES.index(r.champion_action) for r in records])
    cand = np.array([r.candidate_pnl for r in records])
    champ = np.array([r.champion_pnl for r in records])
    offline = decide(shadow_score(CANDIDATE, cand_act, cand, blocks, RULE),
                     shadow_score({"xgboost": "v2"}, champ_act, champ, blocks, RULE),
                     cand, champ, blocks, RULE, 0.7)  # fmt: skip
    assert stream.promote == offline.promote
    assert stream.candidate.lower == pytest.approx(offline.candidate.lower, rel=1e-12)
    assert stream.diff_lower == pytest.approx(offline.diff_lower, rel=1e-12)
    assert stream.candidate.decisions == offline.candidate.decisions == 300
    assert stream.reasons == offline.reasons


def test_the_promotion_stage_decides_at_the_row_that_completes_the_shadow_once() -> None:
    stage = PromotionStage(RULE, 0.7, BLOCK_MS)
    records = _records(900, 0.004)
    events: list[tuple[int, ModelEventRecorded]] = []
    for i, r in enumerate(records):
        if i == 450:  # a restart half way: the tally is in the stored state
            restored = PromotionStage(RULE, 0.7, BLOCK_MS)
            restored.load_state(stage.to_state())
            stage = restored
        events.extend((i, e) for e in stage.on_shadow(r))
    # the 100th candidate decision is row 297 (every third row trades)
    assert [(i, e.kind) for i, e in events] == [
        (297, ModelEventKind.SHADOW_SCORED), (297, ModelEventKind.PROMOTED)
    ]  # fmt: skip
    promoted = events[1][1]
    assert (promoted.model, promoted.version) == ("xgboost", "v1")
    assert promoted.event_time_ms == records[297].event_time_ms
    assert promoted.event_id == f"xgboost:v1:PROMOTED:{records[297].event_time_ms}"


def test_a_shadow_without_enough_decisions_is_refused_when_its_time_is_up() -> None:
    rule = PromotionRule(min_decisions=1000, n_boot=500, max_shadow_ms=6 * 3_600_000)
    stage = PromotionStage(rule, 0.7, BLOCK_MS)
    events = [e for r in _records(900, 0.004) for e in stage.on_shadow(r)]
    refused = events[-1]
    assert refused.kind is ModelEventKind.PROMOTION_REFUSED
    assert "shadow decisions < 1000" in refused.detail
    # decided at the first row settled 6 h after the first decision
    assert refused.event_time_ms == 1_747_800_000_000 + 6 * 3_600_000
