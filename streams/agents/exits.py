"""exit planner: ``orders.approved`` -> ``orders.intents`` (entry, TP ladder, SL, trailing)."""

from __future__ import annotations

from typing import Any

from streams.agents.base import Emitter, ForwardedWatermarks
from streams.contracts.records import OrderApproved
from streams.stages import ExitPlannerStage
from streams.topics import Topic


class ExitPlannerHandler:
    """Stateless: one plan per approved order, same event time and partition."""

    name = "exits"
    inputs: tuple[Topic, ...] = (Topic.ORDERS_APPROVED,)

    def __init__(self, stage: ExitPlannerStage) -> None:
        self.stage = stage
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Plan the exits of one approved order."""
        approved: OrderApproved = record
        plan = self.stage.on_approved(approved)
        self.progress.note(partition, approved.event_time_ms)
        out.record(Topic.ORDERS_INTENTS, plan.symbol, plan, plan.event_time_ms, partition)
        self.progress.sent(partition, plan.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the risk stage, broadcast to every partition."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Forward progress."""
        self.progress.emit(out, Topic.ORDERS_INTENTS, self.name)
