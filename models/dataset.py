"""Datasets and labels from the kline files, and walk-forward splits by time.

Label (``LabelSpec``): the simple forward return over ``horizon_bars`` from the close of bar *i*
(the moment the streaming system sees the bar) to the close of bar ``i + horizon_bars``::

    fwd = close[i + h] / close[i] - 1
    BUY  if fwd - 2 * fee_rate >  dead_zone     (a long round trip clears fees + margin)
    SELL if -fwd - 2 * fee_rate > dead_zone     (a short round trip does)
    HOLD otherwise

A row gets a label only if bar ``i + h`` exists, lies exactly ``h`` minutes later (no gap inside
the horizon) and lies before ``end``: a training set cut at the evaluation start never peeks
into the evaluation window. Features may use bars *before* ``start`` (history, warm-up), never
after the row. Rows of all symbols are sorted by (time, symbol), never shuffled.

Times are UTC epoch milliseconds; ``start`` is inclusive, ``end`` exclusive. Strings are ISO 8601
(without an offset they are read as UTC).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.features import (
    BAR_MS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    MAX_GAP_BARS,
    WINDOW,
    WINDOW_CHANNELS,
    compute_batch,
)

CLASSES: tuple[str, str, str] = ("SELL", "HOLD", "BUY")
SELL, HOLD, BUY = 0, 1, 2

DATA_SOURCE = "um_futures_1m_2025"
"""The MIT-licensed futures set: training, validation and the held-out evaluation window."""
EVAL_START = "2025-05-21T00:00Z"
EVAL_END = "2025-05-25T12:00Z"
"""Held-out evaluation window [EVAL_START, EVAL_END): never used for training or tuning."""
DEMO_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
KLINE_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")

TimeLike = int | str | dt.datetime


class DatasetError(ValueError):
    """Data cannot be loaded or split as asked; the message names the file, symbol or range."""


@dataclass(frozen=True)
class LabelSpec:
    """Three-class label on the forward return net of round-trip fees, with a dead zone."""

    horizon_bars: int = 15
    fee_rate: float = 0.0004
    """Fee per side (Binance USD-M taker 0.04 %); a round trip pays it twice."""
    dead_zone: float = 0.0005
    """Extra return a side must clear beyond fees; below it the label is HOLD."""

    def __post_init__(self) -> None:
        if self.horizon_bars < 1:
            raise DatasetError(f"horizon_bars must be >= 1, got {self.horizon_bars}")
        if self.fee_rate < 0 or self.dead_zone < 0:
            raise DatasetError(f"fee_rate and dead_zone must be >= 0: {self}")

    @property
    def threshold(self) -> float:
        """Absolute forward return beyond which BUY/SELL is labelled."""
        return 2.0 * self.fee_rate + self.dead_zone

    def to_dict(self) -> dict[str, Any]:
        """Manifest form, with the rule spelled out for a reader of the JSON."""
        return {
            **asdict(self),
            "classes": list(CLASSES),
            "rule": "fwd=close[i+h]/close[i]-1; BUY if fwd>2*fee+dead_zone; "
            "SELL if fwd<-(2*fee+dead_zone); else HOLD",
        }


def label_returns(fwd_return: npt.ArrayLike, spec: LabelSpec) -> npt.NDArray[np.int64]:
    """Class index (SELL 0, HOLD 1, BUY 2) for each forward simple return."""
    fwd = np.asarray(fwd_return, dtype=np.float64)
    y = np.full(fwd.shape, HOLD, dtype=np.int64)
    y[fwd > spec.threshold] = BUY
    y[fwd < -spec.threshold] = SELL
    return y


def to_ms(t: TimeLike) -> int:
    """UTC epoch ms from ms, an ISO string (UTC if no offset) or an aware datetime."""
    if isinstance(t, bool):
        raise DatasetError(f"not a time: {t!r}")
    if isinstance(t, int | np.integer):
        return int(t)
    if isinstance(t, str):
        try:
            parsed = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError as exc:
            raise DatasetError(f"not an ISO 8601 time: {t!r}") from exc
        t = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            raise DatasetError(f"naive datetime {t!r}: pass an aware (UTC) datetime")
        return int(t.timestamp() * 1000)
    raise DatasetError(f"not a time: {t!r}")


def ms_to_iso(ms: int) -> str:
    """``2025-05-21T00:00:00Z`` form for manifests and reports."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Klines:
    """One symbol's 1-minute bars, sorted by time (float64 prices, int64 ms)."""

    symbol: str
    open_time_ms: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.open_time_ms)


RowsT = TypeVar("RowsT", "Klines", "Dataset")


def _select_rows(rows: RowsT, key: slice | npt.NDArray[Any]) -> RowsT:
    """``rows`` with every array field indexed by ``key``; the other fields are kept as they are."""
    arrays: dict[str, Any] = {
        f.name: value[key]
        for f in dataclasses.fields(rows)
        if isinstance(value := getattr(rows, f.name), np.ndarray)
    }
    return dataclasses.replace(rows, **arrays)


