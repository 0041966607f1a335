"""Training orchestrator: dataset -> walk-forward -> final fit -> ONNX + parity -> registry.

For every requested model, on one dataset built by :func:`models.dataset.build_dataset`:

1. **Hold back the tail.** The last ``holdout_fraction`` of the training period (by time) is the
   held-back block; a purge gap of ``label horizon`` bars separates it from the rows before it,
   so no training label looks into it.
2. **Walk-forward validation** on the development rows before that gap: expanding-window folds
   from :func:`models.dataset.walk_forward_splits`, one fit per fold, metrics on each fold's
   validation block (never shuffled across time).
3. **Final fit** on all development rows (optionally strided), with the held-back block as the
   ``val`` argument (GBDTs use fixed rounds and only log it; the networks early-stop as their
   config says — by default on an inner purged block of their training rows).
4. **Export** to ONNX and **check parity** native vs ONNX Runtime on the held-back rows; above
   1e-4 the run fails and nothing is registered for that model.
5. **Register** ``<registry>/<model>/<version>/`` with a manifest stating the exact data, ranges,
   stride, label, metrics and parity figure, and (by default) promote it.

No wall clock is read: version names and ranges come from the arguments and the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from models.catalog import (
    VARIANT_SEPARATOR,
    apply_overrides,
    config_dict,
    export_shape,
    model_input,
    model_module,
    save_native,
)
from models.fitting import TrainingError
from models.metrics import classification_metrics, mean_fold_metrics
from models.sampling import evenly_spread, one_in, tail_split


def time_range(time_ms: np.ndarray) -> dict[str, Any]:
    """First/last row time of a block, as ms and ISO (inclusive bounds), plus its row count."""
    if len(time_ms) == 0:
        return {"rows": 0}
    from models.dataset import ms_to_iso

    lo, hi = int(time_ms.min()), int(time_ms.max())
    return {"first_ms": lo, "last_ms": hi, "first": ms_to_iso(lo), "last": ms_to_iso(hi),
            "rows": len(time_ms)}  # fmt: skip


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainPlan:
    """Everything a training run depends on; recorded in each manifest.

    Defaults follow the data plan: ``um_futures_1m_2025``, all symbols, everything before the
    held-out evaluation window (2025-05-21 00:00 UTC).
    """

    data_dir: Path
    registry: Path
    version: str
    models: tuple[str, ...] = ("xgboost", "lightgbm", "nhits", "patchtst")
    symbols: tuple[str, ...] | None = None
    start: str | None = None
    end: str = "2025-05-21T00:00"
    seed: int = 7
    n_folds: int = 3
    holdout_fraction: float = 0.12
    train_stride: int = 2
    parity_rows: int = 20_000
    promote: bool = True
    overwrite: bool = False
    keep_native: bool = True
    """Store the native artifact next to the ONNX file (needed by ``models export``)."""
    label: dict[str, Any] = field(default_factory=dict)  # LabelSpec overrides
    config_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per model spec (``"xgboost"``, ``"nhits@large"``): config fields to replace."""
    trained_for: str | None = None
    """The cause of this run (the trainer's trigger id), kept in each manifest's
    ``data_source``: a trainer restarted after a crash finds what it had registered for it."""


@dataclass(frozen=True)
class Split:
    """Row indices of the walk-forward folds, the development block and the held-back block."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    dev: np.ndarray
    holdout: np.ndarray


def split_rows(time_ms: np.ndarray, plan: TrainPlan, gap_ms: int) -> Split:
    """Held-back tail by time, purge gap, then walk-forward folds on the development rows."""
    from models.dataset import walk_forward_splits

    dev, holdout = tail_split(time_ms, plan.holdout_fraction, gap_ms)
    if len(dev) == 0 or len(holdout) == 0:
        raise TrainingError(f"time range too short to hold back {plan.holdout_fraction:.0%}")
    gap_bars = max(1, gap_ms // 60_000)
    splits = walk_forward_splits(time_ms[dev], plan.n_folds, gap_bars) if plan.n_folds else []
    folds = [(dev[np.asarray(tr)], dev[np.asarray(va)]) for tr, va in splits]
    return Split(folds=folds, dev=dev, holdout=holdout)


# --------------------------------------------------------------------------- one model


@dataclass(frozen=True)
class ModelOutcome:
    """What one model's training produced (the registered manifest and where it lives)."""

    name: str
    version: str
    path: Path
    walk_forward: dict[str, Any]
    holdout: dict[str, Any]
    parity: dict[str, Any]


