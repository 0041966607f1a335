"""Latency of the sequence networks for the sizing study: ONNX Runtime and torch at batch 1,
throughput at batch 256, and the four-model tick (promoted GBDTs + both networks).

Measured with the workers' session options on real windows; the host is shared, so the study
reports min and p50 and measures variants round-robin where they are compared.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


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


def measure(
    module: ModuleType, net: Any, val_window: np.ndarray, runs: int, batches: int
) -> dict[str, Any]:
    """Size, ONNX-vs-torch parity and latency of one trained network on real windows."""
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
            "ort_b1_us": latency_us(session, rows, runs),
            "torch_b1_p50_us": torch_latency_us(net, rows, runs // 4),
            "ort_b256_rows_per_s": throughput_rows_s(session, rows, batches),
        }


def ensemble_tick(
    registry: Path, data_dir: Path, runs: int, variants: list[tuple[str, str, ModuleType, Any]]
) -> dict[str, Any]:
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
        sessions: dict[str, list[Any]] = {"small": [], "large": [], "gbdt_only": []}
        for name, size, module, config in variants:
            net = module.untrained(config)
            path = Path(tmp) / f"{name}-{size}.onnx"
            module.export_onnx(net, path, net.window_shape)
            sessions[size].append(load_session(path))
        out.update(_tick_latency(scorer, sessions, tab, win, runs))
    return out


def _tick_rows(data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real feature rows (tabular, window) from the last development day, for latency inputs."""
    from models.dataset import EVAL_START, build_dataset

    ds = build_dataset(data_dir, ["BTCUSDT", "ETHUSDT"], "2025-05-20T00:00Z", EVAL_START)
    pick = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)
    return np.ascontiguousarray(ds.tabular[pick]), np.ascontiguousarray(ds.window[pick])


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
