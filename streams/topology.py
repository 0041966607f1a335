"""The topology, declared once: every topic and every stage, as data.

Everything else derives from this module: the Faust app's topics, partition counts and agents
(:mod:`streams.app`), each merge's watermark sources and where a stage announces its progress
(:mod:`streams.agents.base`), the demo's drain marks and reported topics, the journal's topics,
the stages the in-process runner drives, and the README's topology table and diagram
(:mod:`streams.topology_docs`; a test fails when the README drifts from it).

Vocabulary
----------
- A **topic** is keyed by one field of its records and is either *per-symbol* (``QT_PARTITIONS``
  partitions, keyed by symbol) or *single* (one partition: the inbox of a portfolio-wide stage,
  or too sparse to shard).
- A **stage** consumes inputs and produces outputs. A *per-symbol* stage runs one instance per
  partition of its per-symbol inputs; a *single* stage runs one instance for the portfolio.
- An input may be **shifted**: its records and watermarks count as that much later event time
  (feedback arrives ``QT_FEEDBACK_LAG_MS`` later; orders reach the venue one bar later). Shifted
  inputs do not hold a stage's output back (docs/determinism.md). An input that does not
  **gate** (operator commands) is merged in order but never waits for a watermark.
- A **writer** of a topic is the stage (or the ingest adapter, ``replay``) that produces it; a
  watermark source is ``<topic>/<partition>:<writer>/<writer partition>``
  (:func:`streams.agents.base.source_id`).

Nothing here imports Faust, Kafka or the models: the module is cheap to import anywhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from streams.topics import Topic

if TYPE_CHECKING:
    from streams.agents.base import StageHandler


class Partitioning(StrEnum):
    """How a topic is split, or how many instances of a stage run."""

    PER_SYMBOL = "per_symbol"
    SINGLE = "single"


class Shift(StrEnum):
    """How much later than its event time an input's records take effect."""

    NONE = "none"
    FEEDBACK_LAG = "feedback_lag"  # QT_FEEDBACK_LAG_MS
    BAR = "bar"  # one bar: an order placed at a bar's close reaches the venue on the next


