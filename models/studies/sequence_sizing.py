"""Sizing study: small vs large N-HiTS and PatchTST, walk-forward accuracy and tick latency.

The issue asks to size the sequence networks so the four-model ensemble scores one tick in
<= 250 µs (p50, batch 1, one thread) *without losing walk-forward accuracy against the larger
configuration*, and to show both. The GBDTs take about 100 µs, leaving about 120 µs for the two
networks together. This script trains each network in its ``DEFAULT_CONFIG`` (small, the one
the system ships) and ``LARGE_CONFIG`` (the paper/reference size) on the same walk-forward folds
with the same data budget, and measures ONNX Runtime latency with the workers' session options.

Honesty rules built in:

* Only data before the held-out evaluation window (``models.dataset.EVAL_START``) is read.
* Early stopping uses an *inner* block cut from the end of each fold's training rows (purged by
  the label horizon), never the fold's validation block, so the reported validation metrics are
  not selected on.
* Both sizes see identical rows, epochs and seed; the comparison is paired by fold.

Run: ``.venv/bin/python -m models.studies.sequence_sizing`` (about 20-30 minutes on 2 shared
cores with the defaults). Writes ``sizing.json`` and ``sizing.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from models.sampling import sample_in_order, tail_split
from models.studies.latency import ensemble_tick, measure
from models.studies.sizing_report import to_markdown, verdict

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/binance/um_futures_1m_2025"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "reports/sizing"


@dataclass(frozen=True)
class StudyPlan:
    """Everything the study depends on (recorded in the JSON)."""

    data_dir: Path
    out: Path
    n_folds: int = 2
    dataset_stride: int = 2
    val_stride: int = 2
    max_train_rows: int = 24_000
    epochs: int = 5
    patience: int = 2
    inner_fraction: float = 0.15
    seed: int = 7
    latency_runs: int = 2000
    throughput_batches: int = 20


def _variants() -> list[tuple[str, str, ModuleType, Any]]:
    from models import nhits, patchtst

    return [
        ("nhits", "small", nhits, nhits.DEFAULT_CONFIG),
        ("nhits", "large", nhits, nhits.LARGE_CONFIG),
        ("patchtst", "small", patchtst, patchtst.DEFAULT_CONFIG),
        ("patchtst", "large", patchtst, patchtst.LARGE_CONFIG),
    ]


def momentum_proba(window: np.ndarray) -> np.ndarray:
    """Baseline: one-hot on the sign of the last one-bar return (BUY up, SELL down, HOLD flat).

    The window's close channel is ``100 * ln(c / c_last)``, so the previous bar's value is
    ``-100 * r_last``.
    """
    prev = window[:, -2, 3]
    cls = np.where(prev < 0, 2, np.where(prev > 0, 0, 1))
    return np.eye(3, dtype=np.float32)[cls]


def constant_proba(n: int, cls: int) -> np.ndarray:
    """Baseline: the same class for every row."""
    return np.tile(np.eye(3, dtype=np.float32)[cls], (n, 1))


def _training_config(config: Any, plan: StudyPlan) -> Any:
    train = dataclasses.replace(
        config.train,
        epochs=plan.epochs,
        patience=plan.patience,
        max_train_rows=plan.max_train_rows,
        train_stride=1,
        num_threads=1,
        early_stopping="val",  # the inner block is cut here, see _fit_fold
        max_stop_rows=8000,
    )
    return dataclasses.replace(config, train=train)


def _fit_fold(
    module: ModuleType, config: Any, ds: Any, train_idx: np.ndarray, plan: StudyPlan
) -> Any:
    from models.sequence.training import Rows

    gap_ms = ds.label_spec.horizon_bars * 60_000
    fit_rel, stop_rel = tail_split(ds.time_ms[train_idx], plan.inner_fraction, gap_ms)
    fit_idx, stop_idx = train_idx[fit_rel], train_idx[stop_rel]
    # Spread the row budget over the whole training period (seeded, symbol-agnostic sample).
    fit_idx = sample_in_order(fit_idx, plan.max_train_rows, plan.seed)
    return module.train(
        Rows(ds.window[fit_idx], ds.y[fit_idx]),
        Rows(ds.window[stop_idx], ds.y[stop_idx]),
        config,
        plan.seed,
    )


def run_variant(
    name: str,
    size: str,
    module: ModuleType,
    config: Any,
    ds: Any,
    folds: Sequence[Any],
    plan: StudyPlan,
) -> dict[str, Any]:
    """Walk-forward fits of one configuration, then latency of the last fold's model."""
    from models.metrics import classification_metrics, mean_fold_metrics

    config = _training_config(config, plan)
    fold_metrics, net = [], None
    for k, fold in enumerate(folds):
        net = _fit_fold(module, config, ds, fold.train, plan)
        val = fold.val
        metrics = classification_metrics(ds.y[val], module.predict_proba(net, ds.window[val]))
        metrics.update(
            fold=k,
            best_epoch=net.history.best_epoch,
            epochs_run=len(net.history.val_loss),
            train_rows=net.history.train_rows,
        )
        fold_metrics.append(metrics)
        print(
            f"{name}/{size} fold {k}: acc {metrics['accuracy']:.4f} "
            f"F1 {metrics['macro_f1']:.4f} logloss {metrics['log_loss']:.4f}",
            flush=True,
        )
    last_val = ds.window[folds[-1].val]
    return {
        "model": name,
        "size": size,
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "folds": fold_metrics,
        "mean": mean_fold_metrics(fold_metrics),
        "latency": measure(module, net, last_val, plan.latency_runs, plan.throughput_batches),
    }


