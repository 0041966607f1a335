"""What training recorded, as the report shows it: manifests' walk-forward and held-back figures,
and the small-vs-large comparison of the sequence models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.metrics import scalar_metrics


def training_summary(manifest: Any) -> dict[str, Any]:
    """Walk-forward and held-back metrics, ranges, parity and size, as recorded at training."""
    metrics = manifest.metrics or {}
    wf = metrics.get("walk_forward") or {}
    folds = [
        {"fold": f.get("fold"), **scalar_metrics(f), "validation_range": f.get("validation_range")}
        for f in wf.get("folds", [])
    ]
    return {
        "version": manifest.version,
        "walk_forward_mean": wf.get("mean", {}),
        "walk_forward_folds": folds,
        "holdout": scalar_metrics(metrics.get("holdout")),
        "train_range": manifest.train_range,
        "validation_range": manifest.validation_range,
        "parity": manifest.parity,
        "onnx_bytes": manifest.onnx_bytes,
        "config": manifest.config,
    }


def sequence_size_comparison(
    names: Sequence[str], report_models: Mapping[str, Any], latency: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Default (small) vs variant (e.g. ``-large``) of the sequence models, when both exist."""
    rows = []
    for base in ("nhits", "patchtst"):
        variants = [n for n in names if n.startswith(base + "-")]
        if base not in names or not variants:
            continue
        for name in (base, *variants):
            entry = report_models[name]
            rows.append({
                "model": name,
                "evaluation": scalar_metrics(entry["metrics"]),
                "walk_forward_mean": entry["training"]["walk_forward_mean"],
                "tick_latency_us_p50": latency.get(name),
                "onnx_bytes": entry["training"]["onnx_bytes"],
                "config": entry["training"]["config"],
            })  # fmt: skip
    return rows
