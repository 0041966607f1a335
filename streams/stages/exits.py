"""Exit planner stage: ``OrderApproved`` -> ``OrderPlanned`` (entry + TP ladder + SL + trailing).

Stateless, and event time passes through: the plan carries its approval's ``event_time_ms`` (the
execution stage places it at that bar's close). The rules, all in this module:

Distances are in ATR (``ExitPolicy.tp_distance_atr``, default 1.0 / 1.6 / 2.2 ATR for the
40 / 40 / 20 ladder, stop at 1.5 ATR). Take-profit distances are scaled by confidence
(:func:`confidence_scale`: 0.8x at confidence 0.5 up to 1.2x at 1.0 - a confident signal is
given room to run); the stop distance is not (risk per trade must not grow with conviction).

Leverage is adaptive under the cap: the largest whole leverage at which a stop-out costs at
most ``max_margin_loss_at_stop`` of the margin, scaled by the same confidence factor:
``floor(clamp(max_loss * scale / stop_distance_pct, 1, cap))``. With the seed map's ETH example
(stop 1.2 % away, confidence 0.75 -> scale 1.0, max loss 0.32) that is floor(26.7) = 26x.

Quantities are whole multiples of the symbol's step size and prices are rounded to its tick
(:mod:`streams.instruments`: :data:`~streams.instruments.INSTRUMENTS` or, for another symbol,
:func:`~streams.instruments.fallback_instrument`). A margin that buys less than one step gives a
zero-quantity plan, which execution closes unfilled (releasing the risk reservation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from streams.config import ExitPolicy, ExitTuning, RiskLimits, Settings
from streams.contracts.records import (
    EntryType,
    LegKind,
    OrderApproved,
    OrderLeg,
    OrderPlanned,
)
from streams.errors import InvalidInputError, LogicError
from streams.instruments import (
    INSTRUMENTS,
    Instrument,
    anchor,
    fallback_instrument,
    steps_of,
)


class ExitPlanError(LogicError):
    """A plan cannot be made (e.g. the margin buys less than one step)."""


def confidence_scale(confidence: float, tuning: ExitTuning) -> float:
    """Linear map of confidence onto the TP distance multiplier, clamped at both ends."""
    lo, hi = tuning.low_confidence, tuning.high_confidence
    w = min(1.0, max(0.0, (confidence - lo) / (hi - lo)))
    return tuning.scale_at_low + w * (tuning.scale_at_high - tuning.scale_at_low)


def adaptive_leverage(
    stop_distance_pct: float, confidence: float, cap: float, tuning: ExitTuning
) -> int:
    """Largest whole leverage with a stop-out costing <= the allowed share of margin."""
    if not stop_distance_pct > 0.0:
        raise InvalidInputError("stop distance", stop_distance_pct, "> 0")
    raw = tuning.max_margin_loss_at_stop * confidence_scale(confidence, tuning) / stop_distance_pct
    return max(1, math.floor(min(raw, cap) + 1e-9))


def leg_id(kind: LegKind, index: int = 0) -> str:
    """``tp1``.., ``sl``, ``trail``: the leg part of an order id (``ids.order_id``)."""
    return f"tp{index + 1}" if kind is LegKind.TP else kind.value.lower()


def plan_exits(
    o: OrderApproved,
    policy: ExitPolicy,
    max_leverage: float,
    instrument: Instrument,
    tuning: ExitTuning = ExitTuning(),
) -> OrderPlanned:
    """The full exit plan of ``o`` under ``policy`` and the leverage cap (entry at market)."""
    d, margin = o.decision, o.approved_margin_usd
    ref = d.price
    if not (ref > 0.0 and d.atr_pct > 0.0 and margin > 0.0):
        raise InvalidInputError(
            "approved order", o.decision_id, "positive price, atr_pct and margin"
        )
    atr = d.atr_pct * ref
    tick = instrument.tick_size
    sl_offset = max(atr * policy.sl_distance_atr, tick)
    leverage = adaptive_leverage(sl_offset / ref, d.confidence, max_leverage, tuning)
    steps = steps_of(margin * leverage / ref, instrument.step_size)
    if steps < 1:
        raise ExitPlanError(
            f"{o.decision_id}: margin {margin} x {leverage} buys less than one step "
            f"{instrument.step_size} of {o.symbol} at {ref}"
        )
    scale = confidence_scale(d.confidence, tuning)
    tp_prices = [
        anchor(d.side, ref, max(atr * distance * scale, tick), tick)
        for distance in policy.tp_distance_atr
    ]
    tp_legs = tuple(
        OrderLeg(leg_id=leg_id(LegKind.TP, i), kind=LegKind.TP, price=price, fraction=fraction)
        for i, (price, fraction) in enumerate(zip(tp_prices, policy.tp_fractions, strict=True))
    )
    sl_price = anchor(d.side, ref, -sl_offset, tick)
    sl = OrderLeg(leg_id="sl", kind=LegKind.SL, price=sl_price, fraction=1.0)
    trail = OrderLeg(
        leg_id="trail", kind=LegKind.TRAIL, price=None, fraction=1.0,
        callback=policy.trailing_callback,
    )  # fmt: skip
    qty = steps * instrument.step_size
    return _planned(o, ref, qty, float(leverage), (*tp_legs, sl, trail))


def empty_plan(o: OrderApproved) -> OrderPlanned:
    """A zero-quantity plan (the margin buys less than one step): execution closes it unfilled,
    which releases the risk reservation through the normal ``trades.closed`` path."""
    return _planned(o, o.decision.price, 0.0, 1.0, ())


def _planned(
    o: OrderApproved, entry_price: float, qty: float, leverage: float, legs: tuple[OrderLeg, ...]
) -> OrderPlanned:
    d = o.decision
    return OrderPlanned(
        order_id=o.order_id, decision_id=o.decision_id, symbol=o.symbol,
        event_time_ms=o.event_time_ms, side=d.side, entry_type=EntryType.MARKET,
        entry_price=entry_price, qty=qty, leverage=leverage, margin_usd=o.approved_margin_usd,
        legs=legs, strategy=d.strategy, regime=d.regime, size_multiplier=d.size_multiplier,
        confidence=d.confidence, model_versions=dict(d.model_versions),
    )  # fmt: skip


class ExitPlannerStage:
    """Turns each approved order into its full exit plan (see the module doc)."""

    stage = "exit_planner"

    def __init__(
        self,
        policy: ExitPolicy,
        limits: RiskLimits,
        instruments: Mapping[str, Instrument] | None = None,
        tuning: ExitTuning | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.instruments = dict(INSTRUMENTS if instruments is None else instruments)
        self.tuning = tuning or ExitTuning()

    @classmethod
    def from_settings(cls, settings: Settings) -> ExitPlannerStage:
        """The stage as the settings configure it."""
        return cls(settings.exits, settings.risk, tuning=settings.exit_tuning)

    def instrument(self, symbol: str, price: float) -> Instrument:
        """The symbol's grid (the fallback grid is remembered so it never changes mid-run)."""
        found = self.instruments.get(symbol)
        if found is None:
            found = self.instruments[symbol] = fallback_instrument(price)
        return found

    def on_approved(self, o: OrderApproved) -> OrderPlanned:
        """Entry + 40/40/20 TP ladder + stop + trailing (zero quantity if unaffordable)."""
        d = o.decision
        cap = min(o.max_leverage, self.limits.max_leverage)
        try:
            return plan_exits(o, self.policy, cap, self.instrument(o.symbol, d.price), self.tuning)
        except (ExitPlanError, InvalidInputError):  # e.g. zero margin at zero equity
            return empty_plan(o)