def outcome_from_manifest(registry: Path, model: str, version: str) -> ModelOutcome:
    """A registered version's outcome, read back from its manifest (what :func:`train_model`
    returned when it registered it)."""
    from models.registry import read_manifest, version_dir

    manifest = read_manifest(registry, model, version)
    return ModelOutcome(model, version, version_dir(registry, model, version),
                        manifest.metrics.get("walk_forward", {}), manifest.metrics["holdout"],
                        manifest.parity)  # fmt: skip


def fit_stride(config: Any, plan: TrainPlan) -> int:
    """Stride the orchestrator applies to fitting rows for this model.

    Models whose config samples its own rows (the networks' ``train.train_stride`` and
    ``max_train_rows``) get every development row, so the two strides do not compound.
    """
    own = getattr(getattr(config, "train", None), "train_stride", None)
    return 1 if own is not None else plan.train_stride


def _sampling_note(config: Any, plan: TrainPlan) -> str:
    stride = fit_stride(config, plan)
    own = getattr(config, "train", None)
    if stride == 1 and own is not None:
        return (
            f"fitting rows sampled by the model's own config: train_stride="
            f"{own.train_stride}, max_train_rows={getattr(own, 'max_train_rows', None)} "
            "(most recent kept); validation/held-back rows are not strided"
        )
    return (
        f"fitting rows strided by {stride} (every {stride}-th row of the time-ordered "
        "development set, all symbols); validation/held-back rows are not strided"
    )


def _fit_and_score(
    module: ModuleType, config: Any, dataset: Any, train_idx: np.ndarray, val_idx: np.ndarray,
    plan: TrainPlan,
) -> tuple[Any, np.ndarray]:  # fmt: skip
    """Fit on (thinned) ``train_idx`` rows, return the native model and its ``val_idx`` probs."""
    train_set = dataset.subset(one_in(train_idx, fit_stride(config, plan), plan.seed))
    val_set = dataset.subset(val_idx)
    native = module.train(train_set, val_set, config, plan.seed)
    proba = np.asarray(module.predict_proba(native, model_input(val_set, module.INPUT)))
    return native, proba


def walk_forward(
    name: str, module: ModuleType, config: Any, dataset: Any, split: Split, plan: TrainPlan
) -> dict[str, Any]:
    """Fit and score each expanding-window fold; per-fold metrics with exact time ranges."""
    folds = []
    for k, (tr, va) in enumerate(split.folds):
        _, proba = _fit_and_score(module, config, dataset, tr, va, plan)
        metrics = classification_metrics(dataset.y[va], proba)
        metrics["fold"] = k
        metrics["train_range"] = time_range(dataset.time_ms[tr])
        metrics["validation_range"] = time_range(dataset.time_ms[va])
        folds.append(metrics)
    return {"n_folds": len(folds), "mean": mean_fold_metrics(folds), "folds": folds}


