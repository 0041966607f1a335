"""Supervisor veto rules on ``SignalScored``: every rule evaluated, every reason reported."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.config import BiasConfig, SupervisorPolicy
from streams.contracts.records import SignalScored, SignalSupervised, VetoReason
from streams.stages import SupervisorStage
from streams.stages.ensemble import Probs, model_vote, vote
from streams.stages.supervisor import BiasWindow, SupervisorState, opposition, supervise
from streams.vocabulary import Action, Side
from tests.unit.stages.factories import scored

MODELS = ("xgboost", "lightgbm", "nhits", "patchtst")
EQUAL = dict.fromkeys(MODELS, 0.25)
POLICY = SupervisorPolicy(gate="confidence", bias_window=10, bias_threshold=0.7)
SMALL = BiasConfig(min_samples=10)

SELL_STRONG = (0.9, 0.05, 0.05)
BUY_STRONG = (0.05, 0.05, 0.9)


def _voted(
    symbol: str,
    t: int,
    probs: dict[str, Probs],
    as_of: dict[str, int] | None = None,
    versions: dict[str, str] | None = None,
) -> SignalScored:
    """The ensemble's record of ``probs`` (per model, equal weights) voting at ``t``."""
    ballot = vote(probs, EQUAL)
    votes = tuple(
        model_vote(m, (versions or {}).get(m, "v1"), p, w, 0, (as_of or {}).get(m, t))
        for (m, p), w in zip(probs.items(), ballot.weights, strict=True)
    )
    return SignalScored(
        signal_id=f"{symbol}:{t}", symbol=symbol, event_time_ms=t, feature_version="f1",
        votes=votes, action=ballot.action, confidence=ballot.confidence,
        probabilities=ballot.probs, close=100.0, atr_pct=0.002, volatility=0.001,
    )  # fmt: skip


def _signal(symbol: str, t: int, probs: Probs, models: tuple[str, ...] = MODELS) -> SignalScored:
    return _voted(symbol, t, dict.fromkeys(models, probs))


def _rules(vetoes: tuple[VetoReason, ...]) -> list[str]:
    return [v.rule for v in vetoes]


def test_ring_buffer_counts_and_eviction() -> None:
    w = BiasWindow(4)
    for s in (Side.LONG, Side.LONG, Side.SHORT, Side.LONG):
        w.push(s)
    assert w.share(Side.LONG) == 0.75  # 3 of 4
    w.push(Side.SHORT)  # evicts the first LONG -> L S L S
    assert w.sides() == [Side.LONG, Side.SHORT, Side.LONG, Side.SHORT]
    assert w.share(Side.SHORT) == 0.5
    assert BiasWindow.from_dict(w.to_dict()).sides() == w.sides()


def test_clean_signal_passes() -> None:
    state = SupervisorState(POLICY.bias_window)
    assert supervise(_signal("BTCUSDT", 1000, BUY_STRONG), state, POLICY, MODELS, SMALL) == ()


def test_seed_sell_bias_is_caught_per_symbol_and_overall() -> None:
    state = SupervisorState(POLICY.bias_window)
    # 7 SELL + 3 BUY = 70 % SELL: exactly at the threshold is allowed ("> 70 %").
    outs = [
        supervise(_signal("BTCUSDT", t, SELL_STRONG), state, POLICY, MODELS, SMALL)
        for t in range(7)
    ]
    outs += [
        supervise(_signal("BTCUSDT", 7 + t, BUY_STRONG), state, POLICY, MODELS, SMALL)
        for t in range(3)
    ]
    assert all(o == () for o in outs)
    # 11th signal (t=10) SELL: window t=1..10 = 6 S + 3 B + this S = 7/10 = 70 % -> still ok
    assert supervise(_signal("BTCUSDT", 10, SELL_STRONG), state, POLICY, MODELS, SMALL) == ()
    # t=11..16 SELL: each window still holds the 3 BUYs (t=7,8,9), so 7 S of 10 -> ok.
    # t=17: window t=8..17 = B B + 8 S = 80 % SELL -> veto.
    for t in range(11, 17):
        supervise(_signal("BTCUSDT", t, SELL_STRONG), state, POLICY, MODELS, SMALL)
    out = supervise(_signal("BTCUSDT", 17, SELL_STRONG), state, POLICY, MODELS, SMALL)
    assert _rules(out) == ["ONE_SIDED_SYMBOL", "ONE_SIDED_OVERALL"]
    assert "80.0% of last 10 signals SHORT" in out[0].detail
    # A BUY works against the bias and is not vetoed for it.
    assert supervise(_signal("BTCUSDT", 18, BUY_STRONG), state, POLICY, MODELS, SMALL) == ()


