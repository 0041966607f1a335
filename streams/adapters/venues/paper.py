"""Paper venue and position monitor: fills and exits simulated bar by bar (or tick by tick).

The ``execution`` stage (:mod:`streams.stages.execution`) drives it through the venue interface
(:mod:`streams.adapters.venues.interface`).

Fill model
    An order placed at decision time ``t`` is eligible on the first bar whose open time is
    ``>= t + latency_ms``. The market entry fills at that bar's open moved against us by
    ``slippage_bps`` and pays the taker fee. At most ``participation`` of the bar's volume
    fills per bar (rounded down to the step size); the rest carries to the next bars, and
    after ``max_entry_bars`` eligible bars an unfilled remainder is cancelled. A position
    that never filled closes at once as an ``unfilled`` trade with zero quantity, so the risk
    stage releases its reservation through the same ``trades.closed`` path. A tick is a bar
    with open = high = low = close = price and volume = quantity (:meth:`Bar.tick`).

Exit model, per later bar (pessimistic intra-bar ordering)
    1. The protective stop (the tighter of stop loss and trailing stop) is checked first: if
       the bar's adverse extreme touches it, the whole open quantity exits there, at the open
       instead when the bar gapped through the stop, minus slippage, taker fee. When a bar
       touches both the stop and a take-profit we assume the stop came first: the backtest
       may understate, never overstate, what the ladder earns.
    2. Otherwise every take-profit leg whose price the favourable extreme reached fills
       (several legs can fill in one bar), at its limit price or at the open if the bar gapped
       beyond it, maker fee, no volume limit.
    3. Only then does the trailing stop ratchet, from the bar's favourable extreme, for use
       from the *next* bar on: within a bar we do not know whether the high came before the
       low, so a new high never protects the bar that made it.
    The trailing stop activates when TP1 fills (``trail_after_tp1=True``, default) or from the
    entry, is ``peak * (1 - callback)`` for a long (``trough * (1 + callback)`` for a short),
    and only ever moves in the favourable direction. While an entry is still partially
    filling only the stop loss protects the filled part; take-profits start once it is done.

Times
    Entry fills carry the bar's open time; exit fills the bar's end (open + ``bar_ms``), the
    earliest time the bar's extremes are known. Ticks use ``bar_ms = 0``.

Ids
    ``order_id = f"{decision_id}:entry"``, ``:tp1``.., ``:sl``, ``:trail``; fill ids append
    ``#<n>`` per order. Submitting the same decision twice is a no-op, so at-least-once
    delivery of ``orders.intents`` never opens a position twice.

Internally a position works in "favourable space" ``f = sign * price`` (sign +1 long, -1 short),
so one code path serves both sides: a long's high and a short's low are both ``max f``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.adapters.venues.interface import (
    Bar,
    ClosedTrade,
    Event,
    Fill,
    OrderIntent,
    PositionEvent,
    PositionEventKind,
    intent_from_dict,
    intent_to_dict,
)
from streams.config import PaperConfig
from streams.ids import SeenIds, fill_id, order_id
from streams.instruments import anchor, split_ladder

_NONE: tuple[Event, ...] = ()


@dataclass(slots=True)
class PaperPosition:
    """Mutable state of one position from acceptance to flat (a Faust table value)."""

    intent: OrderIntent
    eligible_ms: int
    entry_bars: int = 0
    target_steps: int = 0
    filled_steps: int = 0
    entry_cost: float = 0.0  # sum of price * quantity of entry fills
    fees: float = 0.0
    opened_ms: int = -1
    entry_done: bool = False
    leg_steps: list[int] = field(default_factory=list)  # remaining steps per TP leg
    tp_f: list[float] = field(default_factory=list)  # TP levels in favourable space
    sl_f: float = 0.0
    stop_f: float = 0.0  # protective stop in favourable space (>= sl_f)
    trailing: bool = False
    peak_f: float = 0.0
    exited_steps: int = 0
    exit_value: float = 0.0  # sum of price * quantity of exit fills
    seq: dict[str, int] = field(default_factory=dict)  # fills per order id
    exit_reason: str = ""

    @property
    def sign(self) -> int:
        """+1 long, -1 short."""
        return self.intent.plan.side.sign

    @property
    def open_steps(self) -> int:
        """Steps still open (entry filled minus exited)."""
        return self.filled_steps - self.exited_steps

    @property
    def avg_entry(self) -> float:
        """Volume-weighted average entry price (0 before any fill)."""
        qty = self.filled_steps * self.intent.plan.instrument.step_size
        return self.entry_cost / qty if qty else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        data = {k: getattr(self, k) for k in self.__slots__ if k != "intent"}
        data["intent"] = intent_to_dict(self.intent)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaperPosition:
        """Inverse of :meth:`to_dict`."""
        intent = intent_from_dict(data["intent"])
        fields = {k: v for k, v in data.items() if k != "intent"}
        fields["leg_steps"], fields["tp_f"] = list(data["leg_steps"]), list(data["tp_f"])
        fields["seq"] = dict(data["seq"])
        return cls(intent=intent, **fields)


def _order_side(position_sign: int, closing: bool) -> str:
    buys = (position_sign > 0) != closing
    return "BUY" if buys else "SELL"


class PaperVenue:
    """Positions of one partition's symbols; feed intents with :meth:`submit`, market data
    with :meth:`on_bar`. Both return the events to publish, in order."""

    def __init__(self, cfg: PaperConfig = PaperConfig()) -> None:
        self.cfg = cfg
        self.positions: dict[str, list[PaperPosition]] = {}
        self.known = SeenIds()  # decision ids accepted lately (idempotent submit)
        self._slip = cfg.slippage_bps / 10_000.0

    # ---------------------------------------------------------------- intake
    def submit(self, intent: OrderIntent) -> tuple[Event, ...]:
        """Accept an intent (once per decision id)."""
        plan = intent.plan
        if plan.decision_id in self.known:
            return _NONE
        self.known.add(plan.decision_id, intent.placed_ms)
        pos = PaperPosition(intent, intent.placed_ms + self.cfg.latency_ms)
        pos.target_steps = plan.quantity_steps
        self.positions.setdefault(plan.symbol, []).append(pos)
        kind = PositionEventKind.ACCEPTED
        return (PositionEvent(plan.decision_id, plan.symbol, kind, intent.placed_ms, 0.0, 0.0),)

    # ---------------------------------------------------------------- market data
    def on_bar(self, bar: Bar) -> Sequence[Event]:
        """Advance every position of ``bar.symbol`` by one bar; cheap when nothing happens."""
        book = self.positions.get(bar.symbol)
        if not book:
            return _NONE
        events: list[Event] = []
        for pos in book:
            if bar.time_ms >= pos.eligible_ms:
                self._step(pos, bar, events)
        if events:
            self.positions[bar.symbol] = [p for p in book if not p.exit_reason]
        return events

    def _step(self, pos: PaperPosition, bar: Bar, out: list[Event]) -> None:
        if not pos.entry_done:
            self._fill_entry(pos, bar, out)
            if pos.exit_reason or not pos.filled_steps:
                return
        if self._check_stop(pos, bar, out) or not pos.entry_done:
            return  # a partially filled entry is protected by its stop only
        self._check_take_profits(pos, bar, out)
        if not pos.exit_reason:
            self._ratchet(pos, bar)

    # ---------------------------------------------------------------- entry
    def _fill_entry(self, pos: PaperPosition, bar: Bar, out: list[Event]) -> None:
        plan, cfg = pos.intent.plan, self.cfg
        pos.entry_bars += 1
        step = plan.instrument.step_size
        want = pos.target_steps - pos.filled_steps
        cap = int(cfg.participation * bar.volume / step + 1e-9) if cfg.participation > 0 else want
        n = min(want, cap)
        if n > 0:
            price = bar.open * (1.0 + pos.sign * self._slip)
            self._emit_fill(pos, "entry", price, n * step, cfg.taker_fee, "taker", bar.time_ms, out)
            pos.filled_steps += n
            pos.entry_cost += price * n * step
            if pos.opened_ms < 0:
                pos.opened_ms = bar.time_ms
            self._anchor_levels(pos)
        done = pos.filled_steps == pos.target_steps or pos.entry_bars >= cfg.max_entry_bars
        if n > 0 and not done:
            out.append(self._event(pos, PositionEventKind.ENTRY_PARTIAL, bar.time_ms, bar.open))
        if done:
            self._complete_entry(pos, bar, out)

    def _anchor_levels(self, pos: PaperPosition) -> None:
        plan = pos.intent.plan
        entry, tick, s = pos.avg_entry, plan.instrument.tick_size, pos.sign
        pos.tp_f = [s * anchor(plan.side, entry, o, tick) for o in plan.tp_offsets]
        pos.sl_f = s * anchor(plan.side, entry, -plan.sl_offset, tick)
        pos.stop_f = max(pos.stop_f, pos.sl_f) if pos.trailing else pos.sl_f

    def _complete_entry(self, pos: PaperPosition, bar: Bar, out: list[Event]) -> None:
        pos.entry_done = True
        if pos.filled_steps == 0:
            pos.exit_reason = "unfilled"
            out.append(self._closed(pos, bar.time_ms))
            return
        pos.leg_steps = list(split_ladder(pos.filled_steps, pos.intent.plan.tp_fractions))
        out.append(self._event(pos, PositionEventKind.OPENED, bar.time_ms, pos.avg_entry))
        if not self.cfg.trail_after_tp1:
            self._activate_trailing(pos, pos.sign * pos.avg_entry, bar.time_ms, out)

    # ---------------------------------------------------------------- exits
    def _check_stop(self, pos: PaperPosition, bar: Bar, out: list[Event]) -> bool:
        s = pos.sign
        low_f = bar.low if s > 0 else -bar.high  # adverse extreme in favourable space
        if low_f > pos.stop_f:
            return False
        open_f = s * bar.open
        level_f = min(open_f, pos.stop_f)  # gapped through: filled at the open
        price = s * level_f * (1.0 - s * self._slip)
        trailing_bound = pos.trailing and pos.stop_f > pos.sl_f
        leg = "trail" if trailing_bound else "sl"
        n = pos.open_steps
        t = bar.time_ms + self.cfg.bar_ms
        qty = n * pos.intent.plan.instrument.step_size
        self._emit_fill(pos, leg, price, qty, self.cfg.taker_fee, "taker", t, out)
        self._book_exit(pos, price, n)
        pos.exit_reason = "trailing_stop" if trailing_bound else "stop_loss"
        out.append(self._event(pos, PositionEventKind.STOPPED, t, price, pos.exit_reason))
        out.append(self._closed(pos, t))
        return True

    def _check_take_profits(self, pos: PaperPosition, bar: Bar, out: list[Event]) -> None:
        s, step = pos.sign, pos.intent.plan.instrument.step_size
        high_f, open_f = (bar.high if s > 0 else -bar.low), s * bar.open
        t = bar.time_ms + self.cfg.bar_ms
        for i, level_f in enumerate(pos.tp_f):
            if high_f < level_f:
                break  # legs are ordered: a farther one cannot fill either
            n = pos.leg_steps[i]
            if n:
                price = s * max(open_f, level_f)  # a limit fills at its price or better
                leg = f"tp{i + 1}"
                self._emit_fill(pos, leg, price, n * step, self.cfg.maker_fee, "maker", t, out)
                self._book_exit(pos, price, n)
                pos.leg_steps[i] = 0
                out.append(self._event(pos, PositionEventKind.TP_FILLED, t, price, leg))
        if pos.open_steps == 0:
            pos.exit_reason = "take_profit"
            out.append(self._closed(pos, t))
        elif self.cfg.trail_after_tp1 and not pos.trailing and high_f >= pos.tp_f[0]:
            self._activate_trailing(pos, high_f, t, out)

    def _activate_trailing(
        self, pos: PaperPosition, peak_f: float, t: int, out: list[Event]
    ) -> None:
        pos.trailing, pos.peak_f = True, peak_f
        self._set_trail(pos)
        price = pos.sign * pos.stop_f
        out.append(self._event(pos, PositionEventKind.TRAILING_ACTIVATED, t, price))

    def _set_trail(self, pos: PaperPosition) -> None:
        cb = pos.intent.plan.trailing_callback
        trail_f = pos.peak_f - cb * abs(pos.peak_f)
        if trail_f > pos.stop_f:  # ratchet: only ever tighter
            pos.stop_f = trail_f

    def _ratchet(self, pos: PaperPosition, bar: Bar) -> None:
        if not pos.trailing:
            return
        high_f = bar.high if pos.sign > 0 else -bar.low
        if high_f > pos.peak_f:
            pos.peak_f = high_f
            self._set_trail(pos)

    # ---------------------------------------------------------------- records
    def _emit_fill(
        self,
        pos: PaperPosition,
        leg: str,
        price: float,
        qty: float,
        fee_rate: float,
        liquidity: str,
        t: int,
        out: list[Event],
    ) -> None:
        plan = pos.intent.plan
        oid = order_id(plan.decision_id, leg)
        n = pos.seq[oid] = pos.seq.get(oid, 0) + 1
        fee = price * qty * fee_rate
        pos.fees += fee
        side = _order_side(pos.sign, closing=leg != "entry")
        fill = Fill(
            fill_id(oid, n), oid, plan.decision_id, plan.symbol, side, price, qty, fee, liquidity, t
        )
        out.append(fill)

    @staticmethod
    def _book_exit(pos: PaperPosition, price: float, steps: int) -> None:
        pos.exited_steps += steps
        pos.exit_value += price * steps * pos.intent.plan.instrument.step_size

    @staticmethod
    def _event(
        pos: PaperPosition, kind: PositionEventKind, t: int, price: float, detail: str = ""
    ) -> PositionEvent:
        plan = pos.intent.plan
        open_qty = pos.open_steps * plan.instrument.step_size
        return PositionEvent(plan.decision_id, plan.symbol, kind, t, price, open_qty, detail)

    def _closed(self, pos: PaperPosition, t: int) -> ClosedTrade:
        plan, s = pos.intent.plan, pos.sign
        qty = pos.filled_steps * plan.instrument.step_size
        entry = pos.avg_entry
        exit_qty = pos.exited_steps * plan.instrument.step_size
        exit_px = pos.exit_value / exit_qty if exit_qty else 0.0
        gross = s * (pos.exit_value - entry * exit_qty)
        margin = entry * qty / plan.leverage
        opened = pos.opened_ms if pos.opened_ms >= 0 else t
        return ClosedTrade(
            trade_id=plan.decision_id,
            symbol=plan.symbol,
            side=plan.side,
            quantity=qty,
            entry_price=entry,
            exit_price=exit_px,
            gross_pnl=gross,
            fees=pos.fees,
            net_pnl=gross - pos.fees,
            margin=margin,
            leverage=plan.leverage,
            opened_ms=opened,
            closed_ms=t,
            holding_ms=t - opened,
            exit_reason=pos.exit_reason,
            context=pos.intent.context,
        )
