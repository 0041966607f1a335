"""Training-row thinning must keep every symbol's share (rows are ordered by time, then symbol)."""

import numpy as np

from models.sampling import one_in


def test_thinning_keeps_each_symbol_equally_represented():
    symbols, minutes = 16, 2000
    idx = np.arange(symbols * minutes)  # row i = minute i // 16, symbol i % 16
    kept = one_in(idx, 2, seed=7)
    shares = np.bincount(kept % symbols, minlength=symbols) / minutes
    assert abs(len(kept) - len(idx) / 2) <= 1
    assert shares.min() > 0.45 and shares.max() < 0.55  # idx[::2] gives 1.0 and 0.0
    assert np.all(np.diff(kept) > 0)  # still in time order
    assert np.array_equal(kept, one_in(idx, 2, seed=7))  # seeded


def test_stride_one_keeps_everything():
    idx = np.arange(10)
    assert np.array_equal(one_in(idx, 1, seed=0), idx)
