"""Shared training, inference and ONNX export for the sequence networks (N-HiTS, PatchTST).

Training side only (needs the ``[train]`` extra): workers never import this module, they load the
ONNX graphs written by :func:`export_onnx` through ``models.scorer``.

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
* **Exported with softmax inside** the graph: ``window`` (N, W, 5) -> ``probabilities`` (N, 3).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

ConfigT = TypeVar("ConfigT")

N_CLASSES = 3
"""SELL, HOLD, BUY (``models.dataset.CLASSES`` order)."""

INPUT_NAME = "window"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 20
"""Opset of the exported graphs (dynamo exporter's native opset; ORT 1.20+ runs it)."""


class NeuralModelError(RuntimeError):
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


def seed_everything(seed: int, num_threads: int) -> None:
    """Make torch deterministic for this process: fixed seed, fixed threads, deterministic kernels.

    The thread count is part of the determinism contract: float reductions split across a
    different number of threads sum in a different order.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)


def class_weights(y: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Inverse-frequency class weights, normalised so the weighted mean over rows is 1.

    A class absent from ``y`` gets weight 1 (it cannot contribute to the loss anyway, and an
    infinite weight would poison the validation loss if it appears there).
    """
    counts = np.bincount(y.astype(np.int64), minlength=n_classes).astype(np.float64)
    total = counts.sum()
    if total == 0:
        raise NeuralModelError("cannot weight classes of an empty label array")
    present = counts > 0
    weights = np.ones(n_classes, dtype=np.float64)
    weights[present] = total / (present.sum() * counts[present])
    return weights.astype(np.float32)


def select_training_rows(n_rows: int, stride: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of the rows used for training: ``ceil(n / stride)`` rows, <= ``max_rows``.

    A seeded uniform sample, not a fixed stride: dataset rows are ordered by (time, symbol), so
    every k-th row would keep only the symbols whose position in the minute is aligned with k
    (stride 3 over 15 symbols trains on 5 of them). When capping, the oldest rows are dropped
    so the rows nearest to the validation period are kept.
    """
    if stride < 1 or max_rows < 1:
        raise NeuralModelError(f"stride and max_rows must be >= 1, got {stride}, {max_rows}")
    size = -(-n_rows // stride)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n_rows, size=size, replace=False)) if stride > 1 else np.arange(n_rows)
    return idx[-max_rows:]


def _check_inputs(name: str, x: np.ndarray, y: np.ndarray | None = None) -> None:
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


@torch.no_grad()
def logits(module: nn.Module, x: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
    """Class logits of ``module`` for windows ``x`` in eval mode (no dropout)."""
    module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    parts = [module(xt[i : i + batch_size]) for i in range(0, xt.shape[0], batch_size)]
    return torch.cat(parts)


def _validate(
    module: nn.Module, x: np.ndarray, y: torch.Tensor, weights: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """Class-weighted CE and plain log loss on the validation rows."""
    out = logits(module, x, batch_size)
    weighted = float(nn.functional.cross_entropy(out, y, weight=weights))
    plain = float(nn.functional.cross_entropy(out, y))
    return weighted, plain


@dataclass(frozen=True)
class Rows:
    """Windows and labels of one block of rows (fitting or early stopping)."""

    window: np.ndarray
    y: np.ndarray


def _sample_sorted(idx: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` of ``idx``, a seeded uniform sample kept in time order."""
    if len(idx) <= max_rows:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=max_rows, replace=False))


def inner_blocks(train: WindowDataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit / early-stopping row indices cut by time from the training period (purged)."""
    time_ms = getattr(train, "time_ms", None)
    if time_ms is None:
        raise NeuralModelError(
            "early_stopping='inner' needs train.time_ms to cut the stopping block by time; "
            "pass a models.dataset.Dataset or set early_stopping='val'"
        )
    t = np.asarray(time_ms, dtype=np.int64)
    t_lo, t_hi = int(t.min()), int(t.max())
    cut = t_hi - int((t_hi - t_lo) * config.inner_fraction)
    fit_idx = np.flatnonzero(t < cut - config.purge_bars * 60_000)
    stop_idx = np.flatnonzero(t >= cut)
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
    stop_idx = _sample_sorted(stop_idx, config.max_stop_rows, seed)
    return (
        Rows(train.window[fit_idx], train.y[fit_idx]),
        Rows(stop.window[stop_idx], stop.y[stop_idx]),
    )


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
    _check_inputs(f"{name} train", train.window, train.y)
    fit_rows, stop_rows = early_stopping_split(train, val, config, seed)
    _check_inputs(f"{name} early-stopping", stop_rows.window, stop_rows.y)
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
    with _progress(config.show_progress) as progress:
        task = progress.add_task(f"{name} training", total=config.epochs * batches)
        for epoch in range(config.epochs):
            history.train_loss.append(
                _run_epoch(
                    module,
                    x,
                    y,
                    loss_fn,
                    optimizer,
                    config,
                    generator,
                    lambda: progress.advance(task),
                )
            )
            weighted, plain = _validate(
                module, stop_rows.window, y_val, weights, config.eval_batch_size
            )
            history.val_loss.append(weighted)
            history.val_log_loss.append(plain)
            progress.update(task, description=f"{name} ep{epoch + 1} val {weighted:.4f}")
            if weighted < best - 1e-6:
                best, history.best_epoch = weighted, epoch
                best_state = copy.deepcopy(module.state_dict())
            elif epoch - history.best_epoch >= config.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return history


def _progress(enabled: bool) -> Progress:
    """A rich progress bar; ``enabled=False`` silences it (tests, CI logs)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def predict_proba(net: TrainedNetwork, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, 3) float32 in CLASSES order from the native torch module."""
    _check_inputs(net.name, x)
    if tuple(x.shape[1:]) != net.window_shape:
        raise NeuralModelError(
            f"{net.name}: trained on windows {net.window_shape}, got {tuple(x.shape[1:])}"
        )
    probs = torch.softmax(logits(net.module, x, batch_size), dim=-1)
    return probs.numpy().astype(np.float32)


class _WithSoftmax(nn.Module):
    """Export wrapper: the ONNX graph returns probabilities, not logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(window), dim=-1)


