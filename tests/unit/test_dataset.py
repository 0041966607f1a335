"""Labels (fees, dead zone, horizon), datasets on real data without look-ahead, and
walk-forward splits that are time-ordered and purged."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from models.dataset import (
    BUY,
    CLASSES,
    HOLD,
    SELL,
    Dataset,
    DatasetError,
    LabelSpec,
    build_dataset,
    forward_returns,
    label_returns,
    load_klines,
    to_ms,
    walk_forward_splits,
)
from models.features import BAR_MS, FEATURE_NAMES, WINDOW, compute_batch
from tests.shared_data import BINANCE

FUT = BINANCE / "um_futures_1m_2025"
SPOT = BINANCE / "spot_1m"
pytestmark = pytest.mark.skipif(not FUT.exists(), reason="shared Binance data not present")

START, END = "2025-05-10T00:00Z", "2025-05-11T00:00Z"


@pytest.fixture(scope="module")
def two_symbols() -> Dataset:
    return build_dataset(FUT, ["BTCUSDT", "SOLUSDT"], START, END, LabelSpec(horizon_bars=15))


def test_label_thresholds_by_hand() -> None:
    spec = LabelSpec(horizon_bars=15, fee_rate=0.0004, dead_zone=0.0005)  # threshold 0.13 %
    assert spec.threshold == pytest.approx(0.0013)
    fwd = [0.0014, 0.0013, 0.0012, 0.0, -0.0012, -0.0013, -0.0014, 0.05, -0.05]
    assert label_returns(fwd, spec).tolist() == [
        BUY, HOLD, HOLD, HOLD, HOLD, HOLD, SELL, BUY, SELL,
    ]  # fmt: skip
    # Without a dead zone a long must still clear the round-trip fee (0.08 %).
    no_dz = LabelSpec(fee_rate=0.0004, dead_zone=0.0)
    assert label_returns([0.0007, 0.0009, -0.0009], no_dz).tolist() == [HOLD, BUY, SELL]
    assert CLASSES[SELL] == "SELL" and CLASSES[HOLD] == "HOLD" and CLASSES[BUY] == "BUY"


def test_forward_return_needs_a_contiguous_horizon() -> None:
    t = np.array([0, 1, 2, 3, 5, 6, 7], dtype=np.int64) * BAR_MS  # minute 4 is missing
    close = np.array([100.0, 101.0, 102.0, 103.0, 105.0, 106.0, 107.0])
    fwd, ok = forward_returns(t, close, 2)
    assert ok.tolist() == [True, True, False, False, True, False, False]
    assert fwd[0] == pytest.approx(102.0 / 100.0 - 1) and fwd[4] == pytest.approx(107 / 105 - 1)


def test_label_spec_rejects_nonsense() -> None:
    with pytest.raises(DatasetError):
        LabelSpec(horizon_bars=0)
    with pytest.raises(DatasetError):
        LabelSpec(fee_rate=-0.1)


def test_rows_labels_and_features_on_real_data(two_symbols: Dataset) -> None:
    ds = two_symbols
    s, e = to_ms(START), to_ms(END)
    assert ds.tabular.shape == (len(ds), len(FEATURE_NAMES)) and ds.window.shape[1] == WINDOW
    assert set(np.unique(ds.symbol)) == {"BTCUSDT", "SOLUSDT"}
    assert ds.time_ms.min() == s  # history before `start` warmed the features up
    # the horizon of every label ends before `end`: nothing of [end, ...) was looked at
    assert ds.time_ms.max() + 15 * BAR_MS < e
    assert len(ds) == 2 * (1440 - 15)
    # rows are in (time, symbol) order
    key = ds.time_ms.astype(np.float64) * 10 + (ds.symbol == "SOLUSDT")
    assert np.all(np.diff(key) > 0)
    # labels come from the raw bars h minutes later, and only from them
    for sym in ("BTCUSDT", "SOLUSDT"):
        k = load_klines(FUT, [sym])[sym]
        m = ds.symbol == sym
        idx = np.searchsorted(k.open_time_ms, ds.time_ms[m])
        expected = k.close[idx + 15] / k.close[idx] - 1
        np.testing.assert_array_equal(ds.fwd_return[m], expected)
        np.testing.assert_array_equal(ds.y[m], label_returns(expected, ds.label_spec))
        np.testing.assert_array_equal(ds.close[m], k.close[idx])
        # features are those of the full-history stream at the same minute
        tab, win, _ = compute_batch(k.open_time_ms, k.open, k.high, k.low, k.close, k.volume)
        np.testing.assert_array_equal(ds.tabular[m], tab[idx])
        np.testing.assert_array_equal(ds.window[m], win[idx])
    assert sum(ds.class_balance().values()) == pytest.approx(1.0)
    d = ds.describe()
    assert (
        d["feature_names"] == list(FEATURE_NAMES) and d["end_exclusive"] == "2025-05-11T00:00:00Z"
    )


def test_no_look_ahead_across_the_end(two_symbols: Dataset) -> None:
    """A later `end` adds rows but changes nothing about the rows already there."""
    longer = build_dataset(FUT, ["BTCUSDT", "SOLUSDT"], START, "2025-05-11T06:00Z")
    n = len(two_symbols)
    assert len(longer) > n
    for name in ("tabular", "window", "y", "time_ms", "symbol", "close", "fwd_return"):
        np.testing.assert_array_equal(getattr(longer, name)[:n], getattr(two_symbols, name))


def test_stride_keeps_the_same_minutes_for_every_symbol() -> None:
    ds = build_dataset(FUT, ["ETHUSDT", "XRPUSDT"], START, END, stride=5)
    assert np.all((ds.time_ms // BAR_MS) % 5 == 0)
    eth, xrp = ds.time_ms[ds.symbol == "ETHUSDT"], ds.time_ms[ds.symbol == "XRPUSDT"]
    np.testing.assert_array_equal(eth, xrp)
    assert ds.meta["stride"] == 5


def test_gap_in_history_drops_rows_around_the_outage() -> None:
    """spot 2021 outage 2021-04-20 02:00-04:29: no label spans it, no row during re-warm-up."""
    ds = build_dataset(SPOT, ["ETHUSDT"], "2021-04-19T00:00Z", "2021-04-21T00:00Z")
    gap_start, gap_end = to_ms("2021-04-20T02:00Z"), to_ms("2021-04-20T04:30Z")
    first_valid = gap_end + 127 * BAR_MS  # 128 bars of warm-up after the reset
    assert not np.any((ds.time_ms + 15 * BAR_MS >= gap_start) & (ds.time_ms < first_valid))
    assert np.any(ds.time_ms == first_valid)


def test_walk_forward_folds_are_time_ordered_expanding_and_purged(two_symbols: Dataset) -> None:
    t = two_symbols.time_ms
    splits = walk_forward_splits(t, n_folds=4, gap_bars=15)
    assert len(splits) == 4
    prev_train, prev_val_end = 0, -1
    for sp in splits:
        val_start = t[sp.val].min()
        # purge: every training label's horizon ends strictly before validation starts
        assert t[sp.train].max() + 15 * BAR_MS < val_start
        assert val_start > prev_val_end  # validation blocks move forward and never overlap
        assert len(sp.train) > prev_train  # expanding window
        assert np.intersect1d(sp.train, sp.val).size == 0
        prev_train, prev_val_end = len(sp.train), t[sp.val].max()
    # folds together validate on the last 4/5 of the time range, every row once
    all_val = np.concatenate([sp.val for sp in splits])
    assert len(np.unique(all_val)) == len(all_val)
    with pytest.raises(DatasetError):
        walk_forward_splits(t, n_folds=4, gap_bars=10_000)
    with pytest.raises(DatasetError):
        walk_forward_splits(np.array([], dtype=np.int64))


def test_to_ms_accepts_utc_forms_and_refuses_naive_datetimes() -> None:
    ms = 1747785600000  # 2025-05-21 00:00 UTC
    assert to_ms("2025-05-21T00:00Z") == ms == to_ms("2025-05-21") == to_ms(ms)
    assert to_ms(dt.datetime(2025, 5, 21, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == ms
    with pytest.raises(DatasetError):
        to_ms(dt.datetime(2025, 5, 21))  # naive on purpose
    with pytest.raises(DatasetError):
        to_ms("yesterday")


def test_missing_symbol_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match="NOPEUSDT"):
        load_klines(FUT, ["NOPEUSDT"])
