"""The model adapter both sequence networks are: build, train, score, export, save and load.

A network module supplies its name, config type, ``network(config) -> nn.Module`` and default
config; :class:`SequenceModel` does the rest the same way for each, and the module exposes the
bound methods as the functions the training orchestrator calls (``models.catalog``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
from torch import nn

from models.sequence import artifacts
from models.sequence.network import (
    History,
    NeuralModelError,
    TrainedNetwork,
    WindowDataset,
    predict_proba,
)
from models.sequence.training import TrainConfig, fit, seed_everything


class NetworkConfig(Protocol):
    """What the adapter reads of a network's config."""

    @property
    def window(self) -> int:
        """Bars per input window."""
        ...

    @property
    def channels(self) -> int:
        """Channels per bar (OHLCV: 5)."""
        ...

    @property
    def train(self) -> TrainConfig:
        """Optimisation settings."""
        ...


ConfigT = TypeVar("ConfigT", bound=NetworkConfig)


@dataclass(frozen=True)
class WindowShape:
    """The input both networks' configs start with: ``window`` bars of ``channels`` values.

    A network config adds its layer sizes and ends with ``train: TrainConfig``; see
    ``models/studies/sequence_sizing.py`` and each module's ``LARGE_CONFIG`` for the sizing.
    """

    window: int = 64
    channels: int = 5


@dataclass(frozen=True)
class SequenceModel(Generic[ConfigT]):
    """One sequence network as a trainable model (see the module doc)."""

    name: str
    config_type: type[ConfigT]
    network: Callable[[ConfigT], nn.Module]
    default_config: ConfigT

    def build(self, config: ConfigT, seed: int) -> nn.Module:
        """A freshly initialised network; the same seed gives the same initial weights."""
        seed_everything(seed, config.train.num_threads)
        return self.network(config)

    def train(
        self,
        train: WindowDataset,
        val: WindowDataset,
        config: ConfigT | None = None,
        seed: int = 0,
    ) -> TrainedNetwork:
        """Train on ``train`` with early stopping (both splits cut by time by the caller)."""
        config = self.default_config if config is None else config
        expected = (config.window, config.channels)
        if tuple(train.window.shape[1:]) != expected:
            raise NeuralModelError(
                f"{self.name}: config expects windows {expected}, "
                f"got {tuple(train.window.shape[1:])}"
            )
        module = self.build(config, seed)
        history = fit(self.name, module, train, val, config.train, seed)
        return TrainedNetwork(self.name, module, config, seed, history, expected)

    def untrained(self, config: ConfigT, seed: int = 0) -> TrainedNetwork:
        """A seeded, untrained network (latency depends on the graph, not on weight values)."""
        module = self.build(config, seed)
        module.eval()
        return TrainedNetwork(
            self.name, module, config, seed, History(), (config.window, config.channels)
        )

    def predict_proba(self, native: TrainedNetwork, x: np.ndarray) -> np.ndarray:
        """SELL / HOLD / BUY probabilities (N, 3) float32 from the torch module."""
        return predict_proba(native, x)

    def export_onnx(
        self, native: TrainedNetwork, path: Path, window_shape: tuple[int, int]
    ) -> None:
        """Write the ONNX graph ``window`` (N, W, 5) -> ``probabilities`` (N, 3) to ``path``."""
        artifacts.export_onnx(native, path, window_shape)

    def save_native(self, native: TrainedNetwork, path: Path) -> None:
        """Keep the trained weights and config for ``models export`` (no pickled code)."""
        artifacts.save_native(native, path)

    def load_native(self, path: Path) -> TrainedNetwork:
        """Inverse of :meth:`save_native`."""
        return artifacts.load_native(path, self.config_type, self.build)