#: The ingest adapter's writer name (the ``qt-source`` header of replayed and live ticks).
INGEST = "replay"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: what keys it, how it is split, who reads its records afterwards."""

    topic: Topic
    key: str
    partitioning: Partitioning
    doc: str
    journaled: bool = True  # written to PostgreSQL by ``quantum-trader journal``
    reported: bool = True  # read back into a run's report by the demo
    outside: str = ""  # written by a process outside the topology too (drawn as its own node)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a stage."""

    topic: Topic
    shift: Shift = Shift.NONE
    gates: bool = True  # False: merged in order, but never holds the merge back

    @property
    def shifted(self) -> bool:
        """Feedback-like: applied later than its event time, never holds output back."""
        return self.shift is not Shift.NONE


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage: its inputs, outputs, how it is split, its state, and its handler factory.

    ``handler`` is ``"module:function"``, resolved only when the app or the runner is built;
    the function takes a :class:`BuildContext` and returns the stage's
    :class:`~streams.agents.base.StageHandler`.
    """

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[Topic, ...]
    partitioning: Partitioning
    state: str
    doc: str
    handler: str

    @property
    def input_topics(self) -> tuple[Topic, ...]:
        """The input topics in declaration order."""
        return tuple(i.topic for i in self.inputs)

    def build(self, context: BuildContext) -> StageHandler:
        """The stage's handler (imports its module now)."""
        module, _, function = self.handler.partition(":")
        factory: Callable[[BuildContext], StageHandler] = getattr(
            importlib.import_module(module), function
        )
        return factory(context)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a handler factory may use: the settings and the loaded scorer."""

    settings: Any  # streams.config.Settings (not imported: keeps this module light)
    scorer: Any = None  # streams.observability.metrics.TimedScorer, loaded once for the app
    #: Model sets a hot swap loaded, by sorted ``(model, version)`` pairs: every instance of
    #: the process that swaps to a set shares its sessions, as they share ``scorer``.
    swapped: dict[Any, Any] = field(default_factory=dict)


_PS, _SINGLE = Partitioning.PER_SYMBOL, Partitioning.SINGLE

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.MARKET_TICKS, "symbol", _PS, "closed 1-minute klines and trades"),
    # The market as the portfolio-wide stages need it, on one partition: a single-partition
    # stage must not read a per-symbol topic, whose partitions two workers split.
    TopicSpec(
        Topic.MARKET_BARS,
        "symbol",
        _SINGLE,
        "every symbol's closed bars (risk's returns)",
        journaled=False,
        reported=False,
    ),
    TopicSpec(Topic.MARKET_FEATURES, "symbol", _PS, "feature rows", journaled=False),
    TopicSpec(Topic.SIGNALS_ENSEMBLE, "symbol", _PS, "each model's vote", journaled=False),
    TopicSpec(Topic.SIGNALS_SUPERVISED, "symbol", _PS, "vetoed or passed BUY/SELL signals"),
    # Only while a candidate is shadow-scored; one partition: the promotion stage's inbox.
    TopicSpec(
        Topic.SIGNALS_SHADOW,
        "symbol",
        _SINGLE,
        "a candidate's would-be decisions beside the champion's, settled",
        reported=False,
    ),
    TopicSpec(Topic.DECISIONS_SIZED, "symbol", _SINGLE, "strategy and size (risk's inbox)"),
    TopicSpec(Topic.ORDERS_APPROVED, "symbol", _PS, "approved orders with their margin"),
    TopicSpec(Topic.RISK_REJECTIONS, "symbol", _SINGLE, "rejected decisions and the rule"),
    TopicSpec(Topic.POLICY_MODES, "mode", _SINGLE, "the portfolio's trading mode changes, why"),
    TopicSpec(Topic.ORDERS_INTENTS, "symbol", _PS, "entry + TP ladder + SL + trailing"),
    TopicSpec(Topic.EXECUTION_FILLS, "symbol", _PS, "fills on the venue"),
    TopicSpec(Topic.POSITIONS_EVENTS, "symbol", _PS, "position opened/changed/closed"),
    TopicSpec(Topic.TRADES_CLOSED, "symbol", _SINGLE, "closed trades (risk's feedback)"),
    TopicSpec(Topic.LEARNING_REWARDS, "symbol", _PS, "rewards for the learners"),
    TopicSpec(
        Topic.MODELS_EVENTS,
        "model",
        _SINGLE,
        "model lifecycle",
        reported=False,
        outside="trainer · models promote / rollback",
    ),
    # Each swap record once per partition, so every ensemble instance reads it on its own
    # partition, on whichever worker owns that partition (streams/agents/swaps.py).
    TopicSpec(
        Topic.MODELS_SWAPS,
        "model",
        _PS,
        "swaps, shadow starts and verdicts, one copy per partition",
        journaled=False,
        reported=False,
    ),
    TopicSpec(Topic.CONTROL_COMMANDS, "command", _SINGLE, "halt, resume, promote", reported=False),
    TopicSpec(
        Topic.UNIVERSE_EVENTS,
        "symbol",
        _SINGLE,
        "live universe joins and leaves with the rule's verdict",
        reported=False,
        outside="live ingest",
    ),
    TopicSpec(
        Topic.VENUE_COMMANDS,
        "symbol",
        _PS,
        "orders for the exchange gateway (testnet)",
        journaled=False,
        reported=False,
    ),
    TopicSpec(
        Topic.VENUE_EVENTS,
        "symbol",
        _PS,
        "what the exchange said (testnet)",
        journaled=False,
        reported=False,
        outside="gateway",
    ),
    TopicSpec(Topic.DEADLETTER, "source_topic", _SINGLE, "bad input with its reason"),
)

STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="features",
        inputs=(InputSpec(Topic.MARKET_TICKS),),
        outputs=(Topic.MARKET_FEATURES, Topic.MARKET_BARS),
        partitioning=_PS,
        state="rolling feature window per symbol",
        doc="ticks -> feature rows (once warmed up)",
        handler="streams.agents.features:build",
    ),
    StageSpec(
        name="swaps",
        inputs=(InputSpec(Topic.MODELS_EVENTS, gates=False),),
        outputs=(Topic.MODELS_SWAPS,),
        partitioning=_SINGLE,
        state="none",
        doc="copies each swap, shadow start and gate verdict to every partition of models.swaps",
        handler="streams.agents.swaps:build",
    ),
    StageSpec(
        name="ensemble",
        # models.swaps: a PROMOTED / ROLLED_BACK record hot-swaps the models (never waited for)
        inputs=(InputSpec(Topic.MARKET_FEATURES), InputSpec(Topic.MODELS_SWAPS, gates=False)),
        outputs=(Topic.SIGNALS_ENSEMBLE, Topic.MODELS_EVENTS),
        partitioning=_PS,
        state="served model versions, pending swaps, drift window",
        doc="XGB, LGBM, N-HiTS, PatchTST vote through ONNX Runtime; drift; hot swap",
        handler="streams.agents.ensemble:build",
    ),
    StageSpec(
        name="supervisor",
        inputs=(InputSpec(Topic.SIGNALS_ENSEMBLE),),
        outputs=(Topic.SIGNALS_SUPERVISED,),
        partitioning=_PS,
        state="bias windows per symbol and per partition",
        doc="vetoes: bias, confidence, staleness, missing model, disagreement",
        handler="streams.agents.supervisor:build",
    ),
    StageSpec(
        name="strategy",
        inputs=(
            InputSpec(Topic.MARKET_FEATURES),
            InputSpec(Topic.SIGNALS_SUPERVISED),
            InputSpec(Topic.LEARNING_REWARDS, Shift.FEEDBACK_LAG),
        ),
        outputs=(Topic.DECISIONS_SIZED,),
        partitioning=_PS,
        state="regime, Q-tables and bandit arms per symbol",
        doc="regime, 9 strategies, Q-learning sizing",
        handler="streams.agents.strategy:build",
    ),
    StageSpec(
        name="risk",
        inputs=(
            InputSpec(Topic.DECISIONS_SIZED),
            InputSpec(Topic.TRADES_CLOSED, Shift.FEEDBACK_LAG),
            InputSpec(Topic.CONTROL_COMMANDS, gates=False),
            # universe.events: sparse, written by the live ingest ahead of the ticks it covers
            InputSpec(Topic.UNIVERSE_EVENTS, gates=False),
            InputSpec(Topic.MARKET_BARS),
        ),
        outputs=(Topic.ORDERS_APPROVED, Topic.RISK_REJECTIONS, Topic.POLICY_MODES),
        partitioning=_SINGLE,
        state="equity, day/week marks, positions, kill switch, symbols winding down, the mode",
        doc="portfolio-wide rules on one consistent view",
        handler="streams.agents.risk:build",
    ),
    StageSpec(
        name="exits",
        inputs=(InputSpec(Topic.ORDERS_APPROVED),),
        outputs=(Topic.ORDERS_INTENTS,),
        partitioning=_PS,
        state="none",
        doc="TP ladder, stop loss, trailing stop",
        handler="streams.agents.exits:build",
    ),
    StageSpec(
        name="execution",
        inputs=(
            InputSpec(Topic.ORDERS_INTENTS, Shift.BAR),
            InputSpec(Topic.MARKET_TICKS),
            InputSpec(Topic.VENUE_EVENTS, gates=False),
        ),
        outputs=(
            Topic.EXECUTION_FILLS,
            Topic.POSITIONS_EVENTS,
            Topic.TRADES_CLOSED,
            Topic.VENUE_COMMANDS,
            Topic.VENUE_EVENTS,  # reconciliation findings (testnet), read back and ignored
        ),
        partitioning=_PS,
        state="open orders, positions, trailing marks per symbol",
        doc="paper venue (fees, slippage, partial fills) or Binance testnet (QT_MODE)",
        handler="streams.agents.execution:build",
    ),
    StageSpec(
        name="shadow",
        # models.swaps: champion swaps, SHADOW_STARTED and the gate's verdicts (never waited for)
        inputs=(InputSpec(Topic.MARKET_FEATURES), InputSpec(Topic.MODELS_SWAPS, gates=False)),
        outputs=(Topic.SIGNALS_SHADOW,),
        partitioning=_PS,
        state="the shadow, its open rows, the champion's versions",
        doc="a candidate set votes beside the champion; would-be decisions settled at the horizon",
        handler="streams.agents.shadow:build",
    ),
    StageSpec(
        name="promotion",
        inputs=(InputSpec(Topic.SIGNALS_SHADOW),),
        outputs=(Topic.MODELS_EVENTS,),
        partitioning=_SINGLE,
        state="per shadow: PnL per event-time block, decisions",
        doc="the promotion gate on a shadow's settled rows: PROMOTED or PROMOTION_REFUSED",
        handler="streams.agents.promotion:build",
    ),
    StageSpec(
        name="learning",
        inputs=(InputSpec(Topic.TRADES_CLOSED),),
        outputs=(Topic.LEARNING_REWARDS,),
        partitioning=_SINGLE,
        state="none",
        doc="rewards for the sizing and strategy learners",
        handler="streams.agents.learning:build",
    ),
)


# -- lookups ----------------------------------------------------------------------------------
def topic_spec(topic: Topic | str) -> TopicSpec:
    """The declaration of ``topic``."""
    wanted = Topic(topic)
    for spec in TOPICS:
        if spec.topic is wanted:
            return spec
    raise KeyError(f"topic {wanted} is not declared in streams/topology.py")


def stage_spec(name: str) -> StageSpec:
    """The declaration of stage ``name``."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"stage {name!r} is not declared in streams/topology.py")


