"""Honest evaluation of the registered models on the held-out window: JSON + markdown + plots.

``write_report`` loads the registered ONNX models through ``models.scorer.EnsembleScorer`` (the
same path the workers use), scores every labelled bar of the evaluation window, and compares
each model, the weighted ensemble and three baselines:

* ``always_hold``: predicts HOLD everywhere (never trades);
* ``momentum``: sign of the last 1-bar return (``ret_1``): BUY if up, SELL if down, HOLD if flat;
* ``buy_and_hold``: predicts BUY everywhere (long from the first bar to the last).

Classification metrics: accuracy, balanced accuracy, macro-F1, log loss (models only: the
baselines give no probabilities), per-class precision/recall/F1, confusion matrix, and the class
balance of predictions next to that of the labels (the system this replaces emitted 99 % SELL and
nobody noticed). Calibration: reliability of the top-class probability in 10 bins, with the
expected calibration error (ECE).

Trading rule ("hold until the signal changes", per symbol): after the close of bar *i* the
position becomes +1 for BUY, -1 for SELL, 0 for HOLD, and is held over bar *i+1* (earning
``close[i+1] / close[i] - 1``; entry at the close equals the next bar's open on these continuous
futures series up to one tick). Each change of position pays ``fee_rate`` per unit turned over
(a flip long -> short pays twice), the last position is closed at the end. The portfolio holds
the symbols with equal weight, rebalanced every bar. Sharpe is annualized from 1-minute returns
(sqrt(525 600)); on a few days of data it is a noisy figure, reported as is. Every flip pays
fees, so a signal that changes every few minutes is heavily penalized here: that is the point.

Second view, the trade the label describes ("fixed-horizon trades", per symbol): when flat, a
BUY/SELL opens a position at the signal bar's close and closes it ``horizon`` bars later; signals
during an open trade are ignored; each trade pays the round-trip fee. Reported: trade count, win
rate, mean and summed net return per trade (equal notional, not compounded).

Ensemble: probabilities of the members averaged with the configured weights (renormalized over
the members present; missing members are listed in the report), prediction = arg-max. The
streaming ensemble/supervisor may add confidence gates and vetoes on top; this is the raw vote.

Nothing here is tuned on the evaluation window: weights, thresholds and models come in fixed.
Features for the first bars of the window are warmed up on history *before* the window (past
data only); labels need the bar ``horizon`` minutes later inside the window, so the last
``horizon`` minutes of the window have no row.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import (
    BUY,
    CLASSES,
    DEMO_SYMBOLS,
    EVAL_END,
    EVAL_START,
    HOLD,
    SELL,
    Dataset,
    LabelSpec,
    TimeLike,
    build_dataset,
)
from models.features import BAR_MS, FEATURE_NAMES, FEATURE_VERSION

BARS_PER_YEAR = 525_600
CALIBRATION_BINS = 10
BASELINES = ("always_hold", "momentum", "buy_and_hold")
ENSEMBLE = "ensemble"
_RET_1 = FEATURE_NAMES.index("ret_1")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class EvaluationError(RuntimeError):
    """The report cannot be produced (no models, mismatched features or labels, no data)."""


@dataclass(frozen=True)
class Signals:
    """One predictor's output on the evaluation rows: class indices and optional probabilities."""

    name: str
    kind: str  # "model" | "ensemble" | "baseline"
    pred: IntArray
    proba: npt.NDArray[np.float32] | None = None
    version: str | None = None


# ------------------------------------------------------------------------------ metrics


def confusion_matrix(y: IntArray, pred: IntArray, n_classes: int = len(CLASSES)) -> IntArray:
    """Counts ``[true, predicted]``."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def log_loss(y: IntArray, proba: npt.NDArray[np.floating[Any]]) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-15)."""
    picked = np.clip(proba[np.arange(len(y)), y].astype(np.float64), 1e-15, 1.0)
    return float(-np.log(picked).mean())


