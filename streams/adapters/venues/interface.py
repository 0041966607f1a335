"""What an execution venue is given and what it reports back (the venue interface).

A venue takes :class:`OrderIntent` (an :class:`ExitPlan` placed at a time) through ``submit`` and
market data as :class:`Bar` through ``on_bar``; both return the venue's :data:`Event` records in
order: :class:`Fill`, :class:`PositionEvent`, :class:`ClosedTrade`. The execution stage
(:mod:`streams.stages.execution`) builds the intents from ``orders.intents`` records and maps the
events to the contract records. :mod:`streams.adapters.venues.paper` simulates a venue; a
testnet venue (issue 11) goes behind the same interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from streams.instruments import Instrument
from streams.vocabulary import Side


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """A venue's working copy of an ``OrderPlanned``: whole steps, and levels as offsets.

    The offsets (distances from the reference price) let a venue re-anchor the levels at the
    actual average entry; the prices are the record's, anchored at the reference price.
    """

    decision_id: str
    symbol: str
    side: Side
    reference_price: float
    margin: float
    leverage: int
    quantity_steps: int
    tp_fractions: tuple[float, ...]
    tp_steps: tuple[int, ...]
    tp_offsets: tuple[float, ...]
    tp_prices: tuple[float, ...]
    sl_offset: float
    sl_price: float
    trailing_callback: float
    instrument: Instrument

    @property
    def quantity(self) -> float:
        """Position size in base units."""
        return self.quantity_steps * self.instrument.step_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record."""
        data = asdict(self)
        data["side"] = self.side.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitPlan:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["side"] = Side(data["side"])
        fields["instrument"] = Instrument(**data["instrument"])
        for k in ("tp_fractions", "tp_steps", "tp_offsets", "tp_prices"):
            fields[k] = tuple(data[k])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class TradeContext:
    """Why a position exists: what the learner and the journal need from the decision."""

    confidence: float = 0.0
    model_versions: tuple[str, ...] = ()  # e.g. ("xgboost@3", "lightgbm@2", ...)
    strategy: str = ""
    regime: str = ""
    sizing_state: str = ""
    sizing_action: int = -1


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An exit plan placed at decision time ``placed_ms``."""

    plan: ExitPlan
    placed_ms: int
    context: TradeContext = TradeContext()


def intent_to_dict(intent: OrderIntent) -> dict[str, Any]:
    """An intent as plain data (part of a venue's table value)."""
    ctx = asdict(intent.context)
    return {"plan": intent.plan.to_dict(), "placed_ms": intent.placed_ms, "context": ctx}


def intent_from_dict(raw: Mapping[str, Any]) -> OrderIntent:
    """Inverse of :func:`intent_to_dict`."""
    ctx = dict(raw["context"])
    ctx["model_versions"] = tuple(ctx["model_versions"])
    return OrderIntent(ExitPlan.from_dict(raw["plan"]), raw["placed_ms"], TradeContext(**ctx))


@dataclass(frozen=True, slots=True)
class Bar:
    """One kline (or one trade, see :meth:`tick`) of one symbol."""

    symbol: str
    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @classmethod
    def tick(cls, symbol: str, time_ms: int, price: float, quantity: float) -> Bar:
        """A trade as a degenerate bar."""
        return cls(symbol, time_ms, price, price, price, price, quantity)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (``execution.fills``); ``side`` is the order's BUY/SELL direction."""

    fill_id: str
    order_id: str
    decision_id: str
    symbol: str
    side: str
    price: float
    quantity: float
    fee: float
    liquidity: str
    time_ms: int


class PositionEventKind(StrEnum):
    """What happened to a position (``positions.events``)."""

    ACCEPTED = "ACCEPTED"
    ENTRY_PARTIAL = "ENTRY_PARTIAL"
    OPENED = "OPENED"
    TP_FILLED = "TP_FILLED"
    TRAILING_ACTIVATED = "TRAILING_ACTIVATED"
    STOPPED = "STOPPED"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"  # the exchange (or its filters) refused a leg: ``detail`` says why


@dataclass(frozen=True, slots=True)
class PositionEvent:
    """A position state change; ``open_quantity`` is what remains open after it."""

    position_id: str
    symbol: str
    kind: PositionEventKind
    time_ms: int
    price: float
    open_quantity: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A flat position with its economics (``trades.closed``); ``trade_id`` = decision id."""

    trade_id: str
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    exit_price: float
    gross_pnl: float
    fees: float
    net_pnl: float
    margin: float
    leverage: int
    opened_ms: int
    closed_ms: int
    holding_ms: int
    exit_reason: str
    context: TradeContext

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record."""
        data = asdict(self)
        data["side"] = self.side.value
        return data


Event = Fill | PositionEvent | ClosedTrade
