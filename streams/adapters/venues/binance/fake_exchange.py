"""A local stand-in for Binance USD-M futures: the real REST and user-data wire format, fills
from recorded klines, and faults on demand.

Nothing reaches Binance from the development machines, so the venue is tested (and the
testnet mode can be demonstrated) against this server: python-binance talks to it exactly as it
talks to ``testnet.binancefuture.com`` (same paths, parameters, HMAC-SHA256 signatures checked
with the configured secret, ``X-MBX-APIKEY``, ``recvWindow``, JSON bodies, error codes and
``X-MBX-*`` headers), and the user-data websocket sends ``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``,
``ACCOUNT_UPDATE`` and ``listenKeyExpired`` as Binance does.

Matching (one-way mode) runs on recorded 1-minute klines (:meth:`FakeExchange.load_klines`,
:meth:`FakeExchange.advance`): the market price is the last bar's close; MARKET orders fill at
once at that price (taker 0.04 %); a resting LIMIT fills when a later bar trades through it, at its
price (maker 0.02 %); STOP_MARKET triggers when a bar touches the trigger (at the open when the bar
gapped through it) and TRAILING_STOP_MARKET when the price retraces ``callbackRate`` from the best
price since placement: both go through the algo service (``/fapi/v1/algoOrder``, not listed by
``openOrders``) and, once triggered, become a MARKET order with its own order id in the matching
engine. Within a bar, stops are checked before take-profits (as the paper venue does). Event
times (``E``/``T``, fills) are the market clock (the bar's close); ``/fapi/v1/time`` and the
signature window use the wall clock.

Faults (attributes and methods): ``fail_next`` (error codes for the next order requests;
``fail_next_algo`` for conditional ones),
``lose_responses`` (accept the next N orders, then drop the connection before answering),
``slow_responses`` (answer the next N requests after ``slow_s``), ``throttle_next`` (429 with
``Retry-After``), ``drop_user_streams()``, ``expire_listen_keys()``, ``open_position()`` (a
position behind the system's back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

_PARAMS: web.RequestKey[dict[str, str]] = web.RequestKey("params", dict)
TAKER_FEE = Decimal("0.0004")
MAKER_FEE = Decimal("0.0002")
BNB_FEE_DISCOUNT = Decimal("0.9")
#: Endpoints that need no key (market data).
_PUBLIC = frozenset(
    ("/fapi/v1/time", "/fapi/v1/ping", "/fapi/v1/exchangeInfo", "/fapi/v1/ticker/price",
     "/fapi/v2/ticker/price")
)  # fmt: skip
_CONDITIONAL = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}

#: Filters of the symbols the fake lists (Binance USD-M values as of 2025).
SYMBOL_FILTERS: dict[str, tuple[str, str, str]] = {  # tickSize, stepSize, min notional
    "BTCUSDT": ("0.10", "0.001", "100"),
    "ETHUSDT": ("0.01", "0.001", "20"),
    "SOLUSDT": ("0.0100", "1", "5"),
    "BNBUSDT": ("0.010", "0.01", "5"),
    "XRPUSDT": ("0.0001", "0.1", "5"),
}


@dataclass(frozen=True, slots=True)
class Kline:
    """One recorded 1-minute bar."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(slots=True)
class _Order:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal
    reduce_only: bool
    tif: str
    time_ms: int
    status: str = "NEW"
    filled: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    parent_algo: int = 0


@dataclass(slots=True)
class _Algo:
    algo_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal  # 0 with closePosition
    trigger: Decimal
    callback_pct: Decimal
    close_position: bool
    reduce_only: bool
    time_ms: int
    status: str = "NEW"
    best: Decimal = Decimal(0)  # trailing: best price since placement
    actual_order_id: int = 0


@dataclass(slots=True)
class _Position:
    amount: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    leverage: int = 20
    margin_type: str = "CROSSED"


