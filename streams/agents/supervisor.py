"""supervisor: ``signals.ensemble`` -> ``signals.supervised``; vetoes are data, HOLD stops."""

from __future__ import annotations

from typing import Any

from streams.agents.base import Emitter, ForwardedWatermarks
from streams.contracts.records import SignalScored
from streams.logic.supervisor import SupervisorState
from streams.stages import SupervisorStage
from streams.topics import Topic


class SupervisorHandler:
    """Bias windows per symbol and per partition ("overall"), as in the in-process runner."""

    name = "supervisor"
    inputs: tuple[Topic, ...] = (Topic.SIGNALS_ENSEMBLE,)

    def __init__(self, stage: SupervisorStage) -> None:
        self.stage = stage
        self.states: dict[int, SupervisorState] = {}
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Review one signal; only tradeable or vetoed ones travel on."""
        signal: SignalScored = record
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = self.stage.new_state()
        reviewed = self.stage.on_signal(state, signal)
        self.progress.note(partition, signal.event_time_ms)
        if reviewed is not None:
            out.record(
                Topic.SIGNALS_SUPERVISED,
                reviewed.symbol,
                reviewed,
                reviewed.event_time_ms,
                partition,
            )
            self.progress.sent(partition, reviewed.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the ensemble on ``partition``."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Forward progress (HOLD signals stop here, time still advances downstream)."""
        self.progress.emit(out, Topic.SIGNALS_SUPERVISED, self.name)
