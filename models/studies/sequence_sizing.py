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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/binance/um_futures_1m_2025"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "reports/sizing"
BUDGET_NETWORKS_US = 120.0
"""p50 budget for N-HiTS + PatchTST together (250 µs tick minus ~100 µs for the two GBDTs)."""
ACCURACY_TOLERANCE = 0.005
"""A small config "does not lose accuracy" if its mean fold accuracy and macro-F1 are at most
this much below the large one's (fold-to-fold spread on these blocks is larger than that)."""


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


@dataclass(frozen=True)
class _Arrays:
    """Minimal ``WindowDataset`` for the training loop."""

    window: np.ndarray
    y: np.ndarray


def _variants() -> list[tuple[str, str, ModuleType, Any]]:
    from models import nhits, patchtst

    return [
        ("nhits", "small", nhits, nhits.DEFAULT_CONFIG),
        ("nhits", "large", nhits, nhits.LARGE_CONFIG),
        ("patchtst", "small", patchtst, patchtst.DEFAULT_CONFIG),
        ("patchtst", "large", patchtst, patchtst.LARGE_CONFIG),
    ]


def inner_split(time_ms: np.ndarray, fraction: float, gap_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows by time: fit on the early part, early-stop on the last ``fraction``.

    Rows within ``gap_ms`` before the early-stopping block are dropped so no fitted label's
    horizon overlaps it.
    """
    t_lo, t_hi = int(time_ms.min()), int(time_ms.max())
    cut = t_hi - int((t_hi - t_lo) * fraction)
    return np.flatnonzero(time_ms < cut - gap_ms), np.flatnonzero(time_ms >= cut)


def sample_rows(idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``idx``: a seeded uniform sample kept in time order.

    Not a fixed stride: rows are ordered by (time, symbol), so every k-th row would keep only
    the symbols whose slot in the minute aligns with k (stride 2 over 16 symbols: 8 of them).
    """
    if len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))


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


