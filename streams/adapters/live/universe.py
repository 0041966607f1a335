"""Universe selection: the top N USD-M perpetuals by 24h quote volume, with floors (pure).

Inputs are Binance's own answers, typed: ``GET /fapi/v1/exchangeInfo`` (``symbols[]``:
``symbol``, ``contractType``, ``status``, ``quoteAsset``, ``onboardDate``) and ``GET
/fapi/v1/ticker/24hr`` (one object per symbol: ``quoteVolume``, ``highPrice``, ``lowPrice``,
``lastPrice``, ``closeTime``, numbers as decimal strings). The rule
(:func:`select_universe`):

1. only ``PERPETUAL`` contracts (``TRADIFI_PERPETUAL`` and quarterlies are not crypto
   perpetuals), ``TRADING``, quoted in the universe's asset;
2. listed at least ``min_listing_days`` before the selection time (a new listing's first days
   are a volume spike the models never saw);
3. a 24h range ``(high - low) / last`` of at least ``min_range`` (the volatility floor: a
   contract that does not move cannot pay the fees);
4. of those, the ``size`` largest by 24h quote volume (ties by symbol, so the rule is a
   function of its inputs).

Every listed contract gets a :class:`Candidate` with its verdict, so a change of the universe
(:func:`universe_changes`) carries its reason: a symbol that leaves says whether it fell below
the top N, under a floor or off the exchange. Refreshes run on the exchange's clock
(:func:`next_refresh_ms`), never the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streams.vocabulary import UniverseVerdict

DAY_MS: Final = 86_400_000
#: The contract type of a crypto perpetual (Binance also lists ``TRADIFI_PERPETUAL``).
PERPETUAL: Final = "PERPETUAL"
TRADING: Final = "TRADING"


class UniverseDataError(ValueError):
    """An exchangeInfo or 24h-ticker answer that is not in Binance's shape."""


@dataclass(frozen=True, slots=True)
class Listing:
    """One contract of ``exchangeInfo``."""

    symbol: str
    contract_type: str
    status: str
    quote_asset: str
    onboard_ms: int | None  # spot's exchangeInfo has no onboardDate


@dataclass(frozen=True, slots=True)
class DayStats:
    """One symbol's rolling 24h ticker."""

    symbol: str
    quote_volume: float
    high: float
    low: float
    last: float
    close_time_ms: int

    @property
    def range_ratio(self) -> float:
        """``(high - low) / last``: the day's range as a fraction of the price."""
        return (self.high - self.low) / self.last if self.last > 0 else 0.0


