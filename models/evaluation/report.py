"""The evaluation run: score the registered models, compare every predictor, write the report.

See :mod:`models.evaluation` for the definitions; ``ensemble_weights`` are the runtime's
(``Settings.ensemble_weights``), passed in by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import CLASSES, DEMO_SYMBOLS, EVAL_END, EVAL_START, Dataset, TimeLike
from models.evaluation.manifests import sequence_size_comparison, training_summary
from models.evaluation.markdown import render_markdown
from models.evaluation.plots import plot_calibration, plot_confusions, plot_equity
from models.evaluation.predictors import Signals, collect_signals
from models.evaluation.scoring import score_registered, tick_latency_us
from models.evaluation.system import system_backtest
from models.evaluation.trading import (
    HORIZON_RULE,
    TRADING_RULE,
    horizon_trading,
    next_bar_returns,
    trading_outcome,
)
from models.metrics import calibration, prediction_metrics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BIAS_WARNING_SHARE = 0.9


def _shares(classes: IntArray) -> dict[str, float]:
    counts = np.bincount(classes, minlength=len(CLASSES)) / max(len(classes), 1)
    return dict(zip(CLASSES, counts.tolist(), strict=True))


def evaluate_signal(sig: Signals, ds: Dataset, ret_next: FloatArray) -> dict[str, Any]:
    """Metrics, calibration (if probabilities) and the trading outcome of one predictor."""
    entry: dict[str, Any] = {"kind": sig.kind, "version": sig.version}
    entry["metrics"] = prediction_metrics(ds.y, sig.pred, sig.proba)
    if sig.proba is not None:
        entry["calibration"] = calibration(ds.y, sig.proba)
    entry["trading"] = trading_outcome(sig.pred, ds, ret_next, ds.label_spec.fee_rate)
    entry["horizon_trades"] = horizon_trading(sig.pred, ds)
    entry["per_symbol"] = {
        str(sym): {
            "accuracy": float((sig.pred[m] == ds.y[m]).mean()),
            "prediction_balance": _shares(sig.pred[m]),
            "label_balance": _shares(ds.y[m]),
        }
        for sym in np.unique(ds.symbol)
        for m in [ds.symbol == sym]  # bind the mask once per symbol
    }
    return entry


def warnings_for(predictors: Mapping[str, Any], missing: Sequence[str]) -> list[str]:
    """Plain-language flags a reader must not miss (bias, chance level, missing members)."""
    out = []
    if missing:
        out.append(f"ensemble member(s) {list(missing)} not registered: weights renormalized")
    for name, e in predictors.items():
        if e["kind"] == "baseline":
            continue
        bal = e["metrics"]["prediction_balance"]
        top = max(bal, key=bal.get)
        if bal[top] > BIAS_WARNING_SHARE:
            out.append(f"{name} predicts {top} for {bal[top]:.0%} of rows")
        if e["metrics"]["balanced_accuracy"] <= 1 / 3 + 0.01:
            out.append(
                f"{name}: balanced accuracy {e['metrics']['balanced_accuracy']:.3f} is chance level"
            )
    return out


def _system(registry: Path, data_dir: Path, start: TimeLike, end: TimeLike,
            symbols: Sequence[str], versions: Mapping[str, str], weights: Mapping[str, float],
            settings: Any) -> dict[str, Any]:  # fmt: skip
    """The system backtest with the report's model set and weights."""
    from streams.config import Settings

    base = settings or Settings()
    served = {m: v for m, v in versions.items() if m in weights}  # variants are never served
    configured = base.model_copy(update={"ensemble_weights": dict(weights)})
    return system_backtest(registry, data_dir, start, end, symbols, served, configured)


def write_report(
    registry_dir: Path | str,
    data_dir: Path | str,
    out_dir: Path | str,
    eval_start: TimeLike = EVAL_START,
    eval_end: TimeLike = EVAL_END,
    symbols: Sequence[str] = DEMO_SYMBOLS,
    *,
    ensemble_weights: Mapping[str, float],
    versions: Mapping[str, str] | None = None,
    measure_latency: bool = True,
    system_settings: Any = None,
) -> dict[str, Any]:
    """Score the registered models on the window and write report.json/report.md/plots.

    ``system_settings`` (default: the defaults) configure the system backtest beside the rules
    (:mod:`~models.evaluation.system`); its ensemble weights are the report's.
    Returns the report dict (what ``report.json`` holds). See the module doc for definitions.
    """
    registry, out = Path(registry_dir), Path(out_dir)
    weights = dict(ensemble_weights)
    scored = score_registered(registry, Path(data_dir), eval_start, eval_end, symbols, versions)
    ds = scored.ds
    ret_next = next_bar_returns(ds.time_ms, ds.close, ds.symbol)
    sigs, ensemble = collect_signals(scored, weights)
    predictors = {s.name: evaluate_signal(s, ds, ret_next) for s in sigs}
    training = {n: training_summary(m) for n, m in scored.manifests.items()}
    latency: dict[str, Any] = {}
    if measure_latency:
        members = list(ensemble["weights"])
        latency = tick_latency_us(registry, scored.versions, ds, members)
    report_models = {
        n: {"metrics": predictors[n]["metrics"], "training": training[n]} for n in training
    }
    out.mkdir(parents=True, exist_ok=True)
    equity = {
        n: (e["trading"].pop("_times"), e["trading"].pop("_equity")) for n, e in predictors.items()
    }
    report = {
        "evaluation": {
            **ds.describe(),
            "label_balance": ds.class_balance(),
        },
        "versions": scored.versions,
        "ensemble": ensemble,
        "trading_rule": TRADING_RULE,
        "horizon_rule": HORIZON_RULE,
        "warnings": warnings_for(predictors, ensemble["missing"]),
        "predictors": predictors,
        "training": training,
        "sequence_size_comparison": sequence_size_comparison(
            list(training), report_models, latency
        ),
        "tick_latency_us_p50": latency,
        "system": _system(
            registry,
            Path(data_dir),
            eval_start,
            eval_end,
            symbols,
            scored.versions,
            weights,
            system_settings,
        ),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    plot_confusions(sigs, ds.y, out / "confusion_matrices.png")
    plot_calibration(
        {n: e["calibration"] for n, e in predictors.items() if "calibration" in e},
        out / "calibration.png",
    )
    plot_equity(equity, ds.label_spec.fee_rate, out / "equity.png")
    return report
