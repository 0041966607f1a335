"""The two directions across the venue boundary, as plain typed data.

*Commands* (:class:`PlaceOrder`, :class:`CancelOrder`) are what the synchronous venue state
machine (:mod:`.venue`) asks the exchange to do; the asynchronous gateway (:mod:`.gateway`)
executes them. *Exchange events* (:class:`OrderUpdate`, :class:`AlgoUpdate`,
:class:`OrderRejected`, :class:`PositionUpdate`, :class:`ReconcileFinding`) are what the
exchange said, parsed from its user-data stream and REST answers; the state machine turns them
into our fills, position events and closed trades. Both directions are ``to_dict``/``from_dict``
so they can travel as records and sit in a table. Quantities and prices are floats parsed from
the exchange's decimal strings (the values are on the exchange grid already).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

#: Order types Binance routes through the algo-order service (``/fapi/v1/algoOrder``).
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)


class _Plain:
    """``to_dict``/``from_dict`` with a ``type`` tag (subclasses are frozen dataclasses)."""

    tag: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the message's ``type``."""
        return {"type": self.tag, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> Any:
        """The message from a dict (unknown keys ignored: newer writers may add some)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class PlaceOrder(_Plain):
    """Place one order; ``leverage`` > 0 makes the gateway set leverage and margin type first."""

    tag: ClassVar[str] = "place"
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    order_type: str  # MARKET | LIMIT | STOP_MARKET | TRAILING_STOP_MARKET
    quantity: float | None
    price: float | None = None
    trigger_price: float | None = None
    callback_rate_pct: float | None = None  # Binance's callbackRate, in percent
    reduce_only: bool = False
    close_position: bool = False
    time_in_force: str | None = None
    leverage: int = 0
    reference_price: float | None = None  # values a MARKET order for the notional check

    @property
    def conditional(self) -> bool:
        """Routed through the algo-order endpoints (not listed by ``openOrders``)."""
        return self.order_type in CONDITIONAL_TYPES


@dataclass(frozen=True, slots=True)
class CancelOrder(_Plain):
    """Cancel one order by client id (an algo order when ``conditional``)."""

    tag: ClassVar[str] = "cancel"
    client_id: str
    symbol: str
    conditional: bool


Command = PlaceOrder | CancelOrder


#: The status of a trade from ``userTrades`` (the replay of what a stream missed): unknown.
TRADE_REPLAY = "TRADE_REPLAY"
#: The accounts' margin and quote asset: fees in any other asset are converted to it.
QUOTE_ASSET = "USDT"


@dataclass(frozen=True, slots=True)
class OrderUpdate(_Plain):
    """One ``ORDER_TRADE_UPDATE`` (or the same facts from a REST order query)."""

    tag: ClassVar[str] = "order"
    client_id: str
    order_id: int
    symbol: str
    side: str
    order_type: str
    status: str  # NEW PARTIALLY_FILLED FILLED CANCELED EXPIRED ...
    exec_type: str  # NEW TRADE CANCELED EXPIRED CALCULATED AMENDMENT
    time_ms: int
    last_qty: float = 0.0
    last_price: float = 0.0
    cum_qty: float = 0.0
    avg_price: float = 0.0
    commission: float = 0.0
    commission_asset: str = ""
    commission_usdt: float | None = None  # converted by the gateway (another asset than USDT)
    maker: bool = False
    trade_id: int = 0
    reduce_only: bool = False
    realized_pnl: float = 0.0

    @property
    def charged_in_usdt(self) -> bool:
        """The commission is a USDT amount as the exchange sent it (no conversion needed)."""
        return self.commission_asset in ("", QUOTE_ASSET)

    @property
    def fee_usdt(self) -> float:
        """The trade's commission in USDT: as charged, or as the gateway converted it (a fee in
        an asset it found no USDT price for counts 0; the gateway warned about it)."""
        return self.commission if self.charged_in_usdt else self.commission_usdt or 0.0


@dataclass(frozen=True, slots=True)
class AlgoUpdate(_Plain):
    """One ``ALGO_UPDATE``: a conditional order's life in the algo service."""

    tag: ClassVar[str] = "algo"
    client_id: str
    algo_id: int
    symbol: str
    status: str  # NEW TRIGGERING TRIGGERED FINISHED CANCELED EXPIRED REJECTED
    time_ms: int
    actual_order_id: str = ""  # the matching-engine order once triggered


@dataclass(frozen=True, slots=True)
class OrderRejected(_Plain):
    """The exchange (or our filter check) refused an order; ``reason`` names code and message."""

    tag: ClassVar[str] = "rejected"
    client_id: str
    symbol: str
    code: int
    reason: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class PositionUpdate(_Plain):
    """A symbol's position on the exchange (``ACCOUNT_UPDATE`` or ``positionRisk``)."""

    tag: ClassVar[str] = "position"
    symbol: str
    amount: float  # signed: > 0 long, < 0 short
    entry_price: float
    time_ms: int


@dataclass(frozen=True, slots=True)
class ReconcileFinding(_Plain):
    """A difference between the exchange and the venue's state, and what was done about it."""

    tag: ClassVar[str] = "finding"
    symbol: str
    kind: str  # streams.vocabulary.ReconcileKind
    detail: str
    time_ms: int
    amount: float = 0.0
    entry_price: float = 0.0
    client_id: str = ""


