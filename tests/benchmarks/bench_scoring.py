"""Scoring benchmark: per-model and 4-model tick latency, batch-256 throughput, ONNX vs native.

Run with ``python -m tests.benchmarks scoring`` (``make bench`` runs every suite). Writes
``tests/benchmarks/results/scoring.json`` and ``scoring.md``.

Method (follows /work/shared/notes/onnx-scoring-measurements.md):

* One thread everywhere: ONNX Runtime sessions from :func:`models.scorer.session_options`,
  XGBoost ``nthread=1``, LightGBM ``num_threads=1``, ``torch.set_num_threads(1)``.
* Inputs are real feature rows (um_futures_1m_2025, evaluation window), cycling through 64 rows
  so no engine scores the same cached row twice in a row.
* Engines are interleaved round-robin in short blocks, so load from other processes on the shared
  machine hits all of them alike; timings use ``perf_counter_ns`` after a warm-up. We report
  p50, p99 and min; on a busy host trust min and p50 more than p99.
* Native models are the registered ones (``native.*`` kept next to ``model.onnx``); for a
  sequence model without kept weights the torch module is rebuilt from its config with seeded
  random weights (latency does not depend on weight values; no probability difference then).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DATA = REPO.parent / "shared" / "data" / "binance" / "um_futures_1m_2025"
ENSEMBLE = ("xgboost", "lightgbm", "nhits", "patchtst")
BUDGET_US = 250.0

Fn = Callable[[], Any]


@dataclass
class Engine:
    """One thing to time: a zero-argument call per input row (batch 1) and a batch-256 call."""

    model: str
    engine: str
    b1: Callable[[int], Any]
    b256: Fn | None


def _stats(ns: list[int]) -> dict[str, float]:
    arr = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "p50_us": float(np.percentile(arr, 50)),
        "p99_us": float(np.percentile(arr, 99)),
        "min_us": float(arr.min()),
        "n": len(arr),
    }


def _time_b1(engines: list[Engine], iters: int, block: int = 50) -> dict[int, list[int]]:
    """Round-robin blocks of ``block`` batch-1 calls per engine until ``iters`` calls each."""
    samples: dict[int, list[int]] = {i: [] for i in range(len(engines))}
    for e in engines:  # warm-up
        for i in range(100):
            e.b1(i)
    clock = time.perf_counter_ns
    for start in range(0, iters, block):
        for k, e in enumerate(engines):
            out = samples[k]
            for i in range(start, start + block):
                t0 = clock()
                e.b1(i)
                out.append(clock() - t0)
    return samples


def _time_b256(fn: Fn, reps: int) -> dict[str, float]:
    fn()
    secs = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        secs.append((time.perf_counter_ns() - t0) / 1e9)
    return {"rows_per_s_med": 256 / statistics.median(secs), "rows_per_s_best": 256 / min(secs)}


# --------------------------------------------------------------------------- engines


def _inputs(n_rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Real feature rows: tabular (n, F) and window (n, W, 5) from the evaluation window."""
    from models.dataset import build_dataset

    ds = build_dataset(DATA, ["BTCUSDT", "ETHUSDT"], "2025-05-21T00:00", "2025-05-21T12:00")
    idx = np.linspace(0, len(ds) - 1, n_rows).astype(np.int64)
    return np.ascontiguousarray(ds.tabular[idx]), np.ascontiguousarray(ds.window[idx])


def _onnx_engine(model: str, path: Path, x: np.ndarray) -> Engine:
    from models.scorer import load_session

    session = load_session(path)
    name = session.get_inputs()[0].name
    rows = [x[i % 64 : i % 64 + 1] for i in range(64)]
    batch = x[:256]
    return Engine(
        model,
        "onnxruntime",
        lambda i: session.run(["probabilities"], {name: rows[i % 64]}),
        lambda: session.run(["probabilities"], {name: batch}),
    )