def classification_metrics(
    y: IntArray, pred: IntArray, proba: npt.NDArray[np.floating[Any]] | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, log loss, per-class P/R/F1, class balances."""
    cm = confusion_matrix(y, pred)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)
    recall, precision = _ratio(tp, support), _ratio(tp, predicted)
    f1 = _ratio(2 * precision * recall, precision + recall)
    n = max(len(y), 1)
    present = support > 0
    return {
        "rows": len(y),
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1.mean()),
        "log_loss": None if proba is None else log_loss(y, proba),
        "per_class": {
            c: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k])}
            for k, c in enumerate(CLASSES)
        },
        "label_balance": dict(zip(CLASSES, (support / n).tolist(), strict=True)),
        "prediction_balance": dict(zip(CLASSES, (predicted / n).tolist(), strict=True)),
        "confusion": cm.tolist(),
    }


def calibration(
    y: IntArray, proba: npt.NDArray[np.floating[Any]], n_bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Reliability of the top-class probability: per-bin confidence vs accuracy, and the ECE."""
    conf = proba.max(axis=1).astype(np.float64)
    hit = (proba.argmax(axis=1) == y).astype(np.float64)
    # bins [k/n, (k+1)/n); confidence 1.0 goes to the last bin
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    mean_conf = _ratio(np.bincount(b, conf, n_bins).astype(np.float64), count)
    acc = _ratio(np.bincount(b, hit, n_bins).astype(np.float64), count)
    ece = float((count * np.abs(acc - mean_conf)).sum() / max(len(y), 1))
    bins = [
        {"lo": k / n_bins, "hi": (k + 1) / n_bins, "count": int(count[k]),
         "confidence": float(mean_conf[k]), "accuracy": float(acc[k])}
        for k in range(n_bins)
    ]  # fmt: skip
    return {"ece": ece, "bins": bins}


# ------------------------------------------------------------------------------ trading


def positions(pred: IntArray) -> npt.NDArray[np.int8]:
    """SELL -> -1, HOLD -> 0, BUY -> +1."""
    return (np.asarray(pred) - HOLD).astype(np.int8)


def next_bar_returns(
    time_ms: IntArray, close: FloatArray, symbol: npt.NDArray[np.str_]
) -> FloatArray:
    """``close[next]/close[i]-1`` to the same symbol's next row if it is exactly one bar later,
    else 0 (last row of a symbol, or a gap: a position is not carried across missing data)."""
    r = np.zeros(len(close), dtype=np.float64)
    for sym in np.unique(symbol):
        idx = np.flatnonzero(symbol == sym)  # dataset rows are time-ordered within a symbol
        nxt = idx[1:]
        cur = idx[:-1]
        ok = time_ms[nxt] - time_ms[cur] == BAR_MS
        r[cur[ok]] = close[nxt[ok]] / close[cur[ok]] - 1.0
    return r


def _symbol_pnl(
    pos: npt.NDArray[np.int8], ret: FloatArray, fee_rate: float
) -> tuple[FloatArray, int]:
    """Per-bar net returns of one symbol's position path and its number of entries."""
    p = pos.astype(np.float64)
    prev = np.concatenate(([0.0], p[:-1]))
    turnover = np.abs(p - prev)
    turnover[-1] += abs(p[-1])  # close the last position at the end of the window
    entries = int(np.count_nonzero((p != 0) & (p != prev)))
    return p * ret - fee_rate * turnover, entries


def trading_outcome(
    pred: IntArray, ds: Dataset, ret_next: FloatArray, fee_rate: float
) -> dict[str, Any]:
    """Hold-until-signal-changes P&L, equal-weight portfolio over symbols (see module doc)."""
    pos = positions(pred)
    net = np.zeros(len(pred), dtype=np.float64)
    trades = 0
    for sym in np.unique(ds.symbol):
        idx = np.flatnonzero(ds.symbol == sym)
        net[idx], entries = _symbol_pnl(pos[idx], ret_next[idx], fee_rate)
        trades += entries
    times, inverse = np.unique(ds.time_ms, return_inverse=True)
    per_bar = np.bincount(inverse, net) / np.bincount(inverse)
    equity = np.cumprod(1.0 + per_bar)
    std = float(per_bar.std())
    peak = np.maximum.accumulate(equity)
    return {
        "trades": trades,
        "exposure": float(np.abs(pos).mean()),
        "net_return": float(equity[-1] - 1.0),
        "sharpe_annualized": float(per_bar.mean() / std * math.sqrt(BARS_PER_YEAR)) if std else 0.0,
        "max_drawdown": float((1.0 - equity / peak).max()),
        "_equity": equity,
        "_times": times,
    }


def horizon_trade_returns(pred: IntArray, fwd_return: FloatArray, horizon: int) -> FloatArray:
    """Gross returns of non-overlapping fixed-horizon trades of one symbol's time-ordered rows.

    When flat, a BUY/SELL at row i opens a long/short at that close and closes it ``horizon``
    bars later (the labelled ``fwd_return[i]``); signals while a trade is open are ignored.
    This is the trade the label describes, so it tests the signal on its own terms.
    """
    out = []
    i, n = 0, len(pred)
    while i < n:
        side = int(pred[i]) - HOLD
        if side:
            out.append(side * float(fwd_return[i]))
            i += horizon
        else:
            i += 1
    return np.asarray(out, dtype=np.float64)


def horizon_trading(pred: IntArray, ds: Dataset) -> dict[str, Any]:
    """Fixed-horizon trade statistics over all symbols, net of a round-trip fee per trade."""
    spec = ds.label_spec
    gross = np.concatenate([
        horizon_trade_returns(pred[m], ds.fwd_return[m], spec.horizon_bars)
        for m in (ds.symbol == s for s in np.unique(ds.symbol))
    ])  # fmt: skip
    net = gross - 2.0 * spec.fee_rate
    return {
        "trades": len(net),
        "win_rate": float((net > 0).mean()) if len(net) else None,
        "mean_net_return": float(net.mean()) if len(net) else None,
        "sum_net_return": float(net.sum()),
    }


# ------------------------------------------------------------------------------ predictors


def baseline_predictions(ds: Dataset) -> dict[str, IntArray]:
    """The three baselines (module doc); momentum reads ``ret_1`` of the row itself."""
    ret1 = ds.tabular[:, _RET_1]
    momentum = np.where(ret1 > 0, BUY, np.where(ret1 < 0, SELL, HOLD)).astype(np.int64)
    n = len(ds)
    return {
        "always_hold": np.full(n, HOLD, dtype=np.int64),
        "momentum": momentum,
        "buy_and_hold": np.full(n, BUY, dtype=np.int64),
    }


def weighted_ensemble(
    probs: Mapping[str, npt.NDArray[np.float32]], weights: Mapping[str, float]
) -> tuple[npt.NDArray[np.float32], dict[str, float], list[str]]:
    """Weighted mean of member probabilities; returns (probs, used weights, missing members)."""
    used = {k: float(w) for k, w in weights.items() if w > 0 and k in probs}
    missing = sorted(k for k, w in weights.items() if w > 0 and k not in probs)
    total = sum(used.values())
    if total <= 0:
        raise EvaluationError(f"no ensemble member among the loaded models {sorted(probs)}")
    norm = {k: w / total for k, w in used.items()}
    mix = sum(probs[k].astype(np.float64) * w for k, w in norm.items())
    return np.asarray(mix, dtype=np.float32), norm, missing


# ------------------------------------------------------------------------------ registry side


def select_models(registry: Path, versions: Mapping[str, str] | None = None) -> dict[str, str]:
    """Model -> version to evaluate: ``versions`` if given, else every promoted model plus the
    latest version of each registered model that is not promoted (e.g. ``nhits-large``)."""
    from models.registry import list_models, list_versions, read_index

    if versions is not None:
        return dict(versions)
    chosen = read_index(registry)
    for name in list_models(registry):
        if name not in chosen:
            chosen[name] = list_versions(registry, name)[-1]
    if not chosen:
        raise EvaluationError(f"no registered models in {registry}; run `models train` first")
    return dict(sorted(chosen.items()))


def _label_spec(manifests: Sequence[Any]) -> LabelSpec:
    """The one label definition every evaluated model was trained on."""
    specs = {json.dumps(m.label, sort_keys=True) for m in manifests}
    if len(specs) != 1:
        raise EvaluationError(f"models were trained on different labels: {sorted(specs)}")
    raw = manifests[0].label
    return LabelSpec(raw["horizon_bars"], raw["fee_rate"], raw["dead_zone"])


def _check_features(manifests: Sequence[Any]) -> None:
    for m in manifests:
        if m.feature_version != FEATURE_VERSION or list(m.feature_names) != list(FEATURE_NAMES):
            raise EvaluationError(
                f"{m.model} {m.version} was trained on features {m.feature_version}, this code "
                f"computes {FEATURE_VERSION}: retrain it or evaluate with matching code"
            )


@dataclass(frozen=True)
class _Scored:
    """Evaluation rows (for the smallest window) and every model's probabilities on them."""

    ds: Dataset
    probs: dict[str, npt.NDArray[np.float32]]
    versions: dict[str, str]
    manifests: dict[str, Any]


def score_registered(
    registry: Path,
    data_dir: Path,
    start: TimeLike,
    end: TimeLike,
    symbols: Sequence[str],
    versions: Mapping[str, str] | None = None,
) -> _Scored:
    """Build the evaluation rows once per model window length and score through the scorer."""
    from models.registry import resolve
    from models.scorer import EnsembleScorer

    chosen = select_models(registry, versions)
    loaded = {name: resolve(registry, name, v) for name, v in chosen.items()}
    manifests = {name: m.manifest for name, m in loaded.items()}
    _check_features(list(manifests.values()))
    spec = _label_spec(list(manifests.values()))
    by_window: dict[int, list[str]] = {}
    for name, m in manifests.items():
        by_window.setdefault(int(m.window), []).append(name)
    probs: dict[str, npt.NDArray[np.float32]] = {}
    base: Dataset | None = None
    for window in sorted(by_window):
        ds = build_dataset(data_dir, symbols, start, end, spec, window=window)
        if base is None:
            base = ds
        elif not (
            np.array_equal(ds.time_ms, base.time_ms) and np.array_equal(ds.symbol, base.symbol)
        ):
            raise EvaluationError(
                f"window {window} yields different rows than window {base.window.shape[1]}"
            )
        scorer = EnsembleScorer([loaded[n] for n in by_window[window]])
        probs.update(scorer.score(ds.tabular, ds.window))
    assert base is not None  # by_window is non-empty: select_models raised otherwise
    return _Scored(base, probs, dict(chosen), manifests)


def tick_latency_us(
    registry: Path, versions: Mapping[str, str], ds: Dataset, members: Sequence[str], n: int = 300
) -> dict[str, Any]:
    """p50 µs of one-row scoring per model and for the ensemble members together (1 thread).

    A measurement for the sizing question (the 250 µs tick budget), not a pass/fail gate; the
    benchmark suite under ``tests/benchmarks/`` is the reference.
    """
    from models.registry import resolve
    from models.scorer import EnsembleScorer

    rows = np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(np.int64)

    def p50(scorer: Any) -> float:
        for i in rows[:20]:  # warm-up
            scorer.score(ds.tabular[i : i + 1], ds.window[i : i + 1])
        samples = []
        for i in rows:
            t0 = time.perf_counter_ns()
            scorer.score(ds.tabular[i : i + 1], ds.window[i : i + 1])
            samples.append(time.perf_counter_ns() - t0)
        return float(np.median(samples) / 1000.0)

    out: dict[str, Any] = {}
    for name, v in versions.items():
        if ds.window.shape[1] == int(resolve(registry, name, v).manifest.window):
            out[name] = p50(EnsembleScorer([resolve(registry, name, v)]))
    present = [m for m in members if m in out]
    if present:
        out["ensemble(" + "+".join(present) + ")"] = p50(
            EnsembleScorer([resolve(registry, m, versions[m]) for m in present])
        )
    return out


# ------------------------------------------------------------------------------ manifests


_SCALARS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss")


def _scalars(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: metrics.get(k) for k in _SCALARS} if metrics else {}


def training_summary(manifest: Any) -> dict[str, Any]:
    """Walk-forward and held-back metrics, ranges, parity and size, as recorded at training."""
    metrics = manifest.metrics or {}
    wf = metrics.get("walk_forward") or {}
    folds = [
        {"fold": f.get("fold"), **_scalars(f), "validation_range": f.get("validation_range")}
        for f in wf.get("folds", [])
    ]
    return {
        "version": manifest.version,
        "walk_forward_mean": wf.get("mean", {}),
        "walk_forward_folds": folds,
        "holdout": _scalars(metrics.get("holdout")),
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
                "evaluation": _scalars(entry["metrics"]),
                "walk_forward_mean": entry["training"]["walk_forward_mean"],
                "tick_latency_us_p50": latency.get(name),
                "onnx_bytes": entry["training"]["onnx_bytes"],
                "config": entry["training"]["config"],
            })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def plot_confusions(signals: Sequence[Signals], y: IntArray, path: Path) -> None:
    """Row-normalized confusion matrix per predictor (counts annotated)."""
    plt = _pyplot()
    cols = min(4, len(signals))
    nrows = math.ceil(len(signals) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, sig in zip(axes.flat, signals, strict=False):
        cm = confusion_matrix(y, sig.pred)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (i, j), c in np.ndenumerate(cm):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(
                j, i, f"{c}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7, color=color
            )
        ax.set_title(sig.name, fontsize=9)
        ax.set_xticks(range(3), CLASSES, fontsize=7)
        ax.set_yticks(range(3), CLASSES, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("label", fontsize=7)
    for ax in list(axes.flat)[len(signals) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_calibration(curves: Mapping[str, dict[str, Any]], path: Path) -> None:
    """Reliability diagram of the top-class probability (bins with >= 30 rows)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for name, cal in curves.items():
        pts = [(b["confidence"], b["accuracy"]) for b in cal["bins"] if b["count"] >= 30]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, label=f"{name} (ECE {cal['ece']:.3f})")
    ax.set_xlabel("mean top-class probability")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.3, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7)
    ax.set_title("Calibration on the evaluation window", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_equity(
    curves: Mapping[str, tuple[IntArray, FloatArray]], fee_rate: float, path: Path
) -> None:
    """Equity of the hold-until-signal-changes rule, net of fees, per predictor."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.8))
    for name, (times, equity) in curves.items():
        ax.plot(times.astype("datetime64[ms]"), equity, lw=1.2 if name in BASELINES else 1.0,
                ls="--" if name in BASELINES else "-", label=name)  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("equity (start = 1, log scale)")
    ax.set_title(f"Long/short on signal, net of {fee_rate:.2%} per side, equal-weight symbols",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------ markdown


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _sci(x: float | None) -> str:
    return "–" if x is None else f"{x:.1e}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2%}"


def _balance(b: Mapping[str, float]) -> str:
    return " / ".join(f"{b[c]:.0%}" for c in CLASSES)


def _predictor_table(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| predictor | acc | bal. acc | macro-F1 | log loss | ECE | predicted S/H/B | trades "
        "| net return | Sharpe | max DD |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, e in report["predictors"].items():
        m, t = e["metrics"], e["trading"]
        ece = e.get("calibration", {}).get("ece")
        lines.append(
            f"| {name} | {_f(m['accuracy'])} | {_f(m['balanced_accuracy'])} | {_f(m['macro_f1'])} "
            f"| {_f(m['log_loss'])} | {_f(ece)} | {_balance(m['prediction_balance'])} "
            f"| {t['trades']} | {_pct(t['net_return'])} | {_f(t['sharpe_annualized'], 1)} "
            f"| {t['max_drawdown']:.2%} |"
        )
    return lines


def _horizon_table(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| predictor | trades | win rate | mean net return / trade | sum of net returns |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, e in report["predictors"].items():
        h = e["horizon_trades"]
        win = "–" if h["win_rate"] is None else f"{h['win_rate']:.1%}"
        mean = "–" if h["mean_net_return"] is None else f"{h['mean_net_return']:+.4%}"
        lines.append(f"| {name} | {h['trades']} | {win} | {mean} | {h['sum_net_return']:+.2%} |")
    return lines


def _per_class_table(report: Mapping[str, Any]) -> list[str]:
    head = " | ".join(f"{c} P | {c} R" for c in CLASSES)
    lines = [f"| predictor | {head} |", "|---|" + "---:|" * (2 * len(CLASSES))]
    for name, e in report["predictors"].items():
        pc = e["metrics"]["per_class"]
        cells = " | ".join(f"{_f(pc[c]['precision'])} | {_f(pc[c]['recall'])}" for c in CLASSES)
        lines.append(f"| {name} | {cells} |")
    return lines


def _training_table(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| model | version | WF acc | WF bal. acc | WF bal. acc per fold | WF macro-F1 "
        "| WF log loss | held-back acc | held-back bal. acc | ONNX parity max abs diff |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, tr in report["training"].items():
        wf, ho = tr["walk_forward_mean"], tr["holdout"]
        per_fold = " / ".join(_f(f.get("balanced_accuracy")) for f in tr["walk_forward_folds"])
        lines.append(
            f"| {name} | {tr['version']} | {_f(wf.get('accuracy'))} "
            f"| {_f(wf.get('balanced_accuracy'))} | {per_fold or '–'} | {_f(wf.get('macro_f1'))} "
            f"| {_f(wf.get('log_loss'))} | {_f(ho.get('accuracy'))} "
            f"| {_f(ho.get('balanced_accuracy'))} | {_sci(tr['parity'].get('max_abs_diff'))} |"
        )
    return lines


def _size_table(report: Mapping[str, Any]) -> list[str]:
    rows = report["sequence_size_comparison"]
    if not rows:
        return ["Only one size of each sequence model is registered; nothing to compare."]
    lines = [
        "| model | eval acc | eval bal. acc | eval macro-F1 | eval log loss | WF bal. acc "
        "| 1-row p50 µs | ONNX bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ev, wf = r["evaluation"], r["walk_forward_mean"]
        lines.append(
            f"| {r['model']} | {_f(ev['accuracy'])} | {_f(ev['balanced_accuracy'])} "
            f"| {_f(ev['macro_f1'])} | {_f(ev['log_loss'])} | {_f(wf.get('balanced_accuracy'))} "
            f"| {_f(r['tick_latency_us_p50'], 0)} | {r['onnx_bytes']} |"
        )
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report (numbers identical to ``report.json``)."""
    src = report["evaluation"]
    lat = report.get("tick_latency_us_p50") or {}
    lines = [
        "# Model evaluation on the held-out window",
        "",
        f"- window: {src['start']} .. {src['end_exclusive']} (exclusive), "
        f"data `{src['data_source']}`, symbols {', '.join(src['symbols'])}",
        f"- rows: {src['rows']} labelled bars; label: {src['label']['rule']} "
        f"(horizon {src['label']['horizon_bars']} bars, fee {src['label']['fee_rate']} per side, "
        f"dead zone {src['label']['dead_zone']}); features `{src['feature_version']}`",
        f"- label balance S/H/B: {_balance(src['label_balance'])}",
        f"- models: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- ensemble weights: {report['ensemble']['weights']}"
        + (
            f"; missing members: {report['ensemble']['missing']}"
            if report["ensemble"]["missing"]
            else ""
        ),
        f"- equity rule: {report['trading_rule']}",
        "",
        "## Warnings",
        "",
        *([f"- {w}" for w in report["warnings"]] or ["- none"]),
        "",
        "## Predictors on the evaluation window",
        "",
        *_predictor_table(report),
        "",
        f"Fixed-horizon trades: {report['horizon_rule']}",
        "",
        *_horizon_table(report),
        "",
        "Per-class precision (P) and recall (R):",
        "",
        *_per_class_table(report),
        "",
        "## Walk-forward validation (from the manifests, training period only)",
        "",
        *_training_table(report),
        "",
        "## Sequence models: small vs large",
        "",
        *_size_table(report),
        "",
        "## One-row scoring latency (p50 µs, one thread, this run's machine)",
        "",
        *([f"- {k}: {v:.0f}" for k, v in lat.items()] or ["- not measured"]),
        "",
        "## Plots",
        "",
        "![confusion matrices](confusion_matrices.png)",
        "",
        "![calibration](calibration.png)",
        "",
        "![equity](equity.png)",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the report

DEFAULT_WEIGHTS: dict[str, float] = {
    "xgboost": 0.25,
    "lightgbm": 0.25,
    "nhits": 0.25,
    "patchtst": 0.25,
}
TRADING_RULE = (
    "hold until the signal changes: position +1/-1/0 for BUY/SELL/HOLD from the close of the "
    "signal bar over the next bar (close-to-close), fee per side on every unit of position "
    "change, last position closed at the end; symbols equal-weight, rebalanced each bar"
)
HORIZON_RULE = (
    "when flat, a BUY/SELL opens a long/short at the signal bar's close and closes it after the "
    "label horizon; signals during a trade are ignored; a round-trip fee per trade; per symbol, "
    "equal notional per trade, returns summed (not compounded)"
)
BIAS_WARNING_SHARE = 0.9


def collect_signals(
    scored: _Scored, weights: Mapping[str, float]
) -> tuple[list[Signals], dict[str, Any]]:
    """Models (sorted by name), the weighted ensemble, then the baselines."""
    sigs = [
        Signals(n, "model", p.argmax(axis=1).astype(np.int64), p, scored.versions[n])
        for n, p in sorted(scored.probs.items())
    ]
    mix, used, missing = weighted_ensemble(scored.probs, weights)
    sigs.append(Signals(ENSEMBLE, "ensemble", mix.argmax(axis=1).astype(np.int64), mix))
    sigs += [Signals(n, "baseline", p) for n, p in baseline_predictions(scored.ds).items()]
    return sigs, {"weights": used, "missing": missing}


def _shares(classes: IntArray) -> dict[str, float]:
    counts = np.bincount(classes, minlength=len(CLASSES)) / max(len(classes), 1)
    return dict(zip(CLASSES, counts.tolist(), strict=True))


def evaluate_signal(sig: Signals, ds: Dataset, ret_next: FloatArray) -> dict[str, Any]:
    """Metrics, calibration (if probabilities) and the trading outcome of one predictor."""
    entry: dict[str, Any] = {"kind": sig.kind, "version": sig.version}
    entry["metrics"] = classification_metrics(ds.y, sig.pred, sig.proba)
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


def write_report(
    registry_dir: Path | str,
    data_dir: Path | str,
    out_dir: Path | str,
    eval_start: TimeLike = EVAL_START,
    eval_end: TimeLike = EVAL_END,
    symbols: Sequence[str] = DEMO_SYMBOLS,
    ensemble_weights: Mapping[str, float] | None = None,
    *,
    versions: Mapping[str, str] | None = None,
    measure_latency: bool = True,
) -> dict[str, Any]:
    """Score the registered models on the window and write report.json/report.md/plots.

    Returns the report dict (what ``report.json`` holds). See the module doc for definitions.
    """
    registry, out = Path(registry_dir), Path(out_dir)
    weights = dict(ensemble_weights or DEFAULT_WEIGHTS)
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
