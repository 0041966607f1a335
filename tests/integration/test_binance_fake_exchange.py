"""The Binance venue through the real python-binance client against the local fake exchange.

The fake speaks Binance's REST and user-data websocket wire format and fills orders on REAL
recorded 1-minute klines (data/sample, BTCUSDT and ETHUSDT); every request is signed and checked
with the test secret. Faults are injected on the fake: lost responses after acceptance, slow
answers, 429s, error codes, dropped user streams, expired listenKeys, positions opened behind
the system's back.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from streams.adapters.venues.binance.client_ids import client_order_id
from streams.adapters.venues.binance.errors import VenueConfigError
from streams.adapters.venues.binance.fake_exchange import MAKER_FEE, TAKER_FEE, FakeExchange, serve
from streams.adapters.venues.binance.gateway import BinanceGateway
from streams.adapters.venues.binance.session import VenueSession
from streams.adapters.venues.binance.venue import BinanceVenue, VenueRules
from streams.adapters.venues.interface import (
    ClosedTrade,
    ExitPlan,
    Fill,
    OrderIntent,
    PositionEvent,
    PositionEventKind,
)
from streams.config import BinanceConfig
from streams.ids import order_id
from streams.instruments import INSTRUMENTS, split_ladder
from streams.vocabulary import ReconcileKind, Side

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "sample" / "um_futures_1m_2025"
KEY, SECRET = "test-key-0123456789abcdef", "test-secret-fedcba9876543210"


def klines(symbol: str, n: int = 600) -> list[list[str]]:
    """The first ``n`` real bars of ``symbol``."""
    with gzip.open(DATA / f"{symbol}.csv.gz", "rt") as f:
        rows = list(csv.reader(f))[1 : n + 1]
    return rows


@dataclass
class Rig:
    """A fake exchange with real klines, and a session of the venue against it."""

    fake: FakeExchange
    session: VenueSession
    cfg: BinanceConfig

    async def run_until(self, predicate, bars: int = 500) -> None:
        """Advance the market bar by bar until ``predicate()`` (user-stream events settle)."""
        for _ in range(bars):
            if predicate():
                return
            await self.fake.advance()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)

    async def settle(self, until, timeout: float = 5.0) -> None:
        """Wait (without moving the market) until ``until()``."""
        for _ in range(int(timeout / 0.02)):
            if until():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition not reached")


def config(rest: str, ws: str, **kw) -> BinanceConfig:
    return BinanceConfig(rest_url=rest, user_stream_url=ws, request_timeout_s=1.0, **kw)


@pytest.fixture
async def rig(request) -> AsyncIterator[Rig]:
    opts = getattr(request, "param", {})
    fake = FakeExchange(KEY, SECRET, fee_asset=opts.get("fee_asset", "USDT"))
    for s in ("BTCUSDT", "ETHUSDT", "BNBUSDT"):
        fake.load_klines(s, klines(s))
    async with serve(fake) as (rest, ws):
        cfg = config(rest, ws, **opts.get("cfg", {}))
        venue = BinanceVenue(VenueRules(unknown_position=cfg.unknown_position))
        session = VenueSession(
            venue, BinanceGateway(cfg, SecretStr(KEY), SecretStr(SECRET)), ["BTCUSDT", "ETHUSDT"]
        )
        await session.start()
        await asyncio.sleep(0.2)
        try:
            yield Rig(fake, session, cfg)
        finally:
            await session.stop()


def plan(fake: FakeExchange, symbol: str, side: Side, qty_steps: int, decision: str) -> ExitPlan:
    """A plan like the exit planner's, around the market price: TP 0.2/0.35/0.5 %, SL 0.4 %."""
    inst = INSTRUMENTS[symbol]
    ref = float(fake.price(symbol))
    offsets = tuple(ref * x for x in (0.002, 0.0035, 0.005))
    s = side.sign
    return ExitPlan(
        decision_id=decision,
        symbol=symbol,
        side=side,
        reference_price=ref,
        margin=ref * qty_steps * inst.step_size / 10,
        leverage=10,
        quantity_steps=qty_steps,
        tp_fractions=(0.4, 0.4, 0.2),
        tp_steps=split_ladder(qty_steps, (0.4, 0.4, 0.2)),
        tp_offsets=offsets,
        tp_prices=tuple(ref + s * o for o in offsets),
        sl_offset=ref * 0.004,
        sl_price=ref - s * ref * 0.004,
        trailing_callback=0.003,
        instrument=inst,
    )


