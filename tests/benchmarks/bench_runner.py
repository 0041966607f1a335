"""Runner throughput: closed bars per second through the whole in-process topology.

``python -m tests.benchmarks runner [--registry DIR] [--reps N]`` runs the bundled sample data
(5 symbols x 4.5 days of 1-minute futures klines) with every promoted model and the demo's
settings (50% confidence gate: the default edge gate makes no trade, so nothing after the
supervisor would be exercised), ``reps`` times, and writes
``tests/benchmarks/results/runner.json``: bars/s of each repetition (best and median), the
process CPU seconds of each, the 1-minute load average before and after (the machine is
shared), per-stage latency p50/p99 of the last repetition, the stages' share of the wall time
and the trades' sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"


def bench(
    registry: Path, reps: int, block_minutes: int, min_confidence: float | None
) -> dict[str, Any]:
    """Run the sample ``reps`` times; figures as described in the module doc."""
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder, percentiles_us
    from streams.runner import run
    from tests.benchmarks.bench_topology import bench_settings

    settings = bench_settings(min_confidence)
    scorer = EnsembleScorer.from_registry(registry)
    rates, cpu, last = [], [], None
    load_before = os.getloadavg()[0]
    for _ in range(reps):
        builder = ReportBuilder(settings.risk.starting_equity_usd)
        cpu_started = time.process_time()
        stats = run(SAMPLE, scorer, builder, settings, block_minutes=block_minutes)
        cpu.append(time.process_time() - cpu_started)
        rates.append(stats.bars_per_s)
        last = (stats, builder)
    assert last is not None
    stats, builder = last
    stage_us = {k: sum(v) / 1000.0 for k, v in stats.latency_ns.items()}
    return {
        "suite": "runner",
        "data": str(SAMPLE.relative_to(ROOT)),
        "bars": stats.bars,
        "models": stats.model_versions,
        "block_minutes": block_minutes,
        "min_confidence": settings.supervisor.min_confidence,
        "gate": settings.supervisor.gate,
        "bars_per_s": {"best": max(rates), "median": statistics.median(rates), "runs": rates},
        "cpu_s": cpu,
        "load_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "latency": {k: percentiles_us(v) for k, v in sorted(stats.latency_ns.items())},
        "stage_time_share": {k: v / (stats.elapsed_s * 1e6) for k, v in sorted(stage_us.items())},
        "trades_sha256": builder.build(model_versions=stats.model_versions)["trades_sha256"],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/runner.json``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks runner")
    parser.add_argument("--registry", type=Path, default=ROOT / "models" / "registry")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--block-minutes", type=int, default=240)
    parser.add_argument(
        "--min-confidence", type=float, default=0.5, help="the demo's gate; <0: the settings'"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    gate = None if args.min_confidence < 0 else args.min_confidence
    res = bench(args.registry, args.reps, args.block_minutes, gate)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runner.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    best, med = res["bars_per_s"]["best"], res["bars_per_s"]["median"]
    print(
        f"runner: {res['bars']} bars, best {best:,.0f} bars/s, median {med:,.0f} bars/s, "
        f"trades {res['trades_sha256'][:8]}, load {res['load_1m']}"
    )
    for stage, share in res["stage_time_share"].items():
        print(f"  {stage:<13} {share:6.1%} of wall time, p50 {res['latency'][stage]['p50_us']} us")
    return 0