class BinanceError(Exception):
    """An error answer: HTTP status, Binance code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class FakeExchange:
    """State of the fake account and market; :meth:`app` serves it over HTTP + websocket."""

    api_key: str
    api_secret: str
    balance: Decimal = Decimal(10_000)
    #: The asset fees are charged in: "USDT", or "BNB" as with Binance's BNB fee discount (10 %
    #: off, converted at the BNBUSDT price, taken from a BNB wallet of its own).
    fee_asset: str = "USDT"
    fee_asset_spent: Decimal = Decimal(0)
    algo_child_same_client_id: bool = False  # the triggered order's ``c``: caid or a new id
    orders: dict[int, _Order] = field(default_factory=dict)
    algos: dict[int, _Algo] = field(default_factory=dict)
    positions: dict[str, _Position] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    klines: dict[str, list[Kline]] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    now_ms: int = 0  # market clock
    fail_next: list[int] = field(default_factory=list)
    fail_next_algo: list[int] = field(default_factory=list)
    lose_responses: int = 0
    slow_responses: int = 0
    slow_s: float = 2.0
    throttle_next: int = 0
    clock_skew_ms: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    sent_orders: int = 0  # orders accepted into the book (placement requests that succeeded)
    #: called with the client id of an order just accepted, before any event or answer about it
    #: (a test kills its client there: accepted, and nothing about it recorded)
    on_accept: Callable[[str], None] | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1_000_001))
    _listen_keys: dict[str, list[web.WebSocketResponse]] = field(default_factory=dict)
    _weight: list[tuple[float, int]] = field(default_factory=list)

    # ------------------------------------------------------------------ market data
    def load_klines(self, symbol: str, rows: Iterable[Sequence[Any]]) -> None:
        """Bars of ``symbol``: ``(open_ms, open, high, low, close, ...)`` rows in time order."""
        bars = [Kline(int(r[0]), *(Decimal(str(x)) for x in r[1:5])) for r in rows]
        self.klines[symbol] = bars
        self.cursor[symbol] = 0
        if bars and not self.now_ms:
            self.now_ms = bars[0].open_ms

    def price(self, symbol: str) -> Decimal:
        """The market price: the close of the last bar processed (the first bar's open before)."""
        i = self.cursor.get(symbol, 0)
        bars = self.klines.get(symbol) or []
        if not bars:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return bars[i - 1].close if i > 0 else bars[0].open

    def last_bar_ms(self) -> int:
        """Open time of the last recorded bar of any symbol."""
        return max((bars[-1].open_ms for bars in self.klines.values() if bars), default=0)

    async def advance(self, bars: int = 1) -> None:
        """Process the next ``bars`` minutes of every symbol: triggers, fills, events."""
        for _ in range(bars):
            for symbol in sorted(self.klines):
                i = self.cursor[symbol]
                if i >= len(self.klines[symbol]):
                    continue
                bar = self.klines[symbol][i]
                self.cursor[symbol] = i + 1
                self.now_ms = max(self.now_ms, bar.open_ms + 60_000)
                await self._on_bar(symbol, bar)

    async def _on_bar(self, symbol: str, bar: Kline) -> None:
        for algo in [a for a in self.algos.values() if a.symbol == symbol and a.status == "NEW"]:
            level = self._triggered(algo, bar)
            if level is not None:
                await self._trigger(algo, level)
            elif algo.type == "TRAILING_STOP_MARKET":
                favourable = bar.high if algo.side == "SELL" else bar.low
                better = favourable > algo.best if algo.side == "SELL" else favourable < algo.best
                if better:
                    algo.best = favourable
        for o in [o for o in self.orders.values() if o.symbol == symbol and o.status == "NEW"]:
            if o.type == "LIMIT" and self._limit_crossed(o, bar):
                px = o.price if not self._gapped(o, bar) else bar.open
                await self._fill(o, px, maker=True)

    @staticmethod
    def _limit_crossed(o: _Order, bar: Kline) -> bool:
        return bar.low <= o.price if o.side == "BUY" else bar.high >= o.price

    @staticmethod
    def _gapped(o: _Order, bar: Kline) -> bool:
        return bar.open < o.price if o.side == "BUY" else bar.open > o.price

    @staticmethod
    def _triggered(a: _Algo, bar: Kline) -> Decimal | None:
        """The fill level when ``bar`` triggers ``a`` (a stop's adverse extreme reached)."""
        if a.type == "TRAILING_STOP_MARKET":
            k = a.callback_pct / 100
            level = a.best * (1 - k) if a.side == "SELL" else a.best * (1 + k)
        else:
            level = a.trigger
        if a.side == "SELL" and bar.low <= level:
            return min(level, bar.open)
        if a.side == "BUY" and bar.high >= level:
            return max(level, bar.open)
        return None

    async def _trigger(self, a: _Algo, level: Decimal) -> None:
        pos = self.positions.get(a.symbol, _Position())
        qty = abs(pos.amount) if a.close_position else min(a.qty, abs(pos.amount))
        a.status = "TRIGGERED"
        cid = a.client_id if self.algo_child_same_client_id else f"autoalgo_{a.algo_id}"
        o = self._new_order(cid, a.symbol, a.side, "MARKET", qty, Decimal(0), True, "GTC")
        o.parent_algo = a.algo_id
        a.actual_order_id = o.order_id
        await self._algo_event(a)
        if qty > 0:
            await self._order_event(o, "NEW")
            await self._fill(o, level, maker=False, original_type=a.type)
        else:
            o.status = "EXPIRED"
            await self._order_event(o, "EXPIRED")
        a.status = "FINISHED"
        await self._algo_event(a)

    # ------------------------------------------------------------------ account changes
    def _new_order(
        self,
        cid: str,
        symbol: str,
        side: str,
        type_: str,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        tif: str,
    ) -> _Order:
        o = _Order(
            next(self._ids), cid, symbol, side, type_, qty, price, reduce_only, tif, self.now_ms
        )
        self.orders[o.order_id] = o
        return o

    async def _fill(
        self, o: _Order, price: Decimal, maker: bool, original_type: str | None = None
    ) -> None:
        pos = self.positions.setdefault(o.symbol, _Position())
        qty = o.qty - o.filled
        if o.reduce_only:
            qty = min(qty, abs(pos.amount)) if self._reduces(pos, o.side) else Decimal(0)
        if qty <= 0:
            o.status = "EXPIRED"
            await self._order_event(o, "EXPIRED", original_type=original_type)
            return
        signed = qty if o.side == "BUY" else -qty
        realized = self._apply(pos, signed, price)
        fee = (price * qty * (MAKER_FEE if maker else TAKER_FEE)).quantize(Decimal("0.00000001"))
        if self.fee_asset == "USDT":
            self.balance += realized - fee
        else:
            fee = (fee * BNB_FEE_DISCOUNT / self.price(f"{self.fee_asset}USDT")).quantize(
                Decimal("0.00000001")
            )
            self.fee_asset_spent += fee
            self.balance += realized
        o.filled += qty
        o.cum_quote += price * qty
        o.status = "FILLED" if o.filled >= o.qty else "PARTIALLY_FILLED"
        if o.reduce_only and o.filled < o.qty:
            o.status = "FILLED"  # a reduce-only order larger than the position fills what is there
        trade = {
            "symbol": o.symbol,
            "id": next(self._ids),
            "orderId": o.order_id,
            "side": o.side,
            "price": str(price),
            "qty": str(qty),
            "realizedPnl": str(realized),
            "quoteQty": str(price * qty),
            "commission": str(fee),
            "commissionAsset": self.fee_asset,
            "time": self.now_ms,
            "positionSide": "BOTH",
            "buyer": o.side == "BUY",
            "maker": maker,
        }
        self.trades.append(trade)
        await self._order_event(o, "TRADE", trade=trade, original_type=original_type)
        await self._account_event(o.symbol)
        if pos.amount == 0:
            await self._expire_close_position_algos(o.symbol)

    @staticmethod
    def _reduces(pos: _Position, side: str) -> bool:
        return (pos.amount > 0 and side == "SELL") or (pos.amount < 0 and side == "BUY")

    @staticmethod
    def _apply(pos: _Position, signed: Decimal, price: Decimal) -> Decimal:
        """Book a fill into the position; the realized PnL."""
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            total = pos.amount + signed
            pos.entry = (pos.entry * abs(pos.amount) + price * abs(signed)) / abs(total)
            pos.amount = total
            return Decimal(0)
        closed = min(abs(signed), abs(pos.amount))
        direction = 1 if pos.amount > 0 else -1
        realized = (price - pos.entry) * closed * direction
        pos.amount += signed
        if pos.amount == 0:
            pos.entry = Decimal(0)
        elif (pos.amount > 0) != (direction > 0):
            pos.entry = price  # flipped
        return realized

    async def _expire_close_position_algos(self, symbol: str) -> None:
        for a in self.algos.values():
            if a.symbol == symbol and a.status == "NEW" and a.close_position:
                a.status = "EXPIRED"
                await self._algo_event(a)

    def open_position(self, symbol: str, amount: float, entry: float | None = None) -> None:
        """A position opened behind the system's back (another client, a manual trade)."""
        pos = self.positions.setdefault(symbol, _Position())
        pos.amount = Decimal(str(amount))
        pos.entry = Decimal(str(entry)) if entry is not None else self.price(symbol)

    # ------------------------------------------------------------------ user-data stream
    async def _push(self, message: Mapping[str, Any]) -> None:
        text = json.dumps(message)
        for sockets in self._listen_keys.values():
            for ws in list(sockets):
                if ws.closed:
                    sockets.remove(ws)
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)

    async def _order_event(
        self,
        o: _Order,
        exec_type: str,
        trade: Mapping[str, Any] | None = None,
        original_type: str | None = None,
    ) -> None:
        avg = o.cum_quote / o.filled if o.filled else Decimal(0)
        body = {
            "s": o.symbol,
            "c": o.client_id,
            "S": o.side,
            "o": o.type,
            "f": o.tif,
            "q": str(o.qty),
            "p": str(o.price),
            "ap": str(avg),
            "sp": "0",
            "x": exec_type,
            "X": o.status,
            "i": o.order_id,
            "l": trade["qty"] if trade else "0",
            "z": str(o.filled),
            "L": trade["price"] if trade else "0",
            "N": trade["commissionAsset"] if trade else "USDT",
            "n": trade["commission"] if trade else "0",
            "T": self.now_ms,
            "t": trade["id"] if trade else 0,
            "b": "0",
            "a": "0",
            "m": bool(trade and trade["maker"]),
            "R": o.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": original_type or o.type,
            "ps": "BOTH",
            "cp": False,
            "rp": trade["realizedPnl"] if trade else "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_TAKER",
            "pm": "NONE",
            "gtd": 0,
        }
        await self._push({"e": "ORDER_TRADE_UPDATE", "E": self.now_ms, "T": self.now_ms, "o": body})

    async def _algo_event(self, a: _Algo) -> None:
        body = {
            "caid": a.client_id,
            "aid": a.algo_id,
            "at": "CONDITIONAL",
            "o": a.type,
            "s": a.symbol,
            "S": a.side,
            "ps": "BOTH",
            "f": "GTC",
            "q": str(a.qty),
            "X": a.status,
            "ai": str(a.actual_order_id or ""),
            "tp": str(a.trigger),
            "p": "0",
            "wt": "CONTRACT_PRICE",
            "R": a.reduce_only,
            "cp": a.close_position,
        }
        await self._push({"e": "ALGO_UPDATE", "T": self.now_ms, "E": self.now_ms, "o": body})

    async def _account_event(self, symbol: str) -> None:
        pos = self.positions[symbol]
        await self._push(
            {
                "e": "ACCOUNT_UPDATE",
                "E": self.now_ms,
                "T": self.now_ms,
                "a": {
                    "m": "ORDER",
                    "B": [
                        {"a": "USDT", "wb": str(self.balance), "cw": str(self.balance), "bc": "0"}
                    ],
                    "P": [
                        {
                            "s": symbol,
                            "pa": str(pos.amount),
                            "ep": str(pos.entry),
                            "cr": "0",
                            "up": "0",
                            "mt": pos.margin_type.lower(),
                            "iw": "0",
                            "ps": "BOTH",
                        }
                    ],
                },
            }
        )

    async def drop_user_streams(self) -> None:
        """Close every user-data websocket (the keys stay valid)."""
        for sockets in self._listen_keys.values():
            for ws in list(sockets):
                await ws.close()

    async def expire_listen_keys(self) -> None:
        """Every listenKey expires: ``listenKeyExpired`` is sent, keepalives answer -1125."""
        await self._push({"e": "listenKeyExpired", "E": self.now_ms, "listenKey": "*"})
        keys = list(self._listen_keys)
        await self.drop_user_streams()
        for key in keys:
            self._listen_keys.pop(key, None)

    # ------------------------------------------------------------------ HTTP server
    def app(self) -> web.Application:
        """The aiohttp application (REST under ``/fapi``, websocket at ``/ws/<listenKey>``)."""
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/ping", self._ping)
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        r.add_get("/fapi/v1/ticker/price", self._ticker_price)
        r.add_get("/fapi/v2/ticker/price", self._ticker_price)
        r.add_get("/fapi/v3/balance", self._balance)
        r.add_post("/fapi/v1/marginType", self._margin_type)
        r.add_post("/fapi/v1/leverage", self._leverage)
        r.add_post("/fapi/v1/order", self._new_order_http)
        r.add_get("/fapi/v1/order", self._query_order)
        r.add_delete("/fapi/v1/order", self._cancel_order)
        r.add_get("/fapi/v1/openOrders", self._open_orders)
        r.add_post("/fapi/v1/algoOrder", self._new_algo)
        r.add_get("/fapi/v1/algoOrder", self._query_algo)
        r.add_delete("/fapi/v1/algoOrder", self._cancel_algo)
        r.add_get("/fapi/v1/openAlgoOrders", self._open_algos)
        r.add_get("/fapi/v1/allAlgoOrders", self._all_algos)
        r.add_get("/fapi/v3/positionRisk", self._position_risk)
        r.add_get("/fapi/v1/userTrades", self._user_trades)
        r.add_post("/fapi/v1/listenKey", self._listen_key_new)
        r.add_put("/fapi/v1/listenKey", self._listen_key_keepalive)
        r.add_delete("/fapi/v1/listenKey", self._listen_key_close)
        r.add_get("/ws/{key}", self._websocket)
        return app

    @staticmethod
    def _ok(body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    def _headers(self) -> dict[str, str]:
        now = time.monotonic()
        self._weight = [(t, w) for t, w in self._weight if now - t < 60]
        used = sum(w for _, w in self._weight)
        return {
            "X-MBX-USED-WEIGHT-1M": str(used),
            "X-MBX-ORDER-COUNT-10S": "0",
            "X-MBX-ORDER-COUNT-1M": str(self.sent_orders),
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/ws/"):
            return await handler(request)
        self._weight.append((time.monotonic(), 1))
        try:
            params = await self._params(request)
            request[_PARAMS] = params
            self.requests.append((request.method, request.path, params))
            if self.throttle_next and request.path.endswith(("order", "Order")):
                self.throttle_next -= 1
                resp = self._ok(
                    {
                        "code": -1003,
                        "msg": "Too many requests; current limit is 2400 requests per minute.",
                    },
                    429,
                )
                resp.headers["Retry-After"] = "1"
                return resp
            if self.slow_responses:
                self.slow_responses -= 1
                await asyncio.sleep(self.slow_s)
            response = await handler(request)
        except BinanceError as e:
            response = self._ok({"code": e.code, "msg": e.msg}, e.status)
        response.headers.update(self._headers())
        return response

    async def _params(self, request: web.Request) -> dict[str, str]:
        """The request's parameters, after checking key, signature and timestamp."""
        raw = request.query_string
        body = await request.text() if request.method in ("POST", "PUT", "DELETE") else ""
        if body:
            raw = f"{raw}&{body}" if raw else body
        pairs = parse_qsl(raw, keep_blank_values=True)
        params = dict(pairs)
        if request.path in _PUBLIC:
            return params
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if request.path == "/fapi/v1/listenKey":
            return params
        if "signature" not in params:
            raise BinanceError(
                400,
                -1102,
                "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
            )
        signed_part = (
            raw.rsplit("&signature=", 1)[0] if "&signature=" in raw else raw.split("signature=")[0]
        )
        expected = hmac.new(
            self.api_secret.encode(), signed_part.encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, params["signature"]):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        ts = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        server = int(time.time() * 1000) + self.clock_skew_ms
        if ts > server + 1000 or server - ts > window:
            raise BinanceError(
                400, -1021, "Timestamp for this request is outside of the recvWindow."
            )
        return params

    async def _ping(self, request: web.Request) -> web.Response:
        return self._ok({})

    async def _time(self, request: web.Request) -> web.Response:
        return self._ok({"serverTime": int(time.time() * 1000) + self.clock_skew_ms})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for s, (tick, step, notional) in SYMBOL_FILTERS.items():
            symbols.append(
                {
                    "symbol": s,
                    "pair": s,
                    "contractType": "PERPETUAL",
                    "status": "TRADING",
                    "baseAsset": s[:-4],
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": tick,
                            "maxPrice": "4529764",
                            "tickSize": tick,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": step,
                            "maxQty": "1000000",
                            "stepSize": step,
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": step,
                            "maxQty": "120000",
                            "stepSize": step,
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": notional},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                }
            )
        return self._ok(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 2400,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 1200,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 300,
                    },
                ],
                "symbols": symbols,
            }
        )

    async def _ticker_price(self, request: web.Request) -> web.Response:
        symbol = request[_PARAMS].get("symbol", "")
        return self._ok({"symbol": symbol, "price": str(self.price(symbol)), "time": self.now_ms})

    async def _balance(self, request: web.Request) -> web.Response:
        b = str(self.balance)
        return self._ok(
            [
                {
                    "accountAlias": "SgsR",
                    "asset": "USDT",
                    "balance": b,
                    "crossWalletBalance": b,
                    "crossUnPnl": "0",
                    "availableBalance": b,
                    "maxWithdrawAmount": b,
                    "marginAvailable": True,
                    "updateTime": self.now_ms,
                }
            ]
        )

    async def _margin_type(self, request: web.Request) -> web.Response:
        p = request[_PARAMS]
        pos = self.positions.setdefault(p["symbol"], _Position())
        if pos.margin_type == p["marginType"]:
            raise BinanceError(400, -4046, "No need to change margin type.")
        if pos.amount != 0:
            raise BinanceError(
                400, -4048, "Margin type cannot be changed if there exists position."
            )
        pos.margin_type = p["marginType"]
        return self._ok({"code": 200, "msg": "success"})

    async def _leverage(self, request: web.Request) -> web.Response:
        p = request[_PARAMS]
        lev = int(p["leverage"])
        if not 1 <= lev <= 125:
            raise BinanceError(400, -4028, f"Leverage {lev} is not valid")
        self.positions.setdefault(p["symbol"], _Position()).leverage = lev
        return self._ok({"leverage": lev, "maxNotionalValue": "1000000", "symbol": p["symbol"]})

    # ------------------------------------------------------------------ orders
    def _check_common(self, p: Mapping[str, str], conditional: bool) -> tuple[str, Decimal]:
        symbol = p["symbol"]
        if symbol not in SYMBOL_FILTERS or symbol not in self.klines:
            raise BinanceError(400, -1121, "Invalid symbol.")
        tick, step, _ = SYMBOL_FILTERS[symbol]
        qty = Decimal(p.get("quantity", "0"))
        for _name, value, grid in (
            ("quantity", qty, step),
            ("price", Decimal(p.get("price", "0")), tick),
            ("triggerPrice", Decimal(p.get("triggerPrice", "0")), tick),
        ):
            if value and value % Decimal(grid):
                raise BinanceError(
                    400, -1111, "Precision is over the maximum defined for this asset."
                )
        faults = self.fail_next_algo if conditional and self.fail_next_algo else self.fail_next
        if faults:
            code = faults.pop(0)
            raise BinanceError(400, code, _MESSAGES.get(code, "Order rejected."))
        cid = p.get("clientAlgoId" if conditional else "newClientOrderId", "")
        if cid and self._open_client_id(symbol, cid):
            raise BinanceError(400, -4116, "ClientOrderId is duplicated.")
        return symbol, qty

    def _open_client_id(self, symbol: str, cid: str) -> bool:
        live = ("NEW", "PARTIALLY_FILLED")
        return any(o.client_id == cid and o.status in live for o in self.orders.values()) or any(
            a.client_id == cid and a.status == "NEW" for a in self.algos.values()
        )

    async def _lose_response(self, request: web.Request) -> None:
        if self.lose_responses:
            self.lose_responses -= 1
            if request.transport is not None:
                request.transport.close()  # accepted, and the answer never arrives
            raise asyncio.CancelledError

    async def _new_order_http(self, request: web.Request) -> web.Response:
        p = request[_PARAMS]
        symbol, qty = self._check_common(p, conditional=False)
        type_, side = p["type"], p["side"]
        if type_ in _CONDITIONAL:
            raise BinanceError(
                400,
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",  # noqa: E501
            )
        market = self.price(symbol)
        price = Decimal(p.get("price", "0"))
        reduce_only = p.get("reduceOnly") == "true"
        value = (price or market) * qty
        _, _, notional = SYMBOL_FILTERS[symbol]
        if not reduce_only and value < Decimal(notional):
            raise BinanceError(
                400,
                -4164,
                f"Order's notional must be no smaller than {notional} (unless you choose reduce only).",  # noqa: E501
            )
        pos = self.positions.setdefault(symbol, _Position())
        if not reduce_only and value / pos.leverage > self.balance:
            raise BinanceError(400, -2019, "Margin is insufficient.")
        o = self._new_order(
            p.get("newClientOrderId", f"fake{next(self._ids)}"),
            symbol,
            side,
            type_,
            qty,
            price,
            reduce_only,
            p.get("timeInForce", "GTC"),
        )
        self.sent_orders += 1
        if self.on_accept is not None:
            self.on_accept(o.client_id)
        await self._order_event(o, "NEW")
        if type_ == "MARKET":
            await self._fill(o, market, maker=False)
        elif (side == "BUY" and price >= market) or (side == "SELL" and price <= market):
            await self._fill(o, market, maker=False)  # marketable limit: takes at the market
        await self._lose_response(request)
        return self._ok(self._order_body(o))

    def _order_body(self, o: _Order) -> dict[str, Any]:
        avg = o.cum_quote / o.filled if o.filled else Decimal(0)
        return {
            "orderId": o.order_id,
            "symbol": o.symbol,
            "status": o.status,
            "clientOrderId": o.client_id,
            "price": str(o.price),
            "avgPrice": str(avg),
            "origQty": str(o.qty),
            "executedQty": str(o.filled),
            "cumQty": str(o.filled),
            "cumQuote": str(o.cum_quote),
            "timeInForce": o.tif,
            "type": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": False,
            "side": o.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": o.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_TAKER",
            "goodTillDate": 0,
            "time": o.time_ms,
            "updateTime": self.now_ms,
        }

    def _find_order(self, p: dict[str, str]) -> _Order:
        for o in self.orders.values():
            if o.symbol == p.get("symbol") and (
                ("orderId" in p and str(o.order_id) == p["orderId"])
                or ("origClientOrderId" in p and o.client_id == p["origClientOrderId"])
            ):
                return o
        raise BinanceError(400, -2013, "Order does not exist.")

    async def _query_order(self, request: web.Request) -> web.Response:
        return self._ok(self._order_body(self._find_order(request[_PARAMS])))

    async def _cancel_order(self, request: web.Request) -> web.Response:
        try:
            o = self._find_order(request[_PARAMS])
        except BinanceError:
            raise BinanceError(400, -2011, "Unknown order sent.") from None
        if o.status not in ("NEW", "PARTIALLY_FILLED"):
            raise BinanceError(400, -2011, "Unknown order sent.")
        o.status = "CANCELED"
        await self._order_event(o, "CANCELED")
        return self._ok(self._order_body(o))

    async def _open_orders(self, request: web.Request) -> web.Response:
        sym = request[_PARAMS].get("symbol")
        return self._ok(
            [
                self._order_body(o)
                for o in self.orders.values()
                if o.status in ("NEW", "PARTIALLY_FILLED") and sym in (None, o.symbol)
            ]
        )

    # ------------------------------------------------------------------ algo orders
    async def _new_algo(self, request: web.Request) -> web.Response:
        p = request[_PARAMS]
        if p.get("algoType") != "CONDITIONAL":
            raise BinanceError(
                400,
                -1102,
                "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.",
            )
        symbol, qty = self._check_common(p, conditional=True)
        type_, side = p["type"], p["side"]
        market = self.price(symbol)
        trigger = Decimal(p.get("triggerPrice", "0"))
        close = p.get("closePosition") == "true"
        if type_ == "STOP_MARKET" and (
            (side == "SELL" and trigger >= market) or (side == "BUY" and trigger <= market)
        ):
            raise BinanceError(400, -2021, "Order would immediately trigger.")
        cb = Decimal(p.get("callbackRate", "0"))
        if type_ == "TRAILING_STOP_MARKET" and not Decimal("0.1") <= cb <= 10:
            raise BinanceError(400, -2007, "Invalid callBack rate.")
        if not close and qty <= 0:
            raise BinanceError(400, -4003, "Quantity less than or equal to zero.")
        a = _Algo(
            next(self._ids),
            p.get("clientAlgoId", f"fakealgo{next(self._ids)}"),
            symbol,
            side,
            type_,
            qty,
            trigger,
            cb,
            close,
            p.get("reduceOnly") == "true",
            self.now_ms,
            best=market,
        )
        self.algos[a.algo_id] = a
        self.sent_orders += 1
        await self._algo_event(a)
        await self._lose_response(request)
        return self._ok(self._algo_body(a))

    def _algo_body(self, a: _Algo) -> dict[str, Any]:
        child = self.orders.get(a.actual_order_id)
        return {
            "algoId": a.algo_id,
            "clientAlgoId": a.client_id,
            "algoType": "CONDITIONAL",
            "orderType": a.type,
            "symbol": a.symbol,
            "side": a.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": str(a.qty),
            "algoStatus": a.status,
            "triggerPrice": str(a.trigger),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": a.close_position,
            "priceProtect": False,
            "reduceOnly": a.reduce_only,
            "activatePrice": "",
            "callbackRate": str(a.callback_pct),
            "createTime": a.time_ms,
            "updateTime": self.now_ms,
            "triggerTime": 0,
            "goodTillDate": 0,
            "actualOrderId": str(a.actual_order_id or ""),
            "executedQty": str(child.filled if child else 0),
            "avgPrice": str(child.cum_quote / child.filled if child and child.filled else 0),
        }

    def _find_algo(self, p: dict[str, str]) -> _Algo:
        for a in self.algos.values():
            if ("algoId" in p and str(a.algo_id) == p["algoId"]) or (
                "clientAlgoId" in p and a.client_id == p["clientAlgoId"]
            ):
                return a
        raise BinanceError(400, -2013, "Order does not exist.")

    async def _query_algo(self, request: web.Request) -> web.Response:
        return self._ok(self._algo_body(self._find_algo(request[_PARAMS])))

    async def _cancel_algo(self, request: web.Request) -> web.Response:
        try:
            a = self._find_algo(request[_PARAMS])
        except BinanceError:
            raise BinanceError(400, -2011, "Unknown order sent.") from None
        if a.status != "NEW":
            raise BinanceError(400, -2011, "Unknown order sent.")
        a.status = "CANCELED"
        await self._algo_event(a)
        return self._ok(
            {"algoId": a.algo_id, "clientAlgoId": a.client_id, "code": "200", "msg": "success"}
        )

    async def _open_algos(self, request: web.Request) -> web.Response:
        sym = request[_PARAMS].get("symbol")
        return self._ok(
            [
                self._algo_body(a)
                for a in self.algos.values()
                if a.status == "NEW" and sym in (None, a.symbol)
            ]
        )

    async def _all_algos(self, request: web.Request) -> web.Response:
        sym = request[_PARAMS].get("symbol")
        return self._ok(
            [self._algo_body(a) for a in self.algos.values() if sym in (None, a.symbol)]
        )

    # ------------------------------------------------------------------ account
    async def _position_risk(self, request: web.Request) -> web.Response:
        rows = []
        for s, pos in sorted(self.positions.items()):
            mark = self.price(s) if s in self.klines else pos.entry
            rows.append(
                {
                    "symbol": s,
                    "positionSide": "BOTH",
                    "positionAmt": str(pos.amount),
                    "entryPrice": str(pos.entry),
                    "breakEvenPrice": str(pos.entry),
                    "markPrice": str(mark),
                    "unRealizedProfit": str((mark - pos.entry) * pos.amount),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": str(mark * pos.amount),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": "0",
                    "maintMargin": "0",
                    "positionInitialMargin": "0",
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": self.now_ms,
                }
            )
        return self._ok(rows)

    async def _user_trades(self, request: web.Request) -> web.Response:
        p = request[_PARAMS]
        start = int(p.get("startTime", "0"))
        return self._ok(
            [t for t in self.trades if t["symbol"] == p["symbol"] and t["time"] >= start]
        )

    # ------------------------------------------------------------------ listen keys
    async def _listen_key_new(self, request: web.Request) -> web.Response:
        key = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()
        self._listen_keys[key] = []
        return self._ok({"listenKey": key})

    async def _listen_key_keepalive(self, request: web.Request) -> web.Response:
        key = request[_PARAMS].get("listenKey", "")
        if key not in self._listen_keys:
            raise BinanceError(400, -1125, "This listenKey does not exist.")
        return self._ok({"listenKey": key})

    async def _listen_key_close(self, request: web.Request) -> web.Response:
        self._listen_keys.pop(request[_PARAMS].get("listenKey", ""), None)
        return self._ok({})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if key not in self._listen_keys:
            raise web.HTTPBadRequest(
                text='{"code": -1125, "msg": "This listenKey does not exist."}'
            )
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        self._listen_keys[key].append(ws)
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        return ws


_MESSAGES = {
    -2019: "Margin is insufficient.",
    -2021: "Order would immediately trigger.",
    -2022: "ReduceOnly Order is rejected.",
    -4164: "Order's notional must be no smaller than 5 (unless you choose reduce only).",
    -1111: "Precision is over the maximum defined for this asset.",
    -1007: "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",  # noqa: E501
    -1008: "Server is currently overloaded with other requests. Please try again in a few minutes.",
    -2015: "Invalid API-key, IP, or permissions for action.",
    -2008: "Invalid Api-Key ID.",
}


@contextlib.asynccontextmanager
async def serve(exchange: FakeExchange, host: str = "127.0.0.1", port: int = 0) -> Any:
    """Run ``exchange`` on ``host:port`` (0: a free port); yields ``(rest_url, ws_url)``."""
    runner = web.AppRunner(exchange.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound}/fapi", f"ws://{host}:{bound}/ws"
    finally:
        await runner.cleanup()
