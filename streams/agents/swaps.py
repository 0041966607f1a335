"""swaps: ``models.events`` -> ``models.swaps``, each PROMOTED / ROLLED_BACK on every partition.

Why a relay: ``models.events`` has one partition, and a Faust consumer group hands one partition
to one worker, so only one ensemble instance would ever read a swap there. ``models.swaps`` has
the per-symbol partition count and Faust assigns its partition ``p`` with ``market.features``'
partition ``p`` (same partition count, same subscribers: co-partitioned), so the copy on
partition ``p`` reaches ensemble instance ``p`` on whichever worker owns it, after a rebalance
too; each instance's offsets of it are in its stored state like those of its feature rows.

The copy is the record itself (same ``event_id`` and ``event_time_ms``): every instance swaps
at that event time (``streams/stages/hotswap.py``). ``SHADOW_STARTED`` and the promotion gate's
verdicts are copied too: they start and end a shadow in every shadow instance
(``streams/stages/shadow.py``); the ensemble ignores them. Other kinds (the ensemble's own
``LOADED``, drift readings) are not copied. Stateless.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.agents.base import Emitter
from streams.contracts.records import ModelEventRecorded
from streams.stages.hotswap import SWAP_KINDS
from streams.stages.shadow import DECISIONS
from streams.topics import Topic
from streams.topology import BuildContext, partitions_of, stage_spec
from streams.vocabulary import ModelEventKind

log = logging.getLogger(__name__)
#: What every partition's ensemble and shadow instances read.
RELAYED = frozenset((*SWAP_KINDS, ModelEventKind.SHADOW_STARTED, *DECISIONS))


class SwapRelayHandler:
    """Copies swap records to each partition of ``models.swaps``."""

    name = "swaps"
    inputs = stage_spec("swaps").input_topics

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions_of(Topic.MODELS_SWAPS, partitions)

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """A swap record -> one copy per partition; anything else is left alone."""
        event: ModelEventRecorded = record
        if event.kind not in RELAYED:
            return
        for p in range(self.partitions):
            out.record_to(Topic.MODELS_SWAPS, p, event.model, event, event.event_time_ms,
                          f"{self.name}/0")  # fmt: skip
        log.info("%s %s %s at %d to %d partitions", event.kind.value, event.model,
                 event.version, event.event_time_ms, self.partitions)  # fmt: skip

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Nobody waits for ``models.swaps``' progress (the ensemble never gates on it)."""

    def end_batch(self, out: Emitter) -> None:
        """Nothing is buffered."""


def build(context: BuildContext) -> SwapRelayHandler:
    """The relay for the settings' partition count (``streams/topology.py`` names this)."""
    return SwapRelayHandler(context.settings.partitions)