@dataclass(frozen=True, slots=True)
class UniverseRule:
    """How many symbols and which floors (``QT_LIVE__UNIVERSE__*``)."""

    size: int
    min_listing_days: float = 30.0
    min_range: float = 0.02
    quote_asset: str = "USDT"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A listed contract and what the rule made of it."""

    symbol: str
    verdict: UniverseVerdict
    rank: int | None = None  # 1 = most quote volume among those that passed the floors
    quote_volume: float = 0.0
    range_ratio: float = 0.0
    listed_days: float | None = None


@dataclass(frozen=True, slots=True)
class UniverseSelection:
    """The universe at ``at_ms``: ``symbols`` by rank, and every candidate with its verdict."""

    at_ms: int
    symbols: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    def candidate(self, symbol: str) -> Candidate | None:
        """``symbol``'s verdict (``None``: not listed at all any more)."""
        return next((c for c in self.candidates if c.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class UniverseChange:
    """A symbol joined (``joined``) or left the universe at ``at_ms``, and why."""

    at_ms: int
    symbol: str
    joined: bool
    verdict: UniverseVerdict | None  # None: the exchange no longer lists it
    rank: int | None
    quote_volume: float


# ------------------------------------------------------------------------------- parsing


def _decimal(row: Mapping[str, Any], name: str) -> float:
    value = row.get(name)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UniverseDataError(f"{row.get('symbol')}: {name}={value!r} is not a number") from None


def parse_exchange_info(body: Any) -> list[Listing]:
    """``exchangeInfo``'s ``symbols`` (futures or spot; spot rows count as ``PERPETUAL``-less)."""
    rows = body.get("symbols") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise UniverseDataError("exchangeInfo has no 'symbols' list")
    listings = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise UniverseDataError(f"exchangeInfo row {row!r:.80} has no symbol")
        onboard = row.get("onboardDate")
        listings.append(
            Listing(
                symbol=row["symbol"], contract_type=str(row.get("contractType", "")),
                status=str(row.get("status", row.get("contractStatus", ""))),
                quote_asset=str(row.get("quoteAsset", "")),
                onboard_ms=onboard if isinstance(onboard, int) else None,
            )
        )  # fmt: skip
    return listings


def parse_ticker_24h(body: Any) -> list[DayStats]:
    """``ticker/24hr`` without a symbol: a list of every symbol's 24h statistics."""
    if not isinstance(body, list):
        raise UniverseDataError("ticker/24hr answer is not a list")
    stats = []
    for row in body:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise UniverseDataError(f"ticker row {row!r:.80} has no symbol")
        close_time = row.get("closeTime")
        stats.append(
            DayStats(
                symbol=row["symbol"], quote_volume=_decimal(row, "quoteVolume"),
                high=_decimal(row, "highPrice"), low=_decimal(row, "lowPrice"),
                last=_decimal(row, "lastPrice"),
                close_time_ms=close_time if isinstance(close_time, int) else 0,
            )
        )  # fmt: skip
    return stats


# ---------------------------------------------------------------------------------- rule


def floor_verdict(
    listing: Listing, stats: DayStats | None, rule: UniverseRule, now_ms: int
) -> UniverseVerdict | None:
    """The floor ``listing`` fails first (steps 1-3 of the module doc), ``None`` if none."""
    if listing.contract_type != PERPETUAL:
        return UniverseVerdict.NOT_PERPETUAL
    if listing.status != TRADING:
        return UniverseVerdict.NOT_TRADING
    if listing.quote_asset != rule.quote_asset:
        return UniverseVerdict.OTHER_QUOTE
    if listing.onboard_ms is None or now_ms - listing.onboard_ms < rule.min_listing_days * DAY_MS:
        return UniverseVerdict.TOO_NEW
    if stats is None:
        return UniverseVerdict.NO_TICKER
    if stats.range_ratio < rule.min_range:
        return UniverseVerdict.TOO_QUIET
    return None


def select_universe(
    listings: Iterable[Listing], tickers: Iterable[DayStats], rule: UniverseRule, now_ms: int
) -> UniverseSelection:
    """The universe at ``now_ms`` (exchange time): see the module doc."""
    by_symbol = {s.symbol: s for s in tickers}
    failed: list[Candidate] = []
    passed: list[tuple[Listing, DayStats]] = []
    for listing in sorted(listings, key=lambda x: x.symbol):
        stats = by_symbol.get(listing.symbol)
        verdict = floor_verdict(listing, stats, rule, now_ms)
        if verdict is None and stats is not None:
            passed.append((listing, stats))
            continue
        failed.append(
            Candidate(
                listing.symbol, verdict or UniverseVerdict.NO_TICKER,
                quote_volume=stats.quote_volume if stats else 0.0,
                range_ratio=stats.range_ratio if stats else 0.0,
                listed_days=_listed_days(listing, now_ms),
            )
        )  # fmt: skip
    passed.sort(key=lambda pair: (-pair[1].quote_volume, pair[0].symbol))
    ranked = [
        _ranked(listing, stats, rank, rule.size, now_ms)
        for rank, (listing, stats) in enumerate(passed, start=1)
    ]
    chosen = tuple(c.symbol for c in ranked if c.verdict is UniverseVerdict.SELECTED)
    return UniverseSelection(now_ms, chosen, tuple(ranked + failed))


def _ranked(listing: Listing, stats: DayStats, rank: int, size: int, now_ms: int) -> Candidate:
    return Candidate(
        listing.symbol,
        UniverseVerdict.SELECTED if rank <= size else UniverseVerdict.BELOW_TOP_N,
        rank=rank, quote_volume=stats.quote_volume, range_ratio=stats.range_ratio,
        listed_days=_listed_days(listing, now_ms),
    )  # fmt: skip


def _listed_days(listing: Listing, now_ms: int) -> float | None:
    return None if listing.onboard_ms is None else (now_ms - listing.onboard_ms) / DAY_MS


def universe_changes(
    previous: UniverseSelection | None, current: UniverseSelection
) -> list[UniverseChange]:
    """Who joined and who left between two selections (the first selection: all join).

    Joins come in rank order, leaves by symbol; a leaver's verdict is its verdict now.
    """
    before = set(previous.symbols) if previous is not None else set()
    now = set(current.symbols)
    changes = []
    for symbol in current.symbols:
        if symbol not in before:
            c = current.candidate(symbol)
            assert c is not None
            changes.append(
                UniverseChange(current.at_ms, symbol, True, c.verdict, c.rank, c.quote_volume)
            )
    for symbol in sorted(before - now):
        c = current.candidate(symbol)
        changes.append(
            UniverseChange(
                current.at_ms, symbol, False, c.verdict if c else None, c.rank if c else None,
                c.quote_volume if c else 0.0,
            )
        )  # fmt: skip
    return changes


def selection_of(info: Any, tickers: Any, rule: UniverseRule) -> UniverseSelection:
    """The selection from an ``exchangeInfo`` and a ``ticker/24hr`` answer, at the exchange's
    ``serverTime`` (the newest ticker close when absent): exchange time, not ours."""
    stats = parse_ticker_24h(tickers)
    server = info.get("serverTime") if isinstance(info, dict) else None
    now = server if isinstance(server, int) else max((s.close_time_ms for s in stats), default=0)
    return select_universe(parse_exchange_info(info), stats, rule, now)


def next_refresh_ms(after_ms: int, every_ms: int) -> int:
    """The first refresh time after ``after_ms`` on a grid of ``every_ms`` (event time)."""
    if every_ms <= 0:
        raise ValueError(f"universe refresh interval must be positive, got {every_ms} ms")
    return (after_ms // every_ms + 1) * every_ms
