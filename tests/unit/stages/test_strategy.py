"""The strategy stage: nine strategy rules, the seeded meta selector, decisions and rewards."""

from __future__ import annotations

import random

import pytest

from streams.config import RiskLimits, SelectorConfig, StrategyConfig
from streams.stages import LearningStage, StrategyStage, StrategyState
from streams.stages.regime import MarketView
from streams.stages.strategies import (
    STANDING_ASIDE,
    STRATEGY_NAMES,
    MetaSelector,
    StrategyInput,
    choose_strategy,
    evaluate_all,
)
from streams.stages.strategy import REWARD_WAIT_MS
from streams.vocabulary import Regime, Side
from tests.unit.stages.factories import MIN, scored, supervised, trade_closed
from tests.unit.stages.sample import tradeable_signal

CFG = StrategyConfig()


def _x(side: Side, regime: Regime, *, trend=0.0, momentum=0.0, rsi=50.0, band=0.5, conf=0.8):
    return StrategyInput(
        side, conf, regime, MarketView(100.0, 0.002, 0.001, trend, momentum, rsi, band)
    )


def _takers(x: StrategyInput) -> list[str]:
    return [c.strategy for c in evaluate_all(x, CFG) if c.take]


def test_nine_named_strategies() -> None:
    assert len(STRATEGY_NAMES) == 9 and STRATEGY_NAMES[-1] == STANDING_ASIDE


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        # up-trend, long signal, RSI 40 < 45 -> trend_follow + trend_pullback
        (_x(Side.LONG, Regime.TREND, trend=2.0, rsi=40.0), ["trend_follow", "trend_pullback"]),
        # up-trend, short signal at RSI 75 >= 70 -> counter_trend only
        (_x(Side.SHORT, Regime.TREND, trend=2.0, rsi=75.0), ["counter_trend"]),
        # range, long at band 0.2 (<= 0.2), confidence 0.8 >= 0.7 -> mean_revert + range_scalp
        (_x(Side.LONG, Regime.RANGE, band=0.2), ["mean_revert", "range_scalp"]),
        # range, long at band 0.3, confidence 0.69 -> nothing takes
        (_x(Side.LONG, Regime.RANGE, band=0.3, conf=0.69), []),
        # short breakout below the band (band -0.1) with momentum -0.001 = -0.5 * atr_pct 0.002
        (_x(Side.SHORT, Regime.TREND, band=-0.1, momentum=-0.001), ["breakout", "momentum_scalp"]),
        # high volatility, long at RSI 30 (<= 30) -> volatility_fade
        (_x(Side.LONG, Regime.HIGH_VOLATILITY, rsi=30.0), ["volatility_fade"]),
        # momentum 0.0009 < 0.5 * 0.002 -> no momentum_scalp
        (_x(Side.LONG, Regime.HIGH_VOLATILITY, momentum=0.0009), []),
    ],
)
def test_rules(x: StrategyInput, expected: list[str]) -> None:
    assert _takers(x) == expected


def test_takers_keep_the_signal_side() -> None:
    calls = evaluate_all(_x(Side.SHORT, Regime.TREND, trend=-2.0, rsi=60.0), CFG)
    taken = [c for c in calls if c.take]
    assert taken and all(c.side is Side.SHORT for c in taken)
    assert all(c.side is None and c.reason == "skip" for c in calls if not c.take)


def test_greedy_prefers_untried_taker_then_learns_to_stand_aside() -> None:
    sel = MetaSelector()
    greedy = SelectorConfig(epsilon=0.0, min_step=0.05)
    x = _x(Side.LONG, Regime.TREND, trend=2.0, rsi=40.0)  # takers: trend_follow, trend_pullback
    rng = random.Random(1)
    assert choose_strategy(x, sel, rng, CFG, greedy).strategy == "trend_follow"  # tie -> first
    sel.update(Regime.TREND, "trend_follow", -0.2, greedy)  # mean -0.2
    assert choose_strategy(x, sel, rng, CFG, greedy).strategy == "trend_pullback"  # 0 > -0.2
    sel.update(Regime.TREND, "trend_pullback", -0.1, greedy)
    assert choose_strategy(x, sel, rng, CFG, greedy).strategy == STANDING_ASIDE  # 0 beats both
    # Learning is per regime: RANGE is untouched.
    assert sel.value(Regime.RANGE, "trend_follow") == 0.0


