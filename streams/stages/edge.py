"""The expected-value gate: act only where walk-forward evidence says the action pays its costs.

What it is: a table (:class:`EdgeGate`) built offline (``models/edge.py``) from walk-forward
out-of-fold predictions of the *training* period only. Each row (:class:`EdgeBucket`) is one
action (BUY or SELL) in one bucket of the ensemble's probability for that action (and, when the
gate was built with volatility edges, one volatility bucket): how many out-of-fold signals fell
there, their mean return at the label horizon net of the paper venue's round-trip costs (taker
fee and slippage, both sides), and a block-bootstrap confidence interval of that mean. A bucket
is *tradeable* only when the interval's lower bound is above zero and it holds enough signals.

The supervisor looks the signal up (:func:`lookup`) and vetoes it with ``NO_EDGE``
(:func:`edge_veto`) unless its bucket is tradeable, so a model set without demonstrated edge
stands aside and the veto detail says which bucket and which figures decided it. A gate is valid
only for the model versions and ensemble weights it was built from (:func:`gate_mismatch`).

Pure: no I/O; the gate is read from the model manifests by :func:`gate_from_manifests`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streams.contracts.records import SignalScored, VetoReason
from streams.vocabulary import Action, VetoRule

GATE_SCHEMA = 1
_WEIGHT_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class EdgeBucket:
    """Walk-forward evidence for one action in one probability (and volatility) bucket."""

    action: Action
    prob_lo: float
    """Bucket of the ensemble probability of ``action``: ``prob_lo <= p < prob_hi``."""
    prob_hi: float
    vol_bucket: int
    """Index into the gate's volatility edges (0 when the gate has none)."""
    n: int
    """Out-of-fold signals in the bucket."""
    hit_rate: float
    """Share of them whose net return was positive (the bucket's realised calibration)."""
    mean_net_return: float
    """Mean return at the label horizon after round-trip costs, a fraction (0.001 = 0.1 %)."""
    lower: float
    upper: float
    """Bootstrap confidence interval of ``mean_net_return`` (``GateEvidence.ci``)."""
    tradeable: bool

    def describe(self) -> str:
        """One line for a veto detail or a report."""
        vol = f" vol#{self.vol_bucket}" if self.vol_bucket else ""
        return (
            f"{self.action.value} p in [{self.prob_lo:.2f},{self.prob_hi:.2f}){vol}: "
            f"n={self.n} mean {self.mean_net_return:+.4%} CI [{self.lower:+.4%}, "
            f"{self.upper:+.4%}]"
        )


@dataclass(frozen=True, slots=True)
class EdgeGate:
    """The gate table of one model set (see the module doc); stored in every member's manifest."""

    members: Mapping[str, str]
    """Model -> version whose out-of-fold votes built the table."""
    weights: Mapping[str, float]
    """Ensemble weights the votes were combined with."""
    horizon_bars: int
    round_trip_cost: float
    """Fees + slippage of one round trip, as a fraction of notional, subtracted from each return."""
    prob_edges: tuple[float, ...]
    """Ascending inner edges of the probability buckets."""
    vol_edges: tuple[float, ...]
    """Ascending inner edges of the volatility (``vol_60``) buckets; empty = no conditioning."""
    buckets: tuple[EdgeBucket, ...]
    evidence: Mapping[str, Any]
    """How it was measured: rows, ranges, bootstrap (resamples, block length, ci, seed)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for a manifest."""
        data = asdict(self)
        data["members"] = dict(self.members)
        data["weights"] = dict(self.weights)
        data["evidence"] = dict(self.evidence)
        data["schema"] = GATE_SCHEMA
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EdgeGate:
        """Inverse of :meth:`to_dict`."""
        buckets = tuple(EdgeBucket(**{**b, "action": Action(b["action"])}) for b in data["buckets"])
        return cls(
            members={str(k): str(v) for k, v in data["members"].items()},
            weights={str(k): float(v) for k, v in data["weights"].items()},
            horizon_bars=int(data["horizon_bars"]),
            round_trip_cost=float(data["round_trip_cost"]),
            prob_edges=tuple(float(e) for e in data["prob_edges"]),
            vol_edges=tuple(float(e) for e in data["vol_edges"]),
            buckets=buckets,
            evidence=dict(data["evidence"]),
        )

    def tradeable(self) -> tuple[EdgeBucket, ...]:
        """The buckets the gate lets through."""
        return tuple(b for b in self.buckets if b.tradeable)


