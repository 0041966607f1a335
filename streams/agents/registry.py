"""The handlers of the declared stages (``streams/topology.py``), built from the settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from streams.agents.base import StageHandler
from streams.agents.ensemble import EnsembleHandler
from streams.config import Settings
from streams.observability.metrics import TimedScorer, metrics
from streams.topology import STAGES, BuildContext, StageSpec


def load_scorer(settings: Settings, versions: Mapping[str, str] | None = None) -> TimedScorer:
    """The promoted models (or ``versions``), one scorer each so each model's scoring time is
    measured.

    Scores equal ``EnsembleScorer.from_registry``'s: same sessions, inputs and order (by name).
    """
    from models.scorer import EnsembleScorer, ScorerError, promoted_versions

    if versions is not None:  # a hot swap names the whole set
        wanted = dict(versions)
    else:  # the promoted set, with the settings' pinned versions (incident replay)
        wanted = {**promoted_versions(settings.registry_dir), **settings.model_versions}
    if not wanted:
        msg = f"nothing promoted in {settings.registry_dir}; run `quantum-trader models train`"
        raise ScorerError(msg)
    members = {
        name: EnsembleScorer.from_registry(settings.registry_dir, {name: version})
        for name, version in sorted(wanted.items())
    }
    try:
        scorer = TimedScorer(members)
    except ValueError as exc:
        raise ScorerError(str(exc)) from exc
    metrics().model_info(scorer.versions)
    return scorer


def model_versions(handlers: list[StageHandler]) -> dict[str, str]:
    """The model versions the ensemble stage among ``handlers`` scores with."""
    for handler in handlers:
        if isinstance(handler, EnsembleHandler):
            return dict(handler.stage.versions)
    return {}


def build_handlers(settings: Settings, stages: Sequence[StageSpec] = STAGES) -> list[StageHandler]:
    """One handler per declared stage, in pipeline order. Loads the promoted ONNX models."""
    builders = stage_builders(settings, stages)
    return [builders[spec.name]() for spec in stages]


def stage_builders(
    settings: Settings, stages: Sequence[StageSpec] = STAGES
) -> dict[str, Callable[[], StageHandler]]:
    """Per declared stage, a function building one instance of its handler.

    The promoted ONNX models are loaded once, here, and shared by every instance.
    """
    context = BuildContext(settings, load_scorer(settings))
    return {spec.name: partial(spec.build, context) for spec in stages}


Factory = Callable[[Settings], list[StageHandler]]
