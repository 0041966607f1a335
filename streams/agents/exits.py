"""exit planner: ``orders.approved`` -> ``orders.intents`` (entry, TP ladder, SL, trailing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import OrderApproved, OrderPlanned
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.stages import ExitPlannerStage
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec


def plan_attributes(plan: OrderPlanned) -> dict[str, Any]:
    """Span attributes of an exit plan: entry, size, leverage and every leg."""
    return {
        "qt.order_id": plan.order_id,
        "qt.entry_type": plan.entry_type.value,
        "qt.entry_price": plan.entry_price,
        "qt.qty": plan.qty,
        "qt.leverage": plan.leverage,
        "qt.legs": [
            f"{leg.kind.value} {leg.fraction:g} @ {leg.price if leg.price is not None else '-'}"
            for leg in plan.legs
        ],
    }


class ExitPlannerHandler:
    """Stateless: one plan per approved order, same event time and partition."""

    name = "exits"
    inputs = stage_spec("exits").input_topics

    def __init__(self, stage: ExitPlannerStage) -> None:
        self.stage = stage
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Plan the exits of one approved order."""
        approved: OrderApproved = record
        plan = self.stage.on_approved(approved)
        metrics().order(plan.side.value)
        tracing.annotate(plan_attributes(plan))
        self.progress.note(partition, approved.event_time_ms)
        out.record(Topic.ORDERS_INTENTS, plan.symbol, plan, plan.event_time_ms, partition)
        self.progress.sent(partition, plan.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the risk stage, broadcast to every partition."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Forward progress."""
        self.progress.emit(out, Topic.ORDERS_INTENTS, self.name)

    def to_state(self) -> dict[str, Any]:
        """The progress forwarded."""
        return {"progress": self.progress.to_state()}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.progress.load_state(data["progress"])


def build(context: BuildContext) -> ExitPlannerHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return ExitPlannerHandler(ExitPlannerStage.from_settings(context.settings))
