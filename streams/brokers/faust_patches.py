"""Fixes for Faust (faust-streaming 0.15.3) that every worker needs, whatever the broker.

Installed process-wide by :func:`apply`, which :func:`streams.brokers.faust_app_settings`
calls, so every app built from those settings (the topology's ``build_app``, the test apps)
runs patched. :func:`apply` refuses any other Faust version with
:class:`UnsupportedFaustVersionError`: the patch replaces the order of calls inside two
Faust methods, and must be re-checked against the source of a new release.

F1  Records that arrive while a worker finishes table recovery are silently lost
    (faust-streaming #596, open upstream).

    What Faust does: during changelog recovery (``Recovery._restart_recovery``) it resumes the
    consumer's flow so the fetcher can read the changelogs, with the input partitions paused.
    When recovery is done it pauses the changelogs and calls ``Recovery.on_recovery_completed``,
    which resumes the input partitions, seeks them to the committed offsets and only then calls
    ``app.flow_control.resume()``, which *clears every agent's queue*. The consumer's flow is
    still running the whole time, so input records fetched between the resume and the clear
    (a batch the fetcher hands over as soon as a fetch returns, typically right after the seek)
    are queued and thrown away. The consumer has already marked them read, so they are never
    delivered again in this process; the next record's offset looks like a gap in the topic,
    which Faust counts as acknowledged, so the commit moves past them and no restart brings
    them back. Measured with ``tests/integration/test_startup_recovery.py``: 1-3252 records
    dropped per hand-over, lost in most runs on the embedded broker (whose 10 ms fetch wait
    returns that batch at once) and in some on Kafka (where a 1.5 s long poll usually delays it
    past the window).

    The fix: stop the consumer's flow when the hand-over starts (``Consumer.stop_flow``, what
    Faust itself does at the start of every rebalance). Nothing reaches an agent queue until
    ``on_recovery_completed`` has sought the partitions, cleared the queues and resumed the
    flow at its end, as it already does; the first records delivered are those at the
    committed offsets. ``Recovery._resume_streams`` (apps without tables, the same
    resume-seek-clear sequence) gets the same guard. The rest of both methods is Faust's.
    ``test_startup_recovery.py`` produces input during several restarts and compares the
    table's totals with an uninterrupted run's, on Kafka and on the embedded broker.

F2  A commit past a record still being processed (faust-streaming #606, fix proposed in #707).

    Not patched, because the topology cannot hit it, and guarded. Faust commits the longest run
    of acknowledged offsets; with ``concurrency > 1`` an agent's actors acknowledge out of
    order, and ``Consumer._new_offset`` lets a single unacknowledged offset at the head through
    (it takes it for a gap in the topic). Every agent of the topology runs one actor over
    ``stream.take_events``, which acknowledges a batch only after the agent's body finished
    with it and in partition order (the batch being filled meanwhile has higher offsets), and
    ``stream_wait_empty=False`` only skips waiting for in-flight events on a rebalance, which
    leaves them unacknowledged (redelivered, never skipped). So the acknowledged offsets of a
    partition are always a prefix of what it delivered, and the only way to open a head gap was
    F1. :func:`agents_with_concurrency` finds agents that break the precondition; the patched
    hand-over raises :class:`FaustPreconditionError` naming them, so a worker with such an
    agent stops at start-up instead of risking the commit.

    Not covered, and not a Faust bug: ``take_events`` acknowledges a batch in a ``finally``,
    so a batch whose handler *raised* is acknowledged as well (when the abandoned generator is
    closed) and can be committed although it was never applied. A stage must therefore not let
    an exception escape its batch (isolate the record, dead-letter it) rather than rely on a
    crash to have the batch redelivered.

F3  A partition without a committed offset is not sought back after a rebalance.

    Faust seeks every partition it assigns to its committed offset
    (``Consumer.perform_seek``) and skips whatever it fetched under the previous generation,
    relying on that seek to deliver it again. aiokafka's ``seek_to_committed`` seeks only
    offsets above 0, so a partition with nothing committed yet (a run's first seconds, a
    quiet partition) keeps the position the fetcher had reached: the records fetched before
    the rebalance and skipped are never delivered in this process, and the partition stalls
    with its backlog unread (the rebalance test in ``tests/integration/test_workers.py``:
    the partitions the joining or the old worker held were never committed). The fix: after
    Faust's seek, every assigned input partition without a committed offset above 0 is sought
    to offset 0 (``consumer_auto_offset_reset`` "earliest" covers a log that no longer starts
    there). Re-reading is harmless: stage instances skip what they applied.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

#: The faust-streaming release these patches were written against (and read the source of).
PATCHED_FAUST_VERSION = "0.15.3"

_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}


class UnsupportedFaustVersionError(RuntimeError):
    """The installed Faust is not the version :mod:`streams.brokers.faust_patches` fixes."""


class FaustPreconditionError(RuntimeError):
    """The app uses Faust in a way the patches (and the commit analysis) do not cover."""


def apply() -> None:
    """Install the patches (idempotent). Raises when Faust is not :data:`PATCHED_FAUST_VERSION`."""
    import faust

    if faust.__version__ != PATCHED_FAUST_VERSION:
        raise UnsupportedFaustVersionError(
            f"streams.brokers.faust_patches fixes faust-streaming {PATCHED_FAUST_VERSION}, but "
            f"{faust.__version__} is installed: check faust-streaming #596 against the new "
            "release's Recovery.on_recovery_completed and update or drop the patch"
        )
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer as FaustConsumer

    with _lock:
        if _originals:
            return
        for name in ("on_recovery_completed", "_resume_streams"):
            original = getattr(Recovery, name)
            _originals[name] = original
            setattr(Recovery, name, _flow_stopped_during_handover(original))
        _originals["perform_seek"] = FaustConsumer.perform_seek
        seek = _uncommitted_sought_to_start(FaustConsumer.perform_seek)
        FaustConsumer.perform_seek = seek  # type: ignore[method-assign,assignment]


def remove() -> None:
    """Restore Faust's own methods (for tests that show the unpatched behaviour)."""
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer as FaustConsumer

    with _lock:
        for name, original in _originals.items():
            setattr(FaustConsumer if name == "perform_seek" else Recovery, name, original)
        _originals.clear()


