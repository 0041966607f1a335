"""XGBoost on the tabular features: train, predict, export to ONNX.

Training-side module (needs the ``[train]`` extra). Workers never import it: they score the
exported ``model.onnx`` through :mod:`models.scorer`.

The native artifact is a raw :class:`xgboost.Booster` trained with ``multi:softprob`` so that
``predict_proba`` and the ONNX graph both return class probabilities in ``CLASSES`` order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from models.fitting import TrainingError, balanced_sample_weights, training_progress
from models.parity import finalize_onnx_probabilities, require_float32_2d

if TYPE_CHECKING:
    from models.dataset import Dataset

NAME = "xgboost"
INPUT = "tabular"
N_CLASSES = 3
# onnxmltools 1.16 refuses target_opset > 15 (see shared notes, pitfall 3).
ONNX_TARGET_OPSET = 15


@dataclass(frozen=True)
class XgbConfig:
    """Hyper-parameters. Sized for the 250 µs ensemble budget: 3 x n_rounds trees, depth <= 5.

    ``balance_classes`` weights rows inversely to class frequency so the dominant HOLD class does
    not drown the trade signals; the evaluation reports the resulting class balance either way.
    """

    n_rounds: int = 150
    max_depth: int = 5
    learning_rate: float = 0.08
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 20.0
    reg_lambda: float = 1.0
    max_bin: int = 256
    balance_classes: bool = True
    # One thread: on the shared 2-core box two threads were 3-8x *slower* (measured 1.6 s vs
    # 5-14 s for 150 rounds on 47k rows) because the threads wait on each other; also deterministic.
    n_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return asdict(self)


DEFAULT_CONFIG = XgbConfig()
LARGE_CONFIG = XgbConfig(n_rounds=300, max_depth=6)
"""The size of the latency anchors in the shared notes (900 trees, depth 6): for comparison."""


def _params(config: XgbConfig, seed: int) -> dict[str, Any]:
    """Booster parameters; ``base_score`` pinned so exports never depend on its estimation."""
    return {
        "objective": "multi:softprob",
        "num_class": N_CLASSES,
        "eval_metric": "mlogloss",
        "tree_method": "hist",
        "max_depth": config.max_depth,
        "eta": config.learning_rate,
        "subsample": config.subsample,
        "colsample_bytree": config.colsample_bytree,
        "min_child_weight": config.min_child_weight,
        "lambda": config.reg_lambda,
        "max_bin": config.max_bin,
        "nthread": config.n_threads,
        "seed": seed,
        "verbosity": 0,
    }


class _ProgressCallback(xgb.callback.TrainingCallback):
    """Advances a rich progress bar once per boosting round."""

    def __init__(self, advance: Any) -> None:
        super().__init__()
        self._advance = advance

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        """Advance the bar; never stops training early."""
        self._advance()
        return False


def train(
    train: Dataset, val: Dataset, config: XgbConfig = DEFAULT_CONFIG, seed: int = 7
) -> xgb.Booster:
    """Fit a booster on ``train.tabular``/``train.y``; ``val`` is evaluated for the log only.

    Rounds are fixed (no early stopping on ``val``) so the validation rows stay untouched by
    model selection and can serve as honest held-back rows for metrics and ONNX parity.
    """
    x_train = require_float32_2d(train.tabular, "train")
    x_val = require_float32_2d(val.tabular, "val")
    weights = balanced_sample_weights(train.y, N_CLASSES) if config.balance_classes else None
    d_train = xgb.DMatrix(x_train, label=train.y, weight=weights, nthread=config.n_threads)
    d_val = xgb.DMatrix(x_val, label=val.y, nthread=config.n_threads)
    with training_progress(f"{NAME} boosting", config.n_rounds) as bar:
        booster = xgb.train(
            _params(config, seed),
            d_train,
            num_boost_round=config.n_rounds,
            evals=[(d_val, "val")],
            verbose_eval=False,
            callbacks=[_ProgressCallback(bar.advance)],
        )
    return booster


def predict_proba(native: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 3) float32 in ``CLASSES`` order."""
    proba = native.inplace_predict(require_float32_2d(x, "predict"))
    out = np.asarray(proba, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != N_CLASSES:
        raise TrainingError(f"{NAME}: expected (N, {N_CLASSES}) probabilities, got {out.shape}")
    return out


def export_onnx(native: xgb.Booster, path: Path, n_features: int) -> None:
    """Write ``path`` with input ``tabular`` (N, F) float32 and output ``probabilities`` (N, 3)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_xgboost(
        native,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        target_opset=ONNX_TARGET_OPSET,
    )
    finalize_onnx_probabilities(onnx_model, path, producer=NAME)


def save_native(native: xgb.Booster, path: Path) -> None:
    """Keep the native booster (UBJSON) next to the ONNX file so ``models export`` can redo it."""
    native.save_model(str(path))


def load_native(path: Path) -> xgb.Booster:
    """Inverse of :func:`save_native`."""
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


NATIVE_SUFFIX = ".ubj"
