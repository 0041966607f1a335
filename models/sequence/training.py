"""The training loop of the sequence networks: seeded, time-ordered, imbalance-aware.

What the loop guarantees, and why:

* **Reproducible.** One seed fixes weight init, dropout and the batch order; torch runs in
  deterministic mode on a fixed number of threads, so the same seed on the same machine gives the
  same weights bit for bit (the unit tests check this).
* **Time order respected.** Rows are only shuffled *inside* the training split, which the caller
  cut by time (walk-forward); the validation split is never shuffled into training.
* **Imbalance-aware.** Cross-entropy is weighted by inverse class frequency of the training split,
  so a model cannot win by predicting the majority class (the system this replaces emitted 99%
  SELL). The early-stopping loss uses the same weights so stopping optimises the objective
  that was trained, and the unweighted log loss is recorded next to it.
* **Early stopping** with patience; the best epoch's weights are restored. By default the
  stopping block is cut from the end of the *training* period (purged by the label horizon), so
  the caller's validation split is never used to choose anything and metrics on it stay honest
  (``TrainConfig.early_stopping``).
* **Rows sub-sampled without symbol aliasing** (seeded uniform sample, not a fixed stride).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.fitting import N_CLASSES, class_weights, training_progress
from models.sampling import one_in, sample_in_order, tail_split
from models.sequence.network import History, NeuralModelError, WindowDataset, check_windows, logits


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by both networks.

    ``train_stride`` keeps one training row in ``k`` (a seeded uniform sample, see
    :func:`select_training_rows`): neighbouring one-minute windows overlap in all but one bar, so
    sub-sampling loses little information and keeps a run within minutes on the shared 2-core
    machine. ``max_train_rows`` then caps the rows (most recent kept, closest to validation).

    ``early_stopping`` chooses the block the stopping epoch is selected on. ``"inner"`` (default)
    cuts it from the end of the *training* period: the last ``inner_fraction`` of its time span,
    with ``purge_bars`` dropped before it so no fitted label's horizon reaches into it; the
    caller's ``val`` split is then never looked at, so metrics reported on it are not selected
    on (needs ``train.time_ms``). ``"val"`` stops on the caller's ``val`` split, for callers that
    cut their own inner block (the sizing study does).
    """

    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3
    train_stride: int = 3
    max_train_rows: int = 60_000
    grad_clip: float = 1.0
    class_weighting: bool = True
    num_threads: int = 1
    eval_batch_size: int = 4096
    show_progress: bool = True
    early_stopping: Literal["inner", "val"] = "inner"
    inner_fraction: float = 0.15
    purge_bars: int = 15
    max_stop_rows: int = 20_000


def seed_everything(seed: int, num_threads: int) -> None:
    """Make torch deterministic for this process: fixed seed, fixed threads, deterministic kernels.

    The thread count is part of the determinism contract: float reductions split across a
    different number of threads sum in a different order.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)


def select_training_rows(n_rows: int, stride: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of the rows used for training: ``ceil(n / stride)`` rows, <= ``max_rows``.

    A seeded uniform sample (:func:`models.sampling.one_in`). When capping, the oldest rows are
    dropped so the rows nearest to the validation period are kept.
    """
    if stride < 1 or max_rows < 1:
        raise NeuralModelError(f"stride and max_rows must be >= 1, got {stride}, {max_rows}")
    return one_in(np.arange(n_rows), stride, seed)[-max_rows:]


@dataclass(frozen=True)
class Rows:
    """Windows and labels of one block of rows (fitting or early stopping)."""

    window: np.ndarray
    y: np.ndarray


