"""Network building blocks both sequence models use."""

from __future__ import annotations

import torch
from torch import nn


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