def test_update_step_never_below_min_step() -> None:
    sel, cfg = MetaSelector(), SelectorConfig(min_step=0.25)
    for r in (1.0, 0.0, 0.0, 0.0):
        sel.update(Regime.RANGE, "mean_revert", r, cfg)
    # n=1: 1.0; n=2: step 1/2 -> 0.5; n=3: step 1/3 -> 0.3333; n=4: step max(1/4, .25) -> 0.25
    assert sel.value(Regime.RANGE, "mean_revert") == pytest.approx(0.25)
    assert MetaSelector.from_dict(sel.to_dict()) == sel


def test_exploration_is_seeded_and_covers_candidates() -> None:
    x = _x(Side.LONG, Regime.TREND, trend=2.0, rsi=40.0)
    cfg = SelectorConfig(epsilon=1.0)
    picks_a = [
        choose_strategy(x, MetaSelector(), random.Random(f"7:{i}"), CFG, cfg).strategy
        for i in range(60)
    ]
    picks_b = [
        choose_strategy(x, MetaSelector(), random.Random(f"7:{i}"), CFG, cfg).strategy
        for i in range(60)
    ]
    assert picks_a == picks_b
    assert set(picks_a) == {"trend_follow", "trend_pullback", STANDING_ASIDE}


# ----------------------------------------------------------------------------- the stage


def test_strategy_decides_deterministically_and_learns_each_reward_once() -> None:
    row, signal = tradeable_signal()
    results = []
    for _ in range(2):
        stage = StrategyStage(RiskLimits(), seed=7)
        state = stage.new_state()
        stage.on_features(state, row)
        results.append((stage.on_signal(state, signal), state))
    (d1, state), (d2, _) = results
    assert d1 is not None and d1 == d2
    assert d1.decision_id == f"{signal.signal_id}:decision"
    assert d1.event_time_ms == row.event_time_ms and d1.price == row.close
    assert StrategyState.from_dict(state.to_dict()) == state
    stage = StrategyStage(RiskLimits(), seed=7)
    trade = trade_closed(d1.decision_id, -50.0, row.event_time_ms + 10 * MIN)
    sizing, strat = LearningStage().on_trade_closed(trade)
    assert stage.on_reward(state, sizing) and not stage.on_reward(state, sizing)
    assert stage.on_reward(state, strat) and not stage.on_reward(state, strat)
    assert state.equity == pytest.approx(10_000.0 - 50.0)
    assert sum(sum(v) for v in state.qtable.visits.values()) == 1


def test_a_decision_without_rewards_is_forgotten_after_the_wait() -> None:
    # risk rejected "old": no trade, no reward ever; "edge" is exactly the wait old
    row, signal = tradeable_signal()
    stage = StrategyStage(RiskLimits(), seed=7)
    state = stage.new_state()
    for decision, t in (("old", row.event_time_ms - REWARD_WAIT_MS - 1),
                        ("edge", row.event_time_ms - REWARD_WAIT_MS)):  # fmt: skip
        state.pending_sizing[decision] = ("c2/TREND/d0", 4, t)
        state.pending_strategy[decision] = t
    stage.on_features(state, row)
    d = stage.on_signal(state, signal)
    assert d is not None
    assert list(state.pending_sizing) == list(state.pending_strategy) == ["edge", d.decision_id]
    sizing, strat = LearningStage().on_trade_closed(trade_closed("old", -50.0, row.event_time_ms))
    assert not stage.on_reward(state, sizing) and not stage.on_reward(state, strat)
    assert StrategyState.from_dict(state.to_dict()) == state


def test_a_stored_state_from_before_pending_times_loads() -> None:
    row, _ = tradeable_signal()
    stage = StrategyStage(RiskLimits(), seed=7)
    state = stage.new_state()
    stage.on_features(state, row)
    doc = state.to_dict() | {"pending_sizing": {"d": ["c2/TREND/d0", 4]}, "pending_strategy": ["d"]}
    loaded = StrategyState.from_dict(doc)
    # its decisions wait from the last bar the state saw
    assert loaded.pending_sizing == {"d": ("c2/TREND/d0", 4, row.event_time_ms)}
    assert loaded.pending_strategy == {"d": row.event_time_ms}


def test_strategy_never_trades_a_signal_without_its_own_bars_features() -> None:
    row, signal = tradeable_signal()
    stage = StrategyStage(RiskLimits(), seed=7)
    state = stage.new_state()
    stage.on_features(state, row)
    later = supervised(scored(symbol=signal.symbol, t=row.event_time_ms + MIN))
    assert stage.on_signal(state, later) is None
