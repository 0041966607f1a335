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

While the live ingest runs, :class:`UniverseTracker` keeps the schedule and the membership:
a refresh is due when the exchange clock reaches the next grid time; its changes become
``universe.events`` records (:func:`change_event`, id ``universe:<time>:<symbol>``, event time
= the refresh's grid time); a symbol that left keeps its stream for ``wind_down_ms`` (its open
positions need prices to reach their exits; the risk stage refuses its new entries) and is
unsubscribed after that unless it joined again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streams.contracts.records import UniverseChanged
from streams.vocabulary import UniverseChangeKind, UniverseVerdict

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


def server_time_of(info: Any, stats: Iterable[DayStats]) -> int:
    """The exchange's ``serverTime`` of an ``exchangeInfo`` answer (the newest ticker close
    when absent): exchange time, not ours."""
    server = info.get("serverTime") if isinstance(info, dict) else None
    return server if isinstance(server, int) else max((s.close_time_ms for s in stats), default=0)


def selection_of(
    info: Any, tickers: Any, rule: UniverseRule, at_ms: int | None = None
) -> UniverseSelection:
    """The selection from an ``exchangeInfo`` and a ``ticker/24hr`` answer at ``at_ms`` (a
    refresh's grid time), else at the answer's ``serverTime``."""
    stats = parse_ticker_24h(tickers)
    now = server_time_of(info, stats) if at_ms is None else at_ms
    return select_universe(parse_exchange_info(info), stats, rule, now)


def next_refresh_ms(after_ms: int, every_ms: int) -> int:
    """The first refresh time after ``after_ms`` on a grid of ``every_ms`` (event time)."""
    if every_ms <= 0:
        raise ValueError(f"universe refresh interval must be positive, got {every_ms} ms")
    return (after_ms // every_ms + 1) * every_ms


def change_reason(change: UniverseChange, size: int) -> str:
    """Why a symbol joined or left, with the numbers (the record's ``reason``)."""
    if change.verdict is None:
        return "no longer listed by the exchange"
    rank = f"rank {change.rank} by 24h quote volume" if change.rank else "no rank"
    if change.verdict in (UniverseVerdict.SELECTED, UniverseVerdict.BELOW_TOP_N):
        return f"{change.verdict.value}: {rank}, top {size} kept"
    return f"{change.verdict.value}: a floor of the rule failed"


def change_event(
    change: UniverseChange, selection: UniverseSelection, size: int, server_time_ms: int
) -> UniverseChanged:
    """The ``universe.events`` record of ``change`` (id from its cause: time and symbol)."""
    c = selection.candidate(change.symbol)
    return UniverseChanged(
        event_id=f"universe:{change.at_ms}:{change.symbol}",
        symbol=change.symbol,
        event_time_ms=change.at_ms,
        change=UniverseChangeKind.JOINED if change.joined else UniverseChangeKind.LEFT,
        verdict=change.verdict,
        rank=change.rank,
        quote_volume=change.quote_volume,
        range_ratio=c.range_ratio if c else 0.0,
        listed_days=c.listed_days if c else None,
        universe_size=size,
        server_time_ms=server_time_ms,
        reason=change_reason(change, size),
    )


@dataclass(frozen=True, slots=True)
class UniverseUpdate:
    """What one selection changes for the ingest: its events, and the streams to add."""

    events: tuple[UniverseChanged, ...]
    subscribe: tuple[str, ...]  # joined and not streamed yet (rank order)


class UniverseTracker:
    """The live universe over time: schedule, membership, wind-down (see the module doc)."""

    def __init__(
        self,
        rule: UniverseRule,
        every_ms: int,
        wind_down_ms: int,
        start: UniverseSelection | None = None,
    ) -> None:
        self.rule = rule
        self.every_ms = every_ms
        self.wind_down_ms = wind_down_ms
        #: The selection the run starts from, until applied (its members all JOIN then).
        self.start = start
        self.current: UniverseSelection | None = None
        self.next_at_ms: int | None = None
        #: Symbols that left, still streamed: symbol -> exchange time their stream ends.
        self.winding_down: dict[str, int] = {}

    @property
    def streamed(self) -> tuple[str, ...]:
        """Every symbol whose klines the ingest must produce: members (the start's too, until
        applied) and those winding down."""
        members = [*(self.current.symbols if self.current else ()),
                   *(self.start.symbols if self.start else ())]  # fmt: skip
        return tuple(sorted({*members, *self.winding_down}))

    def resume(self, events: Iterable[UniverseChanged], now_ms: int) -> None:
        """The membership an earlier run left on ``universe.events`` (in written order): its
        members are the previous universe, so the start's selection says who left since (and
        winds them down); those still winding down at ``now_ms`` go on until it ends."""
        members: dict[str, None] = {}
        last = None
        for e in events:
            last = e.event_time_ms
            if e.change is UniverseChangeKind.JOINED:
                members[e.symbol] = None
                self.winding_down.pop(e.symbol, None)
            else:
                members.pop(e.symbol, None)
                self.winding_down[e.symbol] = e.event_time_ms + self.wind_down_ms
        if last is not None:
            self.current = UniverseSelection(last, tuple(members), ())
        self.expired(now_ms)

    def due(self, clock_ms: int | None) -> int | None:
        """The grid time of the refresh due at exchange time ``clock_ms``, else ``None``."""
        if clock_ms is None or self.next_at_ms is None or clock_ms < self.next_at_ms:
            return None
        return self.next_at_ms

    def apply(self, selection: UniverseSelection, server_time_ms: int) -> UniverseUpdate:
        """Take ``selection`` (at its ``at_ms``) as the universe; schedule the next refresh."""
        before = set(self.streamed)
        changes = universe_changes(self.current, selection)
        for c in changes:
            if c.joined:
                self.winding_down.pop(c.symbol, None)
            else:
                self.winding_down[c.symbol] = c.at_ms + self.wind_down_ms
        self.current, self.start = selection, None
        self.next_at_ms = next_refresh_ms(selection.at_ms, self.every_ms)
        events = tuple(change_event(c, selection, self.rule.size, server_time_ms) for c in changes)
        joined = tuple(c.symbol for c in changes if c.joined and c.symbol not in before)
        return UniverseUpdate(events, joined)

    def expired(self, clock_ms: int | None) -> tuple[str, ...]:
        """Symbols whose wind-down ended by exchange time ``clock_ms`` (forgotten now)."""
        if clock_ms is None:
            return ()
        done = tuple(sorted(s for s, end in self.winding_down.items() if clock_ms >= end))
        for symbol in done:
            del self.winding_down[symbol]
        return done