def export_onnx(net: TrainedNetwork, path: Path, window_shape: Sequence[int]) -> None:
    """Write ``net`` as an ONNX graph: input ``window`` (N, W, C) -> ``probabilities`` (N, 3).

    The batch dimension is dynamic. Uses the ``torch.export`` (dynamo) exporter, torch's default
    since 2.9 (the TorchScript one is deprecated); both networks are written without
    ``unfold``/``F.interpolate`` (constant-index gathers and constant interpolation matrices), so
    the optimized graph is compact: about 60 nodes, on par with or faster than the legacy export
    in ONNX Runtime at batch 1. The graph is checked with ``onnx.checker`` before it is written.
    """
    import onnx

    shape = tuple(int(s) for s in window_shape)
    if shape != net.window_shape:
        raise NeuralModelError(f"{net.name}: export shape {shape} != trained {net.window_shape}")
    wrapper = _WithSoftmax(net.module).eval()
    example = torch.zeros((2, *shape), dtype=torch.float32)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types; keep the context
        raise NeuralModelError(f"{net.name}: ONNX export failed: {exc}") from exc
    if program is None:
        raise NeuralModelError(f"{net.name}: ONNX exporter returned no program")
    model = program.model_proto
    model.doc_string = f"quantum-trader {net.name}: window {shape} -> SELL/HOLD/BUY probabilities"
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def onnx_max_abs_diff(net: TrainedNetwork, path: Path, x: np.ndarray) -> float:
    """Max absolute probability difference, ONNX Runtime (worker-configured session) vs torch."""
    from models.parity import onnx_probabilities

    return float(np.max(np.abs(onnx_probabilities(path, x) - predict_proba(net, x))))


class InstanceNorm(nn.Module):
    """RevIN-style instance normalization over time, per window and channel (Kim et al., 2022).

    Each window is standardised by its own per-channel mean and standard deviation, then a
    learnable per-channel affine map is applied. Forecasting models de-normalise their output
    with the same statistics; a classifier has nothing to de-normalise, but the statistics carry
    information the label depends on (the dead zone is a fixed return, so the window's volatility
    scale decides how often a move clears it). They are therefore returned as features for the
    head: ``signed_log1p(mean)`` and ``log(std)`` per channel, (N, 2C).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, L, C) -> normalized (N, L, C) and statistics (N, 2C)."""
        mean = x.mean(dim=1, keepdim=True)
        # eps (a variance) floors the std at 1e-3 in the window's units: 0.001 % for the price
        # channels (``100 * ln(p / c_last)``, typical std 0.1-0.3), below one tick for every
        # symbol we trade. Smaller floors blow float32 rounding of near-flat windows up into
        # 1e-5-level ONNX-vs-torch differences; larger ones would swamp quiet windows.
        std = torch.sqrt(((x - mean) ** 2).mean(dim=1, keepdim=True) + self.eps)
        normalized = (x - mean) / std * self.weight + self.bias
        # sign * log1p(|x|) rather than asinh: same shape, and the legacy exporter has no asinh.
        centre = mean[:, 0, :]
        signed_log = torch.sign(centre) * torch.log1p(centre.abs())
        stats = torch.cat([signed_log, torch.log(std[:, 0, :])], dim=-1)
        return normalized, stats


NATIVE_SUFFIX = ".pt"
"""File suffix of :func:`save_native` artifacts (kept next to ``model.onnx`` for re-export)."""


def save_native(net: TrainedNetwork, path: Path) -> None:
    """Save weights + config + training history (plain tensors and builtins, no pickled code)."""
    if not dataclasses.is_dataclass(net.config) or isinstance(net.config, type):
        raise NeuralModelError(f"{net.name}: config must be a dataclass instance")
    payload = {
        "name": net.name,
        "config": dataclasses.asdict(net.config),
        "seed": net.seed,
        "history": net.history.to_dict(),
        "window_shape": list(net.window_shape),
        "state_dict": net.module.state_dict(),
    }
    torch.save(payload, path)


def config_from_dict(config_type: type[ConfigT], raw: dict[str, Any]) -> ConfigT:
    """Rebuild a network config saved by :func:`save_native` (lists back to tuples)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_type):  # type: ignore[arg-type]
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name == "train":
            value = TrainConfig(**value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return config_type(**values)


def load_native(
    path: Path, config_type: type[ConfigT], build: Callable[[ConfigT, int], nn.Module]
) -> TrainedNetwork:
    """Inverse of :func:`save_native`; ``weights_only`` loading, so no code runs from the file."""
    try:
        payload = torch.load(path, weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise NeuralModelError(f"cannot load native network {path}: {exc}") from exc
    config = config_from_dict(config_type, payload["config"])
    module = build(config, int(payload["seed"]))
    module.load_state_dict(payload["state_dict"])
    module.eval()
    hist = payload["history"]
    history = History(**{k: hist[k] for k in History.__dataclass_fields__ if k in hist})
    shape = payload["window_shape"]
    return TrainedNetwork(
        payload["name"], module, config, int(payload["seed"]), history, (shape[0], shape[1])
    )
