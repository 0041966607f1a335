"""The one feature definition: stream/batch parity, causality, gaps, and the definitions
themselves checked against an independent pandas implementation, all on real Binance data."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.dataset import load_klines
from models.features import (
    BAR_MS,
    FEATURE_NAMES,
    WINDOW,
    WINDOW_CHANNELS,
    Bar,
    FeatureError,
    FeatureState,
    compute_batch,
)
from tests.shared_data import BINANCE

DATA = BINANCE
FUT = DATA / "um_futures_1m_2025"
SPOT = DATA / "spot_1m"

pytestmark = pytest.mark.skipif(not FUT.exists(), reason="shared Binance data not present")


def _read_bars_like_a_stream(path: Path) -> list[Bar]:
    """Parse with the csv module and float(): an independent path from the pandas loader."""
    with gzip.open(path, "rt", newline="") as fh:
        rows = csv.reader(fh)
        next(rows)
        return [Bar(int(r[0]), *(float(x) for x in r[1:])) for r in rows]


def _batch(path: Path, n: int | None = None, **kw: int) -> tuple[np.ndarray, ...]:
    k = next(iter(load_klines(path.parent, [path.name.removesuffix(".csv.gz")]).values()))
    cols = [a[:n] for a in (k.open_time_ms, k.open, k.high, k.low, k.close, k.volume)]
    return compute_batch(*cols, **kw)


@pytest.mark.parametrize(
    "path",
    [FUT / "BTCUSDT.csv.gz", SPOT / "NANOUSDT.csv.gz"],  # NANO: zero-volume bars + 2 gaps
    ids=["futures-BTC", "spot-NANO-gaps-zero-volume"],
)
def test_stream_with_restarts_equals_batch_exactly(path: Path) -> None:
    """Bar-by-bar updates, with the state JSON round-tripped every 997 bars (a Faust table
    restoring from its changelog), give bit-identical rows to compute_batch."""
    bars = _read_bars_like_a_stream(path)
    tab, win, valid = _batch(path)
    assert len(bars) == len(valid)
    state = FeatureState()
    stream_valid = np.zeros(len(bars), dtype=bool)
    for i, bar in enumerate(bars):
        if i % 997 == 0:
            state = FeatureState.from_dict(json.loads(json.dumps(state.to_dict())))
        row = state.update(bar)
        if row is None:
            continue
        stream_valid[i] = True
        assert row.open_time_ms == bar.open_time_ms
        assert row.tabular.dtype == np.float32 and row.window.dtype == np.float32
        assert np.array_equal(row.tabular, tab[i]), (i, row.tabular, tab[i])
        assert np.array_equal(row.window, win[i]), i
    assert np.array_equal(stream_valid, valid)
    assert valid.sum() > 0.9 * len(valid)


def test_features_ignore_the_future() -> None:
    """Row i is unchanged when every row after i is truncated or replaced by other bars."""
    k = load_klines(FUT, ["ETHUSDT"])["ETHUSDT"]
    cols = [k.open_time_ms, k.open, k.high, k.low, k.close, k.volume]
    n = 3000
    tab, win, valid = compute_batch(*(a[:n] for a in cols))
    for cut in (200, 1234, 2500):
        t_tab, t_win, t_valid = compute_batch(*(a[: cut + 1] for a in cols))
        assert np.array_equal(t_tab, tab[: cut + 1]) and np.array_equal(t_win, win[: cut + 1])
        assert np.array_equal(t_valid, valid[: cut + 1])
        # Replace the future with a different real stretch of the same symbol (a crash, a rally).
        altered = [a[:n].copy() for a in cols]
        for j, a in enumerate(cols[1:], start=1):
            altered[j][cut + 1 :] = a[10_000 : 10_000 + n - cut - 1] * 1.37
        a_tab, a_win, _ = compute_batch(*altered)
        assert np.array_equal(a_tab[: cut + 1], tab[: cut + 1])
        assert np.array_equal(a_win[: cut + 1], win[: cut + 1])
        assert not np.array_equal(a_tab[cut + 1 :], tab[cut + 1 :])  # the alteration mattered


def _pandas_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Textbook definitions written independently with pandas (rolling / ewm)."""
    c, h, lo = df["close"], df["high"], df["low"]
    r = np.log(c / c.shift(1))
    out = pd.DataFrame(index=df.index)
    for k in (1, 5, 15, 60):
        out[f"ret_{k}"] = np.log(c / c.shift(k))
    out["vol_15"] = r.rolling(15).std(ddof=0)
    out["vol_60"] = r.rolling(60).std(ddof=0)
    change = c.diff().fillna(0.0)
    ag = change.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    al = (-change).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = (100 - 100 / (1 + ag / al) - 50) / 50
    macd = (c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()) / c
    out["macd"] = macd
    out["macd_signal"] = macd.ewm(span=9, adjust=False).mean()
    out["macd_hist"] = out["macd"] - out["macd_signal"]
    sma, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pos_20"] = (c - sma) / (2 * sd)
    out["bb_width_20"] = 4 * sd / sma
    tr = pd.concat([h - lo, (h - c.shift()).abs(), (lo - c.shift()).abs()], axis=1).max(axis=1)
    out["atr_pct_14"] = tr.ewm(alpha=1 / 14, adjust=False).mean() / c
    lv = np.log1p(df["volume"])
    out["volume_z_60"] = (lv - lv.rolling(60).mean()) / lv.rolling(60).std(ddof=0)
    out["range_pct"] = (h - lo) / c
    out["close_pos"] = (c - lo) / (h - lo)
    return out


