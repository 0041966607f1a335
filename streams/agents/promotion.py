"""promotion: ``signals.shadow`` -> ``models.events``, the gate's decision on a stream shadow.

One instance: it merges every shadow instance's settled rows in event time (the merge's
watermarks), so a shadow is decided on the same row in every run (``streams/stages/promotion.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter
from streams.agents.merging import MergeHandler, SortKey
from streams.contracts.records import ShadowScored
from streams.stages.promotion import PromotionStage
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec

log = logging.getLogger(__name__)


class PromotionHandler(MergeHandler):
    """Settled shadow rows in event-time order -> the gate's records."""

    name = "promotion"
    inputs = stage_spec("promotion").input_topics

    def __init__(self, stage: PromotionStage, partitions: int) -> None:
        super().__init__()
        self.stage = stage
        self.partitions = partitions

    def merge_of(self, topic: str, partition: int) -> int:
        """One merge: the stage has one instance."""
        return 0

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Settlement time, then the row's symbol and decision time."""
        rec: ShadowScored = record
        return SortKey(rec.event_time_ms, 0, f"{rec.symbol}\x00{rec.decided_ms:020d}")

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Count the row; the decision when it completes its shadow."""
        for event in self.stage.on_shadow(record):
            mark = len(out.items)
            out.record_to(Topic.MODELS_EVENTS, 0, event.model, event, event.event_time_ms,
                          f"{self.name}/0")  # fmt: skip
            out.seal(mark)
            log.info("%s %s %s: %s", event.kind.value, event.model, event.version, event.detail)

    def to_state(self) -> dict[str, Any]:
        """The merge's state and the tallies."""
        return super().to_state() | {"promotion": self.stage.to_state()}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        super().load_state(data)
        self.stage.load_state(data["promotion"])


def build(context: BuildContext) -> PromotionHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    settings = context.settings
    return PromotionHandler(PromotionStage.from_settings(settings), settings.partitions)
