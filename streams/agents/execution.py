"""execution (paper venue): orders and ticks -> fills, position events, closed trades.

Per partition, one event-time merge: an order is placed at the close of its decision's bar and
sorts before the bar that opens then, so it can first fill on that bar, whatever reached the
broker first.
"""

from __future__ import annotations

from typing import Any

from streams.agents.base import Emitter, MergeHandler
from streams.contracts.records import (
    FillExecuted,
    OrderPlanned,
    PositionChanged,
    TickReceived,
    TradeClosed,
)
from streams.ordering import SortKey
from streams.stages import ExecutionStage, ExecutionState
from streams.topics import Topic


class ExecutionHandler(MergeHandler):
    """One paper venue per symbol; closed trades go to the portfolio's single partition."""

    name = "execution"
    inputs: tuple[Topic, ...] = (Topic.MARKET_TICKS, Topic.ORDERS_INTENTS)

    #: The features stage dead-letters bad ticks; this stage only skips them.
    dead_letters_skipped = frozenset({Topic.MARKET_TICKS.value})

    def __init__(self, stage: ExecutionStage) -> None:
        super().__init__()
        self.stage = stage
        self.states: dict[str, ExecutionState] = {}

    def sources(self, merge: int) -> dict[str, tuple[int, bool]]:
        """This partition's ticks; its orders, shifted to the time they reach the venue."""
        return {
            f"{Topic.MARKET_TICKS.value}/{merge}:replay": (0, False),
            f"{Topic.ORDERS_INTENTS.value}/{merge}:exits/{merge}": (self.stage.cfg.bar_ms, True),
        }

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Orders at their placement time, before the ticks of that time."""
        if isinstance(record, OrderPlanned):
            return SortKey(self.stage.placed_ms(record), 0, record.order_id)
        return SortKey(record.event_time_ms, 1, record.symbol, record.trade_id or 0)

    def _state(self, symbol: str) -> ExecutionState:
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = self.stage.new_state()
        return state

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Accept an order or move the symbol's positions by one tick."""
        state = self._state(record.symbol)
        if isinstance(record, OrderPlanned):
            produced = self.stage.on_order(state, record)
        else:
            tick: TickReceived = record
            produced = self.stage.on_tick(state, tick)
        for r in produced:
            if isinstance(r, TradeClosed):
                out.record_to(
                    Topic.TRADES_CLOSED, 0, r.symbol, r, r.event_time_ms, f"{self.name}/{merge}"
                )
            elif isinstance(r, FillExecuted):
                out.record(Topic.EXECUTION_FILLS, r.symbol, r, r.event_time_ms, merge)
            elif isinstance(r, PositionChanged):
                out.record(Topic.POSITIONS_EVENTS, r.symbol, r, r.event_time_ms, merge)

    def emit_progress(self, merge: int, watermark: int, out: Emitter) -> None:
        """Risk and learning wait on every execution partition's progress."""
        out.watermark(Topic.TRADES_CLOSED, (0,), watermark, f"{self.name}/{merge}")
