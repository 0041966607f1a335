"""Exit planner stage: ``OrderApproved`` -> ``OrderPlanned`` (entry + TP ladder + SL + trailing).

Stateless. Tick and step sizes come from :data:`INSTRUMENTS` (Binance USD-M futures
``PRICE_FILTER.tickSize`` / ``LOT_SIZE.stepSize``) or, for another symbol, from
:func:`fallback_instrument`. The execution stage rebuilds the plan from the record alone
(:func:`plan_from_order`), so the Faust topology and the runner trade exactly the same plan.
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
from streams.errors import InvalidInputError
from streams.logic.exits import (
    ExitPlan,
    ExitPlanError,
    Instrument,
    PlanRequest,
    plan_exits,
    split_ladder,
)

#: Price tick and quantity step of the default symbols on Binance USD-M futures.
INSTRUMENTS: dict[str, Instrument] = {
    "BTCUSDT": Instrument(0.1, 0.001),
    "ETHUSDT": Instrument(0.01, 0.001),
    "SOLUSDT": Instrument(0.01, 1.0),
    "BNBUSDT": Instrument(0.01, 0.01),
    "XRPUSDT": Instrument(0.0001, 0.1),
    "AVAXUSDT": Instrument(0.001, 1.0),
    "ADAUSDT": Instrument(0.0001, 1.0),
    "LINKUSDT": Instrument(0.001, 0.01),
    "LTCUSDT": Instrument(0.01, 0.001),
    "BCHUSDT": Instrument(0.01, 0.001),
    "DOGEUSDT": Instrument(0.00001, 1.0),
}


def fallback_instrument(price: float) -> Instrument:
    """A grid for an unlisted symbol: tick ~1e-6 of the price, step worth 0.1-1 USD."""
    magnitude = math.floor(math.log10(price))
    return Instrument(10.0 ** (magnitude - 6), 10.0**-magnitude)


def leg_id(kind: LegKind, index: int = 0) -> str:
    """``tp1``.., ``sl``, ``trail``: the leg part of an order id (``ids.order_id``)."""
    return f"tp{index + 1}" if kind is LegKind.TP else kind.value.lower()


def planned_record(o: OrderApproved, plan: ExitPlan) -> OrderPlanned:
    """The contract record of an exit plan (entry at the reference price, market order)."""
    tp_legs = tuple(
        OrderLeg(leg_id=leg_id(LegKind.TP, i), kind=LegKind.TP, price=price, fraction=fraction)
        for i, (price, fraction) in enumerate(zip(plan.tp_prices, plan.tp_fractions, strict=True))
    )
    sl = OrderLeg(leg_id="sl", kind=LegKind.SL, price=plan.sl_price, fraction=1.0)
    trail = OrderLeg(
        leg_id="trail", kind=LegKind.TRAIL, price=None, fraction=1.0,
        callback=plan.trailing_callback,
    )  # fmt: skip
    d = o.decision
    return OrderPlanned(
        order_id=o.order_id,
        decision_id=o.decision_id,
        symbol=o.symbol,
        event_time_ms=o.event_time_ms,
        side=d.side,
        entry_type=EntryType.MARKET,
        entry_price=plan.reference_price,
        qty=plan.quantity,
        leverage=float(plan.leverage),
        margin_usd=plan.margin,
        legs=(*tp_legs, sl, trail),
        strategy=d.strategy,
        regime=d.regime,
        size_multiplier=d.size_multiplier,
        confidence=d.confidence,
        model_versions=dict(d.model_versions),
    )


def empty_plan_record(o: OrderApproved) -> OrderPlanned:
    """A zero-quantity plan (the margin buys less than one step): execution closes it unfilled,
    which releases the risk reservation through the normal ``trades.closed`` path."""
    d = o.decision
    return OrderPlanned(
        order_id=o.order_id, decision_id=o.decision_id, symbol=o.symbol,
        event_time_ms=o.event_time_ms, side=d.side, entry_type=EntryType.MARKET,
        entry_price=d.price, qty=0.0, leverage=1.0, margin_usd=o.approved_margin_usd, legs=(),
        strategy=d.strategy, regime=d.regime, size_multiplier=d.size_multiplier,
        confidence=d.confidence, model_versions=dict(d.model_versions),
    )  # fmt: skip


def plan_from_order(o: OrderPlanned, instrument: Instrument) -> ExitPlan:
    """Rebuild the exit plan from its record: offsets are the legs' distances to the entry."""
    tps = [leg for leg in o.legs if leg.kind is LegKind.TP]
    sl = next((leg for leg in o.legs if leg.kind is LegKind.SL), None)
    trail = next((leg for leg in o.legs if leg.kind is LegKind.TRAIL), None)
    ref = o.entry_price
    steps = round(o.qty / instrument.step_size)
    fractions = tuple(leg.fraction for leg in tps) or (1.0,)
    return ExitPlan(
        decision_id=o.decision_id,
        symbol=o.symbol,
        side=o.side,
        reference_price=ref,
        margin=o.margin_usd,
        leverage=max(1, round(o.leverage)),
        quantity_steps=steps,
        tp_fractions=fractions,
        tp_steps=split_ladder(steps, fractions),
        tp_offsets=tuple(abs((leg.price or ref) - ref) for leg in tps) or (0.0,),
        tp_prices=tuple(leg.price or ref for leg in tps) or (ref,),
        sl_offset=abs((sl.price if sl and sl.price else ref) - ref),
        sl_price=sl.price if sl and sl.price else ref,
        trailing_callback=trail.callback if trail and trail.callback else 0.0,
        instrument=instrument,
    )


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
        req = PlanRequest(
            decision_id=o.decision_id,
            symbol=o.symbol,
            side=d.side,
            reference_price=d.price,
            margin=o.approved_margin_usd,
            confidence=d.confidence,
            atr_pct=d.atr_pct,
        )
        cap = min(o.max_leverage, self.limits.max_leverage)
        try:
            plan = plan_exits(
                req, self.policy, cap, self.instrument(o.symbol, d.price), self.tuning
            )
        except (ExitPlanError, InvalidInputError):  # e.g. zero margin at zero equity
            return empty_plan_record(o)
        return planned_record(o, plan)
