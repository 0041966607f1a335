"""Small shared types of the pure trading logic: the market view and the errors.

The enums (actions, sides, regimes) are the contracts' own, from :mod:`streams.vocabulary`.
Nothing here imports Faust or Kafka.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MarketView:
    """The few features the regime detector and the strategies read.

    The ``features`` stage emits many more; the agent maps ``FeaturesComputed`` onto this view.
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


class LogicError(Exception):
    """Base of every error raised by the pure trading logic."""


class InvalidInputError(LogicError, ValueError):
    """An input violates the contract of a logic function; the message names the field."""

    def __init__(self, what: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {what}: {value!r} (expected {expected})")
        self.what = what
        self.value = value
        self.expected = expected
