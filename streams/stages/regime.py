"""Regime detector of the strategy stage: trend / range / high-volatility per symbol.

Part of the strategy stage (:mod:`streams.stages.strategy`, which calls :func:`detect_regime`
on every feature row, in event-time order per symbol). It also holds the one mapping from the
``FeaturesComputed`` record to the few indicators the regime and the strategies read
(:func:`market_view`).

Volatility is judged *relative to the symbol's own baseline*: on the development data the
median 1-minute ATR% is 0.05 % for BTCUSDT futures (2025) but 0.42 % for DOGEUSDT spot (2021), so
one absolute threshold would call DOGE always volatile and BTC never. The baseline is a running
mean of ``atr_pct`` that turns into an exponential mean after ``baseline_bars`` bars; a bar is
HIGH_VOLATILITY when its ATR% is at least ``high_vol_ratio`` times that baseline. Measured on
BTCUSDT/DOGEUSDT spot 2021, BTCUSDT/SOLUSDT futures 2025 and ETHUSDT spot 2026 (ATR 14, Wilder),
the 90th percentile of ATR% is 1.7-2.9x its median, so the default 1.8 flags roughly the most
volatile tenth of bars.

Otherwise a bar is TREND when ``|trend|`` (EMA spread in ATR units, see :class:`MarketView`) is
at least ``trend_threshold``; the default 1.5 sits between the 70th and 80th percentile of
``|EMA12 - EMA48| / ATR14`` on the same data. Else RANGE. The current bar is classified against
the baseline *before* it is folded in, so a spike does not dilute its own detection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from models.features import FEATURE_NAMES
from streams.config import RegimeConfig
from streams.contracts.records import FeaturesComputed
from streams.errors import InvalidInputError
from streams.vocabulary import Regime

_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True, slots=True)
class MarketView:
    """The few features the regime detector and the strategies read.

    The ``features`` stage emits many more; :func:`market_view` maps ``FeaturesComputed`` onto
    this view.
    All values are unitless so one set of thresholds serves every symbol:

    - ``close``: last close price (quote currency).
    - ``atr_pct``: average true range / close (0.004 = 0.4 %).
    - ``volatility``: standard deviation of 1-bar log returns over the feature window.
    - ``trend``: signed trend strength, e.g. (EMA fast - EMA slow) / ATR; > 0 is up.
    - ``momentum``: short-horizon return (e.g. 5 bars), signed.
    - ``rsi``: relative strength index in [0, 100].
    - ``band_position``: close within the Bollinger/Donchian band, 0 = lower edge, 1 = upper edge
      (may leave [0, 1] on a breakout).
    """

    close: float
    atr_pct: float
    volatility: float
    trend: float
    momentum: float
    rsi: float
    band_position: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table or a record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarketView:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def market_view(f: FeaturesComputed) -> MarketView:
    """The strategies' view of one feature row.

    ``trend`` = (EMA12 - EMA26) / ATR14 (``macd / atr_pct``), ``momentum`` = 5-bar log return,
    ``rsi`` back on [0, 100], ``band_position`` = Bollinger position mapped to 0 (lower band) ..
    1 (upper band).
    """
    v = f.values
    macd = v[_IDX["macd"]]
    return MarketView(
        close=f.close,
        atr_pct=f.atr_pct,
        volatility=f.volatility,
        trend=macd / f.atr_pct if f.atr_pct > 0.0 else 0.0,
        momentum=v[_IDX["ret_5"]],
        rsi=50.0 + 50.0 * v[_IDX["rsi_14"]],
        band_position=(v[_IDX["bb_pos_20"]] + 1.0) / 2.0,
    )


@dataclass(frozen=True, slots=True)
class RegimeState:
    """Per-symbol baseline of ATR%."""

    baseline_atr_pct: float = 0.0
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegimeState:
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["baseline_atr_pct"]), int(data["samples"]))


def classify(view: MarketView, baseline_atr_pct: float, trusted: bool, cfg: RegimeConfig) -> Regime:
    """Regime of one bar given the symbol's ATR% baseline (``trusted`` after warm-up)."""
    if trusted and view.atr_pct >= cfg.high_vol_ratio * baseline_atr_pct:
        return Regime.HIGH_VOLATILITY
    if abs(view.trend) >= cfg.trend_threshold:
        return Regime.TREND
    return Regime.RANGE


def fold_baseline(state: RegimeState, atr_pct: float, cfg: RegimeConfig) -> RegimeState:
    """The baseline after one more bar: running mean, then EMA with alpha = 1/baseline_bars."""
    n = state.samples + 1
    alpha = max(1.0 / n, 1.0 / cfg.baseline_bars)
    baseline = state.baseline_atr_pct + alpha * (atr_pct - state.baseline_atr_pct)
    return RegimeState(baseline, n)


def detect_regime(
    state: RegimeState,
    view: MarketView,
    cfg: RegimeConfig = RegimeConfig(),
) -> tuple[Regime, RegimeState]:
    """Classify ``view`` and return the regime with the updated per-symbol state."""
    if not view.atr_pct >= 0.0:  # also rejects NaN
        raise InvalidInputError("atr_pct", view.atr_pct, "a non-negative number")
    trusted = state.samples >= cfg.warmup_bars
    regime = classify(view, state.baseline_atr_pct, trusted, cfg)
    return regime, fold_baseline(state, view.atr_pct, cfg)
