"""The report's figures: confusion matrices, reliability diagram, equity curves (PNG files)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import CLASSES
from models.evaluation.predictors import BASELINES, Signals
from models.metrics import confusion_matrix

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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
