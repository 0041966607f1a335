"""A local Binance for tests: real recorded klines, Binance's wire format, injected faults.

An aiohttp server with

* ``/market/stream?streams=a@kline_1m/...`` (USD-M futures, the routed ``/market`` path) and
  ``/stream?streams=...`` (spot): combined-stream kline messages as Binance sends them
  (``{"stream", "data": {"e": "kline", "E", "s", "k": {...}}}``), one closed kline per symbol
  and minute plus one update of the open minute (``"x": false``), pinging the client
  (aiohttp's heartbeat: a client that does not answer is closed, as Binance does); live
  ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}`` requests on an open
  connection change its streams and are answered ``{"result": null, "id": n}`` (logged in
  :attr:`FakeBinance.requests_seen`);
* ``/fapi/v1/klines`` and ``/api/v3/klines``: JSON arrays of kline rows, ``startTime``,
  ``endTime`` and ``limit`` honoured, ``X-MBX-USED-WEIGHT-1M`` counted, ``429`` with
  ``Retry-After`` on the requests named in :attr:`Faults.rate_limit_requests`;
* ``/fapi/v1/time`` (``/api/v3/time``): the simulated clock as ``serverTime``;
* ``/fapi/v1/exchangeInfo`` and ``/fapi/v1/ticker/24hr``: Binance's shapes, computed from the
  same klines at the simulated clock (:func:`ticker_24h`, :func:`exchange_info`); a test makes
  the market change between universe refreshes with :attr:`FakeBinance.volume_factor`
  (``(symbol, from ms) -> factor`` on the 24h quote volume from that simulated time on).

The exchange clock is simulated: it starts at ``start_ms`` and runs ``speed`` times faster
than the wall clock, so a day of klines takes seconds. Klines come from the CSV(.gz) files of
``../shared/data/binance`` (the only invented fields are those the files lack: trade counts and
quote volumes are sent as 0; the 24h ticker's quote volume is the sum of volume x close over
the day's minutes, and a symbol's ``onboardDate`` is its first kline in the files unless
``onboard`` says otherwise). Each fault in :class:`Faults` fires once, on whichever
connection reaches it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

MINUTE = 60_000


@dataclass
class Faults:
    """What goes wrong, keyed by kline open time (ms) or REST request number (1-based)."""

    drop_before: set[int] = field(default_factory=set)  # close before sending this minute
    abort_before: set[int] = field(default_factory=set)  # TCP abort, no close frame
    stall_before: set[int] = field(default_factory=set)  # go silent (pings still answered)
    duplicate: set[int] = field(default_factory=set)  # send the minute's klines twice
    swap: set[int] = field(default_factory=set)  # send minute m + 1 before minute m
    skip_ws: set[tuple[str, int]] = field(default_factory=set)  # not on the stream (REST has it)
    missing: set[tuple[str, int]] = field(default_factory=set)  # nowhere: really missing
    garbage_before: set[int] = field(default_factory=set)  # a message that is no kline
    rate_limit_requests: set[int] = field(default_factory=set)
    retry_after: str = "1"


def load_klines(path: Path, start_ms: int, end_ms: int) -> dict[int, list[str]]:
    """``{open ms: [open, high, low, close, volume]}`` as the file writes them."""
    rows: dict[int, list[str]] = {}
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
        next(f)
        for line in f:
            t, *values = line.strip().split(",")
            if start_ms <= int(t) < end_ms:
                rows[int(t)] = values[:5]
    return rows


def _text(x: float) -> str:
    return repr(float(x))


def ticker_24h(klines: dict[str, dict[int, list[str]]], now_ms: int) -> list[dict[str, Any]]:
    """``GET /fapi/v1/ticker/24hr`` at ``now_ms``: each symbol's 1440 klines closed by then."""
    out = []
    end = now_ms - now_ms % MINUTE
    for symbol in sorted(klines):
        day = [(t, v) for t, v in sorted(klines[symbol].items()) if end - 86_400_000 <= t < end]
        if not day:
            continue
        o, c = float(day[0][1][0]), float(day[-1][1][3])
        high = max(float(v[1]) for _, v in day)
        low = min(float(v[2]) for _, v in day)
        volume = sum(float(v[4]) for _, v in day)
        quote = sum(float(v[4]) * float(v[3]) for _, v in day)
        out.append({
            "symbol": symbol, "priceChange": _text(c - o),
            "priceChangePercent": f"{100 * (c - o) / o:.3f}",
            "weightedAvgPrice": _text(quote / volume if volume else c), "lastPrice": day[-1][1][3],
            "lastQty": "0", "openPrice": day[0][1][0], "highPrice": _text(high),
            "lowPrice": _text(low), "volume": _text(volume), "quoteVolume": _text(quote),
            "openTime": day[0][0], "closeTime": day[-1][0] + MINUTE - 1,
            "firstId": 0, "lastId": 0, "count": 0,
        })  # fmt: skip
    return out