def latency_us(session: Any, rows: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 latency of ``session.run`` in µs, cycling through ``rows``; warm-up excluded."""
    feeds = [{"window": rows[i : i + 1]} for i in range(len(rows))]
    for i in range(min(200, runs)):
        session.run(["probabilities"], feeds[i % len(feeds)])
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        session.run(["probabilities"], feeds[i % len(feeds)])
        samples[i] = time.perf_counter_ns() - start
    us = samples / 1e3
    return {
        "p50": float(np.percentile(us, 50)),
        "p90": float(np.percentile(us, 90)),
        "p99": float(np.percentile(us, 99)),
        "min": float(us.min()),
        "runs": runs,
    }


def torch_latency_us(net: Any, rows: np.ndarray, runs: int) -> float:
    """Batch-1 p50 latency of the native torch module (eager, one thread), in µs."""
    import torch

    torch.set_num_threads(1)
    xs = [torch.from_numpy(rows[i : i + 1]) for i in range(len(rows))]
    samples = []
    with torch.no_grad():
        for i in range(runs + 50):
            start = time.perf_counter_ns()
            net.module(xs[i % len(xs)])
            if i >= 50:
                samples.append(time.perf_counter_ns() - start)
    return float(np.median(samples) / 1e3)


def throughput_rows_s(session: Any, rows: np.ndarray, batches: int) -> float:
    """Rows per second at batch 256 (one thread)."""
    batch = np.ascontiguousarray(np.resize(rows, (256, *rows.shape[1:])), dtype=np.float32)
    session.run(["probabilities"], {"window": batch})
    start = time.perf_counter_ns()
    for _ in range(batches):
        session.run(["probabilities"], {"window": batch})
    return 256 * batches / ((time.perf_counter_ns() - start) / 1e9)


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
    gap_ms = ds.label_spec.horizon_bars * 60_000
    fit_rel, stop_rel = inner_split(ds.time_ms[train_idx], plan.inner_fraction, gap_ms)
    fit_idx, stop_idx = train_idx[fit_rel], train_idx[stop_rel]
    # Spread the row budget over the whole training period (seeded, symbol-agnostic sample).
    fit_idx = sample_rows(fit_idx, plan.max_train_rows, plan.seed)
    return module.train(
        _Arrays(ds.window[fit_idx], ds.y[fit_idx]),
        _Arrays(ds.window[stop_idx], ds.y[stop_idx]),
        config,
        plan.seed,
    )


def _measure(
    module: ModuleType, net: Any, val_window: np.ndarray, plan: StudyPlan
) -> dict[str, Any]:
    from models.parity import onnx_probabilities
    from models.scorer import load_session

    rows = np.ascontiguousarray(val_window[:: max(1, len(val_window) // 64)][:64])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        module.export_onnx(net, path, tuple(val_window.shape[1:]))
        parity_x = val_window[:: max(1, len(val_window) // 4096)]
        parity = float(
            np.abs(onnx_probabilities(path, parity_x) - module.predict_proba(net, parity_x)).max()
        )
        session = load_session(path)
        return {
            "parameters": net.n_parameters,
            "onnx_bytes": path.stat().st_size,
            "parity_max_abs_diff": parity,
            "parity_rows": len(parity_x),
            "ort_b1_us": latency_us(session, rows, plan.latency_runs),
            "torch_b1_p50_us": torch_latency_us(net, rows, plan.latency_runs // 4),
            "ort_b256_rows_per_s": throughput_rows_s(session, rows, plan.throughput_batches),
        }


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
        "latency": _measure(module, net, last_val, plan),
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


def verdict(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Budget and accuracy comparison small vs large per network, plus the combined p50."""
    by = {(r["model"], r["size"]): r for r in results}
    networks: dict[str, Any] = {}
    for name in ("nhits", "patchtst"):
        small, large = by[(name, "small")], by[(name, "large")]
        d_acc = small["mean"]["accuracy"] - large["mean"]["accuracy"]
        d_f1 = small["mean"]["macro_f1"] - large["mean"]["macro_f1"]
        networks[name] = {
            "delta_accuracy_small_minus_large": d_acc,
            "delta_macro_f1_small_minus_large": d_f1,
            "delta_log_loss_small_minus_large": small["mean"]["log_loss"]
            - large["mean"]["log_loss"],
            "small_not_worse": bool(d_acc >= -ACCURACY_TOLERANCE and d_f1 >= -ACCURACY_TOLERANCE),
            "speedup_p50": large["latency"]["ort_b1_us"]["p50"]
            / small["latency"]["ort_b1_us"]["p50"],
        }
    combined = {
        s: sum(by[(n, s)]["latency"]["ort_b1_us"]["p50"] for n in ("nhits", "patchtst"))
        for s in ("small", "large")
    }
    return {
        "networks": networks,
        "combined_p50_us": combined,
        "budget_us": BUDGET_NETWORKS_US,
        "small_within_budget": combined["small"] <= BUDGET_NETWORKS_US,
        "tolerance": ACCURACY_TOLERANCE,
    }


def to_markdown(report: dict[str, Any]) -> str:
    """Human-readable summary of the JSON report."""
    lines = [
        "# Sequence-model sizing study",
        "",
        f"Data: `{report['data']['data_source']}` rows {report['data']['row_time_range']}, "
        f"{report['data']['rows']} rows (dataset stride {report['plan']['dataset_stride']}), "
        f"{report['plan']['n_folds']} expanding walk-forward folds, 1 in "
        f"{report['plan']['val_stride']} validation rows (seeded uniform sample). "
        f"Training: {report['plan']['max_train_rows']} rows per "
        "fold sampled uniformly (seeded) over the fold's training period, "
        f"{report['plan']['epochs']} epochs max, early stopping on an "
        f"inner block (last {report['plan']['inner_fraction']:.0%} of the fold's training time, "
        "purged), seed "
        f"{report['plan']['seed']}. Latency: ONNX Runtime, batch 1, one thread, worker session "
        "options, real windows; the host is shared (other jobs running), trust min and p50.",
        "",
        "| model | size | params | acc | macro-F1 | log loss | pred. balance S/H/B "
        "| ORT b1 p50 / min µs | torch b1 p50 µs | ORT b256 rows/s | parity |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lat, m = r["latency"], r["mean"]
        balance = np.mean([f["prediction_balance"] for f in r["folds"]], axis=0)
        lines.append(
            f"| {r['model']} | {r['size']}{' (r)' if r.get('reused') else ''} "
            f"| {lat['parameters']:,} | {m['accuracy']:.4f} "
            f"| {m['macro_f1']:.4f} | {m['log_loss']:.4f} | "
            f"{'/'.join(f'{b:.2f}' for b in balance)} | {lat['ort_b1_us']['p50']:.0f} / "
            f"{lat['ort_b1_us']['min']:.0f} | {lat['torch_b1_p50_us']:.0f} | "
            f"{lat['ort_b256_rows_per_s']:,.0f} | {lat['parity_max_abs_diff']:.1e} |"
        )
    for label, b in report["baselines"].items():
        m = b["mean"]
        # One-hot baselines have no meaningful log loss (it only measures the 1e-15 clip).
        lines.append(
            f"| {label} | baseline | | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | n/a | | | | | |"
        )
    v = report["verdict"]
    lines += [
        "",
        f"Combined N-HiTS + PatchTST p50: small {v['combined_p50_us']['small']:.0f} µs, "
        f"large {v['combined_p50_us']['large']:.0f} µs (budget {v['budget_us']:.0f} µs): "
        f"small {'within' if v['small_within_budget'] else 'OVER'} budget.",
        "",
    ]
    for name, n in v["networks"].items():
        lines.append(
            f"- {name}: small - large accuracy {n['delta_accuracy_small_minus_large']:+.4f}, "
            f"macro-F1 {n['delta_macro_f1_small_minus_large']:+.4f}, log loss "
            f"{n['delta_log_loss_small_minus_large']:+.4f}; small is {n['speedup_p50']:.1f}x "
            f"faster; {'no' if n['small_not_worse'] else 'a'} loss beyond "
            f"{v['tolerance']} accuracy/F1."
        )
    lines += _tick_markdown(report.get("ensemble_tick", {}))
    lines += ["Per fold (accuracy / macro-F1 / log loss):", ""]
    for r in report["results"]:
        cells = ", ".join(
            f"fold {f['fold']}: {f['accuracy']:.4f} / {f['macro_f1']:.4f} / {f['log_loss']:.4f}"
            f" (best epoch {f['best_epoch']})"
            for f in r["folds"]
        )
        lines.append(f"- {r['model']} {r['size']}: {cells}")
    return "\n".join(lines) + "\n"


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
        f._replace(val=sample_rows(f.val, -(-len(f.val) // plan.val_stride), plan.seed))
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


def _tick_rows(data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real feature rows (tabular, window) from the last development day, for latency inputs."""
    from models.dataset import EVAL_START, build_dataset

    ds = build_dataset(data_dir, ["BTCUSDT", "ETHUSDT"], "2025-05-20T00:00Z", EVAL_START)
    pick = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)
    return np.ascontiguousarray(ds.tabular[pick]), np.ascontiguousarray(ds.window[pick])


def ensemble_tick(registry: Path, data_dir: Path, runs: int) -> dict[str, Any]:
    """Batch-1 p50 of one full tick: the registry's promoted GBDTs + both networks per size.

    Network weights are freshly initialised (seeded): latency depends on the graph, not on the
    weight values. Sessions are built once, with the workers' options, and called in sequence
    like ``EnsembleScorer.score`` does.
    """
    from models.registry import read_index
    from models.scorer import EnsembleScorer, load_session

    promoted = read_index(registry)
    gbdts: dict[str, str] = {k: promoted[k] for k in ("xgboost", "lightgbm") if k in promoted}
    if len(gbdts) < 2:
        return {"skipped": f"no promoted xgboost+lightgbm in {registry}"}
    scorer = EnsembleScorer.from_registry(registry, gbdts)
    tab, win = _tick_rows(data_dir, 64)
    out: dict[str, Any] = {"gbdt_versions": gbdts, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        variants: dict[str, list[Any]] = {"small": [], "large": [], "gbdt_only": []}
        for name, size, module, config in _variants():
            net = _untrained(module, config)
            path = Path(tmp) / f"{name}-{size}.onnx"
            module.export_onnx(net, path, net.window_shape)
            variants[size].append(load_session(path))
        out.update(_tick_latency(scorer, variants, tab, win, runs))
    return out


def _untrained(module: ModuleType, config: Any) -> Any:
    from models.sequence.network import History, TrainedNetwork

    net = module.build(config, 0)
    net.eval()
    return TrainedNetwork(module.NAME, net, config, 0, History(), (config.window, config.channels))


def _tick_latency(
    scorer: Any, variants: dict[str, list[Any]], tab: np.ndarray, win: np.ndarray, runs: int
) -> dict[str, dict[str, float]]:
    """p50/p90/min µs per variant of one tick: GBDT scorer call + each of its network sessions.

    Variants are measured round-robin, tick by tick, so load from other jobs on the shared host
    hits all of them alike.
    """
    samples = {name: np.empty(runs, dtype=np.float64) for name in variants}
    for i in range(runs + 200):
        j = i % len(tab)
        for name, sessions in variants.items():
            start = time.perf_counter_ns()
            scorer.score(tab[j : j + 1], None)
            for session in sessions:
                session.run(["probabilities"], {"window": win[j : j + 1]})
            if i >= 200:
                samples[name][i - 200] = (time.perf_counter_ns() - start) / 1e3
    return {
        name: {
            "p50": float(np.percentile(us, 50)),
            "p90": float(np.percentile(us, 90)),
            "min": float(us.min()),
        }
        for name, us in samples.items()
    }


def _tick_markdown(tick: dict[str, Any]) -> list[str]:
    if not tick or "skipped" in tick:
        return [f"Four-model tick: {tick.get('skipped', 'not measured')}.", ""] if tick else []
    return [
        f"Four-model tick (promoted GBDTs {tick['gbdt_versions']} + both networks, batch 1, one "
        f"thread, {tick['runs']} ticks): small p50 {tick['small']['p50']:.0f} µs "
        f"(min {tick['small']['min']:.0f}), large p50 {tick['large']['p50']:.0f} µs "
        f"(min {tick['large']['min']:.0f}); GBDTs alone {tick['gbdt_only']['p50']:.0f} µs. "
        "Target: <= 250 µs p50.",
        "",
    ]


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
    report["ensemble_tick"] = ensemble_tick(registry, plan.data_dir, plan.latency_runs)
    _write(report, plan.out)
    print(to_markdown(report))


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sizing.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "sizing.md").write_text(to_markdown(report))


if __name__ == "__main__":
    main()
