"""supervisor: ``signals.ensemble`` -> ``signals.supervised``; vetoes are data, HOLD stops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter, Restore
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import Action, SignalScored, SignalSupervised
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.stages.supervisor import SupervisorStage, SupervisorState
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec


def review_attributes(reviewed: SignalSupervised) -> dict[str, Any]:
    """Span attributes of a review: veto or pass, the rules that vetoed, the bias shares."""
    return {
        "qt.vetoed": reviewed.vetoed,
        "qt.veto_rules": [r.rule.value for r in reviewed.veto_reasons],
        "qt.veto_details": [r.detail for r in reviewed.veto_reasons],
        "qt.final_action": reviewed.final_action.value,
        "qt.bias.symbol_buy_share": reviewed.bias.symbol_buy_share,
        "qt.bias.overall_buy_share": reviewed.bias.overall_buy_share,
        "qt.health_veto_share": reviewed.health_veto_share,
    }


class SupervisorHandler:
    """Bias windows per symbol and per partition ("overall"), as in the in-process runner."""

    name = "supervisor"
    inputs = stage_spec("supervisor").input_topics

    def __init__(self, stage: SupervisorStage) -> None:
        self.stage = stage
        self.states: dict[int, SupervisorState] = {}
        self.progress = ForwardedWatermarks()

    def checkpoint(self, topic: str, partition: int, record: Any) -> Restore | None:
        """The windows a signal moves (its symbol's, the partition's overall and health flags),
        as they were.

        A HOLD changes nothing (the stage returns before the windows); otherwise copies of three
        ring buffers (~3 µs), not the whole partition state, which holds every symbol's window.
        """
        if record.action is Action.HOLD:
            return None
        state = self.states.get(partition)
        if state is None:

            def forget() -> None:
                self.states.pop(partition, None)

            return forget
        symbol = record.symbol
        mine, overall, health = state.per_symbol.get(symbol), state.overall, state.health
        mine, overall, health = (
            mine and mine.copy(),
            overall and overall.copy(),
            health and health.copy(),
        )

        def restore() -> None:
            if mine is None:
                state.per_symbol.pop(symbol, None)
            else:
                state.per_symbol[symbol] = mine
            state.overall, state.health = overall, health

        return restore

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Review one signal; only tradeable or vetoed ones travel on."""
        signal: SignalScored = record
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = self.stage.new_state()
        reviewed = self.stage.on_signal(state, signal)
        self.progress.note(partition, signal.event_time_ms)
        if reviewed is not None:
            for reason in reviewed.veto_reasons:
                metrics().veto(reason.rule.value)
            metrics().health_veto_share(partition, reviewed.health_veto_share)
            tracing.annotate(review_attributes(reviewed))
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

    def to_state(self) -> dict[str, Any]:
        """The bias windows and the progress forwarded."""
        return {
            "windows": {str(p): s.to_dict() for p, s in self.states.items()},
            "progress": self.progress.to_state(),
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.states = {int(p): SupervisorState.from_dict(s) for p, s in data["windows"].items()}
        self.progress.load_state(data["progress"])


def build(context: BuildContext) -> SupervisorHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return SupervisorHandler(
        SupervisorStage.from_settings(
            context.settings, context.scorer.names, context.scorer.versions
        )
    )
