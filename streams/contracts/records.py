"""Typed mirrors of the Avro contracts in ``schemas/<topic>.avsc``.

One frozen, slotted, keyword-only dataclass per Avro record, with the same name, the same
fields in the same order and the same defaults; ``tests/contract`` and ``quantum-trader schemas
check`` fail when a record and its schema drift apart. Field documentation lives in the schema
(``doc`` of every field): the schema is the source of truth, these classes give agents types.

Enums are ``StrEnum`` so a member *is* its Avro symbol: records convert to Avro dicts without
copying enum values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.contracts.base import AvroRecord
from streams.topics import Topic
from streams.vocabulary import (
    Action,
    CommandKind,
    EntryType,
    ExitReason,
    Learner,
    LegKind,
    Liquidity,
    ModelDrift,
    ModelEventKind,
    OrderSide,
    PositionEvent,
    Regime,
    RiskRule,
    Side,
    TickKind,
    TradingMode,
    UniverseChangeKind,
    UniverseVerdict,
    VenueCommandKind,
    VenueEventKind,
    VetoRule,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVote(AvroRecord):
    """One model's vote on a feature row."""

    model: str
    version: str
    action: Action
    confidence: float
    probabilities: tuple[float, ...]
    weight: float
    latency_us: int
    as_of_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VetoReason(AvroRecord):
    """Why the supervisor vetoed a signal."""

    rule: VetoRule
    detail: str
    observed: float | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BiasShares(AvroRecord):
    """Share of BUY and SELL among the last non-HOLD signals, per symbol and overall."""

    symbol_buy_share: float
    symbol_sell_share: float
    symbol_window: int
    overall_buy_share: float
    overall_sell_share: float
    overall_window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderLeg(AvroRecord):
    """One exit leg of an order plan."""

    leg_id: str
    kind: LegKind
    price: float | None
    fraction: float
    callback: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryBar(AvroRecord):
    """One closed 1-minute kline of a symbol's history, fetched over REST when it joins a
    running stream (the warm-up a :class:`TickReceived` carries)."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TickReceived(AvroRecord):
    """A market tick arrived: one closed 1-minute kline or one trade.

    Identity: (symbol, kind, event_time_ms, trade_id).
    """

    symbol: str
    event_time_ms: int
    kind: TickKind
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval_ms: int
    source: str
    trade_id: int | None = None
    is_buyer_maker: bool | None = None
    history: tuple[HistoryBar, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BarClosed(AvroRecord):
    """A symbol's 1-minute bar closed: what the portfolio-wide stages read from the market.

    Written by the features stage for every kline that passed the tick rule, to the one
    partition of ``market.bars``, so a single-partition stage (risk's correlation returns)
    never needs the per-symbol partitions of ``market.ticks``. Identity: (symbol, event_time_ms).
    """

    symbol: str
    event_time_ms: int
    close: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FeaturesComputed(AvroRecord):
    """Features were computed for a symbol from its rolling window of ticks."""

    symbol: str
    event_time_ms: int
    feature_version: str
    names_hash: str
    values: tuple[float, ...]
    window: tuple[float, ...]
    window_rows: int
    window_columns: int = 5
    close: float
    atr_pct: float
    volatility: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalScored(AvroRecord):
    """The ensemble scored a feature row: every model's vote plus the weighted ensemble action."""

    signal_id: str
    symbol: str
    event_time_ms: int
    feature_version: str
    votes: tuple[ModelVote, ...]
    action: Action
    confidence: float
    probabilities: tuple[float, ...]
    close: float
    atr_pct: float
    volatility: float
    model_drift: ModelDrift = ModelDrift.STABLE


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowScored(AvroRecord):
    """A candidate model set's would-be decision on a feature row beside the champion's, settled
    at the label horizon with both decisions' net-of-cost return (never an order)."""

    shadow_id: str
    symbol: str
    event_time_ms: int
    decided_ms: int
    candidate: Mapping[str, str]
    champion: Mapping[str, str]
    votes: tuple[ModelVote, ...]
    candidate_action: Action
    candidate_confidence: float
    champion_action: Action
    champion_confidence: float
    volatility: float
    forward_return: float
    round_trip_cost: float
    candidate_pnl: float
    champion_pnl: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalSupervised(AvroRecord):
    """The supervisor reviewed an ensemble signal; a veto is data, visible downstream."""

    signal_id: str
    symbol: str
    event_time_ms: int
    signal: SignalScored
    vetoed: bool
    veto_reasons: tuple[VetoReason, ...] = ()
    bias: BiasShares
    final_action: Action
    health_veto_share: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionSized(AvroRecord):
    """The strategy stage decided to trade a supervised signal and sized it."""

    decision_id: str
    signal_id: str
    symbol: str
    event_time_ms: int
    side: Side
    confidence: float
    price: float
    atr_pct: float
    regime: Regime
    strategy: str
    size_multiplier: float
    risk_fraction: float
    margin_usd: float
    model_versions: Mapping[str, str]
    model_drift: ModelDrift = ModelDrift.STABLE
    health_veto_share: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TradingModeChanged(AvroRecord):
    """The portfolio's trading mode changed (drawdown, circuit breaker, operator halt or resume),
    with every reason for the new mode and the record that caused the change."""

    event_id: str
    event_time_ms: int
    mode: TradingMode
    previous: TradingMode
    reasons: tuple[str, ...] = ()
    cause: str
    equity_usd: float
    peak_equity_usd: float
    drawdown: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderApproved(AvroRecord):
    """The portfolio risk stage approved a sized decision."""

    order_id: str
    decision_id: str
    symbol: str
    event_time_ms: int
    decision: DecisionSized
    approved_margin_usd: float
    max_leverage: float
    equity_usd: float
    open_positions: int
    trading_mode: TradingMode = TradingMode.NORMAL
    mode_reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(AvroRecord):
    """The portfolio risk stage rejected a sized decision; the rule that fired is recorded."""

    decision_id: str
    symbol: str
    event_time_ms: int
    side: Side
    margin_usd: float
    confidence: float
    rule: RiskRule
    detail: str
    observed: float | None = None
    limit: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPlanned(AvroRecord):
    """The exit planner turned an approved order into an entry plus exit legs.

    Legs: take-profit ladder, stop loss and trailing stop.
    """

    order_id: str
    decision_id: str
    symbol: str
    event_time_ms: int
    side: Side
    entry_type: EntryType
    entry_price: float
    qty: float
    leverage: float
    margin_usd: float
    legs: tuple[OrderLeg, ...]
    strategy: str
    regime: Regime
    size_multiplier: float
    confidence: float
    model_versions: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class FillExecuted(AvroRecord):
    """The venue executed (part of) an order leg."""

    fill_id: str
    order_id: str
    decision_id: str
    symbol: str
    event_time_ms: int
    leg_id: str
    leg_kind: LegKind
    side: OrderSide
    qty: float
    price: float
    fee: float
    is_partial: bool
    liquidity: Liquidity
    venue: str
    slippage_bps: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionChanged(AvroRecord):
    """A position was opened, increased, reduced or closed."""

    position_id: str
    order_id: str
    decision_id: str
    symbol: str
    event_time_ms: int
    event: PositionEvent
    side: Side
    qty_open: float
    entry_price: float
    mark_price: float
    realized_pnl: float
    unrealized_pnl: float
    stop_price: float | None
    fill_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeClosed(AvroRecord):
    """A position was fully closed; the round trip with its PnL and everything that caused it."""

    trade_id: str
    decision_id: str
    order_id: str
    symbol: str
    event_time_ms: int
    opened_ms: int
    side: Side
    entry_price: float
    exit_price: float
    qty: float
    leverage: float
    margin_usd: float
    gross_pnl: float
    fees: float
    net_pnl: float
    return_pct: float
    holding_ms: int
    exit_reason: ExitReason
    strategy: str
    regime: Regime
    size_multiplier: float
    confidence: float
    model_versions: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardComputed(AvroRecord):
    """A closed trade was turned into a reward for one learner (sizing or strategy)."""

    reward_id: str
    trade_id: str
    decision_id: str
    symbol: str
    event_time_ms: int
    learner: Learner
    state: str
    action: str
    reward: float
    net_pnl: float
    return_pct: float
    regime: Regime
    strategy: str
    size_multiplier: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEventRecorded(AvroRecord):
    """Something happened to a model: registered, loaded, promoted, stale, drifting, ..."""

    event_id: str
    model: str
    version: str
    event_time_ms: int
    kind: ModelEventKind
    detail: str
    symbol: str | None = None
    metric_name: str | None = None
    metric: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlCommand(AvroRecord):
    """Operator command to the topology: halt or resume trading, promote a model version."""

    command_id: str
    command: CommandKind
    event_time_ms: int
    issued_at_ms: int
    issued_by: str
    reason: str
    symbol: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class UniverseChanged(AvroRecord):
    """A symbol joined or left the live universe at a selection, with the rule's verdict."""

    event_id: str
    symbol: str
    event_time_ms: int
    change: UniverseChangeKind
    verdict: UniverseVerdict | None = None
    rank: int | None = None
    quote_volume: float = 0.0
    range_ratio: float = 0.0
    listed_days: float | None = None
    universe_size: int = 0
    server_time_ms: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered(AvroRecord):
    """Input that could not be decoded or failed validation.

    Kept with its raw bytes and where it came from; the stream never stops on bad input.
    """

    dead_letter_id: str
    reason: str
    error_type: str
    stage: str
    detail: str
    raw: bytes
    symbol: str | None = None
    event_time_ms: int | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_file: str | None = None
    source_line: int | None = None
    raw_key: bytes | None = None
    raw_length: int | None = None
    raw_sha256: str | None = None
    raw_key_length: int | None = None
    detail_length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueCommand(AvroRecord):
    """A request of the execution stage's exchange venue (testnet) to its gateway: place or
    cancel one order."""

    command_id: str
    kind: VenueCommandKind
    symbol: str
    event_time_ms: int
    decision_id: str = ""
    client_id: str
    conditional: bool = False
    side: str | None = None
    order_type: str | None = None
    quantity: float | None = None
    price: float | None = None
    trigger_price: float | None = None
    callback_rate_pct: float | None = None
    reduce_only: bool = False
    close_position: bool = False
    time_in_force: str | None = None
    leverage: int = 0
    reference_price: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueEventReceived(AvroRecord):
    """What the exchange said, as the gateway received it (see the schema's doc)."""

    event_id: str
    kind: VenueEventKind
    symbol: str
    event_time_ms: int
    client_id: str = ""
    order_id: int = 0
    side: str = ""
    order_type: str = ""
    status: str = ""
    exec_type: str = ""
    last_qty: float = 0.0
    last_price: float = 0.0
    cum_qty: float = 0.0
    avg_price: float = 0.0
    commission: float = 0.0
    commission_asset: str = ""
    commission_usdt: float | None = None
    maker: bool = False
    trade_id: int = 0
    reduce_only: bool = False
    realized_pnl: float = 0.0
    algo_id: int = 0
    actual_order_id: str = ""
    code: int = 0
    reason: str = ""
    amount: float = 0.0
    entry_price: float = 0.0
    mark_price: float = 0.0
    open_orders: tuple[str, ...] = ()
    open_algo_orders: tuple[str, ...] = ()
    finding: str = ""
    detail: str = ""


#: The value record of every topic (subject ``<topic>-value``).
RECORD_TYPES: Mapping[Topic, type[AvroRecord]] = {
    Topic.MARKET_TICKS: TickReceived,
    Topic.MARKET_BARS: BarClosed,
    Topic.MARKET_FEATURES: FeaturesComputed,
    Topic.SIGNALS_ENSEMBLE: SignalScored,
    Topic.SIGNALS_SUPERVISED: SignalSupervised,
    Topic.SIGNALS_SHADOW: ShadowScored,
    Topic.DECISIONS_SIZED: DecisionSized,
    Topic.ORDERS_APPROVED: OrderApproved,
    Topic.RISK_REJECTIONS: OrderRejected,
    Topic.POLICY_MODES: TradingModeChanged,
    Topic.ORDERS_INTENTS: OrderPlanned,
    Topic.EXECUTION_FILLS: FillExecuted,
    Topic.POSITIONS_EVENTS: PositionChanged,
    Topic.TRADES_CLOSED: TradeClosed,
    Topic.LEARNING_REWARDS: RewardComputed,
    Topic.MODELS_EVENTS: ModelEventRecorded,
    Topic.MODELS_SWAPS: ModelEventRecorded,  # the relay's copies (streams/agents/swaps.py)
    Topic.CONTROL_COMMANDS: ControlCommand,
    Topic.UNIVERSE_EVENTS: UniverseChanged,
    Topic.VENUE_COMMANDS: VenueCommand,
    Topic.VENUE_EVENTS: VenueEventReceived,
    Topic.DEADLETTER: DeadLettered,
}


def record_type(topic: Topic | str) -> type[AvroRecord]:
    """The record class of ``topic``'s values."""
    return RECORD_TYPES[Topic(topic)]


#: A record's home topic: the first that carries it (``models.swaps`` only copies model events).
_TOPIC_OF: Mapping[type[AvroRecord], Topic] = {
    cls: t for t, cls in reversed(list(RECORD_TYPES.items()))
}


def topic_of(record_class: type[AvroRecord]) -> Topic | None:
    """The topic whose values are ``record_class`` records (None for nested records)."""
    return _TOPIC_OF.get(record_class)
