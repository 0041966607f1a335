"""Ensemble stage: the weighted vote by hand, and the stage on real rows with the real models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts.records import SignalScored
from streams.errors import InvalidInputError, StageError
from streams.stages import EnsembleStage
from streams.stages.ensemble import argmax_action, model_vote, normalised, vote
from streams.stages.features import tabular_of, window_of
from streams.vocabulary import Action
from tests.unit.stages.factories import T0
from tests.unit.stages.sample import feature_rows

EQUAL = {"xgboost": 0.25, "lightgbm": 0.25, "nhits": 0.25, "patchtst": 0.25}
REGISTRY = Path(__file__).resolve().parents[3] / "models" / "registry"

# ----------------------------------------------------------------------------- the vote


def test_seed_map_example_is_hold() -> None:
    # The seed map's example: three models HOLD, PatchTST BUY 0.66.
    probs = {
        "xgboost": (0.25, 0.50, 0.25),
        "lightgbm": (0.25, 0.50, 0.25),
        "nhits": (0.20, 0.59, 0.21),
        "patchtst": (0.04, 0.30, 0.66),
    }
    ballot = vote(probs, EQUAL)
    # SELL = (0.25+0.25+0.20+0.04)/4 = 0.185; HOLD = (0.5+0.5+0.59+0.30)/4 = 0.4725
    # BUY  = (0.25+0.25+0.21+0.66)/4 = 0.3425
    assert ballot.probs == pytest.approx((0.185, 0.4725, 0.3425))
    assert ballot.action is Action.HOLD
    assert ballot.confidence == pytest.approx(0.4725)
    votes = [model_vote(m, "v1", p, 0.25, 0, T0) for m, p in probs.items()]
    assert [v.action for v in votes] == [Action.HOLD] * 3 + [Action.BUY]
    assert votes[3].confidence == pytest.approx(0.66)


def test_unequal_weights_and_renormalisation_over_present_models() -> None:
    # Only two of four models voted; weights 0.25 and 0.75 of the present ones
    # (0.1 / (0.1 + 0.3) = 0.25). BUY = 0.25*0.2 + 0.75*0.8 = 0.65; SELL = 0.25*0.7 + 0 = 0.175
    weights = {"xgboost": 0.1, "lightgbm": 0.3, "nhits": 0.3, "patchtst": 0.3}
    ballot = vote({"xgboost": (0.7, 0.1, 0.2), "lightgbm": (0.0, 0.2, 0.8)}, weights)
    assert ballot.weights == pytest.approx((0.25, 0.75))
    # HOLD = 0.25*0.1 + 0.75*0.2 = 0.175
    assert ballot.probs == pytest.approx((0.175, 0.175, 0.65))
    assert ballot.action is Action.BUY
    assert ballot.confidence == pytest.approx(0.65)


def test_exact_tie_resolves_to_hold() -> None:
    assert argmax_action((0.45, 0.10, 0.45)) is Action.HOLD
    assert argmax_action((0.5, 0.0, 0.5)) is Action.HOLD
    assert argmax_action((0.5, 0.2, 0.3)) is Action.SELL
    assert model_vote("xgboost", "v1", (0.45, 0.10, 0.45), 1.0, 0, T0).action is Action.HOLD


@pytest.mark.parametrize(
    ("probs", "what"),
    [
        ({}, "votes"),
        ({"xgboost": (0.5, 0.5, 0.5)}, "probabilities of xgboost"),
        ({"xgboost": (-0.1, 0.6, 0.5)}, "probabilities of xgboost"),
        ({"xgboost": (float("nan"), 0.5, 0.5)}, "probabilities of xgboost"),
        ({"xgboost": (0.5, 0.5)}, "probabilities of xgboost"),
        ({"gpt": (0.2, 0.6, 0.2)}, "model"),
    ],
)
def test_invalid_inputs_raise_with_context(probs: dict, what: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        vote(probs, EQUAL)
    assert info.value.what == what


def test_zero_weight_only_model_is_rejected() -> None:
    with pytest.raises(InvalidInputError):
        vote({"xgboost": (0.2, 0.6, 0.2)}, {"xgboost": 0.0})


_probs = (
    st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3)
    .filter(lambda p: sum(p) > 1e-3)
    .map(lambda p: (p[0] / sum(p), p[1] / sum(p), 1.0 - p[0] / sum(p) - p[1] / sum(p)))
    .filter(lambda p: p[2] >= 0.0)
)


@given(st.lists(_probs, min_size=1, max_size=4))
def test_vote_is_a_distribution(probs: list[tuple[float, float, float]]) -> None:
    ballot = vote(dict(zip(EQUAL, probs, strict=False)), EQUAL)
    assert sum(ballot.probs) == pytest.approx(1.0)
    assert sum(ballot.weights) == pytest.approx(1.0)
    assert ballot.confidence == max(ballot.probs) or ballot.action is Action.HOLD
    assert min(ballot.probs) <= ballot.confidence <= max(ballot.probs)


def test_normalised_sums_to_one_in_float64_and_leaves_a_zero_row_to_the_vote() -> None:
    row = np.array([0.2, 0.3, 0.5000001], dtype=np.float32)
    p = normalised(row)
    assert abs(sum(p) - 1.0) < 1e-15 and all(isinstance(x, float) for x in p)
    zero = normalised(np.zeros(3, dtype=np.float32))
    with pytest.raises(InvalidInputError):
        vote({"xgboost": zero}, EQUAL)


# ----------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def scorer():  # type: ignore[no-untyped-def]
    if not (REGISTRY / "index.json").is_file():
        pytest.skip("needs a promoted model registry")
    from models.scorer import EnsembleScorer

    return EnsembleScorer.from_registry(REGISTRY)


def test_signals_are_the_vote_on_each_row_and_do_not_depend_on_the_batch(scorer) -> None:  # type: ignore[no-untyped-def]
    rows = feature_rows("BTCUSDT")[:6]
    stage = EnsembleStage(scorer, EQUAL)
    batch = stage.on_features(rows)
    # The agent re-scores a failed batch row by row: the records must be the same bits.
    assert batch == [s for r in rows for s in stage.on_features([r])]
    scores = scorer.score(tabular_of(list(rows)), window_of(list(rows)))
    for i, (row, signal) in enumerate(zip(rows, batch, strict=True)):
        ballot = vote({m: normalised(scores[m][i]) for m in scorer.names}, EQUAL)
        assert signal.signal_id == f"BTCUSDT:{row.event_time_ms}"
        assert (signal.action, signal.confidence) == (ballot.action, ballot.confidence)
        assert signal.probabilities == ballot.probs
        assert [v.model for v in signal.votes] == list(scorer.names)
        assert [v.weight for v in signal.votes] == list(ballot.weights)
        assert all(v.as_of_ms == row.event_time_ms and v.latency_us == 0 for v in signal.votes)
        assert (signal.close, signal.atr_pct) == (row.close, row.atr_pct)
        assert SignalScored.from_avro(signal.to_avro()) == signal
    assert stage.on_features([]) == []


def test_features_of_another_version_are_refused(scorer) -> None:  # type: ignore[no-untyped-def]
    row = replace(feature_rows("BTCUSDT")[0], feature_version="f0-old")
    with pytest.raises(StageError, match="do not match the models'"):
        EnsembleStage(scorer, EQUAL).on_features([row])


@pytest.mark.parametrize(("model", "broken", "n_rows"), [("xgboost", 0, 1), ("lightgbm", 2, 4)])
def test_a_broken_probability_row_fails_its_signal_with_the_model_named(  # type: ignore[no-untyped-def]
    scorer, model: str, broken: int, n_rows: int
) -> None:
    class NanAt:
        """The real scorer, except that one model's row ``broken`` comes out NaN."""

        names, versions, feature_version = scorer.names, scorer.versions, scorer.feature_version

        def score(self, tabular, window):  # type: ignore[no-untyped-def]
            out = scorer.score(tabular, window)
            out[model][broken] = np.nan
            return out

    rows = feature_rows("BTCUSDT")[:n_rows]
    with pytest.raises(StageError) as info:
        EnsembleStage(NanAt(), EQUAL).on_features(rows)
    assert f"BTCUSDT:{rows[broken].event_time_ms}" in str(info.value)
    assert f"probabilities of {model}" in str(info.value)


def test_a_model_without_weight_or_twice_is_refused_at_start(scorer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StageError, match="without a weight"):
        EnsembleStage(scorer, {"xgboost": 1.0})

    class Twice:
        names = ("xgboost", "xgboost")
        feature_version = scorer.feature_version

        @property
        def versions(self) -> dict[str, str]:
            return {"xgboost": "v1"}

        def score(self, tabular, window):  # type: ignore[no-untyped-def]
            raise AssertionError("never scored")

    with pytest.raises(StageError, match="one vote per model"):
        EnsembleStage(Twice(), EQUAL)
