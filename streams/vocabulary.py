"""The domain vocabulary: every enum of the contracts and of the trading logic, defined once.

A member *is* its Avro symbol (``StrEnum``), so the contracts (``streams/contracts/records.py``)
and the stages' rules (``streams/stages``) share these types with no mapping between them. This
module imports nothing of the project; ``schemas/*.avsc`` is the source of truth for the
symbols and ``quantum-trader schemas check`` fails when an enum here and its schema drift.

Class order of every probability vector is ``CLASSES`` = (SELL, HOLD, BUY), index 0, 1, 2.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """Trading action of a vote or signal."""

    SELL = "SELL"
    HOLD = "HOLD"
    BUY = "BUY"


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


class OrderSide(StrEnum):
    """Direction of an order or fill on the venue."""

    BUY = "BUY"
    SELL = "SELL"


class TickKind(StrEnum):
    """What a market tick is: a closed 1-minute kline or a single trade."""

    KLINE_1M = "KLINE_1M"
    TRADE = "TRADE"


class Regime(StrEnum):
    """Market regime classified by the strategy stage."""

    TREND = "TREND"
    RANGE = "RANGE"
    HIGH_VOLATILITY = "HIGH_VOLATILITY"


class VetoRule(StrEnum):
    """Supervisor rule that vetoed a signal. OTHER is the reader default for rules added later."""

    ONE_SIDED_SYMBOL = "ONE_SIDED_SYMBOL"
    ONE_SIDED_OVERALL = "ONE_SIDED_OVERALL"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    STALE_MODEL = "STALE_MODEL"
    MISSING_MODEL = "MISSING_MODEL"
    MODEL_DISAGREEMENT = "MODEL_DISAGREEMENT"
    OTHER = "OTHER"


class RiskRule(StrEnum):
    """Portfolio risk rule that rejected a decision.

    OTHER is the reader default for rules added later.
    """

    KILL_SWITCH = "KILL_SWITCH"
    DAILY_DRAWDOWN = "DAILY_DRAWDOWN"
    WEEKLY_DRAWDOWN = "WEEKLY_DRAWDOWN"
    MAX_MARGIN = "MAX_MARGIN"
    MAX_LEVERAGE = "MAX_LEVERAGE"
    MAX_CONCURRENT_POSITIONS = "MAX_CONCURRENT_POSITIONS"
    MIN_CONFIDENCE = "MIN_CONFIDENCE"
    SYMBOL_CONCENTRATION = "SYMBOL_CONCENTRATION"
    CORRELATION = "CORRELATION"
    DUPLICATE_DECISION = "DUPLICATE_DECISION"
    OPPOSITE_POSITION = "OPPOSITE_POSITION"
    OTHER = "OTHER"


class EntryType(StrEnum):
    """How the entry order is placed."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class LegKind(StrEnum):
    """Part of an order plan: the entry, a take-profit, the stop loss or the trailing stop."""

    ENTRY = "ENTRY"
    TP = "TP"
    SL = "SL"
    TRAIL = "TRAIL"


class Liquidity(StrEnum):
    """Whether a fill added (MAKER) or took (TAKER) liquidity."""

    MAKER = "MAKER"
    TAKER = "TAKER"


class PositionEvent(StrEnum):
    """What happened to a position."""

    OPENED = "OPENED"
    INCREASED = "INCREASED"
    REDUCED = "REDUCED"
    CLOSED = "CLOSED"


class ExitReason(StrEnum):
    """Why a trade was closed. OTHER is the reader default for reasons added later."""

    TAKE_PROFIT = "TAKE_PROFIT"
    STOP_LOSS = "STOP_LOSS"
    TRAILING_STOP = "TRAILING_STOP"
    KILL_SWITCH = "KILL_SWITCH"
    END_OF_DATA = "END_OF_DATA"
    MANUAL = "MANUAL"
    OTHER = "OTHER"


class Learner(StrEnum):
    """Which learner a reward is for."""

    SIZING = "SIZING"
    STRATEGY = "STRATEGY"


class ModelEventKind(StrEnum):
    """Lifecycle event of a model. OTHER is the reader default for kinds added later."""

    REGISTERED = "REGISTERED"
    LOADED = "LOADED"
    PROMOTED = "PROMOTED"
    DEMOTED = "DEMOTED"
    LOAD_FAILED = "LOAD_FAILED"
    STALE = "STALE"
    DRIFT_DETECTED = "DRIFT_DETECTED"
    SHADOW_SCORED = "SHADOW_SCORED"
    RETRAINED = "RETRAINED"
    OTHER = "OTHER"


class CommandKind(StrEnum):
    """Operator command."""

    HALT = "HALT"
    RESUME = "RESUME"
    PROMOTE = "PROMOTE"


class VenueCommandKind(StrEnum):
    """What the execution stage asks the exchange gateway to do (``venue.commands``)."""

    PLACE = "PLACE"
    CANCEL = "CANCEL"


class VenueEventKind(StrEnum):
    """Which exchange fact a ``venue.events`` record carries."""

    ORDER = "ORDER"
    ALGO = "ALGO"
    REJECTED = "REJECTED"
    POSITION = "POSITION"
    SNAPSHOT = "SNAPSHOT"
    FINDING = "FINDING"


class ReconcileKind(StrEnum):
    """A difference reconciliation found between the exchange and the venue, and the fix."""

    UNKNOWN_POSITION_FLATTENED = "UNKNOWN_POSITION_FLATTENED"  # not ours: closed at market
    UNKNOWN_POSITION_ADOPTED = "UNKNOWN_POSITION_ADOPTED"  # not ours: tracked, stop placed
    POSITION_GONE = "POSITION_GONE"  # ours, flat on the exchange: closed at the mark price
    QUANTITY_MISMATCH = "QUANTITY_MISMATCH"  # both open, sizes differ: the excess flattened
    ORDER_MISSING = "ORDER_MISSING"  # a leg we think open is not on the exchange
    UNKNOWN_ORDER_CANCELLED = "UNKNOWN_ORDER_CANCELLED"  # an order of ours we do not track


#: Index order of every probability vector.
CLASSES: tuple[Action, Action, Action] = (Action.SELL, Action.HOLD, Action.BUY)


def side_of(action: Action) -> Side | None:
    """The position side an action asks for; HOLD asks for none."""
    if action is Action.BUY:
        return Side.LONG
    if action is Action.SELL:
        return Side.SHORT
    return None
