"""The expected-value gate, offline: out-of-fold votes of the training period -> a gate table.

Steps (``quantum-trader models gate``):

1. **Out-of-fold predictions** (:func:`collect_out_of_fold`) for a model set, on its training
   data only: the walk-forward folds of ``models/train.py`` are refitted with each manifest's
   exact config and seed (so the fold models are the ones the manifest's walk-forward metrics
   describe; :func:`fold_check` compares them), each scoring its validation block. The table is
   built from these fold rows only. The held-back block is scored by the registered ONNX models
   themselves (their final fit never saw it) and left out of the table: it is the shadow window
   of the promotion gate (``models/promotion.py``). Nothing at or after the training ``end``
   (the evaluation window) is read.
2. **The runtime vote** on every row (``streams.stages.ensemble.vote`` via
   :func:`models.evaluation.predictors.runtime_ensemble`) with the configured weights.
3. **Net returns**: acting on a BUY (SELL) at the row's close and leaving after the label
   horizon returns ``+fwd`` (``-fwd``) minus one round trip of the paper venue's costs:
   ``2 * (taker_fee + slippage_bps / 1e4)`` (:func:`round_trip_cost`). That is the label's
   horizon, not the runtime's exit plan (TP ladder, stop, trailing), so the gate measures the
   *signal's* edge; docs/edge.md says what that leaves out.
4. **Buckets and bootstrap** (:func:`build_gate`): per action and bucket of the ensemble's
   probability of it (and volatility bucket, optionally), the mean net return and a
   moving-block bootstrap interval: rows are resampled in whole blocks of event time (all
   symbols together), because 15-minute labels of neighbouring minutes overlap and symbols move
   together, so rows are far from independent. A bucket is tradeable when its interval's lower
   bound is above zero over at least ``min_rows`` signals.

The table goes into every member's manifest (``edge_gate``); the supervisor reads it there
(:mod:`streams.stages.edge`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import FEATURE_NAMES
from streams.config import PaperConfig
from streams.stages.edge import EdgeBucket, EdgeGate, bucket_bounds
from streams.vocabulary import CLASSES, Action

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HELD_BACK = -1
"""``source`` of a held-back row (fold rows carry their fold index)."""
_VOL_60 = FEATURE_NAMES.index("vol_60")

DEFAULT_PROB_EDGES: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70)


@dataclass(frozen=True)
class GateEvidence:
    """How a gate table is estimated (recorded in the table)."""

    prob_edges: tuple[float, ...] = DEFAULT_PROB_EDGES
    vol_quantiles: tuple[float, ...] = ()
    """Volatility conditioning: quantiles of the rows' ``vol_60`` as bucket edges; () = none."""
    n_boot: int = 2000
    ci: float = 0.90
    """Two-sided interval; its lower bound (the 5 % quantile at 0.90) decides."""
    block_minutes: int = 240
    """Bootstrap block length in event time (16 label horizons)."""
    min_rows: int = 300
    seed: int = 7


def round_trip_cost(paper: PaperConfig) -> float:
    """Taker fee and slippage on entry and exit, as the paper venue charges a market round trip."""
    return 2.0 * (paper.taker_fee + paper.slippage_bps / 10_000.0)


def net_returns(action: IntArray, fwd_return: FloatArray, cost: float) -> FloatArray:
    """Return of acting on each row's action (BUY long, SELL short) net of ``cost``; HOLD 0."""
    sign = np.where(action == CLASSES.index(Action.BUY), 1.0, 0.0)
    sign = np.where(action == CLASSES.index(Action.SELL), -1.0, sign)
    return np.where(sign != 0.0, sign * fwd_return - cost, 0.0)


def block_ids(time_ms: IntArray, block_minutes: int) -> IntArray:
    """Dense ids of the event-time blocks rows fall in (all symbols of a block together)."""
    raw = np.asarray(time_ms, dtype=np.int64) // (block_minutes * 60_000)
    _, dense = np.unique(raw, return_inverse=True)
    return np.asarray(dense, dtype=np.int64)


