"""The one feature definition: tabular indicators and the normalized OHLCV window.

Training (``compute_batch``) and streaming (``FeatureState.update`` called by the ``features``
agent once per closed bar and symbol) run the *same* code: ``compute_batch`` simply feeds the
rows through a ``FeatureState``. Batch/stream parity is therefore exact by construction, and the
tests prove it on real data including a state round trip through ``to_dict``/``from_dict``.

Everything here is causal: the row emitted for bar *i* depends on bars ``<= i`` only.

Definitions (``c`` close, ``h`` high, ``l`` low, ``v`` volume, ``r_t = ln(c_t / c_{t-1})``):

============== ==================================================================================
ret_k          ``ln(c_t / c_{t-k})`` for k in 1, 5, 15, 60 bars
vol_k          population std of ``r`` over the last k returns (k = 15, 60)
rsi_14         Wilder RSI(14) rescaled to [-1, 1]: ``(RSI - 50) / 50``; 0 when flat
macd           ``(EMA12(c) - EMA26(c)) / c``; macd_signal = EMA9(macd); macd_hist = difference
bb_pos_20      ``(c - SMA20) / (2 * std20)``: -1/+1 at the lower/upper Bollinger band; 0 if flat
bb_width_20    ``4 * std20 / SMA20``
atr_pct_14     Wilder ATR(14) / c
volume_z_60    z-score of ``ln(1 + v)`` against its last 60 values (0 if they are all equal)
range_pct      ``(h - l) / c``
close_pos      ``(c - l) / (h - l)`` in [0, 1]; 0.5 for a flat bar (zero-volume minutes)
============== ==================================================================================

Window (``WINDOW`` x ``WINDOW_CHANNELS``, oldest row first): OHLC channels are
``100 * ln(price / c_last)`` (percent log distance to the latest close, so the last row's close
channel is 0 and the window is scale free across symbols); the volume channel is ``ln(1 + v)``
z-scored within the window (0 if constant, e.g. a run of zero-volume minutes).

Indicator recursions (EMA, Wilder) start from the first bar after a (re)start; their start-up
bias decays below 1e-4 of the initial deviation within ``WARMUP_BARS``, and no row is emitted
before that. Time gaps: a bar more than ``max_gap_bars`` after the previous one resets the state
(the 2021 spot set has exchange-wide outages of 150 and 283 minutes; bridging those would make
"1 bar" mean hours). Shorter gaps are bridged: indicators count rows, not minutes. A bar at or
before the last seen time is ignored and counted in ``FeatureState.skipped`` (at-least-once
redelivery is idempotent). Zero-volume bars are valid input.

Pure Python + numpy only (imported by the streaming workers). Hot-path arithmetic uses ``math``
on Python floats, which is several times faster than numpy on scalars and tiny arrays.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from models.rolling_moments import RollingMoments

FEATURE_VERSION = "f1-2025.11"
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_15",
    "ret_60",
    "vol_15",
    "vol_60",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pos_20",
    "bb_width_20",
    "atr_pct_14",
    "volume_z_60",
    "range_pct",
    "close_pos",
)
N_FEATURES = len(FEATURE_NAMES)
WINDOW = 64
WINDOW_CHANNELS = 5
WINDOW_CHANNEL_NAMES: tuple[str, ...] = ("open", "high", "low", "close", "volume")
WARMUP_BARS = 128
"""Bars consumed after a (re)start before the first row is emitted (>= WINDOW and >= 61)."""
MAX_GAP_BARS = 5
"""Default: a jump of more than this many bar intervals resets the state."""
BAR_MS = 60_000

_RET_HORIZONS = (1, 5, 15, 60)
_VOL_SHORT, _VOL_LONG = 15, 60
_RSI_N = 14
_ATR_N = 14
_BB_N = 20
_VOLZ_N = 60
_EMA_FAST, _EMA_SLOW, _EMA_SIGNAL = 12, 26, 9
_WINDOW_SCALE = 100.0  # percent log distance: keeps the price channels O(0.1 .. 10)
_TINY = 1e-12  # std below this (relative) is treated as zero: flat input, no division


class FeatureError(ValueError):
    """A bar cannot be turned into features (invalid prices, bad state); carries the context."""


class Bar(NamedTuple):
    """One closed kline. ``open_time_ms`` is the event time (UTC epoch ms of the bar open)."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """Model inputs for one bar: ``tabular`` (F,) and ``window`` (WINDOW, 5), both float32."""

    open_time_ms: int
    tabular: npt.NDArray[np.float32]
    window: npt.NDArray[np.float32]
    close: float
    atr_pct: float
    volatility: float
    """Std of 1-bar log returns over the last 60 bars (``vol_60``), for sizing and exits."""


def _validate(bar: Bar) -> None:
    """Reject bars no exchange publishes; they would poison every recursion after them."""
    o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    if not (low > 0.0 and h >= low and low <= o <= h and low <= c <= h and v >= 0.0):
        raise FeatureError(f"invalid bar at open_time_ms={bar.open_time_ms}: {bar!r}")
    if not math.isfinite(h + v):
        raise FeatureError(f"non-finite bar at open_time_ms={bar.open_time_ms}: {bar!r}")


def _safe_std_ratio(num: float, var: float, scale: float) -> float:
    """``num / sqrt(var)``, or 0 when the std is negligible relative to ``scale`` (flat input)."""
    std = math.sqrt(var)
    if std <= _TINY * max(abs(scale), 1.0):
        return 0.0
    return num / std


class FeatureState:
    """Incremental feature computation for one symbol. Not thread-safe; one per symbol.

    ``update(bar)`` returns a ``FeatureRow`` once ``WARMUP_BARS`` bars have been seen since the
    last (re)start, else ``None``. ``to_dict``/``from_dict`` give a JSON-safe snapshot (for a
    Faust table) from which the computation continues bit-identically.
    """

    def __init__(self, window: int = WINDOW, max_gap_bars: int = MAX_GAP_BARS) -> None:
        if window < 2:
            raise FeatureError(f"window must be >= 2, got {window}")
        if max_gap_bars < 1:
            raise FeatureError(f"max_gap_bars must be >= 1, got {max_gap_bars}")
        self.window = window
        self.max_gap_bars = max_gap_bars
        self.warmup = max(WARMUP_BARS, window, _RET_HORIZONS[-1] + 1)
        self.skipped = 0
        self.resets = 0
        self.last_time_ms: int | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget all history (start or long gap); the next ``warmup`` bars emit nothing."""
        w = self.window
        self.seen = 0
        self.closes: deque[float] = deque(maxlen=_RET_HORIZONS[-1] + 1)
        self.ret_short = RollingMoments(_VOL_SHORT)
        self.ret_long = RollingMoments(_VOL_LONG)
        self.bb = RollingMoments(_BB_N)
        self.volz = RollingMoments(_VOLZ_N)
        self.win_vol = RollingMoments(w)
        self.ema_fast = self.ema_slow = self.ema_signal = 0.0
        self.avg_gain = self.avg_loss = self.atr = 0.0
        # Log OHLC + log1p(volume) per bar, written twice (at p and p + w) so the last w rows
        # are always one contiguous slice: no copy, no np.roll on the hot path.
        self.ring = np.zeros((2 * w, WINDOW_CHANNELS), dtype=np.float64)
        self.pos = 0

    # -- the hot path ------------------------------------------------------------------------

    def update(self, bar: Bar) -> FeatureRow | None:
        """Consume one closed bar (event-time ordered); return its features when warmed up."""
        t = bar.open_time_ms
        last = self.last_time_ms
        if last is not None:
            if t <= last:
                self.skipped += 1
                return None
            if t - last > self.max_gap_bars * BAR_MS:
                self.resets += 1
                self._reset()
        _validate(bar)
        self.last_time_ms = t
        self._advance(bar)
        if self.seen < self.warmup:
            return None
        return self._emit(bar)

    def _advance(self, bar: Bar) -> None:
        """Fold one bar into every recursion and rolling buffer."""
        c, h, low = bar.close, bar.high, bar.low
        lv = math.log1p(bar.volume)
        if self.seen == 0:
            # Seed recursions with the first bar: neutral RSI, bar range as the first TR.
            self.ema_fast = self.ema_slow = c
            self.ema_signal = 0.0
            self.atr = h - low
        else:
            prev = self.closes[-1]
            r = math.log(c / prev)
            self.ret_short.push(r)
            self.ret_long.push(r)
            change = c - prev
            gain, loss = (change, 0.0) if change > 0.0 else (0.0, -change)
            self.avg_gain += (gain - self.avg_gain) / _RSI_N
            self.avg_loss += (loss - self.avg_loss) / _RSI_N
            tr = max(h - low, abs(h - prev), abs(low - prev))
            self.atr += (tr - self.atr) / _ATR_N
            self.ema_fast += (c - self.ema_fast) * (2.0 / (_EMA_FAST + 1))
            self.ema_slow += (c - self.ema_slow) * (2.0 / (_EMA_SLOW + 1))
            macd = (self.ema_fast - self.ema_slow) / c
            self.ema_signal += (macd - self.ema_signal) * (2.0 / (_EMA_SIGNAL + 1))
        self.closes.append(c)
        self.bb.push(c)
        self.volz.push(lv)
        self.win_vol.push(lv)
        w, p = self.window, self.pos
        row = (math.log(bar.open), math.log(h), math.log(low), math.log(c), lv)
        self.ring[p] = row
        self.ring[p + w] = row
        self.pos = (p + 1) % w
        self.seen += 1

    def _emit(self, bar: Bar) -> FeatureRow:
        c = bar.close
        tab = self._tabular(bar)
        vol_long = math.sqrt(self.ret_long.var())
        return FeatureRow(
            open_time_ms=bar.open_time_ms,
            tabular=np.array(tab, dtype=np.float32),
            window=self._window(),
            close=c,
            atr_pct=self.atr / c,
            volatility=vol_long,
        )

    def _tabular(self, bar: Bar) -> list[float]:
        c, h, low = bar.close, bar.high, bar.low
        closes = self.closes
        rets = [math.log(c / closes[-1 - k]) for k in _RET_HORIZONS]
        ag, al = self.avg_gain, self.avg_loss
        rsi = 0.0 if ag + al <= 0.0 else (ag - al) / (ag + al)  # == (RSI - 50) / 50
        macd = (self.ema_fast - self.ema_slow) / c
        bb_mean, bb_var = self.bb.mean(), self.bb.var()
        lv = self.volz.values[-1]
        span = h - low
        return [
            *rets,
            math.sqrt(self.ret_short.var()),
            math.sqrt(self.ret_long.var()),
            rsi,
            macd,
            self.ema_signal,
            macd - self.ema_signal,
            _safe_std_ratio(c - bb_mean, bb_var, bb_mean) / 2.0,
            4.0 * math.sqrt(bb_var) / bb_mean,
            self.atr / c,
            _safe_std_ratio(lv - self.volz.mean(), self.volz.var(), 1.0),
            span / c,
            (c - low) / span if span > 0.0 else 0.5,
        ]

    def _window(self) -> npt.NDArray[np.float32]:
        view = self.ring[self.pos : self.pos + self.window]  # oldest .. newest
        last_log_close = view[-1, 3]
        mean, var = self.win_vol.mean(), self.win_vol.var()
        std = math.sqrt(var)
        inv_std = 0.0 if std <= _TINY * max(abs(mean), 1.0) else 1.0 / std
        # One broadcast expression (3 numpy calls) is the cheapest form at this size.
        shift = np.array((last_log_close, last_log_close, last_log_close, last_log_close, mean))
        scale = np.array((_WINDOW_SCALE, _WINDOW_SCALE, _WINDOW_SCALE, _WINDOW_SCALE, inv_std))
        return ((view - shift) * scale).astype(np.float32)

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (floats round-trip exactly through JSON in Python).

        About 600 floats (12 kB of JSON at W=64); building it costs ~0.1 ms and ``json.dumps``
        ~0.3-0.6 ms, so a stage should snapshot every N bars or at commit, not on every bar. A
        snapshot older than ``max_gap_bars`` bars before the next bar is not bridged: the state
        resets and re-warms (no row for ``warmup`` bars), so a stale restore is never silent.
        """
        w = self.window
        recent = self.ring[self.pos : self.pos + w].ravel().tolist()  # oldest first, flat
        return {
            "feature_version": FEATURE_VERSION,
            "window": w,
            "max_gap_bars": self.max_gap_bars,
            "skipped": self.skipped,
            "resets": self.resets,
            "last_time_ms": self.last_time_ms,
            "seen": self.seen,
            "closes": list(self.closes),
            "moments": {
                "ret_short": self.ret_short.to_dict(),
                "ret_long": self.ret_long.to_dict(),
                "bb": self.bb.to_dict(),
                "volz": self.volz.to_dict(),
                "win_vol": self.win_vol.to_dict(),
            },
            "rec": [
                *(self.ema_fast, self.ema_slow, self.ema_signal),
                *(self.avg_gain, self.avg_loss, self.atr),
            ],
            "ring": recent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureState:
        """Restore a snapshot made by ``to_dict``; refuses one from another feature version."""
        if d.get("feature_version") != FEATURE_VERSION:
            raise FeatureError(
                f"state has feature_version={d.get('feature_version')!r}, "
                f"this code computes {FEATURE_VERSION!r}: rebuild the state from history"
            )
        st = cls(window=int(d["window"]), max_gap_bars=int(d["max_gap_bars"]))
        st.skipped, st.resets = int(d["skipped"]), int(d["resets"])
        st.last_time_ms = None if d["last_time_ms"] is None else int(d["last_time_ms"])
        st.seen = int(d["seen"])
        st.closes.extend(float(x) for x in d["closes"])
        for name, snap in d["moments"].items():
            getattr(st, name).load(snap)
        (st.ema_fast, st.ema_slow, st.ema_signal, st.avg_gain, st.avg_loss, st.atr) = (
            float(x) for x in d["rec"]
        )
        recent = np.asarray(d["ring"], dtype=np.float64).reshape(st.window, WINDOW_CHANNELS)
        st.ring[: st.window] = recent
        st.ring[st.window :] = recent
        st.pos = 0
        return st


def compute_batch(
    open_time_ms: npt.ArrayLike,
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    *,
    window: int = WINDOW,
    max_gap_bars: int = MAX_GAP_BARS,
    state: FeatureState | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Features for every row of one symbol's bars (sorted by time), via ``FeatureState``.

    Returns ``tabular (n, F)``, ``window (n, window, 5)`` (float32; zeros where invalid) and
    ``valid (n,)`` (False while warming up, after a reset, or for skipped rows). Passing a
    ``state`` continues from it (and advances it), exactly like the streaming stage would.
    """
    t = np.asarray(open_time_ms, dtype=np.int64)
    cols = [np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)]
    n = len(t)
    if any(len(a) != n for a in cols):
        raise FeatureError(f"column lengths differ: {[n, *(len(a) for a in cols)]}")
    st = state if state is not None else FeatureState(window=window, max_gap_bars=max_gap_bars)
    tab = np.zeros((n, N_FEATURES), dtype=np.float32)
    win = np.zeros((n, st.window, WINDOW_CHANNELS), dtype=np.float32)
    valid = np.zeros(n, dtype=np.bool_)
    rows = zip(t.tolist(), *(a.tolist() for a in cols), strict=True)
    for i, (ti, o, h, lo, c, v) in enumerate(rows):
        out = st.update(Bar(ti, o, h, lo, c, v))
        if out is not None:
            tab[i] = out.tabular
            win[i] = out.window
            valid[i] = True
    return tab, win, valid
