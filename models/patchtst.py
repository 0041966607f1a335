"""PatchTST (Nie et al., 2023) on the recent OHLCV window, with a three-class head.

Architecture, as in the paper (supervised PatchTST/64-style), in plain torch:

* **RevIN-style instance normalization** per window and channel
  (:class:`models.sequence.layers.InstanceNorm`).
* **Channel independence**: each of the C channels is an independent univariate series; all
  channels share the patch embedding, the encoder and the head (batch N*C inside the network).
* **Patching** with ``patch_len`` / ``stride`` and end padding by repeating the last value
  (the paper's ``padding_patch="end"``). Implemented as one constant-index gather instead of
  ``Tensor.unfold``, which the TorchScript ONNX exporter cannot emit with a dynamic batch
  (``/work/shared/notes/onnx-scoring-measurements.md``, pitfall 1); clamping the index to the
  last bar *is* the replication padding.
* **Patch embedding + learnable positional embedding**, then a **Transformer encoder** with
  post-norm BatchNorm (the paper's default; it folds into an affine map at inference) and GELU
  feed-forward. The paper's optional residual attention is left out.
* **Flatten head**: each channel's (patches x d_model) representation is flattened and mapped
  to a ``horizon``-step latent forecast (shared weights across channels).

Adaptation to classification (our choice): a linear layer maps the C latent forecasts plus the
instance-normalization statistics to SELL / HOLD / BUY logits; softmax is inside the exported
graph.
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

NAME = "patchtst"
INPUT = "window"


@dataclass(frozen=True)
class PatchTSTConfig(WindowShape):
    """PatchTST layers and training settings; the default is the small, tick-budget size."""

    patch_len: int = 16
    stride: int = 16
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 1
    d_ff: int = 64
    horizon: int = 16
    dropout: float = 0.1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Reject shapes that cannot be built."""
        if self.d_model % self.n_heads:
            raise NeuralModelError(f"d_model {self.d_model} not divisible by {self.n_heads}")
        if not 1 <= self.patch_len <= self.window or self.stride < 1:
            raise NeuralModelError("need 1 <= patch_len <= window and stride >= 1")

    @property
    def n_patches(self) -> int:
        """Patches per channel, including the one made of end padding."""
        return (self.window - self.patch_len) // self.stride + 2


DEFAULT_CONFIG = PatchTSTConfig()
LARGE_CONFIG = PatchTSTConfig(patch_len=16, stride=8, d_model=128, n_heads=16, n_layers=3, d_ff=256)
"""The "larger configuration" of the sizing study: the paper's supervised size and the latency
anchor's (d_model 128, 3 layers, 16 heads, d_ff 256, patch 16 / stride 8)."""


def patch_index(window: int, patch_len: int, stride: int) -> torch.Tensor:
    """Time index of each patch element (P, patch_len); indices past the end repeat the last bar."""
    n_patches = (window - patch_len) // stride + 2
    start = torch.arange(n_patches).unsqueeze(1) * stride
    return (start + torch.arange(patch_len).unsqueeze(0)).clamp(max=window - 1)


class _BatchNormTokens(nn.Module):
    """BatchNorm over d_model for token tensors (B, P, d), as PatchTST's ``Transpose + BN``.

    Statistics over (B, P) per feature are the same whether the tensor is transposed to
    (B, d, P) or flattened to (B*P, d); the flatten exports to two free Reshapes instead of two
    copying Transposes, which matters at batch 1 where every graph node costs about a microsecond.
    """

    def __init__(self, d_model: int, n_tokens: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_tokens = n_tokens
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Static sizes (not x.shape) keep Shape/Gather/Concat plumbing out of the graph.
        flat = self.norm(x.reshape(-1, self.d_model))
        return flat.reshape(-1, self.n_tokens, self.d_model)


class EncoderLayer(nn.Module):
    """Multi-head self-attention + feed-forward, residual and post-BatchNorm after each."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_tokens = config.n_patches
        self.d_model = config.d_model
        self.d_head = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.norm_attn = _BatchNormTokens(config.d_model, config.n_patches)
        self.ff = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.d_ff, config.d_model),
        )
        self.norm_ff = _BatchNormTokens(config.d_model, config.n_patches)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention written with MatMul/Softmax (compact, exportable)."""
        # Static sizes (batch -1) so the exported graph carries no Shape/Gather plumbing.
        qkv = self.qkv(x).reshape(-1, self.n_tokens, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, P, dh)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))
        context = torch.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).reshape(-1, self.n_tokens, self.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_attn(x + self.drop(self._attention(x)))
        return self.norm_ff(x + self.drop(self.ff(x)))


class PatchTSTClassifier(nn.Module):
    """PatchTST backbone + flatten head + three-class layer; windows (N, L, C) -> logits (N, 3)."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.channels = config.channels
        self.norm = InstanceNorm(config.channels)
        self.register_buffer("index", patch_index(config.window, config.patch_len, config.stride))
        self.embed = nn.Linear(config.patch_len, config.d_model)
        self.position = nn.Parameter(torch.empty(config.n_patches, config.d_model))
        nn.init.uniform_(self.position, -0.02, 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.Sequential(*(EncoderLayer(config) for _ in range(config.n_layers)))
        self.flatten_head = nn.Linear(config.n_patches * config.d_model, config.horizon)
        self.head_inputs = config.channels * config.horizon
        self.head = nn.Linear(config.channels * (config.horizon + 2), N_CLASSES)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of windows."""
        normalized, stats = self.norm(window)
        series = normalized.transpose(1, 2)  # (N, C, L)
        patches = series[:, :, self.index]  # (N, C, P, patch_len)
        tokens = self.embed(patches.flatten(0, 1)) + self.position  # (N*C, P, d)
        encoded = self.encoder(self.drop(tokens))
        # (N*C, H) -> (N, C*H): rows of one window's channels are adjacent after flatten(0, 1).
        forecast = self.flatten_head(encoded.flatten(1)).reshape(-1, self.head_inputs)
        return self.head(torch.cat([forecast, stats], dim=-1))


MODEL = SequenceModel(NAME, PatchTSTConfig, PatchTSTClassifier, DEFAULT_CONFIG)
"""Build, train, score, export, save and load: the code shared with the other sequence model."""
build, train, untrained = MODEL.build, MODEL.train, MODEL.untrained
predict_proba, export_onnx = MODEL.predict_proba, MODEL.export_onnx
save_native, load_native = MODEL.save_native, MODEL.load_native
