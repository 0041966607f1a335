"""Exit planner: entry + TP ladder + stop loss + trailing stop + adaptive leverage.

Distances are in ATR (``ExitPolicy.tp_distance_atr``, default 1.0 / 1.6 / 2.2 ATR for the
40 / 40 / 20 ladder, stop at 1.5 ATR). Take-profit distances are scaled by confidence
(:func:`confidence_scale`: 0.8x at confidence 0.5 up to 1.2x at 1.0 - a confident signal is
given room to run); the stop distance is not (risk per trade must not grow with conviction).

Leverage is adaptive under the cap: the largest whole leverage at which a stop-out costs at
most ``max_margin_loss_at_stop`` of the margin, scaled by the same confidence factor:
``floor(clamp(max_loss * scale / stop_distance_pct, 1, cap))``. With the seed map's ETH example
(stop 1.2 % away, confidence 0.75 -> scale 1.0, max loss 0.32) that is floor(26.7) = 26x.

Quantities are whole multiples of the symbol's step size, kept as integer step counts so the
ladder's legs always sum *exactly* to the position: every leg but the last takes
``floor(steps * fraction)``, the last takes the rest. Prices are rounded to the tick size
(half-even) through :class:`decimal.Decimal`, so 0.1 + 0.2 never yields 0.30000000000000004.

The plan carries *offsets* (price distances) as well as prices anchored at the reference
price: the position monitor re-anchors them at the actual average entry price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from streams.config import ExitPolicy, ExitTuning
from streams.errors import InvalidInputError, LogicError
from streams.vocabulary import Side


class ExitPlanError(LogicError):
    """A plan cannot be made (e.g. the margin buys less than one step)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """Price and quantity grid of a symbol."""

    tick_size: float
    step_size: float


def round_to_tick(price: float, tick: float) -> float:
    """``price`` rounded half-even to a multiple of ``tick``, exactly in decimal."""
    t = Decimal(repr(tick))
    n = (Decimal(repr(price)) / t).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return float(n * t)


def steps_of(quantity: float, step: float) -> int:
    """Whole steps in ``quantity`` (rounded down; 1e-9 slack absorbs float noise like 2.9999999)."""
    return math.floor(quantity / step + 1e-9)


def split_ladder(steps: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Integer leg sizes: ``floor(steps * f)`` for every leg but the last, which takes the rest."""
    legs = [math.floor(steps * f + 1e-9) for f in fractions[:-1]]
    return (*legs, steps - sum(legs))


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


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """Entry + TP ladder + SL + trailing for one approved decision (``orders.intents``)."""

    decision_id: str
    symbol: str
    side: Side
    reference_price: float
    margin: float
    leverage: int
    quantity_steps: int
    tp_fractions: tuple[float, ...]
    tp_steps: tuple[int, ...]
    tp_offsets: tuple[float, ...]
    tp_prices: tuple[float, ...]
    sl_offset: float
    sl_price: float
    trailing_callback: float
    instrument: Instrument

    @property
    def quantity(self) -> float:
        """Position size in base units."""
        return self.quantity_steps * self.instrument.step_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record."""
        data = asdict(self)
        data["side"] = self.side.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitPlan:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["side"] = Side(data["side"])
        fields["instrument"] = Instrument(**data["instrument"])
        for k in ("tp_fractions", "tp_steps", "tp_offsets", "tp_prices"):
            fields[k] = tuple(data[k])
        return cls(**fields)


def anchor(side: Side, entry: float, offset: float, tick: float) -> float:
    """Price ``offset`` in the favourable direction from ``entry`` (negative offset = adverse)."""
    return round_to_tick(entry + side.sign * offset, tick)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """An approved decision as the exit planner needs it."""

    decision_id: str
    symbol: str
    side: Side
    reference_price: float
    margin: float
    confidence: float
    atr_pct: float


def plan_exits(
    req: PlanRequest,
    policy: ExitPolicy,
    max_leverage: float,
    instrument: Instrument,
    tuning: ExitTuning = ExitTuning(),
) -> ExitPlan:
    """Build the full exit plan of ``req`` under ``policy`` and the leverage cap."""
    if not (req.reference_price > 0.0 and req.atr_pct > 0.0 and req.margin > 0.0):
        raise InvalidInputError("plan request", req, "positive price, atr_pct and margin")
    atr = req.atr_pct * req.reference_price
    tick = instrument.tick_size
    sl_offset = max(atr * policy.sl_distance_atr, tick)
    leverage = adaptive_leverage(
        sl_offset / req.reference_price, req.confidence, max_leverage, tuning
    )
    steps = steps_of(req.margin * leverage / req.reference_price, instrument.step_size)
    if steps < 1:
        raise ExitPlanError(
            f"{req.decision_id}: margin {req.margin} x {leverage} buys less than one step "
            f"{instrument.step_size} of {req.symbol} at {req.reference_price}"
        )
    scale = confidence_scale(req.confidence, tuning)
    tp_offsets = tuple(max(atr * d * scale, tick) for d in policy.tp_distance_atr)
    return ExitPlan(
        decision_id=req.decision_id,
        symbol=req.symbol,
        side=req.side,
        reference_price=req.reference_price,
        margin=req.margin,
        leverage=leverage,
        quantity_steps=steps,
        tp_fractions=policy.tp_fractions,
        tp_steps=split_ladder(steps, policy.tp_fractions),
        tp_offsets=tp_offsets,
        tp_prices=tuple(anchor(req.side, req.reference_price, o, tick) for o in tp_offsets),
        sl_offset=sl_offset,
        sl_price=anchor(req.side, req.reference_price, -sl_offset, tick),
        trailing_callback=policy.trailing_callback,
        instrument=instrument,
    )
