"""The policy layer in the risk stage: drawdown -> DEFENSIVE -> HALT (breaker), operator resume."""

from __future__ import annotations

import dataclasses

from streams.config import RiskLimits
from streams.contracts.records import OrderApproved, OrderRejected
from streams.stages.portfolio import PortfolioState, total_drawdown
from streams.stages.risk import RiskStage, trading_mode
from streams.vocabulary import CommandKind, ModelDrift, Regime, RiskRule, TradingMode
from tests.unit.stages.factories import decision, trade_closed

MON = 1_747_612_800_000  # 2025-05-19 00:00 UTC
DAY = 86_400_000
# the daily and weekly limits out of the way: this is about the multi-week total
LIMITS = RiskLimits(max_daily_drawdown=0.9, max_weekly_drawdown=0.9, max_total_drawdown=0.3,
                    defensive_drawdown=0.1, defensive_size=0.5)  # fmt: skip


def _command(kind: CommandKind, t: int):  # type: ignore[no-untyped-def]
    from streams.contracts.records import ControlCommand

    return ControlCommand(command_id=f"c{t}", command=kind, event_time_ms=t, issued_at_ms=t,
                          issued_by="test", reason="operator")  # fmt: skip


def _trade(stage: RiskStage, state, day: int, i: int) -> OrderApproved | OrderRejected:  # type: ignore[no-untyped-def]
    """Decide on a decision ``day`` days in, then (if approved) close it at a 5 % equity loss."""
    t = MON + day * DAY + i * 60_000
    d = dataclasses.replace(decision("BTCUSDT", t), decision_id=f"BTCUSDT:{t}:decision")
    out = stage.on_decision(state, d)
    if isinstance(out, OrderApproved):
        loss = -0.05 * state.portfolio.equity
        stage.on_trade_closed(state, trade_closed(d.decision_id, loss, t + 60_000))
    return out


def test_losses_over_weeks_turn_defensive_then_trip_the_breaker_until_an_operator_resumes() -> None:
    stage = RiskStage(LIMITS)
    state = stage.new_state(MON)
    first = _trade(stage, state, 0, 0)
    assert isinstance(first, OrderApproved) and first.approved_margin_usd == 1_000.0  # NORMAL
    modes, margins = [], []
    for k in range(1, 12):  # one loss every three days: no day or week loses much
        out = _trade(stage, state, 3 * k, k)
        mode, _ = trading_mode(state.portfolio, decision("BTCUSDT", MON), LIMITS)
        modes.append(mode)
        if isinstance(out, OrderApproved):
            margins.append((out.approved_margin_usd, out.equity_usd))
        else:
            break
    assert TradingMode.DEFENSIVE in modes
    # once 10 % below the peak, entries take half the margin of 10 % of equity
    defensive = [m for m, eq in margins if total_drawdown_from(eq) >= 0.1]
    assert defensive and all(abs(m - 0.05 * eq) < 1e-6 for m, eq in margins[-len(defensive) :])
    # the close that took equity 30 % under the peak latched the breaker: the next entry is refused
    assert isinstance(out, OrderRejected) and out.rule is RiskRule.TRADING_HALTED
    assert "from peak 10000.00 >= 30%" in out.detail
    assert total_drawdown(state.portfolio) >= 0.3 and state.portfolio.breaker_tripped
    later = _trade(stage, state, 60, 99)  # weeks later, still refused: latched
    assert isinstance(later, OrderRejected) and later.rule is RiskRule.TRADING_HALTED
    assert "RESUME" in later.detail
    assert trading_mode(state.portfolio, decision(), LIMITS)[0] is TradingMode.HALT
    stage.on_command(state, _command(CommandKind.RESUME, MON + 61 * DAY))
    resumed = _trade(stage, state, 62, 100)
    assert isinstance(resumed, OrderApproved)  # the peak restarts at the equity of the resume
    assert resumed.approved_margin_usd == 0.1 * resumed.equity_usd


def total_drawdown_from(equity: float) -> float:
    return (10_000.0 - equity) / 10_000.0


def test_a_drawdown_at_the_total_limit_is_refused_and_latched_at_the_decision() -> None:
    stage = RiskStage(LIMITS)
    state = stage.new_state(MON)
    state.portfolio.equity = 7_000.0  # e.g. restored from a state written before the breaker
    out = stage.on_decision(state, decision("BTCUSDT", MON + 60_000))
    assert isinstance(out, OrderRejected) and out.rule is RiskRule.MAX_TOTAL_DRAWDOWN
    assert out.observed == 0.3 and out.limit == 0.3 and state.portfolio.breaker_tripped


