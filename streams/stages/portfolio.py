"""The portfolio the risk stage guards: equity, period marks, open positions, kill switch.

One :class:`PortfolioState` per run (the risk stage is single-partition). Equity is *realised*
equity (starting equity + net PnL of closed trades). Day and ISO-week boundaries are UTC and
come from event time: :func:`roll_periods` resets the start marks when an event falls in a later
day/week, and late events never move them back. An approved decision reserves its margin at
once (:func:`reserve`) so two decisions in the same instant cannot both pass the position
limit; :func:`apply_close` releases it and books the PnL. The rules that read this state are in
:mod:`streams.stages.risk`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from streams.vocabulary import CommandKind, Side, UniverseChangeKind

DAY_MS = 86_400_000


def day_index(event_time_ms: int) -> int:
    """UTC day number since the epoch."""
    return event_time_ms // DAY_MS


def iso_week_index(event_time_ms: int) -> int:
    """ISO week number since the epoch (weeks start Monday 00:00 UTC; 1970-01-01 was a Thursday)."""
    return (day_index(event_time_ms) + 3) // 7


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
    returns: dict[str, list[float]] = field(default_factory=dict)  # latest bar returns
    halted: bool = False
    halt_reason: str = ""
    peak_equity: float = 0.0  # highest realised equity since the start or the last RESUME
    breaker_tripped: bool = False  # total drawdown from the peak hit its limit: needs a RESUME
    breaker_reason: str = ""
    #: Symbols the live universe dropped (``universe.events`` LEFT): symbol -> why. No new
    #: entries for them; their open positions run to their exits. A JOINED removes the symbol.
    left_universe: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, equity: float, event_time_ms: int) -> PortfolioState:
        """A fresh portfolio at ``event_time_ms``."""
        t = event_time_ms
        return cls(equity, day_index(t), equity, iso_week_index(t), equity, peak_equity=equity)

    def peak(self) -> float:
        """Peak equity (a state written before the peak was kept starts it at today's equity)."""
        return max(self.peak_equity, self.equity)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table.

        The return lists are the live ones, not copies (``asdict`` deep-copied a day of bars
        per symbol at every flush): callers serialise the dict at once.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self)}
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
        # A state stored before the universe events existed has no wind-down.
        fields["left_universe"] = dict(data.get("left_universe", {}))
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


def remember_return(state: PortfolioState, symbol: str, ret: float, max_returns: int) -> None:
    """Append a bar return of ``symbol``, keeping the latest ``max_returns`` (correlation rule)."""
    returns = state.returns.setdefault(symbol, [])
    returns.append(ret)
    if len(returns) > max_returns:
        del returns[0]


def reserve(
    state: PortfolioState, position_id: str, symbol: str, side: Side, margin: float
) -> None:
    """Book an approved decision's margin at once (keyed by its decision id).

    The reservation holds until the trade closes: a partial entry fill still counts in full
    (conservative).
    """
    state.positions[position_id] = Exposure(symbol, side, margin)


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
    state.peak_equity = state.peak()


def total_drawdown(state: PortfolioState) -> float:
    """Loss from the peak equity as a fraction of it (multi-week: no period resets it)."""
    return drawdown(state.peak(), state.equity)


def trip_breaker(state: PortfolioState, limit: float) -> bool:
    """Latch the circuit breaker once the total drawdown reached ``limit``; True when it trips."""
    dd = total_drawdown(state)
    if state.breaker_tripped or dd < limit - 1e-12:
        return False
    state.breaker_tripped = True
    state.breaker_reason = f"drawdown {dd:.2%} from peak {state.peak():.2f} >= {limit:.0%}"
    return True


def apply_command(state: PortfolioState, command: CommandKind, reason: str = "") -> None:
    """Kill switch: HALT refuses new entries until RESUME; open positions are left to exits.

    RESUME also resets a tripped circuit breaker, and then the peak to today's equity: the
    operator accepts the loss so far, and the breaker measures from here.
    """
    if command is CommandKind.HALT:
        state.halted, state.halt_reason = True, reason or "halt command"
    else:
        if state.breaker_tripped:
            state.peak_equity = state.equity
        state.halted, state.halt_reason = False, ""
        state.breaker_tripped, state.breaker_reason = False, ""


def apply_universe_change(
    state: PortfolioState, symbol: str, change: UniverseChangeKind, reason: str = ""
) -> None:
    """Wind-down: a symbol that LEFT the live universe takes no new entries until it JOINED
    again; its open positions are left to the exits, like under the kill switch."""
    if change is UniverseChangeKind.LEFT:
        state.left_universe[symbol] = reason or "left the universe"
    else:
        state.left_universe.pop(symbol, None)
