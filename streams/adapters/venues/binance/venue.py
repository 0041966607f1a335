"""The Binance venue's state machine: synchronous, deterministic, plain data.

It is the exchange-side twin of :class:`~streams.adapters.venues.paper.PaperVenue`: the same
intents in (:meth:`BinanceVenue.submit`), the same :data:`~streams.adapters.venues.interface.Event`
records out, but the fills are the exchange's. It never does I/O. What it wants the exchange to
do accumulates as :data:`~.messages.Command` in :attr:`BinanceVenue.outbox` (drained with
:meth:`~BinanceVenue.take_commands` and executed by the gateway); what the exchange did comes
back as :data:`~.messages.ExchangeEvent` through :meth:`~BinanceVenue.on_exchange_event`. So the
venue's decisions depend only on the sequence of intents and exchange events it was given: a
recorded sequence replays to the same fills, and a restarted worker rebuilt from
:meth:`~BinanceVenue.to_dict` continues where it stopped.

Order plan on the exchange (one-way position mode, one position per symbol at a time)
    1. entry: MARKET (or LIMIT GTC at the plan's reference price), leverage set first;
    2. when the entry is done: the take-profit ladder as reduce-only LIMIT GTC orders at the
       plan's offsets re-anchored on the average fill price, and the stop loss as a
       ``STOP_MARKET`` with ``closePosition`` (it closes whatever is left: no resizing needed);
    3. when TP1 fills (or at once with ``trail_after_tp1=False``): the trailing stop as a reduce-
       only ``TRAILING_STOP_MARKET`` with Binance's ``callbackRate`` (0.1-10 %, the plan's value
       clamped into that range); after every later TP fill it is cancel-replaced with the
       smaller open quantity (``trail2``, ``trail3``...: a new client id each time);
    4. when the position is flat: every remaining leg is cancelled.

Safe direction on failures: a rejected stop loss (-2021, the price is already through it)
flattens the position at market; a rejected entry closes the trade unfilled (risk releases the
margin through ``trades.closed``); a second decision on a symbol with a live position is refused
(one-way mode would net them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streams.adapters.venues.binance.client_ids import client_order_id
from streams.adapters.venues.binance.messages import (
    TRADE_REPLAY,
    AlgoUpdate,
    CancelOrder,
    Command,
    ExchangeEvent,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    PositionUpdate,
    ReconcileFinding,
    SymbolSnapshot,
    message_from_dict,
)
from streams.adapters.venues.binance.reconcile import ReconcileKind, VenueView, diff_symbol
from streams.adapters.venues.interface import (
    ClosedTrade,
    Event,
    ExitPlan,
    Fill,
    OrderIntent,
    PositionEvent,
    PositionEventKind,
    intent_from_dict,
    intent_to_dict,
)
from streams.ids import SeenIds, fill_id, order_id
from streams.instruments import INSTRUMENTS, anchor, fallback_instrument, split_ladder, steps_of
from streams.vocabulary import Side

_DONE = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"})
_ALGO_DONE = frozenset({"CANCELED", "EXPIRED", "REJECTED", "FINISHED"})
#: Binance's callbackRate range for TRAILING_STOP_MARKET, in percent.
CALLBACK_RANGE_PCT = (0.1, 10.0)
_EXIT_REASON = {"sl": "stop_loss", "trail": "trailing_stop", "close": "reconciled"}


@dataclass(frozen=True, slots=True)
class VenueRules:
    """The venue's choices that are settings (:class:`streams.config.BinanceConfig`)."""

    trail_after_tp1: bool = True
    unknown_position: str = "flatten"  # or "adopt"
    adopt_stop_fraction: float = 0.02


@dataclass(slots=True)
class Leg:
    """One order of a position on the exchange."""

    name: str  # entry, tp1.., sl, trail, trail2.., close
    client_id: str
    conditional: bool
    quantity: float
    state: str = "sent"  # sent | open | done | cancelling | rejected
    filled: float = 0.0

    @property
    def live(self) -> bool:
        """Sent or open: it may still fill."""
        return self.state in ("sent", "open")


