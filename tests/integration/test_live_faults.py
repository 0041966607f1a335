"""The live ingest against a local Binance (real recorded klines, real wire format) with faults.

No broker: the ingest's sink is in memory, so these check the connection supervisor, the
backfill and the sequencer end to end; tests/integration/test_live_kafka.py checks the records
on a real Kafka against the file replay.
"""

from __future__ import annotations

import pytest

from streams.adapters.live.universe import UniverseRule
from tests.fakes.binance import FakeBinance, Faults
from tests.fakes.live_support import MINUTE, SYMBOLS, T0, MemorySink, recorded, run_ingest

pytestmark = pytest.mark.slow

#: 1 simulated minute per 100 ms of wall time.
SPEED = 600.0


def expected(data: dict[str, dict[int, list[str]]], until: int, lost: set[tuple[str, int]]) -> list:
    return sorted((t, s) for s in data for t in data[s] if t < until and (s, t) not in lost)


async def test_disconnects_stall_duplicates_reorder_and_gaps_leave_no_gap_and_no_duplicate() -> (
    None
):
    end = T0 + 120 * MINUTE
    data = recorded(SYMBOLS, T0, end)
    m = lambda n: T0 + n * MINUTE  # noqa: E731
    faults = Faults(
        drop_before={m(44), m(58), m(72)}, abort_before={m(51), m(86)}, stall_before={m(79)},
        duplicate={m(47), m(90)}, swap={m(62)}, skip_ws={("ETHUSDT", m(66)), ("XRPUSDT", m(93))},
        garbage_before={m(55)}, rate_limit_requests={2},
    )  # fmt: skip
    # The stream starts 40 minutes after the first kline owed: those come over REST.
    server = await FakeBinance(data, m(40), SPEED, faults).start()
    sink = MemorySink()
    try:
        summary = await run_ingest(server, sink, starts=dict.fromkeys(SYMBOLS, T0), until_ms=m(110))
    finally:
        await server.stop()
    got = [(t.event_time_ms, t.symbol) for t in sink.ticks]
    assert got == expected(data, m(110), set())  # every kline once, in the replay's order
    for tick in sink.ticks:
        o, h, low, c, v = data[tick.symbol][tick.event_time_ms]
        assert (tick.open, tick.high, tick.low, tick.close, tick.volume) == tuple(
            map(float, (o, h, low, c, v))
        )
        assert tick.source == f"binance-ws:{tick.symbol.lower()}@kline_1m"
    assert sink.ended
    sink.check_announcements()
    # The streamed minutes (40 to 110) are announced as they complete, not a bar later; a
    # backfill after a disconnect releases its minutes at once, with one announcement.
    assert len(sink.announced) >= 50
    # every fault fired, and was seen for what it was
    assert not (faults.drop_before | faults.abort_before | faults.stall_before | faults.swap)
    assert not faults.duplicate and not faults.garbage_before
    assert summary.reconnects >= 6  # 5 disconnects + the stall
    assert sum(c.idle_timeouts for c in summary.connections) >= 1
    assert sum(c.rotations for c in summary.connections) >= 1  # rotate_after_s=1.5
    assert summary.sequencer.duplicates > 0 and summary.backfilled >= 40 * len(SYMBOLS)
    assert summary.rest.rate_limited == 1
    assert summary.sequencer.missing_total == 0
    assert summary.dead_letters == 2 and {d.reason for d in sink.dead} == {"unparsable"}


async def test_klines_missing_on_the_exchange_are_counted_not_invented() -> None:
    end = T0 + 30 * MINUTE
    data = recorded(SYMBOLS[:2], T0, end)
    lost = {
        ("BNBUSDT", T0 + 12 * MINUTE),
        ("BTCUSDT", T0 + 12 * MINUTE),
        ("BTCUSDT", T0 + 13 * MINUTE),
    }
    server = await FakeBinance(data, T0 + 5 * MINUTE, SPEED, Faults(missing=set(lost))).start()
    sink = MemorySink()
    try:
        summary = await run_ingest(
            server, sink, symbols=SYMBOLS[:2], starts=dict.fromkeys(SYMBOLS[:2], T0),
            until_ms=T0 + 25 * MINUTE,
        )  # fmt: skip
    finally:
        await server.stop()
    assert [(t.event_time_ms, t.symbol) for t in sink.ticks] == expected(
        data, T0 + 25 * MINUTE, lost
    )
    assert summary.sequencer.missing == {"BNBUSDT": 1, "BTCUSDT": 2}


async def test_pings_are_answered_so_a_quiet_healthy_connection_stays_up() -> None:
    data = recorded(SYMBOLS[:1], T0, T0 + 40 * MINUTE)
    # The server pings every 0.1 s and drops a client that does not answer; 30 minutes take 3 s.
    server = await FakeBinance(data, T0, SPEED, heartbeat_s=0.1).start()
    sink = MemorySink()
    try:
        summary = await run_ingest(
            server, sink, symbols=SYMBOLS[:1], starts={SYMBOLS[0]: T0},
            until_ms=T0 + 30 * MINUTE, rotate_after_s=3600.0, ping_interval_s=60.0,
        )  # fmt: skip
    finally:
        await server.stop()
    assert len(sink.ticks) == 30
    # Each minute is announced complete right after its kline, before the next one arrives:
    # the merges downstream need not wait a bar for the next minute's klines to decide.
    sink.check_announcements()
    after_each = {(t.event_time_ms + MINUTE, i + 1) for i, t in enumerate(sink.ticks)}
    assert after_each <= set(sink.announced)
    assert summary.reconnects == 0 and summary.connections[0].sessions == 1


