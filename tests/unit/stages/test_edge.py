"""The expected-value gate: building the table (models/edge.py) and applying it (supervisor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.edge import (
    GateEvidence,
    Votes,
    block_bootstrap_ci,
    block_ids,
    build_gate,
    net_returns,
    round_trip_cost,
)
from streams.config import PaperConfig, SupervisorPolicy
from streams.stages import SupervisorStage
from streams.stages.edge import EdgeGate, gate_from_manifests, gate_mismatch, lookup
from streams.stages.supervisor import EdgeGateLoaded
from streams.vocabulary import Action, VetoRule
from tests.unit.stages.factories import MODELS, scored

SELL, HOLD, BUY = 0, 1, 2
WEIGHTS = {m: 0.5 for m in MODELS}
EV = GateEvidence(prob_edges=(0.5, 0.7), n_boot=400, block_minutes=60, min_rows=50)


def test_round_trip_cost_is_fees_and_slippage_on_both_sides() -> None:
    assert round_trip_cost(PaperConfig()) == pytest.approx(2 * (0.0004 + 0.0001))


def test_net_returns_sign_by_action_and_pay_the_cost() -> None:
    fwd = np.array([0.01, 0.01, 0.01])
    out = net_returns(np.array([BUY, SELL, HOLD]), fwd, 0.001)
    assert out.tolist() == pytest.approx([0.009, -0.011, 0.0])


def test_block_bootstrap_widens_for_correlated_rows() -> None:
    rng = np.random.default_rng(1)
    hourly = np.repeat(rng.normal(0.001, 0.01, 100), 60)  # one shock per hour, 60 rows each
    values = hourly + rng.normal(0, 0.001, len(hourly))
    t = np.arange(len(values), dtype=np.int64) * 60_000
    lo, hi = block_bootstrap_ci(values, block_ids(t, 60), 1000, 0.9, seed=3)
    assert lo < values.mean() < hi
    lo_iid, hi_iid = block_bootstrap_ci(values, block_ids(t, 1), 1000, 0.9, seed=3)
    assert hi - lo > 3 * (hi_iid - lo_iid)  # rows of one hour are one observation, not 60
    assert block_bootstrap_ci(values, block_ids(t, 60), 1000, 0.9, 3) == (lo, hi)  # seeded


def _votes(n: int, edge: float, prob: float, action: int = BUY) -> Votes:
    """``n`` signals of ``action`` at ``prob`` whose forward return is ``edge`` +- noise."""
    rng = np.random.default_rng(5)
    sign = 1.0 if action == BUY else -1.0
    fwd = sign * (edge + rng.normal(0, 0.002, n))
    return Votes(
        action=np.full(n, action, dtype=np.int64), prob=np.full(n, prob),
        fwd_return=fwd, time_ms=np.arange(n, dtype=np.int64) * 60_000,
        volatility=np.full(n, 0.001),
    )  # fmt: skip


def _gate(votes: Votes) -> EdgeGate:
    return build_gate(votes, {"xgboost": "v1", "lightgbm": "v2"}, WEIGHTS, 15, PaperConfig(),
                      EV, {"test": True})  # fmt: skip


def test_a_bucket_is_tradeable_only_when_its_lower_bound_clears_the_costs() -> None:
    paying = _gate(_votes(2000, edge=0.003, prob=0.8))  # 0.3 % against 0.1 % costs
    (bucket,) = paying.buckets
    assert (bucket.action, bucket.prob_lo, bucket.prob_hi) == (Action.BUY, 0.7, 1.0)
    assert bucket.tradeable and bucket.lower > 0
    losing = _gate(_votes(2000, edge=0.0008, prob=0.8))  # under the 0.1 % round trip
    assert not losing.buckets[0].tradeable and losing.buckets[0].mean_net_return < 0
    few = _gate(_votes(20, edge=0.003, prob=0.8))  # pays, but 20 < min_rows
    assert few.buckets[0].lower > 0 and not few.buckets[0].tradeable


def test_the_table_round_trips_through_the_manifest_form() -> None:
    gate = _gate(_votes(500, edge=0.003, prob=0.6, action=SELL))
    assert EdgeGate.from_dict(gate.to_dict()) == gate
    assert lookup(gate, Action.SELL, 0.65, 0.001) == gate.buckets[0]
    assert lookup(gate, Action.SELL, 0.75, 0.001) is None  # no evidence in that bucket
    assert lookup(gate, Action.BUY, 0.65, 0.001) is None


def test_a_gate_applies_only_to_the_versions_and_weights_it_was_built_for() -> None:
    gate = _gate(_votes(500, edge=0.003, prob=0.8))
    assert gate_mismatch(gate, {"xgboost": "v1", "lightgbm": "v2"}, WEIGHTS) is None
    assert "loaded" in str(gate_mismatch(gate, {"xgboost": "v9", "lightgbm": "v2"}, WEIGHTS))
    skewed = {"xgboost": 0.7, "lightgbm": 0.3}
    assert "weights" in str(gate_mismatch(gate, {"xgboost": "v1", "lightgbm": "v2"}, skewed))
    tables = {"xgboost": gate.to_dict(), "lightgbm": None}
    found, problem = gate_from_manifests(tables, {"xgboost": "v1", "lightgbm": "v2"}, WEIGHTS)
    assert found is None and "lightgbm" in problem


def _stage(gate: EdgeGate | None, problem: str = "") -> SupervisorStage:
    return SupervisorStage(
        SupervisorPolicy(gate="edge"), MODELS, edge=EdgeGateLoaded(gate, problem)
    )


def test_the_supervisor_passes_a_tradeable_bucket_and_vetoes_the_rest_as_no_edge() -> None:
    gate = _gate(_votes(2000, edge=0.003, prob=0.8))
    stage = _stage(gate)
    passed = stage.on_signal(stage.new_state(), scored(probs=(0.1, 0.1, 0.8)))
    assert passed is not None and not passed.vetoed and passed.final_action is Action.BUY
    weak = stage.on_signal(stage.new_state(), scored(probs=(0.2, 0.2, 0.6)))  # no evidence
    assert weak is not None and [v.rule for v in weak.veto_reasons] == [VetoRule.NO_EDGE]
    losing = dataclasses.replace(gate, buckets=tuple(
        dataclasses.replace(b, tradeable=False, lower=-0.001) for b in gate.buckets
    ))  # fmt: skip
    stage = _stage(losing)
    out = stage.on_signal(stage.new_state(), scored(probs=(0.1, 0.1, 0.8)))
    assert out is not None and out.vetoed
    assert "lower bound <= 0" in out.veto_reasons[0].detail


def test_without_a_gate_table_the_edge_gate_stands_aside_and_says_why() -> None:
    stage = _stage(None, "no gate table in the manifest of xgboost")
    out = stage.on_signal(stage.new_state(), scored(probs=(0.05, 0.05, 0.9)))
    assert out is not None and out.vetoed and out.final_action is Action.HOLD
    assert out.veto_reasons[0].rule is VetoRule.NO_EDGE
    assert "manifest of xgboost" in out.veto_reasons[0].detail


def test_after_a_swap_the_gate_judges_by_the_table_of_the_versions_that_scored_the_signal() -> None:
    """The registry's promoted set carries a gate table; xgboost v1's manifest has none, so a
    signal its set scored stands aside for that reason (read from the registry, once)."""
    from models.scorer import promoted_versions
    from streams.config import Settings

    settings = Settings()  # the default gate: edge
    champion = promoted_versions(settings.registry_dir)
    stage = SupervisorStage.from_settings(settings, sorted(champion), champion)
    assert stage.edge.gate is not None, "the promoted set must carry a gate table"

    def signal(versions: dict[str, str]):  # type: ignore[no-untyped-def]
        s = scored(probs=(0.05, 0.05, 0.9))
        votes = tuple(dataclasses.replace(s.votes[0], model=m, version=v)
                      for m, v in sorted(versions.items()))  # fmt: skip
        return dataclasses.replace(s, votes=votes)

    def edge_detail(versions: dict[str, str]) -> str:
        out = stage.on_signal(stage.new_state(), signal(versions))
        assert out is not None
        return next((r.detail for r in out.veto_reasons if r.rule is VetoRule.NO_EDGE), "")

    assert "no gate table" not in edge_detail(champion)  # passed, or vetoed by a bucket
    swapped = {**champion, "xgboost": "v1"}
    assert edge_detail(swapped) == "no gate table: no gate table in the manifest of xgboost"
    assert stage.edge_for(signal(swapped)) is stage.edge_for(signal(swapped))  # read once
    unknown = edge_detail({**champion, "xgboost": "v99"})
    assert "not read" in unknown and "v99 is not registered" in unknown
    assert stage.edge_for(signal(champion)) is stage.edge  # the startup table, not re-read
