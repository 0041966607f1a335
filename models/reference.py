"""``quantum-trader models reference``: the drift reference of registered models, rebuilt from
the training window their manifests name.

Deterministic: the rows are the manifest's data folder and symbols, ``train_range.first_ms ..
last_ms`` (the training rows; the held-back block and the evaluation window are left out),
every ``stride``-th minute; the predictions are the registered ONNX sessions' on those rows.
Re-running it writes the same bytes. Only the manifest changes (``drift_reference``); the
artifacts and their sha256 are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.drift import drift_reference
from models.registry import MANIFEST_FILE, Manifest, read_manifest, version_dir, write_manifest

DEFAULT_STRIDE = 5


def _training_rows(manifest: Manifest, stride: int) -> Any:
    """The manifest's training rows (every ``stride``-th minute), rebuilt from its data."""
    from models.dataset import LabelSpec, build_dataset, to_ms

    src, rng = manifest.data_source, manifest.train_range
    label = LabelSpec(**{k: manifest.label[k] for k in ("horizon_bars", "fee_rate", "dead_zone")})
    end = src.get("requested_end_exclusive") or rng["last_ms"] + 1
    ds = build_dataset(Path(src["data_dir"]), src["symbols"], int(rng["first_ms"]), to_ms(end),
                       label, window=manifest.window, stride=stride)  # fmt: skip
    return ds.subset(ds.time_ms <= int(rng["last_ms"]))


def build_references(
    registry: Path,
    versions: Mapping[str, str],
    weights: Mapping[str, float],
    stride: int = DEFAULT_STRIDE,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Each member's ``drift_reference`` (members must share one training window)."""
    from models.scorer import EnsembleScorer
    from streams.stages.ensemble import normalised, vote
    from streams.vocabulary import CLASSES

    manifests = {m: read_manifest(registry, m, v) for m, v in sorted(versions.items())}
    windows = {(m.train_range["first_ms"], m.train_range["last_ms"]) for m in manifests.values()}
    if len(windows) != 1:
        raise ValueError(f"the models were trained on different windows: {sorted(windows)}")
    first = next(iter(manifests.values()))
    rows = _training_rows(first, stride)
    log(f"training window {first.train_range['first']} .. {first.train_range['last']}: "
        f"{len(rows)} rows (every {stride}th minute of {first.train_range['rows']})")  # fmt: skip
    probs = EnsembleScorer.from_registry(registry, dict(versions)).score(rows.tabular, rows.window)
    voters = {m: float(weights[m]) for m in manifests if weights.get(m, 0.0) > 0}
    ens = [
        CLASSES.index(vote({m: normalised(probs[m][i]) for m in voters}, voters).action)
        for i in range(len(rows))
    ]
    from models.drift import class_shares, class_shares_by_symbol

    ensemble = {"versions": dict(sorted(versions.items())), "weights": voters,
                "predicted_classes": class_shares(ens),
                "by_symbol": class_shares_by_symbol(ens, rows.symbol)}  # fmt: skip
    window = {"first_ms": int(rows.time_ms.min()), "last_ms": int(rows.time_ms.max()),
              "rows": len(rows), "stride": stride, "symbols": list(first.data_source["symbols"]),
              "data_dir": first.data_source["data_dir"]}  # fmt: skip
    out = {}
    for m, manifest in manifests.items():
        predicted = np.argmax(probs[m], axis=1)
        out[m] = drift_reference(
            rows.tabular, manifest.feature_names, predicted, ensemble, window, symbols=rows.symbol
        )
        log(f"{m} {manifest.version}: predicted S/H/B "
            + "/".join(f"{s:.3f}" for s in out[m]["predicted_classes"]))  # fmt: skip
    return out


def attach_references(registry: Path, versions: Mapping[str, str],
                      references: Mapping[str, dict[str, Any]]) -> list[Path]:  # fmt: skip
    """Write each reference into its version's manifest (artifacts untouched)."""
    paths = []
    for model, version in sorted(versions.items()):
        manifest = read_manifest(registry, model, version)
        write_manifest(registry, dataclasses.replace(manifest, drift_reference=references[model]))
        paths.append(version_dir(registry, model, version) / MANIFEST_FILE)
    return paths
