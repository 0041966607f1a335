"""Risk stage (one partition, portfolio-wide): ``DecisionSized`` -> approved or rejected.

The stage turns the sizing decision into dollars against the *portfolio's* realised equity
(``risk_fraction * equity``, capped per position), then runs the rules of
:mod:`streams.logic.risk` in their fixed order. An approval reserves its margin at once, so two
decisions of the same minute (processed in symbol order) cannot both take the last slot. The
reservation holds the approved margin until the trade closes (a partial entry fill still counts
in full: conservative), and ``on_trade_closed`` releases it and books the net PnL.

For the correlation rule the stage keeps the last returns of every symbol from the market ticks
(``on_tick``); the decision's own recent returns come from the same store, so a decision at bar
``t`` (made at the bar's close) sees returns up to bar ``t`` and nothing later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams import ids
from streams.config import CorrelationConfig, RiskLimits, Settings
from streams.contracts.records import (
    CommandKind,
    ControlCommand,
    DecisionSized,
    OrderApproved,
    OrderRejected,
    RiskRule,
    TickKind,
    TickReceived,
    TradeClosed,
)
from streams.logic.risk import (
    Approved,
    PortfolioState,
    Rejected,
    SizedDecision,
    apply_close,
    apply_command,
    evaluate,
    reserve,
    roll_periods,
)


@dataclass(slots=True)
class RiskState:
    """The portfolio plus what makes the stage idempotent and feeds the correlation rule."""

    portfolio: PortfolioState
    last_close: dict[str, float] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)  # decision ids already evaluated
    closed: set[str] = field(default_factory=set)  # trade ids already booked

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {
            "portfolio": self.portfolio.to_dict(),
            "last_close": dict(self.last_close),
            "decided": sorted(self.decided),
            "closed": sorted(self.closed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            portfolio=PortfolioState.from_dict(data["portfolio"]),
            last_close={k: float(v) for k, v in data["last_close"].items()},
            decided=set(data["decided"]),
            closed=set(data["closed"]),
        )


class RiskStage:
    """Portfolio-wide approval of sized decisions (see the module doc)."""

    stage = "risk"

    def __init__(self, limits: RiskLimits, corr: CorrelationConfig | None = None) -> None:
        self.limits = limits
        self.corr = corr or CorrelationConfig()

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskStage:
        """The stage as the settings configure it."""
        return cls(settings.risk, settings.correlation)

    def new_state(self, event_time_ms: int) -> RiskState:
        """A fresh portfolio at the starting equity, periods anchored at ``event_time_ms``."""
        return RiskState(PortfolioState.start(self.limits.starting_equity_usd, event_time_ms))

    def on_tick(self, state: RiskState, tick: TickReceived) -> None:
        """Keep the symbol's latest 1-bar log returns (klines only) for the correlation rule."""
        if tick.kind is not TickKind.KLINE_1M:
            return
        prev = state.last_close.get(tick.symbol)
        # The return first: a bar that cannot give one (a bad price) changes nothing.
        ret = None if prev is None else math.log(tick.close / prev)
        state.last_close[tick.symbol] = tick.close
        if ret is None:
            return
        returns = state.portfolio.returns.setdefault(tick.symbol, [])
        returns.append(ret)
        if len(returns) > self.corr.max_returns:
            del returns[0]

    def margin_for(self, state: RiskState, d: DecisionSized) -> float:
        """The decision's risk fraction of portfolio equity, capped per position."""
        equity = state.portfolio.equity
        cap = self.limits.max_margin_per_position_usd
        return min(d.risk_fraction * equity, cap) if equity > 0.0 else 0.0

    def on_decision(self, state: RiskState, d: DecisionSized) -> OrderApproved | OrderRejected:
        """Approve (and reserve) or reject one decision."""
        if d.decision_id in state.decided:
            return self._rejected(d, d.margin_usd, RiskRule.DUPLICATE_DECISION, "already evaluated")
        state.decided.add(d.decision_id)
        p = state.portfolio
        roll_periods(p, d.event_time_ms)
        margin = self.margin_for(state, d)
        sized = SizedDecision(
            decision_id=d.decision_id,
            symbol=d.symbol,
            side=d.side,
            confidence=d.confidence,
            margin=margin,
            leverage=self.limits.max_leverage,  # the exit planner picks <= this cap
            event_time_ms=d.event_time_ms,
            recent_returns=tuple(p.returns.get(d.symbol, ())),
        )
        verdict = evaluate(sized, p, self.limits, self.corr)
        if isinstance(verdict, Rejected):
            return self._from_logic(d, margin, verdict)
        assert isinstance(verdict, Approved)
        reserve(p, sized)
        return OrderApproved(
            order_id=ids.order_id(d.decision_id, "entry"),
            decision_id=d.decision_id,
            symbol=d.symbol,
            event_time_ms=d.event_time_ms,
            decision=d,
            approved_margin_usd=margin,
            max_leverage=self.limits.max_leverage,
            equity_usd=p.equity,
            open_positions=len(p.positions),
        )

    def on_trade_closed(self, state: RiskState, t: TradeClosed) -> bool:
        """Release the position and book its net PnL once; False for a repeated trade."""
        if t.trade_id in state.closed:
            return False
        state.closed.add(t.trade_id)
        apply_close(state.portfolio, t.trade_id, t.net_pnl, t.event_time_ms)
        return True

    def on_command(self, state: RiskState, c: ControlCommand) -> None:
        """HALT / RESUME the kill switch (PROMOTE is the ensemble's business)."""
        if c.command in (CommandKind.HALT, CommandKind.RESUME):
            apply_command(state.portfolio, c.command, c.reason)

    def _from_logic(self, d: DecisionSized, margin: float, r: Rejected) -> OrderRejected:
        return self._rejected(d, margin, r.rule, r.detail, r.observed, r.limit)

    @staticmethod
    def _rejected(
        d: DecisionSized,
        margin: float,
        rule: RiskRule,
        detail: str,
        observed: float | None = None,
        limit: float | None = None,
    ) -> OrderRejected:
        return OrderRejected(
            decision_id=d.decision_id,
            symbol=d.symbol,
            event_time_ms=d.event_time_ms,
            side=d.side,
            margin_usd=margin,
            confidence=d.confidence,
            rule=rule,
            detail=detail,
            observed=observed,
            limit=limit,
        )
