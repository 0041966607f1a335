"""Execution stage: ``OrderPlanned`` + market ticks -> fills, position changes, closed trades.

The stage maps records to the venue and back; the fill and exit rules are the venue's
(:mod:`streams.adapters.venues.paper`, behind :mod:`streams.adapters.venues.interface`). One
:class:`ExecutionState` per symbol wraps a :class:`~streams.adapters.venues.paper.PaperVenue`
and the order records it works on (the trade record needs the decision's strategy, regime,
sizing and model versions). An order reaches the venue as the plan rebuilt from its record
alone (:func:`plan_from_order`), so the Faust topology and the runner trade exactly the same
plan.

With ``QT_MODE=testnet`` the state wraps a
:class:`~streams.adapters.venues.binance.venue.BinanceVenue` instead: bars move nothing
(:meth:`ExecutionStage.on_tick` returns nothing), the exchange's events do
(:meth:`ExecutionStage.on_venue_event`), and what the venue wants sent waits in its outbox
(:meth:`ExecutionStage.take_commands`) for the gateway (docs/venues.md). Same records out.

Event time: an order of the decision on bar ``t`` (open time ``t``) is placed at the bar's
close, ``t + bar_ms``, so it can fill from bar ``t + bar_ms`` on, never on the bar that produced
the signal. Only closed klines drive the venue; TRADE ticks are not simulated yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.adapters.venues.binance.messages import Command, ExchangeEvent
from streams.adapters.venues.binance.venue import BinanceVenue, LivePosition, VenueRules
from streams.adapters.venues.interface import (
    Bar,
    ClosedTrade,
    ExitPlan,
    Fill,
    OrderIntent,
    PositionEventKind,
    TradeContext,
)
from streams.adapters.venues.interface import PositionEvent as VenuePositionEvent
from streams.adapters.venues.paper import PaperPosition, PaperVenue
from streams.config import PaperConfig, Settings
from streams.contracts.records import (
    ExitReason,
    FillExecuted,
    LegKind,
    Liquidity,
    OrderPlanned,
    OrderSide,
    PositionChanged,
    PositionEvent,
    TickKind,
    TickReceived,
    TradeClosed,
)
from streams.ids import SeenIds
from streams.instruments import INSTRUMENTS, Instrument, fallback_instrument, split_ladder

ExecutionRecord = FillExecuted | PositionChanged | TradeClosed

VENUE = "paper"
TESTNET_VENUE = "binance-testnet"
_EXIT_REASONS = {
    "take_profit": ExitReason.TAKE_PROFIT,
    "stop_loss": ExitReason.STOP_LOSS,
    "trailing_stop": ExitReason.TRAILING_STOP,
    "reconciled": ExitReason.MANUAL,  # closed outside the plan (found by reconciliation)
}
_POSITION_EVENTS = {
    PositionEventKind.ENTRY_PARTIAL: PositionEvent.INCREASED,
    PositionEventKind.OPENED: PositionEvent.OPENED,
    PositionEventKind.TP_FILLED: PositionEvent.REDUCED,
}


@dataclass(slots=True)
class ExecutionState:
    """One symbol's venue (paper or Binance) and the order records of its live positions."""

    venue: PaperVenue | BinanceVenue
    orders: dict[str, OrderPlanned] = field(default_factory=dict)  # key: decision id

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        orders = {k: o.to_avro() for k, o in self.orders.items()}
        if isinstance(self.venue, BinanceVenue):
            return {"venue": "binance", "binance": self.venue.to_dict(), "orders": orders}
        return {
            "positions": [p.to_dict() for ps in self.venue.positions.values() for p in ps],
            "known": self.venue.known.to_dict(),
            "orders": orders,
        }

    def open_positions(self) -> int:
        """Positions not closed yet."""
        if isinstance(self.venue, BinanceVenue):
            return len(self.venue.positions)
        return sum(len(ps) for ps in self.venue.positions.values())

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], cfg: PaperConfig, rules: VenueRules | None = None
    ) -> ExecutionState:
        """Inverse of :meth:`to_dict` (the venue config is the stage's, not the state's)."""
        orders = {k: OrderPlanned.from_avro(v) for k, v in data["orders"].items()}
        if data.get("venue") == "binance":
            return cls(BinanceVenue.from_dict(data["binance"], rules or VenueRules()), orders)
        venue = PaperVenue(cfg)
        for raw in data["positions"]:
            pos = PaperPosition.from_dict(raw)
            venue.positions.setdefault(pos.intent.plan.symbol, []).append(pos)
        venue.known = SeenIds.from_dict(data["known"])
        return cls(venue, orders)


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


def _leg_kind(leg: str) -> LegKind:
    if leg.startswith("tp"):
        return LegKind.TP
    if leg.startswith("sl") or leg == "close":  # a re-placed stop, a flattening order
        return LegKind.SL
    return {"entry": LegKind.ENTRY}.get(leg, LegKind.TRAIL)


