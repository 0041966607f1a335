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
from streams.stages import (
    EnsembleStage,
    ExecutionStage,
    ExitPlannerStage,
    LearningStage,
    RiskStage,
    StrategyStage,
    SupervisorStage,
)


def build_handlers(settings: Settings) -> list[StageHandler]:
    """One handler per stage. Loads the promoted ONNX models (the only heavy step)."""
    from models.scorer import EnsembleScorer

    scorer = EnsembleScorer.from_registry(settings.registry_dir)
    n, lag = settings.partitions, settings.feedback_lag_ms
    return [
        FeaturesHandler(),
        EnsembleHandler(EnsembleStage(scorer, settings.ensemble_weights)),
        SupervisorHandler(SupervisorStage(settings.supervisor, scorer.names)),
        StrategyHandler(StrategyStage(settings.risk, settings.seed), lag),
        RiskHandler(RiskStage(settings.risk), n, lag),
        ExitPlannerHandler(ExitPlannerStage(settings.exits, settings.risk)),
        ExecutionHandler(ExecutionStage()),
        LearningHandler(LearningStage(), n),
    ]


Factory = Callable[[Settings], list[StageHandler]]
