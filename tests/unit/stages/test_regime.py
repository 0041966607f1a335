"""Regime detector: hand-computed thresholds, baseline folding, and real data."""

from __future__ import annotations

import gzip

import pytest

from streams.config import RegimeConfig
from streams.errors import InvalidInputError
from streams.stages.regime import MarketView, RegimeState, detect_regime, fold_baseline
from streams.vocabulary import Regime
from tests.shared_data import BINANCE

CFG = RegimeConfig(high_vol_ratio=2.0, trend_threshold=1.5, baseline_bars=4, warmup_bars=2)


def _view(atr_pct: float, trend: float = 0.0) -> MarketView:
    return MarketView(100.0, atr_pct, 0.001, trend, 0.0, 50.0, 0.5)


def test_baseline_is_running_mean_then_ema() -> None:
    s = RegimeState()
    for x in (0.001, 0.003):  # running mean: 0.001, then (0.001 + 0.003) / 2 = 0.002
        s = fold_baseline(s, x, CFG)
    assert s.baseline_atr_pct == pytest.approx(0.002)
    s = fold_baseline(s, 0.005, CFG)  # n=3: alpha = max(1/3, 1/4) -> 0.002 + (0.003)/3 = 0.003
    assert s.baseline_atr_pct == pytest.approx(0.003)
    s = fold_baseline(s, 0.007, CFG)  # n=4: alpha 1/4 -> 0.003 + 0.004/4 = 0.004
    s = fold_baseline(s, 0.008, CFG)  # n=5: alpha stays 1/4 -> 0.004 + 0.004/4 = 0.005
    assert (s.baseline_atr_pct, s.samples) == (pytest.approx(0.005), 5)


def test_classification_order_and_exact_thresholds() -> None:
    warm = RegimeState(baseline_atr_pct=0.002, samples=10)
    # atr 0.004 = exactly 2.0 x baseline -> HIGH_VOLATILITY (the threshold counts), even in a trend
    assert detect_regime(warm, _view(0.004, trend=3.0), CFG)[0] is Regime.HIGH_VOLATILITY
    assert detect_regime(warm, _view(0.0039, trend=1.5), CFG)[0] is Regime.TREND
    assert detect_regime(warm, _view(0.0039, trend=-1.5), CFG)[0] is Regime.TREND
    assert detect_regime(warm, _view(0.0039, trend=1.49), CFG)[0] is Regime.RANGE


def test_no_high_volatility_before_warmup() -> None:
    cold = RegimeState(baseline_atr_pct=0.001, samples=1)  # < warmup_bars=2
    regime, after = detect_regime(cold, _view(0.01), CFG)
    assert regime is Regime.RANGE
    assert after.samples == 2
    assert RegimeState.from_dict(after.to_dict()) == after


def test_nan_atr_is_rejected() -> None:
    with pytest.raises(InvalidInputError):
        detect_regime(RegimeState(), _view(float("nan")))


def test_real_btc_minutes_spend_most_time_outside_high_volatility() -> None:
    # 1 day of real BTCUSDT 1m klines: ATR(14, Wilder) and EMA12/EMA48 spread in ATR units.
    path = BINANCE / "um_futures_1m_2025" / "BTCUSDT.csv.gz"
    with gzip.open(path, "rt") as f:
        next(f)
        rows = [tuple(map(float, line.split(","))) for _, line in zip(range(1440), f, strict=False)]
    state, counts = RegimeState(), dict.fromkeys(Regime, 0)
    atr, ef, es, prev = 0.0, rows[0][4], rows[0][4], rows[0][4]
    for _, _o, h, low, c, _v in rows:
        tr = max(h - low, abs(h - prev), abs(low - prev))
        atr = tr if atr == 0.0 else atr + (tr - atr) / 14
        ef += (c - ef) * 2 / 13
        es += (c - es) * 2 / 49
        prev = c
        if atr > 0:
            regime, state = detect_regime(state, _view(atr / c, (ef - es) / atr))
            counts[regime] += 1
    total = sum(counts.values())
    # Every regime occurs on a real day, and high volatility is the exception, not the rule.
    assert all(n > 0 for n in counts.values()), counts
    assert counts[Regime.HIGH_VOLATILITY] / total < 0.25, counts
