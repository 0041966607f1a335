"""Risk stage (one partition, portfolio-wide): ``DecisionSized`` -> approved or rejected.

The stage turns the sizing decision into dollars against the *portfolio's* realised equity
(:func:`margin_for`: ``risk_fraction * equity``, capped per position), then runs the rules below
on that :class:`Proposal` and the :class:`~streams.stages.portfolio.PortfolioState`, in this
fixed order, and returns the first rejection (an ``OrderRejected`` naming the rule, the observed
value and the limit):

1. ``kill_switch`` - trading halted by a ``control.commands`` HALT (open positions keep being
   managed by the position monitor; only new entries are refused).
2. ``left_universe`` - the symbol left the live universe (a ``universe.events`` LEFT, written
   by the live ingest's refresh): no new entries on it until it joins again; its open positions
   are still managed to their exits (wind-down). File replays carry no universe events.
3. ``total_drawdown`` - the circuit breaker: (peak equity - equity) / peak equity >=
   ``max_total_drawdown`` over any number of days and weeks (``MAX_TOTAL_DRAWDOWN``); once it
   fired it stays latched (``TRADING_HALTED``) until an operator RESUME, which also restarts the
   peak at the equity of that moment.
4. ``daily_drawdown`` - (day-start equity - equity) / day-start equity >= ``max_daily_drawdown``;
   *at* the limit is already refused.
5. ``weekly_drawdown`` - the same against the ISO-week start equity.
6. ``max_positions`` - open (or reserved) positions >= ``max_concurrent_positions``.
7. ``opposite_position`` - a position on the other side of the same symbol is open (one-way
   mode: no hedged books).
8. ``max_margin`` - margin > ``max_margin_per_position_usd``.
9. ``max_leverage`` - leverage > ``max_leverage``.
10. ``symbol_concentration`` - (open margin on the symbol + this margin) / equity >
    ``max_symbol_concentration``.
11. ``correlation`` - the direction-signed correlation of this symbol's recent returns with an
    open position's symbol > ``max_open_correlation`` (long A + long B with correlation 0.9 is
    one bet twice; long A + short B is a hedge, signed correlation -0.9).

The policy layer (:func:`trading_mode`) sets the mode of each decision from the portfolio and
the decision: HALT (operator halt, or the breaker latched: the rules above refuse), DEFENSIVE
(drawdown from the peak >= ``defensive_drawdown``; with ``defensive_in_high_volatility``, a
decision in the HIGH_VOLATILITY regime; with ``defensive_on_drift`` (off by default), a
decision whose ensemble instance measures SIGNIFICANT drift, ``DecisionSized.model_drift``;
a decision whose supervisor partition vetoed at least ``defensive_veto_share`` of its recent
BUY/SELL signals for model health, ``DecisionSized.health_veto_share``: the margin is scaled
by ``defensive_size``), NORMAL otherwise. Every mode comes with its
reasons, and an approval carries both (``trading_mode``, ``mode_reasons``).

The confidence gate is the supervisor's (``QT_SUPERVISOR__MIN_CONFIDENCE``, one home): a
decision carries its signal's confidence, which the supervisor already held to that minimum.

An approval reserves its margin at once, so two decisions of the same minute (processed in
symbol order) cannot both take the last slot; ``on_trade_closed`` releases it and books the net
PnL. Event time: day and week marks roll with the decisions' and closed trades' event times
(:mod:`streams.stages.portfolio`). For the correlation rule the stage keeps the last returns of
every symbol from the closed bars of ``market.bars`` (``on_bar``), so a decision at bar ``t``
(made at the bar's close) sees returns up to bar ``t`` and nothing later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams import ids
from streams.config import CorrelationConfig, RiskLimits, Settings
from streams.contracts.records import (
    BarClosed,
    CommandKind,
    ControlCommand,
    DecisionSized,
    OrderApproved,
    OrderRejected,
    RiskRule,
    TradeClosed,
    TradingModeChanged,
    UniverseChanged,
)
from streams.ids import DEDUPE_WINDOW_MS, SeenIds
from streams.stages.portfolio import (
    PortfolioState,
    apply_close,
    apply_command,
    apply_universe_change,
    day_index,
    drawdown,
    iso_week_index,
    remember_return,
    reserve,
    roll_periods,
    total_drawdown,
    trip_breaker,
)
from streams.stages.sizing import margin_for
from streams.vocabulary import ModelDrift, Regime, TradingMode

_EPS = 1e-12  # float slack so "exactly at the limit" compares as at the limit


@dataclass(frozen=True, slots=True)
class Proposal:
    """A decision as the rules weigh it: the record plus the margin and leverage it would take."""

    decision: DecisionSized
    margin: float
    leverage: float


def rejection(
    d: DecisionSized,
    margin: float,
    rule: RiskRule,
    detail: str,
    observed: float | None = None,
    limit: float | None = None,
) -> OrderRejected:
    """The ``risk.rejections`` record of ``d``: the rule, and the observed value vs the limit."""
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


def correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation of the aligned tails of ``a`` and ``b``; None if undefined."""
    n = min(len(a), len(b))
    if n < 2:
        return None
    xs, ys = a[len(a) - n :], b[len(b) - n :]
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0.0 or syy <= 0.0:
        return None
    return sxy / math.sqrt(sxx * syy)