def test_high_volatility_is_defensive_only_when_configured_and_says_why() -> None:
    s = PortfolioState.start(10_000.0, MON)
    wild = dataclasses.replace(decision(), regime=Regime.HIGH_VOLATILITY)
    assert trading_mode(s, wild, LIMITS) == (TradingMode.NORMAL, ())
    cautious = LIMITS.model_copy(update={"defensive_in_high_volatility": True})
    assert trading_mode(s, wild, cautious) == (TradingMode.DEFENSIVE, ("HIGH_VOLATILITY regime",))
    s.halted, s.halt_reason = True, "maintenance"
    assert trading_mode(s, wild, cautious) == (TradingMode.HALT, ("operator halt: maintenance",))


def test_significant_model_drift_sizes_defensive_and_the_approval_says_so() -> None:
    """Model health feeds the policy layer: the decision carries its ensemble instance's drift
    level; with the rule on, SIGNIFICANT halves the margin and the approval names mode and
    reason."""
    assert RiskLimits().defensive_on_drift is False  # off by default (docs/edge.md says why)
    watchful = LIMITS.model_copy(update={"defensive_on_drift": True})
    stage = RiskStage(watchful)
    state = stage.new_state(MON)
    calm = stage.on_decision(state, decision("BTCUSDT", MON + 60_000))
    assert isinstance(calm, OrderApproved)
    assert (calm.trading_mode, calm.mode_reasons) == (TradingMode.NORMAL, ())
    moderate = dataclasses.replace(decision("ETHUSDT", MON + 120_000),
                                   model_drift=ModelDrift.MODERATE)  # fmt: skip
    assert trading_mode(state.portfolio, moderate, watchful)[0] is TradingMode.NORMAL
    drifted = dataclasses.replace(decision("SOLUSDT", MON + 180_000),
                                  model_drift=ModelDrift.SIGNIFICANT)  # fmt: skip
    out = stage.on_decision(state, drifted)
    assert isinstance(out, OrderApproved) and out.trading_mode is TradingMode.DEFENSIVE
    assert out.mode_reasons == ("SIGNIFICANT model drift from the training reference",)
    assert out.approved_margin_usd == calm.approved_margin_usd * LIMITS.defensive_size
    assert stage.last_mode is TradingMode.DEFENSIVE
    assert trading_mode(state.portfolio, drifted, LIMITS) == (TradingMode.NORMAL, ())


def test_a_partition_vetoed_for_model_health_sizes_defensive_and_says_why() -> None:
    """Veto rates feed the policy layer: a decision carries the share of its supervisor
    partition's recent signals vetoed for model health; at or above the setting it is sized
    DEFENSIVE (0 turns the rule off)."""
    assert RiskLimits().defensive_veto_share == 0.95
    stage = RiskStage(LIMITS)
    state = stage.new_state(MON)
    healthy = dataclasses.replace(decision("BTCUSDT", MON + 60_000), health_veto_share=0.92)
    calm = stage.on_decision(state, healthy)
    assert isinstance(calm, OrderApproved) and calm.trading_mode is TradingMode.NORMAL
    unwell = dataclasses.replace(decision("ETHUSDT", MON + 120_000), health_veto_share=0.975)
    out = stage.on_decision(state, unwell)
    assert isinstance(out, OrderApproved) and out.trading_mode is TradingMode.DEFENSIVE
    assert out.mode_reasons == ("98% of recent signals vetoed for model health >= 95%",)
    assert out.approved_margin_usd == calm.approved_margin_usd * LIMITS.defensive_size
    off = LIMITS.model_copy(update={"defensive_veto_share": 0.0})
    assert trading_mode(state.portfolio, unwell, off) == (TradingMode.NORMAL, ())


def test_the_breaker_state_round_trips_through_the_table_form() -> None:
    s = PortfolioState.start(10_000.0, MON)
    s.equity, s.breaker_tripped, s.breaker_reason = 6_000.0, True, "drawdown 40%"
    assert PortfolioState.from_dict(s.to_dict()) == s
    old = s.to_dict()
    for key in ("peak_equity", "breaker_tripped", "breaker_reason"):
        del old[key]  # a state written before the policy layer
    assert PortfolioState.from_dict(old).peak() == 6_000.0