def entries(fake: FakeExchange, decision: str) -> list:
    """The fake's orders carrying the client id of ``decision``'s entry."""
    cid = client_order_id(order_id(decision, "entry"))
    return [o for o in fake.orders.values() if o.client_id == cid]


def closed(session: VenueSession) -> list[ClosedTrade]:
    return [e for e in session.published if isinstance(e, ClosedTrade)]


def fills(session: VenueSession) -> list[Fill]:
    return [e for e in session.published if isinstance(e, Fill)]


async def test_a_plan_trades_on_real_klines_with_the_exchanges_fills(rig: Rig) -> None:
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:decision")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    await rig.settle(lambda: any(isinstance(e, Fill) for e in rig.session.published))
    # leverage and margin type were set before the entry; the ladder and the stop followed it
    paths = [(m, path) for m, path, _ in rig.fake.requests]
    assert ("POST", "/fapi/v1/leverage") in paths and ("POST", "/fapi/v1/marginType") in paths
    assert paths.index(("POST", "/fapi/v1/leverage")) < paths.index(("POST", "/fapi/v1/order"))
    await rig.settle(lambda: len([o for o in rig.fake.orders.values() if o.type == "LIMIT"]) == 3)
    stops = [a for a in rig.fake.algos.values() if a.type == "STOP_MARKET"]
    assert len(stops) == 1 and stops[0].close_position
    tps = sorted((o for o in rig.fake.orders.values() if o.type == "LIMIT"), key=lambda o: o.price)
    assert [o.reduce_only for o in tps] == [True] * 3
    assert [str(o.qty) for o in tps] == ["0.008", "0.008", "0.004"]  # 40/40/20 of 0.020
    await rig.run_until(lambda: bool(closed(rig.session)))
    trade = closed(rig.session)[0]
    entry_fill = fills(rig.session)[0]
    # the exchange's own numbers: entry price = the fake's trade price, fees = its commissions
    assert entry_fill.price == float(rig.fake.trades[0]["price"])
    assert trade.fees == pytest.approx(sum(float(t["commission"]) for t in rig.fake.trades))
    assert trade.entry_price == pytest.approx(entry_fill.price)
    assert trade.quantity == pytest.approx(0.02)
    assert trade.exit_reason in ("take_profit", "stop_loss", "trailing_stop")
    exchange_pnl = sum(float(t["realizedPnl"]) for t in rig.fake.trades)
    assert trade.gross_pnl == pytest.approx(exchange_pnl, abs=1e-6)
    # flat on the exchange and nothing of ours left open there
    await rig.settle(lambda: not any(o.status == "NEW" for o in rig.fake.orders.values()))
    await rig.settle(lambda: not any(a.status == "NEW" for a in rig.fake.algos.values()))
    assert rig.fake.positions["BTCUSDT"].amount == 0


async def test_a_lost_response_after_acceptance_places_no_second_order(rig: Rig) -> None:
    rig.fake.lose_responses = 1  # the entry is accepted, the answer never arrives
    p = plan(rig.fake, "ETHUSDT", Side.SHORT, 30, "ETHUSDT:1747785600000:decision")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    assert len(entries(rig.fake, p.decision_id)) == 1
    # and a redelivered intent (a restarted worker's) is a no-op, on the venue and the exchange
    again = await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    assert again == []
    assert len(entries(rig.fake, p.decision_id)) == 1


async def test_a_restart_between_sending_and_recording_finds_the_order(rig: Rig) -> None:
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785660000:decision")
    intent = OrderIntent(p, rig.fake.now_ms)
    await rig.session.submit(intent)
    # a new process with an empty venue (the state was never recorded) gets the same intent
    fresh = BinanceVenue()
    gw = BinanceGateway(rig.cfg, SecretStr(KEY), SecretStr(SECRET))
    other = VenueSession(fresh, gw, ["BTCUSDT"])
    await other.start(stream=False)
    try:
        before = rig.fake.sent_orders
        await other.submit(intent)
        assert rig.fake.sent_orders == before  # looked up, found, not sent again
        kinds = [type(e).__name__ for e in other.journal]
        assert "OrderUpdate" in kinds
    finally:
        await other.stop()