def partitions_of(topic: Topic | str, partitions: int) -> int:
    """Partition count of ``topic`` when per-symbol topics have ``partitions``."""
    return 1 if topic_spec(topic).partitioning is _SINGLE else partitions


def wanted_topics(prefix: str, partitions: int) -> dict[str, int]:
    """Every declared topic's broker-side name under ``prefix`` -> its partition count."""
    return {f"{prefix}{s.topic.value}": partitions_of(s.topic, partitions) for s in TOPICS}


def journaled_topics() -> tuple[Topic, ...]:
    """The topics ``quantum-trader journal`` writes to PostgreSQL."""
    return tuple(s.topic for s in TOPICS if s.journaled)


def reported_topics() -> tuple[Topic, ...]:
    """The topics a run's report is built from, in pipeline order."""
    return tuple(s.topic for s in TOPICS if s.reported)


def consumers_of(topic: Topic, stages: Iterable[StageSpec] | None = None) -> list[StageSpec]:
    """The stages (default: the declared ones) that read ``topic``."""
    return [s for s in (STAGES if stages is None else stages) if topic in s.input_topics]


def writers_of(topic: Topic, stages: Iterable[StageSpec] | None = None) -> list[str]:
    """Stage names writing ``topic`` (``INGEST`` for market ticks)."""
    names = [s.name for s in (STAGES if stages is None else stages) if topic in s.outputs]
    return [INGEST, *names] if topic is Topic.MARKET_TICKS else names


