"""Drift (PSI/KS against the training reference) and the ensemble's hot swap, on real models.

PSI and KS are checked against the values the normal distribution gives for the same bins; the
drift monitor runs on real Binance rows through the real ensemble handler: the training period
of the promoted models must stay below "significant" (its 16 symbols, and five majors alone,
measured against their own training shares), the 2021 spot market must cross it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pytest

from models.drift import bin_counts, class_shares, drift_reference, ks, psi, quantile_edges
from models.promotion import rollback_target
from models.registry import read_manifest
from streams.agents.base import Emitter
from streams.agents.ensemble import EnsembleHandler, build
from streams.config import DriftConfig, Settings
from streams.contracts.records import FeaturesComputed, ModelEventRecorded
from streams.stages.drift import DriftMonitor, DriftReference, SymbolShares
from streams.topics import Topic
from streams.topology import BuildContext
from streams.vocabulary import ModelDrift, ModelEventKind
from tests.shared_data import feature_rows


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _normal_shares(edges: Sequence[float], mean: float) -> np.ndarray:
    cdf = [0.0, *(_phi(e - mean) for e in edges), 1.0]
    return np.diff(cdf)


def test_psi_and_ks_of_a_shifted_normal_match_the_distribution() -> None:
    rng = np.random.default_rng(11)
    edges = quantile_edges(rng.standard_normal(200_000))
    reference = _normal_shares(edges, 0.0)
    shifted = bin_counts(rng.standard_normal(200_000) + 0.5, edges)
    expected = _normal_shares(edges, 0.5)
    want_psi = float(np.sum((expected - reference) * np.log(expected / reference)))
    want_ks = max(abs(_phi(e) - _phi(e - 0.5)) for e in edges)
    assert psi(reference, shifted) == pytest.approx(want_psi, rel=0.03)
    assert ks(reference, shifted) == pytest.approx(want_ks, abs=0.005)
    same = bin_counts(rng.standard_normal(200_000), edges)
    assert psi(reference, same) < 0.002 < want_psi
    assert len(edges) == 9 and reference == pytest.approx(np.full(10, 0.1), abs=0.003)


def test_an_empty_bin_gives_a_large_finite_psi() -> None:
    counts = np.array([0, 50, 50])
    value = psi([1 / 3, 1 / 3, 1 / 3], counts)
    assert math.isfinite(value) and value > 1.0
    assert class_shares([0, 2, 2, 1]) == [0.25, 0.25, 0.5]


def test_rollback_goes_to_the_version_served_before() -> None:
    assert rollback_target("v3", ["v1", "v3", "v2", "v3"], ["v1", "v2", "v3"]) == "v2"
    assert rollback_target("v2", [], ["v1", "v2"]) == "v1"
    assert rollback_target("v1", ["v1"], ["v1", "v2"]) is None


# ---------------------------------------------------------------------------- real data


def _handler(settings: Settings) -> EnsembleHandler:
    from streams.agents.registry import load_scorer

    return build(BuildContext(settings, load_scorer(settings)))


def _drive(handler: EnsembleHandler, rows: list[FeaturesComputed], batch: int = 200) -> list:
    """Feed rows in batches; every record the handler sent, in order."""
    sent = []
    for i in range(0, len(rows), batch):
        out = Emitter("ensemble")
        for f in rows[i : i + batch]:
            handler.on_record(Topic.MARKET_FEATURES.value, 0, "features/0", f, out)
        handler.end_batch(out)
        sent += [o.value for o in out.items if o.value is not None]
    return sent


def _drift_levels(handler: EnsembleHandler, rows: list[FeaturesComputed]) -> list[int]:
    assert handler.drift is not None
    levels = []
    for f in rows:  # the monitor alone, on the signals the real ensemble gives
        signal = handler.stage.on_features([f])[0]
        _signal, reading, _kind = handler.drift.observe(f, signal)
        if reading is not None:
            levels.append(reading.level)
    assert handler.drift.monitor is not None and handler.drift.monitor.ref is not None
    return levels


SMALL = DriftConfig(window_ms=24 * 3_600_000, min_samples=1000)


def test_training_period_data_does_not_drift() -> None:
    settings = Settings(drift=SMALL)
    # the reference's population: the 16 training symbols (majors alone are calmer than it)
    symbols = read_manifest(settings.registry_dir, "xgboost", "v2").data_source["symbols"]
    rows = feature_rows("um_futures_1m_2025", symbols, "2025-05-10", "2025-05-12T12:00Z")
    levels = _drift_levels(_handler(settings), rows)
    assert len(levels) >= 30
    assert max(levels) < 2


MAJORS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]


def test_a_window_of_a_few_symbols_is_compared_with_those_symbols_own_training_shares() -> None:
    # Five majors of the training period: against the 16-symbol population they are calmer
    # (significant), against the mix of their own training shares they are not.
    settings = Settings(drift=SMALL)
    rows = feature_rows("um_futures_1m_2025", MAJORS, "2025-05-10", "2025-05-12T12:00Z")
    handler = _handler(settings)
    levels = _drift_levels(handler, rows)
    assert handler.drift is not None and handler.drift.monitor is not None
    ref = handler.drift.monitor.ref
    assert ref is not None and set(MAJORS) <= set(ref.by_symbol)
    assert len(levels) >= 30 and max(levels) < 2
    population_only = _handler(settings)
    monitor = population_only.drift.watch(handler.drift.versions or {})  # type: ignore[union-attr]
    monitor.ref = dataclasses.replace(ref, by_symbol={})
    assert max(_drift_levels(population_only, rows)) == 2


def test_the_per_symbol_shares_weighted_by_their_rows_are_the_populations() -> None:
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.normal(size=900), rng.exponential(size=900)])
    x[5, 1] = np.nan  # a row without a value counts in no bin of that feature
    symbols = np.array(["A"] * 600 + ["B"] * 300)
    x[600:] += 2.0  # B sits higher: its own shares differ from the population's
    predicted = rng.integers(0, 3, size=900)
    ref = drift_reference(x, ["f", "g"], predicted, {}, {}, symbols=symbols)
    by = ref["by_symbol"]
    assert [by[s]["rows"] for s in ("A", "B")] == [600, 300]
    for name in ("f", "g"):
        mixed = sum(by[s]["rows"] * np.asarray(by[s]["features"][name]) for s in by) / 900
        assert mixed == pytest.approx(ref["features"][name]["proportions"], abs=2e-3)
        assert by["A"]["features"][name] != pytest.approx(by["B"]["features"][name], abs=0.05)
    classes = sum(by[s]["rows"] * np.asarray(by[s]["predicted_classes"]) for s in by) / 900
    assert classes == pytest.approx(ref["predicted_classes"])


def test_the_expected_shares_mix_each_symbols_own_by_its_rows() -> None:
    pop = (np.array([0.5, 0.5]),)
    ref = DriftReference(("f",), (np.array([0.0]),), pop, {"m": np.array([0.2, 0.6, 0.2])},
                         {"A": SymbolShares((np.array([1.0, 0.0]),), {"m": np.array([1.0, 0, 0])}),
                          "B": SymbolShares((np.array([0.0, 1.0]),), {})})  # fmt: skip
    features, classes = ref.expected({"A": 3, "B": 1}, 4)
    assert features[0].tolist() == [0.75, 0.25]
    assert classes["m"].tolist() == pytest.approx([0.8, 0.15, 0.05])  # B takes the population's
    # a symbol without its own shares, and rows counted for no symbol, take the population's
    features, _ = ref.expected({"A": 1, "ZZZ": 1}, 4)
    assert features[0].tolist() == [0.625, 0.375]
    assert ref.expected({}, 4)[0][0] is pop[0]


def test_a_slot_keeps_its_rows_per_symbol_across_a_restart() -> None:
    settings = Settings(drift=SMALL)
    rows = feature_rows("um_futures_1m_2025", MAJORS[:2], "2025-05-10", "2025-05-10T02:00Z")
    handler = _handler(settings)
    _drift_levels(handler, rows)
    monitor = handler.drift.monitor  # type: ignore[union-attr]
    assert monitor is not None
    state = monitor.to_state()
    restored = DriftMonitor(monitor.ref, monitor.cfg)
    restored.load_state(state)
    assert restored.to_state() == state
    assert sum(sum(s["s"].values()) for s in state["slots"].values()) == len(rows)
    older = {**state, "slots": {k: {m: v for m, v in s.items() if m != "s"}
                                for k, s in state["slots"].items()}}  # fmt: skip
    restored.load_state(older)  # a state written before the per-symbol counts: none
    assert all(not s.symbols for s in restored.slots.values())


def test_the_2021_spot_market_raises_drift_once_per_crossing() -> None:
    settings = Settings(drift=SMALL)
    rows = feature_rows("spot_1m", MAJORS, "2021-04-10", "2021-04-12T12:00Z")
    handler = _handler(settings)
    sent = _drive(handler, rows)
    events = [r for r in sent if isinstance(r, ModelEventRecorded)]
    kinds = [e.kind for e in events]
    assert ModelEventKind.DRIFT_DETECTED in kinds
    assert handler.drift is not None and handler.drift.monitor is not None
    assert handler.drift.monitor.level == 2
    # every signal carries the level its instance had measured when it was scored: the level
    # the last event before it announced (a crossing goes out ahead of the row that made it)
    level, stamped = ModelDrift.STABLE, []
    for record in sent:
        if isinstance(record, ModelEventRecorded):
            recovered = record.kind is ModelEventKind.DRIFT_RECOVERED
            level = ModelDrift.STABLE if recovered else (
                ModelDrift.SIGNIFICANT if "significant drift" in record.detail
                else ModelDrift.MODERATE)  # fmt: skip
        else:
            assert record.model_drift is level, record.signal_id
            stamped.append(level)
    assert ModelDrift.SIGNIFICANT in stamped and stamped[0] is ModelDrift.STABLE
    # ... whatever the batches: the level is measured from the slots before the row's own
    rebatched = _drive(_handler(settings), rows, batch=37)
    assert rebatched == sent
    # one record per level change, not one per reading
    assert len(events) <= len(rows) // 60
    worst = next(e for e in events if e.kind is ModelEventKind.DRIFT_DETECTED)
    assert worst.metric is not None and worst.metric >= SMALL.moderate_psi
    assert "PSI" in worst.detail and worst.metric_name and worst.metric_name.startswith("psi:")


def test_a_promoted_record_swaps_the_models_at_its_event_time() -> None:
    settings = Settings()
    rows = feature_rows("um_futures_1m_2025", ["BTCUSDT"], "2025-05-21", "2025-05-21T03:00Z")
    handler = _handler(settings)
    assert handler.stage.versions["xgboost"] == "v2"
    at = rows[len(rows) // 2].event_time_ms
    promoted = ModelEventRecorded(
        event_id=f"xgboost:v1:PROMOTED:{at}", model="xgboost", version="v1",
        event_time_ms=at, kind=ModelEventKind.PROMOTED, detail="test",
    )  # fmt: skip
    out = Emitter("ensemble")
    handler.on_record(Topic.MODELS_SWAPS.value, 0, "swaps/0", promoted, out)
    sent = _drive(handler, rows, batch=len(rows))  # one batch: the swap falls inside it
    signals = [r for r in sent if not isinstance(r, ModelEventRecorded)]
    xgb = {s.event_time_ms: next(v.version for v in s.votes if v.model == "xgboost")
           for s in signals}  # fmt: skip
    assert {v for t, v in xgb.items() if t < at} == {"v2"}
    assert {v for t, v in xgb.items() if t >= at} == {"v1"}
    loaded = [r for r in sent if isinstance(r, ModelEventRecorded)]
    assert [(e.kind, e.model, e.version, e.event_time_ms) for e in loaded] == [
        (ModelEventKind.LOADED, "xgboost", "v1", at)
    ]
    # a restarted instance serves what the state says, not the registry's index
    state = handler.to_state()
    fresh = _handler(settings)
    fresh.load_state(state)
    assert fresh.stage.versions["xgboost"] == "v1"


def test_a_swap_that_cannot_load_keeps_the_old_sessions() -> None:
    settings = Settings()
    handler = _handler(settings)
    before = dict(handler.stage.versions)
    bad = ModelEventRecorded(
        event_id="xgboost:v99:PROMOTED:1", model="xgboost", version="v99",
        event_time_ms=1, kind=ModelEventKind.PROMOTED, detail="test",
    )  # fmt: skip
    out = Emitter("ensemble")
    handler.on_record(Topic.MODELS_SWAPS.value, 0, "swaps/0", bad, out)
    assert handler.stage.versions == before and not handler.stage.pending
    [failed] = [o.value for o in out.items]
    assert isinstance(failed, ModelEventRecorded)
    assert failed.kind is ModelEventKind.LOAD_FAILED and "v99 is not registered" in failed.detail


def test_a_set_without_reference_is_not_measured() -> None:
    monitor = DriftMonitor(None, DriftConfig(), "no reference: none")
    rows = feature_rows("um_futures_1m_2025", ["BTCUSDT"], "2025-05-21", "2025-05-21T00:30Z")
    assert all(monitor.observe(f, None) is None for f in rows)  # type: ignore[arg-type]
