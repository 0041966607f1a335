"""The pure parts of the Binance venue: rounding to exchange filters, client ids, error actions,
the rate limiter, the reconciliation diff and the venue state machine (no I/O)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.adapters.venues.binance.client_ids import client_order_id, is_valid_client_id
from streams.adapters.venues.binance.errors import ErrorAction, action_for
from streams.adapters.venues.binance.filters import (
    FilterRejection,
    SymbolFilters,
    filters_by_symbol,
    round_order,
    wire,
)
from streams.adapters.venues.binance.limiter import Caps, RateLimiter, retry_after_s
from streams.adapters.venues.binance.messages import (
    AlgoUpdate,
    CancelOrder,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    SymbolSnapshot,
    message_from_dict,
    parse_user_event,
)
from streams.adapters.venues.binance.reconcile import VenueView, diff_symbol
from streams.adapters.venues.binance.venue import BinanceVenue
from streams.adapters.venues.interface import (
    ClosedTrade,
    ExitPlan,
    Fill,
    OrderIntent,
    PositionEvent,
    PositionEventKind,
)
from streams.config import BinanceConfig, Settings
from streams.ids import order_id
from streams.instruments import INSTRUMENTS, split_ladder
from streams.vocabulary import ReconcileKind, Side

BTC_INFO = {
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "261.10",
                    "maxPrice": "809484",
                    "tickSize": "0.10",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.001",
                    "maxQty": "1000",
                    "stepSize": "0.001",
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.001",
                    "maxQty": "120",
                    "stepSize": "0.001",
                },
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
        },
        {"symbol": "OLDUSDT", "status": "SETTLING", "filters": []},
    ]
}


@pytest.fixture
def btc() -> SymbolFilters:
    return filters_by_symbol(BTC_INFO)["BTCUSDT"]


# -- filters ----------------------------------------------------------------------------------
def test_only_trading_symbols_are_listed() -> None:
    assert set(filters_by_symbol(BTC_INFO)) == {"BTCUSDT"}


def test_quantity_rounds_down_and_price_to_the_tick(btc: SymbolFilters) -> None:
    r = round_order(btc, quantity=0.0209999, price=106800.04999)
    assert (r.quantity, r.price) == ("0.02", "106800")
    r = round_order(btc, quantity=0.1 + 0.2, price=0.1 + 106800.2)  # float noise never on the wire
    assert (r.quantity, r.price) == ("0.3", "106800.3")


def test_a_quantity_under_min_qty_is_refused_with_the_filter(btc: SymbolFilters) -> None:
    with pytest.raises(FilterRejection, match=r"LOT_SIZE.*minQty 0\.001"):
        round_order(btc, quantity=0.0009, price=100_000.0)
    with pytest.raises(FilterRejection, match=r"MARKET_LOT_SIZE.*maxQty 120"):
        round_order(btc, quantity=500.0, market=True)


def test_min_notional_applies_to_opening_orders_only(btc: SymbolFilters) -> None:
    with pytest.raises(FilterRejection, match="MIN_NOTIONAL"):
        round_order(btc, quantity=0.0009 + 0.0001, market=True, reference_price=99_000.0)
    r = round_order(btc, quantity=0.001, price=99_000.0, reduce_only=True)
    assert r.quantity == "0.001"


def test_prices_outside_the_price_filter_are_refused(btc: SymbolFilters) -> None:
    with pytest.raises(FilterRejection, match="minPrice"):
        round_order(btc, quantity=0.01, trigger_price=100.0, reduce_only=True)


def test_wire_strings_have_no_exponent() -> None:
    assert wire(Decimal("1E-5")) == "0.00001"
    assert wire(Decimal("1.2300E+3")) == "1230"


# -- client ids -------------------------------------------------------------------------------
def test_our_order_ids_become_readable_form_safe_client_ids() -> None:
    cid = client_order_id(order_id("BTCUSDT:1747785600000:decision", "entry"))
    assert cid == "BTCUSDT.1747785600000.decision.entry"
    assert is_valid_client_id(cid)


@given(st.text(min_size=1, max_size=80))
def test_every_client_id_is_valid_form_safe_and_deterministic(oid: str) -> None:
    cid = client_order_id(oid)
    assert is_valid_client_id(cid)
    assert cid == client_order_id(oid)
    assert ":" not in cid and "/" not in cid  # percent-encoded in a form body


def test_long_ids_stay_distinct() -> None:
    a = client_order_id(order_id("1000PEPEUSDT:1747785600000:decision", "trail12"))
    b = client_order_id(order_id("1000PEPEUSDT:1747785660000:decision", "trail12"))
    assert a != b and len(a) <= 36 and a.endswith(".trail12")


# -- errors and limits ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status", "action"),
    [
        (-2019, 400, ErrorAction.REJECT),
        (-4164, 400, ErrorAction.REJECT),
        (-1111, 400, ErrorAction.REJECT),
        (-2021, 400, ErrorAction.REJECT),
        (-2011, 400, ErrorAction.IGNORE),
        (-1007, 408, ErrorAction.LOOKUP),
        (-4116, 400, ErrorAction.EXISTS),
        (-1021, 400, ErrorAction.RETRY),
        (-2008, 401, ErrorAction.FATAL),
        (0, 503, ErrorAction.LOOKUP),
        (0, 429, ErrorAction.RETRY),
    ],
)
def test_error_codes_map_to_actions(code: int, status: int, action: ErrorAction) -> None:
    assert action_for(code, status) is action


def test_the_limiter_waits_below_the_caps_and_trusts_the_exchanges_count() -> None:
    now = [0.0]
    lim = RateLimiter(Caps(orders_10s=3, orders_1m=100, weight_1m=1000), lambda: now[0])
    for _ in range(3):
        assert lim.delay(1, order=True) == 0.0
        lim.sent(1, order=True)
        now[0] += 1.0
    assert lim.delay(1, order=True) == pytest.approx(7.0)  # the first order leaves at t=10
    assert lim.delay(1, order=False) == 0.0  # a query is not an order
    lim.observe({"X-MBX-USED-WEIGHT-1M": "1000"})  # other clients of the key used it all
    assert lim.delay(1, order=False) > 0
    now[0] += 61
    assert lim.delay(1, order=True) == 0.0
    lim.pause(retry_after_s({"Retry-After": "5"}, 1.0))
    assert lim.delay(1, order=False) == pytest.approx(5.0)


def test_the_weight_share_counts_ours_or_the_exchanges() -> None:
    now = [0.0]
    lim = RateLimiter(Caps(weight_1m=1000), lambda: now[0])
    lim.sent(300, order=False)
    assert lim.weight_share() == pytest.approx(0.3)
    lim.observe({"x-mbx-used-weight-1m": "800"})
    assert lim.weight_share() == pytest.approx(0.8)
    now[0] += 61
    assert lim.weight_share() == 0.0


# -- reconciliation ---------------------------------------------------------------------------
def snap(amount: float, orders=(), algos=(), t: int = 1) -> SymbolSnapshot:
    return SymbolSnapshot("ETHUSDT", amount, 2500.0, 2510.0, tuple(orders), tuple(algos), t)


@pytest.mark.parametrize(
    ("view", "snapshot", "policy", "kinds"),
    [
        (
            VenueView("ETHUSDT", 0, (), ()),
            snap(0.5),
            "flatten",
            [ReconcileKind.UNKNOWN_POSITION_FLATTENED],
        ),
        (
            VenueView("ETHUSDT", 0, (), ()),
            snap(-0.5),
            "adopt",
            [ReconcileKind.UNKNOWN_POSITION_ADOPTED],
        ),
        (
            VenueView("ETHUSDT", 0.3, ("tp1",), ("sl",)),
            snap(0, ("tp1",), ("sl",)),
            "flatten",
            [ReconcileKind.POSITION_GONE],
        ),
        (
            VenueView("ETHUSDT", 0.3, ("tp1",), ("sl",)),
            snap(0.4, ("tp1",), ("sl",)),
            "flatten",
            [ReconcileKind.QUANTITY_MISMATCH],
        ),
        (
            VenueView("ETHUSDT", 0.3, ("tp1",), ("sl",)),
            snap(0.3, ("tp1",)),
            "flatten",
            [ReconcileKind.ORDER_MISSING],
        ),
        (
            VenueView("ETHUSDT", 0, (), ()),
            snap(0, ("stray",)),
            "flatten",
            [ReconcileKind.UNKNOWN_ORDER_CANCELLED],
        ),
        (VenueView("ETHUSDT", 0, (), (), pending=("new",)), snap(0, ("new",)), "flatten", []),
        (VenueView("ETHUSDT", 0.3, ("tp1",), ("sl",)), snap(0.3, ("tp1",), ("sl",)), "flatten", []),
    ],
)
def test_the_diff_names_every_difference(view, snapshot, policy, kinds) -> None:
    assert [f.kind for f in diff_symbol(view, snapshot, policy)] == kinds


# -- messages ---------------------------------------------------------------------------------
def test_messages_round_trip_through_plain_dicts() -> None:
    for m in (
        PlaceOrder("c1", "BTCUSDT", "BUY", "MARKET", 0.02, leverage=10),
        CancelOrder("c1", "BTCUSDT", True),
        OrderUpdate("c1", 7, "BTCUSDT", "BUY", "MARKET", "FILLED", "TRADE", 5, last_qty=0.02),
        snap(0.5, ("a",), ("b",)),
    ):
        assert message_from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_user_stream_messages_parse_in_binances_format() -> None:
    msg = {
        "e": "ORDER_TRADE_UPDATE",
        "E": 1,
        "T": 2,
        "o": {
            "s": "BTCUSDT",
            "c": "x.entry",
            "S": "BUY",
            "o": "MARKET",
            "X": "FILLED",
            "x": "TRADE",
            "i": 9,
            "l": "0.020",
            "L": "106800.1",
            "z": "0.020",
            "ap": "106800.1",
            "n": "0.8544",
            "N": "USDT",
            "T": 3,
            "t": 44,
            "m": False,
            "R": False,
            "ot": "MARKET",
            "rp": "0",
        },
    }
    (ev,) = parse_user_event(msg)
    assert isinstance(ev, OrderUpdate)
    assert (ev.last_price, ev.last_qty, ev.commission, ev.time_ms) == (106800.1, 0.02, 0.8544, 3)
    assert parse_user_event({"e": "MARGIN_CALL"}) == []


# -- settings ---------------------------------------------------------------------------------
def test_mainnet_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="real-money trading is not offered"):
        Settings(mode="mainnet")
    with pytest.raises(ValueError, match="real-money API"):
        BinanceConfig(rest_url="https://fapi.binance.com/fapi")


# -- the state machine ------------------------------------------------------------------------
def eth_plan(decision: str = "ETHUSDT:1000:decision", steps: int = 100) -> ExitPlan:
    inst = INSTRUMENTS["ETHUSDT"]
    offs = (10.0, 16.0, 22.0)
    return ExitPlan(
        decision,
        "ETHUSDT",
        Side.LONG,
        2500.0,
        25.0,
        10,
        steps,
        (0.4, 0.4, 0.2),
        split_ladder(steps, (0.4, 0.4, 0.2)),
        offs,
        tuple(2500 + o for o in offs),
        15.0,
        2485.0,
        0.008,
        inst,
    )


class Script:
    """Exchange events for a venue, with ids like the exchange's."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.venue, self.trade = venue, 0

    def trade_of(
        self, cmd: PlaceOrder, qty: float, price: float, status: str, t: int
    ) -> OrderUpdate:
        self.trade += 1
        return OrderUpdate(
            cmd.client_id,
            100 + self.trade,
            cmd.symbol,
            cmd.side,
            cmd.order_type,
            status,
            "TRADE",
            t,
            last_qty=qty,
            last_price=price,
            commission=price * qty * 0.0004,
            trade_id=self.trade,
        )


