"""The reward rule (learning stage) and its application by the strategy stage."""

from __future__ import annotations

import pytest

from streams.config import RewardConfig, RiskLimits, SizingConfig
from streams.contracts.records import Learner
from streams.stages import LearningStage, StrategyStage
from streams.stages.sizing import SizingState, sizing_state
from streams.stages.strategy import StrategyState, StrategyTuning
from streams.vocabulary import Regime
from tests.unit.stages.factories import T0, trade_closed

DECISION = "ETHUSDT:1:decision"


def test_reward_is_clipped_return_on_margin_one_per_learner() -> None:
    # 74.53446 / 250 USDT margin = 0.29813784, under the clip
    sizing, strat = LearningStage().on_trade_closed(trade_closed(DECISION, 74.53446, T0))
    assert (sizing.learner, strat.learner) == (Learner.SIZING, Learner.STRATEGY)
    assert sizing.reward == strat.reward == pytest.approx(0.29813784)
    assert (sizing.reward_id, strat.reward_id) == (f"{DECISION}:SIZING", f"{DECISION}:STRATEGY")
    assert (sizing.state, sizing.action) == ("c2/TREND", "1.25")  # confidence 0.85, 1.25x
    assert (strat.state, strat.action) == ("TREND", "trend_follow")
    assert all(r.event_time_ms == T0 and r.decision_id == DECISION for r in (sizing, strat))


def test_big_loss_is_clipped_but_its_return_is_reported() -> None:
    rewards = LearningStage(RewardConfig(clip=1.0)).on_trade_closed(
        trade_closed(DECISION, -500.0, T0)
    )
    assert all(r.reward == -1.0 and r.return_pct == -2.0 for r in rewards)  # -500 / 250


def test_unfilled_trade_yields_no_reward() -> None:
    assert LearningStage().on_trade_closed(trade_closed(DECISION, 0.0, T0, qty=0.0)) == []


def test_reward_state_is_the_sizing_key_without_its_drawdown_bucket() -> None:
    (sizing, _) = LearningStage().on_trade_closed(trade_closed(DECISION, 10.0, T0))
    key = sizing_state(0.85, Regime.TREND, 0.06, SizingConfig()).key
    assert key == "c2/TREND/d2" and key.startswith(f"{sizing.state}/")


def _pending(stage: StrategyStage) -> StrategyState:
    """A state that sized ``DECISION`` at 1.5x (action 4) in state ``c2/TREND/d0``."""
    state = stage.new_state()
    state.pending_sizing[DECISION] = ("c2/TREND/d0", 4, T0)
    state.pending_strategy[DECISION] = T0
    return state


def test_rewards_update_both_learners_and_the_equity_track() -> None:
    tuning = StrategyTuning(sizing=SizingConfig(alpha=0.5))
    stage = StrategyStage(RiskLimits(), seed=7, tuning=tuning)
    state = _pending(stage)
    for r in LearningStage().on_trade_closed(trade_closed(DECISION, -80.0, T0)):  # -80 / 250
        assert stage.on_reward(state, r)
    # Q(1.5x) = 0 + 0.5 * (-0.32 - 0) = -0.16 ; selector mean after one reward = -0.32
    assert state.qtable.values(SizingState(2, Regime.TREND, 0))[4] == pytest.approx(-0.16)
    assert state.selector.value(Regime.TREND, "trend_follow") == pytest.approx(-0.32)
    assert (state.equity, state.peak_equity) == (pytest.approx(9_920.0), 10_000.0)
    assert state.drawdown == pytest.approx(0.008)


def test_unknown_decision_or_strategy_teaches_nothing() -> None:
    stage = StrategyStage(RiskLimits(), seed=7)
    state = _pending(stage)
    other = LearningStage().on_trade_closed(trade_closed("BTCUSDT:2:decision", -80.0, T0))
    assert not any(stage.on_reward(state, r) for r in other)
    unknown = trade_closed(DECISION, -80.0, T0, strategy="from_a_newer_build")
    _, strat = LearningStage().on_trade_closed(unknown)
    assert stage.on_reward(state, strat)  # consumed, but no arm learns
    assert state.selector.arms == {} and state.qtable.q == {}
    assert state.equity == 10_000.0