def train_model(spec: str, dataset: Any, split: Split, plan: TrainPlan, context: dict[str, Any]
                ) -> ModelOutcome:  # fmt: skip
    """Walk-forward, final fit, export, parity, register (and promote) one model."""
    import tempfile

    from models.parity import check_parity
    from models.registry import Manifest, promote, register

    name, module, config = model_module(spec)
    if spec in plan.config_overrides:
        config = apply_overrides(config, plan.config_overrides[spec])
    wf = walk_forward(name, module, config, dataset, split, plan) if plan.n_folds > 0 else {}
    native, proba = _fit_and_score(module, config, dataset, split.dev, split.holdout, plan)
    holdout_metrics = classification_metrics(dataset.y[split.holdout], proba)
    x_all = model_input(dataset, module.INPUT)
    with tempfile.TemporaryDirectory(prefix=f"qt-{name}-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        module.export_onnx(native, onnx_path, export_shape(module, x_all))
        rows = evenly_spread(split.holdout, plan.parity_rows)
        parity = check_parity(
            name, lambda x: module.predict_proba(native, x), onnx_path, x_all[rows]
        )
        native_path = save_native(module, native, Path(tmp)) if plan.keep_native else None
        manifest = Manifest(
            model=name,
            version=plan.version,
            input=module.INPUT,
            input_shape=[None, *x_all.shape[1:]],
            config=config_dict(config),
            metrics={"walk_forward": wf, "holdout": holdout_metrics},
            parity=parity.to_dict(),
            train_range=time_range(dataset.time_ms[split.dev]),
            validation_range=time_range(dataset.time_ms[split.holdout]),
            seed=plan.seed,
            notes=[_sampling_note(config, plan), *context["notes"]],
            **{k: v for k, v in context.items() if k != "notes"},
        )
        registered = register(plan.registry, manifest, onnx_path, native_path, plan.overwrite)
    # variants (``nhits@large`` -> ``nhits-large``) are registered for comparison, never promoted:
    # the default ensemble loads every promoted model
    if plan.promote and VARIANT_SEPARATOR not in spec:
        promote(plan.registry, name, plan.version)
    return ModelOutcome(name, plan.version, registered.onnx_path.parent, wf, holdout_metrics,
                        parity.to_dict())  # fmt: skip


# --------------------------------------------------------------------------- the run


def run_context(dataset: Any, plan: TrainPlan) -> dict[str, Any]:
    """Manifest fields shared by every model of one run: features, label, data, sampling."""
    from models.dataset import CLASSES
    from models.features import FEATURE_NAMES, FEATURE_VERSION

    described = dataset.describe()
    return {
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "window": int(dataset.window.shape[1]),
        "classes": list(CLASSES),
        "label": dataset.label_spec.to_dict(),
        "data_source": {
            "dataset": described.get("data_source"),
            "data_dir": described.get("data_dir"),
            "symbols": described.get("symbols"),
            "requested_start": described.get("start"),
            "requested_end_exclusive": described.get("end_exclusive"),
            "rows": described["rows"],
            "class_balance": described["class_balance"],
            "default_fit_stride": plan.train_stride,
            "holdout_fraction": plan.holdout_fraction,
            "n_folds": plan.n_folds,
            "purge_gap_bars": dataset.label_spec.horizon_bars,
            **({"trained_for": plan.trained_for} if plan.trained_for else {}),
        },
        "notes": [
            "held-back block = last holdout_fraction of the training period, after a purge gap "
            "of label-horizon bars; it is the `val` argument of the final fit: GBDTs use fixed "
            "rounds and only log it; the networks early-stop as their config says "
            "(train.early_stopping: 'inner' = a purged block cut from the training rows)",
            "the evaluation window (2025-05-21 00:00 .. 2025-05-25 11:59 UTC) is not in any "
            "range used here",
        ],
    }


def run(plan: TrainPlan, log: Callable[[str], None] = print) -> list[ModelOutcome]:
    """Train, validate, export, parity-check and register every model of ``plan``.

    Model modules are imported one by one, so a missing neural module only fails its own model
    (reported as :class:`TrainingError`) after the others are registered.
    """
    from models.dataset import LabelSpec, build_dataset
    from models.parity import ExportError, ParityError

    # A model whose extra is missing fails before the dataset is built (minutes), not after.
    importable, failures = _importable(plan.models, log)
    if not importable:
        raise TrainingError(f"no model can be trained ({'; '.join(failures)})")
    spec = LabelSpec(**plan.label)
    dataset = build_dataset(plan.data_dir, plan.symbols, plan.start, plan.end, spec)
    split = split_rows(dataset.time_ms, plan, spec.horizon_bars * 60_000)
    log(
        f"dataset: {len(dataset)} rows, {len(set(dataset.symbol.tolist()))} symbols, "
        f"dev {len(split.dev)} / held-back {len(split.holdout)} rows, "
        f"{len(split.folds)} walk-forward folds, balance {dataset.class_balance()}"
    )
    context = run_context(dataset, plan)
    outcomes = []
    for spec_name in importable:
        try:
            outcome = train_model(spec_name, dataset, split, plan, context)
        except (TrainingError, ParityError, ExportError) as exc:
            failures.append(str(exc))
            log(f"[red]{spec_name}: {exc}[/red]")
            continue
        outcomes.append(outcome)
        log(_summary_line(outcome))
    if failures:
        raise TrainingError(
            f"{len(failures)} model(s) failed ({'; '.join(failures)}); "
            f"registered: {[o.name for o in outcomes]}"
        )
    return outcomes


def _importable(specs: tuple[str, ...], log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """The specs whose model module imports, and one failure line for each of the others."""
    ok, failures = [], []
    for spec_name in specs:
        try:
            model_module(spec_name)
        except TrainingError as exc:
            failures.append(str(exc))
            log(f"[red]{exc}[/red]")
            continue
        ok.append(spec_name)
    return ok, failures


def _summary_line(o: ModelOutcome) -> str:
    wf = o.walk_forward.get("mean", {})
    nan = float("nan")
    return (
        f"{o.name} {o.version}: walk-forward bal.acc {wf.get('balanced_accuracy', nan):.3f}"
        f" macro-F1 {wf.get('macro_f1', nan):.3f}; held-back bal.acc "
        f"{o.holdout['balanced_accuracy']:.3f}, predicted balance "
        f"{o.holdout['prediction_balance']}; parity {o.parity['max_abs_diff']:.2e} -> {o.path}"
    )