def by_leg(cmds) -> dict[str, PlaceOrder]:
    return {c.client_id.rsplit(".", 1)[-1]: c for c in cmds if isinstance(c, PlaceOrder)}


def test_the_plan_becomes_orders_and_the_exchanges_fills_become_a_trade() -> None:
    v = BinanceVenue()
    s = Script(v)
    assert [e.kind for e in v.submit(OrderIntent(eth_plan(), 1000))] == [PositionEventKind.ACCEPTED]
    (entry,) = v.take_commands()
    assert (entry.order_type, entry.quantity, entry.leverage) == ("MARKET", pytest.approx(0.1), 10)
    # a REST answer saying FILLED before the stream's fills does not complete the entry
    query = OrderUpdate(
        entry.client_id, 1, "ETHUSDT", "BUY", "MARKET", "FILLED", "QUERY", 1001, cum_qty=0.1
    )
    assert v.on_exchange_event(query) == [] and not v.take_commands()
    out = v.on_exchange_event(s.trade_of(entry, 0.04, 2501.0, "PARTIALLY_FILLED", 1002))
    out += v.on_exchange_event(s.trade_of(entry, 0.06, 2502.0, "FILLED", 1003))
    assert [type(e).__name__ for e in out] == ["Fill", "PositionEvent", "Fill", "PositionEvent"]
    assert out[-1].kind is PositionEventKind.OPENED and out[-1].price == pytest.approx(2501.6)
    legs = by_leg(v.take_commands())
    assert sorted(legs) == ["sl", "tp1", "tp2", "tp3"]
    assert [legs[k].quantity for k in ("tp1", "tp2", "tp3")] == pytest.approx([0.04, 0.04, 0.02])
    assert legs["tp1"].price == pytest.approx(2511.6) and legs["tp1"].reduce_only
    assert legs["sl"].order_type == "STOP_MARKET" and legs["sl"].close_position
    assert legs["sl"].trigger_price == pytest.approx(2486.6)
    # TP1 fills: the trailing stop goes on for what is open
    out = v.on_exchange_event(s.trade_of(legs["tp1"], 0.04, 2511.6, "FILLED", 2000))
    assert [e.kind for e in out if isinstance(e, PositionEvent)] == [
        PositionEventKind.TP_FILLED,
        PositionEventKind.TRAILING_ACTIVATED,
    ]
    (trail,) = v.take_commands()
    assert (trail.order_type, trail.quantity, trail.callback_rate_pct) == (
        "TRAILING_STOP_MARKET",
        pytest.approx(0.06),
        0.8,
    )
    # TP2 fills: the trailing stop is cancel-replaced with the smaller quantity
    v.on_exchange_event(s.trade_of(legs["tp2"], 0.04, 2517.6, "FILLED", 3000))
    cancel, trail2 = v.take_commands()
    assert isinstance(cancel, CancelOrder) and cancel.client_id == trail.client_id
    assert trail2.client_id.endswith(".trail2") and trail2.quantity == pytest.approx(0.02)
    # the trailing stop triggers: a new matching-engine order, known through ALGO_UPDATE's "ai"
    v.on_exchange_event(AlgoUpdate(trail2.client_id, 55, "ETHUSDT", "TRIGGERED", 4000, "9001"))
    fill = OrderUpdate(
        "autoalgo_55",
        9001,
        "ETHUSDT",
        "SELL",
        "TRAILING_STOP_MARKET",
        "FILLED",
        "TRADE",
        4000,
        last_qty=0.02,
        last_price=2515.0,
        commission=0.02,
        trade_id=99,
    )
    out = v.on_exchange_event(fill)
    trade = out[-1]
    assert isinstance(trade, ClosedTrade) and trade.exit_reason == "trailing_stop"
    assert trade.quantity == pytest.approx(0.1)
    exits = 0.04 * 2511.6 + 0.04 * 2517.6 + 0.02 * 2515.0
    assert trade.gross_pnl == pytest.approx(exits - 0.1 * 2501.6)
    fees = sum(f.fee for f in out if isinstance(f, Fill))
    assert trade.fees > fees  # every fill's commission, the entry's too
    # every remaining leg is cancelled; the position is gone from the state
    cancels = v.take_commands()
    assert {c.client_id.rsplit(".", 1)[-1] for c in cancels} == {"tp3", "sl"}
    assert all(isinstance(c, CancelOrder) for c in cancels) and v.positions == {}


