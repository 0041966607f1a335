"""Real feature rows from the bundled sample data for the stage tests."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from models.features import FEATURE_NAMES
from streams.config import StrategyConfig
from streams.contracts.records import FeaturesComputed, SignalSupervised
from streams.stages import FeaturesStage
from streams.stages.regime import market_view
from streams.stages.strategies import StrategyInput, momentum_scalp
from streams.vocabulary import Regime, Side
from tests.unit.stages.factories import kline, scored, supervised

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample" / "um_futures_1m_2025"


@lru_cache(maxsize=4)
def feature_rows(symbol: str, bars: int = 400) -> tuple[FeaturesComputed, ...]:
    """Feature rows of the first ``bars`` klines of ``symbol`` in the sample data set."""
    stage, state, rows = FeaturesStage(), None, []
    with gzip.open(SAMPLE / f"{symbol}.csv.gz", "rt") as fh:
        next(fh)
        for _, line in zip(range(bars), fh, strict=False):
            t, o, h, low, c, v = line.strip().split(",")
            tick = kline(symbol, int(t), float(o), float(h), float(low), float(c), float(v))
            state, row = stage.on_tick(state, tick)
            if row is not None:
                rows.append(row)
    return tuple(rows)


def tradeable_signal(symbol: str = "ETHUSDT") -> tuple[FeaturesComputed, SignalSupervised]:
    """The first real row whose 5-bar momentum a confident signal can follow (momentum_scalp)."""
    ret5 = FEATURE_NAMES.index("ret_5")
    for row in feature_rows(symbol):
        side = Side.LONG if row.values[ret5] > 0 else Side.SHORT
        x = StrategyInput(side, 0.8, Regime.RANGE, market_view(row))
        if momentum_scalp(x, StrategyConfig()) is None:
            continue
        probs = (0.1, 0.1, 0.8) if side is Side.LONG else (0.8, 0.1, 0.1)
        return row, supervised(scored(symbol, row.event_time_ms, probs))
    raise LookupError(f"no row of {symbol} with tradeable momentum in the sample")