def inner_blocks(train: WindowDataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit / early-stopping row indices cut by time from the training period (purged)."""
    time_ms = getattr(train, "time_ms", None)
    if time_ms is None:
        raise NeuralModelError(
            "early_stopping='inner' needs train.time_ms to cut the stopping block by time; "
            "pass a models.dataset.Dataset or set early_stopping='val'"
        )
    fit_idx, stop_idx = tail_split(time_ms, config.inner_fraction, config.purge_bars * 60_000)
    if len(fit_idx) == 0 or len(stop_idx) == 0:
        raise NeuralModelError(
            f"training period too short for an inner stopping block: {len(fit_idx)} fit rows, "
            f"{len(stop_idx)} stopping rows (inner_fraction={config.inner_fraction})"
        )
    return fit_idx, stop_idx


def early_stopping_split(
    train: WindowDataset, val: WindowDataset, config: TrainConfig, seed: int
) -> tuple[Rows, Rows]:
    """The rows the network is fitted on and the rows its stopping epoch is chosen on.

    See :class:`TrainConfig` (``early_stopping``); both blocks are sub-sampled with the seed.
    """
    if config.early_stopping == "inner":
        fit_idx, stop_idx = inner_blocks(train, config)
        stop = Rows(train.window, train.y)
    elif config.early_stopping == "val":
        fit_idx, stop_idx = np.arange(len(train.y)), np.arange(len(val.y))
        stop = Rows(val.window, val.y)
    else:
        raise NeuralModelError(f"unknown early_stopping mode {config.early_stopping!r}")
    fit_idx = fit_idx[
        select_training_rows(len(fit_idx), config.train_stride, config.max_train_rows, seed)
    ]
    stop_idx = sample_in_order(stop_idx, config.max_stop_rows, seed)
    return (
        Rows(train.window[fit_idx], train.y[fit_idx]),
        Rows(stop.window[stop_idx], stop.y[stop_idx]),
    )


def _run_epoch(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    generator: torch.Generator,
    on_batch: Callable[[], None],
) -> float:
    """One pass over the shuffled training rows; returns the mean training loss."""
    module.train()
    order = torch.randperm(x.shape[0], generator=generator)
    total, seen = 0.0, 0
    for start in range(0, x.shape[0], config.batch_size):
        batch = order[start : start + config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module(x[batch]), y[batch])
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * batch.numel()
        seen += batch.numel()
        on_batch()
    return total / seen


def _validate(
    module: nn.Module, x: np.ndarray, y: torch.Tensor, weights: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """Class-weighted CE and plain log loss on the validation rows."""
    out = logits(module, x, batch_size)
    weighted = float(nn.functional.cross_entropy(out, y, weight=weights))
    plain = float(nn.functional.cross_entropy(out, y))
    return weighted, plain


def fit(
    name: str,
    module: nn.Module,
    train: WindowDataset,
    val: WindowDataset,
    config: TrainConfig,
    seed: int,
) -> History:
    """Train ``module`` in place with early stopping; the best stopping-epoch's weights are kept.

    ``history.val_loss`` is the loss on the early-stopping block (see :class:`TrainConfig`).

    The caller must have seeded and built ``module`` under :func:`seed_everything` so the
    initial weights are reproducible too.
    """
    check_windows(f"{name} train", train.window, train.y)
    fit_rows, stop_rows = early_stopping_split(train, val, config, seed)
    check_windows(f"{name} early-stopping", stop_rows.window, stop_rows.y)
    x = torch.from_numpy(np.ascontiguousarray(fit_rows.window, dtype=np.float32))
    y = torch.from_numpy(fit_rows.y.astype(np.int64))
    y_val = torch.from_numpy(stop_rows.y.astype(np.int64))
    cw = class_weights(fit_rows.y) if config.class_weighting else np.ones(N_CLASSES, np.float32)
    weights = torch.from_numpy(cw)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    history = History(
        class_weights=cw.tolist(),
        train_rows=len(fit_rows.y),
        val_rows=len(stop_rows.y),
        early_stopping=config.early_stopping,
    )
    best_state: dict[str, torch.Tensor] = copy.deepcopy(module.state_dict())
    best = math.inf
    batches = math.ceil(len(fit_rows.y) / config.batch_size)
    total = config.epochs * batches
    with training_progress(f"{name} training", total, config.show_progress) as bar:
        for epoch in range(config.epochs):
            history.train_loss.append(
                _run_epoch(module, x, y, loss_fn, optimizer, config, generator, bar.advance)
            )
            weighted, plain = _validate(
                module, stop_rows.window, y_val, weights, config.eval_batch_size
            )
            history.val_loss.append(weighted)
            history.val_log_loss.append(plain)
            bar.describe(f"{name} ep{epoch + 1} val {weighted:.4f}")
            if weighted < best - 1e-6:
                best, history.best_epoch = weighted, epoch
                best_state = copy.deepcopy(module.state_dict())
            elif epoch - history.best_epoch >= config.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return history
