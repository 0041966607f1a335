"""The stages of the topology, in pipeline order, built from the settings."""

from __future__ import annotations

from collections.abc import Callable

from streams.agents.base import StageHandler
from streams.agents.ensemble import EnsembleHandler
from streams.agents.execution import ExecutionHandler
from streams.agents.exits import ExitPlannerHandler
from streams.agents.features import FeaturesHandler
from streams.agents.learning import LearningHandler
from streams.agents.risk import RiskHandler
from streams.agents.strategy import StrategyHandler
from streams.agents.supervisor import SupervisorHandler
from streams.config import Settings
from streams.observability.metrics import TimedScorer, metrics
from streams.stages import (
    EnsembleStage,
    ExecutionStage,
    ExitPlannerStage,
    LearningStage,
    RiskStage,
    StrategyStage,
    SupervisorStage,
)


def load_scorer(settings: Settings) -> TimedScorer:
    """The promoted models, one scorer each so each model's scoring time is measured.

    Scores equal ``EnsembleScorer.from_registry``'s: same sessions, inputs and order (by name).
    """
    from models.scorer import EnsembleScorer, ScorerError, promoted_versions

    wanted = promoted_versions(settings.registry_dir)
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


def build_handlers(settings: Settings) -> list[StageHandler]:
    """One handler per stage. Loads the promoted ONNX models (the only heavy step)."""
    scorer = load_scorer(settings)
    n, lag, skew = settings.partitions, settings.feedback_lag_ms, settings.max_event_skew_ms
    return [
        FeaturesHandler(skew),
        EnsembleHandler(EnsembleStage(scorer, settings.ensemble_weights)),
        SupervisorHandler(SupervisorStage(settings.supervisor, scorer.names)),
        StrategyHandler(StrategyStage(settings.risk, settings.seed), lag),
        RiskHandler(RiskStage(settings.risk), n, lag, skew),
        ExitPlannerHandler(ExitPlannerStage(settings.exits, settings.risk)),
        ExecutionHandler(ExecutionStage(), skew),
        LearningHandler(LearningStage(), n),
    ]


Factory = Callable[[Settings], list[StageHandler]]