def bucket_index(edges: Sequence[float], value: float) -> int:
    """Bucket of ``value`` among ascending inner ``edges`` (``len(edges) + 1`` buckets)."""
    return bisect.bisect_right(edges, value)


def bucket_bounds(edges: Sequence[float], index: int) -> tuple[float, float]:
    """``(lo, hi)`` of bucket ``index`` (0 and 1 at the ends: probabilities)."""
    lo = edges[index - 1] if index > 0 else 0.0
    hi = edges[index] if index < len(edges) else 1.0
    return lo, hi


def lookup(gate: EdgeGate, action: Action, prob: float, volatility: float) -> EdgeBucket | None:
    """The bucket of a signal, or None when the table has no row for it (no evidence)."""
    lo, _ = bucket_bounds(gate.prob_edges, bucket_index(gate.prob_edges, prob))
    vol = bucket_index(gate.vol_edges, volatility) if gate.vol_edges else 0
    for b in gate.buckets:
        if b.action is action and b.prob_lo == lo and b.vol_bucket == vol:
            return b
    return None


def gate_mismatch(
    gate: EdgeGate, versions: Mapping[str, str], weights: Mapping[str, float]
) -> str | None:
    """Why ``gate`` does not describe the loaded models and weights (None when it does)."""
    if dict(gate.members) != dict(versions):
        return f"gate built for {_pairs(gate.members)}, loaded {_pairs(versions)}"
    used = {m: float(weights.get(m, 0.0)) for m in versions}
    total = sum(used.values()) or 1.0
    gate_total = sum(gate.weights.values()) or 1.0
    for m in versions:
        if abs(used[m] / total - gate.weights.get(m, 0.0) / gate_total) > _WEIGHT_TOLERANCE:
            return f"gate built with weights {dict(gate.weights)}, running with {used}"
    return None


def _pairs(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{m}@{v}" for m, v in sorted(versions.items())) or "nothing"


def gate_from_manifests(
    gates: Mapping[str, Mapping[str, Any] | None],
    versions: Mapping[str, str],
    weights: Mapping[str, float],
) -> tuple[EdgeGate | None, str]:
    """The gate the loaded models' manifests agree on, or None and why there is none.

    ``gates`` is each loaded model's manifest ``edge_gate`` (None when it has none). Every member
    must carry the same table, built for exactly the loaded versions and weights.
    """
    missing = sorted(m for m, g in gates.items() if not g)
    if missing:
        return None, f"no gate table in the manifest of {', '.join(missing)}"
    tables = [EdgeGate.from_dict(g) for g in gates.values() if g]
    if not tables:
        return None, "no models loaded"
    if any(t != tables[0] for t in tables[1:]):
        return None, "the loaded manifests carry different gate tables"
    problem = gate_mismatch(tables[0], versions, weights)
    if problem:
        return None, problem
    return tables[0], ""


def edge_veto(signal: SignalScored, gate: EdgeGate | None, problem: str) -> VetoReason | None:
    """``NO_EDGE`` unless the signal's bucket is tradeable (HOLD is never vetoed here)."""
    if signal.action is Action.HOLD:
        return None
    if gate is None:
        return VetoReason(rule=VetoRule.NO_EDGE, detail=f"no gate table: {problem}")
    volatility = signal.volatility if math.isfinite(signal.volatility) else 0.0
    bucket = lookup(gate, signal.action, signal.confidence, volatility)
    if bucket is None:
        lo, hi = bucket_bounds(gate.prob_edges, bucket_index(gate.prob_edges, signal.confidence))
        detail = f"{signal.action.value} p in [{lo:.2f},{hi:.2f}): no walk-forward evidence"
        return VetoReason(rule=VetoRule.NO_EDGE, detail=detail)
    if bucket.tradeable:
        return None
    why = "lower bound <= 0" if bucket.lower <= 0.0 else "too few signals"
    return VetoReason(rule=VetoRule.NO_EDGE, detail=f"{bucket.describe()}: {why}")