def test_definitions_match_an_independent_pandas_implementation() -> None:
    df = pd.read_csv(FUT / "SOLUSDT.csv.gz").iloc[:5000]
    tab, win, valid = compute_batch(*(df[c].to_numpy() for c in df.columns))
    ref = _pandas_reference(df)[list(FEATURE_NAMES)].to_numpy()
    rows = np.flatnonzero(valid)
    assert rows[0] == 127 and len(rows) == len(df) - 127
    # float32 output; EMA/Wilder seeds are identical to pandas' adjust=False, so tight tolerance
    ok = np.isfinite(ref[rows]).all(axis=1)  # pandas divides by zero where we return 0
    assert ok.mean() > 0.99
    np.testing.assert_allclose(tab[rows][ok], ref[rows][ok], rtol=2e-5, atol=1e-7)
    # window: 100*ln(price / last close) and the window z-score of ln(1+volume)
    i = rows[500]
    w = df.iloc[i - WINDOW + 1 : i + 1]
    last_close = df["close"].iloc[i]
    for ch, name in enumerate(("open", "high", "low", "close")):
        expected = 100 * np.log(w[name].to_numpy() / last_close)
        np.testing.assert_allclose(win[i][:, ch], expected, rtol=1e-5, atol=1e-6)
    lv = np.log1p(w["volume"].to_numpy())
    np.testing.assert_allclose(win[i][:, 4], (lv - lv.mean()) / lv.std(), rtol=1e-4, atol=1e-5)
    assert win.shape[1:] == (WINDOW, WINDOW_CHANNELS) and tab.shape[1] == len(FEATURE_NAMES)


def test_long_gap_resets_and_rewarms() -> None:
    """spot_1m 2021: the 150-minute exchange outage at 2021-04-20 02:00 resets the state."""
    k = load_klines(SPOT, ["BTCUSDT"])["BTCUSDT"]
    state = FeatureState()
    cols = (k.open_time_ms, k.open, k.high, k.low, k.close, k.volume)
    _, _, valid = compute_batch(*cols, state=state)
    gaps = np.flatnonzero(np.diff(k.open_time_ms) > 5 * BAR_MS) + 1  # first bar after a gap
    assert len(gaps) == state.resets == 2
    for g in gaps:
        assert valid[g - 1]  # warmed up before the outage
        assert not valid[g : g + state.warmup - 1].any()
        assert valid[g + state.warmup - 1]


def test_redelivered_bar_is_ignored_and_counted() -> None:
    bars = _read_bars_like_a_stream(FUT / "XRPUSDT.csv.gz")[:400]
    state = FeatureState()
    for b in bars[:300]:
        state.update(b)
    before = json.dumps(state.to_dict())
    assert state.update(bars[299]) is None and state.update(bars[150]) is None
    assert state.skipped == 2
    after = state.to_dict()
    after["skipped"] = 0
    snapshot = json.loads(before)
    snapshot["skipped"] = 0
    assert after == snapshot


@pytest.mark.parametrize(
    "bar",
    [
        Bar(0, 1.0, 0.9, 1.0, 1.0, 1.0),  # high < low
        Bar(0, 1.0, 1.0, 0.0, 0.5, 1.0),  # zero price
        Bar(0, 1.0, 2.0, 1.0, 1.5, -1.0),  # negative volume
        Bar(0, 1.0, float("inf"), 1.0, 1.5, 1.0),
        Bar(0, 1.0, 2.0, 1.0, float("nan"), 1.0),
    ],
)
def test_invalid_bar_is_rejected_with_context(bar: Bar) -> None:
    with pytest.raises(FeatureError, match="open_time_ms=0"):
        FeatureState().update(bar)


def test_state_of_another_feature_version_is_refused() -> None:
    d = FeatureState().to_dict()
    d["feature_version"] = "f0"
    with pytest.raises(FeatureError, match="feature_version"):
        FeatureState.from_dict(d)


@pytest.mark.slow
def test_no_nan_or_inf_on_every_file_of_spot_2021() -> None:
    """29 symbols, gaps, zero-volume minutes, 2021 all-time-high volatility: all finite."""
    files = sorted(SPOT.glob("*.csv.gz"))
    assert len(files) == 29
    for path in files:
        tab, win, valid = _batch(path)
        assert valid.sum() > len(valid) - 3 * 128, path.name
        assert np.isfinite(tab).all(), path.name
        assert np.isfinite(win).all(), path.name


def test_stale_snapshot_resets_instead_of_bridging_lost_bars() -> None:
    """A restore from a snapshot 10 bars behind the stream re-warms; it never fakes history."""
    bars = _read_bars_like_a_stream(FUT / "BNBUSDT.csv.gz")[:600]
    state = FeatureState()
    for b in bars[:300]:
        state.update(b)
    restored = FeatureState.from_dict(json.loads(json.dumps(state.to_dict())))
    outputs = [restored.update(b) for b in bars[310:]]
    assert restored.resets == 1
    assert all(o is None for o in outputs[: restored.warmup - 1])
    assert outputs[restored.warmup - 1] is not None