async def test_the_universe_comes_from_the_exchange_answers_through_a_rate_limit() -> None:
    from streams.adapters.live.run import select_universe_now
    from streams.adapters.live.universe import selection_of
    from streams.vocabulary import UniverseVerdict
    from tests.fakes.binance import exchange_info, ticker_24h
    from tests.fakes.live_support import FUTURES, live_config

    may_12 = 1747008000000
    symbols = tuple(sorted(f.name.removesuffix(".csv.gz") for f in FUTURES.glob("*.csv.gz")))
    data = recorded(symbols, may_12 - 1440 * MINUTE, may_12)
    quarterly = {"symbol": "BTCUSDT_250627", "pair": "BTCUSDT", "contractType": "CURRENT_QUARTER",
                 "deliveryDate": 1750996800000, "onboardDate": 1735286400000,
                 "status": "TRADING", "quoteAsset": "USDT"}  # fmt: skip
    onboard = dict.fromkeys(symbols, may_12 - 60 * 1440 * MINUTE) | {"ADAUSDT": may_12 - 1}
    server = FakeBinance(
        data, may_12, 1.0, Faults(rate_limit_requests={1}), onboard=onboard,
        extra_listings=[quarterly],
    )  # fmt: skip
    await server.start()
    try:
        universe = {"size": 4, "min_listing_days": 30, "min_range": 0.03}
        selection = await select_universe_now(live_config(server, universe=universe))
    finally:
        await server.stop()
    assert server.requests == 3  # exchangeInfo refused once (429, Retry-After 1 s), then both
    expected = selection_of(
        exchange_info(onboard, selection.at_ms, [quarterly]), ticker_24h(data, selection.at_ms),
        UniverseRule(4, 30, 0.03),
    )  # fmt: skip
    assert selection == expected and len(selection.symbols) == 4
    verdicts = {c.symbol: c.verdict for c in selection.candidates}
    assert verdicts["ADAUSDT"] is UniverseVerdict.TOO_NEW
    assert verdicts["BTCUSDT_250627"] is UniverseVerdict.NOT_PERPETUAL


async def test_ready_is_false_while_the_exchange_is_away_and_metrics_match_the_summary() -> None:
    import asyncio

    import aiohttp

    from streams.adapters.live.ingest import LiveIngest
    from streams.adapters.live.rest import binance_client
    from streams.adapters.live.run import rest_client
    from streams.observability.ingest import bound_port, serve_health
    from tests.fakes.live_support import live_config

    data = recorded(SYMBOLS[:2], T0, T0 + 60 * MINUTE)
    m = lambda n: T0 + n * MINUTE  # noqa: E731
    server = await FakeBinance(data, m(5), 60.0, Faults(missing={("BNBUSDT", m(3))})).start()
    cfg = live_config(server, idle_timeout_s=1.0, rotate_after_s=3600.0)
    client = binance_client("futures", cfg.rest_url, cfg.rest_timeout_s)
    ingest = LiveIngest(
        cfg, SYMBOLS[:2], MemorySink(), rest_client(client, cfg),
        starts=dict.fromkeys(SYMBOLS[:2], T0), until_ms=m(16), end_of_stream=True,
    )  # fmt: skip
    health = await serve_health(ingest, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(health)}"
    seen: list[int] = []

    async def poll(http: aiohttp.ClientSession, seconds: float) -> None:
        for _ in range(int(seconds / 0.2)):
            async with http.get(f"{base}/ready") as answer:
                seen.append(answer.status)
            await asyncio.sleep(0.2)

    try:
        async with aiohttp.ClientSession() as http:
            run = asyncio.create_task(ingest.run())
            await poll(http, 2.0)  # streaming
            await server.stop()  # the exchange goes away for 3 s (3 simulated minutes)
            await poll(http, 3.0)
            await server.start(server.port)
            while not run.done():
                await poll(http, 0.2)
            summary = await run
            async with http.get(f"{base}/metrics") as answer:
                exposition = await answer.text()
            async with http.get(f"{base}/health") as answer:
                assert answer.status == 200
    finally:
        await health.cleanup()
        await client.close_connection()
        await server.stop()
    assert seen[9] == 200 and 503 in seen[10:25], seen  # ready, then not while away
    assert seen[-1] == 200, seen  # and ready again once reconnected
    assert summary.sequencer.missing == {"BNBUSDT": 1} and summary.reconnects >= 1
    for line in (
        f'qt_live_ticks_total{{market="futures"}} {float(summary.ticks)}',
        f'qt_live_backfilled_total{{market="futures"}} {float(summary.backfilled)}',
        'qt_live_missing_klines_total{symbol="BNBUSDT"} 1.0',
        f'qt_live_reconnects_total{{connection="futures-0"}} {float(summary.reconnects)}',
        f'qt_live_rest_requests_total{{market="futures"}} {float(summary.rest.requests)}',
    ):
        assert line in exposition, line
    assert 'qt_live_ready{market="futures"} 0.0' in exposition  # the run ended: nothing open
    assert 'qt_live_exchange_lag_seconds{market="futures"}' in exposition
    assert 'qt_live_stream_last_message_timestamp_seconds{stream="btcusdt@kline_1m"}' in exposition