def fill_record(f: Fill, o: OrderPlanned, cfg: PaperConfig, venue: str = VENUE) -> FillExecuted:
    """Contract form of a fill (``leg_id`` is the order id's last part); an exchange's fills
    carry no modelled slippage (their price is the real one)."""
    leg = f.order_id.rsplit(":", 1)[-1]
    taker = f.liquidity == "taker"
    slippage = cfg.slippage_bps if taker and venue == VENUE else 0.0
    return FillExecuted(
        fill_id=f.fill_id,
        order_id=f.order_id,
        decision_id=f.decision_id,
        symbol=f.symbol,
        event_time_ms=f.time_ms,
        leg_id=leg,
        leg_kind=_leg_kind(leg),
        side=OrderSide(f.side),
        qty=f.quantity,
        price=f.price,
        fee=f.fee,
        is_partial=leg == "entry" and f.quantity < o.qty,
        liquidity=Liquidity.TAKER if taker else Liquidity.MAKER,
        venue=venue,
        slippage_bps=slippage,
    )


def position_record(
    e: VenuePositionEvent, pos: PaperPosition, o: OrderPlanned
) -> PositionChanged | None:
    """Contract form of a quantity change (acceptance, trailing and stop events map to none:
    the stop's quantity change is the CLOSED record of the trade)."""
    kind = _POSITION_EVENTS.get(e.kind)
    if kind is None:
        return None
    step = pos.intent.plan.instrument.step_size
    entry, s = pos.avg_entry, pos.sign
    exited = pos.exited_steps * step
    realised = s * (pos.exit_value - entry * exited) - pos.fees
    stop = s * pos.stop_f if pos.stop_f else None
    return _position_changed(e, o, kind, entry, s, realised, stop)


def live_position_record(
    e: VenuePositionEvent, pos: LivePosition, o: OrderPlanned
) -> PositionChanged | None:
    """Contract form of a quantity change of a position on the exchange (see
    :func:`position_record`); the stop is the stop-loss leg's trigger, re-anchored at the fill."""
    kind = _POSITION_EVENTS.get(e.kind)
    if kind is None:
        return None
    entry, s = pos.avg_entry, pos.plan.side.sign
    realised = s * (pos.exit_value - entry * pos.exited_qty) - pos.fees
    stop = entry - s * pos.plan.sl_offset if entry else None
    return _position_changed(e, o, kind, entry, s, realised, stop)


def _position_changed(
    e: VenuePositionEvent,
    o: OrderPlanned,
    kind: PositionEvent,
    entry: float,
    s: float,
    realised: float,
    stop: float | None,
) -> PositionChanged:
    """The ``positions.events`` record of a quantity change, on either venue."""
    return PositionChanged(
        position_id=e.position_id,
        order_id=o.order_id,
        decision_id=o.decision_id,
        symbol=e.symbol,
        event_time_ms=e.time_ms,
        event=kind,
        side=o.side,
        qty_open=e.open_quantity,
        entry_price=entry,
        mark_price=e.price,
        realized_pnl=realised,
        unrealized_pnl=s * (e.price - entry) * e.open_quantity,
        stop_price=stop,
    )


def closed_records(t: ClosedTrade, o: OrderPlanned) -> tuple[PositionChanged, TradeClosed]:
    """The CLOSED position change and the ``trades.closed`` record of a flat position."""
    reason = _EXIT_REASONS.get(t.exit_reason, ExitReason.OTHER)
    closed = PositionChanged(
        position_id=t.trade_id,
        order_id=o.order_id,
        decision_id=o.decision_id,
        symbol=t.symbol,
        event_time_ms=t.closed_ms,
        event=PositionEvent.CLOSED,
        side=o.side,
        qty_open=0.0,
        entry_price=t.entry_price,
        mark_price=t.exit_price,
        realized_pnl=t.net_pnl,
        unrealized_pnl=0.0,
        stop_price=None,
    )
    trade = TradeClosed(
        trade_id=t.trade_id,
        decision_id=o.decision_id,
        order_id=o.order_id,
        symbol=t.symbol,
        event_time_ms=t.closed_ms,
        opened_ms=t.opened_ms,
        side=t.side,
        entry_price=t.entry_price,
        exit_price=t.exit_price,
        qty=t.quantity,
        leverage=float(t.leverage),
        margin_usd=t.margin,
        gross_pnl=t.gross_pnl,
        fees=t.fees,
        net_pnl=t.net_pnl,
        return_pct=t.net_pnl / t.margin if t.margin > 0.0 else 0.0,
        holding_ms=t.holding_ms,
        exit_reason=reason,
        strategy=o.strategy,
        regime=o.regime,
        size_multiplier=o.size_multiplier,
        confidence=o.confidence,
        model_versions=dict(o.model_versions),
    )
    return closed, trade