def test_a_redelivered_fill_is_booked_once() -> None:
    v = BinanceVenue()
    s = Script(v)
    v.submit(OrderIntent(eth_plan(), 1000))
    (entry,) = v.take_commands()
    ev = s.trade_of(entry, 0.1, 2500.0, "FILLED", 1001)
    assert len(v.on_exchange_event(ev)) == 2
    assert v.on_exchange_event(ev) == []


def test_state_round_trips_and_the_copy_continues_identically() -> None:
    v = BinanceVenue()
    s = Script(v)
    v.submit(OrderIntent(eth_plan(), 1000))
    (entry,) = v.take_commands()
    v.on_exchange_event(s.trade_of(entry, 0.1, 2500.0, "FILLED", 1001))
    data = json.loads(json.dumps(v.to_dict()))  # plain JSON: a table value
    twin = BinanceVenue.from_dict(data)
    assert json.loads(json.dumps(twin.to_dict())) == data
    legs = by_leg(v.take_commands())
    assert by_leg(twin.take_commands()) == legs  # the outbox travelled with the state
    ev = s.trade_of(legs["sl"], 0.1, 2485.0, "FILLED", 2000)
    a, b = v.on_exchange_event(ev), twin.on_exchange_event(ev)
    assert a == b and isinstance(a[-1], ClosedTrade) and a[-1].exit_reason == "stop_loss"
    assert v.to_dict() == twin.to_dict()


