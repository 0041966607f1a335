"""execution (paper venue or Binance testnet): orders and ticks -> fills, position events,
closed trades.

Per partition, one event-time merge: an order is placed at the close of its decision's bar and
sorts before the bar that opens then, so it can first fill on that bar, whatever reached the
broker first. On testnet the exchange's events (``venue.events``, from the gateway process) act
on arrival instead of waiting in the merge for the market's watermark (a fresh position would
wait a bar for its stop), and what the venue wants sent goes to ``venue.commands``
(docs/venues.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from streams.adapters.venues.binance.records import (
    command_record,
    event_from_record,
    event_record,
)
from streams.adapters.venues.binance.venue import BinanceVenue
from streams.adapters.venues.paper import PaperVenue
from streams.agents.base import Emitter, Restore, freeze, keyed_checkpoint, thaw
from streams.agents.durable import context_from_state, context_to_state
from streams.agents.merging import MergeHandler
from streams.contracts.records import (
    FillExecuted,
    OrderPlanned,
    TickReceived,
    TradeClosed,
    VenueEventReceived,
)
from streams.contracts.ticks import DEFAULT_MAX_EVENT_SKEW_MS, TickHistory
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.ordering import END_OF_STREAM, SortKey
from streams.stages import ExecutionStage, ExecutionState
from streams.stages.execution import ExecutionRecord
from streams.topics import Topic
from streams.topology import BuildContext, Shift, stage_spec

log = logging.getLogger(__name__)


def execution_attributes(r: ExecutionRecord) -> dict[str, Any]:
    """Span attributes of a fill, a position change or a closed trade."""
    attrs: dict[str, Any] = {
        "qt.stage": "execution",
        "qt.symbol": r.symbol,
        "qt.event_time_ms": r.event_time_ms,
        tracing.DECISION_ID: r.decision_id,
        "qt.order_id": r.order_id,
    }
    if isinstance(r, FillExecuted):
        attrs["qt.fill"] = (
            f"{r.leg_kind.value} {r.side.value} {r.qty:g} @ {r.price:g} fee {r.fee:g}"
            + (" partial" if r.is_partial else "")
        )
        attrs["qt.fill_id"] = r.fill_id
    elif isinstance(r, TradeClosed):
        attrs |= {
            "qt.trade_id": r.trade_id,
            "qt.exit_reason": r.exit_reason.value,
            "qt.net_pnl": r.net_pnl,
            "qt.return_pct": r.return_pct,
            "qt.holding_ms": r.holding_ms,
        }
    else:
        attrs["qt.position"] = f"{r.event.value} open {r.qty_open:g} pnl {r.realized_pnl:g}"
    return attrs


def span_name(r: ExecutionRecord) -> str:
    """``execution fill`` / ``execution position`` / ``execution trade closed``."""
    if isinstance(r, FillExecuted):
        return f"execution fill {r.leg_kind.value}"
    if isinstance(r, TradeClosed):
        return "execution trade closed"
    return f"execution position {r.event.value}"


class ExecutionHandler(MergeHandler):
    """One paper venue per symbol; closed trades go to the portfolio's single partition."""

    name = "execution"
    inputs = stage_spec("execution").input_topics

    #: The features stage dead-letters bad ticks; this stage only skips them.
    dead_letters_skipped = frozenset({Topic.MARKET_TICKS.value})
    #: A bar's effects (fills, closes) are traced under the span of the order they belong to.
    untraced_topics = frozenset({Topic.MARKET_TICKS.value})

    def __init__(
        self,
        stage: ExecutionStage,
        partitions: int,
        max_event_skew_ms: int = DEFAULT_MAX_EVENT_SKEW_MS,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.partitions = partitions
        self.shifts = {Shift.BAR: stage.cfg.bar_ms}
        self.states: dict[str, ExecutionState] = {}
        #: Same tick rule as the features stage, so both act on the same ticks.
        self.tick_history = TickHistory(max_event_skew_ms)
        #: Trace context of each open order's span by decision id (a leg's fills carry the
        #: leg's order id, every record the decision id): what a later bar fills is its child.
        self.order_contexts: dict[str, Context] = {}

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Orders at their placement time, before the ticks of that time."""
        if isinstance(record, OrderPlanned):
            return SortKey(self.stage.placed_ms(record), 0, record.order_id)
        if isinstance(record, VenueEventReceived):
            return SortKey(record.event_time_ms, 2, record.event_id)
        return SortKey(record.event_time_ms, 1, record.symbol, record.trade_id or 0)

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Exchange events act on arrival; everything else goes through the merge."""
        if topic == Topic.VENUE_EVENTS.value:
            merge = self.merge_of(topic, partition)
            self._merge(merge)
            self._release(merge, topic, partition, record, otel_context.get_current(), out)
            return
        super().on_record(topic, partition, source, record, out)

    def _state(self, symbol: str) -> ExecutionState:
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = self.stage.new_state()
        return state

    def checkpoint(self, topic: str, partition: int, record: Any) -> Restore:
        """The symbol's venue as it was, put back if ``process`` fails (~2 µs per record).

        Open positions as plain dicts, the recently accepted decision ids and the order records
        copied (cheaper than a full ``to_dict`` on every tick).
        """
        symbol = record.symbol
        state = self.states.get(symbol)
        saved = None
        if state is not None:
            venue = state.venue
            if not isinstance(venue, PaperVenue):  # testnet: the whole state, as a table has it
                return keyed_checkpoint(self.states, symbol, self._binance_state)
            positions = freeze([p.to_dict() for ps in venue.positions.values() for p in ps])
            saved = (positions, venue.known.copy(), dict(state.orders))
        had_context = getattr(record, "decision_id", None) in self.order_contexts

        def restore() -> None:
            if saved is None:
                self.states.pop(symbol, None)
            else:
                positions, known, orders = saved
                empty = {"positions": thaw(positions), "known": {}, "orders": {}}
                state = self.states[symbol] = ExecutionState.from_dict(empty, self.stage.cfg)
                state.venue.known, state.orders = known, orders
            if isinstance(record, OrderPlanned) and not had_context:
                self.order_contexts.pop(record.decision_id, None)

        return restore

    def _binance_state(self, data: Any) -> ExecutionState:
        return ExecutionState.from_dict(data, self.stage.cfg, self.stage.rules)

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Accept an order or move the symbol's positions by one tick."""
        state = self._state(record.symbol)
        if isinstance(record, VenueEventReceived):
            produced = self.stage.on_venue_event(state, event_from_record(record))
        elif isinstance(record, OrderPlanned):
            if tracing.enabled():
                self.order_contexts[record.decision_id] = otel_context.get_current()
            produced = self.stage.on_order(state, record)
        else:
            tick: TickReceived = record
            produced = self.stage.on_tick(state, tick)
        for r in produced:
            if tracing.enabled():
                parent = self.order_contexts.get(r.decision_id)
                with tracing.record_span(span_name(r), parent, execution_attributes(r)):
                    self._send(merge, r, out)
            else:
                self._send(merge, r, out)
        if isinstance(state.venue, BinanceVenue):
            self._send_findings(merge, state.venue, out)
            self._send_commands(merge, state.venue, record.event_time_ms, out)

    def _send_findings(self, merge: int, venue: BinanceVenue, out: Emitter) -> None:
        """Each reconciliation finding as a ``FINDING`` record on ``venue.events`` (its id from
        the snapshot's symbol, exchange time, kind and order: a replayed snapshot repeats it).
        This stage reads it back and ignores it (:meth:`BinanceVenue.on_exchange_event`)."""
        for f in venue.take_findings():
            log.warning("venue: reconcile %s %s: %s", f.symbol, f.kind, f.detail)
            metrics().venue_finding(f.kind)
            rec = event_record(f)
            out.record(Topic.VENUE_EVENTS, f.symbol, rec, self._floor(merge, f.time_ms), merge)

    def _send_commands(self, merge: int, venue: BinanceVenue, time_ms: int, out: Emitter) -> None:
        """What the venue asked for, to the gateway (keyed by symbol: one symbol, one order)."""
        t = self._floor(merge, time_ms)
        for cmd in venue.take_commands():
            decision = venue.legs.get(cmd.client_id, ("", ""))[0]
            out.record(Topic.VENUE_COMMANDS, cmd.symbol, command_record(cmd, t, decision), t, merge)

    def _floor(self, merge: int, time_ms: int) -> int:
        """An exchange's time behind what this stage already promised downstream is moved up to
        the promise: a record never travels behind a watermark (on testnet only)."""
        promised = self._sent.get(merge, time_ms)
        return time_ms if promised >= END_OF_STREAM else max(time_ms, promised)

    def _send(self, merge: int, r: ExecutionRecord, out: Emitter) -> None:
        """Route one venue record to its topic (closed trades: the portfolio's partition)."""
        if self.stage.venue == "testnet" and r.event_time_ms < self._floor(merge, r.event_time_ms):
            r = replace(r, event_time_ms=self._floor(merge, r.event_time_ms))
        if isinstance(r, TradeClosed):
            metrics().trade_closed(r.exit_reason.value)
            self.order_contexts.pop(r.decision_id, None)
            out.record_to(
                Topic.TRADES_CLOSED, 0, r.symbol, r, r.event_time_ms, f"{self.name}/{merge}"
            )
        elif isinstance(r, FillExecuted):
            out.record(Topic.EXECUTION_FILLS, r.symbol, r, r.event_time_ms, merge)
        else:
            out.record(Topic.POSITIONS_EVENTS, r.symbol, r, r.event_time_ms, merge)

    def to_state(self) -> dict[str, Any]:
        """The merges, each symbol's venue, the tick rule's history, open orders' traces."""
        return super().to_state() | {
            "venues": {s: v.to_dict() for s, v in self.states.items()},
            "ticks": self.tick_history.to_dict(),
            "order_traces": {d: context_to_state(c) for d, c in self.order_contexts.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        super().load_state(data)
        cfg, rules = self.stage.cfg, self.stage.rules
        self.states = {
            s: ExecutionState.from_dict(v, cfg, rules) for s, v in data["venues"].items()
        }
        self.tick_history = TickHistory.from_dict(data["ticks"])
        self.order_contexts = {
            d: ctx for d, t in data["order_traces"].items() if (ctx := context_from_state(t))
        }


def build(context: BuildContext) -> ExecutionHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    s = context.settings
    return ExecutionHandler(ExecutionStage.from_settings(s), s.partitions, s.max_event_skew_ms)
