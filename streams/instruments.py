"""Price and quantity grids of the traded symbols, and exact rounding to them.

The exit planner sizes and prices orders on these grids; a venue (``streams/adapters/venues``)
re-anchors the levels at the actual entry on the same grid. :data:`INSTRUMENTS` holds Binance
USD-M futures ``PRICE_FILTER.tickSize`` / ``LOT_SIZE.stepSize`` of the default symbols; any other
symbol gets :func:`fallback_instrument`.

Quantities are whole step counts (integers), so a ladder's legs always sum *exactly* to the
position (:func:`split_ladder`); prices are rounded half-even through :class:`decimal.Decimal`,
so 0.1 + 0.2 never yields 0.30000000000000004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from streams.vocabulary import Side


@dataclass(frozen=True, slots=True)
class Instrument:
    """Price and quantity grid of a symbol."""

    tick_size: float
    step_size: float


#: Price tick and quantity step of the default symbols on Binance USD-M futures.
INSTRUMENTS: dict[str, Instrument] = {
    "BTCUSDT": Instrument(0.1, 0.001),
    "ETHUSDT": Instrument(0.01, 0.001),
    "SOLUSDT": Instrument(0.01, 1.0),
    "BNBUSDT": Instrument(0.01, 0.01),
    "XRPUSDT": Instrument(0.0001, 0.1),
    "AVAXUSDT": Instrument(0.001, 1.0),
    "ADAUSDT": Instrument(0.0001, 1.0),
    "LINKUSDT": Instrument(0.001, 0.01),
    "LTCUSDT": Instrument(0.01, 0.001),
    "BCHUSDT": Instrument(0.01, 0.001),
    "DOGEUSDT": Instrument(0.00001, 1.0),
}


def fallback_instrument(price: float) -> Instrument:
    """A grid for an unlisted symbol: tick ~1e-6 of the price, step worth 0.1-1 USD."""
    magnitude = math.floor(math.log10(price))
    return Instrument(10.0 ** (magnitude - 6), 10.0**-magnitude)


def round_to_tick(price: float, tick: float) -> float:
    """``price`` rounded half-even to a multiple of ``tick``, exactly in decimal."""
    t = Decimal(repr(tick))
    n = (Decimal(repr(price)) / t).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return float(n * t)


def anchor(side: Side, entry: float, offset: float, tick: float) -> float:
    """Price ``offset`` in the favourable direction from ``entry`` (negative offset = adverse)."""
    return round_to_tick(entry + side.sign * offset, tick)


def steps_of(quantity: float, step: float) -> int:
    """Whole steps in ``quantity`` (rounded down; 1e-9 slack absorbs float noise like 2.9999999)."""
    return math.floor(quantity / step + 1e-9)


def split_ladder(steps: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Integer leg sizes: ``floor(steps * f)`` for every leg but the last, which takes the rest."""
    legs = [math.floor(steps * f + 1e-9) for f in fractions[:-1]]
    return (*legs, steps - sum(legs))
