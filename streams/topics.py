"""Topic names of the topology (how each is keyed and split: ``streams/topology.py``).

Every business topic has one Avro value schema, ``schemas/<topic>.avsc``. Names are prefixed by
``QT_TOPIC_PREFIX`` so a replay or a test can run the same topology in isolation.
"""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """Base names; the schema subject of a topic's value is ``<name>-value``."""

    MARKET_TICKS = "market.ticks"
    MARKET_BARS = "market.bars"
    MARKET_FEATURES = "market.features"
    SIGNALS_ENSEMBLE = "signals.ensemble"
    SIGNALS_SUPERVISED = "signals.supervised"
    SIGNALS_SHADOW = "signals.shadow"
    DECISIONS_SIZED = "decisions.sized"
    ORDERS_APPROVED = "orders.approved"
    RISK_REJECTIONS = "risk.rejections"
    POLICY_MODES = "policy.modes"
    ORDERS_INTENTS = "orders.intents"
    EXECUTION_FILLS = "execution.fills"
    POSITIONS_EVENTS = "positions.events"
    TRADES_CLOSED = "trades.closed"
    LEARNING_REWARDS = "learning.rewards"
    MODELS_EVENTS = "models.events"
    MODELS_SWAPS = "models.swaps"
    CONTROL_COMMANDS = "control.commands"
    UNIVERSE_EVENTS = "universe.events"
    VENUE_COMMANDS = "venue.commands"
    VENUE_EVENTS = "venue.events"
    DEADLETTER = "deadletter"


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """The broker-side name of ``topic`` under ``prefix`` (``QT_TOPIC_PREFIX``)."""
    return f"{prefix}{Topic(topic).value}"
