"""Tabular Q-learning sizing: buckets, tie-breaks, updates, margin cap."""

from __future__ import annotations

import random

import pytest

from streams.config import SizingConfig
from streams.errors import InvalidInputError
from streams.stages.sizing import (
    QTable,
    SizingState,
    bucket,
    margin_for,
    size_position,
    sizing_state,
)
from streams.vocabulary import Regime

CFG = SizingConfig()
GREEDY = SizingConfig(epsilon=0.0)


def test_buckets_edges_belong_to_the_upper_bucket() -> None:
    edges = (0.70, 0.80, 0.90)
    assert [bucket(v, edges) for v in (0.65, 0.70, 0.79, 0.80, 0.95)] == [0, 1, 1, 2, 3]
    s = sizing_state(0.85, Regime.TREND, 0.05, CFG)
    assert (s.confidence_bucket, s.drawdown_bucket, s.key) == (2, 2, "c2/TREND/d2")


def test_untrained_table_sizes_like_the_base_policy() -> None:
    t = QTable()
    s = sizing_state(0.7, Regime.RANGE, 0.0, CFG)
    assert CFG.multipliers[t.greedy(s, CFG)] == 1.0


def test_q_update_and_greedy_tie_break_towards_neutral() -> None:
    t, s = QTable(), sizing_state(0.9, Regime.TREND, 0.0, CFG)
    # alpha 0.1: Q(1.5x) = 0 + 0.1 * (0.5 - 0) = 0.05 ; again: 0.05 + 0.1*(0.5-0.05) = 0.095
    assert t.update(s, 4, 0.5, CFG) == pytest.approx(0.05)
    assert t.update(s, 4, 0.5, CFG) == pytest.approx(0.095)
    assert t.greedy(s, CFG) == 4
    # make 0.75x and 1.25x tie at the top: the smaller one wins (closest to 1.0, then smaller)
    t.q[s.key] = [0.0, 0.2, 0.1, 0.2, 0.1]
    assert t.greedy(s, CFG) == 1
    assert t.visits[s.key][4] == 2
    assert QTable.from_dict(t.to_dict()) == t


def test_invalid_action_raises() -> None:
    with pytest.raises(InvalidInputError):
        QTable().update(sizing_state(0.9, Regime.TREND, 0.0, CFG), 5, 1.0, CFG)


def test_state_key_round_trips_and_a_malformed_key_raises() -> None:
    s = sizing_state(0.75, Regime.HIGH_VOLATILITY, 0.2, CFG)
    assert SizingState.from_key(s.key) == s
    for bad in ("garbage", "c1/NOT_A_REGIME/d0", "cx/TREND/d0"):
        with pytest.raises(InvalidInputError):
            SizingState.from_key(bad)


def test_margin_cap_and_base() -> None:
    assert margin_for(10_000.0, 0.10 * 1.5, 2_000.0) == pytest.approx(1_500.0)  # 10k * 15%
    assert margin_for(20_000.0, 0.10 * 1.5, 2_000.0) == 2_000.0  # 3 000 capped
    assert margin_for(0.0, 0.15, 2_000.0) == 0.0 and margin_for(-5.0, 0.15, 2_000.0) == 0.0


def test_size_position_seeded_and_explores_all_actions() -> None:
    table, explore = QTable(), SizingConfig(epsilon=1.0)
    picks = [
        size_position(
            table, 0.8, Regime.TREND, 0.01, 10_000.0, (0.1, 2_000.0), random.Random(i), explore
        )
        for i in range(50)
    ]
    again = [
        size_position(
            table, 0.8, Regime.TREND, 0.01, 10_000.0, (0.1, 2_000.0), random.Random(i), explore
        )
        for i in range(50)
    ]
    assert picks == again
    assert {p.multiplier for p in picks} == set(CFG.multipliers)
    assert all(p.margin == pytest.approx(1_000.0 * p.multiplier) for p in picks)


def test_learns_to_prefer_the_paying_multiplier() -> None:
    # Rewards proportional to size in a profitable state: greedy ends on 1.5x.
    t, s, rng = QTable(), sizing_state(0.95, Regime.TREND, 0.0, CFG), random.Random(3)
    for _ in range(300):
        a = t.choose(s, rng, SizingConfig(epsilon=0.3))
        t.update(s, a, 0.1 * CFG.multipliers[a], CFG)
    assert CFG.multipliers[t.greedy(s, GREEDY)] == 1.5