def _read_kline_file(path: Path, symbol: str) -> Klines:
    try:
        df = pd.read_csv(path, dtype={"open_time_ms": np.int64})
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    if tuple(df.columns) != KLINE_COLUMNS:
        raise DatasetError(f"{path}: header {tuple(df.columns)} != {KLINE_COLUMNS}")
    t = df["open_time_ms"].to_numpy(np.int64)
    if len(t) > 1 and not bool(np.all(np.diff(t) > 0)):
        raise DatasetError(f"{path}: open_time_ms is not strictly increasing")
    cols = {c: df[c].to_numpy(np.float64) for c in KLINE_COLUMNS[1:]}
    return Klines(symbol=symbol, open_time_ms=t, **cols)


def _slice(k: Klines, start_ms: int | None, end_ms: int | None) -> Klines:
    lo = 0 if start_ms is None else int(np.searchsorted(k.open_time_ms, start_ms, "left"))
    hi = len(k) if end_ms is None else int(np.searchsorted(k.open_time_ms, end_ms, "left"))
    return _select_rows(k, slice(lo, hi))


def available_symbols(data_dir: Path | str) -> list[str]:
    """Symbols with a ``<SYMBOL>.csv.gz`` file in ``data_dir``, sorted."""
    return sorted(p.name.removesuffix(".csv.gz") for p in Path(data_dir).glob("*.csv.gz"))


def load_klines(
    data_dir: Path | str,
    symbols: Iterable[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
) -> dict[str, Klines]:
    """Bars with ``start <= open_time < end`` per symbol (all files in ``data_dir`` if None)."""
    root = Path(data_dir)
    names = list(symbols) if symbols is not None else available_symbols(root)
    if not names:
        raise DatasetError(f"no kline files (*.csv.gz) in {root}")
    s = None if start is None else to_ms(start)
    e = None if end is None else to_ms(end)
    out: dict[str, Klines] = {}
    for sym in names:
        path = root / f"{sym}.csv.gz"
        if not path.exists():
            raise DatasetError(f"no file for symbol {sym}: {path}")
        out[sym] = _slice(_read_kline_file(path, sym), s, e)
    return out


@dataclass(frozen=True)
class Dataset:
    """Model-ready rows of one or more symbols, sorted by (time_ms, symbol).

    ``tabular (n, F)`` and ``window (n, W, 5)`` are float32 model inputs; ``y`` class indices in
    ``CLASSES`` order; ``close`` the row's close; ``fwd_return`` the labelled forward return.
    """

    tabular: npt.NDArray[np.float32]
    window: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    time_ms: npt.NDArray[np.int64]
    symbol: npt.NDArray[np.str_]
    close: npt.NDArray[np.float64]
    fwd_return: npt.NDArray[np.float64]
    label_spec: LabelSpec = field(default_factory=LabelSpec)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: npt.ArrayLike) -> Dataset:
        """Rows ``idx`` (indices or a boolean mask), same label spec and metadata."""
        return dataclasses.replace(_select_rows(self, np.asarray(idx)), meta=dict(self.meta))

    def class_balance(self) -> dict[str, float]:
        """Share of each class among the labels (sums to 1; zeros for an empty set)."""
        counts = np.bincount(self.y, minlength=len(CLASSES)).astype(np.float64)
        total = counts.sum()
        shares = counts / total if total else counts
        return {c: float(s) for c, s in zip(CLASSES, shares, strict=True)}

    def time_range(self) -> tuple[str, str] | None:
        """First and last row time (ISO, UTC), None if empty."""
        if not len(self):
            return None
        return ms_to_iso(int(self.time_ms.min())), ms_to_iso(int(self.time_ms.max()))

    def describe(self) -> dict[str, Any]:
        """Manifest block: source, ranges, features, label definition, class balance."""
        return {
            **self.meta,
            "rows": len(self),
            "row_time_range": self.time_range(),
            "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "window": int(self.window.shape[1]),
            "window_channels": WINDOW_CHANNELS,
            "label": self.label_spec.to_dict(),
            "class_balance": self.class_balance(),
        }


class _SymbolRows(NamedTuple):
    tabular: npt.NDArray[np.float32]
    window: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    time_ms: npt.NDArray[np.int64]
    close: npt.NDArray[np.float64]
    fwd_return: npt.NDArray[np.float64]