Check = Callable[[Proposal, PortfolioState, RiskLimits, CorrelationConfig], OrderRejected | None]


def _reject(
    p: Proposal, rule: RiskRule, detail: str, observed: float, limit: float
) -> OrderRejected:
    return rejection(p.decision, p.margin, rule, detail, observed, limit)


def check_kill_switch(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse everything while halted."""
    return (
        _reject(p, RiskRule.KILL_SWITCH, f"halted: {s.halt_reason}", 1.0, 0.0) if s.halted else None
    )


def check_left_universe(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse new entries on a symbol the live universe dropped (wind-down)."""
    why = s.left_universe.get(p.decision.symbol)
    if why is None:
        return None
    return _reject(p, RiskRule.LEFT_UNIVERSE, f"winding down: {why}", 1.0, 0.0)


def _period_drawdown(
    p: Proposal, rule: RiskRule, new_period: bool, start_equity: float, equity: float, limit: float
) -> OrderRejected | None:
    """Refuse once the period's drawdown reached ``limit`` (at the limit included).

    A decision in a later period than the marks starts that period at the current equity.
    """
    dd = drawdown(equity if new_period else start_equity, equity)
    if dd < limit - _EPS:
        return None
    period = "daily" if rule is RiskRule.DAILY_DRAWDOWN else "weekly"
    return _reject(p, rule, f"{period} drawdown limit reached", dd, limit)


def check_total_drawdown(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """The circuit breaker: refuse from ``max_total_drawdown`` below the peak until a RESUME."""
    if s.breaker_tripped:
        detail = f"circuit breaker: {s.breaker_reason}; needs an operator RESUME"
        return _reject(
            p, RiskRule.TRADING_HALTED, detail, total_drawdown(s), lim.max_total_drawdown
        )
    dd = total_drawdown(s)
    if dd < lim.max_total_drawdown - _EPS:
        return None
    detail = f"drawdown from peak {s.peak():.2f} reached the total limit"
    return _reject(p, RiskRule.MAX_TOTAL_DRAWDOWN, detail, dd, lim.max_total_drawdown)


def command_order(c: ControlCommand) -> str:
    """The tie-break of commands at one event time: the order the operator issued them (a HALT
    and a RESUME sent within one bar, both stamped at the stream's progress, apply in that
    order), then the id (commands issued in the same millisecond)."""
    return f"{max(c.issued_at_ms, 0):016d}:{c.command_id}"


def portfolio_mode(s: PortfolioState, lim: RiskLimits) -> tuple[TradingMode, tuple[str, ...]]:
    """The portfolio's own mode, with its reasons: HALT (operator, circuit breaker), DEFENSIVE
    (drawdown from the peak) or NORMAL. A change of it is an event (``policy.modes``)."""
    halts = [f"operator halt: {s.halt_reason}"] if s.halted else []
    if s.breaker_tripped:
        halts.append(f"circuit breaker: {s.breaker_reason}")
    if halts:
        return TradingMode.HALT, tuple(halts)
    dd = total_drawdown(s)
    if dd >= lim.defensive_drawdown - _EPS:
        reason = f"drawdown {dd:.2%} from peak >= {lim.defensive_drawdown:.0%}"
        return TradingMode.DEFENSIVE, (reason,)
    return TradingMode.NORMAL, ()


def trading_mode(
    s: PortfolioState, d: DecisionSized, lim: RiskLimits
) -> tuple[TradingMode, tuple[str, ...]]:
    """The policy layer: the mode a decision is weighed in, with every reason for it (the
    portfolio's mode, made DEFENSIVE by the decision's regime or model drift as configured)."""
    mode, own = portfolio_mode(s, lim)
    if mode is TradingMode.HALT:
        return mode, own
    reasons = list(own)
    if lim.defensive_in_high_volatility and d.regime is Regime.HIGH_VOLATILITY:
        reasons.append("HIGH_VOLATILITY regime")
    if lim.defensive_on_drift and d.model_drift is ModelDrift.SIGNIFICANT:
        reasons.append("SIGNIFICANT model drift from the training reference")
    share = d.health_veto_share
    if lim.defensive_veto_share > 0 and share >= lim.defensive_veto_share - _EPS:
        reasons.append(f"{share:.0%} of recent signals vetoed for model health "
                       f">= {lim.defensive_veto_share:.0%}")  # fmt: skip
    return (TradingMode.DEFENSIVE, tuple(reasons)) if reasons else (TradingMode.NORMAL, ())


def mode_margin(margin: float, mode: TradingMode, lim: RiskLimits) -> float:
    """The margin a decision may take in ``mode`` (DEFENSIVE: scaled down)."""
    return margin * lim.defensive_size if mode is TradingMode.DEFENSIVE else margin


def check_daily_drawdown(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse once today's drawdown reached the daily limit."""
    new_day = day_index(p.decision.event_time_ms) > s.day
    rule, limit = RiskRule.DAILY_DRAWDOWN, lim.max_daily_drawdown
    return _period_drawdown(p, rule, new_day, s.day_start_equity, s.equity, limit)


def check_weekly_drawdown(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse once this ISO week's drawdown reached the weekly limit."""
    new_week = iso_week_index(p.decision.event_time_ms) > s.week
    rule, limit = RiskRule.WEEKLY_DRAWDOWN, lim.max_weekly_drawdown
    return _period_drawdown(p, rule, new_week, s.week_start_equity, s.equity, limit)


def check_max_positions(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse a new position when the concurrent-position limit is used up."""
    n = len(s.positions)
    if n < lim.max_concurrent_positions:
        return None
    limit = float(lim.max_concurrent_positions)
    return _reject(p, RiskRule.MAX_CONCURRENT_POSITIONS, f"{n} positions open", float(n), limit)


def check_opposite_position(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse opening against an open position on the same symbol."""
    d = p.decision
    for open_ in s.positions.values():
        if open_.symbol == d.symbol and open_.side is not d.side:
            detail = f"{open_.side.value} {open_.symbol} open"
            return _reject(p, RiskRule.OPPOSITE_POSITION, detail, 1.0, 0.0)
    return None


def check_max_margin(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse margin over the per-position cap."""
    cap = lim.max_margin_per_position_usd
    if p.margin <= cap + _EPS:
        return None
    return _reject(p, RiskRule.MAX_MARGIN, "margin over per-position cap", p.margin, cap)


def check_max_leverage(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse leverage over the cap."""
    if p.leverage <= lim.max_leverage:
        return None
    return _reject(p, RiskRule.MAX_LEVERAGE, "leverage over cap", p.leverage, lim.max_leverage)


def check_symbol_concentration(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse when the symbol's margin would exceed its share of equity."""
    symbol = p.decision.symbol
    on_symbol = sum(e.margin for e in s.positions.values() if e.symbol == symbol)
    share = (on_symbol + p.margin) / s.equity if s.equity > 0 else math.inf
    if share <= lim.max_symbol_concentration + _EPS:
        return None
    limit = lim.max_symbol_concentration
    return _reject(p, RiskRule.SYMBOL_CONCENTRATION, f"{symbol} margin share", share, limit)


def check_correlation(
    p: Proposal, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> OrderRejected | None:
    """Refuse when direction-signed correlation with an open position's symbol is too high."""
    d = p.decision
    mine = s.returns.get(d.symbol, [])
    worst, worst_symbol = -math.inf, ""
    for open_ in s.positions.values():
        other = s.returns.get(open_.symbol, [])
        if open_.symbol == d.symbol or min(len(other), len(mine)) < c.min_observations:
            continue  # too few aligned returns: abstain rather than guess
        rho = correlation(mine, other)
        signed = -math.inf if rho is None else rho * d.side.sign * open_.side.sign
        if signed > worst:
            worst, worst_symbol = signed, open_.symbol
    if worst <= lim.max_open_correlation:
        return None
    detail = f"signed correlation with open {worst_symbol}"
    return _reject(p, RiskRule.CORRELATION, detail, worst, lim.max_open_correlation)


#: The fixed evaluation order (see the module docstring), each rule with its contract symbol.
RULES: tuple[tuple[RiskRule, Check], ...] = (
    (RiskRule.KILL_SWITCH, check_kill_switch),
    (RiskRule.LEFT_UNIVERSE, check_left_universe),
    (RiskRule.MAX_TOTAL_DRAWDOWN, check_total_drawdown),
    (RiskRule.DAILY_DRAWDOWN, check_daily_drawdown),
    (RiskRule.WEEKLY_DRAWDOWN, check_weekly_drawdown),
    (RiskRule.MAX_CONCURRENT_POSITIONS, check_max_positions),
    (RiskRule.OPPOSITE_POSITION, check_opposite_position),
    (RiskRule.MAX_MARGIN, check_max_margin),
    (RiskRule.MAX_LEVERAGE, check_max_leverage),
    (RiskRule.SYMBOL_CONCENTRATION, check_symbol_concentration),
    (RiskRule.CORRELATION, check_correlation),
)


def rules_passed(rejected_by: RiskRule | None) -> list[RiskRule]:
    """The rules a decision passed: all of them, or those evaluated before ``rejected_by``."""
    order = [rule for rule, _check in RULES]
    return order if rejected_by not in order else order[: order.index(rejected_by)]


def evaluate(
    proposal: Proposal,
    state: PortfolioState,
    limits: RiskLimits,
    corr: CorrelationConfig = CorrelationConfig(),
) -> OrderRejected | None:
    """First rejection in :data:`RULES` order, or None (approved). Does not mutate ``state``."""
    for _rule, check in RULES:
        rejected = check(proposal, state, limits, corr)
        if rejected is not None:
            return rejected
    return None


@dataclass(slots=True)
class RiskState:
    """The portfolio plus what makes the stage idempotent and feeds the correlation rule."""

    portfolio: PortfolioState
    last_close: dict[str, float] = field(default_factory=dict)
    decided: SeenIds = field(default_factory=SeenIds)  # decision ids already evaluated
    closed: SeenIds = field(default_factory=SeenIds)  # trade ids already booked
    mode: TradingMode = TradingMode.NORMAL  # the portfolio's mode its last change announced

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {
            "portfolio": self.portfolio.to_dict(),
            "last_close": dict(self.last_close),
            "decided": self.decided.to_dict(),
            "closed": self.closed.to_dict(),
            "mode": self.mode.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], window_ms: int = DEDUPE_WINDOW_MS) -> RiskState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            portfolio=PortfolioState.from_dict(data["portfolio"]),
            last_close={k: float(v) for k, v in data["last_close"].items()},
            decided=SeenIds.from_dict(data["decided"], window_ms),
            closed=SeenIds.from_dict(data["closed"], window_ms),
            # a state stored before mode changes were events: what its portfolio is in now
            mode=TradingMode(data.get("mode", TradingMode.NORMAL.value)),
        )


class RiskStage:
    """Portfolio-wide approval of sized decisions (see the module doc)."""

    stage = "risk"

    def __init__(self, limits: RiskLimits, corr: CorrelationConfig | None = None) -> None:
        self.limits = limits
        self.corr = corr or CorrelationConfig()
        #: The mode of the latest decision weighed (for the metric; no state: each decision
        #: computes its own).
        self.last_mode = TradingMode.NORMAL

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskStage:
        """The stage as the settings configure it."""
        return cls(settings.risk, settings.correlation)

    def new_state(self, event_time_ms: int) -> RiskState:
        """A fresh portfolio at the starting equity, periods anchored at ``event_time_ms``."""
        return RiskState(PortfolioState.start(self.limits.starting_equity_usd, event_time_ms))

    def on_bar(self, state: RiskState, bar: BarClosed) -> None:
        """Keep the symbol's latest 1-bar log returns for the correlation rule."""
        prev = state.last_close.get(bar.symbol)
        # The return first: a bar that cannot give one (a bad price) changes nothing.
        ret = None if prev is None else math.log(bar.close / prev)
        state.last_close[bar.symbol] = bar.close
        if ret is not None:
            remember_return(state.portfolio, bar.symbol, ret, self.corr.max_returns)

    def on_decision(self, state: RiskState, d: DecisionSized) -> OrderApproved | OrderRejected:
        """Approve (and reserve) or reject one decision."""
        if d.decision_id in state.decided:
            return rejection(d, d.margin_usd, RiskRule.DUPLICATE_DECISION, "already evaluated")
        state.decided.add(d.decision_id, d.event_time_ms)
        p = state.portfolio
        roll_periods(p, d.event_time_ms)
        margin = margin_for(p.equity, d.risk_fraction, self.limits.max_margin_per_position_usd)
        mode, reasons = trading_mode(p, d, self.limits)
        self.last_mode = mode
        margin = mode_margin(margin, mode, self.limits)
        # The exit planner picks a leverage <= this cap.
        proposal = Proposal(d, margin, self.limits.max_leverage)
        rejected = evaluate(proposal, p, self.limits, self.corr)
        if rejected is not None:
            if rejected.rule is RiskRule.MAX_TOTAL_DRAWDOWN:
                trip_breaker(p, self.limits.max_total_drawdown)
            return rejected
        reserve(p, d.decision_id, d.symbol, d.side, margin)
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
            trading_mode=mode,
            mode_reasons=reasons,
        )

    def mode_change(self, state: RiskState, t: int, cause: str) -> TradingModeChanged | None:
        """The portfolio mode's change the record ``cause`` (at ``t``) made, if it made one.

        Called after every decision, closed trade and command: the only records that move
        equity, the breaker or the kill switch."""
        p = state.portfolio
        mode, reasons = portfolio_mode(p, self.limits)
        if mode is state.mode:
            return None
        previous, state.mode = state.mode, mode
        return TradingModeChanged(
            event_id=f"mode:{cause}", event_time_ms=t, mode=mode, previous=previous,
            reasons=reasons, cause=cause, equity_usd=p.equity, peak_equity_usd=p.peak(),
            drawdown=total_drawdown(p),
        )  # fmt: skip

    def on_trade_closed(self, state: RiskState, t: TradeClosed) -> bool:
        """Release the position and book its net PnL once; False for a repeated trade."""
        if t.trade_id in state.closed:
            return False
        state.closed.add(t.trade_id, t.event_time_ms)
        apply_close(state.portfolio, t.trade_id, t.net_pnl, t.event_time_ms)
        trip_breaker(state.portfolio, self.limits.max_total_drawdown)
        return True

    def on_command(self, state: RiskState, c: ControlCommand) -> None:
        """HALT / RESUME the kill switch (PROMOTE is the ensemble's business)."""
        if c.command in (CommandKind.HALT, CommandKind.RESUME):
            apply_command(state.portfolio, c.command, c.reason)

    def on_universe(self, state: RiskState, u: UniverseChanged) -> None:
        """A symbol joined (entries allowed again) or left (wind-down) the live universe."""
        apply_universe_change(state.portfolio, u.symbol, u.change, u.reason)
