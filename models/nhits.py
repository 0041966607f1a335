"""N-HiTS (Challu et al., 2023) on the recent OHLCV window, with a three-class head.

Architecture, as in the paper, in plain torch:

* **Stacks of MLP blocks** with doubly residual stacking: each block reads the residual of the
  input left by the blocks before it, emits a *backcast* (subtracted from that residual) and a
  *forecast* (added to the model output).
* **Multi-rate input pooling**: block ``s`` max-pools its input with kernel ``pool_sizes[s]`` so
  early stacks see a coarse, low-frequency view and late stacks the full-resolution detail.
* **Hierarchical interpolation**: block ``s`` predicts only ``ceil(horizon / downsample[s])``
  forecast knots per channel, linearly interpolated to the horizon. The interpolation is a
  constant matrix multiplication, not ``F.interpolate``: ONNX Runtime runs the MatMul about 30 %
  faster than the Resize/GatherND that ``F.interpolate`` exports to
  (``/work/shared/notes/onnx-scoring-measurements.md``, pitfall 2), with the same values.

Adaptation to classification (our choice, not the paper's): the summed forecast is a latent
multi-channel trajectory of ``horizon`` steps; a linear head maps it, together with the window's
instance-normalization statistics (see :class:`models.sequence.layers.InstanceNorm`), to SELL / HOLD
/ BUY logits, trained end to end with class-weighted cross-entropy. The exported graph ends in a
softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from models.fitting import N_CLASSES
from models.sequence.artifacts import NATIVE_SUFFIX as NATIVE_SUFFIX  # the protocol names it
from models.sequence.layers import InstanceNorm
from models.sequence.model import SequenceModel, WindowShape
from models.sequence.network import NeuralModelError
from models.sequence.training import TrainConfig

NAME = "nhits"
INPUT = "window"


@dataclass(frozen=True)
class NHiTSConfig(WindowShape):
    """N-HiTS layers and training settings; the default is the small, tick-budget size."""

    horizon: int = 16
    pool_sizes: tuple[int, ...] = (8, 4, 1)
    downsample: tuple[int, ...] = (8, 4, 1)
    blocks_per_stack: int = 1
    hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Reject shapes that cannot be built (mismatched stacks, bad sizes)."""
        if len(self.pool_sizes) != len(self.downsample) or not self.pool_sizes:
            raise NeuralModelError("pool_sizes and downsample need one entry per stack")
        if min(self.pool_sizes + self.downsample) < 1 or min(self.window, self.horizon) < 1:
            raise NeuralModelError("window, horizon, pool sizes and ratios must be >= 1")


DEFAULT_CONFIG = NHiTSConfig()
LARGE_CONFIG = NHiTSConfig(hidden=512, n_layers=2, blocks_per_stack=1, horizon=16)
"""The "larger configuration" of the sizing study: neuralforecast's default block width (two
512-unit layers); 1.56M parameters here because every block back-casts all 5 channels."""


def interpolation_matrix(n_knots: int, length: int) -> torch.Tensor:
    """Linear interpolation from ``n_knots`` equally spaced knots to ``length`` points, (K, L).

    Same convention as ``F.interpolate(mode="linear", align_corners=False)``: output point ``j``
    samples the knot axis at ``(j + 0.5) * K / L - 0.5``, clamped to the end knots.
    """
    pos = (torch.arange(length, dtype=torch.float64) + 0.5) * n_knots / length - 0.5
    pos = pos.clamp(0.0, n_knots - 1)
    left = pos.floor().long()
    right = (left + 1).clamp(max=n_knots - 1)
    frac = pos - left.double()
    matrix = torch.zeros(n_knots, length, dtype=torch.float64)
    cols = torch.arange(length)
    matrix.index_put_((left, cols), 1.0 - frac, accumulate=True)
    matrix.index_put_((right, cols), frac, accumulate=True)
    return matrix.float()


class NHiTSBlock(nn.Module):
    """One N-HiTS block: pool -> MLP -> (full-resolution backcast, interpolated forecast)."""

    def __init__(self, config: NHiTSConfig, pool: int, downsample: int) -> None:
        super().__init__()
        self.channels = config.channels
        self.window = config.window
        self.n_knots = max(1, math.ceil(config.horizon / downsample))
        self.pool = nn.MaxPool1d(kernel_size=pool, stride=pool, ceil_mode=True)
        pooled = math.ceil(config.window / pool)
        layers: list[nn.Module] = []
        width = pooled * config.channels
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = config.hidden
        self.mlp = nn.Sequential(*layers)
        self.theta = nn.Linear(width, config.channels * (config.window + self.n_knots))
        self.register_buffer("interp", interpolation_matrix(self.n_knots, config.horizon))

    def forward(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual`` (N, C, L) -> backcast (N, C, L), forecast (N, C, H)."""
        hidden = self.mlp(self.pool(residual).flatten(1))
        theta = self.theta(hidden)
        split = self.channels * self.window
        backcast = theta[:, :split].reshape(-1, self.channels, self.window)
        knots = theta[:, split:].reshape(-1, self.channels, self.n_knots)
        return backcast, knots @ self.interp


class NHiTSClassifier(nn.Module):
    """N-HiTS stacks + linear three-class head; windows (N, L, C) -> logits (N, 3)."""

    def __init__(self, config: NHiTSConfig) -> None:
        super().__init__()
        self.norm = InstanceNorm(config.channels)
        self.blocks = nn.ModuleList(
            NHiTSBlock(config, pool, ratio)
            for pool, ratio in zip(config.pool_sizes, config.downsample, strict=True)
            for _ in range(config.blocks_per_stack)
        )
        self.head = nn.Linear(config.channels * (config.horizon + 2), N_CLASSES)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of windows."""
        normalized, stats = self.norm(window)
        residual = normalized.transpose(1, 2)
        forecast = torch.zeros((), dtype=window.dtype)
        for block in self.blocks:
            backcast, block_forecast = block(residual)
            residual = residual - backcast
            forecast = forecast + block_forecast
        return self.head(torch.cat([forecast.flatten(1), stats], dim=-1))


MODEL = SequenceModel(NAME, NHiTSConfig, NHiTSClassifier, DEFAULT_CONFIG)
"""Build, train, score, export, save and load: the code shared with the other sequence model."""
build, train, untrained = MODEL.build, MODEL.train, MODEL.untrained
predict_proba, export_onnx = MODEL.predict_proba, MODEL.export_onnx
save_native, load_native = MODEL.save_native, MODEL.load_native