@pytest.mark.parametrize(
    ("code", "reason"),
    [(-2019, "MARGIN_NOT_SUFFICIEN"), (-4164, "MIN_NOTIONAL"), (-1111, "BAD_PRECISION")],
)
async def test_an_exchange_rejection_is_an_unfilled_trade_with_the_code(
    rig: Rig, code: int, reason: str
) -> None:
    rig.fake.fail_next = [code]
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, f"BTCUSDT:1747785600000:d{abs(code)}")
    events = await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    rejected = [
        e for e in events if isinstance(e, PositionEvent) and e.kind is PositionEventKind.REJECTED
    ]
    assert rejected and str(code) in rejected[0].detail and reason in rejected[0].detail
    trade = next(e for e in events if isinstance(e, ClosedTrade))
    assert trade.exit_reason == "unfilled" and trade.quantity == 0
    assert rig.session.venue.positions == {}


async def test_an_order_under_the_filters_is_refused_before_any_request(rig: Rig) -> None:
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 1, "BTCUSDT:1747785600000:tiny")  # 0.001 BTC ~ 106 $
    p = ExitPlan(**{**{f: getattr(p, f) for f in p.__slots__}, "quantity_steps": 0})
    sent = len(rig.fake.requests)
    events = await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    detail = next(
        e.detail
        for e in events
        if isinstance(e, PositionEvent) and e.kind is PositionEventKind.REJECTED
    )
    assert "LOT_SIZE" in detail
    assert not [r for r in rig.fake.requests[sent:] if r[1] == "/fapi/v1/order"]


async def test_a_stop_that_would_trigger_at_once_flattens_the_position(rig: Rig) -> None:
    rig.fake.fail_next_algo = [-2021]  # the price moved through the stop before it was placed
    p = plan(rig.fake, "ETHUSDT", Side.LONG, 30, "ETHUSDT:1747785600000:wt")
    events = await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    await rig.settle(lambda: bool(closed(rig.session)))
    refused = [
        e
        for e in rig.session.published
        if isinstance(e, PositionEvent) and e.kind is PositionEventKind.REJECTED
    ]
    assert refused and "-2021" in refused[0].detail and refused[0].detail.startswith("sl")
    trade = closed(rig.session)[0]
    assert trade.exit_reason == "stop_loss" and trade.quantity == pytest.approx(0.03)
    assert rig.fake.positions["ETHUSDT"].amount == 0  # flattened at market, not left naked
    assert events  # the submit itself reported the acceptance


async def test_a_dropped_user_stream_reconnects_and_misses_no_fill(rig: Rig) -> None:
    p = plan(rig.fake, "BTCUSDT", Side.SHORT, 20, "BTCUSDT:1747785600000:drop")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    await rig.settle(lambda: any(isinstance(e, Fill) for e in rig.session.published))
    connects = rig.session.connects
    await rig.fake.drop_user_streams()
    await rig.fake.advance(30)  # the market moves while nobody listens
    await rig.settle(lambda: rig.session.connects > connects)
    await rig.run_until(lambda: bool(closed(rig.session)))
    ours = sum(f.quantity for f in fills(rig.session) if not f.order_id.endswith(":entry"))
    assert ours == pytest.approx(0.02)  # every exit fill, the missed ones replayed from userTrades
    trade = closed(rig.session)[0]
    assert trade.fees == pytest.approx(sum(float(t["commission"]) for t in rig.fake.trades))


@pytest.mark.parametrize("rig", [{"fee_asset": "BNB"}], indirect=True)
async def test_fees_charged_in_bnb_are_booked_in_usdt(rig: Rig) -> None:
    """With Binance's BNB fee discount the exchange charges BNB; the gateway converts it at the
    BNBUSDT price it reads, on the stream and on the trades replay of a dropped stream."""
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:bnb")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    await rig.settle(lambda: any(isinstance(e, Fill) for e in rig.session.published))
    connects = rig.session.connects
    await rig.fake.drop_user_streams()
    await rig.fake.advance(30)
    await rig.settle(lambda: rig.session.connects > connects)
    await rig.run_until(lambda: bool(closed(rig.session)))
    trades = rig.fake.trades
    assert trades and {t["commissionAsset"] for t in trades} == {"BNB"}
    assert rig.fake.fee_asset_spent == sum(Decimal(t["commission"]) for t in trades)
    # what the fees were worth in USDT: 90 % of the USDT fee (BNB moves little in a few bars)
    worth = sum(
        float(t["price"]) * float(t["qty"]) * float(MAKER_FEE if t["maker"] else TAKER_FEE) * 0.9
        for t in trades
    )
    assert closed(rig.session)[0].fees == pytest.approx(worth, rel=0.01)
    for f in fills(rig.session):  # USDT-sized (maker or taker), not BNB-sized (~1/650 of it)
        assert f.fee == pytest.approx(f.price * f.quantity * 0.0003 * 0.9, rel=0.4)
    assert [r for r in rig.fake.requests if r[1] == "/fapi/v2/ticker/price"]


