"""Stage processors on hand-made records: each rule the topology relies on, one test each."""

from __future__ import annotations

import dataclasses

import pytest

from streams.config import ExitPolicy, PaperConfig, RiskLimits, SupervisorPolicy
from streams.contracts.records import (
    Action,
    ExitReason,
    FillExecuted,
    HistoryBar,
    LegKind,
    OrderApproved,
    OrderRejected,
    RiskRule,
    TickReceived,
    TradeClosed,
    VetoRule,
)
from streams.stages import (
    ExecutionStage,
    ExitPlannerStage,
    FeaturesStage,
    RiskStage,
    StrategyStage,
    SupervisorStage,
    partition_for,
)
from streams.stages.execution import plan_from_order
from tests.unit.stages.factories import (
    MODELS,
    T0,
    decision,
    kline,
    scored,
    trade_closed,
)

MIN = 60_000


# ----------------------------------------------------------------------------- supervisor


def test_hold_stops_at_the_supervisor() -> None:
    stage = SupervisorStage(SupervisorPolicy(), MODELS)
    state = stage.new_state()
    assert stage.on_signal(state, scored(probs=(0.2, 0.6, 0.2))) is None
    assert state.overall_window().size == 0  # HOLD is not model bias


def test_low_confidence_is_vetoed_visibly_and_never_becomes_a_decision() -> None:
    sup = SupervisorStage(SupervisorPolicy(gate="confidence", min_confidence=0.65), MODELS)
    out = sup.on_signal(sup.new_state(), scored(probs=(0.2, 0.2, 0.6)))
    assert out is not None and out.vetoed and out.final_action is Action.HOLD
    assert [v.rule for v in out.veto_reasons] == [VetoRule.LOW_CONFIDENCE]
    strategy = StrategyStage(RiskLimits(), seed=7)
    assert strategy.on_signal(strategy.new_state(), out) is None


def test_model_disagreement_vetoes_a_two_against_two_split() -> None:
    sup = SupervisorStage(SupervisorPolicy(), MODELS)
    split = ((0.05, 0.05, 0.9), (0.8, 0.1, 0.1))  # ensemble BUY 0.5 vs one model SELL
    out = sup.on_signal(sup.new_state(), scored(probs=(0.425, 0.075, 0.5), model_probs=split))
    assert out is not None
    assert VetoRule.MODEL_DISAGREEMENT in {v.rule for v in out.veto_reasons}