class ExecutionStage:
    """Execution per symbol on the paper venue or on Binance (see the module doc)."""

    stage = "execution"

    def __init__(
        self,
        cfg: PaperConfig | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        venue: str = "paper",
        rules: VenueRules | None = None,
    ) -> None:
        if venue not in ("paper", "testnet"):
            raise ValueError(f"unknown venue {venue!r} (paper | testnet)")
        self.cfg = cfg or PaperConfig()
        self.instruments = dict(INSTRUMENTS if instruments is None else instruments)
        self.venue = venue
        self.rules = rules or VenueRules()
        self.venue_name = TESTNET_VENUE if venue == "testnet" else VENUE

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutionStage:
        """The stage as the settings configure it (``QT_MODE`` picks the venue)."""
        b = settings.binance
        rules = VenueRules(b.trail_after_tp1, b.unknown_position, b.adopt_stop_fraction)
        return cls(settings.paper, venue=settings.mode, rules=rules)

    def new_state(self) -> ExecutionState:
        """An empty venue for one symbol."""
        if self.venue == "testnet":
            return ExecutionState(BinanceVenue(self.rules))
        return ExecutionState(PaperVenue(self.cfg))

    def placed_ms(self, o: OrderPlanned) -> int:
        """When the order reaches the venue: the close of the bar its decision was made on."""
        return o.event_time_ms + self.cfg.bar_ms

    def on_order(self, state: ExecutionState, o: OrderPlanned) -> list[ExecutionRecord]:
        """Accept an order (once per decision); fills come from later bars (or the exchange)."""
        if o.decision_id in state.venue.known:
            return []
        instrument = self.instruments.get(o.symbol) or fallback_instrument(o.entry_price)
        plan = plan_from_order(o, instrument)
        ctx = TradeContext(
            confidence=o.confidence,
            model_versions=tuple(f"{m}@{v}" for m, v in sorted(o.model_versions.items())),
            strategy=o.strategy,
            regime=o.regime.value,
        )
        state.orders[o.decision_id] = o
        intent = OrderIntent(plan, self.placed_ms(o), ctx)
        if isinstance(state.venue, BinanceVenue):
            events = state.venue.submit(intent, o.entry_type.value, o.entry_price)
            return self._live_records(state, events)  # a refusal closes the trade at once
        state.venue.submit(intent)
        return []  # acceptance changes no quantity: nothing for the contract topics

    def on_tick(self, state: ExecutionState, t: TickReceived) -> list[ExecutionRecord]:
        """Advance the symbol's positions by one closed kline; the records, in order."""
        venue = state.venue
        if isinstance(venue, BinanceVenue):
            return []  # the exchange fills, not the bars
        if t.kind is not TickKind.KLINE_1M or not venue.positions.get(t.symbol):
            return []
        book = {p.intent.plan.decision_id: p for p in venue.positions[t.symbol]}
        bar = Bar(t.symbol, t.event_time_ms, t.open, t.high, t.low, t.close, t.volume)
        return self._records(state, book, venue.on_bar(bar))

    def on_venue_event(self, state: ExecutionState, ev: ExchangeEvent) -> list[ExecutionRecord]:
        """Apply one exchange event (testnet); the records, in order."""
        if not isinstance(state.venue, BinanceVenue):
            return []
        return self._live_records(state, state.venue.on_exchange_event(ev))

    @staticmethod
    def take_commands(state: ExecutionState) -> list[Command]:
        """What the venue wants sent to the exchange, in order (none on paper)."""
        if isinstance(state.venue, BinanceVenue):
            return state.venue.take_commands()
        return []

    def _live_records(
        self, state: ExecutionState, events: Sequence[object]
    ) -> list[ExecutionRecord]:
        assert isinstance(state.venue, BinanceVenue)
        out: list[ExecutionRecord] = []
        for e in events:
            if isinstance(e, Fill):
                o = state.orders.get(e.decision_id)
                if o is not None:
                    out.append(fill_record(e, o, self.cfg, self.venue_name))
            elif isinstance(e, VenuePositionEvent):
                pos = state.venue.positions.get(e.position_id)
                o = state.orders.get(e.position_id)
                rec = live_position_record(e, pos, o) if pos and o else None
                if rec is not None:
                    out.append(rec)
            elif isinstance(e, ClosedTrade):
                o = state.orders.pop(e.trade_id, None)
                if o is not None:  # an adopted position has no decision: no trade to learn
                    out.extend(closed_records(e, o))
        return out

    def _records(
        self, state: ExecutionState, book: dict[str, PaperPosition], events: Sequence[object]
    ) -> list[ExecutionRecord]:
        out: list[ExecutionRecord] = []
        for e in events:
            if isinstance(e, Fill):
                out.append(fill_record(e, state.orders[e.decision_id], self.cfg))
            elif isinstance(e, VenuePositionEvent):
                pos = book[e.position_id]
                rec = position_record(e, pos, state.orders[e.position_id])
                if rec is not None:
                    out.append(rec)
            elif isinstance(e, ClosedTrade):
                out.extend(closed_records(e, state.orders.pop(e.trade_id)))
        return out
