"""Deterministic identifiers: every id derives from the event that caused it.

A replay or a restart recomputes the same ids, so an idempotent sink (or a venue that dedups
client order ids) never books the same order or fill twice. Ids are readable on purpose
(``BTCUSDT:1716249600000:decision:entry#1``) so a journal row explains its own lineage.
"""

from __future__ import annotations

import random

from streams.errors import InvalidInputError

_SEP = ":"


def signal_id(symbol: str, event_time_ms: int) -> str:
    """Id of the ensemble signal for ``symbol`` at the event time of its features."""
    if not symbol or _SEP in symbol:
        raise InvalidInputError("symbol", symbol, f"non-empty, without {_SEP!r}")
    return f"{symbol}{_SEP}{event_time_ms}"


def stage_id(parent_id: str, stage: str) -> str:
    """Id of the record a stage derives from ``parent_id`` (e.g. ``stage_id(sig, "decision")``)."""
    if not stage or _SEP in stage:
        raise InvalidInputError("stage", stage, f"non-empty, without {_SEP!r}")
    return f"{parent_id}{_SEP}{stage}"


def decision_id(signal: str) -> str:
    """Id of the sized decision made on signal ``signal``."""
    return stage_id(signal, "decision")


def order_id(decision: str, leg: str) -> str:
    """Client order id of one leg (``entry``, ``tp1``.., ``sl``, ``trail``) of a decision."""
    return stage_id(decision, leg)


def fill_id(order: str, sequence: int) -> str:
    """Id of the ``sequence``-th (1-based) fill of order ``order``."""
    if sequence < 1:
        raise InvalidInputError("fill sequence", sequence, ">= 1")
    return f"{order}#{sequence}"


def rng_for(seed: int, key: str) -> random.Random:
    """A generator seeded by the run seed and an event id.

    Exploration draws come from ``rng_for(seed, decision_id)``, not from one long-lived
    generator, so a restarted worker (or a replay on another partition count) makes exactly
    the same draws for the same decision. ``random.Random`` seeds ``str`` through SHA-512,
    which is stable across processes (unlike ``hash()``).
    """
    return random.Random(f"{seed}{_SEP}{key}")