def test_a_second_decision_on_a_busy_symbol_is_refused_and_released() -> None:
    v = BinanceVenue()
    v.submit(OrderIntent(eth_plan(), 1000))
    v.take_commands()
    out = v.submit(OrderIntent(eth_plan("ETHUSDT:2000:decision"), 2000))
    assert [type(e).__name__ for e in out] == ["PositionEvent", "PositionEvent", "ClosedTrade"]
    assert out[1].kind is PositionEventKind.REJECTED and out[2].quantity == 0
    assert v.take_commands() == []


def test_a_rejected_entry_is_an_unfilled_trade() -> None:
    v = BinanceVenue()
    v.submit(OrderIntent(eth_plan(), 1000))
    (entry,) = v.take_commands()
    out = v.on_exchange_event(
        OrderRejected(entry.client_id, "ETHUSDT", -2019, "-2019: Margin is insufficient.", 1001)
    )
    assert "-2019" in out[0].detail and isinstance(out[-1], ClosedTrade)
    assert out[-1].exit_reason == "unfilled" and v.positions == {}


def test_reconciliation_closes_a_position_gone_behind_our_back() -> None:
    v = BinanceVenue()
    s = Script(v)
    v.submit(OrderIntent(eth_plan(), 1000))
    (entry,) = v.take_commands()
    v.on_exchange_event(s.trade_of(entry, 0.1, 2500.0, "FILLED", 1001))
    legs = by_leg(v.take_commands())
    for name, c in legs.items():
        if c.conditional:
            v.on_exchange_event(AlgoUpdate(c.client_id, 1, "ETHUSDT", "NEW", 1002))
        else:
            v.on_exchange_event(
                OrderUpdate(c.client_id, 1, "ETHUSDT", c.side, "LIMIT", "NEW", "NEW", 1002)
            )
        assert name
    out: list = []
    found = v.reconcile(SymbolSnapshot("ETHUSDT", 0.0, 0.0, 2490.0, (), (), 5000), out)
    assert found[0].kind == ReconcileKind.POSITION_GONE
    assert isinstance(out[-1], ClosedTrade) and out[-1].exit_price == pytest.approx(2490.0)
    assert all(isinstance(c, CancelOrder) for c in v.take_commands())