def forward_returns(
    time_ms: npt.NDArray[np.int64], close: npt.NDArray[np.float64], horizon_bars: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """``close[i+h]/close[i]-1`` and whether it is defined (bar i+h exists exactly h bars on)."""
    n = len(close)
    fwd = np.zeros(n, dtype=np.float64)
    ok = np.zeros(n, dtype=np.bool_)
    h = horizon_bars
    if n > h:
        fwd[: n - h] = close[h:] / close[: n - h] - 1.0
        ok[: n - h] = (time_ms[h:] - time_ms[: n - h]) == h * BAR_MS
    return fwd, ok


def _symbol_rows(
    k: Klines, start_ms: int | None, spec: LabelSpec, window: int, stride: int
) -> _SymbolRows:
    """Features over all of ``k`` (history included), kept rows: in range, valid, labelled."""
    tab, win, valid = compute_batch(
        k.open_time_ms, k.open, k.high, k.low, k.close, k.volume,
        window=window, max_gap_bars=MAX_GAP_BARS,
    )  # fmt: skip
    fwd, labelled = forward_returns(k.open_time_ms, k.close, spec.horizon_bars)
    keep = valid & labelled & ((k.open_time_ms // BAR_MS) % stride == 0)
    if start_ms is not None:
        keep &= k.open_time_ms >= start_ms
    return _SymbolRows(
        tabular=tab[keep],
        window=win[keep],
        y=label_returns(fwd[keep], spec),
        time_ms=k.open_time_ms[keep],
        close=k.close[keep],
        fwd_return=fwd[keep],
    )


def build_dataset(
    data_dir: Path | str,
    symbols: Sequence[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    label_spec: LabelSpec | None = None,
    *,
    window: int = WINDOW,
    stride: int = 1,
) -> Dataset:
    """Features + labels for rows with ``start <= time < end`` (labels end before ``end`` too).

    Bars before ``start`` are used as history (feature warm-up) only. ``stride`` keeps rows
    whose minute index is a multiple of it (same minutes for every symbol), to bound memory:
    the window tensor costs ``W * 5 * 4`` bytes per row (1.3 kB at W=64).
    """
    spec = label_spec or LabelSpec()
    if stride < 1:
        raise DatasetError(f"stride must be >= 1, got {stride}")
    start_ms = None if start is None else to_ms(start)
    end_ms = None if end is None else to_ms(end)
    klines = load_klines(data_dir, symbols, None, end_ms)
    parts = {s: _symbol_rows(k, start_ms, spec, window, stride) for s, k in klines.items()}
    if not any(len(p.y) for p in parts.values()):
        raise DatasetError(
            f"no labelled rows in {data_dir} for {list(klines)} in [{start}, {end}) "
            f"(warm-up needs history; the horizon must end before `end`)"
        )
    sym = np.concatenate([np.full(len(p.y), s) for s, p in parts.items()])
    t = np.concatenate([p.time_ms for p in parts.values()])
    order = np.lexsort((sym, t))  # time first, then symbol: a stable, global time order

    def cat(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts.values()])[order]

    meta = {
        "data_source": Path(data_dir).name,
        "data_dir": str(data_dir),
        "symbols": list(klines),
        "start": None if start_ms is None else ms_to_iso(start_ms),
        "end_exclusive": None if end_ms is None else ms_to_iso(end_ms),
        "stride": stride,
        "max_gap_bars": MAX_GAP_BARS,
    }
    return Dataset(
        tabular=cat("tabular"),
        window=cat("window"),
        y=cat("y"),
        time_ms=t[order],
        symbol=sym[order],
        close=cat("close"),
        fwd_return=cat("fwd_return"),
        label_spec=spec,
        meta=meta,
    )


class Split(NamedTuple):
    """Row indices of one walk-forward fold: train strictly before validation, purged."""

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]


def walk_forward_splits(
    time_ms: npt.ArrayLike, n_folds: int = 4, gap_bars: int = 15, *, min_train_blocks: int = 1
) -> list[Split]:
    """Expanding-window folds by time over ``n_folds + min_train_blocks`` equal time blocks.

    Fold k validates on block ``min_train_blocks + k`` and trains on every row whose time is
    more than ``gap_bars`` bars before that block starts (purge: with ``gap_bars`` >= the label
    horizon, no training label's horizon reaches into the validation period). Works on rows of
    several symbols in any order; indices refer to ``time_ms``.
    """
    t = np.asarray(time_ms, dtype=np.int64)
    if n_folds < 1 or min_train_blocks < 1 or gap_bars < 0:
        raise DatasetError(f"bad split arguments: {n_folds=} {min_train_blocks=} {gap_bars=}")
    if len(t) == 0:
        raise DatasetError("cannot split an empty dataset")
    t0, t1 = int(t.min()), int(t.max()) + BAR_MS
    n_blocks = n_folds + min_train_blocks
    edges = [t0 + (t1 - t0) * b // n_blocks for b in range(n_blocks + 1)]
    splits = []
    for k in range(n_folds):
        v0, v1 = edges[min_train_blocks + k], edges[min_train_blocks + k + 1]
        train = np.flatnonzero(t < v0 - gap_bars * BAR_MS)
        val = np.flatnonzero((t >= v0) & (t < v1))
        if not len(train) or not len(val):
            raise DatasetError(
                f"fold {k}: empty train ({len(train)}) or validation ({len(val)}) set; "
                f"fewer folds or a smaller gap needed"
            )
        splits.append(Split(train=train, val=val))
    return splits