# -- watermarks -------------------------------------------------------------------------------
def _writer_partitions(writer: str, topic_partition: int, topic: Topic, n: int) -> list[str]:
    """The ``qt-source`` values that can appear on ``topic``'s partition ``topic_partition``."""
    if writer == INGEST:
        return [INGEST]
    spec = stage_spec(writer)
    if spec.partitioning is _SINGLE:
        return [f"{writer}/0"]
    if partitions_of(topic, n) == 1:  # every per-symbol instance writes the single partition
        return [f"{writer}/{p}" for p in range(n)]
    return [f"{writer}/{topic_partition}"]  # keyed by symbol: partition p writes partition p


def input_partitions(stage: StageSpec, topic: Topic, instance: int, n: int) -> list[int]:
    """Which partitions of input ``topic`` feed ``instance`` of ``stage``."""
    if partitions_of(topic, n) == 1:
        return [0]
    return list(range(n)) if stage.partitioning is _SINGLE else [instance]


def merge_sources(
    stage: StageSpec, instance: int, n: int, shifts: Mapping[Shift, int]
) -> dict[str, tuple[int, bool]]:
    """Watermark sources of one stage instance: ``{source_id: (shift_ms, shifted)}``.

    Non-gating inputs (operator commands) have none: their records never hold a merge back.
    """
    sources: dict[str, tuple[int, bool]] = {}
    for inp in stage.inputs:
        if not inp.gates:
            continue
        for p in input_partitions(stage, inp.topic, instance, n):
            for writer in writers_of(inp.topic):
                for header in _writer_partitions(writer, p, inp.topic, n):
                    key = f"{inp.topic.value}/{p}:{header}"
                    sources[key] = (shifts.get(inp.shift, 0), inp.shifted)
    return sources


def progress_targets(stage: StageSpec, instance: int, n: int) -> list[tuple[Topic, list[int]]]:
    """Where an instance announces its progress: each output some stage waits for, on the
    partitions its records can reach (an output nobody consumes, or only consumes without
    waiting for its watermark, needs none)."""
    targets: list[tuple[Topic, list[int]]] = []
    for topic in stage.outputs:
        if not any(i.gates for c in consumers_of(topic) for i in c.inputs if i.topic is topic):
            continue
        if partitions_of(topic, n) == 1:
            targets.append((topic, [0]))
        elif stage.partitioning is _SINGLE:
            targets.append((topic, list(range(n))))
        else:
            targets.append((topic, [instance]))
    return targets


def drain_marks(n: int) -> dict[tuple[str, str], int]:
    """The watermark sources that reach the end of stream last: the topology has drained when
    every one of them has.

    Those are the writers of the shifted inputs (closed trades, rewards, orders): each feedback
    loop lags the stream it closes, so when they all end, every merge has released everything.
    Keys are ``(base topic, qt-source)``; values start at minus infinity.
    """
    marks: dict[tuple[str, str], int] = {}
    for stage in STAGES:
        for inp in stage.inputs:
            if not inp.shifted:
                continue
            for writer in writers_of(inp.topic):
                for p in range(partitions_of(inp.topic, n)):
                    for header in _writer_partitions(writer, p, inp.topic, n):
                        marks[(inp.topic.value, header)] = -(2**62)
    return marks