def exchange_info(
    onboard: dict[str, int], now_ms: int, extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``GET /fapi/v1/exchangeInfo``: a USDT perpetual per symbol, then the ``extra`` rows."""
    rows: list[dict[str, Any]] = [
        {
            "symbol": s, "pair": s, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": t, "status": "TRADING", "baseAsset": s.removesuffix("USDT"),
            "quoteAsset": "USDT", "marginAsset": "USDT", "underlyingType": "COIN",
        }
        for s, t in sorted(onboard.items())
    ]  # fmt: skip
    return {
        "timezone": "UTC", "serverTime": now_ms, "futuresType": "U_MARGINED",
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": 2400}],
        "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True}],
        "symbols": rows + list(extra or []),
    }  # fmt: skip


class FakeBinance:
    """The server; ``await start()``, point the live settings at :attr:`ws_url`/:attr:`rest_url`."""

    def __init__(
        self,
        klines: dict[str, dict[int, list[str]]],
        start_ms: int,
        speed: float,
        faults: Faults | None = None,
        heartbeat_s: float = 0.5,
        onboard: dict[str, int] | None = None,
        extra_listings: list[dict[str, Any]] | None = None,
    ) -> None:
        self.klines = klines
        self.onboard = {s: min(rows) for s, rows in klines.items() if rows} | dict(onboard or {})
        self.extra_listings = extra_listings or []
        self.start_ms = start_ms
        self.speed = speed
        self.faults = faults or Faults()
        self.heartbeat_s = heartbeat_s
        self.requests = 0
        self.connections = 0
        self.volume_factor: dict[tuple[str, int], float] = {}
        self.ticker_delay_s = 0.0  # a slow 24h ticker answer (wall seconds)
        self.requests_seen: list[dict[str, Any]] = []
        self.weight = 0
        self._wall0: float | None = None  # the clock starts at the first request
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -------------------------------------------------------------------------- lifecycle

    async def start(self, port: int = 0) -> FakeBinance:
        """Listen on ``port`` (0: a free one; the old port again after :meth:`stop`: an outage)."""
        app = web.Application()
        app.router.add_get("/market/stream", self._ws)
        app.router.add_get("/stream", self._ws)
        app.router.add_get("/fapi/v1/klines", self._rest_klines)
        app.router.add_get("/api/v3/klines", self._rest_klines)
        app.router.add_get("/fapi/v1/exchangeInfo", self._rest_exchange_info)
        app.router.add_get("/fapi/v1/time", self._rest_time)
        app.router.add_get("/api/v3/time", self._rest_time)
        app.router.add_get("/fapi/v1/ticker/24hr", self._rest_ticker)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/market"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now_ms(self) -> int:
        """The simulated exchange clock."""
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        return self.start_ms + int((time.monotonic() - self._wall0) * 1000 * self.speed)

    # ------------------------------------------------------------------------------ REST

    def _row(self, symbol: str, t: int) -> list[Any] | None:
        values = self.klines.get(symbol, {}).get(t)
        if values is None or (symbol, t) in self.faults.missing:
            return None
        o, h, low, c, v = values
        return [t, o, h, low, c, v, t + MINUTE - 1, "0", 0, "0", "0", "0"]

    def _weigh(self, weight: int) -> dict[str, str]:
        self.requests += 1
        self.weight += weight
        return {"X-MBX-USED-WEIGHT-1M": str(self.weight)}

    def _rate_limited(self, headers: dict[str, str]) -> web.Response | None:
        """429 + ``Retry-After`` for the requests :attr:`Faults.rate_limit_requests` names."""
        if self.requests not in self.faults.rate_limit_requests:
            return None
        headers = headers | {"Retry-After": self.faults.retry_after}
        body = {"code": -1003, "msg": "Too many requests; please use the websocket."}
        return web.json_response(body, status=429, headers=headers)

    async def _rest_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms()}, headers=self._weigh(1))

    async def _rest_exchange_info(self, request: web.Request) -> web.Response:
        headers = self._weigh(1)
        if (refused := self._rate_limited(headers)) is not None:
            return refused
        body = exchange_info(self.onboard, self.now_ms(), self.extra_listings)
        return web.json_response(body, headers=headers)

    async def _rest_ticker(self, request: web.Request) -> web.Response:
        headers = self._weigh(40)  # Binance: 40 without a symbol
        if (refused := self._rate_limited(headers)) is not None:
            return refused
        await asyncio.sleep(self.ticker_delay_s)
        now = self.now_ms()
        rows = ticker_24h(self.klines, now)
        for row in rows:
            factor = 1.0
            for (symbol, since), f in sorted(self.volume_factor.items()):
                if symbol == row["symbol"] and now >= since:
                    factor = f  # the latest change in force
            row["quoteVolume"] = _text(float(row["quoteVolume"]) * factor)
        return web.json_response(rows, headers=headers)

    async def _rest_klines(self, request: web.Request) -> web.Response:
        headers = self._weigh(5)
        if (refused := self._rate_limited(headers)) is not None:
            return refused
        q = request.query
        symbol = q.get("symbol", "")
        if symbol not in self.klines:
            body = {"code": -1121, "msg": "Invalid symbol."}
            return web.json_response(body, status=400, headers=headers)
        limit = min(int(q.get("limit", "500")), 1500)
        start = int(q.get("startTime", "0"))
        end = int(q.get("endTime", str(2**62)))
        now = self.now_ms()
        rows = []
        # Like Binance: klines that opened by now, the still open one included.
        for t in range(start - start % MINUTE, min(end, now) + 1, MINUTE):
            if t < start:
                continue
            row = self._row(symbol, t)
            if row is not None:
                rows.append(row)
            if len(rows) == limit:
                break
        return web.json_response(rows, headers=headers)

    # ------------------------------------------------------------------------- websocket

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        routed = request.path == "/market/stream"
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, autoping=True)
        await ws.prepare(request)
        symbols = self._symbols(streams if routed else [])  # changed by (UN)SUBSCRIBE
        sender = asyncio.create_task(self._send_minutes(ws, request, symbols))
        try:
            async for msg in ws:  # reading answers pings and notices the client's close
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.TEXT:
                    await self._control(ws, msg.data, symbols, routed)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        return ws

    async def _control(
        self, ws: web.WebSocketResponse, text: str, symbols: list[str], routed: bool
    ) -> None:
        """A live SUBSCRIBE / UNSUBSCRIBE, as Binance's combined streams take them (klines
        subscribed on an unrouted URL stay silent there too)."""
        request = json.loads(text)
        self.requests_seen.append(request)
        wanted = set(self._symbols(request.get("params", []))) if routed else set()
        if request.get("method") == "SUBSCRIBE":
            symbols[:] = sorted(set(symbols) | wanted)
        elif request.get("method") == "UNSUBSCRIBE":
            symbols[:] = [s for s in symbols if s not in wanted]
        await ws.send_str(json.dumps({"result": None, "id": request.get("id")}))

    def _symbols(self, streams: list[str]) -> list[str]:
        wanted = {s.split("@", 1)[0].upper() for s in streams if s.endswith("@kline_1m")}
        return sorted(s for s in self.klines if s in wanted)

    async def _send_minutes(
        self, ws: web.WebSocketResponse, request: web.Request, symbols: list[str]
    ) -> None:
        minute = self.now_ms() // MINUTE * MINUTE  # the open minute: its kline closes next
        while True:
            close_at = minute + MINUTE
            await asyncio.sleep(max(0.0, (close_at - self.now_ms()) / 1000 / self.speed))
            if await self._fault_before(ws, request, minute):
                return
            order = [minute]
            if minute in self.faults.swap:
                self.faults.swap.discard(minute)
                await asyncio.sleep(MINUTE / 1000 / self.speed)  # m + 1 closes: send it first
                order = [minute + MINUTE, minute]
                minute += MINUTE
            for m in order:
                times = 2 if m in self.faults.duplicate else 1
                self.faults.duplicate.discard(m)
                for _ in range(times):
                    for symbol in list(symbols):
                        await self._send_kline(ws, symbol, m, closed=True)
            for symbol in list(symbols):  # an update of the minute now open (x = false)
                await self._send_kline(ws, symbol, minute + MINUTE, closed=False)
            minute += MINUTE

    async def _fault_before(self, ws: web.WebSocketResponse, request: web.Request, m: int) -> bool:
        f = self.faults
        if m in f.drop_before:
            f.drop_before.discard(m)
            await ws.close()
            return True
        if m in f.abort_before:
            f.abort_before.discard(m)
            if request.transport is not None:
                request.transport.abort()
            return True
        if m in f.garbage_before:
            f.garbage_before.discard(m)
            await ws.send_str('{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "k": 7}}')
            await ws.send_str("not json at all")
        if m in f.stall_before:
            f.stall_before.discard(m)
            await asyncio.Event().wait()  # silent until the client gives up on us
        return False

    async def _send_kline(
        self, ws: web.WebSocketResponse, symbol: str, t: int, closed: bool
    ) -> None:
        if closed and ((symbol, t) in self.faults.skip_ws or (symbol, t) in self.faults.missing):
            return
        values = self.klines[symbol].get(t)
        if values is None or ws.closed:
            return
        o, h, low, c, v = values
        event_ms = t + MINUTE + 3 if closed else t + 5
        stream = f"{symbol.lower()}@kline_1m"
        data = {
            "e": "kline", "E": event_ms, "s": symbol,
            "k": {
                "t": t, "T": t + MINUTE - 1, "s": symbol, "i": "1m", "f": 0, "L": 0,
                "o": o, "c": c, "h": h, "l": low, "v": v, "n": 0, "x": closed,
                "q": "0", "V": "0", "Q": "0", "B": "0",
            },
        }  # fmt: skip
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps({"stream": stream, "data": data}))
