"""Exit planner: ladder, stop, leverage and rounding, hand-computed."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.adapters.venues.interface import ExitPlan
from streams.config import ExitPolicy, ExitTuning, RiskLimits
from streams.contracts.records import LegKind, OrderApproved, OrderPlanned
from streams.instruments import Instrument, round_to_tick, split_ladder
from streams.stages.execution import plan_from_order
from streams.stages.exits import (
    ExitPlanError,
    ExitPlannerStage,
    adaptive_leverage,
    confidence_scale,
    plan_exits,
)
from streams.vocabulary import Side
from tests.unit.stages.factories import T0, approved, decision

POLICY = ExitPolicy()
INSTR = Instrument(tick_size=0.01, step_size=1.0)


def _approved(
    side: Side = Side.LONG, conf: float = 0.75, atr_pct: float = 0.01, margin: float = 1_000.0
) -> OrderApproved:
    d = dataclasses.replace(
        decision("BTCUSDT", side=side, price=100.0), confidence=conf, atr_pct=atr_pct
    )
    return approved(d, margin)


def _tp_prices(plan: OrderPlanned) -> tuple[float | None, ...]:
    return tuple(leg.price for leg in plan.legs if leg.kind is LegKind.TP)


def _sl_price(plan: OrderPlanned) -> float | None:
    (sl,) = (leg for leg in plan.legs if leg.kind is LegKind.SL)
    return sl.price


def test_long_plan_hand_computed() -> None:
    plan = plan_exits(_approved(), POLICY, 30.0, INSTR)
    # ATR = 1 % of 100 = 1.0 ; SL 1.5 ATR = 1.5 -> 98.50 ; confidence 0.75 -> TP scale 1.0
    # leverage = floor(0.32 * 1.0 / 0.015) = floor(21.33) = 21 ; qty = 1 000 * 21 / 100 = 210
    assert plan.leverage == 21.0 and plan.qty == 210.0 and plan.margin_usd == 1_000.0
    assert [leg.leg_id for leg in plan.legs] == ["tp1", "tp2", "tp3", "sl", "trail"]
    assert [leg.fraction for leg in plan.legs] == [0.4, 0.4, 0.2, 1.0, 1.0]
    assert _tp_prices(plan) == (101.0, 101.6, 102.2)
    assert _sl_price(plan) == 98.5
    assert plan.legs[-1].callback == 0.008 and plan.legs[-1].price is None
    assert (plan.entry_price, plan.event_time_ms, plan.decision_id) == (
        100.0,
        T0,
        f"BTCUSDT:{T0}:decision",
    )
    # What the venue works: whole steps per leg, levels as distances from the entry.
    venue_plan = plan_from_order(plan, INSTR)
    assert venue_plan.quantity_steps == 210 and venue_plan.quantity == 210.0
    assert venue_plan.tp_steps == (84, 84, 42)  # floor(84.0), floor(84.0), rest 42
    assert venue_plan.tp_offsets == pytest.approx((1.0, 1.6, 2.2))
    assert venue_plan.sl_offset == pytest.approx(1.5) and venue_plan.trailing_callback == 0.008
    assert ExitPlan.from_dict(venue_plan.to_dict()) == venue_plan


def test_short_plan_mirrors_and_confidence_widens_targets() -> None:
    plan = plan_exits(_approved(Side.SHORT, conf=1.0), POLICY, 30.0, INSTR)
    # scale 1.2 -> offsets 1.2, 1.92, 2.64 ; leverage floor(0.32*1.2/0.015) = floor(25.6) = 25
    assert _tp_prices(plan) == (98.8, 98.08, 97.36)
    assert _sl_price(plan) == 101.5
    assert plan.leverage == 25.0
    assert plan.qty == 250.0  # 1 000 * 25 / 100


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
            _approved(margin=1.0), POLICY, 30.0, Instrument(0.01, 10.0)
        )  # 21 units < one step of 10


def test_stage_plans_an_unaffordable_order_as_zero_quantity() -> None:
    stage = ExitPlannerStage(POLICY, RiskLimits(), instruments={"BTCUSDT": Instrument(0.01, 10.0)})
    for margin in (1.0, 0.0):  # less than one step; no margin at all (zero equity)
        plan = stage.on_approved(_approved(margin=margin))
        assert (plan.qty, plan.legs, plan.leverage, plan.margin_usd) == (0.0, (), 1.0, margin)
        assert plan.entry_price == 100.0 and plan.strategy == "trend_follow"


@given(
    st.integers(0, 10_000), st.sampled_from([(0.4, 0.4, 0.2), (0.5, 0.5), (0.2, 0.3, 0.5), (1.0,)])
)
def test_ladder_always_sums_to_the_position(steps: int, fractions: tuple[float, ...]) -> None:
    legs = split_ladder(steps, fractions)
    assert sum(legs) == steps and all(n >= 0 for n in legs) and len(legs) == len(fractions)


@given(st.floats(0.0005, 0.05), st.floats(0.5, 1.0), st.sampled_from(Side))
def test_levels_on_the_right_side(atr_pct: float, conf: float, side: Side) -> None:
    plan = plan_exits(
        _approved(side, conf, atr_pct, margin=2_000.0), POLICY, 30.0, Instrument(0.01, 0.001)
    )
    s = side.sign
    tps = [p for p in _tp_prices(plan) if p is not None]
    assert len(tps) == 3 and all(s * (p - 100.0) > 0 for p in tps)
    assert [s * p for p in tps] == sorted(s * p for p in tps)
    sl = _sl_price(plan)
    assert sl is not None and s * (sl - 100.0) < 0
    assert 1 <= plan.leverage <= 30
