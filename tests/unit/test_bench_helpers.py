"""The pure helpers of the latency and anchors benchmarks: percentiles, progress, the SMA rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.benchmarks.bench_anchors import (
    SmaCrossScorer,
    last_bar_cross,
    one_hot_votes,
    sma_cross,
)
from tests.benchmarks.bench_latency import (
    Seen,
    latency_summary,
    passed_at,
    plan_segments,
    progress_curve,
    span_figures,
    stage_increments,
)

# --------------------------------------------------------------------------- latency


def test_latency_summary_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100 ms, shuffled order must not matter
    out = latency_summary(samples[::-1])
    assert out == {"n": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}


def test_latency_summary_small_and_empty() -> None:
    assert latency_summary([7.0]) == {"n": 1, "p50_ms": 7.0, "p99_ms": 7.0, "max_ms": 7.0}
    assert latency_summary([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}


def _seen(at: int, source: str, ts: int, wm: int | None = None) -> Seen:
    return Seen(at, "orders.intents", 0, source, "", ts, wm)


def test_progress_is_the_lowest_writer_and_a_record_promises_only_its_own_time() -> None:
    rows = [
        _seen(10, "a", 1_000),  # a record at 1000: nothing before 1000 from a
        _seen(20, "b", 0, wm=2_000),  # b: nothing before 2000
        _seen(30, "a", 0, wm=1_500),
        _seen(40, "a", 0, wm=3_000),
        _seen(50, "c", 0, wm=9_999),  # not a writer of this partition: ignored
    ]
    curve = progress_curve(rows, {"a", "b"})
    assert curve == ([20, 30, 40], [1_000, 1_500, 2_000])
    # A tick at 1000 is passed once progress is above it; at 2000 never (b stayed at 2000).
    assert passed_at(curve, 999) == 20
    assert passed_at(curve, 1_000) == 30
    assert passed_at(curve, 1_999) == 40
    assert passed_at(curve, 2_000) is None


def test_progress_waits_for_every_writer() -> None:
    rows = [_seen(10, "a", 0, wm=5_000)]
    assert progress_curve(rows, {"a", "b"}) == ([], [])


def test_stage_increments_chain_from_the_tick() -> None:
    ticks = {("BTC", 0): 100, ("ETH", 0): 200}
    reached = {
        "x": {("BTC", 0): 150, ("ETH", 0): 260},
        "y": {("BTC", 0): 1_150},  # ETH never reached y
    }
    out = stage_increments(reached, ["x", "y"], ticks)
    assert out == {"x": [50 / 1e6, 60 / 1e6], "y": [1_000 / 1e6]}


def test_span_figures_time_spans_from_their_tick() -> None:
    ticks = {("BTC", 60_000): 1_000_000}
    spans = [
        {"name": "features market.ticks", "start_ns": 3_000_000, "end_ns": 4_000_000,
         "attributes": {"qt.symbol": "BTC", "qt.event_time_ms": 60_000}},
        {"name": "features market.ticks", "start_ns": 9, "end_ns": 10,
         "attributes": {"qt.symbol": "ETH", "qt.event_time_ms": 60_000}},  # not a measured tick
    ]  # fmt: skip
    out = span_figures(spans, ticks)
    assert out == {
        "features market.ticks": {
            "start": {"n": 1, "p50_ms": 2.0, "p99_ms": 2.0, "max_ms": 2.0},
            "duration": {"n": 1, "p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0},
        }
    }


def test_segments_are_back_to_back_in_event_time() -> None:
    segs = plan_segments(0, 10, [("1x", 1.0, 3.0), ("60x", 60.0, 0.5)])
    assert [(s.name, s.speed, s.start_ms, s.end_ms) for s in segs] == [
        ("warmup", None, 0, 600_000),
        ("1x", 1.0, 600_000, 780_000),
        ("60x", 60.0, 780_000, 2_580_000),
    ]


# --------------------------------------------------------------------------- the SMA rule


def test_sma_cross_on_a_hand_made_series() -> None:
    # Flat, a jump up (fast crosses above slow), flat, a drop (fast crosses below).
    closes = [10.0] * 40 + [20.0] * 40 + [5.0] * 40
    out = sma_cross(closes, fast=3, slow=5)
    assert np.flatnonzero(out).tolist() == [40, 80]
    assert out[40] == 1 and out[80] == -1


def test_sma_cross_matches_pandas_rolling_means() -> None:
    rng = np.random.default_rng(7)
    closes = 100.0 + np.cumsum(rng.normal(size=3_000))
    c = pd.Series(closes)
    diff = c.rolling(10).mean() - c.rolling(30).mean()
    up = (diff > 0) & (diff.shift() <= 0)
    down = (diff < 0) & (diff.shift() >= 0)
    expected = up.astype(int) - down.astype(int)
    got = sma_cross(closes)
    assert got.tolist() == expected.tolist()
    assert np.abs(got).sum() > 50  # the series crosses often: the comparison is not vacuous


def test_last_bar_cross_equals_the_series_rule_on_sliding_windows() -> None:
    rng = np.random.default_rng(11)
    closes = 50.0 + np.cumsum(rng.normal(size=1_000))
    windows = np.lib.stride_tricks.sliding_window_view(closes, 64)
    assert last_bar_cross(windows).tolist() == sma_cross(closes)[63:].tolist()


def test_last_bar_cross_refuses_a_short_window() -> None:
    with pytest.raises(ValueError, match="cannot show"):
        last_bar_cross(np.ones((2, 30)))


def test_scorer_reads_the_feature_window_like_the_prices() -> None:
    # The window's close channel is 100 * ln(close / last close): the rule must not change.
    rng = np.random.default_rng(3)
    closes = 20_000.0 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=600)))
    windows = np.lib.stride_tricks.sliding_window_view(closes, 64)
    channel = (100.0 * np.log(windows / windows[:, -1:])).astype(np.float32)
    window = np.zeros((*channel.shape, 5), dtype=np.float32)
    window[:, :, 3] = channel
    votes = SmaCrossScorer().score(None, window)["sma_cross"]
    expected = sma_cross(closes)[63:]
    assert votes.tolist() == one_hot_votes(expected).tolist()
    assert np.abs(expected).sum() > 5


def test_one_hot_votes_in_class_order() -> None:
    out = one_hot_votes(np.array([-1, 0, 1], dtype=np.int8))
    assert out.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # SELL, HOLD, BUY
