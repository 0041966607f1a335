"""Rewards from closed trades and their routing to the sizing and strategy learners."""

from __future__ import annotations

import pytest

from streams.adapters.venues.interface import ClosedTrade, TradeContext
from streams.config import RewardConfig, SelectorConfig, SizingConfig
from streams.errors import InvalidInputError
from streams.logic.learning import apply_reward, reward_from_trade
from streams.logic.sizing import QTable, SizingState
from streams.logic.strategy import MetaSelector
from streams.vocabulary import Regime, Side

CTX = TradeContext(0.8, ("xgboost@3",), "trend_follow", "TREND", "c2/TREND/d0", 4)


def _trade(
    net: float, margin: float = 1_000.0, qty: float = 210.0, ctx: TradeContext = CTX
) -> ClosedTrade:
    return ClosedTrade(
        "T1",
        "BTCUSDT",
        Side.LONG,
        qty,
        100.0,
        101.0,
        net + 10.0,
        10.0,
        net,
        margin,
        21,
        0,
        60_000,
        60_000,
        "take_profit",
        ctx,
    )


def test_reward_is_clipped_return_on_margin() -> None:
    r = reward_from_trade(_trade(298.13784))
    assert r is not None
    assert r.value == pytest.approx(0.29813784)  # 298.13784 / 1 000
    assert (r.strategy, r.sizing_state, r.sizing_action, r.time_ms) == (
        "trend_follow",
        "c2/TREND/d0",
        4,
        60_000,
    )
    big = reward_from_trade(_trade(-1_500.0), RewardConfig(clip=1.0))
    assert big is not None and (big.value, big.return_on_margin) == (-1.0, -1.5)


def test_unfilled_trade_yields_no_reward() -> None:
    assert reward_from_trade(_trade(0.0, margin=0.0, qty=0.0)) is None


def test_reward_updates_both_learners() -> None:
    table, selector = QTable(), MetaSelector()
    r = reward_from_trade(_trade(-320.0))
    assert r is not None
    apply_reward(r, table, selector, SizingConfig(alpha=0.5), SelectorConfig())
    state = SizingState(2, Regime.TREND, 0)
    # Q(1.5x) = 0 + 0.5 * (-0.32 - 0) = -0.16 ; selector mean after one reward = -0.32
    assert table.values(state)[4] == pytest.approx(-0.16)
    assert selector.value(Regime.TREND, "trend_follow") == pytest.approx(-0.32)


def test_missing_context_parts_are_skipped() -> None:
    table, selector = QTable(), MetaSelector()
    r = reward_from_trade(_trade(50.0, ctx=TradeContext()))
    assert r is not None
    apply_reward(r, table, selector)
    assert table.q == {} and selector.arms == {}


def test_malformed_state_key_raises() -> None:
    with pytest.raises(InvalidInputError):
        SizingState.from_key("garbage")
