"""Weighted vote: hand-computed expectations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import InvalidInputError
from streams.logic.voting import EnsembleSignal, ModelVote, argmax_action, opposition, vote
from streams.vocabulary import Action

EQUAL = {"xgboost": 0.25, "lightgbm": 0.25, "nhits": 0.25, "patchtst": 0.25}


def _v(model: str, probs: tuple[float, float, float], as_of: int = 0) -> ModelVote:
    return ModelVote(model, "v1", probs, as_of)


def test_seed_map_example_is_hold() -> None:
    # The seed map's example: three models HOLD, PatchTST BUY 0.66.
    votes = [
        _v("xgboost", (0.25, 0.50, 0.25)),
        _v("lightgbm", (0.25, 0.50, 0.25)),
        _v("nhits", (0.20, 0.59, 0.21)),
        _v("patchtst", (0.04, 0.30, 0.66)),
    ]
    sig = vote("BTCUSDT:1", "BTCUSDT", 1, votes, EQUAL)
    # SELL = (0.25+0.25+0.20+0.04)/4 = 0.185; HOLD = (0.5+0.5+0.59+0.30)/4 = 0.4725
    # BUY  = (0.25+0.25+0.21+0.66)/4 = 0.3425
    assert sig.probs == pytest.approx((0.185, 0.4725, 0.3425))
    assert sig.action is Action.HOLD
    assert sig.confidence == pytest.approx(0.4725)
    assert [v.action for v in sig.votes] == [Action.HOLD] * 3 + [Action.BUY]
    assert sig.votes[3].confidence == pytest.approx(0.66)


def test_unequal_weights_and_renormalisation_over_present_models() -> None:
    # Only two of four models voted; weights 0.25 and 0.75 of the present ones
    # (0.1 / (0.1 + 0.3) = 0.25). BUY = 0.25*0.2 + 0.75*0.8 = 0.65; SELL = 0.25*0.7 + 0 = 0.175
    weights = {"xgboost": 0.1, "lightgbm": 0.3, "nhits": 0.3, "patchtst": 0.3}
    sig = vote(
        "s",
        "ETHUSDT",
        5,
        [_v("xgboost", (0.7, 0.1, 0.2)), _v("lightgbm", (0.0, 0.2, 0.8))],
        weights,
    )
    assert sig.weights == pytest.approx((0.25, 0.75))
    # HOLD = 0.25*0.1 + 0.75*0.2 = 0.175
    assert sig.probs == pytest.approx((0.175, 0.175, 0.65))
    assert sig.action is Action.BUY
    assert sig.confidence == pytest.approx(0.65)


def test_exact_tie_resolves_to_hold() -> None:
    assert argmax_action((0.45, 0.10, 0.45)) is Action.HOLD
    assert argmax_action((0.5, 0.0, 0.5)) is Action.HOLD
    assert argmax_action((0.5, 0.2, 0.3)) is Action.SELL


def test_opposition_two_against_two() -> None:
    votes = [
        _v("xgboost", (0.0, 0.1, 0.9)),
        _v("lightgbm", (0.0, 0.1, 0.9)),
        _v("nhits", (0.6, 0.1, 0.3)),
        _v("patchtst", (0.6, 0.1, 0.3)),
    ]
    sig = vote("s", "BTCUSDT", 1, votes, EQUAL)
    # BUY = (0.9+0.9+0.3+0.3)/4 = 0.6 -> BUY; two SELL voters hold 0.5 of the weight
    assert sig.action is Action.BUY
    assert opposition(sig) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("votes", "what"),
    [
        ([], "votes"),
        ([_v("xgboost", (0.5, 0.5, 0.5))], "probabilities of xgboost"),
        ([_v("xgboost", (-0.1, 0.6, 0.5))], "probabilities of xgboost"),
        ([_v("gpt", (0.2, 0.6, 0.2))], "model"),
        ([_v("xgboost", (0.2, 0.6, 0.2)), _v("xgboost", (0.2, 0.6, 0.2))], "votes"),
    ],
)
def test_invalid_inputs_raise_with_context(votes: list[ModelVote], what: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        vote("s", "BTCUSDT", 1, votes, EQUAL)
    assert info.value.what == what


def test_zero_weight_only_model_is_rejected() -> None:
    with pytest.raises(InvalidInputError):
        vote("s", "B", 1, [_v("xgboost", (0.2, 0.6, 0.2))], {"xgboost": 0.0})


_probs = (
    st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3)
    .filter(lambda p: sum(p) > 1e-3)
    .map(lambda p: (p[0] / sum(p), p[1] / sum(p), 1.0 - p[0] / sum(p) - p[1] / sum(p)))
    .filter(lambda p: p[2] >= 0.0)
)


@given(st.lists(_probs, min_size=1, max_size=4))
def test_vote_is_a_distribution_and_round_trips(probs: list[tuple[float, float, float]]) -> None:
    models = list(EQUAL)[: len(probs)]
    sig = vote("s", "BTCUSDT", 1, [_v(m, p) for m, p in zip(models, probs, strict=True)], EQUAL)
    assert sum(sig.probs) == pytest.approx(1.0)
    assert sig.confidence == max(sig.probs) or sig.action is Action.HOLD
    assert min(sig.probs) <= sig.confidence <= max(sig.probs)
    assert EnsembleSignal.from_dict(sig.to_dict()) == sig
