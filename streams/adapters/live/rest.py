"""Closed klines over REST, paged, within Binance's request weight, honouring ``Retry-After``.

The HTTP client is python-binance's ``AsyncClient`` (aiohttp): its ``futures_klines`` /
``get_klines`` build the request, its exceptions carry the status and the response, and its
URL attributes (``FUTURES_URL``, ``API_URL``) are set from our settings so tests point it at a
local server. What python-binance does not do is ours, in small pure functions:

* paging (:func:`next_page_start`): ``limit`` klines per request from ``startTime``, the next
  page after the last open time returned, until the range is covered;
* request weight (:func:`kline_request_weight`, :func:`weight_pause_s`): Binance reports the
  weight used in the current minute in ``X-MBX-USED-WEIGHT-1M``; before a request that would
  pass our budget we wait for the next minute instead of earning a 429;
* ``429``/``418`` (:func:`retry_after_s`): wait what ``Retry-After`` says (418 means the IP
  was banned for ignoring 429s: we never hammer), other failures back off (unlimited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streams.adapters.live.backoff import Backoff
from streams.adapters.live.endpoints import MAX_PAGE, Market
from streams.adapters.live.klines import Kline, KlineMessageError, parse_rest_row
from streams.adapters.live.sequencer import BackfillRequest

log = logging.getLogger(__name__)

#: Header of the request weight used in the current minute (per IP).
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
#: Statuses that mean "slow down": rate limited, or banned for not slowing down.
RATE_LIMITED: Final = frozenset({429, 418})


def kline_request_weight(limit: int, market: Market = "futures") -> int:
    """Weight of one klines request (Binance's tables: futures by ``limit``, spot always 2)."""
    if market == "spot":
        return 2
    for bound, weight in ((100, 1), (500, 2), (1000, 5)):
        if limit < bound:
            return weight
    return 5 if limit == 1000 else 10


def weight_pause_s(used: int | None, request_weight: int, budget: int, wall_s: float) -> float:
    """Seconds to wait before a request so the minute's weight stays within ``budget``."""
    if used is None or used + request_weight <= budget:
        return 0.0
    return 60.0 - (wall_s % 60.0) + 0.05  # the counter resets on the minute


def retry_after_s(headers: Mapping[str, str] | None, default_s: float) -> float:
    """``Retry-After`` in seconds (Binance sends seconds), or ``default_s`` when absent/bad."""
    value = (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default_s
    except ValueError:
        return default_s


def next_page_start(
    request: BackfillRequest, page: list[Kline], limit: int, step: int
) -> int | None:
    """Open time the next page starts at; ``None`` when ``request`` is covered."""
    if len(page) < limit or not page:
        return None
    nxt = page[-1].open_time_ms + step
    return nxt if nxt < request.end_ms else None


#: What :meth:`RestKlines._attempt` returns when the request is to be made again.
_RETRY: Final = object()


class RestError(Exception):
    """A REST answer that cannot be used (not a rate limit, not a network failure)."""


@dataclass
class RestCounts:
    """Requests made, rate limits obeyed, failures retried, weight last reported."""

    requests: int = 0
    rate_limited: int = 0
    failures: int = 0
    used_weight: int | None = None


class RestKlines:
    """Backfills a :class:`BackfillRequest` from the klines endpoint of one market; reads the
    universe's inputs (exchangeInfo, 24h ticker) under the same weight and retry rules."""

    def __init__(
        self,
        client: Any,
        market: Market,
        *,
        page_limit: int,
        weight_budget: int,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.market = market
        self.page_limit = min(page_limit, MAX_PAGE[market])
        self.weight_budget = weight_budget
        self.backoff = backoff
        self._sleep = sleep
        self._wall = wall
        self.counts = RestCounts()

    async def fetch(self, request: BackfillRequest, step_ms: int = 60_000) -> list[Kline]:
        """Every kline the exchange has in the request's range (retries until it answers)."""
        out: list[Kline] = []
        start: int | None = request.start_ms
        while start is not None:
            page = await self._page(request.symbol, start, request.end_ms)
            out.extend(k for k in page if request.start_ms <= k.open_time_ms < request.end_ms)
            start = next_page_start(request, page, self.page_limit, step_ms)
        return out

    async def _page(self, symbol: str, start_ms: int, end_ms: int) -> list[Kline]:
        params = {"symbol": symbol, "interval": "1m", "startTime": start_ms,
                  "endTime": end_ms - 1, "limit": self.page_limit}  # fmt: skip
        call = self.client.futures_klines if self.market == "futures" else self.client.get_klines
        weight = kline_request_weight(self.page_limit, self.market)
        rows = await self.request(call, f"klines {symbol}", weight, params)
        if not isinstance(rows, list):
            raise RestError(f"klines {params}: answer is not a JSON array")
        return self._rows(symbol, rows)

    async def request(
        self, call: Callable[..., Awaitable[Any]], label: str, weight: int, params: dict[str, Any]
    ) -> Any:
        """``call(**params)``'s answer, within the weight budget, retried until it answers."""
        while True:
            pause = weight_pause_s(
                self.counts.used_weight, weight, self.weight_budget, self._wall()
            )
            if pause:
                log.info("REST weight %s near budget %s: waiting %.1f s",
                         self.counts.used_weight, self.weight_budget, pause)  # fmt: skip
                self.counts.used_weight = None
                await self._sleep(pause)
            answer = await self._attempt(call, label, params)
            if answer is not _RETRY:
                self.backoff.reset()
                return answer

    async def universe_inputs(self) -> tuple[Any, Any]:
        """``exchangeInfo`` and every symbol's 24h ticker (USD-M futures), as JSON."""
        if self.market != "futures":
            raise RestError("universe selection is for USD-M perpetuals (market futures)")
        info = await self.request(self.client.futures_exchange_info, "exchangeInfo", 1, {})
        tickers = await self.request(self.client.futures_ticker, "ticker/24hr", 40, {})
        return info, tickers

    async def _attempt(
        self, call: Callable[..., Awaitable[Any]], label: str, params: dict[str, Any]
    ) -> Any:
        """One request: its answer, or ``_RETRY`` after waiting out a rate limit or a failure."""
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        self.counts.requests += 1
        try:
            answer = await call(**params)
        except BinanceAPIException as exc:
            headers = getattr(exc.response, "headers", None)
            self._note_weight(headers)
            if exc.status_code in RATE_LIMITED:
                self.counts.rate_limited += 1
                wait = retry_after_s(headers, self.backoff.next_delay())
                log.warning("REST %s for %s: waiting %.1f s (Retry-After)", exc.status_code,
                            label, wait)  # fmt: skip
                await self._sleep(wait)
                return _RETRY
            if 400 <= exc.status_code < 500:
                raise RestError(f"{label} {params}: {exc.status_code} {exc.message}") from exc
            await self._fail(label, f"HTTP {exc.status_code}")
            return _RETRY
        except (BinanceRequestException, OSError, TimeoutError) as exc:
            await self._fail(label, str(exc) or type(exc).__name__)
            return _RETRY
        self._note_weight(getattr(getattr(self.client, "response", None), "headers", None))
        return answer

    async def _fail(self, label: str, why: str) -> None:
        self.counts.failures += 1
        delay = self.backoff.next_delay()
        log.warning("REST %s failed (%s): retrying in %.1f s", label, why, delay)
        await self._sleep(delay)

    def _note_weight(self, headers: Mapping[str, str] | None) -> None:
        value = (headers or {}).get(USED_WEIGHT_HEADER)
        if value is not None and value.isdigit():
            self.counts.used_weight = int(value)

    @staticmethod
    def _rows(symbol: str, rows: list[Any]) -> list[Kline]:
        klines = []
        for row in rows:
            try:
                klines.append(parse_rest_row(symbol, row))
            except KlineMessageError as exc:
                # A bad row is no kline: the minute stays unfilled and is reported missing.
                log.warning("REST kline of %s dropped: %s", symbol, exc)
        return klines


def binance_client(market: Market, rest_url: str, timeout_s: float) -> Any:
    """python-binance's ``AsyncClient`` pointed at ``rest_url`` (no request made: no ping)."""
    import aiohttp
    from binance import AsyncClient

    client = AsyncClient(requests_params={"timeout": aiohttp.ClientTimeout(total=timeout_s)})
    base = rest_url.rstrip("/")
    # python-binance appends /v1/<path> (futures) and /v3/<path> (spot) to these.
    client.FUTURES_URL = f"{base}/fapi"
    client.API_URL = f"{base}/api"
    return client
