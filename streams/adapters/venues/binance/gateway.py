"""The venue's I/O: python-binance's ``AsyncClient`` against configurable endpoints.

The gateway executes the venue's commands (:mod:`.messages`) and turns everything the exchange
says into exchange events; it holds no trading state of its own beyond caches it can rebuild
(filters, leverage already set, order id -> client id). What it promises:

- **Idempotent placement.** Before an order is sent, its client id (derived from our order id)
  is looked up on the exchange (``GET /fapi/v1/order`` or ``/fapi/v1/algoOrder``); an existing
  order is reported as it is, never sent twice. A timeout, a 5xx or -1007 (outcome unknown) is
  followed by the same lookup before any re-send; -4116 (duplicate id) reports the existing one.
- **Filters before requests.** Quantities and prices are rounded to ``exchangeInfo``; an order
  that cannot pass becomes an :class:`~.messages.OrderRejected` with the reason, as does every
  permanent Binance error (-2019, -4164, -1111, -2021, ...) with its code and message.
- **Limits.** A client-side limiter below Binance's caps, updated from ``X-MBX-*`` headers;
  ``429``/-1003 pause for ``Retry-After``; ``418`` stops every request (:class:`VenueBanned`);
  -1021 resynchronises the clock offset and retries; ``recvWindow`` is a setting.
- **The user-data stream** (:meth:`BinanceGateway.user_stream`): listenKey created, kept alive
  every ``listen_key_keepalive_s``, recreated on ``listenKeyExpired`` or -1125; every
  (re)connect calls back so the caller reconciles and replays the trades it may have missed
  (:meth:`BinanceGateway.missed_trades`). The socket is read by its own task into an unbounded
  queue, so a slow consumer of the events never stops the reading (nor the ping/pong). A
  silent stream is a lost one: no frame and no pong for ``user_stream_silent_s``, or trades
  that two trades replays in a row found and the stream never delivered, end the connection
  (:class:`UserStreamSilent`) and the caller reconnects and reconciles.
- **Secrets.** Key and secret come in as ``SecretStr`` and go only to the client; nothing here
  logs a request's parameters, headers or URL query.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import websockets
from binance import AsyncClient
from binance.exceptions import BinanceAPIException, BinanceRequestException
from pydantic import SecretStr

from streams.adapters.venues.binance.errors import (
    ErrorAction,
    VenueBanned,
    VenueConfigError,
    VenueError,
    action_for,
    describe,
)
from streams.adapters.venues.binance.filters import (
    FilterRejection,
    SymbolFilters,
    filters_by_symbol,
    round_order,
)
from streams.adapters.venues.binance.limiter import Caps, RateLimiter, retry_after_s
from streams.adapters.venues.binance.messages import (
    QUOTE_ASSET,
    TRADE_REPLAY,
    AlgoUpdate,
    CancelOrder,
    Command,
    ExchangeEvent,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    SymbolSnapshot,
    algo_update_from_rest,
    order_update_from_rest,
    parse_user_event,
)
from streams.config import BinanceConfig

log = logging.getLogger(__name__)

_NOT_FOUND = (-2013, -2011)  # order does not exist / unknown order sent
_TRANSPORT_ERRORS = (asyncio.TimeoutError, aiohttp.ClientError, BinanceRequestException)
_FATAL_HINT = {
    -2008: "the API key does not exist in this environment: testnet and demo keys differ from "
    "mainnet keys and from each other; check QT_BINANCE__REST_URL against the key's site",
    -2014: "QT_BINANCE_API_KEY is not a well-formed Binance key",
    -2015: "key rejected: wrong environment, IP not whitelisted, or futures permission missing",
    -1022: "the signature does not verify: QT_BINANCE_API_SECRET does not belong to the key",
}

_Event = TypeVar("_Event", bound=ExchangeEvent)
OnEvents = Callable[[list[ExchangeEvent]], Awaitable[None]]
#: Binance's page size cap for ``userTrades``; a full page is continued by the next replay.
_TRADES_PAGE = 1000
#: How long a fee asset's USDT price is reused (one request per asset a minute at most).
_FEE_PRICE_TTL_S = 60.0


class UserStreamSilent(ConnectionError):
    """The user-data stream is connected but delivers nothing: treated as lost."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class BinanceGateway:
    """One account's REST and user-stream connection (see the module doc)."""

    def __init__(
        self,
        cfg: BinanceConfig,
        api_key: SecretStr,
        api_secret: SecretStr,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self._key, self._secret = api_key, api_secret
        self._sleep = sleep
        self._clock = clock
        self.limiter = RateLimiter(
            Caps(cfg.max_orders_10s, cfg.max_orders_1m, cfg.max_weight_1m), clock
        )
        self.client: AsyncClient | None = None
        self.filters: dict[str, SymbolFilters] = {}
        self._leverage: dict[str, int] = {}
        self._client_of_order: dict[tuple[str, int], str] = {}
        self._banned_until_ms = 0
        self.listen_key: str | None = None
        self.requests_sent = 0
        self.silences = 0  # connections ended because the stream had gone silent
        self._replayed_to: dict[str, int] = {}  # symbol -> newest trade time replayed
        self._heard: dict[str, set[int]] = {}  # symbol -> trade ids the stream delivered
        self._unheard: dict[str, set[int]] = {}  # replayed at the last round, not heard
        self._inbox: asyncio.Queue[str | BaseException | None] | None = None
        #: asset -> (read at, USDT price; None: the read failed and nothing was read before)
        self._fee_prices: dict[str, tuple[float, float | None]] = {}

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect, sync the clock, check that key and environment match, load the filters."""
        client = AsyncClient(
            self._key.get_secret_value(),
            self._secret.get_secret_value(),
            requests_params={"timeout": aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)},
        )
        client.FUTURES_URL = self.cfg.rest_url.rstrip("/")  # the setting, not the library's
        client.REQUEST_RECVWINDOW = self.cfg.recv_window_ms
        self.client = client
        try:
            await self.sync_time()
            await self._call("balance", 5, False, client.futures_account_balance)
            info = await self._call("exchangeInfo", 1, False, client.futures_exchange_info)
        except BinanceAPIException as e:
            await self.close()
            raise self._fatal(e) from None
        except _TRANSPORT_ERRORS as e:
            await self.close()
            raise VenueConfigError(
                f"cannot reach {self.cfg.rest_url} ({type(e).__name__}); check "
                "QT_BINANCE__REST_URL and the network"
            ) from None
        self.filters = filters_by_symbol(info)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self.client is not None:
            await self.client.session.close()
            self.client = None

    def _fatal(self, e: BinanceAPIException) -> VenueError:
        hint = _FATAL_HINT.get(int(e.code or 0), "")
        text = describe(int(e.code or 0), str(e.message))
        return VenueConfigError(f"{self.cfg.rest_url}: {text}" + (f" ({hint})" if hint else ""))

    async def sync_time(self) -> None:
        """Offset between our clock and the exchange's (python-binance stamps requests with it)."""
        assert self.client is not None
        res = await self.client.futures_time()
        self.client.timestamp_offset = int(res["serverTime"]) - _now_ms()

    # ---------------------------------------------------------------- requests
    async def _call(
        self, what: str, weight: int, order: bool, fn: Callable[..., Awaitable[Any]], **params: Any
    ) -> Any:
        """One request under the limiter; 429/-1003 pause and retry, -1021 resyncs and retries,
        418 stops; other errors go to the caller. A timeout or a lost connection is retried
        here for every request but an order placement (``order``: the caller looks it up)."""
        for attempt in range(self.cfg.max_retries + 1):
            if _now_ms() < self._banned_until_ms:
                raise VenueBanned(self._banned_until_ms, "IP banned by Binance (418): stopped")
            await self._sleep(self.limiter.delay(weight, order))
            self.limiter.sent(weight, order)
            self.requests_sent += 1
            try:
                result = await fn(**params)
                self._observe()
                return result
            except BinanceAPIException as e:
                self._observe(e.response)
                if not await self._recover(e, attempt):
                    raise
            except _TRANSPORT_ERRORS:
                if order or attempt >= self.cfg.max_retries:
                    raise
                await self._sleep(min(5.0, 0.2 * 2**attempt))
        raise VenueError(f"{what}: still rate-limited after {self.cfg.max_retries} retries")

    async def _recover(self, e: BinanceAPIException, attempt: int) -> bool:
        """True when the request should go again (after the pause this sets)."""
        headers = dict(getattr(e.response, "headers", {}) or {})
        if e.status_code == 418:
            wait = retry_after_s(headers, 120.0)
            self._banned_until_ms = _now_ms() + int(wait * 1000)
            raise VenueBanned(self._banned_until_ms, f"IP banned by Binance (418) for {wait:g} s")
        if attempt >= self.cfg.max_retries:
            return False
        if e.status_code == 429 or e.code in (-1003, -1015):
            self.limiter.pause(retry_after_s(headers, 2.0**attempt))
            return True
        if e.code == -1021:
            await self.sync_time()
            return True
        return False

    def _observe(self, response: object = None) -> None:
        response = response if response is not None else getattr(self.client, "response", None)
        headers = getattr(response, "headers", None)
        if headers:
            self.limiter.observe(dict(headers))

    # ---------------------------------------------------------------- commands
    async def execute(self, cmd: Command) -> list[ExchangeEvent]:
        """Carry out one command; the events it produced at once (acks, rejections)."""
        if isinstance(cmd, CancelOrder):
            return await self._cancel(cmd)
        return await self._place(cmd)

    async def execute_all(self, cmds: Iterable[Command]) -> list[ExchangeEvent]:
        """Commands in order (one symbol's orders depend on each other: never in parallel)."""
        out: list[ExchangeEvent] = []
        for cmd in cmds:
            out.extend(await self.execute(cmd))
        return out

    async def lookup(self, symbol: str, client_id: str, conditional: bool) -> ExchangeEvent | None:
        """The order with ``client_id`` as the exchange has it, or None."""
        assert self.client is not None
        try:
            if conditional:
                body = await self._call(
                    "algoOrder",
                    1,
                    False,
                    self.client.futures_get_order,
                    symbol=symbol,
                    clientAlgoId=client_id,
                )
                return algo_update_from_rest(body)
            body = await self._call(
                "order",
                1,
                False,
                self.client.futures_get_order,
                symbol=symbol,
                origClientOrderId=client_id,
            )
        except BinanceAPIException as e:
            if e.code in _NOT_FOUND or e.status_code == 404:
                return None
            raise
        self._client_of_order[(symbol, int(body["orderId"]))] = client_id
        return order_update_from_rest(body)

    def _reject(self, cmd: Command, code: int, reason: str) -> list[ExchangeEvent]:
        log.warning("venue: %s %s refused: %s", cmd.symbol, cmd.client_id, reason)
        return [OrderRejected(cmd.client_id, cmd.symbol, code, reason, _now_ms())]

    async def _place(self, cmd: PlaceOrder) -> list[ExchangeEvent]:
        prepared = await self._prepare(cmd)
        if isinstance(prepared, list):
            return prepared
        return await self._place_once(cmd, prepared)

    async def _prepare(self, cmd: PlaceOrder) -> dict[str, Any] | list[ExchangeEvent]:
        """The order's parameters, or the rejection why it cannot be sent."""
        f = self.filters.get(cmd.symbol)
        if f is None:
            return self._reject(cmd, 0, f"{cmd.symbol} is not a TRADING symbol in exchangeInfo")
        try:
            params = self._order_params(cmd, f)
        except FilterRejection as e:
            return self._reject(cmd, 0, e.reason)
        if cmd.leverage > 0:
            refused = await self._ensure_leverage(cmd)
            if refused:
                return refused
        return params

    async def _place_once(self, cmd: PlaceOrder, params: dict[str, Any]) -> list[ExchangeEvent]:
        """Look the client id up, send when absent; on an unknown outcome look up again."""
        for _ in range(self.cfg.max_retries + 1):
            try:
                existing = await self.lookup(cmd.symbol, cmd.client_id, cmd.conditional)
                if existing is not None:
                    return [existing]  # sent before (a retry, a redelivery, a restart)
                return [await self._send(cmd, params)]
            except BinanceAPIException as e:
                action = action_for(int(e.code or 0), e.status_code)
                if action is ErrorAction.FATAL:
                    raise self._fatal(e) from None
                if action in (ErrorAction.REJECT, ErrorAction.IGNORE):
                    return self._reject(
                        cmd, int(e.code or 0), describe(int(e.code or 0), e.message)
                    )
                log.warning("venue: %s %s: %s; looking it up", cmd.symbol, cmd.client_id, e.message)
            except _TRANSPORT_ERRORS as e:  # it may have been accepted: look it up, then resend
                log.warning(
                    "venue: %s %s: %s; looking it up", cmd.symbol, cmd.client_id, type(e).__name__
                )
            await self._sleep(0.2)
        return self._reject(cmd, -1007, f"no answer after {self.cfg.max_retries + 1} attempts")

    async def _send(self, cmd: PlaceOrder, params: dict[str, Any]) -> ExchangeEvent:
        assert self.client is not None
        body = await self._call("place", 1, True, self.client.futures_create_order, **params)
        if cmd.conditional:
            return algo_update_from_rest(body)
        self._client_of_order[(cmd.symbol, int(body["orderId"]))] = cmd.client_id
        return order_update_from_rest(body)

    def _order_params(self, cmd: PlaceOrder, f: SymbolFilters) -> dict[str, Any]:
        """python-binance's parameters; conditional types go to ``/fapi/v1/algoOrder`` through
        ``futures_create_order`` (it routes them and renames ``stopPrice`` -> ``triggerPrice``)."""
        r = round_order(
            f,
            quantity=cmd.quantity,
            price=cmd.price,
            trigger_price=cmd.trigger_price,
            market=cmd.order_type in ("MARKET", "STOP_MARKET", "TRAILING_STOP_MARKET"),
            reference_price=cmd.reference_price,
            reduce_only=cmd.reduce_only or cmd.close_position,
        )
        p: dict[str, Any] = {"symbol": cmd.symbol, "side": cmd.side, "type": cmd.order_type}
        p["clientAlgoId" if cmd.conditional else "newClientOrderId"] = cmd.client_id
        optional = {
            "quantity": r.quantity,
            "price": r.price,
            "stopPrice": r.trigger_price,
            "callbackRate": None if cmd.callback_rate_pct is None else f"{cmd.callback_rate_pct:g}",
            "timeInForce": cmd.time_in_force,
            "reduceOnly": "true" if cmd.reduce_only and not cmd.close_position else None,
            "closePosition": "true" if cmd.close_position else None,
            "workingType": self.cfg.working_type if cmd.conditional else None,
        }
        p.update({k: v for k, v in optional.items() if v is not None})
        return p

    async def _ensure_leverage(self, cmd: PlaceOrder) -> list[ExchangeEvent]:
        if self._leverage.get(cmd.symbol) == cmd.leverage:
            return []
        assert self.client is not None
        try:
            await self._call(
                "marginType",
                1,
                False,
                self.client.futures_change_margin_type,
                symbol=cmd.symbol,
                marginType=self.cfg.margin_type,
            )
        except BinanceAPIException as e:
            if action_for(int(e.code or 0), e.status_code) is not ErrorAction.IGNORE:
                return self._reject(
                    cmd, int(e.code or 0), "margin type: " + describe(int(e.code or 0), e.message)
                )
        try:
            await self._call(
                "leverage",
                1,
                False,
                self.client.futures_change_leverage,
                symbol=cmd.symbol,
                leverage=cmd.leverage,
            )
        except BinanceAPIException as e:
            return self._reject(
                cmd, int(e.code or 0), "leverage: " + describe(int(e.code or 0), e.message)
            )
        self._leverage[cmd.symbol] = cmd.leverage
        return []

    async def _cancel(self, cmd: CancelOrder) -> list[ExchangeEvent]:
        assert self.client is not None
        key = {"clientAlgoId" if cmd.conditional else "origClientOrderId": cmd.client_id}
        fn = self.client.futures_cancel_order
        for _ in range(self.cfg.max_retries + 1):
            try:
                body = await self._call("cancel", 1, False, fn, symbol=cmd.symbol, **key)
                if cmd.conditional:
                    return [
                        AlgoUpdate(
                            cmd.client_id,
                            int(body.get("algoId", 0) or 0),
                            cmd.symbol,
                            "CANCELED",
                            _now_ms(),
                        )
                    ]
                return [order_update_from_rest(body)]
            except BinanceAPIException as e:
                action = action_for(int(e.code or 0), e.status_code)
                if action is ErrorAction.FATAL:
                    raise self._fatal(e) from None
                if action in (ErrorAction.IGNORE, ErrorAction.REJECT):
                    return []  # gone already (filled, expired, cancelled): nothing to cancel
            except _TRANSPORT_ERRORS:
                pass  # cancelling twice is harmless: -2011 the second time
            await self._sleep(0.2)
        return self._reject(cmd, -1007, "cancel: no answer")

    # ---------------------------------------------------------------- reconciliation
    async def snapshot(self, symbols: Iterable[str]) -> list[SymbolSnapshot]:
        """Position, open orders and open algo orders of every symbol given or held."""
        assert self.client is not None
        c = self.client
        positions = await self._call("positionRisk", 5, False, c.futures_position_information)
        orders = await self._call("openOrders", 40, False, c.futures_get_open_orders)
        algos = await self._call("openAlgoOrders", 40, False, c.futures_get_open_algo_orders)
        if isinstance(algos, Mapping):  # some versions wrap the list
            algos = algos.get("orders", [])
        t = _now_ms()
        pos = {p["symbol"]: p for p in positions if p.get("positionSide", "BOTH") == "BOTH"}
        wanted = set(symbols) | {s for s, p in pos.items() if float(p["positionAmt"])}
        wanted |= {o["symbol"] for o in orders} | {a["symbol"] for a in algos}
        out = []
        for sym in sorted(wanted):
            p = pos.get(sym, {})
            out.append(
                SymbolSnapshot(
                    symbol=sym,
                    amount=float(p.get("positionAmt", 0) or 0),
                    entry_price=float(p.get("entryPrice", 0) or 0),
                    mark_price=float(p.get("markPrice", 0) or 0),
                    open_orders=tuple(o["clientOrderId"] for o in orders if o["symbol"] == sym),
                    open_algo_orders=tuple(a["clientAlgoId"] for a in algos if a["symbol"] == sym),
                    time_ms=t,
                )
            )
        return out

    async def trades_since(self, symbol: str, since_ms: int | None) -> list[OrderUpdate]:
        """The account's trades on ``symbol`` since ``since_ms`` (None: the exchange's recent
        ones, up to 7 days) as TRADE updates: what a dropped stream missed. The venue ignores
        the ones it booked already."""
        assert self.client is not None
        window = {} if since_ms is None else {"startTime": since_ms}
        trades_fn = self.client.futures_account_trades
        rows = await self._call(
            "userTrades", 5, False, trades_fn, symbol=symbol, limit=_TRADES_PAGE, **window
        )
        algos_fn = self.client.futures_get_all_algo_orders
        algos = await self._call("allAlgoOrders", 5, False, algos_fn, symbol=symbol, **window)
        # A triggered conditional order trades as a new matching-engine order: its client id
        # is the algo order's (the stream's ALGO_UPDATE says the same through "ai").
        child = {
            int(a["actualOrderId"]): str(a["clientAlgoId"]) for a in algos if a.get("actualOrderId")
        }
        out = []
        for r in rows:
            oid = int(r["orderId"])
            cid = (
                child.get(oid)
                or self._client_of_order.get((symbol, oid))
                or await self._client_id_of(symbol, oid)
            )
            out.append(
                OrderUpdate(
                    client_id=cid,
                    order_id=oid,
                    symbol=symbol,
                    side=str(r["side"]),
                    order_type="",
                    status=TRADE_REPLAY,
                    exec_type="TRADE",
                    time_ms=int(r["time"]),
                    last_qty=float(r["qty"]),
                    last_price=float(r["price"]),
                    commission=float(r["commission"]),
                    commission_asset=str(r["commissionAsset"]),
                    maker=bool(r["maker"]),
                    trade_id=int(r["id"]),
                    realized_pnl=float(r.get("realizedPnl", 0) or 0),
                )
            )
        return [await self._fee_in_usdt(t) for t in out]

    async def _fee_in_usdt(self, ev: _Event) -> _Event:
        """A trade charged in another asset (BNB, with Binance's BNB fee discount) with its
        commission converted at that asset's USDT price now; any other event as it is."""
        if (
            not isinstance(ev, OrderUpdate)
            or not ev.commission
            or ev.charged_in_usdt
            or ev.commission_usdt is not None
        ):
            return ev
        price = await self._usdt_price(ev.commission_asset)
        return ev if price is None else replace(ev, commission_usdt=ev.commission * price)

    async def _usdt_price(self, asset: str) -> float | None:
        """``asset``'s USDT price (the ``<asset>USDT`` perpetual's last price), reused for
        ``_FEE_PRICE_TTL_S``, a failed read too; None when there is none (the fee then counts 0,
        with a warning)."""
        assert self.client is not None
        now = self._clock()
        cached = self._fee_prices.get(asset)
        if cached is not None and now - cached[0] < _FEE_PRICE_TTL_S:
            return cached[1]
        symbol = f"{asset}{QUOTE_ASSET}"
        try:
            res = await self._call(
                "ticker/price", 1, False, self.client.futures_symbol_ticker, symbol=symbol
            )
            price = float(res["price"])
        except VenueBanned:
            raise  # a ban stops every request, this one too
        except (
            VenueError,
            BinanceAPIException,
            *_TRANSPORT_ERRORS,
            KeyError,
            TypeError,
            ValueError,
        ) as e:
            # still rate-limited, refused, unreachable or malformed: never worth ending the stream
            last = cached[1] if cached is not None else None
            fallback = "it counts 0 USDT" if last is None else "the last price read is used"
            log.warning(
                "venue: no USDT price for a commission in %s (%s: %s); %s for %g s",
                asset, type(e).__name__, e, fallback, _FEE_PRICE_TTL_S,
            )  # fmt: skip
            # not asked again before the TTL: the retries of a failing read must not hold up
            # every trade the stream delivers
            self._fee_prices[asset] = (now, last)
            return last
        self._fee_prices[asset] = (now, price)
        return price

    async def missed_trades(self, symbol: str, connected: bool = False) -> list[OrderUpdate]:
        """The trades on ``symbol`` the stream may have missed: all since the newest one the
        last replay returned (the exchange's recent ones the first time), so a replay never
        skips a trade however long the stream was silent; consecutive replays overlap by that
        millisecond and the venue books each trade once. ``connected``: the replay right after
        a (re)connect, whose trades predate the stream. A full page is continued next time.

        Trades that this replay and the one before both found, and that the stream never
        delivered, mean the stream has gone silent: it is ended (and reconnected)."""
        trades = await self.trades_since(symbol, self._replayed_to.get(symbol))
        if trades:
            newest = max(t.time_ms for t in trades)
            self._replayed_to[symbol] = max(self._replayed_to.get(symbol, newest), newest)
        ids = {t.trade_id for t in trades}
        heard = self._heard.setdefault(symbol, set())
        if connected:
            heard |= ids
        unheard = ids - heard
        if unheard & self._unheard.get(symbol, set()):
            self._silent(f"{len(unheard)} trade(s) on {symbol} came only from two trades replays")
        self._unheard[symbol] = unheard
        if ids:  # ids grow per symbol: what the next replay can return is at or after these
            self._heard[symbol] = {i for i in heard if i >= min(ids)}
        return trades

    async def _client_id_of(self, symbol: str, order_id: int) -> str:
        assert self.client is not None
        body = await self._call(
            "order", 1, False, self.client.futures_get_order, symbol=symbol, orderId=order_id
        )
        cid = str(body.get("clientOrderId", ""))
        self._client_of_order[(symbol, order_id)] = cid
        return cid

    # ---------------------------------------------------------------- user-data stream
    async def user_stream(
        self,
        on_events: OnEvents,
        on_connect: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        """Run the user-data stream until ``stop``: (re)connect with exponential backoff, keep the
        listenKey alive, recreate it when it expires; ``on_connect`` after every connect."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._stream_once(on_events, on_connect, stop)
                backoff = 0.5
            except (OSError, websockets.WebSocketException, *_TRANSPORT_ERRORS) as e:
                log.warning("venue: user stream lost (%s: %s); reconnecting", type(e).__name__, e)
            except BinanceAPIException as e:
                if action_for(int(e.code or 0), e.status_code) is ErrorAction.FATAL:
                    raise self._fatal(e) from None
                log.warning(
                    "venue: user stream: %s; reconnecting", describe(int(e.code or 0), e.message)
                )
            except VenueError:
                raise
            except Exception:  # our bug or a surprise: logged with its traceback, reconnect
                log.exception("venue: user stream failed; reconnecting")
            if not stop.is_set():
                await self._sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def _stream_once(
        self, on_events: OnEvents, on_connect: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        assert self.client is not None
        key = await self._call("listenKey", 1, False, self.client.futures_stream_get_listen_key)
        self.listen_key = key
        url = f"{self.cfg.user_stream_url.rstrip('/')}/{key}"
        # Our own pings (the watchdog), and no receive limit: websockets' queue limit pauses
        # the socket's reading, and with it the pongs, while the events wait for a slow consumer.
        async with websockets.connect(
            url, open_timeout=self.cfg.request_timeout_s, ping_interval=None, max_queue=None
        ) as ws:
            inbox: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
            self._inbox = inbox
            tasks = [
                asyncio.create_task(self._read(ws, inbox)),
                asyncio.create_task(self._watch(ws, inbox)),
                asyncio.create_task(self._keepalive(key, ws)),
                asyncio.create_task(_put_when_set(stop, inbox)),
            ]
            try:
                await on_connect()
                while (item := await inbox.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    msg = json.loads(item)
                    if msg.get("e") == "listenKeyExpired":
                        log.info("venue: listenKey expired; recreating it")
                        return
                    events = [await self._fee_in_usdt(ev) for ev in parse_user_event(msg)]
                    self._note_heard(events)
                    if events:
                        await on_events(events)
            finally:
                self._inbox = None
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _note_heard(self, events: Iterable[ExchangeEvent]) -> None:
        for ev in events:
            if isinstance(ev, OrderUpdate) and ev.exec_type == "TRADE":
                self._heard.setdefault(ev.symbol, set()).add(ev.trade_id)

    async def _read(self, ws: Any, inbox: asyncio.Queue[str | BaseException | None]) -> None:
        """Every frame into ``inbox`` as it arrives; the end of the connection last."""
        try:
            async for raw in ws:
                inbox.put_nowait(raw)
            inbox.put_nowait(None)  # closed normally (a keepalive found the key gone)
        except websockets.ConnectionClosed as e:
            inbox.put_nowait(e)

    async def _watch(self, ws: Any, inbox: asyncio.Queue[str | BaseException | None]) -> None:
        """Ping every ``user_stream_ping_s``; no pong within ``user_stream_silent_s``: lost."""
        while True:
            await self._sleep(self.cfg.user_stream_ping_s)
            try:
                await asyncio.wait_for(await ws.ping(), self.cfg.user_stream_silent_s)
            except (TimeoutError, websockets.ConnectionClosed):
                self._silent(f"no event and no pong for {self.cfg.user_stream_silent_s:g} s")
                return

    def _silent(self, why: str) -> None:
        """End the current connection as lost (the stream loop reconnects and reconciles)."""
        if self._inbox is not None:
            self.silences += 1
            self._inbox.put_nowait(UserStreamSilent(why))

    async def _keepalive(self, key: str, ws: Any) -> None:
        assert self.client is not None
        while True:
            await self._sleep(self.cfg.listen_key_keepalive_s)
            try:
                await self._call(
                    "keepalive", 1, False, self.client.futures_stream_keepalive, listenKey=key
                )
            except BinanceAPIException as e:
                if e.code == -1125:  # gone on the exchange's side: reconnect with a new key
                    await ws.close()
                    return
                log.warning("venue: keepalive: %s", describe(int(e.code or 0), e.message))


async def _put_when_set(event: asyncio.Event, inbox: asyncio.Queue[Any]) -> None:
    await event.wait()
    inbox.put_nowait(None)
