"""Exit planner: ladder, stop, leverage and rounding, hand-computed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.config import ExitPolicy, ExitTuning
from streams.logic.exits import (
    ExitPlan,
    ExitPlanError,
    Instrument,
    PlanRequest,
    adaptive_leverage,
    confidence_scale,
    plan_exits,
    round_to_tick,
    split_ladder,
)
from streams.vocabulary import Side

POLICY = ExitPolicy()
INSTR = Instrument(tick_size=0.01, step_size=1.0)


def _req(
    side: Side = Side.LONG, conf: float = 0.75, atr_pct: float = 0.01, margin: float = 1_000.0
):
    return PlanRequest("BTCUSDT:0:decision", "BTCUSDT", side, 100.0, margin, conf, atr_pct)


def test_long_plan_hand_computed() -> None:
    plan = plan_exits(_req(), POLICY, 30.0, INSTR)
    # ATR = 1 % of 100 = 1.0 ; SL 1.5 ATR = 1.5 -> 98.50 ; confidence 0.75 -> TP scale 1.0
    # leverage = floor(0.32 * 1.0 / 0.015) = floor(21.33) = 21 ; qty = 1 000 * 21 / 100 = 210
    assert plan.leverage == 21
    assert plan.quantity_steps == 210 and plan.quantity == 210.0
    assert plan.tp_steps == (84, 84, 42)  # floor(84.0), floor(84.0), rest 42
    assert plan.tp_prices == (101.0, 101.6, 102.2)
    assert plan.sl_price == 98.5
    assert plan.trailing_callback == 0.008
    assert ExitPlan.from_dict(plan.to_dict()) == plan


def test_short_plan_mirrors_and_confidence_widens_targets() -> None:
    plan = plan_exits(_req(Side.SHORT, conf=1.0), POLICY, 30.0, INSTR)
    # scale 1.2 -> offsets 1.2, 1.92, 2.64 ; leverage floor(0.32*1.2/0.015) = floor(25.6) = 25
    assert plan.tp_prices == (98.8, 98.08, 97.36)
    assert plan.sl_price == 101.5
    assert plan.leverage == 25
    assert plan.quantity_steps == 250  # 1 000 * 25 / 100


def test_leverage_capped_and_floored() -> None:
    t = ExitTuning()
    assert adaptive_leverage(0.001, 0.75, 30.0, t) == 30  # 0.32 / 0.001 = 320 -> cap 30
    assert adaptive_leverage(0.5, 0.5, 30.0, t) == 1  # 0.32 * 0.8 / 0.5 = 0.512 -> at least 1
    # Seed map ETH example: stop 1.2 % away at confidence 0.75: 0.32 / 0.012 = 26.67 -> 26
    assert adaptive_leverage(0.012, 0.75, 30.0, t) == 26


def test_confidence_scale_clamped() -> None:
    t = ExitTuning()
    assert [confidence_scale(c, t) for c in (0.2, 0.5, 0.75, 1.0)] == pytest.approx(
        [0.8, 0.8, 1.0, 1.2]
    )


def test_rounding_is_exact_decimal() -> None:
    assert round_to_tick(0.1 + 0.2, 0.1) == 0.3
    assert round_to_tick(2975.3249, 0.01) == 2975.32
    assert round_to_tick(2975.325, 0.01) == 2975.32  # half-even: 297532.5 -> 297532
    assert round_to_tick(0.00012345, 0.0000001) == 0.0001234  # 1234.5 ticks -> even 1234


def test_margin_below_one_step_raises() -> None:
    with pytest.raises(ExitPlanError, match="less than one step"):
        plan_exits(
            _req(margin=1.0), POLICY, 30.0, Instrument(0.01, 10.0)
        )  # 21 units < one step of 10


@given(
    st.integers(0, 10_000), st.sampled_from([(0.4, 0.4, 0.2), (0.5, 0.5), (0.2, 0.3, 0.5), (1.0,)])
)
def test_ladder_always_sums_to_the_position(steps: int, fractions: tuple[float, ...]) -> None:
    legs = split_ladder(steps, fractions)
    assert sum(legs) == steps and all(n >= 0 for n in legs) and len(legs) == len(fractions)


@given(st.floats(0.0005, 0.05), st.floats(0.5, 1.0), st.sampled_from(Side))
def test_levels_on_the_right_side(atr_pct: float, conf: float, side: Side) -> None:
    plan = plan_exits(
        _req(side, conf, atr_pct, margin=2_000.0), POLICY, 30.0, Instrument(0.01, 0.001)
    )
    s = side.sign
    assert all(s * (p - 100.0) > 0 for p in plan.tp_prices)
    assert [s * p for p in plan.tp_prices] == sorted(s * p for p in plan.tp_prices)
    assert s * (plan.sl_price - 100.0) < 0
    assert 1 <= plan.leverage <= 30