def _native_gbdt(model: str, native_path: Path, x: np.ndarray) -> tuple[Engine, np.ndarray]:
    """Native engine plus its probabilities on ``x`` (for the ONNX-vs-native difference)."""
    rows = [x[i % 64 : i % 64 + 1] for i in range(64)]
    batch = x[:256]
    if model.startswith("xgboost"):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(native_path))
        booster.set_param({"nthread": 1})
        proba = np.asarray(booster.inplace_predict(x))
        return Engine(
            model,
            "xgboost inplace_predict",
            lambda i: booster.inplace_predict(rows[i % 64]),
            lambda: booster.inplace_predict(batch),
        ), proba
    import lightgbm as lgb

    lbooster = lgb.Booster(model_file=str(native_path))
    proba = np.asarray(lbooster.predict(x, num_threads=1))
    return Engine(
        model,
        "lightgbm predict",
        lambda i: lbooster.predict(rows[i % 64], num_threads=1),
        lambda: lbooster.predict(batch, num_threads=1),
    ), proba


def _native_torch(model: str, w: np.ndarray, native_path: Path | None) -> tuple[Engine, Any]:
    """Torch eager engine: the registered weights when kept, else the config's architecture
    with seeded random weights (same latency). Returns the engine and its probabilities on ``w``
    (None for random weights)."""
    import importlib

    import torch

    torch.set_num_threads(1)
    base, _, variant = model.partition("-")
    module = importlib.import_module(f"models.{base}")
    if native_path is not None:
        trained = module.load_native(native_path)
        net, kind = trained.module.eval(), "torch eager"
        proba = module.predict_proba(trained, w)
    else:
        config = getattr(module, f"{variant.upper()}_CONFIG") if variant else module.DEFAULT_CONFIG
        net, kind, proba = module.build(config, 0).eval(), "torch eager (random weights)", None
    rows = [torch.from_numpy(w[i % 64 : i % 64 + 1]) for i in range(64)]
    batch = torch.from_numpy(w[:256])

    def b1(i: int) -> Any:
        with torch.inference_mode():
            return torch.softmax(net(rows[i % 64]), dim=-1)

    def b256() -> Any:
        with torch.inference_mode():
            return torch.softmax(net(batch), dim=-1)

    return Engine(model, kind, b1, b256), proba


# --------------------------------------------------------------------------- suite


def _registered(registry: Path) -> list[Any]:
    """Promoted models plus any registered ``-large`` variants of the same versions."""
    from models.registry import list_versions, read_index, resolve

    promoted = read_index(registry)
    models = [resolve(registry, name, version) for name, version in sorted(promoted.items())]
    for name, version in sorted(promoted.items()):
        if version in list_versions(registry, f"{name}-large"):
            models.append(resolve(registry, f"{name}-large", version))
    return models


def _model_engines(
    models: list[Any], tab: np.ndarray, win: np.ndarray, native: bool
) -> tuple[list[Engine], dict[str, float]]:
    engines, diffs = [], {}
    for m in models:
        x = tab if m.manifest.input == "tabular" else win
        engines.append(_onnx_engine(m.name, m.onnx_path, x))
        if not native:
            continue
        if m.manifest.input == "tabular" and m.manifest.native_file:
            eng, proba = _native_gbdt(m.name, m.onnx_path.parent / m.manifest.native_file, x)
            onnx_proba = _onnx_full(m.onnx_path, x)
            diffs[m.name] = float(np.abs(np.asarray(proba) - onnx_proba).max())
            engines.append(eng)
        elif m.manifest.input == "window":
            native_file = m.manifest.native_file
            path = m.onnx_path.parent / native_file if native_file else None
            eng, proba = _native_torch(m.name, win, path)
            if proba is not None:
                diffs[m.name] = float(np.abs(proba - _onnx_full(m.onnx_path, win)).max())
            engines.append(eng)
    return engines, diffs


def _onnx_full(path: Path, x: np.ndarray) -> np.ndarray:
    from models.parity import onnx_probabilities

    return onnx_probabilities(path, x)


def _tick_engines(registry: Path, versions: dict[str, str], tab: np.ndarray, win: np.ndarray,
                  native_engines: list[Engine]) -> list[Engine]:  # fmt: skip
    """4-model tick through the production scorer, and the native engines called in turn."""
    from models.scorer import EnsembleScorer

    scorer = EnsembleScorer.from_registry(registry, versions=versions)
    tabs = [tab[i % 64 : i % 64 + 1] for i in range(64)]
    wins = [win[i % 64 : i % 64 + 1] for i in range(64)]
    out = [
        Engine(
            "ensemble(4)",
            "onnxruntime EnsembleScorer",
            lambda i: scorer.score(tabs[i % 64], wins[i % 64]),
            lambda: scorer.score(tab[:256], win[:256]),
        )
    ]
    if len(native_engines) == len(versions):

        def native_b1(i: int) -> None:
            for e in native_engines:
                e.b1(i)

        def native_b256() -> None:
            for e in native_engines:
                if e.b256 is not None:
                    e.b256()

        out.append(Engine("ensemble(4)", "native engines in turn", native_b1, native_b256))
    return out