def test_overall_bias_across_symbols_without_symbol_bias() -> None:
    state = SupervisorState(POLICY.bias_window)
    last: tuple[VetoReason, ...] = ()
    # 10 symbols, one SELL each: every symbol window holds 1 signal (< min_samples), overall 10/10.
    for i in range(10):
        last = supervise(_signal(f"S{i}USDT", i, SELL_STRONG), state, POLICY, MODELS, SMALL)
    assert _rules(last) == ["ONE_SIDED_OVERALL"]


def test_bias_needs_min_samples() -> None:
    state = SupervisorState(POLICY.bias_window)
    out = supervise(
        _signal("BTCUSDT", 0, SELL_STRONG), state, POLICY, MODELS, BiasConfig(min_samples=2)
    )
    assert out == ()  # 1 sample at 100 % is not evidence of bias


def test_all_rules_reported_together() -> None:
    state = SupervisorState(POLICY.bias_window)
    t = 1_000_000
    # Three models vote, one of them scored an input 301 s old (> 300 000 ms); weak BUY.
    weak_buy = (0.30, 0.10, 0.60)
    sig = _voted(
        "BTCUSDT", t, {"xgboost": weak_buy, "lightgbm": weak_buy, "nhits": (0.8, 0.1, 0.1)},
        as_of={"nhits": t - 301_000}, versions={"xgboost": "x1", "lightgbm": "l1", "nhits": "n7"},
    )  # fmt: skip
    # BUY = (0.6+0.6+0.1)/3 = 0.4333 ; SELL = (0.3+0.3+0.8)/3 = 0.4667 -> SELL 0.4667
    assert sig.action.value == "SELL"
    out = supervise(sig, state, POLICY, MODELS, SMALL)
    # SELL confidence 0.4667 < 0.65; patchtst missing; nhits stale; 2/3 of weight votes BUY >= 0.5
    assert _rules(out) == ["LOW_CONFIDENCE", "MISSING_MODEL", "STALE_MODEL", "MODEL_DISAGREEMENT"]
    assert "patchtst" in out[1].detail
    assert "nhits@n7 301000 ms old" in out[2].detail
    assert "67% of weight opposes SELL" in out[3].detail


def test_a_vote_without_as_of_is_as_old_as_its_signal() -> None:
    # factories.scored writes votes without as_of_ms (the field is optional in the contract).
    sig = scored(probs=(0.05, 0.05, 0.9))
    assert all(v.as_of_ms is None for v in sig.votes)
    state = SupervisorState(POLICY.bias_window)
    policy = SupervisorPolicy(gate="confidence", bias_window=10, max_model_staleness_ms=1)
    assert supervise(sig, state, policy, ("xgboost", "lightgbm"), SMALL) == ()


def test_opposition_two_against_two() -> None:
    sig = _voted(
        "BTCUSDT", 1, {"xgboost": (0.0, 0.1, 0.9), "lightgbm": (0.0, 0.1, 0.9),
                       "nhits": (0.6, 0.1, 0.3), "patchtst": (0.6, 0.1, 0.3)},
    )  # fmt: skip
    # BUY = (0.9+0.9+0.3+0.3)/4 = 0.6 -> BUY; two SELL voters hold 0.5 of the weight
    assert sig.action is Action.BUY
    assert opposition(sig) == 0.5
    assert opposition(_signal("BTCUSDT", 1, (0.3, 0.4, 0.3))) == 0.0  # HOLD opposes nothing


def test_confidence_exactly_at_minimum_passes() -> None:
    state = SupervisorState(POLICY.bias_window)
    # 0.65 exactly for BUY from every model -> ensemble 0.65 (>= minimum)
    sig = _signal("ETHUSDT", 1, (0.15, 0.20, 0.65))
    assert supervise(sig, state, POLICY, MODELS, SMALL) == ()


def test_hold_only_gets_model_health_rules() -> None:
    state = SupervisorState(POLICY.bias_window)
    out = supervise(
        _signal("ETHUSDT", 1, (0.3, 0.4, 0.3), models=MODELS[:3]), state, POLICY, MODELS, SMALL
    )
    assert _rules(out) == ["MISSING_MODEL"]
    assert state.overall_window().size == 0  # HOLD is not recorded in the bias windows


