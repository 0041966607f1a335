"""Supervisor stage: veto rules over ``SignalScored`` -> ``SignalSupervised``.

The state (:class:`~streams.logic.supervisor.SupervisorState`) holds the per-symbol windows and
one "overall" window per *partition*: in Kafka each supervisor worker sees the symbols of its
partitions, so the runner keeps one state per partition index (see
:func:`streams.stages.partition_for`) and 1 and N partitions are both reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from streams.config import BiasConfig, Settings, SupervisorPolicy
from streams.contracts.records import (
    Action,
    BiasShares,
    Side,
    SignalScored,
    SignalSupervised,
    VetoReason,
)
from streams.logic.supervisor import SupervisorState, Veto, supervise
from streams.logic.voting import EnsembleSignal
from streams.logic.voting import ModelVote as LogicVote


def ensemble_signal(s: SignalScored) -> EnsembleSignal:
    """The logic view of a scored signal (a vote without ``as_of_ms`` is as old as the signal)."""
    votes = tuple(
        LogicVote(
            v.model,
            v.version,
            (v.probabilities[0], v.probabilities[1], v.probabilities[2]),
            s.event_time_ms if v.as_of_ms is None else v.as_of_ms,
        )
        for v in s.votes
    )
    p = s.probabilities
    return EnsembleSignal(
        signal_id=s.signal_id,
        symbol=s.symbol,
        event_time_ms=s.event_time_ms,
        votes=votes,
        weights=tuple(v.weight for v in s.votes),
        probs=(p[0], p[1], p[2]),
        action=s.action,
        confidence=s.confidence,
    )


def veto_reason(v: Veto) -> VetoReason:
    """Contract form of a logic veto."""
    return VetoReason(rule=v.rule, detail=v.detail)


def bias_shares(state: SupervisorState, symbol: str) -> BiasShares:
    """BUY/SELL shares of the symbol's and the overall window after this signal."""
    sym, overall = state.window(symbol), state.overall_window()
    return BiasShares(
        symbol_buy_share=sym.share(Side.LONG),
        symbol_sell_share=sym.share(Side.SHORT),
        symbol_window=sym.size,
        overall_buy_share=overall.share(Side.LONG),
        overall_sell_share=overall.share(Side.SHORT),
        overall_window=overall.size,
    )


class SupervisorStage:
    """Evaluates every veto rule on BUY/SELL signals; HOLD signals stop here (returns None).

    A HOLD has nothing to trade and the bias windows record only BUY/SELL, so forwarding it
    would only cost a record. A vetoed signal *is* emitted, ``vetoed=True`` with its reasons and
    ``final_action=HOLD``, so vetoes stay visible on ``signals.supervised``.
    """

    stage = "supervisor"

    def __init__(
        self,
        policy: SupervisorPolicy,
        expected_models: Iterable[str],
        bias: BiasConfig | None = None,
    ) -> None:
        self.policy = policy
        self.expected_models = tuple(expected_models)
        self.bias = bias or BiasConfig()

    @classmethod
    def from_settings(cls, settings: Settings, expected_models: Iterable[str]) -> SupervisorStage:
        """The stage as the settings configure it, expecting a vote from each loaded model."""
        return cls(settings.supervisor, expected_models, settings.bias)

    def new_state(self) -> SupervisorState:
        """Empty windows of the configured size (one state per partition)."""
        return SupervisorState(self.policy.bias_window)

    def on_signal(self, state: SupervisorState, s: SignalScored) -> SignalSupervised | None:
        """Record ``s`` in the windows (mutates ``state``) and return it with its vetoes."""
        if s.action is Action.HOLD:
            return None
        result = supervise(ensemble_signal(s), state, self.policy, self.expected_models, self.bias)
        reasons = tuple(veto_reason(v) for v in result.vetoes)
        return SignalSupervised(
            signal_id=s.signal_id,
            symbol=s.symbol,
            event_time_ms=s.event_time_ms,
            signal=s,
            vetoed=bool(reasons),
            veto_reasons=reasons,
            bias=bias_shares(state, s.symbol),
            final_action=Action.HOLD if reasons else s.action,
        )
