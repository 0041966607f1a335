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
    NO_EDGE = "NO_EDGE"
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
    MAX_TOTAL_DRAWDOWN = "MAX_TOTAL_DRAWDOWN"
    TRADING_HALTED = "TRADING_HALTED"
    LEFT_UNIVERSE = "LEFT_UNIVERSE"  # the live universe dropped the symbol: winding down
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
    PROMOTION_REFUSED = "PROMOTION_REFUSED"
    ROLLED_BACK = "ROLLED_BACK"
    DRIFT_RECOVERED = "DRIFT_RECOVERED"
    SHADOW_STARTED = "SHADOW_STARTED"
    OTHER = "OTHER"


class ModelDrift(StrEnum):
    """Drift level of an ensemble instance's window against the models' training reference
    (``streams/stages/drift.py``): the model health the policy layer reads."""

    STABLE = "STABLE"
    MODERATE = "MODERATE"
    SIGNIFICANT = "SIGNIFICANT"


class TradingMode(StrEnum):
    """What the risk stage's policy layer lets the portfolio do; an approval says which."""

    NORMAL = "NORMAL"
    DEFENSIVE = "DEFENSIVE"  # new entries at a smaller size
    HALT = "HALT"  # no new entries: operator halt, or the total-drawdown circuit breaker


class CommandKind(StrEnum):
    """Operator command."""

    HALT = "HALT"
    RESUME = "RESUME"
    PROMOTE = "PROMOTE"


class SignalOutcome(StrEnum):
    """How far a signal got through the pipeline (the dashboard's signal filter)."""

    PENDING = "PENDING"  # scored, the supervisor's verdict not seen yet
    HOLD = "HOLD"  # the ensemble said HOLD: nothing to review
    VETOED = "VETOED"
    PASSED = "PASSED"  # passed the supervisor; the strategy took no trade (or not yet)
    DECIDED = "DECIDED"  # sized; risk's verdict not seen yet
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class DecisionKind(StrEnum):
    """One step of a decision's life in a run's decision log (``decisions.jsonl.gz``).

    Declared in pipeline order: the order of the steps of one event time in the log and in
    ``quantum-trader diff``.
    """

    SIGNAL = "signal"  # the ensemble's vote (SignalScored)
    VETO = "veto"  # the supervisor's review, vetoed or passed (SignalSupervised)
    SIZE = "size"  # the strategy's sized decision (DecisionSized)
    VERDICT = "verdict"  # risk's approval or rejection (OrderApproved / OrderRejected)
    ORDER = "order"  # the exit planner's order plan (OrderPlanned)
    FILL = "fill"  # a venue fill (FillExecuted)
    TRADE = "trade"  # a closed round trip (TradeClosed)

    @property
    def rank(self) -> int:
        """Position in the pipeline (0 = signal)."""
        return _DECISION_RANKS[self]


_DECISION_RANKS = {kind: rank for rank, kind in enumerate(DecisionKind)}


class UniverseVerdict(StrEnum):
    """Why a listed contract is in the live universe or not (streams/adapters/live/universe.py)."""

    SELECTED = "SELECTED"  # among the top N by 24h quote volume, every floor passed
    BELOW_TOP_N = "BELOW_TOP_N"  # passed the floors, but N others traded more
    NOT_PERPETUAL = "NOT_PERPETUAL"  # a delivery (quarterly) or non-crypto contract
    NOT_TRADING = "NOT_TRADING"  # settling, pre-trading, delisted
    OTHER_QUOTE = "OTHER_QUOTE"  # not quoted in the universe's asset (USDT)
    TOO_NEW = "TOO_NEW"  # listed less than the minimum age ago
    TOO_QUIET = "TOO_QUIET"  # 24h high-low range under the volatility floor
    NO_TICKER = "NO_TICKER"  # listed, but absent from the 24h ticker


class UniverseChangeKind(StrEnum):
    """A symbol joined or left the live universe (``universe.events``)."""

    JOINED = "JOINED"  # new entries allowed (again)
    LEFT = "LEFT"  # no new entries; open positions run to their exits (wind-down)


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