def baselines(ds: Any, folds: Sequence[Any], plan: StudyPlan) -> dict[str, Any]:
    """Always-HOLD and momentum on the same validation rows, for scale."""
    from models.metrics import classification_metrics, mean_fold_metrics

    out: dict[str, Any] = {}
    for label, fn in (
        ("always_hold", lambda w: constant_proba(len(w), 1)),
        ("momentum", momentum_proba),
    ):
        per_fold = []
        for fold in folds:
            val = fold.val
            per_fold.append(classification_metrics(ds.y[val], fn(ds.window[val])))
        out[label] = {"mean": mean_fold_metrics(per_fold), "folds": per_fold}
    return out


def _reusable(previous: dict[str, Any] | None, plan: StudyPlan) -> dict[tuple[str, str], Any]:
    """Results of a previous report made with the same plan, keyed by (model, size).

    Training is deterministic for a given seed, data and code, so a configuration whose config
    dict is unchanged would reproduce the same numbers; re-running the 30-minute large PatchTST
    after changing only a small model would waste the shared CPU.
    """
    if previous is None:
        return {}
    same_plan = previous["plan"] == _plan_dict(plan)
    return {(r["model"], r["size"]): r for r in previous["results"]} if same_plan else {}


def _plan_dict(plan: StudyPlan) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(plan).items()}


def run(plan: StudyPlan, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole study; returns the report (also written to ``plan.out``).

    With ``previous`` (an earlier report of the same plan), variants whose full config is
    unchanged are taken from it, marked ``"reused": true``.
    """
    from models.dataset import EVAL_START, LabelSpec, build_dataset, walk_forward_splits

    spec = LabelSpec()
    ds = build_dataset(plan.data_dir, None, None, EVAL_START, spec, stride=plan.dataset_stride)
    folds = [
        f._replace(val=sample_in_order(f.val, -(-len(f.val) // plan.val_stride), plan.seed))
        for f in walk_forward_splits(ds.time_ms, plan.n_folds, spec.horizon_bars)
    ]
    reuse = _reusable(previous, plan)
    results = []
    for name, size, module, config in _variants():
        old = reuse.get((name, size))
        wanted = json.loads(json.dumps(dataclasses.asdict(_training_config(config, plan))))
        if old is not None and old["config"] == wanted:
            results.append({**old, "reused": True})
        else:
            results.append(run_variant(name, size, module, config, ds, folds, plan))
    report = {
        "plan": _plan_dict(plan),
        "data": ds.describe(),
        "fold_ranges": [
            {
                "train_rows": len(f.train),
                "val_rows": len(f.val),
                "val_first_ms": int(ds.time_ms[f.val].min()),
                "val_last_ms": int(ds.time_ms[f.val].max()),
            }
            for f in folds
        ],
        "results": results,
        "baselines": baselines(ds, folds, plan),
    }
    report["verdict"] = verdict(results)
    _write(report, plan.out)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: ``python -m models.studies.sequence_sizing --help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    defaults = StudyPlan(DEFAULT_DATA, DEFAULT_OUT)
    parser.add_argument("--data-dir", type=Path, default=defaults.data_dir)
    parser.add_argument("--out", type=Path, default=defaults.out)
    for f in dataclasses.fields(StudyPlan):
        if f.name not in ("data_dir", "out"):
            value = getattr(defaults, f.name)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--registry", type=Path, default=DEFAULT_OUT.parents[1] / "registry")
    parser.add_argument(
        "--tick-only",
        action="store_true",
        help="only (re)measure the four-model tick and add it to an existing sizing.json",
    )
    parser.add_argument(
        "--reuse-unchanged",
        action="store_true",
        help="take variants whose config is unchanged from the existing sizing.json",
    )
    args = vars(parser.parse_args(argv))
    registry, tick_only = args.pop("registry"), args.pop("tick_only")
    args_reuse = args.pop("reuse_unchanged")
    plan = StudyPlan(**args)
    existing = plan.out / "sizing.json"
    previous = json.loads(existing.read_text()) if existing.exists() else None
    if tick_only and previous is None:
        raise SystemExit(f"--tick-only needs an existing {existing}")
    reuse = previous if args_reuse else None
    report = previous if tick_only and previous is not None else run(plan, reuse)
    report["ensemble_tick"] = ensemble_tick(registry, plan.data_dir, plan.latency_runs, _variants())
    _write(report, plan.out)
    print(to_markdown(report))


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sizing.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "sizing.md").write_text(to_markdown(report))


if __name__ == "__main__":
    main()
