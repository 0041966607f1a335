"""Model hot-swap: a ``models.events`` PROMOTED or ROLLED_BACK record changes the served version.

When the ensemble stage reads such a record it loads the named version beside the others from
the registry at once (sha256 verified, graph inputs/outputs checked, a probe row scored: shapes
and probabilities must be right), so a broken artifact is refused while the old sessions keep
serving (``LOAD_FAILED`` with the reason). A loaded set waits, *pending*, for the first feature
row whose event time is at or after the record's ``event_time_ms``: rows before it are scored
by the old set, rows from it on by the new one, even inside one batch. That is the swap point in
event time: a replay that holds the record before those rows swaps at the same row every time.
A record that arrives after rows of its time were already scored (live, late) swaps at the next
row, and the ``LOADED`` record says at which event time it took effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.features import FEATURE_NAMES, WINDOW, WINDOW_CHANNELS
from streams.contracts.records import ModelEventRecorded
from streams.vocabulary import ModelEventKind

if TYPE_CHECKING:
    from streams.stages.ensemble import EnsembleStage, Scorer

#: The records that change which version is served.
SWAP_KINDS = (ModelEventKind.PROMOTED, ModelEventKind.ROLLED_BACK)
#: Builds a scorer for ``{model: version}`` (raises when an artifact cannot be loaded).
Loader = Callable[[Mapping[str, str]], "Scorer"]


class SwapError(RuntimeError):
    """A new model set cannot replace the served one (the reason is the message)."""


@dataclass(frozen=True)
class PendingSwap:
    """A loaded set waiting for its event time."""

    effective_ms: int
    versions: Mapping[str, str]
    cause: str  # the event_id of the record that asked for it
    scorer: Scorer


def check_scorer(new: Scorer, old: Scorer, weights: Mapping[str, float]) -> None:
    """Refuse a set that cannot stand in for ``old``: feature version, weights, probe scores."""
    if new.feature_version != old.feature_version:
        raise SwapError(f"feature version {new.feature_version}, served {old.feature_version}")
    if set(new.names) != set(old.names):
        raise SwapError(f"models {sorted(new.names)}, served {sorted(old.names)}")
    unweighted = [m for m in new.names if m not in weights]
    if unweighted:
        raise SwapError(f"no ensemble weight for {unweighted}")
    tabular = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
    window = np.zeros((1, WINDOW, WINDOW_CHANNELS), dtype=np.float32)
    try:
        scores = new.score(tabular, window)
    except Exception as exc:  # the scorer's own error names the model and shape
        raise SwapError(f"probe row failed: {exc}") from exc
    for model, probs in scores.items():
        row = np.asarray(probs, dtype=np.float64)
        if row.shape != (1, 3) or not all(math.isfinite(p) and p >= 0 for p in row[0]):
            raise SwapError(f"{model}: probe output {row.tolist()} is not one probability row")
        if abs(float(row.sum()) - 1.0) > 1e-3:
            raise SwapError(f"{model}: probe probabilities sum to {float(row.sum()):.6f}")


def swap_request(event: ModelEventRecorded, served: Mapping[str, str]) -> dict[str, str] | None:
    """The versions a swap record asks for (None: not a swap, or nothing changes)."""
    if event.kind not in SWAP_KINDS or event.model not in served:
        return None
    wanted = {**served, event.model: event.version}
    return None if wanted == dict(served) else wanted


def swap_event(
    kind: ModelEventKind, model: str, version: str, t: int, detail: str, cause: str
) -> ModelEventRecorded:
    """The ensemble's answer to a swap record: ``LOADED`` (took effect) or ``LOAD_FAILED``."""
    return ModelEventRecorded(
        event_id=f"{model}:{version}:{kind.value}:{t}:{cause}",
        model=model,
        version=version,
        event_time_ms=t,
        kind=kind,
        detail=detail,
    )


def pending_to_state(pending: list[PendingSwap]) -> list[dict[str, Any]]:
    """Pending swaps without their sessions (they are reloaded from the registry)."""
    return [{"at": p.effective_ms, "versions": dict(p.versions), "cause": p.cause} for p in pending]


def restore_served(stage: EnsembleStage, models: Mapping[str, Any] | None) -> None:
    """Serve again what a stored state served, with its pending swaps (``models``: the
    ``{"versions", "pending"}`` a handler stored; None from a state before swaps). A set that
    no longer loads leaves a ``LOAD_FAILED`` in ``stage.events``."""
    if models and models["versions"] != stage.versions:
        stage.request(-(2**62), models["versions"], "restored state")
    for p in (models or {}).get("pending", []):
        stage.request(p["at"], p["versions"], p["cause"])
    stage.swap_due(-(2**62))