def run(registry: Path, iters: int, reps: int, native: bool) -> dict[str, Any]:
    """Measure everything; returns the JSON-able results."""
    models = _registered(registry)
    tab, win = _inputs()
    engines, diffs = _model_engines(models, tab, win, native)
    promoted = {m.name: m.version for m in models if m.name in ENSEMBLE}
    native_main = [e for e in engines if e.model in ENSEMBLE and e.engine != "onnxruntime"]
    engines += _tick_engines(registry, promoted, tab, win, native_main)
    b1 = _time_b1(engines, iters)
    rows: list[dict[str, Any]] = []
    for k, e in enumerate(engines):
        row: dict[str, Any] = {"model": e.model, "engine": e.engine, "batch1": _stats(b1[k])}
        if e.b256 is not None:
            row["batch256"] = _time_b256(e.b256, reps)
        rows.append(row)
    tick = next(r for r in rows if r["model"] == "ensemble(4)")
    return {
        "suite": "scoring",
        "registry": str(registry),
        "versions": {m.name: m.version for m in models},
        "onnx_vs_native_max_abs_diff": diffs,
        "budget_us": BUDGET_US,
        "tick_p50_us": tick["batch1"]["p50_us"],
        "within_budget": tick["batch1"]["p50_us"] <= BUDGET_US,
        "results": rows,
        "machine": _machine(),
        "method": {"iters_b1": iters, "reps_b256": reps, "threads": 1, "input_rows_cycled": 64},
    }


def _machine() -> dict[str, Any]:
    import onnxruntime

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def to_markdown(res: dict[str, Any]) -> str:
    """Human-readable table of :func:`run` results."""
    lines = [
        "# Scoring benchmark (one thread, batch 1 and 256)",
        "",
        f"Machine: {res['machine']['cpu']}, {res['machine']['cpus']} CPUs, load average at "
        f"start {', '.join(f'{x:.1f}' for x in res['machine']['load_avg_at_start'])} "
        "(shared host: trust min/p50 over p99). onnxruntime "
        f"{res['machine']['onnxruntime']}. Versions: {res['versions']}.",
        "",
        f"**4-model tick p50: {res['tick_p50_us']:.0f} µs** (budget {res['budget_us']:.0f} µs: "
        f"{'met' if res['within_budget'] else 'NOT met'}).",
        "",
        "| model | engine | b1 p50 µs | b1 p99 µs | b1 min µs | b256 rows/s med (best) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["results"]:
        b1, b256 = r["batch1"], r.get("batch256")
        thr = f"{b256['rows_per_s_med']:,.0f} ({b256['rows_per_s_best']:,.0f})" if b256 else ""
        lines.append(
            f"| {r['model']} | {r['engine']} | {b1['p50_us']:.1f} | {b1['p99_us']:.1f} | "
            f"{b1['min_us']:.1f} | {thr} |"
        )
    if res["onnx_vs_native_max_abs_diff"]:
        lines += ["", "ONNX vs native max |Δp| on the benchmark rows: " + ", ".join(
            f"{k} {v:.1e}" for k, v in res["onnx_vs_native_max_abs_diff"].items())]  # fmt: skip
    lines += ["", "Method: see the docstring of `tests/benchmarks/bench_scoring.py`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point used by ``python -m tests.benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks scoring")
    parser.add_argument("--registry", type=Path, default=REPO / "models" / "registry")
    parser.add_argument("--iters", type=int, default=2000, help="batch-1 calls per engine")
    parser.add_argument("--reps", type=int, default=20, help="batch-256 calls per engine")
    parser.add_argument("--no-native", action="store_true", help="ONNX only (no [train] extra)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    res = run(args.registry, args.iters, args.reps, native=not args.no_native)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scoring.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.out / "scoring.md").write_text(to_markdown(res), encoding="utf-8")
    print(to_markdown(res))
    return 0
