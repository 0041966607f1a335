"""The trainable models by name: which module implements each, its variants and its config.

A model module exposes ``NAME``, ``INPUT`` (``"tabular"`` or ``"window"``), ``DEFAULT_CONFIG``
(and optionally ``<VARIANT>_CONFIG``), ``train``, ``predict_proba``, ``export_onnx`` and, when
it keeps a native artifact, ``NATIVE_SUFFIX``/``save_native``/``load_native``. Modules are
imported on demand, so a model whose extra is missing fails alone.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from models.fitting import TRAIN_EXTRA_HINT, TrainingError

MODEL_MODULES: dict[str, str] = {
    "xgboost": "models.xgb",
    "lightgbm": "models.lgbm",
    "nhits": "models.nhits",
    "patchtst": "models.patchtst",
}
"""Model name -> module implementing the protocol above."""

VARIANT_SEPARATOR = "@"
"""``nhits@large`` trains ``models.nhits.LARGE_CONFIG`` and registers it as ``nhits-large``."""


def model_module(spec: str) -> tuple[str, ModuleType, Any]:
    """``"nhits@large"`` -> (registered name ``nhits-large``, module, config)."""
    base, _, variant = spec.partition(VARIANT_SEPARATOR)
    if base not in MODEL_MODULES:
        raise TrainingError(f"unknown model {base!r}; known: {', '.join(MODEL_MODULES)}")
    try:
        module = importlib.import_module(MODEL_MODULES[base])
    except ImportError as exc:
        raise TrainingError(
            f"{base}: cannot import {MODEL_MODULES[base]} ({exc}); {TRAIN_EXTRA_HINT}"
        ) from exc
    if not variant:
        return base, module, module.DEFAULT_CONFIG
    attr = f"{variant.upper()}_CONFIG"
    if not hasattr(module, attr):
        raise TrainingError(f"{base} has no {attr} variant")
    return f"{base}-{variant}", module, getattr(module, attr)


def model_input(dataset: Any, kind: str) -> np.ndarray:
    """The array a model eats: ``tabular`` (N, F) or ``window`` (N, W, 5)."""
    if kind not in ("tabular", "window"):
        raise TrainingError(f"unknown model input kind {kind!r}")
    return np.asarray(getattr(dataset, kind))


def export_shape(module: ModuleType, x: np.ndarray) -> Any:
    """The shape argument of ``module.export_onnx``: F for tabular models, (W, C) for windows."""
    return x.shape[1] if module.INPUT == "tabular" else tuple(x.shape[1:])


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with dotted keys for nested configs (``"train.epochs": 6``)."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in nested.items():
        flat[head] = apply_overrides(getattr(config, head), sub)
    try:
        return dataclasses.replace(config, **flat)
    except TypeError as exc:
        raise TrainingError(f"bad config override {overrides}: {exc}") from exc


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-able view of a config dataclass (tuples -> lists, nested dataclasses -> dicts)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = dataclasses.asdict(config)
    else:
        raw = dict(vars(config))
    return {k: _jsonable(v) for k, v in raw.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_native(module: ModuleType, native: Any, directory: Path) -> Path | None:
    """Write ``native`` next to the export when the model module can save one; its path."""
    save = getattr(module, "save_native", None)
    if save is None:
        return None
    path = directory / f"native{getattr(module, 'NATIVE_SUFFIX', '.bin')}"
    save(native, path)
    return path
