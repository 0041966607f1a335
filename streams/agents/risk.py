"""risk (portfolio-wide, one partition): decisions, bars, closed trades, commands, universe
changes -> approvals.

Every input has one partition (bars come from ``market.bars``, written by the features stage),
so whichever worker holds this stage sees the whole portfolio.

One event-time merge over every input: closed trades (shifted by the feedback lag) first, then
operator commands and live universe changes (neither waits for a watermark: both are sparse,
and the live ingest writes a universe change before the ticks it applies to), then each bar
(returns for the correlation rule), then the bar's decisions in symbol order, exactly as the
in-process runner applies them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter, Restore, freeze, thaw
from streams.agents.merging import MergeHandler
from streams.contracts.records import (
    BarClosed,
    ControlCommand,
    DecisionSized,
    OrderApproved,
    OrderRejected,
    TradeClosed,
    UniverseChanged,
)
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.ordering import SortKey
from streams.stages import RiskStage, RiskState
from streams.stages.risk import command_order, rules_passed
from streams.topics import Topic
from streams.topology import BuildContext, Shift, stage_spec

_RANK = {
    Topic.TRADES_CLOSED.value: 0,
    Topic.CONTROL_COMMANDS.value: 1,
    Topic.UNIVERSE_EVENTS.value: 1,  # state of its own: its order against commands is moot
    Topic.MARKET_BARS.value: 2,
    Topic.DECISIONS_SIZED.value: 3,
}

log = logging.getLogger(__name__)


def verdict_attributes(verdict: OrderApproved | OrderRejected) -> dict[str, Any]:
    """Span attributes of a verdict: every rule passed, the rule that rejected, the margin."""
    if isinstance(verdict, OrderApproved):
        return {
            "qt.risk.verdict": "approved",
            "qt.risk.rules_passed": [r.value for r in rules_passed(None)],
            "qt.order_id": verdict.order_id,
            "qt.approved_margin_usd": verdict.approved_margin_usd,
            "qt.equity_usd": verdict.equity_usd,
            "qt.open_positions": verdict.open_positions,
            "qt.risk.mode": verdict.trading_mode.value,
            "qt.risk.mode_reasons": list(verdict.mode_reasons),
            "qt.model_drift": verdict.decision.model_drift.value,
        }
    return {
        "qt.risk.verdict": "rejected",
        "qt.risk.rule": verdict.rule.value,
        "qt.risk.detail": verdict.detail,
        "qt.risk.observed": verdict.observed,
        "qt.risk.limit": verdict.limit,
        "qt.risk.rules_passed": [r.value for r in rules_passed(verdict.rule)],
        "qt.margin_usd": verdict.margin_usd,
    }


class RiskHandler(MergeHandler):
    """Every rule on one consistent portfolio; every rejection is a record with its rule."""

    name = "risk"
    inputs = stage_spec("risk").input_topics

    #: Bars only feed the correlation rule's returns: no span per bar. They come from the
    #: features stage, which admitted their ticks by the tick rule (market.ticks).
    untraced_topics = frozenset({Topic.MARKET_BARS.value})

    def __init__(
        self,
        stage: RiskStage,
        partitions: int,
        feedback_lag_ms: int,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.partitions = partitions
        self.lag = feedback_lag_ms
        self.shifts = {Shift.FEEDBACK_LAG: feedback_lag_ms}
        self.state: RiskState | None = None

    def merge_of(self, topic: str, partition: int) -> int:
        """One merge for the whole portfolio."""
        return 0

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Closed trades at their time + lag; the rest at their event time, ranked."""
        if isinstance(record, TradeClosed):
            # Same tie-break as the runner's feedback queue: symbol, then trade id.
            return SortKey(
                record.event_time_ms + self.lag, 0, f"{record.symbol}\x00{record.trade_id}"
            )
        if isinstance(record, ControlCommand):
            return SortKey(record.event_time_ms, 1, command_order(record))
        if isinstance(record, UniverseChanged):
            return SortKey(record.event_time_ms, 1, record.event_id)
        if isinstance(record, BarClosed):
            return SortKey(record.event_time_ms, 2, record.symbol)
        return SortKey(record.event_time_ms, _RANK[topic], record.symbol)

    def _state(self, time_ms: int) -> RiskState:
        if self.state is None:
            self.state = self.stage.new_state(time_ms)
        return self.state

    def checkpoint(self, topic: str, partition: int, record: Any) -> Restore | None:
        """The portfolio as it was before a decision, a closed trade, a command or a universe
        change.

        A snapshot (``to_dict``) costs about 0.5 ms with a day of history, paid only for
        those records (a few hundred a day). A bar needs none: ``on_bar`` computes its return
        before it changes anything, and the tick rule admitted only positive prices.
        """
        if isinstance(record, BarClosed) and self.state is not None:
            return None
        snapshot = None if self.state is None else freeze(self.state.to_dict())

        def restore() -> None:
            self.state = None if snapshot is None else RiskState.from_dict(thaw(snapshot))

        return restore

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Apply feedback, a command, a universe change or a bar; approve or reject a decision."""
        state = self._state(record.event_time_ms)
        cause = ""
        if isinstance(record, TradeClosed):
            self.stage.on_trade_closed(state, record)
            cause = record.trade_id
        elif isinstance(record, ControlCommand):
            self.stage.on_command(state, record)
            cause = record.command_id
        elif isinstance(record, UniverseChanged):
            self.stage.on_universe(state, record)
        elif isinstance(record, BarClosed):
            self.stage.on_bar(state, record)
            return
        elif isinstance(record, DecisionSized):
            cause = record.decision_id
            verdict = self.stage.on_decision(state, record)
            tracing.annotate(verdict_attributes(verdict))
            metrics().trading_mode(self.stage.last_mode.value)
            if isinstance(verdict, OrderRejected):
                metrics().risk_rejection(verdict.rule.value)
            if isinstance(verdict, OrderApproved):
                out.record(Topic.ORDERS_APPROVED, verdict.symbol, verdict, verdict.event_time_ms, 0)
            else:
                out.record_to(
                    Topic.RISK_REJECTIONS, 0, verdict.symbol, verdict,
                    verdict.event_time_ms, f"{self.name}/0",
                )  # fmt: skip
        change = self.stage.mode_change(state, record.event_time_ms, cause) if cause else None
        if change is not None:
            tracing.annotate({"qt.risk.mode_change": f"{change.previous.value} -> "
                              f"{change.mode.value}: {'; '.join(change.reasons)}"})  # fmt: skip
            out.record_to(Topic.POLICY_MODES, 0, change.mode.value, change,
                          change.event_time_ms, f"{self.name}/0")  # fmt: skip
            log.warning("trading mode %s -> %s at %d: %s", change.previous.value, change.mode.value,
                        change.event_time_ms, "; ".join(change.reasons))  # fmt: skip
        p = state.portfolio
        metrics().portfolio(equity_usd=p.equity, open_positions=len(p.positions), halted=p.halted)

    def to_state(self) -> dict[str, Any]:
        """The merge and the portfolio (equity, marks, positions, kill switch, seen ids)."""
        return super().to_state() | {
            "portfolio": None if self.state is None else self.state.to_dict(),
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        super().load_state(data)
        portfolio = data["portfolio"]
        self.state = None if portfolio is None else RiskState.from_dict(portfolio)


def build(context: BuildContext) -> RiskHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    s = context.settings
    return RiskHandler(RiskStage.from_settings(s), s.partitions, s.feedback_lag_ms)