@dataclass(slots=True)
class LivePosition:
    """One decision's position on the exchange, from acceptance to flat."""

    intent: OrderIntent
    entry_type: str = "MARKET"
    legs: dict[str, Leg] = field(default_factory=dict)
    filled_qty: float = 0.0
    entry_cost: float = 0.0
    fees: float = 0.0
    exited_qty: float = 0.0
    exit_value: float = 0.0
    opened_ms: int = -1
    entry_done: bool = False
    trail_version: int = 0
    exit_reason: str = ""
    close_reason: str = ""  # why the venue flattened (the exit reason of its "close" order)
    seq: dict[str, int] = field(default_factory=dict)

    @property
    def plan(self) -> ExitPlan:
        """The exit plan."""
        return self.intent.plan

    @property
    def open_qty(self) -> float:
        """Quantity still open (entry filled minus exited)."""
        return self.filled_qty - self.exited_qty

    @property
    def avg_entry(self) -> float:
        """Volume-weighted average entry price (0 before any fill)."""
        return self.entry_cost / self.filled_qty if self.filled_qty else 0.0

    def flat(self) -> bool:
        """Nothing open any more (within half a step)."""
        return self.entry_done and self.open_qty <= self.plan.instrument.step_size / 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a table."""
        data = {k: getattr(self, k) for k in self.__slots__ if k not in ("intent", "legs")}
        data["legs"] = {k: asdict(v) for k, v in self.legs.items()}
        data["intent"] = intent_to_dict(self.intent)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LivePosition:
        """Inverse of :meth:`to_dict`."""
        intent = intent_from_dict(data["intent"])
        rest = {k: v for k, v in data.items() if k not in ("intent", "legs")}
        rest["seq"] = dict(data["seq"])
        legs = {k: Leg(**v) for k, v in data["legs"].items()}
        return cls(intent=intent, legs=legs, **rest)


def _side(position: Side, closing: bool) -> str:
    return "BUY" if (position is Side.LONG) != closing else "SELL"


class BinanceVenue:
    """Positions of one partition's symbols on a Binance USD-M futures account."""

    def __init__(self, rules: VenueRules = VenueRules()) -> None:
        self.rules = rules
        self.positions: dict[str, LivePosition] = {}  # key: decision id
        self.known = SeenIds()  # decision ids accepted (idempotent submit)
        self.trades = SeenIds()  # "<client id>#<trade id>" booked (idempotent fills)
        self.legs: dict[str, tuple[str, str]] = {}  # client id -> (decision id, leg name)
        self.actual: dict[
            str, str
        ] = {}  # matching-engine order id of a triggered algo -> client id
        self.outbox: list[Command] = []
        self.flattening: dict[str, str] = {}  # symbol -> client id of its unknown-position close
        #: Reconciliation findings of the snapshots applied since the last
        #: :meth:`take_findings`. Not stored: the stage takes them in the same step.
        self.findings: list[ReconcileFinding] = []

    # ---------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table (the outbox included: commands not yet handed over)."""
        return {
            "positions": {k: p.to_dict() for k, p in self.positions.items()},
            "known": self.known.to_dict(),
            "trades": self.trades.to_dict(),
            "legs": {k: list(v) for k, v in self.legs.items()},
            "actual": dict(self.actual),
            "outbox": [c.to_dict() for c in self.outbox],
            "flattening": dict(self.flattening),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], rules: VenueRules = VenueRules()) -> BinanceVenue:
        """Inverse of :meth:`to_dict` (the rules are the stage's, not the state's)."""
        venue = cls(rules)
        venue.positions = {k: LivePosition.from_dict(v) for k, v in data["positions"].items()}
        venue.known = SeenIds.from_dict(data["known"])
        venue.trades = SeenIds.from_dict(data["trades"])
        venue.legs = {k: (v[0], v[1]) for k, v in data["legs"].items()}
        venue.actual = dict(data["actual"])
        venue.outbox = [message_from_dict(c) for c in data["outbox"]]  # type: ignore[misc]
        venue.flattening = dict(data.get("flattening", {}))
        return venue

    def take_commands(self) -> list[Command]:
        """The commands for the gateway, in order; the outbox is empty afterwards."""
        out, self.outbox = self.outbox, []
        return out

    def take_findings(self) -> list[ReconcileFinding]:
        """The findings of the snapshots applied since the last call, in order."""
        out, self.findings = self.findings, []
        return out

    def live_on(self, symbol: str) -> LivePosition | None:
        """The position of ``symbol`` that is not closed yet, if any."""
        return next((p for p in self.positions.values() if p.plan.symbol == symbol), None)

    # ---------------------------------------------------------------- intake
    def submit(
        self, intent: OrderIntent, entry_type: str = "MARKET", limit_price: float | None = None
    ) -> tuple[Event, ...]:
        """Accept an intent (once per decision id) and queue its entry."""
        plan = intent.plan
        if plan.decision_id in self.known:
            return ()
        self.known.add(plan.decision_id, intent.placed_ms)
        pos = LivePosition(intent, entry_type)
        accepted = PositionEvent(
            plan.decision_id, plan.symbol, PositionEventKind.ACCEPTED, intent.placed_ms, 0.0, 0.0
        )
        if self.live_on(plan.symbol) is not None:
            pos.entry_done, pos.exit_reason = True, "rejected"
            detail = "a position on this symbol is still open (one-way mode would net them)"
            return (
                accepted,
                self._rejected_event(pos, intent.placed_ms, detail),
                self._closed(pos, intent.placed_ms),
            )
        self.positions[plan.decision_id] = pos
        limit = entry_type == "LIMIT"
        self._place(
            pos,
            "entry",
            PlaceOrder(
                client_id="",
                symbol=plan.symbol,
                side=_side(plan.side, closing=False),
                order_type="LIMIT" if limit else "MARKET",
                quantity=plan.quantity,
                price=(limit_price or plan.reference_price) if limit else None,
                time_in_force="GTC" if limit else None,
                leverage=plan.leverage,
                reference_price=plan.reference_price,
            ),
        )
        return (accepted,)

    def _place(self, pos: LivePosition, leg: str, cmd: PlaceOrder) -> None:
        cid = client_order_id(order_id(pos.plan.decision_id, leg))
        cmd = PlaceOrder(**{**asdict(cmd), "client_id": cid})
        pos.legs[leg] = Leg(leg, cid, cmd.conditional, cmd.quantity or 0.0)
        self.legs[cid] = (pos.plan.decision_id, leg)
        self.outbox.append(cmd)

    def _cancel_rest(self, pos: LivePosition) -> None:
        for leg in pos.legs.values():
            if leg.live:
                leg.state = "cancelling"
                self.outbox.append(CancelOrder(leg.client_id, pos.plan.symbol, leg.conditional))

    # ---------------------------------------------------------------- exchange events
    def on_exchange_event(self, ev: ExchangeEvent) -> list[Event]:
        """Apply one exchange event; the events to publish, in order."""
        out: list[Event] = []
        if isinstance(ev, OrderUpdate):
            self._on_order(ev, out)
        elif isinstance(ev, AlgoUpdate):
            self._on_algo(ev, out)
        elif isinstance(ev, OrderRejected):
            self._on_rejected(ev, out)
        elif isinstance(ev, SymbolSnapshot):
            self.findings += self.reconcile(ev, out)
        elif isinstance(ev, PositionUpdate | ReconcileFinding):
            # facts for the journal; positions are reconciled from snapshots, and a finding is
            # this stage's own record of one (it reads venue.events back): nothing to apply
            pass
        return out

    def _leg_of(
        self, client_id: str, exchange_order_id: str = ""
    ) -> tuple[LivePosition, Leg] | None:
        key = self.legs.get(client_id) or self.legs.get(self.actual.get(exchange_order_id, ""))
        if key is None:
            return None
        pos = self.positions.get(key[0])
        if pos is None or key[1] not in pos.legs:
            return None
        return pos, pos.legs[key[1]]

    def _on_algo(self, ev: AlgoUpdate, out: list[Event]) -> None:
        found = self._leg_of(ev.client_id)
        if found is None:
            return
        pos, leg = found
        if ev.actual_order_id:
            self.actual[ev.actual_order_id] = ev.client_id
        if ev.status == "NEW" and leg.state == "sent":
            leg.state = "open"
        elif ev.status in ("CANCELED", "EXPIRED", "REJECTED") and leg.state != "done":
            leg.state = "done" if leg.state == "cancelling" else "rejected"
            if ev.status == "REJECTED":
                self._leg_refused(pos, leg, f"algo order {ev.status}", ev.time_ms, out)

    def _on_order(self, ev: OrderUpdate, out: list[Event]) -> None:
        if self.flattening.get(ev.symbol) == ev.client_id and ev.status in _DONE:
            del self.flattening[ev.symbol]
        found = self._leg_of(ev.client_id, str(ev.order_id))
        if found is None:
            return
        pos, leg = found
        if leg.state == "sent":
            leg.state = "open"
        if ev.status == TRADE_REPLAY:
            ev = _replayed_status(ev, leg, pos.plan.instrument.step_size)
        traded = ev.exec_type == "TRADE" and ev.last_qty > 0
        if traded:
            key = f"{ev.symbol}#{ev.trade_id}#{ev.order_id}"
            if key in self.trades:
                return  # redelivered (a reconnect replays what the stream already sent)
            self.trades.add(key, ev.time_ms)
        # a REST answer ahead of its fills does not finish the leg: they come from the stream
        ahead = ev.exec_type == "QUERY" and ev.cum_qty > leg.filled + 1e-12
        finished = ev.status in _DONE and leg.live and not ahead
        if finished:
            leg.state = "done"
        if traded:
            self._trade(pos, leg, ev, out)
        if finished and leg.name == "entry" and not pos.entry_done:
            self._complete_entry(pos, ev.time_ms, out)

    def _trade(self, pos: LivePosition, leg: Leg, ev: OrderUpdate, out: list[Event]) -> None:
        plan = pos.plan
        leg.filled += ev.last_qty
        oid = order_id(plan.decision_id, leg.name)
        n = pos.seq[oid] = pos.seq.get(oid, 0) + 1
        pos.fees += ev.fee_usdt
        liquidity = "maker" if ev.maker else "taker"
        out.append(
            Fill(
                fill_id(oid, n),
                oid,
                plan.decision_id,
                plan.symbol,
                ev.side,
                ev.last_price,
                ev.last_qty,
                ev.fee_usdt,
                liquidity,
                ev.time_ms,
            )
        )
        if leg.name == "entry":
            pos.filled_qty += ev.last_qty
            pos.entry_cost += ev.last_price * ev.last_qty
            if pos.opened_ms < 0:
                pos.opened_ms = ev.time_ms
            if ev.status != "FILLED":
                out.append(
                    self._event(pos, PositionEventKind.ENTRY_PARTIAL, ev.time_ms, ev.last_price)
                )
            return
        pos.exited_qty += ev.last_qty
        pos.exit_value += ev.last_price * ev.last_qty
        if leg.name.startswith("tp") and ev.status == "FILLED":
            out.append(
                self._event(pos, PositionEventKind.TP_FILLED, ev.time_ms, ev.last_price, leg.name)
            )
        if pos.flat():
            self._close(pos, leg.name, ev.time_ms, ev.last_price, out)
        elif leg.name.startswith("tp") and ev.status == "FILLED":
            self._after_take_profit(pos, ev.time_ms, ev.last_price, out)

    def _complete_entry(self, pos: LivePosition, t: int, out: list[Event]) -> None:
        pos.entry_done = True
        plan = pos.plan
        if pos.filled_qty <= 0:
            pos.exit_reason = "unfilled"
            self._finish(pos, t, out)
            return
        out.append(self._event(pos, PositionEventKind.OPENED, t, pos.avg_entry))
        step, tick = plan.instrument.step_size, plan.instrument.tick_size
        legs = split_ladder(steps_of(pos.filled_qty, step), plan.tp_fractions)
        closing = _side(plan.side, closing=True)
        for i, (steps, offset) in enumerate(zip(legs, plan.tp_offsets, strict=False)):
            if steps > 0:
                price = anchor(plan.side, pos.avg_entry, offset, tick)
                self._place(
                    pos,
                    f"tp{i + 1}",
                    PlaceOrder(
                        "",
                        plan.symbol,
                        closing,
                        "LIMIT",
                        steps * step,
                        price=price,
                        reduce_only=True,
                        time_in_force="GTC",
                    ),
                )
        stop = anchor(plan.side, pos.avg_entry, -plan.sl_offset, tick)
        self._place(
            pos,
            "sl",
            PlaceOrder(
                "",
                plan.symbol,
                closing,
                "STOP_MARKET",
                None,
                trigger_price=stop,
                close_position=True,
            ),
        )
        if not self.rules.trail_after_tp1:
            self._place_trail(pos, t, pos.avg_entry, out)

    def _after_take_profit(self, pos: LivePosition, t: int, price: float, out: list[Event]) -> None:
        trail = pos.legs.get(self._trail_name(pos)) if pos.trail_version else None
        if trail is None:
            self._place_trail(pos, t, price, out)
        elif trail.live:  # resize: a reduce-only order larger than the position is refused
            trail.state = "cancelling"
            self.outbox.append(CancelOrder(trail.client_id, pos.plan.symbol, True))
            self._place_trail(pos, t, price, out, announce=False)

    @staticmethod
    def _trail_name(pos: LivePosition) -> str:
        return "trail" if pos.trail_version <= 1 else f"trail{pos.trail_version}"

    def _place_trail(
        self, pos: LivePosition, t: int, price: float, out: list[Event], announce: bool = True
    ) -> None:
        plan = pos.plan
        if plan.trailing_callback <= 0:
            return
        low, high = CALLBACK_RANGE_PCT
        rate = round(min(high, max(low, plan.trailing_callback * 100.0)), 1)
        pos.trail_version += 1
        self._place(
            pos,
            self._trail_name(pos),
            PlaceOrder(
                "",
                plan.symbol,
                _side(plan.side, closing=True),
                "TRAILING_STOP_MARKET",
                pos.open_qty,
                callback_rate_pct=rate,
                reduce_only=True,
            ),
        )
        if announce:
            out.append(
                self._event(
                    pos, PositionEventKind.TRAILING_ACTIVATED, t, price, f"callbackRate {rate}%"
                )
            )

    def _on_rejected(self, ev: OrderRejected, out: list[Event]) -> None:
        if self.flattening.get(ev.symbol) == ev.client_id:
            del self.flattening[ev.symbol]
        found = self._leg_of(ev.client_id)
        if found is None:
            return
        pos, leg = found
        if leg.state == "cancelling":
            leg.state = "done"
            return
        leg.state = "rejected"
        self._leg_refused(pos, leg, ev.reason, ev.time_ms, out)

    def _leg_refused(
        self, pos: LivePosition, leg: Leg, reason: str, t: int, out: list[Event]
    ) -> None:
        out.append(self._rejected_event(pos, t, f"{leg.name}: {reason}"))
        if leg.name == "entry" and not pos.entry_done:
            self._complete_entry(pos, t, out)
        elif leg.name == "sl" and pos.open_qty > 0 and not pos.exit_reason:
            pos.close_reason = "stop_loss"  # the price is through the stop: out, as it would be
            self._flatten(pos)  # unprotected is worse than out

    def _flatten(self, pos: LivePosition) -> None:
        plan = pos.plan
        self._place(
            pos,
            "close",
            PlaceOrder(
                "",
                plan.symbol,
                _side(plan.side, closing=True),
                "MARKET",
                pos.open_qty,
                reduce_only=True,
                reference_price=pos.avg_entry,
            ),
        )

    def _close(self, pos: LivePosition, leg: str, t: int, price: float, out: list[Event]) -> None:
        reason = _EXIT_REASON.get(leg.rstrip("0123456789"), "take_profit")
        pos.exit_reason = pos.close_reason if leg == "close" and pos.close_reason else reason
        if pos.exit_reason != "take_profit":
            out.append(self._event(pos, PositionEventKind.STOPPED, t, price, pos.exit_reason))
        self._finish(pos, t, out)

    def _finish(self, pos: LivePosition, t: int, out: list[Event]) -> None:
        self._cancel_rest(pos)
        out.append(self._closed(pos, t))
        del self.positions[pos.plan.decision_id]
        for leg in pos.legs.values():  # late events of cancelled legs find nothing: ignored
            self.legs.pop(leg.client_id, None)

    # ---------------------------------------------------------------- reconciliation
    def view(self, symbol: str) -> VenueView:
        """What the venue believes is on the exchange for ``symbol``."""
        pos = self.live_on(symbol)
        if pos is None:
            return VenueView(symbol, 0.0, (), ())
        sign = pos.plan.side.sign
        live = [leg for leg in pos.legs.values() if leg.state == "open"]
        return VenueView(
            symbol,
            sign * pos.open_qty,
            tuple(leg.client_id for leg in live if not leg.conditional),
            tuple(leg.client_id for leg in live if leg.conditional),
            tuple(
                leg.client_id for leg in pos.legs.values() if leg.state in ("sent", "cancelling")
            ),
        )

    def reconcile(self, snap: SymbolSnapshot, out: list[Event]) -> list[ReconcileFinding]:
        """Fix what differs from the exchange's ``snap`` in the safe direction; the findings."""
        findings = diff_symbol(self.view(snap.symbol), snap, self.rules.unknown_position)
        pos = self.live_on(snap.symbol)
        for f in findings:
            if f.kind == ReconcileKind.UNKNOWN_POSITION_FLATTENED:
                if snap.symbol not in self.flattening:  # a stale snapshot: one order at a time
                    cmd = _flatten_unknown(snap)
                    self.flattening[snap.symbol] = cmd.client_id
                    self.outbox.append(cmd)
            elif f.kind == ReconcileKind.UNKNOWN_POSITION_ADOPTED:
                self._adopt(snap, out)
            elif f.kind == ReconcileKind.POSITION_GONE and pos is not None and pos.entry_done:
                pos.exit_value += pos.open_qty * snap.mark_price  # no fill known: the mark
                pos.exited_qty = pos.filled_qty
                pos.exit_reason = "reconciled"
                self._finish(pos, snap.time_ms, out)
            elif f.kind == ReconcileKind.QUANTITY_MISMATCH and pos is not None:
                self._trim_excess(pos, snap)
            elif f.kind == ReconcileKind.ORDER_MISSING and pos is not None:
                self._order_missing(pos, f.client_id, out)
            elif f.kind == ReconcileKind.UNKNOWN_ORDER_CANCELLED:
                algo = f.client_id in snap.open_algo_orders
                self.outbox.append(CancelOrder(f.client_id, snap.symbol, algo))
        return findings

    def _trim_excess(self, pos: LivePosition, snap: SymbolSnapshot) -> None:
        """More on the exchange than we hold, same side: close the excess (never add)."""
        ours = pos.plan.side.sign * pos.open_qty
        excess = snap.amount - ours
        if ours == 0 or (excess > 0) != (ours > 0):
            return  # less than we think: the missing fills come back with the trades replay
        side = "SELL" if excess > 0 else "BUY"
        cid = client_order_id(f"{snap.symbol}:{snap.time_ms}:trim")
        self.outbox.append(
            PlaceOrder(
                cid,
                snap.symbol,
                side,
                "MARKET",
                abs(excess),
                reduce_only=True,
                reference_price=snap.mark_price,
            )
        )

    def _order_missing(self, pos: LivePosition, client_id: str, out: list[Event]) -> None:
        key = self.legs.get(client_id)
        if key is None:
            return
        leg = pos.legs[key[1]]
        leg.state = "done"
        if leg.name == "entry" and not pos.entry_done:  # its fills came with the trades replay
            self._complete_entry(pos, self._latest_ms(pos), out)
            return
        if leg.name == "sl" and pos.open_qty > 0:  # the stop must exist: place it again
            plan = pos.plan
            stop = anchor(plan.side, pos.avg_entry, -plan.sl_offset, plan.instrument.tick_size)
            self._place(
                pos,
                f"sl{len(pos.legs)}",
                PlaceOrder(
                    "",
                    plan.symbol,
                    _side(plan.side, closing=True),
                    "STOP_MARKET",
                    None,
                    trigger_price=stop,
                    close_position=True,
                ),
            )

    @staticmethod
    def _latest_ms(pos: LivePosition) -> int:
        return max(pos.opened_ms, pos.intent.placed_ms)

    def _adopt(self, snap: SymbolSnapshot, out: list[Event]) -> None:
        side = Side.LONG if snap.amount > 0 else Side.SHORT
        qty = abs(snap.amount)
        inst = INSTRUMENTS.get(snap.symbol) or fallback_instrument(snap.entry_price)
        decision = f"{snap.symbol}:{snap.time_ms}:adopted"
        stop_offset = snap.entry_price * self.rules.adopt_stop_fraction
        plan = ExitPlan(
            decision,
            snap.symbol,
            side,
            snap.entry_price,
            snap.entry_price * qty,
            1,
            steps_of(qty, inst.step_size),
            (1.0,),
            (steps_of(qty, inst.step_size),),
            (0.0,),
            (snap.entry_price,),
            stop_offset,
            snap.entry_price - side.sign * stop_offset,
            0.0,
            inst,
        )
        pos = LivePosition(
            OrderIntent(plan, snap.time_ms),
            "ADOPTED",
            filled_qty=qty,
            entry_cost=qty * snap.entry_price,
            opened_ms=snap.time_ms,
            entry_done=True,
        )
        self.known.add(decision, snap.time_ms)
        self.positions[decision] = pos
        out.append(
            self._event(pos, PositionEventKind.OPENED, snap.time_ms, snap.entry_price, "adopted")
        )
        stop = anchor(side, snap.entry_price, -stop_offset, inst.tick_size)
        self._place(
            pos,
            "sl",
            PlaceOrder(
                "",
                snap.symbol,
                _side(side, closing=True),
                "STOP_MARKET",
                None,
                trigger_price=stop,
                close_position=True,
            ),
        )

    # ---------------------------------------------------------------- records
    @staticmethod
    def _event(
        pos: LivePosition, kind: PositionEventKind, t: int, price: float, detail: str = ""
    ) -> PositionEvent:
        plan = pos.plan
        return PositionEvent(plan.decision_id, plan.symbol, kind, t, price, pos.open_qty, detail)

    @staticmethod
    def _rejected_event(pos: LivePosition, t: int, detail: str) -> PositionEvent:
        plan = pos.plan
        kind = PositionEventKind.REJECTED
        return PositionEvent(plan.decision_id, plan.symbol, kind, t, 0.0, pos.open_qty, detail)

    @staticmethod
    def _closed(pos: LivePosition, t: int) -> ClosedTrade:
        plan, s = pos.plan, pos.plan.side.sign
        entry, exit_qty = pos.avg_entry, pos.exited_qty
        gross = s * (pos.exit_value - entry * exit_qty)
        opened = pos.opened_ms if pos.opened_ms >= 0 else t
        return ClosedTrade(
            trade_id=plan.decision_id,
            symbol=plan.symbol,
            side=plan.side,
            quantity=pos.filled_qty,
            entry_price=entry,
            exit_price=pos.exit_value / exit_qty if exit_qty else 0.0,
            gross_pnl=gross,
            fees=pos.fees,
            net_pnl=gross - pos.fees,
            margin=entry * pos.filled_qty / plan.leverage,
            leverage=plan.leverage,
            opened_ms=opened,
            closed_ms=t,
            holding_ms=t - opened,
            exit_reason=pos.exit_reason,
            context=pos.intent.context,
        )


def _replayed_status(ev: OrderUpdate, leg: Leg, step: float) -> OrderUpdate:
    """A replayed trade (``userTrades`` has no order status) that completes its leg's quantity
    is the leg's FILLED, as the stream would have said; otherwise PARTIALLY_FILLED."""
    full = leg.quantity > 0 and leg.filled + ev.last_qty >= leg.quantity - step / 2
    return replace(ev, status="FILLED" if full else "PARTIALLY_FILLED")


def _flatten_unknown(snap: SymbolSnapshot) -> PlaceOrder:
    side = "SELL" if snap.amount > 0 else "BUY"
    cid = client_order_id(f"{snap.symbol}:{snap.time_ms}:flatten")
    return PlaceOrder(
        cid,
        snap.symbol,
        side,
        "MARKET",
        abs(snap.amount),
        reduce_only=True,
        reference_price=snap.mark_price or snap.entry_price,
    )


def events_of(venue: BinanceVenue, events: Sequence[ExchangeEvent]) -> list[Event]:
    """Apply several exchange events in order (a convenience for tests and the session)."""
    out: list[Event] = []
    for ev in events:
        out.extend(venue.on_exchange_event(ev))
    return out
