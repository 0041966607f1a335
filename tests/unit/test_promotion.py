"""The promotion gate on shadow rows: every condition can refuse, and says why."""

from __future__ import annotations

import numpy as np

from models.edge import block_ids
from models.promotion import decide, decision_events, gated_actions, shadow_score
from streams.config import PromotionRule
from streams.stages.edge import EdgeBucket, EdgeGate
from streams.vocabulary import Action, ModelEventKind

SELL, HOLD, BUY = 0, 1, 2
RULE = PromotionRule(min_decisions=100, n_boot=500)
N = 3000
BLOCKS = block_ids(np.arange(N, dtype=np.int64) * 60_000, 60)


def _pnl(mean: float, acted: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(mean, 0.002, N)
    return np.where(acted, noise, 0.0)


def _decide(cand_mean: float, champ_mean: float, cand_actions: np.ndarray):  # type: ignore[no-untyped-def]
    acted = cand_actions != HOLD
    cand = _pnl(cand_mean, acted, 1)
    champ = _pnl(champ_mean, np.ones(N, dtype=bool), 2)
    champ_actions = np.full(N, BUY)
    c = shadow_score({"xgboost": "v3"}, cand_actions, cand, BLOCKS, RULE)
    k = shadow_score({"xgboost": "v2"}, champ_actions, champ, BLOCKS, RULE)
    return decide(c, k, cand, champ, BLOCKS, RULE, bias_limit=0.7)


BALANCED = np.where(np.arange(N) % 2 == 0, BUY, SELL)


def test_a_candidate_that_pays_and_beats_the_champion_is_promoted() -> None:
    d = _decide(0.002, -0.001, BALANCED)
    assert d.promote and d.reasons == ()
    kinds = [e.kind for e in decision_events(d, 1_000)]
    assert kinds == [ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED]


def test_a_candidate_without_edge_is_refused_even_against_a_losing_champion() -> None:
    d = _decide(-0.0005, -0.002, BALANCED)  # better than the champion, still loses money
    assert not d.promote
    assert any("always-HOLD" in r for r in d.reasons)
    assert decision_events(d, 1_000)[-1].kind is ModelEventKind.PROMOTION_REFUSED


def test_a_one_sided_or_inactive_candidate_is_refused() -> None:
    one_sided = _decide(0.002, -0.001, np.full(N, BUY))
    assert not one_sided.promote and any("one-sided" in r for r in one_sided.reasons)
    idle = np.full(N, HOLD)
    idle[:50] = BUY
    few = _decide(0.002, -0.001, idle)
    assert not few.promote and any("50 shadow decisions" in r for r in few.reasons)


def test_a_set_acts_only_where_its_gate_bucket_is_tradeable() -> None:
    bucket = EdgeBucket(Action.BUY, 0.5, 1.0, 0, 500, 0.6, 0.001, 0.0005, 0.0015, True)
    gate = EdgeGate({"xgboost": "v3"}, {"xgboost": 1.0}, 15, 0.001, (0.5,), (), (bucket,), {})
    acts = gated_actions(gate, np.array([BUY, BUY, SELL, HOLD]), np.array([0.6, 0.4, 0.6, 0.9]),
                         np.zeros(4))  # fmt: skip
    assert acts.tolist() == [BUY, HOLD, HOLD, HOLD]
    assert gated_actions(None, np.array([BUY]), np.array([0.9]), np.zeros(1)).tolist() == [HOLD]


def _passing_gate_and_promote(registry, monkeypatch, at: int = 5_000):  # type: ignore[no-untyped-def]
    """``gate_and_promote`` on a registry copy whose shadow comparison is replaced by a passing
    decision for ``xgboost v1`` with the champion's gate table re-measured for that set: what
    is tested is what the promotion writes, and in which order."""
    import dataclasses

    import models.promotion as promotion
    from models.registry import gate_tables, read_index
    from streams.config import Settings

    champion = read_index(registry)
    candidate = {**champion, "xgboost": "v1"}
    table = gate_tables(registry, champion)["xgboost"]
    assert table is not None
    gate = dataclasses.replace(EdgeGate.from_dict(table), members=candidate)
    acted = BALANCED != HOLD
    pnl = _pnl(0.002, acted, 1)
    champ = _pnl(-0.001, np.ones(N, dtype=bool), 2)
    decision = decide(shadow_score(candidate, BALANCED, pnl, BLOCKS, RULE),
                      shadow_score(champion, np.full(N, BUY), champ, BLOCKS, RULE),
                      pnl, champ, BLOCKS, RULE, bias_limit=0.7)  # fmt: skip
    assert decision.promote
    monkeypatch.setattr(promotion, "shadow_compare", lambda *a, **k: (decision, at, gate))
    return promotion.gate_and_promote(registry, candidate, Settings(), registry / "cache", at,
                                      log=lambda _: None), candidate, gate  # fmt: skip


def test_a_promoted_set_carries_the_gate_table_it_was_measured_with(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under the edge gate a swapped-in set without its own table stands aside: promotion
    writes the candidate's table into every member's manifest, so the served set trades."""
    from models.promotion import read_events
    from models.registry import gate_tables, read_index, read_manifest
    from streams.config import Settings
    from streams.stages.edge import gate_from_manifests
    from tests.shared_data import registry_copy

    registry = registry_copy(tmp_path / "registry")
    (_decision, events), candidate, gate = _passing_gate_and_promote(registry, monkeypatch)
    assert read_index(registry) == candidate
    for model, version in candidate.items():
        assert EdgeGate.from_dict(read_manifest(registry, model, version).edge_gate) == gate
    served, problem = gate_from_manifests(gate_tables(registry, candidate), candidate,
                                          Settings().ensemble_weights)  # fmt: skip
    assert served == gate and problem == ""
    assert [e.event_id for e in read_events(registry)] == [e.event_id for e in events]
    assert [e.kind for e in events] == [ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED]


def test_a_decision_recorded_before_a_crash_is_found_applied_and_never_written_twice(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Crash after the decision reached the registry's history, before the index named the
    candidate: the restarted trainer finds the decision, applies it, and the history keeps one
    line per record however often it is appended."""
    import models.registry
    from models.promotion import append_events, apply_recorded, read_events, recorded_decision
    from models.registry import read_index
    from tests.shared_data import registry_copy

    registry = registry_copy(tmp_path / "registry")
    champion = read_index(registry)

    def crash(*_a: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(models.registry, "promote", crash)
    try:
        _passing_gate_and_promote(registry, monkeypatch, at=7_000)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the simulated crash did not happen")
    monkeypatch.undo()
    assert read_index(registry) == champion  # the index was not reached
    candidate = {**champion, "xgboost": "v1"}
    found = recorded_decision(registry, candidate, 7_000)
    assert [e.kind for e in found] == [ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED]
    assert recorded_decision(registry, candidate, 7_001) == []
    apply_recorded(registry, found)
    assert read_index(registry) == candidate
    append_events(registry, found)
    assert [e.event_id for e in read_events(registry)] == [e.event_id for e in found]


def test_the_history_reads_old_lines_skips_a_torn_one_and_appends_after_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A line from before ``metric_name``/``metric`` existed reads with their defaults; a last
    line a crash cut short is skipped, and the next record starts a line of its own."""
    import json

    from models.promotion import EVENTS_FILE, append_events, read_events, served_history
    from streams.contracts.records import ModelEventRecorded

    old = {"event_id": "xgboost:v2:PROMOTED:1", "model": "xgboost", "version": "v2",
           "event_time_ms": 1, "kind": "PROMOTED", "detail": "by hand"}  # fmt: skip
    path = tmp_path / EVENTS_FILE
    path.write_text(json.dumps(old) + "\n" + '{"event_id": "xgboost:v3:PROM', encoding="utf-8")
    [first] = read_events(tmp_path)
    assert first.version == "v2" and first.metric_name is None and first.metric is None
    later = ModelEventRecorded(
        event_id="xgboost:v3:PROMOTED:2", model="xgboost", version="v3", event_time_ms=2,
        kind=ModelEventKind.PROMOTED, detail="gate",
    )  # fmt: skip
    append_events(tmp_path, [later, first])  # first is there already: not written twice
    assert [e.event_id for e in read_events(tmp_path)] == [first.event_id, later.event_id]
    assert served_history(tmp_path, "xgboost") == ["v2", "v3"]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3  # old, torn, new


def test_a_decision_the_topology_made_on_a_stream_shadow_reaches_the_registry_once(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    """The promotion stage decides a stream shadow on ``models.events``; the trainer reading it
    keeps it in the registry's history and, for ``PROMOTED``, in the index (a worker started
    later serves the promoted set). Read twice, nothing is added twice."""
    from models.promotion import decision_event_id, read_events
    from models.registry import read_index
    from streams.config import Settings
    from streams.contracts.records import ModelEventRecorded
    from streams.trainer.loop import Trainer
    from streams.trainer.retrain import RetrainPlan
    from tests.shared_data import registry_copy

    registry = registry_copy(tmp_path / "registry")
    champion = read_index(registry)
    plan = RetrainPlan(registry, tmp_path / "work", ("xgboost",), 2.0, 2, 7)
    logs: list[str] = []
    trainer = Trainer("unused:9092", "p.", Settings(), plan, log=logs.append)
    events = [
        ModelEventRecorded(
            event_id=decision_event_id("xgboost", "v1", kind, 9_000),
            model="xgboost",
            version="v1",
            event_time_ms=9_000,
            kind=kind,
            detail="promote | ...",
        )
        for kind in (ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED)
    ]
    for _ in range(2):
        for event in events:
            trainer._keep_decision(event)
    assert [e.event_id for e in read_events(registry)] == [e.event_id for e in events]
    assert read_index(registry) == {**champion, "xgboost": "v1"}
    assert len([line for line in logs if "PROMOTED" in line]) == 1
