"""The trained sequence network and its inference: windows (N, W, C) -> probabilities (N, 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from models.fitting import N_CLASSES, TrainingError


class NeuralModelError(TrainingError):
    """A sequence network could not be trained, applied or exported; the message says why."""


class WindowDataset(Protocol):
    """The part of ``models.dataset.Dataset`` the sequence networks read."""

    @property
    def window(self) -> np.ndarray:
        """Normalized recent OHLCV windows, float32 (N, WINDOW, 5)."""
        ...

    @property
    def y(self) -> np.ndarray:
        """Class index per row, int64 (N,): 0 SELL, 1 HOLD, 2 BUY."""
        ...


@dataclass
class History:
    """Per-epoch losses of one training run and the epoch whose weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_log_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    class_weights: list[float] = field(default_factory=list)
    train_rows: int = 0
    val_rows: int = 0
    early_stopping: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy for manifests and reports."""
        return {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_log_loss": self.val_log_loss,
            "best_epoch": self.best_epoch,
            "class_weights": self.class_weights,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "early_stopping": self.early_stopping,
        }


@dataclass
class TrainedNetwork:
    """The "native" model of a sequence network: the torch module plus how it was trained.

    ``module`` maps float32 windows (N, WINDOW, 5) to class logits (N, 3); softmax is applied by
    :func:`predict_proba` and inside the exported ONNX graph.
    """

    name: str
    module: nn.Module
    config: object
    seed: int
    history: History
    window_shape: tuple[int, int]

    @property
    def n_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


def check_windows(name: str, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """Reject arrays that would silently train or score garbage."""
    if x.ndim != 3:
        raise NeuralModelError(f"{name}: window must be (N, WINDOW, channels), got {x.shape}")
    if x.shape[0] == 0:
        raise NeuralModelError(f"{name}: no rows")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=(1, 2)).sum())
        raise NeuralModelError(f"{name}: {bad} window rows contain NaN/inf")
    if y is not None and (y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= N_CLASSES):
        raise NeuralModelError(f"{name}: labels must be (N,) in [0, {N_CLASSES}), got {y.shape}")


@torch.no_grad()
def logits(module: nn.Module, x: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
    """Class logits of ``module`` for windows ``x`` in eval mode (no dropout)."""
    module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    parts = [module(xt[i : i + batch_size]) for i in range(0, xt.shape[0], batch_size)]
    return torch.cat(parts)


def predict_proba(net: TrainedNetwork, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, 3) float32 in CLASSES order from the native torch module."""
    check_windows(net.name, x)
    if tuple(x.shape[1:]) != net.window_shape:
        raise NeuralModelError(
            f"{net.name}: trained on windows {net.window_shape}, got {tuple(x.shape[1:])}"
        )
    probs = torch.softmax(logits(net.module, x, batch_size), dim=-1)
    return probs.numpy().astype(np.float32)
