"""Paper venue + position monitor: every fill, fee and PnL computed by hand.

Common plan (see test_exits): long 210 units at reference 100.00, leverage 21, margin 1 000,
TP 101.00 / 101.60 / 102.20 for 84 / 84 / 42 units, SL 98.50, trailing callback 0.8 %.
Fees: taker 0.04 %, maker 0.02 %; slippage 0 unless stated.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.adapters.venues.interface import (
    Bar,
    ClosedTrade,
    Fill,
    OrderIntent,
    PositionEvent,
    PositionEventKind,
    TradeContext,
)
from streams.adapters.venues.paper import PaperPosition, PaperVenue
from streams.config import ExitPolicy, PaperConfig
from streams.instruments import Instrument
from streams.stages.execution import plan_from_order
from streams.stages.exits import plan_exits
from streams.vocabulary import Side
from tests.unit.stages.factories import approved, decision

M = 60_000
CFG = PaperConfig(slippage_bps=0.0, participation=0.0, latency_ms=0)  # participation 0 = unlimited
CTX = TradeContext(0.75, ("xgboost@3", "lightgbm@2"), "trend_follow", "TREND", "c1/TREND/d0", 2)
DEC = "BTCUSDT:0:decision"


def _intent(side: Side = Side.LONG, placed: int = 0) -> OrderIntent:
    """The common plan as the runtime makes it: planned, then rebuilt from its record."""
    d = decision("BTCUSDT", 0, side, price=100.0)
    d = dataclasses.replace(d, decision_id=DEC, confidence=0.75, atr_pct=0.01)
    instrument = Instrument(0.01, 1.0)
    planned = plan_exits(approved(d, 1_000.0), ExitPolicy(), 30.0, instrument)
    return OrderIntent(plan_from_order(planned, instrument), placed, CTX)


def _bar(i: int, o: float, h: float, low: float, c: float, v: float = 1_000.0) -> Bar:
    return Bar("BTCUSDT", i * M, o, h, low, c, v)


def _run(venue: PaperVenue, bars: list[Bar]) -> list:
    out: list = []
    for b in bars:
        out.extend(venue.on_bar(b))
    return out


def _of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def _closed(events: list) -> ClosedTrade:
    (trade,) = _of(events, ClosedTrade)
    return trade


def test_all_tp_legs_filled_in_one_bar() -> None:
    v = PaperVenue(CFG)
    v.submit(_intent())
    ev = _run(v, [_bar(0, 100.0, 100.5, 99.8, 100.2), _bar(1, 100.2, 102.5, 100.1, 102.4)])
    fills = _of(ev, Fill)
    assert [(f.order_id.rsplit(":", 1)[1], f.price, f.quantity, f.side) for f in fills] == [
        ("entry", 100.0, 210.0, "BUY"),
        ("tp1", 101.0, 84.0, "SELL"),
        ("tp2", 101.6, 84.0, "SELL"),
        ("tp3", 102.2, 42.0, "SELL"),
    ]
    assert fills[0].fill_id == f"{DEC}:entry#1" and fills[1].fill_id == f"{DEC}:tp1#1"
    assert fills[0].time_ms == 0 and fills[1].time_ms == 2 * M  # entry at open, exits at bar end
    t = _closed(ev)
    # gross = 84*1.0 + 84*1.6 + 42*2.2 = 84 + 134.4 + 92.4 = 310.8
    # fees  = 100*210*0.0004 + (101*84 + 101.6*84 + 102.2*42)*0.0002 = 8.4 + 4.26216 = 12.66216
    assert t.gross_pnl == pytest.approx(310.8)
    assert t.fees == pytest.approx(12.66216)
    assert t.net_pnl == pytest.approx(310.8 - 12.66216)
    assert (t.exit_reason, t.quantity, t.margin, t.leverage) == (
        "take_profit",
        210.0,
        pytest.approx(1_000.0),
        21,
    )
    assert (t.opened_ms, t.closed_ms, t.holding_ms) == (0, 2 * M, 2 * M)
    # exit VWAP = (101*84 + 101.6*84 + 102.2*42) / 210 = 21310.8 / 210 = 101.48
    assert t.exit_price == pytest.approx(101.48)
    assert t.context == CTX and t.trade_id == DEC
    assert v.positions["BTCUSDT"] == []


def test_stop_before_take_profit_when_one_bar_touches_both() -> None:
    v = PaperVenue(CFG)
    v.submit(_intent())
    ev = _run(v, [_bar(0, 100.0, 100.5, 99.8, 100.2), _bar(1, 100.0, 101.5, 98.0, 99.0)])
    t = _closed(ev)
    assert [f.order_id.rsplit(":", 1)[1] for f in _of(ev, Fill)] == ["entry", "sl"]
    # gross = (98.5 - 100) * 210 = -315 ; fees = 8.4 + 98.5*210*0.0004 = 8.4 + 8.274
    assert (t.exit_reason, t.exit_price) == ("stop_loss", 98.5)
    assert t.gross_pnl == pytest.approx(-315.0)
    assert t.net_pnl == pytest.approx(-315.0 - 16.674)


def test_gap_through_stop_fills_at_the_open_with_slippage() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=10.0, participation=0.0))
    v.submit(_intent())
    ev = _run(v, [_bar(0, 100.0, 100.5, 99.8, 100.2), _bar(1, 97.0, 97.5, 96.0, 97.2)])
    entry, stop = _of(ev, Fill)
    assert entry.price == pytest.approx(100.1)  # 100 * (1 + 10 bp)
    assert stop.price == pytest.approx(97.0 * 0.999)  # gapped open 97, minus 10 bp
    assert _closed(ev).gross_pnl == pytest.approx((96.903 - 100.1) * 210)


def test_trailing_stop_activates_at_tp1_and_ratchets_only_up() -> None:
    v = PaperVenue(CFG)
    v.submit(_intent())
    bars = [
        _bar(0, 100.0, 100.5, 99.8, 100.2),
        _bar(
            1, 100.2, 101.2, 100.1, 101.0
        ),  # TP1 84 @ 101; trail from 101.2: 101.2*0.992 = 100.3904
        _bar(2, 101.0, 101.5, 100.5, 101.3),  # 100.5 > 100.3904 ; new peak 101.5 -> 100.688
        _bar(3, 101.3, 101.4, 101.0, 101.1),  # no new peak: stop stays 100.688 (never loosens)
        _bar(4, 100.9, 100.95, 100.6, 100.7),  # 100.6 <= 100.688 -> trailing stop 126 @ 100.688
    ]
    ev = []
    stops = []
    for b in bars:
        ev.extend(v.on_bar(b))
        book = v.positions["BTCUSDT"]
        stops.append(book[0].stop_f if book else None)
    assert stops[:4] == [
        98.5,
        pytest.approx(100.3904),
        pytest.approx(100.688),
        pytest.approx(100.688),
    ]
    kinds = [e.kind for e in _of(ev, PositionEvent)]
    assert kinds == [
        PositionEventKind.OPENED,
        PositionEventKind.TP_FILLED,
        PositionEventKind.TRAILING_ACTIVATED,
        PositionEventKind.STOPPED,
    ]
    t = _closed(ev)
    # gross = 84 * 1.0 + 126 * 0.688 = 84 + 86.688 = 170.688
    assert (t.exit_reason, t.gross_pnl) == ("trailing_stop", pytest.approx(170.688))
    assert _of(ev, Fill)[-1].order_id == f"{DEC}:trail"


def test_partial_fills_carry_over_and_reanchor_on_the_average() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=0.0, participation=0.1))
    v.submit(_intent())
    bars = [
        _bar(0, 100.0, 100.2, 99.9, 100.1, v=1_000.0),  # 10 % of 1 000 = 100 units @ 100.0
        _bar(1, 100.5, 100.6, 100.3, 100.5, v=500.0),  # 50 units @ 100.5
        _bar(2, 101.0, 101.1, 100.9, 101.0, v=2_000.0),  # cap 200, 60 remaining @ 101.0
    ]
    ev = _run(v, bars)
    entries = _of(ev, Fill)
    assert [(f.fill_id.rsplit(":", 1)[1], f.quantity, f.price) for f in entries] == [
        ("entry#1", 100.0, 100.0),
        ("entry#2", 50.0, 100.5),
        ("entry#3", 60.0, 101.0),
    ]
    kinds = [e.kind for e in _of(ev, PositionEvent)]
    assert kinds == [
        PositionEventKind.ENTRY_PARTIAL,
        PositionEventKind.ENTRY_PARTIAL,
        PositionEventKind.OPENED,
    ]
    pos = v.positions["BTCUSDT"][0]
    # avg = (10 000 + 5 025 + 6 060) / 210 = 100.40476
    # TP1 = 101.40476 -> 101.40 ; SL = 98.90476 -> 98.90
    assert pos.avg_entry == pytest.approx(21_085 / 210)
    assert (pos.tp_f[0], pos.sl_f, pos.leg_steps) == (101.40, 98.90, [84, 84, 42])


def test_stop_while_entry_is_partially_filled_cancels_the_rest() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=0.0, participation=0.1))
    v.submit(_intent())
    ev = _run(
        v, [_bar(0, 100.0, 100.2, 99.9, 100.1, v=1_000.0), _bar(1, 99.0, 99.1, 98.0, 98.2, v=0.0)]
    )
    t = _closed(ev)
    # 100 units filled @100; bar 1 fills nothing (volume 0) and its low 98.0 hits SL 98.50
    assert (t.quantity, t.exit_reason) == (100.0, "stop_loss")
    assert t.gross_pnl == pytest.approx(-150.0)  # (98.5 - 100) * 100


def test_entry_that_never_fills_closes_as_unfilled() -> None:
    v = PaperVenue(PaperConfig(participation=0.1, max_entry_bars=3))
    v.submit(_intent())
    ev = _run(v, [_bar(i, 100.0, 100.0, 100.0, 100.0, v=0.0) for i in range(3)])
    t = _closed(ev)
    assert (t.quantity, t.net_pnl, t.fees, t.exit_reason) == (0.0, 0.0, 0.0, "unfilled")
    assert not _of(ev, Fill)


def test_latency_skips_bars_before_t_plus_latency() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=0.0, participation=0.0, latency_ms=250))
    v.submit(_intent(placed=0))
    assert not v.on_bar(_bar(0, 100.0, 100.1, 99.9, 100.0))  # opened at 0 < 0 + 250
    (entry,) = _of(list(v.on_bar(_bar(1, 100.3, 100.4, 100.2, 100.3))), Fill)
    assert (entry.price, entry.time_ms) == (100.3, M)


def test_short_side_mirrors_prices_fees_and_slippage() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=1.0, participation=0.0))
    v.submit(_intent(Side.SHORT))
    ev = _run(v, [_bar(0, 100.0, 100.2, 99.9, 100.0), _bar(1, 100.0, 101.6, 99.95, 101.0)])
    entry, stop = _of(ev, Fill)
    assert (entry.side, entry.price) == ("SELL", pytest.approx(99.99))  # sells 1 bp lower
    # SL re-anchored on the actual entry: 99.99 + 1.5 = 101.49 ; bought back 1 bp higher
    assert (stop.side, stop.price) == ("BUY", pytest.approx(101.49 * 1.0001))
    # gross = -(101.500149 - 99.99) * 210 = -317.13129
    assert _closed(ev).gross_pnl == pytest.approx(-317.13129)


def test_submit_is_idempotent_and_state_round_trips() -> None:
    v = PaperVenue(CFG)
    assert len(v.submit(_intent())) == 1
    assert v.submit(_intent()) == ()
    v.on_bar(_bar(0, 100.0, 100.5, 99.8, 100.2))
    pos = v.positions["BTCUSDT"][0]
    assert PaperPosition.from_dict(pos.to_dict()) == pos


def test_trailing_from_entry_when_configured() -> None:
    v = PaperVenue(PaperConfig(slippage_bps=0.0, participation=0.0, trail_after_tp1=False))
    v.submit(_intent())
    ev = _run(v, [_bar(0, 100.0, 100.5, 99.8, 100.2)])
    # active at entry from 100: 100 * 0.992 = 99.2 > SL 98.5; then the bar's high 100.5 -> 99.696
    assert PositionEventKind.TRAILING_ACTIVATED in [e.kind for e in _of(ev, PositionEvent)]
    assert v.positions["BTCUSDT"][0].stop_f == pytest.approx(99.696)


_moves = st.lists(
    st.tuples(st.floats(-0.01, 0.01), st.floats(0, 0.01), st.floats(0, 0.01)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(_moves, st.sampled_from(Side), st.booleans())
def test_stop_never_loosens_and_books_balance(moves, side: Side, trail_first: bool) -> None:
    v = PaperVenue(
        PaperConfig(slippage_bps=2.0, participation=0.0, trail_after_tp1=not trail_first)
    )
    v.submit(_intent(side))
    price, last_stop, events = 100.0, None, []
    for i, (ret, up, down) in enumerate(moves):
        o = price
        c = price * (1 + ret)
        bar = _bar(i, o, max(o, c) * (1 + up), min(o, c) * (1 - down), c)
        events.extend(v.on_bar(bar))
        price = c
        book = v.positions["BTCUSDT"]
        if not book:
            break
        stop = book[0].stop_f
        if last_stop is not None:
            assert stop >= last_stop - 1e-9  # favourable space: only ever tighter
        last_stop = stop
    for t in _of(events, ClosedTrade):
        fills = _of(events, Fill)
        assert sum(f.quantity for f in fills if f.order_id.endswith(":entry")) == t.quantity
        assert sum(f.quantity for f in fills if not f.order_id.endswith(":entry")) == t.quantity
        assert t.net_pnl == pytest.approx(t.gross_pnl - sum(f.fee for f in fills))
