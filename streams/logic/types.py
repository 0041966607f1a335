"""Small shared types of the pure trading logic: actions, sides, regimes, the market view, errors.

Class order everywhere is ``("SELL", "HOLD", "BUY")`` (index 0, 1, 2), the order the models'
probability vectors use. Nothing here imports Faust or Kafka.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """A 3-class model/ensemble output."""

    SELL = "SELL"
    HOLD = "HOLD"
    BUY = "BUY"


#: Index order of every probability vector.
CLASSES: tuple[Action, Action, Action] = (Action.SELL, Action.HOLD, Action.BUY)


class Side(StrEnum):
    """Direction of a position."""

    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: PnL = sign * (exit - entry) * quantity."""
        return 1 if self is Side.LONG else -1

    @property
    def opposite(self) -> Side:
        """The other side."""
        return Side.SHORT if self is Side.LONG else Side.LONG


def side_of(action: Action) -> Side | None:
    """The position side an action asks for; HOLD asks for none."""
    if action is Action.BUY:
        return Side.LONG
    if action is Action.SELL:
        return Side.SHORT
    return None


class Regime(StrEnum):
    """Market regime from the features (see :mod:`streams.logic.regime`)."""

    TREND = "TREND"
    RANGE = "RANGE"
    HIGH_VOLATILITY = "HIGH_VOLATILITY"


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