def block_bootstrap_ci(
    values: FloatArray, blocks: IntArray, n_boot: int, ci: float, seed: int
) -> tuple[float, float]:
    """Interval of the mean of ``values`` from resampling whole blocks with replacement."""
    ids, dense = np.unique(blocks, return_inverse=True)
    sums = np.bincount(dense, weights=values, minlength=len(ids)).astype(np.float64, copy=False)
    counts = np.bincount(dense, minlength=len(ids)).astype(np.float64)
    return block_sums_ci(sums, counts, n_boot, ci, seed)


def block_sums_ci(
    sums: FloatArray, counts: FloatArray, n_boot: int, ci: float, seed: int
) -> tuple[float, float]:
    """:func:`block_bootstrap_ci` from each block's sum and row count (blocks in time order):
    what a stream that keeps only per-block totals can bootstrap."""
    if len(sums) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[draws].sum(axis=1) / np.maximum(counts[draws].sum(axis=1), 1.0)
    tail = (1.0 - ci) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Votes:
    """The ensemble's vote on the out-of-fold rows, with what the gate needs of each row."""

    action: IntArray
    prob: FloatArray
    """Probability of the voted action."""
    fwd_return: FloatArray
    time_ms: IntArray
    volatility: FloatArray


def _bucket_row(
    action: Action, lo: float, hi: float, vol: int, net: FloatArray, blocks: IntArray,
    ev: GateEvidence, seed: int,
) -> EdgeBucket:  # fmt: skip
    lower, upper = block_bootstrap_ci(net, blocks, ev.n_boot, ev.ci, seed)
    mean = float(net.mean())
    return EdgeBucket(
        action=action, prob_lo=lo, prob_hi=hi, vol_bucket=vol, n=len(net),
        hit_rate=float((net > 0).mean()), mean_net_return=mean, lower=lower, upper=upper,
        tradeable=bool(lower > 0.0 and len(net) >= ev.min_rows),
    )  # fmt: skip


def build_buckets(
    votes: Votes, cost: float, ev: GateEvidence, vol_edges: Sequence[float]
) -> tuple[EdgeBucket, ...]:
    """Every (action, probability bucket, volatility bucket) with at least one signal."""
    net = net_returns(votes.action, votes.fwd_return, cost)
    blocks = block_ids(votes.time_ms, ev.block_minutes)
    p_bucket = np.searchsorted(np.asarray(ev.prob_edges), votes.prob, side="right")
    v_bucket = (
        np.searchsorted(np.asarray(vol_edges), votes.volatility, side="right")
        if len(vol_edges)
        else np.zeros(len(net), dtype=np.int64)
    )
    rows: list[EdgeBucket] = []
    for action in (Action.SELL, Action.BUY):
        is_action = votes.action == CLASSES.index(action)
        for pb in range(len(ev.prob_edges) + 1):
            lo, hi = bucket_bounds(ev.prob_edges, pb)
            for vb in range(len(vol_edges) + 1):
                mask = is_action & (p_bucket == pb) & (v_bucket == vb)
                if not mask.any():
                    continue
                seed = ev.seed + len(rows)  # one stream per bucket, fixed by the table layout
                rows.append(_bucket_row(action, lo, hi, vb, net[mask], blocks[mask], ev, seed))
    return tuple(rows)


def build_gate(
    votes: Votes,
    members: Mapping[str, str],
    weights: Mapping[str, float],
    horizon_bars: int,
    paper: PaperConfig,
    ev: GateEvidence,
    provenance: Mapping[str, Any],
) -> EdgeGate:
    """The gate table of ``members`` from their out-of-fold ``votes`` (module doc, step 4)."""
    cost = round_trip_cost(paper)
    vol_edges = tuple(float(q) for q in np.quantile(votes.volatility, ev.vol_quantiles))
    evidence = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(ev).items()},
        "rows": len(votes.action),
        "signals": int((votes.action != CLASSES.index(Action.HOLD)).sum()),
        "costs": {"taker_fee": paper.taker_fee, "slippage_bps": paper.slippage_bps},
        "net_return": "sign * (close[i+h]/close[i] - 1) - 2 * (taker_fee + slippage_bps/1e4)",
        **provenance,
    }
    return EdgeGate(
        members=dict(members), weights={m: float(weights[m]) for m in members},
        horizon_bars=horizon_bars, round_trip_cost=cost, prob_edges=tuple(ev.prob_edges),
        vol_edges=vol_edges, buckets=build_buckets(votes, cost, ev, vol_edges), evidence=evidence,
    )  # fmt: skip


