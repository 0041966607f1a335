"""Universe selection over Binance-shaped answers made from the real futures klines.

The 24h tickers are those the local Binance serves (tests/fakes/binance.py ``ticker_24h``):
each symbol's real 1-minute klines of the 24 hours before the selection time; ``onboardDate`` is
a symbol's first kline in the files (ADAUSDT's starts 2025-05-09 18:18, the others' 2025-05-04).
The contract-type and status cases are exchangeInfo rows in Binance's shape.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.adapters.live.universe import (
    DAY_MS,
    UniverseDataError,
    UniverseRule,
    UniverseSelection,
    UniverseTracker,
    next_refresh_ms,
    parse_exchange_info,
    parse_ticker_24h,
    select_universe,
    selection_of,
    universe_changes,
)
from streams.vocabulary import UniverseChangeKind, UniverseVerdict
from tests.fakes.binance import exchange_info, load_klines, ticker_24h
from tests.shared_data import BINANCE

FUTURES = BINANCE / "um_futures_1m_2025"
MAY_12 = 1747008000000  # 2025-05-12T00:00Z
MAY_13 = MAY_12 + DAY_MS


@pytest.fixture(scope="module")
def klines() -> dict[str, dict[int, list[str]]]:
    files = sorted(FUTURES.glob("*.csv.gz"))
    assert len(files) == 16
    return {
        f.name.removesuffix(".csv.gz"): load_klines(Path(f), MAY_12 - DAY_MS, MAY_13) for f in files
    }


@pytest.fixture(scope="module")
def onboard() -> dict[str, int]:
    """Each symbol's first kline open time in the files."""
    first = {}
    for f in FUTURES.glob("*.csv.gz"):
        with gzip.open(f, "rt") as rows:
            next(rows)
            first[f.name.removesuffix(".csv.gz")] = int(next(rows).split(",")[0])
    return first


@pytest.fixture(scope="module")
def select(
    klines: dict[str, dict[int, list[str]]], onboard: dict[str, int]
) -> Callable[..., UniverseSelection]:
    def at(rule: UniverseRule, when: int = MAY_12) -> UniverseSelection:
        return selection_of(exchange_info(onboard, when), ticker_24h(klines, when), rule)

    return at


def test_top_n_by_quote_volume_btc_and_eth_first(
    klines: dict[str, dict[int, list[str]]], select: Callable[..., UniverseSelection]
) -> None:
    chosen = select(UniverseRule(size=5, min_listing_days=0, min_range=0))
    assert len(chosen.symbols) == 5
    assert set(chosen.symbols[:2]) == {"BTCUSDT", "ETHUSDT"}  # as on Binance: the two largest
    ranked = sorted((c for c in chosen.candidates if c.rank), key=lambda c: c.rank or 0)
    assert [c.rank for c in ranked] == list(range(1, 17))
    volumes = [c.quote_volume for c in ranked]
    assert volumes == sorted(volumes, reverse=True)
    assert {c.symbol for c in ranked[:5]} == set(chosen.symbols)
    assert all(c.verdict is UniverseVerdict.BELOW_TOP_N for c in ranked[5:])
    # the volume is the day's sum of volume x close, from the files
    day = [v for t, v in klines["SOLUSDT"].items() if MAY_12 - DAY_MS <= t < MAY_12]
    sol = next(c for c in ranked if c.symbol == "SOLUSDT")
    assert sol.quote_volume == pytest.approx(sum(float(v[4]) * float(v[3]) for v in day))


def test_a_recent_listing_waits_for_the_minimum_age(
    klines: dict[str, dict[int, list[str]]],
    onboard: dict[str, int],
    select: Callable[..., UniverseSelection],
) -> None:
    rule = UniverseRule(size=16, min_listing_days=7, min_range=0)
    chosen = select(rule)
    ada = chosen.candidate("ADAUSDT")
    assert ada is not None and ada.verdict is UniverseVerdict.TOO_NEW
    assert ada.listed_days == pytest.approx(2 + (5 * 60 + 42) / 1440)  # 05-09 18:18 .. 05-12
    assert len(chosen.symbols) == 15 and "ADAUSDT" not in chosen.symbols
    # five days later it has the age (same tickers, a later clock)
    listings = parse_exchange_info(exchange_info(onboard, MAY_12))
    tickers = parse_ticker_24h(ticker_24h(klines, MAY_12))
    later = select_universe(listings, tickers, rule, MAY_12 + 5 * DAY_MS)
    assert "ADAUSDT" in later.symbols


def test_the_volatility_floor_drops_the_quiet_ones(
    klines: dict[str, dict[int, list[str]]], select: Callable[..., UniverseSelection]
) -> None:
    ranges = {}
    for symbol, rows in klines.items():
        day = [v for t, v in sorted(rows.items()) if MAY_12 - DAY_MS <= t < MAY_12]
        high, low = max(float(v[1]) for v in day), min(float(v[2]) for v in day)
        ranges[symbol] = (high - low) / float(day[-1][3])
    floor = sorted(ranges.values())[5]  # the five quietest are below it, the sixth is not
    chosen = select(UniverseRule(size=16, min_listing_days=0, min_range=floor))
    quiet = {c.symbol for c in chosen.candidates if c.verdict is UniverseVerdict.TOO_QUIET}
    assert quiet == {s for s, r in ranges.items() if r < floor} and len(quiet) == 5
    assert set(chosen.symbols) == set(ranges) - quiet


