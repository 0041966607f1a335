"""Portfolio-wide risk rules (the single-partition ``risk`` stage).

:func:`evaluate` checks a sized decision against :class:`PortfolioState` and
:class:`~streams.config.RiskLimits`, rule by rule in this fixed order, and returns the first
rejection (every rejection is a record naming the rule, the observed value and the limit):

1. ``kill_switch`` - trading halted by a ``control.commands`` HALT (open positions keep being
   managed by the position monitor; only new entries are refused).
2. ``daily_drawdown`` - (day-start equity - equity) / day-start equity >= ``max_daily_drawdown``;
   *at* the limit is already refused.
3. ``weekly_drawdown`` - the same against the ISO-week start equity.
4. ``max_positions`` - open (or reserved) positions >= ``max_concurrent_positions``.
5. ``opposite_position`` - a position on the other side of the same symbol is open (one-way
   mode: no hedged books).
6. ``max_margin`` - margin > ``max_margin_per_position_usd``.
7. ``max_leverage`` - leverage > ``max_leverage``.
8. ``symbol_concentration`` - (open margin on the symbol + this margin) / equity >
   ``max_symbol_concentration``.
9. ``correlation`` - the direction-signed correlation of this symbol's recent returns with an
    open position's symbol > ``max_open_correlation`` (long A + long B with correlation 0.9 is
    one bet twice; long A + short B is a hedge, signed correlation -0.9).

The confidence gate is the supervisor's (``QT_SUPERVISOR__MIN_CONFIDENCE``, one home): a
decision carries its signal's confidence, which the supervisor already held to that minimum.

Equity is *realised* equity (starting equity + net PnL of closed trades). Day and ISO-week
boundaries are UTC and come from event time: :func:`roll_periods` resets the start marks when
an event falls in a later day/week. An approved decision reserves its margin at once
(:func:`reserve`) so two decisions in the same instant cannot both pass the position limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.config import CorrelationConfig, RiskLimits
from streams.errors import InvalidInputError
from streams.vocabulary import CommandKind, RiskRule, Side

DAY_MS = 86_400_000
_EPS = 1e-12  # float slack so "exactly at the limit" compares as at the limit


def day_index(event_time_ms: int) -> int:
    """UTC day number since the epoch."""
    return event_time_ms // DAY_MS


def iso_week_index(event_time_ms: int) -> int:
    """ISO week number since the epoch (weeks start Monday 00:00 UTC; 1970-01-01 was a Thursday)."""
    return (day_index(event_time_ms) + 3) // 7


@dataclass(frozen=True, slots=True)
class SizedDecision:
    """What the strategy+sizing stage asks the risk stage to approve."""

    decision_id: str
    symbol: str
    side: Side
    confidence: float
    margin: float
    leverage: float
    event_time_ms: int
    recent_returns: tuple[float, ...] = ()  # this symbol's latest bar returns, oldest first


@dataclass(frozen=True, slots=True)
class Approved:
    """The decision passed every rule."""

    decision: SizedDecision


@dataclass(frozen=True, slots=True)
class Rejected:
    """The decision failed ``rule``; ``observed`` vs ``limit`` is the evidence."""

    decision_id: str
    rule: RiskRule
    detail: str
    observed: float
    limit: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a ``risk.rejections`` record."""
        return asdict(self)


@dataclass(slots=True)
class Exposure:
    """One open or reserved position as the risk stage sees it."""

    symbol: str
    side: Side
    margin: float


