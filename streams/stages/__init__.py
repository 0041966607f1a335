"""Record-level stage processors: contract records in, contract records out, no Kafka.

Both the Faust agents (``streams/agents``) and the in-process runner (:mod:`streams.runner`) call
these classes, so the two cannot diverge. Each stage holds no hidden state: per-key state is an
explicit object with ``to_dict``/``from_dict`` (a Faust table value) passed into every call.

Stages and their API
--------------------
=================================  ===============================================================
``FeaturesStage``                  ``on_tick(FeatureState | None, TickReceived)
                                   -> (FeatureState | None, FeaturesComputed | None)``; per symbol;
                                   ``bar_closed(TickReceived) -> BarClosed | None`` (market.bars)
``EnsembleStage(scorer, weights)`` ``on_features(Sequence[FeaturesComputed]) -> list[SignalScored]``
                                   (one batched scorer call; every row gets a signal, HOLD too)
``SupervisorStage(policy, models)`` ``on_signal(SupervisorState, SignalScored)
                                   -> SignalSupervised | None``; state per *partition*; HOLD -> None
``StrategyStage(limits, seed)``    ``on_features(StrategyState, FeaturesComputed) -> None``,
                                   ``on_signal(StrategyState, SignalSupervised)
                                   -> DecisionSized | None``,
                                   ``on_reward(StrategyState, RewardComputed) -> bool``; per symbol
``RiskStage(limits)``              ``on_bar(RiskState, BarClosed)``,
                                   ``on_decision(RiskState, DecisionSized)
                                   -> OrderApproved | OrderRejected``,
                                   ``on_trade_closed(RiskState, TradeClosed) -> bool``,
                                   ``on_command(RiskState, ControlCommand)``; one state in all
``ExitPlannerStage(policy, limits)`` ``on_approved(OrderApproved) -> OrderPlanned``; stateless
``ExecutionStage(paper_config)``   ``on_order(ExecutionState, OrderPlanned) -> list[...]``,
                                   ``on_tick(ExecutionState, TickReceived)
                                   -> list[FillExecuted | PositionChanged | TradeClosed]``;
                                   per symbol
``LearningStage()``                ``on_trade_closed(TradeClosed) -> list[RewardComputed]``
=================================  ===============================================================

Signals stop as early as they can: a HOLD stops at the supervisor; a vetoed signal is emitted by
the supervisor (``vetoed=True``, so vetoes are visible) and stops at the strategy stage, as does a
signal the meta-strategy stands aside from.

Event-time semantics (the reference the Faust topology must reproduce)
----------------------------------------------------------------------
Time is the kline *open* time ``t`` of 1-minute bars; bar ``t`` is complete at ``t + 60 s``.
For every minute ``t`` present in the data, in increasing order:

0. **Feedback.** Every feedback record (``trades.closed`` -> risk, ``learning.rewards`` ->
   strategy) whose ``event_time_ms <= t - feedback_lag_ms`` and that was not applied yet is
   applied, in the order ``(event_time_ms, kind rank, symbol, id)`` with trades (rank 0) before
   rewards (rank 1). ``feedback_lag_ms`` is ``QT_FEEDBACK_LAG_MS`` (default 5 minutes).
1. **Execution of bar t**, for each symbol in symbol order: the risk stage records the bar's
   return (correlation rule), then the symbol's venue processes the bar; orders placed earlier
   fill on it (entries at its open) and exit on it (exits stamped ``t + 60 s``, when its high
   and low are known). Closed trades become rewards at once (learning is stateless); both
   wait in the feedback queue for step 0 of a later minute.
2. **Decisions on bar t**: features for every symbol (symbol order) -> one ensemble batch for all
   rows of minute ``t`` -> supervisor (symbol order within each partition; the partition of a
   symbol is :func:`partition_for`) -> strategy -> risk (decisions of minute ``t`` in symbol
   order) -> exit planner -> ``execution.on_order``. The order is placed at the bar's close
   ``t + 60 s`` and can first fill on bar ``t + 60 s``: a decision never sees, nor trades on,
   a price it could not have known.

With ``feedback_lag_ms = 0`` a trade that exits on bar ``t - 60 s`` (stamped ``t``) is known to
the decisions of bar ``t`` (made at ``t + 60 s``); one that exits on bar ``t`` (stamped
``t + 60 s``) is not, though it happened before the decision was placed. The rule is
conservative by at most one bar and never looks ahead.

Partitioning: only the supervisor's "overall" bias window depends on which symbols share a
partition; :func:`partition_for` (:mod:`streams.kafka_io`) is the Java client's (and aiokafka's,
so Faust's) default partitioner, murmur2 of the UTF-8 key, positive, modulo the partition count:
the replay producer uses librdkafka's ``murmur2_random``, the same hash, so the runner with
``partitions=N`` reproduces an N-partition topology. Everything else is keyed by symbol or
global, and exploration draws come from ``ids.rng_for(seed, decision_id)``, so they do not
depend on the partition count.
"""

from __future__ import annotations

from streams.errors import StageError
from streams.instruments import INSTRUMENTS
from streams.kafka_io import partition_for
from streams.stages.ensemble import EnsembleStage, Scorer
from streams.stages.execution import ExecutionStage, ExecutionState
from streams.stages.exits import ExitPlannerStage
from streams.stages.features import FeaturesStage
from streams.stages.learning import LearningStage
from streams.stages.risk import RiskStage, RiskState
from streams.stages.strategy import StrategyStage, StrategyState
from streams.stages.supervisor import SupervisorStage

__all__ = [
    "INSTRUMENTS",
    "EnsembleStage",
    "ExecutionStage",
    "ExecutionState",
    "ExitPlannerStage",
    "FeaturesStage",
    "LearningStage",
    "RiskStage",
    "RiskState",
    "Scorer",
    "StageError",
    "StrategyStage",
    "StrategyState",
    "SupervisorStage",
    "partition_for",
]
