"""Registry side of the evaluation: which models, their rows and their probabilities.

Models are loaded through ``models.scorer.EnsembleScorer``, the path the workers use; the
evaluation refuses models trained on other feature code or on different labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import Dataset, LabelSpec, TimeLike, build_dataset
from models.features import FEATURE_NAMES, FEATURE_VERSION


class EvaluationError(RuntimeError):
    """The report cannot be produced (no models, mismatched features or labels, no data)."""


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
class Scored:
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
) -> Scored:
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
    return Scored(base, probs, dict(chosen), manifests)


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