def test_state_round_trip() -> None:
    state = SupervisorState(POLICY.bias_window)
    for t in range(5):
        supervise(_signal("BTCUSDT", t, SELL_STRONG), state, POLICY, MODELS, SMALL)
    back = SupervisorState.from_dict(state.to_dict())
    assert back.window("BTCUSDT").sides() == [Side.SHORT] * 5
    assert back.overall_window().size == 5


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 12))
def test_window_matches_naive_tail(bits: list[bool], cap: int) -> None:
    w = BiasWindow(cap)
    for b in bits:
        w.push(Side.LONG if b else Side.SHORT)
    tail = bits[-cap:]
    assert w.sides() == [Side.LONG if b else Side.SHORT for b in tail]
    expected = (sum(tail) / len(tail)) if tail else 0.0
    assert abs(w.share(Side.LONG) - expected) < 1e-12


def test_stage_emits_the_vetoes_and_bias_shares_as_a_record_that_round_trips() -> None:
    stage = SupervisorStage(POLICY, MODELS, SMALL)
    state = stage.new_state()
    sig = _signal("BTCUSDT", 3, (0.2, 0.2, 0.6), models=MODELS[:3])
    out = stage.on_signal(state, sig)
    assert out is not None and out.signal is sig and out.vetoed
    assert _rules(out.veto_reasons) == ["LOW_CONFIDENCE", "MISSING_MODEL"]
    assert out.final_action is Action.HOLD
    assert (out.bias.symbol_buy_share, out.bias.overall_window) == (1.0, 1)
    assert SignalSupervised.from_avro(out.to_avro()) == out
    assert out.signal.votes[0].version == "v1"


HEALTH = SupervisorPolicy(gate="confidence", bias_window=40, bias_threshold=0.7)


def test_a_one_sided_stream_leaves_the_signal_against_it_with_its_health_veto_share() -> None:
    """The seed's 99 %-SELL model: the bias rule vetoes the SELLs, the BUY against the bias
    passes, and carries the share of the partition's recent signals vetoed for model health
    (the policy layer sizes it DEFENSIVE, tests/unit/stages/test_policy.py)."""
    stage = SupervisorStage(HEALTH, MODELS, SMALL)
    state = stage.new_state()
    first = stage.on_signal(state, _signal("BTCUSDT", 0, SELL_STRONG))
    assert first is not None and not first.vetoed and first.health_veto_share == 0.0
    reviewed = [stage.on_signal(state, _signal("BTCUSDT", t, SELL_STRONG)) for t in range(1, 60)]
    assert all(r is not None and r.vetoed for r in reviewed[-40:])
    against = stage.on_signal(state, _signal("BTCUSDT", 60, BUY_STRONG))
    assert against is not None and not against.vetoed
    assert against.health_veto_share == 39 / 40  # the window: 39 vetoed SELLs and this BUY
    restored = SupervisorState.from_dict(state.to_dict())
    assert restored.to_dict() == state.to_dict()
    older = {k: v for k, v in state.to_dict().items() if k != "health"}
    assert SupervisorState.from_dict(older).health_window().size == 0  # written before it


def test_gate_vetoes_are_not_model_health() -> None:
    """Low confidence judges one signal's worth, not the models: it does not count."""
    stage = SupervisorStage(HEALTH, MODELS, SMALL)
    state = stage.new_state()
    weak_buy, weak_sell = (0.3, 0.3, 0.4), (0.4, 0.3, 0.3)
    out = [stage.on_signal(state, _signal("BTCUSDT", t, weak_buy if t % 2 else weak_sell))
           for t in range(50)]  # fmt: skip
    assert all(r is not None and _rules(r.veto_reasons) == ["LOW_CONFIDENCE"] for r in out)
    assert all(r is not None and r.health_veto_share == 0.0 for r in out)
    assert state.health_window().size == 40


def test_the_handler_exports_each_partitions_health_veto_share() -> None:
    from streams.agents.base import Emitter
    from streams.agents.supervisor import SupervisorHandler
    from streams.observability.metrics import Metrics, install_metrics

    m = Metrics()
    old = install_metrics(m)
    try:
        handler = SupervisorHandler(SupervisorStage(HEALTH, MODELS, SMALL))
        out = Emitter("supervisor")
        for t in range(60):
            signal = _signal("BTCUSDT", t, SELL_STRONG)
            handler.on_record("signals.ensemble", 3, "ensemble/3", signal, out)
        handler.on_record(
            "signals.ensemble", 3, "ensemble/3", _signal("BTCUSDT", 60, BUY_STRONG), out
        )
    finally:
        install_metrics(old)
    share = m.registry.get_sample_value("qt_model_health_veto_share", {"partition": "3"})
    assert share == 39 / 40  # the last signal's: 39 vetoed SELLs and the BUY that passed