# --------------------------------------------------------------------------- out-of-fold


@dataclass(frozen=True)
class OutOfFold:
    """Each model's probabilities on the training period's out-of-fold rows, rows aligned."""

    probs: dict[str, FloatArray]
    time_ms: IntArray
    symbol: npt.NDArray[np.str_]
    fwd_return: FloatArray
    volatility: FloatArray
    source: IntArray
    """Fold index of the row's validation block, or :data:`HELD_BACK`."""
    meta: dict[str, Any]

    def save(self, path: Path) -> None:
        """``.npz`` cache (probabilities are recomputed only when the model set changes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"p_{m}": p for m, p in self.probs.items()}
        arrays.update(
            time_ms=self.time_ms, symbol=self.symbol, fwd_return=self.fwd_return,
            volatility=self.volatility, source=self.source, meta=json.dumps(self.meta),
        )  # fmt: skip
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> OutOfFold:
        """Inverse of :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            probs = {k[2:]: z[k] for k in z.files if k.startswith("p_")}
            return cls(
                probs=probs, time_ms=z["time_ms"], symbol=z["symbol"], fwd_return=z["fwd_return"],
                volatility=z["volatility"], source=z["source"], meta=json.loads(str(z["meta"])),
            )  # fmt: skip

    def subset(self, mask: npt.NDArray[np.bool_]) -> OutOfFold:
        """Rows ``mask``."""
        return dataclasses.replace(
            self, probs={m: p[mask] for m, p in self.probs.items()}, time_ms=self.time_ms[mask],
            symbol=self.symbol[mask], fwd_return=self.fwd_return[mask],
            volatility=self.volatility[mask], source=self.source[mask],
        )  # fmt: skip


def config_from_manifest(default: Any, recorded: Mapping[str, Any]) -> Any:
    """The config a manifest records, rebuilt from the model module's default config."""
    from models.catalog import apply_overrides, config_dict

    overrides: dict[str, Any] = {}

    def diff(prefix: str, base: Mapping[str, Any], rec: Mapping[str, Any]) -> None:
        for key, value in rec.items():
            old = base.get(key)
            if isinstance(value, dict) and isinstance(old, dict):
                diff(f"{prefix}{key}.", old, value)
            elif value != old:
                overrides[prefix + key] = tuple(value) if isinstance(value, list) else value

    diff("", config_dict(default), recorded)
    config = apply_overrides(default, overrides) if overrides else default
    if config_dict(config) != dict(recorded):
        raise ValueError(f"cannot rebuild the recorded config {dict(recorded)}")
    return config


def fold_check(folds: Sequence[Mapping[str, Any]], recorded: Mapping[str, Any]) -> list[float]:
    """|refit - manifest| balanced accuracy per fold (0 when the refit reproduces the fold)."""
    mine = [float(f["balanced_accuracy"]) for f in folds]
    theirs = [float(f["balanced_accuracy"]) for f in recorded.get("folds", [])]
    return [abs(a - b) for a, b in zip(mine, theirs, strict=False)]


def model_cache_path(cache_dir: Path, model: str, version: str) -> Path:
    """Where one model version's out-of-fold probabilities are cached."""
    return cache_dir / f"oof-{model}@{version}.npz"


