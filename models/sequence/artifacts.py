"""What a trained sequence network is written as: the ONNX graph, and the native weights file.

The ONNX graph has softmax inside: ``window`` (N, W, C) -> ``probabilities`` (N, 3). The native
file keeps weights, config and training history as plain tensors and builtins (no pickled
code), so ``models export`` can write the graph again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from models.sequence.network import History, NeuralModelError, TrainedNetwork
from models.sequence.training import TrainConfig

ConfigT = TypeVar("ConfigT")

INPUT_NAME = "window"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 20
"""Opset of the exported graphs (dynamo exporter's native opset; ORT 1.20+ runs it)."""
NATIVE_SUFFIX = ".pt"
"""File suffix of :func:`save_native` artifacts (kept next to ``model.onnx`` for re-export)."""


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
