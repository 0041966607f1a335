"""The predictors a report compares: each model, the runtime's ensemble vote, three baselines.

* models: arg-max of their own probabilities;
* ``ensemble``: :func:`streams.stages.ensemble.vote` on every row, the function the streaming
  ``ensemble`` stage calls, fed the same way (each member's row renormalized to sum 1 by the
  stage's :func:`streams.stages.ensemble.normalised`, members in the scorer's order);
* baselines: ``always_hold`` (never trades), ``momentum`` (sign of the row's own ``ret_1``: BUY
  if up, SELL if down, HOLD if flat), ``buy_and_hold`` (BUY everywhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import BUY, HOLD, SELL, Dataset
from models.evaluation.scoring import EvaluationError, Scored
from models.features import FEATURE_NAMES
from streams.stages.ensemble import normalised, vote
from streams.vocabulary import CLASSES as ACTIONS

BASELINES = ("always_hold", "momentum", "buy_and_hold")
ENSEMBLE = "ensemble"
_RET_1 = FEATURE_NAMES.index("ret_1")
IntArray = npt.NDArray[np.int64]
Proba = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Signals:
    """One predictor's output on the evaluation rows: class indices and optional probabilities."""

    name: str
    kind: str  # "model" | "ensemble" | "baseline"
    pred: IntArray
    proba: Proba | None = None
    version: str | None = None


def baseline_predictions(ds: Dataset) -> dict[str, IntArray]:
    """The three baselines (module doc); momentum reads ``ret_1`` of the row itself."""
    ret1 = ds.tabular[:, _RET_1]
    momentum = np.where(ret1 > 0, BUY, np.where(ret1 < 0, SELL, HOLD)).astype(np.int64)
    n = len(ds)
    return {
        "always_hold": np.full(n, HOLD, dtype=np.int64),
        "momentum": momentum,
        "buy_and_hold": np.full(n, BUY, dtype=np.int64),
    }


@dataclass(frozen=True)
class EnsembleVotes:
    """The runtime vote on every row, and which configured members took part."""

    pred: IntArray
    proba: npt.NDArray[np.float64]
    weights: dict[str, float]
    """Renormalized weight per member present, in the configured order."""
    missing: list[str]
    """Members with a positive weight that are not among the scored models."""


def runtime_ensemble(probs: Mapping[str, Proba], weights: Mapping[str, float]) -> EnsembleVotes:
    """:func:`streams.stages.ensemble.vote` on each row over the members.

    ``probs`` are (N, 3) per model, rows aligned; members are the models with a positive
    weight, voting in the scorer's (sorted) order.
    """
    members = sorted(k for k, w in weights.items() if w > 0 and k in probs)  # scorer's order
    missing = sorted(k for k, w in weights.items() if w > 0 and k not in probs)
    if not members:
        raise EvaluationError(f"no ensemble member among the loaded models {sorted(probs)}")
    rows = {m: np.asarray(probs[m]) for m in members}
    n = len(rows[members[0]])
    if not n:
        raise EvaluationError("no evaluation rows to vote on")
    member_weights = {m: float(weights[m]) for m in members}
    pred = np.empty(n, dtype=np.int64)
    proba = np.empty((n, 3), dtype=np.float64)
    norm: tuple[float, ...] = ()
    for i in range(n):
        ballot = vote({m: normalised(rows[m][i]) for m in members}, member_weights)
        pred[i] = ACTIONS.index(ballot.action)
        proba[i] = ballot.probs
        norm = ballot.weights
    used = dict(zip(members, norm, strict=True))
    return EnsembleVotes(pred, proba, {k: used[k] for k in weights if k in used}, missing)


def collect_signals(
    scored: Scored, weights: Mapping[str, float]
) -> tuple[list[Signals], dict[str, Any]]:
    """Models (sorted by name), the runtime ensemble, then the baselines."""
    sigs = [
        Signals(n, "model", p.argmax(axis=1).astype(np.int64), p, scored.versions[n])
        for n, p in sorted(scored.probs.items())
    ]
    ds = scored.ds
    ens = runtime_ensemble(scored.probs, weights)
    sigs.append(Signals(ENSEMBLE, "ensemble", ens.pred, ens.proba))
    sigs += [Signals(n, "baseline", p) for n, p in baseline_predictions(ds).items()]
    return sigs, {"weights": ens.weights, "missing": ens.missing}