@dataclass(slots=True)
class PortfolioState:
    """Everything the portfolio-wide rules need; one instance per run (single partition)."""

    equity: float
    day: int
    day_start_equity: float
    week: int
    week_start_equity: float
    positions: dict[str, Exposure] = field(default_factory=dict)  # key: decision id
    returns: dict[str, list[float]] = field(default_factory=dict)
    halted: bool = False
    halt_reason: str = ""

    @classmethod
    def start(cls, equity: float, event_time_ms: int) -> PortfolioState:
        """A fresh portfolio at ``event_time_ms``."""
        t = event_time_ms
        return cls(equity, day_index(t), equity, iso_week_index(t), equity)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        data = asdict(self)
        data["positions"] = {
            k: {"symbol": p.symbol, "side": p.side.value, "margin": p.margin}
            for k, p in self.positions.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PortfolioState:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["positions"] = {
            k: Exposure(p["symbol"], Side(p["side"]), float(p["margin"]))
            for k, p in data["positions"].items()
        }
        fields["returns"] = {s: list(r) for s, r in data["returns"].items()}
        return cls(**fields)


def roll_periods(state: PortfolioState, event_time_ms: int) -> None:
    """Start a new day/ISO week at the current equity when ``event_time_ms`` crosses one.

    Earlier (late) events never move the marks back.
    """
    d, w = day_index(event_time_ms), iso_week_index(event_time_ms)
    if d > state.day:
        state.day, state.day_start_equity = d, state.equity
    if w > state.week:
        state.week, state.week_start_equity = w, state.equity


def drawdown(start_equity: float, equity: float) -> float:
    """Loss since ``start_equity`` as a fraction of it (0 when in profit)."""
    return max(0.0, (start_equity - equity) / start_equity) if start_equity > 0 else 1.0


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


Check = Callable[[SizedDecision, PortfolioState, RiskLimits, CorrelationConfig], Rejected | None]


def _reject(
    d: SizedDecision, rule: RiskRule, detail: str, observed: float, limit: float
) -> Rejected:
    return Rejected(d.decision_id, rule, detail, observed, limit)


def check_kill_switch(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse everything while halted."""
    return (
        _reject(d, RiskRule.KILL_SWITCH, f"halted: {s.halt_reason}", 1.0, 0.0) if s.halted else None
    )


def check_daily_drawdown(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse once today's drawdown reached the daily limit (at the limit included)."""
    start = s.equity if day_index(d.event_time_ms) > s.day else s.day_start_equity
    dd = drawdown(start, s.equity)
    if dd < lim.max_daily_drawdown - _EPS:
        return None
    return _reject(
        d, RiskRule.DAILY_DRAWDOWN, "daily drawdown limit reached", dd, lim.max_daily_drawdown
    )


def check_weekly_drawdown(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse once this ISO week's drawdown reached the weekly limit."""
    start = s.equity if iso_week_index(d.event_time_ms) > s.week else s.week_start_equity
    dd = drawdown(start, s.equity)
    if dd < lim.max_weekly_drawdown - _EPS:
        return None
    limit = lim.max_weekly_drawdown
    return _reject(d, RiskRule.WEEKLY_DRAWDOWN, "weekly drawdown limit reached", dd, limit)


def check_max_positions(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse a new position when the concurrent-position limit is used up."""
    n = len(s.positions)
    if n < lim.max_concurrent_positions:
        return None
    limit = float(lim.max_concurrent_positions)
    return _reject(d, RiskRule.MAX_CONCURRENT_POSITIONS, f"{n} positions open", float(n), limit)


def check_opposite_position(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse opening against an open position on the same symbol."""
    for p in s.positions.values():
        if p.symbol == d.symbol and p.side is not d.side:
            return _reject(
                d, RiskRule.OPPOSITE_POSITION, f"{p.side.value} {p.symbol} open", 1.0, 0.0
            )
    return None


def check_max_margin(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse margin over the per-position cap."""
    cap = lim.max_margin_per_position_usd
    if d.margin <= cap + _EPS:
        return None
    return _reject(d, RiskRule.MAX_MARGIN, "margin over per-position cap", d.margin, cap)


def check_max_leverage(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse leverage over the cap."""
    if d.leverage <= lim.max_leverage:
        return None
    return _reject(d, RiskRule.MAX_LEVERAGE, "leverage over cap", d.leverage, lim.max_leverage)


def check_symbol_concentration(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse when the symbol's margin would exceed its share of equity."""
    on_symbol = sum(p.margin for p in s.positions.values() if p.symbol == d.symbol)
    share = (on_symbol + d.margin) / s.equity if s.equity > 0 else math.inf
    if share <= lim.max_symbol_concentration + _EPS:
        return None
    limit = lim.max_symbol_concentration
    return _reject(d, RiskRule.SYMBOL_CONCENTRATION, f"{d.symbol} margin share", share, limit)


def check_correlation(
    d: SizedDecision, s: PortfolioState, lim: RiskLimits, c: CorrelationConfig
) -> Rejected | None:
    """Refuse when direction-signed correlation with an open position's symbol is too high."""
    worst, worst_symbol = -math.inf, ""
    for p in s.positions.values():
        other = s.returns.get(p.symbol, [])
        if p.symbol == d.symbol or min(len(other), len(d.recent_returns)) < c.min_observations:
            continue  # too few aligned returns: abstain rather than guess
        rho = correlation(d.recent_returns, other)
        signed = -math.inf if rho is None else rho * d.side.sign * p.side.sign
        if signed > worst:
            worst, worst_symbol = signed, p.symbol
    if worst <= lim.max_open_correlation:
        return None
    detail = f"signed correlation with open {worst_symbol}"
    return _reject(d, RiskRule.CORRELATION, detail, worst, lim.max_open_correlation)


#: The fixed evaluation order (see the module docstring), each rule with its contract symbol.
RULES: tuple[tuple[RiskRule, Check], ...] = (
    (RiskRule.KILL_SWITCH, check_kill_switch),
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
    decision: SizedDecision,
    state: PortfolioState,
    limits: RiskLimits,
    corr: CorrelationConfig = CorrelationConfig(),
) -> Approved | Rejected:
    """First rejection in :data:`RULES` order, or :class:`Approved`. Does not mutate ``state``."""
    for _rule, check in RULES:
        rejected = check(decision, state, limits, corr)
        if rejected is not None:
            return rejected
    return Approved(decision)


def record_returns(
    state: PortfolioState, symbol: str, returns: Sequence[float], corr: CorrelationConfig
) -> None:
    """Keep the latest ``max_returns`` bar returns of ``symbol`` for the correlation rule."""
    state.returns[symbol] = list(returns[-corr.max_returns :])


def reserve(state: PortfolioState, decision: SizedDecision) -> None:
    """Book an approved decision's margin at once (keyed by its decision id)."""
    state.positions[decision.decision_id] = Exposure(
        decision.symbol, decision.side, decision.margin
    )


def apply_fill(
    state: PortfolioState, position_id: str, symbol: str, side: Side, filled_margin: float
) -> None:
    """Replace a reservation by the margin actually filled (a partial fill holds less).

    An unknown ``position_id`` (e.g. state rebuilt after a restart) is booked as new.
    """
    if filled_margin < 0.0:
        raise InvalidInputError("filled margin", filled_margin, ">= 0")
    state.positions[position_id] = Exposure(symbol, side, filled_margin)


def apply_close(
    state: PortfolioState, position_id: str, net_pnl: float, event_time_ms: int
) -> None:
    """Release a closed position and book its net PnL into equity.

    Periods roll *before* the PnL is booked, so a loss realised just after midnight counts
    against the new day. Closing an unknown position id still books the PnL (idempotency of
    the close is the caller's job, by trade id).
    """
    roll_periods(state, event_time_ms)
    state.positions.pop(position_id, None)
    state.equity += net_pnl


def apply_command(state: PortfolioState, command: CommandKind, reason: str = "") -> None:
    """Kill switch: HALT refuses new entries until RESUME; open positions are left to exits."""
    if command is CommandKind.HALT:
        state.halted, state.halt_reason = True, reason or "halt command"
    else:
        state.halted, state.halt_reason = False, ""