@pytest.mark.parametrize("rig", [{"fee_asset": "BNB"}], indirect=True)
async def test_a_fee_asset_without_a_price_counts_zero_and_the_stream_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[object] = []

    async def unreachable(**params: object) -> None:
        asked.append(params)
        raise aiohttp.ClientConnectionError("ticker unreachable")

    client = rig.session.gateway.client
    assert client is not None
    client.futures_symbol_ticker = unreachable  # type: ignore[method-assign]
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:noprice")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    # the entry's trade waits for the read's retries (about 6 s); later ones do not ask again
    await rig.settle(lambda: any(isinstance(e, Fill) for e in rig.session.published), 30)
    await rig.run_until(lambda: bool(closed(rig.session)))
    trade = closed(rig.session)[0]
    assert trade.quantity == pytest.approx(0.02) and trade.fees == 0.0
    assert "no USDT price for a commission in BNB" in caplog.text
    assert len(rig.fake.trades) > 1  # and one failed read (with its retries) served them all
    assert len(asked) == rig.cfg.max_retries + 1


async def test_an_expired_listen_key_is_recreated(rig: Rig) -> None:
    first = rig.session.gateway.listen_key
    await rig.fake.expire_listen_keys()
    await rig.settle(lambda: rig.session.gateway.listen_key not in (None, first))
    await rig.settle(lambda: rig.session.connects >= 2)


@pytest.mark.parametrize("rig", [{"cfg": {"unknown_position": "flatten"}}], indirect=True)
async def test_a_position_behind_our_back_is_flattened(rig: Rig) -> None:
    rig.fake.open_position("ETHUSDT", -0.5)
    found = await rig.session.reconcile()
    assert [f.kind for f in found] == [ReconcileKind.UNKNOWN_POSITION_FLATTENED]
    assert rig.fake.positions["ETHUSDT"].amount == 0


@pytest.mark.parametrize("rig", [{"cfg": {"unknown_position": "adopt"}}], indirect=True)
async def test_a_position_behind_our_back_is_adopted_and_protected(rig: Rig) -> None:
    rig.fake.open_position("ETHUSDT", 0.5)
    found = await rig.session.reconcile()
    assert [f.kind for f in found] == [ReconcileKind.UNKNOWN_POSITION_ADOPTED]
    stops = [a for a in rig.fake.algos.values() if a.symbol == "ETHUSDT" and a.status == "NEW"]
    assert len(stops) == 1 and stops[0].type == "STOP_MARKET"
    assert float(stops[0].trigger) < float(rig.fake.positions["ETHUSDT"].entry)
    assert await rig.session.reconcile() == []  # adopted: nothing differs any more


async def test_429_backs_off_and_the_order_goes_through_once(rig: Rig) -> None:
    rig.fake.throttle_next = 1
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:throttled")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    assert len(entries(rig.fake, p.decision_id)) == 1
    assert [r for r in rig.fake.requests if r[1] == "/fapi/v1/order"]  # ... after the 429


async def test_a_slow_answer_is_looked_up_not_resent(rig: Rig) -> None:
    rig.fake.slow_responses, rig.fake.slow_s = 1, 1.5  # over the 1 s client timeout
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:slow")
    # the slow one is the first request of the submit (the lookup): it times out, is repeated
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    assert len(entries(rig.fake, p.decision_id)) == 1


async def test_a_wrong_key_says_so_at_start() -> None:
    fake = FakeExchange(KEY, SECRET)
    async with serve(fake) as (rest, ws):
        gw = BinanceGateway(config(rest, ws), SecretStr("another-key"), SecretStr(SECRET))
        with pytest.raises(VenueConfigError, match="-2015"):
            await gw.start()
        gw = BinanceGateway(config(rest, ws), SecretStr(KEY), SecretStr("wrong-secret"))
        with pytest.raises(VenueConfigError, match="QT_BINANCE_API_SECRET"):
            await gw.start()


async def test_no_key_or_secret_reaches_a_log(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig.fake.fail_next = [-2019]
    p = plan(rig.fake, "BTCUSDT", Side.LONG, 20, "BTCUSDT:1747785600000:logs")
    await rig.session.submit(OrderIntent(p, rig.fake.now_ms))
    await rig.fake.drop_user_streams()
    await asyncio.sleep(1.0)
    text = caplog.text + repr(rig.session.journal) + repr(rig.session.published)
    assert "refused" in caplog.text  # the rejection was logged ...
    assert KEY not in text and SECRET not in text  # ... without the key or the secret