def _cached_probs(
    path: Path, time_ms: IntArray, symbol: Any
) -> tuple[FloatArray, list[float]] | None:
    """A model's cached probabilities if they were made on exactly these rows."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if not (np.array_equal(z["time_ms"], time_ms) and np.array_equal(z["symbol"], symbol)):
            return None
        return np.asarray(z["probs"]), [float(x) for x in z["fold_check"]]


def collect_out_of_fold(
    registry: Path,
    versions: Mapping[str, str],
    log: Callable[[str], None] = print,
    cache_dir: Path | None = None,
) -> OutOfFold:
    """Refit each member's walk-forward folds and score its held-back block (module doc).

    With ``cache_dir``, each model version's probabilities are kept there (``.npz``) and reused
    when a later set holds the same version on the same rows: a fold refit of a sequence model
    costs minutes.
    """
    from models.catalog import model_module
    from models.dataset import LabelSpec, build_dataset
    from models.metrics import classification_metrics
    from models.registry import read_manifest
    from models.scorer import EnsembleScorer
    from models.train import TrainPlan, _fit_and_score, split_rows

    manifests = {m: read_manifest(registry, m, v) for m, v in sorted(versions.items())}
    first = next(iter(manifests.values()))
    src = first.data_source
    for m in manifests.values():
        if (m.label, m.data_source, m.train_range) != (first.label, src, first.train_range):
            raise ValueError(f"{m.model} {m.version} was trained on other data or labels")
    label = LabelSpec(**{k: first.label[k] for k in ("horizon_bars", "fee_rate", "dead_zone")})
    plan = TrainPlan(
        data_dir=Path(src["data_dir"]), registry=registry, version="oof",
        symbols=tuple(src["symbols"]), start=src["requested_start"],
        end=src["requested_end_exclusive"], seed=first.seed, n_folds=src["n_folds"],
        holdout_fraction=src["holdout_fraction"], train_stride=src["default_fit_stride"],
    )  # fmt: skip
    ds = build_dataset(plan.data_dir, plan.symbols, plan.start, plan.end, label)
    split = split_rows(ds.time_ms, plan, label.horizon_bars * 60_000)
    rows = np.concatenate([va for _, va in split.folds] + [split.holdout])
    source = np.concatenate(
        [np.full(len(va), k) for k, (_, va) in enumerate(split.folds)]
        + [np.full(len(split.holdout), HELD_BACK)]
    ).astype(np.int64)
    probs: dict[str, FloatArray] = {}
    checks: dict[str, list[float]] = {}
    for name, manifest in manifests.items():
        cache = None if cache_dir is None else model_cache_path(cache_dir, name, manifest.version)
        cached = None if cache is None else _cached_probs(cache, ds.time_ms[rows], ds.symbol[rows])
        if cached is not None:
            log(f"{name} {manifest.version}: out-of-fold probabilities from {cache}")
            probs[name], checks[name] = cached
            continue
        _, module, default = model_module(name)
        config = config_from_manifest(default, manifest.config)
        parts, folds = [], []
        for k, (tr, va) in enumerate(split.folds):
            log(f"{name} {manifest.version}: refitting fold {k} ({len(tr)} rows)")
            _, proba = _fit_and_score(module, config, ds, tr, va, plan)
            parts.append(np.asarray(proba, dtype=np.float64))
            folds.append(classification_metrics(ds.y[va], proba))
        scorer = EnsembleScorer.from_registry(registry, {name: manifest.version})
        held = scorer.score(ds.subset(split.holdout).tabular, ds.subset(split.holdout).window)
        parts.append(np.asarray(held[name], dtype=np.float64))
        probs[name] = np.concatenate(parts)
        checks[name] = fold_check(folds, manifest.metrics.get("walk_forward", {}))
        log(f"{name}: fold balanced accuracy refit vs manifest |diff| {checks[name]}")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                cache, probs=probs[name], time_ms=ds.time_ms[rows], symbol=ds.symbol[rows],
                fold_check=np.asarray(checks[name]),
            )  # fmt: skip
    meta = {
        "versions": dict(versions), "label": label.to_dict(), "data_dir": str(plan.data_dir),
        "train_end_exclusive": plan.end, "fold_check_abs_diff": checks,
        "folds": [_range(ds.time_ms[va]) for _, va in split.folds],
        "held_back": _range(ds.time_ms[split.holdout]),
    }  # fmt: skip
    return OutOfFold(
        probs=probs, time_ms=ds.time_ms[rows], symbol=ds.symbol[rows],
        fwd_return=ds.fwd_return[rows], volatility=ds.tabular[rows, _VOL_60].astype(np.float64),
        source=source, meta=meta,
    )  # fmt: skip


def _range(time_ms: IntArray) -> dict[str, Any]:
    from models.train import time_range

    return time_range(time_ms)


def ensemble_votes(oof: OutOfFold, weights: Mapping[str, float]) -> Votes:
    """The runtime vote on every out-of-fold row."""
    from models.evaluation.predictors import runtime_ensemble

    ens = runtime_ensemble(oof.probs, weights)
    prob = ens.proba[np.arange(len(ens.pred)), ens.pred]
    return Votes(ens.pred, prob, oof.fwd_return, oof.time_ms, oof.volatility)


def attach_gate(registry: Path, gate: EdgeGate) -> list[Path]:
    """Write ``gate`` into the manifest of every member (the artifacts are not touched)."""
    from models.registry import MANIFEST_FILE, read_manifest, version_dir, write_manifest

    paths = []
    for model, version in sorted(gate.members.items()):
        manifest = read_manifest(registry, model, version)
        write_manifest(registry, dataclasses.replace(manifest, edge_gate=gate.to_dict()))
        paths.append(version_dir(registry, model, version) / MANIFEST_FILE)
    return paths


def gate_table_markdown(gate: EdgeGate) -> str:
    """The table as a report section."""
    lines = [
        "| action | probability | vol bucket | signals | hit rate | mean net | CI low | CI high "
        "| tradeable |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for b in gate.buckets:
        lines.append(
            f"| {b.action.value} | [{b.prob_lo:.2f}, {b.prob_hi:.2f}) | {b.vol_bucket} | {b.n} "
            f"| {b.hit_rate:.1%} | {b.mean_net_return:+.4%} | {b.lower:+.4%} | {b.upper:+.4%} "
            f"| {'yes' if b.tradeable else 'no'} |"
        )
    return "\n".join(lines)


def measure_gate(
    registry: Path,
    versions: Mapping[str, str],
    weights: Mapping[str, float],
    paper: PaperConfig,
    ev: GateEvidence,
    cache_dir: Path,
    log: Callable[[str], None] = print,
) -> tuple[EdgeGate, OutOfFold]:
    """Out-of-fold votes of ``versions`` (cached per model version) -> their gate table."""
    oof = collect_out_of_fold(registry, versions, log, cache_dir)
    used = {m: float(weights[m]) for m in versions if weights.get(m, 0.0) > 0}
    # the folds only: the held-back block stays unseen by the table, for shadow scoring
    votes = ensemble_votes(oof.subset(oof.source != HELD_BACK), used)
    provenance = {
        "training_period_only": True,
        "train_end_exclusive": oof.meta["train_end_exclusive"],
        "folds": oof.meta["folds"],
        "not_used_held_back": oof.meta["held_back"],
        "fold_refit_abs_diff_balanced_accuracy": oof.meta["fold_check_abs_diff"],
    }
    horizon = int(oof.meta["label"]["horizon_bars"])
    return build_gate(votes, versions, used, horizon, paper, ev, provenance), oof


def gate_report(gate: EdgeGate) -> str:
    """Markdown: what the table is, where its evidence comes from, and the table."""
    ev = gate.evidence
    members = ", ".join(f"{m}@{v}" for m, v in sorted(gate.members.items()))
    tradeable = gate.tradeable()
    verdict = (
        f"{len(tradeable)} tradeable bucket(s): " + "; ".join(b.describe() for b in tradeable)
        if tradeable
        else "no tradeable bucket: with these models the system stands aside (NO_EDGE)"
    )

    def span(r: Mapping[str, Any]) -> str:
        return f"{r.get('first')} .. {r.get('last')} ({r.get('rows')} rows)"

    folds = "; ".join(span(f) for f in ev.get("folds", []))
    held = span(ev.get("not_used_held_back", {}))
    return "\n".join([
        f"# Expected-value gate of {members}", "",
        f"- evidence: walk-forward out-of-fold votes of the training period only (before "
        f"{ev.get('train_end_exclusive')}), the validation blocks of the walk-forward folds: "
        f"{folds}; the held-back block {held} is left out (the promotion gate's shadow window)",
        f"- rows {ev['rows']}, ensemble BUY/SELL signals {ev['signals']}; weights "
        f"{dict(gate.weights)}",
        f"- net return = `{ev['net_return']}` at h = {gate.horizon_bars} bars; round trip "
        f"{gate.round_trip_cost:.4%} (taker {ev['costs']['taker_fee']}, slippage "
        f"{ev['costs']['slippage_bps']} bp per side)",
        f"- bootstrap: {ev['n_boot']} resamples of {ev['block_minutes']}-minute event-time "
        f"blocks, {ev['ci']:.0%} interval, seed {ev['seed']}; tradeable = lower bound > 0 "
        f"over >= {ev['min_rows']} signals",
        f"- verdict: {verdict}", "",
        gate_table_markdown(gate), "",
    ])  # fmt: skip
