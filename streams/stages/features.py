"""Features stage: closed 1-minute klines -> ``FeaturesComputed`` (per-symbol ``FeatureState``).

What it does: each symbol's closed klines are folded into its rolling ``FeatureState``; once
warmed up, every bar yields one row (16 tabular indicators and the normalised OHLCV window).
TRADE ticks pass through untouched. Its rules, the one feature definition shared with training
(batch/stream parity by construction), live in :mod:`models.features`; this module maps ticks
to bars and rows to records (and klines to the ``BarClosed`` records of ``market.bars``, which
the portfolio-wide risk stage reads instead of ``market.ticks``), and builds the scorer's
matrices from a batch of records.

Event time: a row carries its bar's *open* time; it depends on bars at or before it only. A bar
at or before the symbol's last one is ignored (redelivery is idempotent), a gap longer than
``max_gap_bars`` restarts the warm-up. A kline's ``history`` (the live ingest's warm-up of a
symbol that joins a running stream) is folded in before the kline itself: the window is warm
when the symbol's first kline arrives, as if its history had been streamed.
"""

from __future__ import annotations

import hashlib

import numpy as np

from models.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    MAX_GAP_BARS,
    WINDOW,
    WINDOW_CHANNELS,
    Bar,
    FeatureError,
    FeatureRow,
    FeatureState,
)
from streams.contracts.records import BarClosed, FeaturesComputed, TickKind, TickReceived
from streams.errors import StageError

#: sha256 of the ordered feature names (``FeaturesComputed.names_hash``).
NAMES_HASH = hashlib.sha256(",".join(FEATURE_NAMES).encode()).hexdigest()


def features_record(symbol: str, row: FeatureRow) -> FeaturesComputed:
    """The contract record of one feature row (float32 values widened to Python floats)."""
    return FeaturesComputed(
        symbol=symbol,
        event_time_ms=row.open_time_ms,
        feature_version=FEATURE_VERSION,
        names_hash=NAMES_HASH,
        values=tuple(row.tabular.tolist()),
        window=tuple(row.window.ravel().tolist()),
        window_rows=row.window.shape[0],
        window_columns=WINDOW_CHANNELS,
        close=row.close,
        atr_pct=row.atr_pct,
        volatility=row.volatility,
    )


def bar_closed(tick: TickReceived) -> BarClosed | None:
    """What the portfolio-wide stages read of a closed kline (``market.bars``); None for trades."""
    if tick.kind is not TickKind.KLINE_1M:
        return None
    return BarClosed(symbol=tick.symbol, event_time_ms=tick.event_time_ms, close=tick.close)


def tabular_of(records: list[FeaturesComputed]) -> np.ndarray:
    """(N, F) float32 matrix of the records' tabular values (for one batched scorer call)."""
    return np.array([r.values for r in records], dtype=np.float32)


def window_of(records: list[FeaturesComputed]) -> np.ndarray:
    """(N, W, C) float32 tensor of the records' windows."""
    first = records[0]
    flat = np.array([r.window for r in records], dtype=np.float32)
    return flat.reshape(len(records), first.window_rows, first.window_columns)


class FeaturesStage:
    """Feeds each symbol's ``FeatureState`` with its closed 1-minute klines.

    TRADE ticks are the execution stage's business and pass through untouched. A bar the
    feature code refuses (it validates prices again) raises :class:`StageError`; the file
    adapter already dead-letters such rows, so this only fires on a broken upstream.
    """

    stage = "features"

    def __init__(self, window: int = WINDOW, max_gap_bars: int = MAX_GAP_BARS) -> None:
        self.window = window
        self.max_gap_bars = max_gap_bars

    def new_state(self) -> FeatureState:
        """An empty per-symbol state."""
        return FeatureState(window=self.window, max_gap_bars=self.max_gap_bars)

    def on_tick(
        self, state: FeatureState | None, tick: TickReceived
    ) -> tuple[FeatureState | None, FeaturesComputed | None]:
        """Fold one tick into the symbol's state; a row once the state is warmed up."""
        if tick.kind is not TickKind.KLINE_1M:
            return state, None
        st = state if state is not None else self.new_state()
        bar = Bar(tick.event_time_ms, tick.open, tick.high, tick.low, tick.close, tick.volume)
        try:
            # A joiner's warm-up: its history warms the window (bars it has are left out, a gap
            # restarts it as any gap does), and only the tick's own bar can make a row.
            last = st.last_time_ms if st.last_time_ms is not None else -1
            for h in tick.history:
                if h.open_time_ms > last:
                    st.update(Bar(h.open_time_ms, h.open, h.high, h.low, h.close, h.volume))
            row = st.update(bar)
        except FeatureError as exc:
            raise StageError(self.stage, f"{tick.symbol}:{tick.event_time_ms}", str(exc)) from exc
        return st, None if row is None else features_record(tick.symbol, row)