def test_partition_is_kafkas_murmur2() -> None:
    # Values of the Java client's default partitioner (murmur2, positive, modulo), as asserted
    # for the replay producer in tests/integration/test_replay.py.
    assert [partition_for(s, 4) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT")] == [2, 1, 0]
    assert {partition_for(s, 1) for s in ("BTCUSDT", "ETHUSDT")} == {0}


# ----------------------------------------------------------------------------- risk


def test_decision_is_rejected_at_max_positions_and_released_by_the_trade() -> None:
    stage = RiskStage(RiskLimits(max_concurrent_positions=1, max_symbol_concentration=1.0))
    state = stage.new_state(T0)
    first = stage.on_decision(state, decision("ETHUSDT"))
    assert isinstance(first, OrderApproved)
    assert first.approved_margin_usd == pytest.approx(1000.0)  # 10 % of 10 000
    second = stage.on_decision(state, decision("BTCUSDT", price=106_000.0))
    assert isinstance(second, OrderRejected)
    assert second.rule is RiskRule.MAX_CONCURRENT_POSITIONS
    assert second.detail == "1 positions open"
    closed = trade_closed(first.decision_id, net_pnl=-100.0, t=T0 + 5 * MIN)
    assert stage.on_trade_closed(state, closed)
    assert not stage.on_trade_closed(state, closed)  # redelivery books nothing twice
    assert state.portfolio.equity == pytest.approx(9_900.0)
    third = stage.on_decision(state, decision("BTCUSDT", t=T0 + 6 * MIN, price=106_000.0))
    assert isinstance(third, OrderApproved)
    assert third.approved_margin_usd == pytest.approx(990.0)  # re-based on realised equity


def test_repeated_decision_is_rejected_as_duplicate() -> None:
    stage = RiskStage(RiskLimits())
    state = stage.new_state(T0)
    assert isinstance(stage.on_decision(state, decision()), OrderApproved)
    again = stage.on_decision(state, decision())
    assert isinstance(again, OrderRejected) and again.rule is RiskRule.DUPLICATE_DECISION
    assert len(state.portfolio.positions) == 1


# ----------------------------------------------------------------------------- exits + execution


def _approved() -> OrderApproved:
    stage = RiskStage(RiskLimits())
    out = stage.on_decision(stage.new_state(T0), decision())
    assert isinstance(out, OrderApproved)
    return out


def test_approved_order_becomes_a_40_40_20_ladder_with_stop_and_trailing() -> None:
    planned = ExitPlannerStage(ExitPolicy(), RiskLimits()).on_approved(_approved())
    kinds = [leg.kind for leg in planned.legs]
    assert kinds == [LegKind.TP, LegKind.TP, LegKind.TP, LegKind.SL, LegKind.TRAIL]
    assert [leg.fraction for leg in planned.legs[:3]] == [0.4, 0.4, 0.2]
    tps = [leg.price for leg in planned.legs[:3]]
    assert tps == sorted(tps) and all(p is not None and p > 2500.0 for p in tps)  # long
    assert planned.legs[3].price is not None and planned.legs[3].price < 2500.0
    # ETHUSDT grid: 0.001 step. 1000 USDT x leverage / 2500 in whole steps.
    steps = planned.qty / 0.001
    assert steps == pytest.approx(round(steps))
    assert planned.qty * 2500.0 / planned.leverage <= 1000.0 + 1e-9
    plan = plan_from_order(planned, ExitPlannerStage(ExitPolicy(), RiskLimits()).instrument(
        "ETHUSDT", 2500.0))  # fmt: skip
    assert sum(plan.tp_steps) == plan.quantity_steps


def test_execution_fills_after_the_decision_bar_and_closes_with_the_decisions_context() -> None:
    planned = ExitPlannerStage(ExitPolicy(), RiskLimits()).on_approved(_approved())
    ex = ExecutionStage(PaperConfig(participation=1.0))
    state = ex.new_state()
    assert ex.on_order(state, planned) == []
    assert ex.on_order(state, planned) == []  # idempotent: one position per decision
    # The decision bar itself (open time T0) must not fill the order placed at its close.
    assert ex.on_tick(state, kline("ETHUSDT", T0, 2500, 2501, 2499, 2500)) == []
    entry = ex.on_tick(state, kline("ETHUSDT", T0 + MIN, 2500, 2501, 2499.5, 2500.5))
    fills = [r for r in entry if isinstance(r, FillExecuted)]
    assert [f.leg_kind for f in fills] == [LegKind.ENTRY] and fills[0].event_time_ms == T0 + MIN
    sl = planned.legs[3].price
    assert sl is not None
    out = ex.on_tick(state, kline("ETHUSDT", T0 + 2 * MIN, 2500, 2500.5, sl - 1.0, sl - 0.5))
    trades = [r for r in out if isinstance(r, TradeClosed)]
    assert len(trades) == 1
    trade = trades[0]
    assert trade.exit_reason is ExitReason.STOP_LOSS and trade.net_pnl < 0
    assert trade.model_versions == MODELS and trade.strategy == "trend_follow"
    assert trade.opened_ms == T0 + MIN and trade.event_time_ms == T0 + 3 * MIN
    assert state.orders == {} and state.venue.positions["ETHUSDT"] == []


def test_testnet_execution_maps_the_exchanges_events_to_the_same_records() -> None:
    from streams.adapters.venues.binance.messages import AlgoUpdate, OrderUpdate, PlaceOrder

    planned = ExitPlannerStage(ExitPolicy(), RiskLimits()).on_approved(_approved())
    ex = ExecutionStage(venue="testnet")
    state = ex.new_state()
    assert ex.on_order(state, planned) == []
    assert ex.on_tick(state, kline("ETHUSDT", T0 + MIN, 2500, 2501, 2499.5, 2500.5)) == []
    (entry,) = ex.take_commands(state)
    assert isinstance(entry, PlaceOrder) and entry.quantity == pytest.approx(planned.qty)

    def trade(cmd: PlaceOrder, price: float, t: int, n: int) -> OrderUpdate:
        qty = cmd.quantity or planned.qty
        return OrderUpdate(
            cmd.client_id,
            n,
            "ETHUSDT",
            cmd.side,
            cmd.order_type,
            "FILLED",
            "TRADE",
            t,
            last_qty=qty,
            last_price=price,
            cum_qty=qty,
            commission=price * qty * 0.0004,
            trade_id=n,
        )

    out = ex.on_venue_event(state, trade(entry, 2500.7, T0 + MIN + 150, 1))
    fill = next(r for r in out if isinstance(r, FillExecuted))
    assert (fill.venue, fill.price, fill.slippage_bps, fill.leg_kind) == (
        "binance-testnet",
        2500.7,
        0.0,
        LegKind.ENTRY,
    )
    legs = {c.client_id.rsplit(".", 1)[-1]: c for c in ex.take_commands(state)}
    assert sorted(legs) == ["sl", "tp1", "tp2", "tp3"]
    ex.on_venue_event(
        state, AlgoUpdate(legs["sl"].client_id, 7, "ETHUSDT", "TRIGGERED", T0 + 3 * MIN, "88")
    )
    stop_fill = OrderUpdate(
        "autoclose-88",
        88,
        "ETHUSDT",
        "SELL",
        "STOP_MARKET",
        "FILLED",
        "TRADE",
        T0 + 3 * MIN,
        last_qty=planned.qty,
        last_price=2480.0,
        trade_id=9,
    )
    out = ex.on_venue_event(state, stop_fill)
    trade_closed = next(r for r in out if isinstance(r, TradeClosed))
    assert trade_closed.exit_reason is ExitReason.STOP_LOSS and trade_closed.exit_price == 2480.0
    assert trade_closed.strategy == "trend_follow" and trade_closed.model_versions == MODELS
    assert state.orders == {} and state.open_positions() == 0
    restored = type(state).from_dict(state.to_dict(), ex.cfg, ex.rules)
    assert restored.to_dict() == state.to_dict()


def _sample_klines(symbol: str, bars: int) -> list[TickReceived]:
    import gzip

    from tests.unit.stages.sample import SAMPLE

    with gzip.open(SAMPLE / f"{symbol}.csv.gz", "rt") as fh:
        next(fh)
        rows = [line.strip().split(",") for _, line in zip(range(bars), fh, strict=False)]
    return [kline(symbol, int(t), float(o), float(h), float(lo), float(c), float(v))
            for t, o, h, lo, c, v in rows]  # fmt: skip


def _history(ticks: list[TickReceived]) -> tuple[HistoryBar, ...]:
    return tuple(HistoryBar(open_time_ms=t.event_time_ms, open=t.open, high=t.high, low=t.low,
                            close=t.close, volume=t.volume) for t in ticks)  # fmt: skip


def test_a_joiners_history_warms_its_window_as_if_it_had_been_streamed() -> None:
    # Real klines: the first 200 streamed one by one, against the first 150 sent as the
    # history of the 151st (a live universe joiner): the same rows from that kline on.
    ticks = _sample_klines("ETHUSDT", 200)
    stage = FeaturesStage()
    streamed, state = [], None
    for tick in ticks:
        state, row = stage.on_tick(state, tick)
        streamed.append(row)
    joined = dataclasses.replace(ticks[150], history=_history(ticks[:150]))
    state, first = stage.on_tick(None, joined)
    assert first is not None and first == streamed[150]  # warm at once: no blind spot
    rest = []
    for tick in ticks[151:]:
        state, row = stage.on_tick(state, tick)
        rest.append(row)
    assert rest == streamed[151:]
    # without its history the joiner is cold for the warm-up's 128 bars
    assert stage.on_tick(None, ticks[150])[1] is None


def test_a_history_overlapping_the_window_adds_only_the_bars_it_lacks() -> None:
    ticks = _sample_klines("BTCUSDT", 200)
    stage = FeaturesStage()
    state = None
    for tick in ticks[:100]:
        state, _ = stage.on_tick(state, tick)
    # it left at bar 100 and joins again at 160: its history is bars 30..159
    joined = dataclasses.replace(ticks[160], history=_history(ticks[30:160]))
    state, row = stage.on_tick(state, joined)
    assert state is not None and state.skipped == 0 and state.resets == 0
    reference = None
    for tick in ticks[:161]:
        reference, expected = stage.on_tick(reference, tick)
    assert row == expected
