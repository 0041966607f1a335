"""LightGBM on the tabular features: train, predict, export to ONNX.

Training-side module (needs the ``[train]`` extra); workers score the exported ONNX file.

ONNX evaluates tree thresholds in float32 while LightGBM stores them in float64, so a feature
value between the two roundings takes the other branch (measured: 1 row in 20k off by 0.017 in
probability). :func:`float32_exact` rounds every threshold *down* to the nearest float32 once,
right after training; for float32 inputs the decision ``x <= t`` is then the same in both
engines, and the native model we keep is that rounded one (its output on float32 data does not
change, see shared notes pitfall 5).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from models.fitting import TrainingError, balanced_sample_weights, training_progress
from models.parity import finalize_onnx_probabilities, require_float32_2d

if TYPE_CHECKING:
    from models.dataset import Dataset

NAME = "lightgbm"
INPUT = "tabular"
N_CLASSES = 3
ONNX_TARGET_OPSET = 15
NATIVE_SUFFIX = ".txt"

_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)


@dataclass(frozen=True)
class LgbmConfig:
    """Hyper-parameters, sized like :class:`models.xgb.XgbConfig` for the latency budget."""

    n_rounds: int = 150
    num_leaves: int = 24
    max_depth: int = 6
    learning_rate: float = 0.08
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    min_data_in_leaf: int = 100
    lambda_l2: float = 1.0
    balance_classes: bool = True
    # One thread: on the shared 2-core box two threads were 3-8x *slower* (measured 1.6 s vs
    # 5-14 s for 150 rounds on 47k rows) because the threads wait on each other; also deterministic.
    n_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return asdict(self)


DEFAULT_CONFIG = LgbmConfig()
LARGE_CONFIG = LgbmConfig(n_rounds=300, num_leaves=63, max_depth=-1)
"""The size of the latency anchors in the shared notes (900 trees, 63 leaves): for comparison."""


def _params(config: LgbmConfig, seed: int) -> dict[str, Any]:
    """Booster parameters; every LightGBM seed derives from ``seed`` (reproducible runs)."""
    return {
        "objective": "multiclass",
        "num_class": N_CLASSES,
        "num_leaves": config.num_leaves,
        "max_depth": config.max_depth,
        "learning_rate": config.learning_rate,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "min_data_in_leaf": config.min_data_in_leaf,
        "lambda_l2": config.lambda_l2,
        "num_threads": config.n_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def _round_down_float32(value: float) -> float:
    """Largest float32 <= ``value`` (as a Python float, so it prints exactly)."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf), dtype=np.float32)
    return float(rounded)


def _rewrite_thresholds(match: re.Match[str]) -> str:
    values = (_round_down_float32(float(tok)) for tok in match.group(1).split())
    return "threshold=" + " ".join(repr(v) for v in values)


def float32_exact(native: lgb.Booster) -> lgb.Booster:
    """A copy of ``native`` whose split thresholds are exactly representable in float32.

    ``tree_sizes`` is dropped because the rewritten trees change length; LightGBM then parses
    the trees sequentially.
    """
    text = native.model_to_string()
    text = _THRESHOLD_LINE.sub(_rewrite_thresholds, text)
    text = _TREE_SIZES_LINE.sub("", text)
    return lgb.Booster(model_str=text)


def train(
    train: Dataset, val: Dataset, config: LgbmConfig = DEFAULT_CONFIG, seed: int = 7
) -> lgb.Booster:
    """Fit on ``train``; fixed rounds (``val`` is only logged), thresholds made float32-exact."""
    x_train = require_float32_2d(train.tabular, "train")
    x_val = require_float32_2d(val.tabular, "val")
    weights = balanced_sample_weights(train.y, N_CLASSES) if config.balance_classes else None
    d_train = lgb.Dataset(x_train, label=train.y, weight=weights, free_raw_data=True)
    d_val = lgb.Dataset(x_val, label=val.y, reference=d_train)
    with training_progress(f"{NAME} boosting", config.n_rounds) as bar:
        booster = lgb.train(
            _params(config, seed),
            d_train,
            num_boost_round=config.n_rounds,
            valid_sets=[d_val],
            callbacks=[lambda _env: bar.advance()],
        )
    return float32_exact(booster)


def predict_proba(native: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 3) float32 in ``CLASSES`` order."""
    proba = np.asarray(native.predict(require_float32_2d(x, "predict")), dtype=np.float32)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise TrainingError(f"{NAME}: expected (N, {N_CLASSES}) probabilities, got {proba.shape}")
    return proba


def export_onnx(native: lgb.Booster, path: Path, n_features: int) -> None:
    """Write ``path`` with input ``tabular`` (N, F) float32 and output ``probabilities`` (N, 3).

    ``zipmap=False`` keeps the probabilities a tensor instead of a list of dicts (pitfall 6).
    """
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_lightgbm(
        float32_exact(native),
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        target_opset=ONNX_TARGET_OPSET,
        zipmap=False,
    )
    finalize_onnx_probabilities(onnx_model, path, producer=NAME)


def save_native(native: lgb.Booster, path: Path) -> None:
    """Keep the native model (text format) so ``models export`` can re-export it."""
    native.save_model(str(path))


def load_native(path: Path) -> lgb.Booster:
    """Inverse of :func:`save_native`."""
    return lgb.Booster(model_file=str(path))
