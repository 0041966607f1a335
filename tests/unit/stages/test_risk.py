"""Portfolio risk rules: hand-computed limits, period boundaries, kill switch."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.config import CorrelationConfig, RiskLimits
from streams.contracts.records import OrderRejected
from streams.stages.portfolio import (
    PortfolioState,
    apply_close,
    apply_command,
    apply_universe_change,
    iso_week_index,
    remember_return,
    reserve,
)
from streams.stages.risk import RULES, Proposal, correlation, evaluate
from streams.vocabulary import CommandKind, RiskRule, Side, UniverseChangeKind
from tests.unit.stages.factories import decision

LIMITS = RiskLimits()
MON = 1_747_612_800_000  # 2025-05-19 00:00 UTC, a Monday
HOUR, DAY = 3_600_000, 86_400_000


def _d(
    i: int = 0,
    *,
    symbol="BTCUSDT",
    side=Side.LONG,
    conf=0.8,
    margin=1_000.0,
    lev=10.0,
    t=MON + HOUR,
) -> Proposal:
    d = decision(symbol, t, side)
    d = dataclasses.replace(d, decision_id=f"{symbol}:{t}:{i}:decision", confidence=conf)
    return Proposal(d, margin, lev)


def _reserve(s: PortfolioState, p: Proposal) -> None:
    d = p.decision
    reserve(s, d.decision_id, d.symbol, d.side, p.margin)


def _returns(s: PortfolioState, symbol: str, returns: list[float]) -> None:
    for r in returns:
        remember_return(s, symbol, r, CorrelationConfig().max_returns)


def _fresh() -> PortfolioState:
    return PortfolioState.start(10_000.0, MON)


def _rule(result: OrderRejected | None) -> str:
    return "approved" if result is None else result.rule


def test_iso_week_starts_monday() -> None:
    assert iso_week_index(MON) == iso_week_index(
        MON + 6 * DAY + DAY - 1
    )  # through Sunday 23:59:59.999
    assert iso_week_index(MON + 7 * DAY) == iso_week_index(MON) + 1
    assert iso_week_index(MON - 1) == iso_week_index(MON) - 1  # Sunday before


def test_clean_decision_is_approved() -> None:
    assert evaluate(_d(), _fresh(), LIMITS) is None


def test_daily_drawdown_exactly_at_the_limit_is_refused_then_resets_next_day() -> None:
    s = _fresh()
    apply_close(s, "p1", -1_499.0, MON + HOUR)  # 1 499 / 10 000 = 14.99 % < 15 %
    assert _rule(evaluate(_d(t=MON + 2 * HOUR), s, LIMITS)) == "approved"
    apply_close(s, "p2", -1.0, MON + 2 * HOUR)  # 1 500 / 10 000 = 15 % -> at the limit
    r = evaluate(_d(t=MON + 3 * HOUR), s, LIMITS)
    assert r is not None and r.rule == RiskRule.DAILY_DRAWDOWN
    assert (r.observed, r.limit) == (pytest.approx(0.15), 0.15)
    # The next UTC day starts from 8 500: daily drawdown 0, weekly 15 % < 25 %.
    assert _rule(evaluate(_d(t=MON + DAY), s, LIMITS)) == "approved"


def test_weekly_drawdown_accumulates_across_days() -> None:
    s = _fresh()
    apply_close(s, "a", -1_400.0, MON + HOUR)  # Mon: 8 600
    apply_close(s, "b", -1_000.0, MON + DAY + HOUR)  # Tue starts at 8 600 -> 7 600
    # daily 1 000 / 8 600 = 11.6 %, weekly 2 400 / 10 000 = 24 % -> approved
    assert _rule(evaluate(_d(t=MON + DAY + 2 * HOUR), s, LIMITS)) == "approved"
    apply_close(s, "c", -100.0, MON + DAY + 2 * HOUR)  # 7 500: weekly 25 % at the limit
    r = evaluate(_d(t=MON + DAY + 3 * HOUR), s, LIMITS)
    assert r is not None and r.rule == RiskRule.WEEKLY_DRAWDOWN
    assert r.observed == pytest.approx(0.25)
    # Next Monday: the week restarts from 7 500.
    assert _rule(evaluate(_d(t=MON + 7 * DAY), s, LIMITS)) == "approved"


def test_kill_switch_mid_position() -> None:
    s = _fresh()
    first = _d(0)
    assert evaluate(first, s, LIMITS) is None
    _reserve(s, first)
    apply_command(s, CommandKind.HALT, "operator")
    r = evaluate(_d(1, symbol="ETHUSDT"), s, LIMITS)
    assert r is not None and r.rule == RiskRule.KILL_SWITCH and "operator" in r.detail
    assert (r.decision_id, r.symbol, r.margin_usd) == ("ETHUSDT:1747616400000:1:decision",
                                                        "ETHUSDT", 1_000.0)  # fmt: skip
    # The open position still closes normally and books its PnL while halted.
    apply_close(s, first.decision.decision_id, 120.0, MON + 2 * HOUR)
    assert s.positions == {} and s.equity == 10_120.0
    apply_command(s, CommandKind.RESUME)
    assert _rule(evaluate(_d(2, symbol="ETHUSDT"), s, LIMITS)) == "approved"


def test_rule_order_is_fixed_and_first_failure_reported() -> None:
    s = _fresh()
    apply_command(s, CommandKind.HALT)
    # Fails kill switch, margin and leverage at once: the kill switch is reported.
    assert _rule(evaluate(_d(margin=5_000.0, lev=31.0), s, LIMITS)) == RiskRule.KILL_SWITCH
    apply_command(s, CommandKind.RESUME)
    assert _rule(evaluate(_d(margin=5_000.0, lev=31.0), s, LIMITS)) == RiskRule.MAX_MARGIN
    assert _rule(evaluate(_d(margin=2_000.0, lev=30.0), s, LIMITS)) == "approved"  # both at cap
    assert _rule(evaluate(_d(lev=30.5), s, LIMITS)) == RiskRule.MAX_LEVERAGE
    order = [r for r, _check in RULES][:4]
    assert order == [
        RiskRule.KILL_SWITCH,
        RiskRule.LEFT_UNIVERSE,
        RiskRule.MAX_TOTAL_DRAWDOWN,
        RiskRule.DAILY_DRAWDOWN,
    ]


def test_max_concurrent_positions() -> None:
    s = _fresh()
    s.equity = 1_000_000.0  # keep concentration out of the way
    for i in range(20):
        _reserve(s, _d(i, symbol=f"S{i}USDT", margin=100.0))
    r = evaluate(_d(99, symbol="NEWUSDT"), s, LIMITS)
    assert r is not None and (r.rule, r.observed, r.limit) == (
        RiskRule.MAX_CONCURRENT_POSITIONS,
        20.0,
        20.0,
    )


def test_opposite_side_on_same_symbol_refused() -> None:
    s = _fresh()
    _reserve(s, _d(0, side=Side.LONG))
    assert _rule(evaluate(_d(1, side=Side.SHORT), s, LIMITS)) == RiskRule.OPPOSITE_POSITION


def test_symbol_concentration_at_and_over_the_limit() -> None:
    s = _fresh()
    _reserve(s, _d(0, margin=1_500.0))
    # (1 500 + 1 000) / 10 000 = 25 % -> at the limit, allowed
    assert _rule(evaluate(_d(1, margin=1_000.0), s, LIMITS)) == "approved"
    r = evaluate(_d(1, margin=1_010.0), s, LIMITS)  # 25.1 %
    assert r is not None and r.rule == RiskRule.SYMBOL_CONCENTRATION
    assert r.observed == pytest.approx(0.251)


def test_correlation_is_signed_by_direction() -> None:
    rng = random.Random(5)
    eth = [rng.gauss(0, 0.001) for _ in range(60)]
    # BTC returns = ETH returns * 2 + tiny noise: correlation ~ 0.99
    btc = [2 * x + rng.gauss(0, 0.0001) for x in eth]
    s = _fresh()
    _returns(s, "ETHUSDT", eth)
    _reserve(s, _d(0, symbol="ETHUSDT", side=Side.LONG))
    _returns(s, "BTCUSDT", btc[-10:])
    # Too few aligned returns: the rule abstains.
    assert _rule(evaluate(_d(1, side=Side.LONG), s, LIMITS)) == "approved"
    _returns(s, "BTCUSDT", btc)
    r = evaluate(_d(1, side=Side.LONG), s, LIMITS)
    assert r is not None and r.rule == RiskRule.CORRELATION and r.observed is not None
    assert r.observed > 0.98 and r.detail == "signed correlation with open ETHUSDT"
    # Short BTC against long ETH is a hedge: signed correlation ~ -0.99.
    assert _rule(evaluate(_d(1, side=Side.SHORT), s, LIMITS)) == "approved"


def test_only_the_latest_returns_are_kept() -> None:
    s = _fresh()
    for r in (0.1, 0.2, 0.3, 0.4):
        remember_return(s, "BTCUSDT", r, 3)
    assert s.returns["BTCUSDT"] == [0.2, 0.3, 0.4]


def test_correlation_hand_computed() -> None:
    # x = 1,2,3 ; y = 2,4,7 : mx 2, my 13/3 ; sxy = (-1)(-7/3)+0+(1)(8/3) = 5 ; sxx = 2 ;
    # syy = 49/9 + 1/9 + 64/9 = 114/9 -> rho = 5 / sqrt(2 * 114 / 9) = 0.99339
    assert correlation([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert correlation([1, 1, 1], [1, 2, 3]) is None
    # aligned on the tail: [9, 1, 2, 3] vs [2, 4, 7] uses 1, 2, 3
    assert correlation([9, 1, 2, 3], [2, 4, 7]) == pytest.approx(0.99339, abs=1e-5)


def test_state_round_trip() -> None:
    s = _fresh()
    _reserve(s, _d(0))
    _returns(s, "BTCUSDT", [0.1, -0.2])
    apply_command(s, CommandKind.HALT, "x")
    assert PortfolioState.from_dict(s.to_dict()) == s


@given(
    conf=st.floats(0, 1),
    margin=st.floats(0, 10_000),
    lev=st.floats(1, 100),
    loss=st.floats(0, 9_000),
    side=st.sampled_from(Side),
)
def test_never_approves_when_halted(
    conf: float, margin: float, lev: float, loss: float, side: Side
) -> None:
    s = _fresh()
    apply_close(s, "x", -loss, MON)
    apply_command(s, CommandKind.HALT)
    assert (
        _rule(evaluate(_d(side=side, conf=conf, margin=margin, lev=lev), s, LIMITS))
        == RiskRule.KILL_SWITCH
    )


def test_a_symbol_that_left_the_universe_takes_no_new_entry_until_it_joins_again() -> None:
    s = _fresh()
    apply_universe_change(s, "SOLUSDT", UniverseChangeKind.LEFT, "BELOW_TOP_N: rank 7")
    refused = evaluate(_d(symbol="SOLUSDT"), s, LIMITS)
    assert refused is not None and refused.rule is RiskRule.LEFT_UNIVERSE
    assert refused.detail == "winding down: BELOW_TOP_N: rank 7"
    assert _rule(evaluate(_d(symbol="BTCUSDT"), s, LIMITS)) == "approved"  # others trade on
    # the state is stored and restored like the rest of the portfolio (a restart keeps it)
    restored = PortfolioState.from_dict(s.to_dict())
    assert _rule(evaluate(_d(symbol="SOLUSDT"), restored, LIMITS)) == RiskRule.LEFT_UNIVERSE
    old = {k: v for k, v in s.to_dict().items() if k != "left_universe"}
    assert PortfolioState.from_dict(old).left_universe == {}  # a state from before the rule
    apply_universe_change(restored, "SOLUSDT", UniverseChangeKind.JOINED)
    assert _rule(evaluate(_d(symbol="SOLUSDT"), restored, LIMITS)) == "approved"
