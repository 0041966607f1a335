"""``sizing.md`` and the verdict of the sizing study: small vs large, budget and accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BUDGET_NETWORKS_US = 120.0
"""p50 budget for N-HiTS + PatchTST together (250 µs tick minus ~100 µs for the two GBDTs)."""
ACCURACY_TOLERANCE = 0.005
"""A small config "does not lose accuracy" if its mean fold accuracy and macro-F1 are at most
this much below the large one's (fold-to-fold spread on these blocks is larger than that)."""


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
