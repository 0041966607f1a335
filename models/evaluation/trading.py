"""What a predictor's signals would have earned: two trading rules over the evaluation rows.

* **Hold until the signal changes** (:func:`trading_outcome`): per symbol, after the close of bar
  *i* the position becomes +1 / -1 / 0 for BUY / SELL / HOLD and is held over bar *i+1*; every
  unit of position change pays ``fee_rate``, the last position is closed at the end; symbols are
  equal-weight, rebalanced each bar; Sharpe annualized from 1-minute returns.
* **Fixed-horizon trades** (:func:`horizon_trading`): the trade the label describes; when flat,
  a BUY/SELL opens at the signal bar's close and closes ``horizon`` bars later, signals during a
  trade are ignored, each trade pays the round-trip fee.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import HOLD, Dataset
from models.features import BAR_MS

BARS_PER_YEAR = 525_600
TRADING_RULE = (
    "hold until the signal changes: position +1/-1/0 for BUY/SELL/HOLD from the close of the "
    "signal bar over the next bar (close-to-close), fee per side on every unit of position "
    "change, last position closed at the end; symbols equal-weight, rebalanced each bar"
)
HORIZON_RULE = (
    "when flat, a BUY/SELL opens a long/short at the signal bar's close and closes it after the "
    "label horizon; signals during a trade are ignored; a round-trip fee per trade; per symbol, "
    "equal notional per trade, returns summed (not compounded)"
)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def positions(pred: IntArray) -> npt.NDArray[np.int8]:
    """SELL -> -1, HOLD -> 0, BUY -> +1."""
    return (np.asarray(pred) - HOLD).astype(np.int8)


def next_bar_returns(
    time_ms: IntArray, close: FloatArray, symbol: npt.NDArray[np.str_]
) -> FloatArray:
    """``close[next]/close[i]-1`` to the same symbol's next row if it is exactly one bar later,
    else 0 (last row of a symbol, or a gap: a position is not carried across missing data)."""
    r = np.zeros(len(close), dtype=np.float64)
    for sym in np.unique(symbol):
        idx = np.flatnonzero(symbol == sym)  # dataset rows are time-ordered within a symbol
        nxt = idx[1:]
        cur = idx[:-1]
        ok = time_ms[nxt] - time_ms[cur] == BAR_MS
        r[cur[ok]] = close[nxt[ok]] / close[cur[ok]] - 1.0
    return r


def _symbol_pnl(
    pos: npt.NDArray[np.int8], ret: FloatArray, fee_rate: float
) -> tuple[FloatArray, int]:
    """Per-bar net returns of one symbol's position path and its number of entries."""
    p = pos.astype(np.float64)
    prev = np.concatenate(([0.0], p[:-1]))
    turnover = np.abs(p - prev)
    turnover[-1] += abs(p[-1])  # close the last position at the end of the window
    entries = int(np.count_nonzero((p != 0) & (p != prev)))
    return p * ret - fee_rate * turnover, entries


def trading_outcome(
    pred: IntArray, ds: Dataset, ret_next: FloatArray, fee_rate: float
) -> dict[str, Any]:
    """Hold-until-signal-changes P&L, equal-weight portfolio over symbols (see module doc)."""
    pos = positions(pred)
    net = np.zeros(len(pred), dtype=np.float64)
    trades = 0
    for sym in np.unique(ds.symbol):
        idx = np.flatnonzero(ds.symbol == sym)
        net[idx], entries = _symbol_pnl(pos[idx], ret_next[idx], fee_rate)
        trades += entries
    times, inverse = np.unique(ds.time_ms, return_inverse=True)
    per_bar = np.bincount(inverse, net) / np.bincount(inverse)
    equity = np.cumprod(1.0 + per_bar)
    std = float(per_bar.std())
    peak = np.maximum.accumulate(equity)
    return {
        "trades": trades,
        "exposure": float(np.abs(pos).mean()),
        "net_return": float(equity[-1] - 1.0),
        "sharpe_annualized": float(per_bar.mean() / std * math.sqrt(BARS_PER_YEAR)) if std else 0.0,
        "max_drawdown": float((1.0 - equity / peak).max()),
        "_equity": equity,
        "_times": times,
    }


def horizon_trade_returns(pred: IntArray, fwd_return: FloatArray, horizon: int) -> FloatArray:
    """Gross returns of non-overlapping fixed-horizon trades of one symbol's time-ordered rows.

    When flat, a BUY/SELL at row i opens a long/short at that close and closes it ``horizon``
    bars later (the labelled ``fwd_return[i]``); signals while a trade is open are ignored.
    This is the trade the label describes, so it tests the signal on its own terms.
    """
    out = []
    i, n = 0, len(pred)
    while i < n:
        side = int(pred[i]) - HOLD
        if side:
            out.append(side * float(fwd_return[i]))
            i += horizon
        else:
            i += 1
    return np.asarray(out, dtype=np.float64)


def horizon_trading(pred: IntArray, ds: Dataset) -> dict[str, Any]:
    """Fixed-horizon trade statistics over all symbols, net of a round-trip fee per trade."""
    spec = ds.label_spec
    gross = np.concatenate([
        horizon_trade_returns(pred[m], ds.fwd_return[m], spec.horizon_bars)
        for m in (ds.symbol == s for s in np.unique(ds.symbol))
    ])  # fmt: skip
    net = gross - 2.0 * spec.fee_rate
    return {
        "trades": len(net),
        "win_rate": float((net > 0).mean()) if len(net) else None,
        "mean_net_return": float(net.mean()) if len(net) else None,
        "sum_net_return": float(net.sum()),
    }