def test_each_mode_change_is_an_event_with_its_reasons_and_its_cause() -> None:
    """Losses every three days: NORMAL -> DEFENSIVE (drawdown) -> HALT (the breaker), then the
    operator's RESUME -> NORMAL; one event per change, none while the mode holds, each naming
    the record that changed it. The mode survives the state's table form."""
    from streams.stages.risk import RiskState

    stage = RiskStage(LIMITS)
    state = stage.new_state(MON)
    changes, trades = [], set()
    for k in range(12):
        t = MON + 3 * k * DAY + k * 60_000
        d = dataclasses.replace(decision("BTCUSDT", t), decision_id=f"BTCUSDT:{t}:decision")
        out = stage.on_decision(state, d)
        changes.append(stage.mode_change(state, t, d.decision_id))
        if isinstance(out, OrderApproved):
            trade = trade_closed(d.decision_id, -0.05 * state.portfolio.equity, t + 60_000)
            stage.on_trade_closed(state, trade)
            trades.add(trade.trade_id)
            changes.append(stage.mode_change(state, t + 60_000, trade.trade_id))
        state = RiskState.from_dict(state.to_dict())  # the mode is part of the stored state
    resume = _command(CommandKind.RESUME, MON + 40 * DAY)
    stage.on_command(state, resume)
    changes.append(stage.mode_change(state, resume.event_time_ms, resume.command_id))
    events = [c for c in changes if c is not None]
    assert [(e.previous, e.mode) for e in events] == [
        (TradingMode.NORMAL, TradingMode.DEFENSIVE),
        (TradingMode.DEFENSIVE, TradingMode.HALT),
        (TradingMode.HALT, TradingMode.NORMAL),
    ]
    defensive, halt, normal = events
    assert defensive.reasons[0].startswith("drawdown ") and defensive.drawdown >= 0.1
    assert halt.reasons[0].startswith("circuit breaker: ") and halt.drawdown >= 0.3
    assert defensive.cause in trades and halt.cause in trades  # losses move the mode
    assert halt.event_id == f"mode:{halt.cause}" and halt.peak_equity_usd == 10_000.0
    assert normal.cause == resume.command_id and normal.reasons == ()
    assert normal.peak_equity_usd == normal.equity_usd  # RESUME restarts the peak
    old = state.to_dict()
    del old["mode"]  # a state stored before mode changes were events
    assert RiskState.from_dict(old).mode is TradingMode.NORMAL


def test_commands_at_one_event_time_apply_in_the_order_they_were_issued() -> None:
    """A HALT then a RESUME sent within one bar (the dashboard stamps both at the stream's
    progress) apply in that order in the risk merge and in the runner, whatever their ids:
    HALT, then NORMAL again (found by the browser test: ordered by id, the RESUME went first
    about half the time and the portfolio stayed halted)."""
    from streams.agents.base import Decoder, Emitter, RawEvent
    from streams.agents.dispatch import dispatch
    from streams.agents.risk import RiskHandler
    from streams.contracts.codec import topic_codec
    from streams.contracts.records import ControlCommand
    from streams.ordering import END_OF_STREAM, SOURCE_HEADER, WATERMARK_HEADER
    from streams.stages.risk import command_order
    from streams.topics import Topic

    t = MON + 3_600_000
    halt = ControlCommand(command_id="ffff", command=CommandKind.HALT, event_time_ms=t,
                          issued_at_ms=t + 5_000, issued_by="test", reason="first")  # fmt: skip
    resume = dataclasses.replace(halt, command_id="0000", command=CommandKind.RESUME,
                                 issued_at_ms=t + 6_000, reason="second")  # fmt: skip
    assert sorted([resume, halt], key=command_order) == [halt, resume]

    risk = RiskHandler(RiskStage(LIMITS), partitions=1, feedback_lag_ms=0)
    codec = topic_codec(Topic.CONTROL_COMMANDS)
    end = str(END_OF_STREAM).encode()
    events = [  # arrival order is not the order either: the merge sorts
        RawEvent("control.commands", 0, 1, None, codec.encode(resume), {}),
        RawEvent("control.commands", 0, 0, None, codec.encode(halt), {}),
        *[
            RawEvent(topic, 0, 5, None, b"", {SOURCE_HEADER: source, WATERMARK_HEADER: end})
            for topic, source in (("decisions.sized", b"strategy/0"),
                                  ("market.bars", b"features/0"),
                                  ("trades.closed", b"execution/0"))
        ],
    ]  # fmt: skip
    out = Emitter("risk")
    assert dispatch(risk, Decoder(""), events, out) == 0
    modes = [i.value for i in out.items if i.topic is Topic.POLICY_MODES and i.value]
    assert [(m.previous, m.mode, m.cause) for m in modes] == [
        (TradingMode.NORMAL, TradingMode.HALT, "ffff"),
        (TradingMode.HALT, TradingMode.NORMAL, "0000"),
    ]
    assert risk.state is not None and not risk.state.portfolio.halted