@dataclass(frozen=True, slots=True)
class SymbolSnapshot(_Plain):
    """What the exchange holds for one symbol at ``time_ms`` (reconciliation's input):
    the position (``positionRisk``), open orders (``openOrders``) and open algo orders
    (``openAlgoOrders``: conditional orders are not in ``openOrders``), by client id."""

    tag: ClassVar[str] = "snapshot"
    symbol: str
    amount: float
    entry_price: float
    mark_price: float
    open_orders: tuple[str, ...]
    open_algo_orders: tuple[str, ...]
    time_ms: int

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> Any:
        """Lists back to tuples."""
        rest = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        rest["open_orders"] = tuple(rest["open_orders"])
        rest["open_algo_orders"] = tuple(rest["open_algo_orders"])
        return cls(**rest)


ExchangeEvent = (
    OrderUpdate | AlgoUpdate | OrderRejected | PositionUpdate | ReconcileFinding | SymbolSnapshot
)
_BY_TAG: dict[str, type[_Plain]] = {
    c.tag: c
    for c in (
        PlaceOrder,
        CancelOrder,
        OrderUpdate,
        AlgoUpdate,
        OrderRejected,
        PositionUpdate,
        ReconcileFinding,
        SymbolSnapshot,
    )
}


def message_from_dict(data: Mapping[str, Any]) -> Command | ExchangeEvent:
    """Inverse of ``to_dict`` for any message (the ``type`` tag picks the class)."""
    cls = _BY_TAG.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown venue message type {data.get('type')!r}")
    message: Command | ExchangeEvent = cls.from_fields(data)
    return message


# -- the exchange's wire format -> events ----------------------------------------------------
def _f(value: object) -> float:
    return float(str(value)) if value not in (None, "") else 0.0


def order_update_from_stream(o: Mapping[str, Any], time_ms: int) -> OrderUpdate:
    """The ``o`` object of an ``ORDER_TRADE_UPDATE`` (Binance's one-letter keys)."""
    return OrderUpdate(
        client_id=str(o["c"]),
        order_id=int(o["i"]),
        symbol=str(o["s"]),
        side=str(o["S"]),
        order_type=str(o.get("ot") or o["o"]),
        status=str(o["X"]),
        exec_type=str(o["x"]),
        time_ms=int(o.get("T", time_ms)),
        last_qty=_f(o.get("l")),
        last_price=_f(o.get("L")),
        cum_qty=_f(o.get("z")),
        avg_price=_f(o.get("ap")),
        commission=_f(o.get("n")),
        commission_asset=str(o.get("N") or ""),
        maker=bool(o.get("m", False)),
        trade_id=int(o.get("t", 0) or 0),
        reduce_only=bool(o.get("R", False)),
        realized_pnl=_f(o.get("rp")),
    )


def order_update_from_rest(o: Mapping[str, Any]) -> OrderUpdate:
    """A ``GET /fapi/v1/order`` body: the order's state, no trade (``exec_type`` ``QUERY``)."""
    return OrderUpdate(
        client_id=str(o["clientOrderId"]),
        order_id=int(o["orderId"]),
        symbol=str(o["symbol"]),
        side=str(o["side"]),
        order_type=str(o.get("origType") or o["type"]),
        status=str(o["status"]),
        exec_type="QUERY",
        time_ms=int(o.get("updateTime") or o.get("time") or 0),
        cum_qty=_f(o.get("executedQty")),
        avg_price=_f(o.get("avgPrice")),
        reduce_only=bool(o.get("reduceOnly", False)),
    )


def algo_update_from_stream(o: Mapping[str, Any], time_ms: int) -> AlgoUpdate:
    """The ``o`` object of an ``ALGO_UPDATE``."""
    return AlgoUpdate(
        client_id=str(o["caid"]),
        algo_id=int(o["aid"]),
        symbol=str(o["s"]),
        status=str(o["X"]),
        time_ms=time_ms,
        actual_order_id=str(o.get("ai") or ""),
    )


def algo_update_from_rest(o: Mapping[str, Any]) -> AlgoUpdate:
    """A ``GET /fapi/v1/algoOrder`` body (or a row of ``openAlgoOrders``)."""
    return AlgoUpdate(
        client_id=str(o["clientAlgoId"]),
        algo_id=int(o["algoId"]),
        symbol=str(o["symbol"]),
        status=str(o.get("algoStatus") or "NEW"),
        time_ms=int(o.get("updateTime") or o.get("createTime") or 0),
        actual_order_id=str(o.get("actualOrderId") or ""),
    )


def positions_from_account_update(msg: Mapping[str, Any]) -> list[PositionUpdate]:
    """The one-way-mode positions of an ``ACCOUNT_UPDATE``."""
    t = int(msg.get("T") or msg.get("E") or 0)
    rows = msg.get("a", {}).get("P", ())
    return [
        PositionUpdate(str(p["s"]), _f(p["pa"]), _f(p.get("ep")), t)
        for p in rows
        if p.get("ps", "BOTH") == "BOTH"
    ]


def parse_user_event(msg: Mapping[str, Any]) -> list[ExchangeEvent]:
    """The events of one user-data stream message; unknown event types give none."""
    kind = msg.get("e")
    t = int(msg.get("T") or msg.get("E") or 0)
    if kind == "ORDER_TRADE_UPDATE":
        return [order_update_from_stream(msg["o"], t)]
    if kind == "ALGO_UPDATE":
        return [algo_update_from_stream(msg["o"], t)]
    if kind == "ACCOUNT_UPDATE":
        return list(positions_from_account_update(msg))
    return []