def test_only_trading_usdt_crypto_perpetuals_with_a_ticker() -> None:
    rows = [
        {"symbol": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING",
         "quoteAsset": "USDT", "onboardDate": 1569398400000},
        {"symbol": "BTCUSDT_250627", "contractType": "CURRENT_QUARTER", "status": "TRADING",
         "quoteAsset": "USDT", "onboardDate": 1569398400000},
        {"symbol": "TSLAUSDT", "contractType": "TRADIFI_PERPETUAL", "status": "TRADING",
         "quoteAsset": "USDT", "onboardDate": 1569398400000},
        {"symbol": "OLDUSDT", "contractType": "PERPETUAL", "status": "SETTLING",
         "quoteAsset": "USDT", "onboardDate": 1569398400000},
        {"symbol": "BTCUSDC", "contractType": "PERPETUAL", "status": "TRADING",
         "quoteAsset": "USDC", "onboardDate": 1569398400000},
        {"symbol": "NEWUSDT", "contractType": "PERPETUAL", "status": "TRADING",
         "quoteAsset": "USDT", "onboardDate": MAY_12 - DAY_MS},
        {"symbol": "GHOSTUSDT", "contractType": "PERPETUAL", "status": "TRADING",
         "quoteAsset": "USDT", "onboardDate": 1569398400000},
    ]  # fmt: skip
    ticker = [
        {"symbol": r["symbol"], "quoteVolume": "1000.5", "highPrice": "110", "lowPrice": "100",
         "lastPrice": "105", "closeTime": MAY_12 - 1}
        for r in rows if r["symbol"] != "GHOSTUSDT"
    ]  # fmt: skip
    chosen = select_universe(
        parse_exchange_info({"symbols": rows}), parse_ticker_24h(ticker),
        UniverseRule(size=10), MAY_12,
    )  # fmt: skip
    verdicts = {c.symbol: c.verdict for c in chosen.candidates}
    assert verdicts == {
        "BTCUSDT": UniverseVerdict.SELECTED,
        "BTCUSDT_250627": UniverseVerdict.NOT_PERPETUAL,
        "TSLAUSDT": UniverseVerdict.NOT_PERPETUAL,
        "OLDUSDT": UniverseVerdict.NOT_TRADING,
        "BTCUSDC": UniverseVerdict.OTHER_QUOTE,
        "NEWUSDT": UniverseVerdict.TOO_NEW,
        "GHOSTUSDT": UniverseVerdict.NO_TICKER,
    }
    assert chosen.symbols == ("BTCUSDT",)


def test_changes_say_who_joined_and_why_the_others_left(
    select: Callable[..., UniverseSelection],
) -> None:
    rule = UniverseRule(size=6, min_listing_days=0, min_range=0.03)
    first = select(rule)
    second = select(rule, MAY_13)
    start = universe_changes(None, first)
    assert [c.symbol for c in start] == list(first.symbols) and all(c.joined for c in start)
    changes = universe_changes(first, second)
    joined = {c.symbol for c in changes if c.joined}
    left = {c.symbol for c in changes if not c.joined}
    assert joined == set(second.symbols) - set(first.symbols)
    assert left == set(first.symbols) - set(second.symbols)
    assert changes, "the real data changes the top 6 between these two days"
    for change in changes:
        verdict = second.candidate(change.symbol).verdict  # type: ignore[union-attr]
        assert change.verdict is verdict
        assert (verdict is UniverseVerdict.SELECTED) is change.joined
    # a symbol the exchange stopped listing leaves with no verdict
    gone = select_universe([], [], rule, MAY_13)
    assert {(c.symbol, c.verdict) for c in universe_changes(second, gone)} == {
        (s, None) for s in second.symbols
    }


def test_refreshes_run_on_an_event_time_grid() -> None:
    hour = 3_600_000
    assert next_refresh_ms(MAY_12, hour) == MAY_12 + hour
    assert next_refresh_ms(MAY_12 + 1, hour) == MAY_12 + hour
    with pytest.raises(ValueError):
        next_refresh_ms(MAY_12, 0)


