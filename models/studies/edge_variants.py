"""Looking for edge, walk-forward on the development data only: which variant has any?

Each variant is XGBoost (the registered config) trained on the expanding-window folds of
``models/train.py`` over the training period (before 2025-05-21, the evaluation window is never
read), scored out of fold, and turned into a gate table by ``models/edge.py`` with the paper
venue's costs. A variant is one change against the promoted setup:

* ``h15`` / ``h60`` / ``h240``: the label horizon (bars); the net return is measured at it;
* ``+xs``: cross-sectional features, each symbol's ``ret_1/5/15/60`` minus the universe's mean
  of that return in the same minute (the symbol's move against the market);
* ``+vol``: the gate conditioned on volatility terciles of ``vol_60`` (regime conditioning).

The gate is built from the folds' out-of-fold votes; the held-back block (the last 12 % of the
training period, unseen by the folds and by the final fit) then checks it: the decisions the
gate lets through there and their mean net return with a block-bootstrap interval.

Run: ``python -m models.studies.edge_variants [--out models/reports/edge/variants.json]``.
Prints one line per variant and writes the tables; docs/edge.md reports the figures.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import Dataset, LabelSpec, build_dataset
from models.edge import GateEvidence, Votes, build_gate
from models.features import FEATURE_NAMES
from models.metrics import classification_metrics
from models.train import TrainPlan, _fit_and_score, split_rows
from streams.config import PaperConfig
from streams.stages.edge import EdgeGate

DEV_DATA = Path("/work/shared/data/binance/um_futures_1m_2025")
TRAIN_END = "2025-05-21T00:00"
_RETS = [FEATURE_NAMES.index(n) for n in ("ret_1", "ret_5", "ret_15", "ret_60")]
_VOL_60 = FEATURE_NAMES.index("vol_60")


@dataclass(frozen=True)
class Variant:
    """One setup to measure."""

    name: str
    horizon: int = 15
    cross_sectional: bool = False
    vol_conditioned: bool = False


VARIANTS: tuple[Variant, ...] = (
    Variant("h15"),
    Variant("h15+vol", vol_conditioned=True),
    Variant("h15+xs", cross_sectional=True),
    Variant("h60", horizon=60),
    Variant("h60+vol", horizon=60, vol_conditioned=True),
    Variant("h60+xs", horizon=60, cross_sectional=True),
    Variant("h240", horizon=240),
    Variant("h240+xs", horizon=240, cross_sectional=True),
)


def cross_sectional(tabular: npt.NDArray[np.float32], time_ms: npt.NDArray[np.int64]) -> Any:
    """Each row's returns minus the mean of the same returns over all symbols in its minute."""
    _, minute = np.unique(time_ms, return_inverse=True)
    counts = np.bincount(minute).astype(np.float64)
    cols = []
    for j in _RETS:
        mean = np.bincount(minute, weights=tabular[:, j].astype(np.float64)) / counts
        cols.append(tabular[:, j] - mean[minute])
    return np.column_stack([tabular, *cols]).astype(np.float32)


def with_features(ds: Dataset, variant: Variant) -> Dataset:
    """``ds`` with the variant's extra tabular columns."""
    if not variant.cross_sectional:
        return ds
    import dataclasses

    return dataclasses.replace(ds, tabular=cross_sectional(ds.tabular, ds.time_ms))


def _votes(ds: Dataset, idx: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> Votes:
    pred = p.argmax(axis=1).astype(np.int64)
    return Votes(pred, p[np.arange(len(p)), pred], ds.fwd_return[idx], ds.time_ms[idx],
                 ds.tabular[idx, _VOL_60].astype(np.float64))  # fmt: skip


def out_of_fold(ds: Dataset, plan: TrainPlan, horizon: int) -> tuple[Votes, Votes, dict[str, Any]]:
    """XGBoost's out-of-fold votes over the walk-forward folds, and the final fit's votes on
    the held-back block (the gate is built from the folds only; the block checks it)."""
    from models import xgb

    split = split_rows(ds.time_ms, plan, horizon * 60_000)
    rows, probs, folds = [], [], []
    for tr, va in split.folds:
        _, proba = _fit_and_score(xgb, xgb.DEFAULT_CONFIG, ds, tr, va, plan)
        rows.append(va)
        probs.append(np.asarray(proba, dtype=np.float64))
        folds.append(classification_metrics(ds.y[va], proba)["balanced_accuracy"])
    _, held = _fit_and_score(xgb, xgb.DEFAULT_CONFIG, ds, split.dev, split.holdout, plan)
    oof = _votes(ds, np.concatenate(rows), np.concatenate(probs))
    held_back = _votes(ds, split.holdout, np.asarray(held, dtype=np.float64))
    return oof, held_back, {"fold_balanced_accuracy": folds}


def held_back_check(gate: EdgeGate, votes: Votes, seed: int) -> dict[str, Any]:
    """Decisions the gate lets through on the held-back block and their net return."""
    from models.edge import block_bootstrap_ci, block_ids, net_returns
    from models.promotion import gated_actions

    acts = gated_actions(gate, votes.action, votes.prob, votes.volatility)
    net = net_returns(acts, votes.fwd_return, gate.round_trip_cost)
    acted = acts != 1
    if not acted.any():
        return {"decisions": 0}
    lo, hi = block_bootstrap_ci(net[acted], block_ids(votes.time_ms[acted], 240), 2000, 0.9, seed)
    return {"decisions": int(acted.sum()), "mean_net_return": float(net[acted].mean()),
            "ci": [lo, hi], "sum_net_return": float(net[acted].sum())}  # fmt: skip


def measure(variant: Variant, data_dir: Path, seed: int) -> tuple[EdgeGate, dict[str, Any]]:
    """The variant's gate table and its walk-forward figures."""
    label = LabelSpec(horizon_bars=variant.horizon)
    ds = with_features(build_dataset(data_dir, None, None, TRAIN_END, label), variant)
    plan = TrainPlan(data_dir=data_dir, registry=Path("unused"), version="study", seed=seed)
    votes, held, figures = out_of_fold(ds, plan, variant.horizon)
    ev = GateEvidence(vol_quantiles=(1 / 3, 2 / 3) if variant.vol_conditioned else (), seed=seed)
    gate = build_gate(votes, {"xgboost": variant.name}, {"xgboost": 1.0}, variant.horizon,
                      PaperConfig(), ev, {"variant": variant.name})  # fmt: skip
    figures["held_back"] = held_back_check(gate, held, seed)
    return gate, figures


def summary(variant: Variant, gate: EdgeGate, figures: dict[str, Any]) -> dict[str, Any]:
    """One row of the study's table."""
    best = max(gate.buckets, key=lambda b: b.lower)
    signals = sum(b.n for b in gate.buckets)
    mean_all = sum(b.n * b.mean_net_return for b in gate.buckets) / max(signals, 1)
    return {
        "variant": variant.name,
        "fold_balanced_accuracy": figures["fold_balanced_accuracy"],
        "signals": signals,
        "mean_net_return_all_signals": mean_all,
        "best_bucket": best.describe(),
        "best_lower": best.lower,
        "tradeable": [b.describe() for b in gate.tradeable()],
        "held_back_gated": figures["held_back"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every variant (or those named) and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEV_DATA)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--out", type=Path, default=Path("models/reports/edge/variants.json"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only.split(",")]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for variant in chosen:
        gate, figures = measure(variant, args.data, args.seed)
        row = summary(variant, gate, figures)
        results[variant.name] = {"summary": row, "gate": gate.to_dict()}
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
