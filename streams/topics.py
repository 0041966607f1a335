"""Topic names of the topology (DESIGN.md) and how each is keyed and partitioned.

Every business topic has one Avro value schema, ``schemas/<topic>.avsc``. Names are prefixed by
``QT_TOPIC_PREFIX`` so a replay or a test can run the same topology in isolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    """Base names; the schema subject of a topic's value is ``<name>-value``."""

    MARKET_TICKS = "market.ticks"
    MARKET_FEATURES = "market.features"
    SIGNALS_ENSEMBLE = "signals.ensemble"
    SIGNALS_SUPERVISED = "signals.supervised"
    DECISIONS_SIZED = "decisions.sized"
    ORDERS_APPROVED = "orders.approved"
    RISK_REJECTIONS = "risk.rejections"
    ORDERS_INTENTS = "orders.intents"
    EXECUTION_FILLS = "execution.fills"
    POSITIONS_EVENTS = "positions.events"
    TRADES_CLOSED = "trades.closed"
    LEARNING_REWARDS = "learning.rewards"
    MODELS_EVENTS = "models.events"
    CONTROL_COMMANDS = "control.commands"
    DEADLETTER = "deadletter"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is keyed; ``single_partition`` topics feed portfolio-wide state."""

    topic: Topic
    key: str
    single_partition: bool = False


TOPOLOGY: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.MARKET_TICKS, "symbol"),
    TopicSpec(Topic.MARKET_FEATURES, "symbol"),
    TopicSpec(Topic.SIGNALS_ENSEMBLE, "symbol"),
    TopicSpec(Topic.SIGNALS_SUPERVISED, "symbol"),
    TopicSpec(Topic.DECISIONS_SIZED, "symbol"),
    TopicSpec(Topic.ORDERS_APPROVED, "symbol"),
    TopicSpec(Topic.RISK_REJECTIONS, "symbol"),
    TopicSpec(Topic.ORDERS_INTENTS, "symbol"),
    TopicSpec(Topic.EXECUTION_FILLS, "symbol"),
    TopicSpec(Topic.POSITIONS_EVENTS, "symbol"),
    TopicSpec(Topic.TRADES_CLOSED, "symbol"),
    TopicSpec(Topic.LEARNING_REWARDS, "symbol"),
    TopicSpec(Topic.MODELS_EVENTS, "model", single_partition=True),
    TopicSpec(Topic.CONTROL_COMMANDS, "command", single_partition=True),
    TopicSpec(Topic.DEADLETTER, "source_topic"),
)


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """The broker-side name of ``topic`` under ``prefix`` (``QT_TOPIC_PREFIX``)."""
    return f"{prefix}{Topic(topic).value}"
