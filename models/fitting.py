"""What every model's fit shares: its error type, class weights and the progress bar.

Kept apart from the orchestrator (:mod:`models.train`) so the model modules import it without
importing the run that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

N_CLASSES = 3
"""SELL, HOLD, BUY (``models.dataset.CLASSES`` order)."""


TRAIN_EXTRA_HINT = "install the train extra: make install"
"""Told when a training-only import fails: ``make demo`` installs the runtime only (no torch)."""


class TrainingError(RuntimeError):
    """Training could not produce a valid model (bad data, bad shapes, unknown model)."""


def class_weights(y: npt.ArrayLike, n_classes: int = N_CLASSES) -> npt.NDArray[np.float32]:
    """Inverse-frequency class weights ``n / (k * count[class])`` over the ``k`` present classes.

    Why: with a dead zone most rows are HOLD; an unweighted model learns to say HOLD nearly
    always. Each present class then carries the same total weight and the weighted mean over
    rows is 1. A class absent from ``y`` gets weight 1 (it cannot contribute to the loss anyway,
    and an infinite weight would poison a validation loss where it does appear).
    """
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    total = counts.sum()
    if total == 0:
        raise TrainingError("cannot weight classes of an empty label array")
    present = counts > 0
    weights = np.ones(n_classes, dtype=np.float64)
    weights[present] = total / (present.sum() * counts[present])
    return weights.astype(np.float32)


def balanced_sample_weights(y: npt.NDArray[np.int64], n_classes: int) -> npt.NDArray[np.float32]:
    """Per-row weights: each row gets its class's :func:`class_weights` weight."""
    if len(y) == 0:
        return np.zeros(0, dtype=np.float32)
    return class_weights(y, n_classes)[y]


class ProgressBar:
    """The handle :func:`training_progress` yields: advance a step, or change the label."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self) -> None:
        """One step done (a boosting round, a batch)."""
        self._progress.advance(self._task)

    def describe(self, description: str) -> None:
        """Replace the label (e.g. with the last validation loss)."""
        self._progress.update(self._task, description=description)


@contextmanager
def training_progress(description: str, total: int, enabled: bool = True) -> Iterator[ProgressBar]:
    """A rich progress bar over ``total`` steps; ``enabled=False`` silences it (tests, CI logs)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    ) as progress:
        yield ProgressBar(progress, progress.add_task(description, total=total))
