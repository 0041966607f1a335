"""The promotion gate on shadow rows: every condition can refuse, and says why."""

from __future__ import annotations

import numpy as np

from models.edge import block_ids
from models.promotion import decide, decision_events, gated_actions, shadow_score
from streams.config import PromotionRule
from streams.stages.edge import EdgeBucket, EdgeGate
from streams.vocabulary import Action, ModelEventKind

SELL, HOLD, BUY = 0, 1, 2
RULE = PromotionRule(min_decisions=100, n_boot=500)
N = 3000
BLOCKS = block_ids(np.arange(N, dtype=np.int64) * 60_000, 60)


def _pnl(mean: float, acted: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(mean, 0.002, N)
    return np.where(acted, noise, 0.0)


def _decide(cand_mean: float, champ_mean: float, cand_actions: np.ndarray):  # type: ignore[no-untyped-def]
    acted = cand_actions != HOLD
    cand = _pnl(cand_mean, acted, 1)
    champ = _pnl(champ_mean, np.ones(N, dtype=bool), 2)
    champ_actions = np.full(N, BUY)
    c = shadow_score({"xgboost": "v3"}, cand_actions, cand, BLOCKS, RULE)
    k = shadow_score({"xgboost": "v2"}, champ_actions, champ, BLOCKS, RULE)
    return decide(c, k, cand, champ, BLOCKS, RULE, bias_limit=0.7)


BALANCED = np.where(np.arange(N) % 2 == 0, BUY, SELL)


def test_a_candidate_that_pays_and_beats_the_champion_is_promoted() -> None:
    d = _decide(0.002, -0.001, BALANCED)
    assert d.promote and d.reasons == ()
    kinds = [e.kind for e in decision_events(d, 1_000)]
    assert kinds == [ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED]


def test_a_candidate_without_edge_is_refused_even_against_a_losing_champion() -> None:
    d = _decide(-0.0005, -0.002, BALANCED)  # better than the champion, still loses money
    assert not d.promote
    assert any("always-HOLD" in r for r in d.reasons)
    assert decision_events(d, 1_000)[-1].kind is ModelEventKind.PROMOTION_REFUSED


def test_a_one_sided_or_inactive_candidate_is_refused() -> None:
    one_sided = _decide(0.002, -0.001, np.full(N, BUY))
    assert not one_sided.promote and any("one-sided" in r for r in one_sided.reasons)
    idle = np.full(N, HOLD)
    idle[:50] = BUY
    few = _decide(0.002, -0.001, idle)
    assert not few.promote and any("50 shadow decisions" in r for r in few.reasons)


def test_a_set_acts_only_where_its_gate_bucket_is_tradeable() -> None:
    bucket = EdgeBucket(Action.BUY, 0.5, 1.0, 0, 500, 0.6, 0.001, 0.0005, 0.0015, True)
    gate = EdgeGate({"xgboost": "v3"}, {"xgboost": 1.0}, 15, 0.001, (0.5,), (), (bucket,), {})
    acts = gated_actions(gate, np.array([BUY, BUY, SELL, HOLD]), np.array([0.6, 0.4, 0.6, 0.9]),
                         np.zeros(4))  # fmt: skip
    assert acts.tolist() == [BUY, HOLD, HOLD, HOLD]
    assert gated_actions(None, np.array([BUY]), np.array([0.9]), np.zeros(1)).tolist() == [HOLD]