def test_the_tracker_refreshes_on_the_grid_and_winds_leavers_down(
    select: Callable[..., UniverseSelection],
) -> None:
    hour = 3_600_000
    rule = UniverseRule(size=6, min_listing_days=0, min_range=0.03)
    start, later = select(rule), select(rule, MAY_13)
    tracker = UniverseTracker(rule, hour, wind_down_ms=2 * hour, start=start)
    assert tracker.streamed == tuple(sorted(start.symbols)) and tracker.due(MAY_12) is None
    first = tracker.apply(start, start.at_ms + 412)
    assert [e.change for e in first.events] == [UniverseChangeKind.JOINED] * 6
    assert first.subscribe == ()  # the start's streams are the ingest's from the beginning
    assert tracker.next_at_ms == MAY_12 + hour
    assert tracker.due(MAY_12 + hour - 1) is None and tracker.due(MAY_12 + hour + 5) == (
        MAY_12 + hour
    )
    # the refresh at MAY_13 (the grid time, the selection's time): the real day's changes
    update = tracker.apply(later, MAY_13 + 900)
    joined = [e.symbol for e in update.events if e.change is UniverseChangeKind.JOINED]
    left = sorted(e.symbol for e in update.events if e.change is UniverseChangeKind.LEFT)
    assert joined and left and update.subscribe == tuple(joined)
    for e in update.events:
        assert e.event_id == f"universe:{MAY_13}:{e.symbol}" and e.event_time_ms == MAY_13
        assert e.server_time_ms == MAY_13 + 900 and e.universe_size == 6
    leaver = next(e for e in update.events if e.change is UniverseChangeKind.LEFT)
    assert leaver.reason.startswith(f"{leaver.verdict}:")  # type: ignore[union-attr]
    # leavers keep their streams through the wind-down, then are forgotten
    assert set(tracker.streamed) == set(later.symbols) | set(left)
    assert tracker.expired(MAY_13 + 2 * hour - 1) == ()
    assert tracker.expired(MAY_13 + 2 * hour) == tuple(left)
    assert set(tracker.streamed) == set(later.symbols)


def test_a_leaver_joining_again_during_its_wind_down_keeps_its_stream(
    select: Callable[..., UniverseSelection],
) -> None:
    hour = 3_600_000
    rule = UniverseRule(size=6, min_listing_days=0, min_range=0.03)
    start, later = select(rule), select(rule, MAY_13)
    tracker = UniverseTracker(rule, hour, wind_down_ms=2 * hour)
    tracker.apply(start, start.at_ms)
    tracker.apply(later, later.at_ms)
    back = UniverseSelection(MAY_13 + hour, start.symbols, start.candidates)
    update = tracker.apply(back, MAY_13 + hour)
    assert {e.symbol for e in update.events if e.change is UniverseChangeKind.JOINED} == set(
        start.symbols
    ) - set(later.symbols)
    assert update.subscribe == ()  # still streamed: nothing to subscribe
    assert tracker.expired(MAY_13 + 2 * hour) == ()  # its wind-down was called off
    # the others left at MAY_13 + hour; their wind-down runs from then
    assert tracker.expired(MAY_13 + 3 * hour) == tuple(
        sorted(set(later.symbols) - set(start.symbols))
    )


def test_a_restart_resumes_the_membership_an_earlier_run_wrote(
    select: Callable[..., UniverseSelection],
) -> None:
    hour = 3_600_000
    rule = UniverseRule(size=6, min_listing_days=0, min_range=0.03)
    start, later = select(rule), select(rule, MAY_13)
    earlier = UniverseTracker(rule, hour, wind_down_ms=2 * hour)
    written = [*earlier.apply(start, start.at_ms).events, *earlier.apply(later, MAY_13).events]
    # the restart at MAY_13 + 1 h selects the first day's universe again
    again = UniverseSelection(MAY_13 + hour, start.symbols, start.candidates)
    tracker = UniverseTracker(rule, hour, wind_down_ms=2 * hour, start=again)
    tracker.resume(written, MAY_13 + hour)
    assert tracker.current is not None and set(tracker.current.symbols) == set(later.symbols)
    assert tracker.winding_down == earlier.winding_down  # the earlier leavers still wind down
    assert set(tracker.streamed) == set(start.symbols) | set(later.symbols)
    update = tracker.apply(again, MAY_13 + hour)
    assert {(e.symbol, e.change) for e in update.events} == {
        *((s, UniverseChangeKind.JOINED) for s in set(start.symbols) - set(later.symbols)),
        *((s, UniverseChangeKind.LEFT) for s in set(later.symbols) - set(start.symbols)),
    }
    assert update.subscribe == ()  # every one of them is streamed from the start
    # a wind-down that ended before the restart is not resumed
    late = UniverseTracker(rule, hour, wind_down_ms=2 * hour, start=again)
    late.resume(written, MAY_13 + 2 * hour)
    assert late.winding_down == {}


@pytest.mark.parametrize(
    ("info", "ticker"),
    [
        ({"no": "symbols"}, []),
        ({"symbols": [{"contractType": "PERPETUAL"}]}, []),
        ({"symbols": []}, {"symbol": "BTCUSDT"}),
        ({"symbols": []}, [{"symbol": "BTCUSDT", "quoteVolume": "lots"}]),
    ],
)
def test_answers_not_in_binance_shape_are_errors(info: object, ticker: object) -> None:
    with pytest.raises(UniverseDataError):
        selection_of(info, ticker, UniverseRule(size=3))