def is_applied() -> bool:
    """True while the patches are installed."""
    return bool(_originals)


def agents_with_concurrency(app: Any) -> dict[str, int]:
    """Agents of ``app`` that run more than one actor, by name (F2's precondition)."""
    return {
        str(name): agent.concurrency for name, agent in app.agents.items() if agent.concurrency > 1
    }


def check_preconditions(app: Any) -> None:
    """Raise :class:`FaustPreconditionError` when an agent of ``app`` runs several actors."""
    concurrent = agents_with_concurrency(app)
    if concurrent:
        raise FaustPreconditionError(
            f"agents with concurrency > 1 can commit past a record still being processed "
            f"(faust-streaming #606): {concurrent}; run them with concurrency=1 or patch "
            "Consumer._new_offset first (see streams/brokers/faust_patches.py, F2)"
        )


def _flow_stopped_during_handover(
    original: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """F1: ``original`` (resume partitions, seek, clear queues, resume flow) with flow stopped."""

    @functools.wraps(original)
    async def handover(self: Any, generation_id: int = 0) -> None:
        check_preconditions(self.app)
        # Resumed again by the original once the queues are cleared; on an early return (a new
        # rebalance started) the next recovery resumes it.
        self.app.consumer.stop_flow()
        await original(self, generation_id)

    return handover


def _uncommitted_sought_to_start(
    original: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """F3: ``original`` (seek to committed), then partitions with nothing committed to 0."""

    @functools.wraps(original)
    async def perform_seek(self: Any) -> None:
        await original(self)
        changelogs = set(self.app.tables.changelog_topics)
        for tp in sorted(self.assignment()):
            if tp.topic not in changelogs and not self._committed_offset.get(tp):
                await self.seek(tp, 0)

    return perform_seek
