"""Drift measures against a model's training reference: binned references, PSI and KS.

Pure functions over numpy (no onnxruntime, no pandas): the ensemble stage imports this next to
the scorer. The reference of a model (``Manifest.drift_reference``) holds, from its *training
window only*:

- per tabular feature, the quantile bin edges of the training rows and the share of rows in each
  bin (``edges`` has ``bins - 1`` inner edges; a value ``x`` falls in bin ``searchsorted(edges,
  x, side="right")``, so the outer bins are open-ended and every live value has a bin);
- the model's predicted-class distribution (share of SELL / HOLD / BUY arg-max) on those rows,
  and the ensemble's (its vote with the weights and member versions recorded beside it);
- the same shares per training symbol (``by_symbol``, on the population's bin edges): an
  instance that sees a few symbols compares its window with the mix of those symbols' own
  shares, since a partition of one or two majors is calmer than the whole population without
  having drifted from how those majors looked in training.

PSI = sum over bins of ``(q - p) * ln(q / p)``, ``p`` the reference share and ``q`` the observed
share, both floored at :data:`EPS` so an empty bin gives a large but finite value. The usual
reading, and our default thresholds: < 0.1 stable, 0.1-0.25 moderate shift, >= 0.25 significant.
KS here is the largest gap between the reference and observed cumulative shares at the reference
bin edges: the two-sample Kolmogorov-Smirnov statistic evaluated on the reference's quantile grid
(a lower bound of the exact statistic, exact when the observed values are binned the same way).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-4
"""Floor of a bin share in PSI: an empty bin counts as 0.01 % of the rows."""
REFERENCE_BINS = 10
REFERENCE_FORMAT = 1

FloatArray = npt.NDArray[np.float64]


def quantile_edges(values: npt.ArrayLike, bins: int = REFERENCE_BINS) -> list[float]:
    """The ``bins - 1`` inner edges splitting ``values`` into equal-count bins (ties merged)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite values to bin")
    inner = np.quantile(x, np.arange(1, bins) / bins, method="linear")
    return [float(e) for e in np.unique(inner)]


def bin_index(values: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The bin of each value: 0 below the first edge, ``len(edges)`` at or above the last."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values), side="right")


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """How many of ``values`` fall in each of the ``len(edges) + 1`` bins."""
    return np.bincount(bin_index(values, edges), minlength=np.size(edges) + 1)


def shares(counts: npt.ArrayLike) -> FloatArray:
    """Counts as shares summing to 1 (all zeros when there are none)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def psi(reference: npt.ArrayLike, observed_counts: npt.ArrayLike) -> float:
    """Population stability index of ``observed_counts`` against ``reference`` shares."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), EPS)
    q = np.maximum(shares(observed_counts), EPS)
    if p.shape != q.shape:
        raise ValueError(f"reference has {p.size} bins, observed {q.size}")
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: npt.ArrayLike, observed_counts: npt.ArrayLike) -> float:
    """Largest gap between the reference and observed cumulative shares at the bin edges."""
    p = np.cumsum(np.asarray(reference, dtype=np.float64))
    q = np.cumsum(shares(observed_counts))
    return float(np.max(np.abs(p - q)))


def feature_reference(values: npt.ArrayLike, bins: int = REFERENCE_BINS) -> dict[str, Any]:
    """One feature's reference: its quantile edges and the training rows' share per bin."""
    x = np.asarray(values, dtype=np.float64)
    edges = quantile_edges(x, bins)
    return {"edges": edges, "proportions": bin_shares(x, edges)}


def bin_shares(values: npt.ArrayLike, edges: npt.ArrayLike) -> list[float]:
    """The share of the finite ``values`` in each bin of ``edges``."""
    x = np.asarray(values, dtype=np.float64)
    return [float(s) for s in shares(bin_counts(x[np.isfinite(x)], edges))]


def class_shares(actions: npt.ArrayLike, n_classes: int = 3) -> list[float]:
    """Share of each class index ``0..n_classes-1`` among ``actions``."""
    counts = np.bincount(np.asarray(actions, dtype=np.int64), minlength=n_classes)
    return [float(s) for s in shares(counts)]


def drift_reference(
    tabular: npt.ArrayLike,
    feature_names: Sequence[str],
    predicted: npt.ArrayLike,
    ensemble: Mapping[str, Any],
    window: Mapping[str, Any],
    bins: int = REFERENCE_BINS,
    symbols: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """A manifest's ``drift_reference`` from its training rows.

    ``predicted`` is the model's arg-max class index per scored row; ``ensemble`` holds the
    ensemble's ``predicted_classes`` with the ``versions`` and ``weights`` that voted (and its
    ``by_symbol`` shares); ``window`` says which rows (range, row counts, stride) the figures
    come from; ``symbols`` (each row's symbol) adds the per-symbol shares.
    """
    x = np.asarray(tabular, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"tabular rows of shape {x.shape} for {len(feature_names)} features")
    features = {n: feature_reference(x[:, i], bins) for i, n in enumerate(feature_names)}
    reference = {
        "format": REFERENCE_FORMAT,
        "bins": bins,
        "window": dict(window),
        "feature_names": list(feature_names),  # the row order (the JSON sorts the dict's keys)
        "features": features,
        "predicted_classes": class_shares(predicted),
        "ensemble": dict(ensemble),
    }
    if symbols is not None:
        reference["by_symbol"] = symbol_shares(x, feature_names, features, predicted, symbols)
    return reference


def symbol_shares(
    x: FloatArray,
    feature_names: Sequence[str],
    features: Mapping[str, Mapping[str, Any]],
    predicted: npt.ArrayLike,
    symbols: npt.ArrayLike,
) -> dict[str, dict[str, Any]]:
    """Per symbol: its rows, its share per bin of each feature (the population's edges) and
    its predicted-class shares."""
    sym = np.asarray(symbols)
    classes = class_shares_by_symbol(predicted, sym)
    out = {}
    for s, predicted_classes in classes.items():
        rows = x[sym == s]
        out[s] = {"rows": len(rows), "predicted_classes": predicted_classes,
                  "features": {n: bin_shares(rows[:, i], features[n]["edges"])
                               for i, n in enumerate(feature_names)}}  # fmt: skip
    return out


def class_shares_by_symbol(
    actions: npt.ArrayLike, symbols: npt.ArrayLike
) -> dict[str, list[float]]:
    """Each symbol's predicted-class shares (a model's, or the ensemble's ``by_symbol``)."""
    sym, a = np.asarray(symbols), np.asarray(actions)
    return {s: class_shares(a[sym == s]) for s in sorted({str(v) for v in sym})}


def level(value: float, moderate: float, significant: float) -> int:
    """0 stable, 1 moderate, 2 significant (NaN counts as stable: nothing measured)."""
    if math.isnan(value):
        return 0
    return 2 if value >= significant else 1 if value >= moderate else 0
