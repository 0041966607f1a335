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


#: Default memory of :class:`SeenIds`: 30 days of event time.
DEDUPE_WINDOW_MS = 30 * 86_400_000


class SeenIds:
    """Ids already handled, each remembered for ``window_ms`` of event time after its own.

    Makes a stage idempotent against redelivery (at-least-once Kafka, a replayed intent) without
    growing forever: an id is forgotten once the newest event seen is ``window_ms`` past it.
    Redelivery arrives within seconds or minutes of the original; a window of days clears it
    many times over. Pruning depends on event times only, so a replay forgets exactly the same.
    """

    __slots__ = ("_latest", "_times", "window_ms")

    def __init__(self, window_ms: int = DEDUPE_WINDOW_MS) -> None:
        if window_ms <= 0:
            raise InvalidInputError("dedupe window", window_ms, "> 0 ms")
        self.window_ms = window_ms
        self._times: dict[str, int] = {}
        self._latest = -(2**62)

    def __contains__(self, key: object) -> bool:
        return key in self._times

    def __len__(self) -> int:
        return len(self._times)

    def add(self, key: str, event_time_ms: int) -> None:
        """Remember ``key`` (handled at ``event_time_ms``); forget what fell out of the window."""
        self._times[key] = event_time_ms
        if event_time_ms > self._latest:
            self._latest = event_time_ms
            cutoff = event_time_ms - self.window_ms
            # Ids arrive roughly in event-time order: drop from the oldest inserted.
            while self._times:
                first = next(iter(self._times))
                if self._times[first] >= cutoff:
                    break
                del self._times[first]

    def copy(self) -> SeenIds:
        """An independent copy (a checkpoint)."""
        twin = SeenIds(self.window_ms)
        twin._times, twin._latest = dict(self._times), self._latest
        return twin

    def to_dict(self) -> dict[str, int]:
        """``{id: event time}`` in insertion order (a Faust table value)."""
        return dict(self._times)

    @classmethod
    def from_dict(cls, data: dict[str, int], window_ms: int = DEDUPE_WINDOW_MS) -> SeenIds:
        """Inverse of :meth:`to_dict`."""
        seen = cls(window_ms)
        for key, t in data.items():
            seen.add(key, int(t))
        return seen
