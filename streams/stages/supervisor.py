"""Supervisor stage: veto rules over ``SignalScored`` -> ``SignalSupervised``.

What it does: a veto is data. :func:`supervise` evaluates *every* rule and returns all the
reasons a signal must not be traded (possibly none); the stage emits a vetoed signal with its
reasons and ``final_action=HOLD``, so vetoes stay visible on ``signals.supervised``. The strategy
stage skips vetoed signals and the report counts them. HOLD signals stop here.

Rules (each a pure function of the record returning ``VetoReason | None``), in report order:

``ONE_SIDED_SYMBOL`` / ``ONE_SIDED_OVERALL``
    More than ``bias_threshold`` (70 %) of the last ``bias_window`` non-HOLD ensemble signals
    (the current one included) are on the current signal's side, per symbol and across all
    symbols. Only the dominant side is vetoed: a BUY arriving in a 99 % SELL stream works
    against the bias. Needs ``BiasConfig.min_samples`` signals before it can fire, so the first
    signals of a run are not vetoed at "100 %" of one sample.
``NO_EDGE`` (``gate="edge"``, the default)
    A BUY/SELL outside the tradeable buckets of the loaded models' gate table: its action and
    probability bucket showed no net-of-cost edge (bootstrap lower bound above zero) in
    walk-forward out-of-fold predictions of the training period (:mod:`streams.stages.edge`).
    No table for the loaded versions and weights: every BUY/SELL is vetoed, with that reason.
    The table is the one of the model set that scored the signal (its votes' versions): after
    a hot swap the signals of the new set are judged by the new set's table from the row the
    ensemble swapped at, read once from the registry (:meth:`SupervisorStage.edge_for`).
``LOW_CONFIDENCE`` (``gate="confidence"``)
    A BUY/SELL whose ensemble confidence is under ``min_confidence`` (65 %).
``MISSING_MODEL``
    An expected model did not vote.
``STALE_MODEL``
    A model's vote scored an input older than ``max_model_staleness_ms`` before the signal.
``MODEL_DISAGREEMENT``
    At least ``max_disagreement`` of the ensemble weight voted the opposite side
    (:func:`opposition`); ``>=`` because a 2-against-2 split is exactly the "strong
    disagreement" the rule exists for.

HOLD signals are not trades: :func:`supervise` applies only the model-health rules to them, and
the stage does not even ask (it returns None for a HOLD).

Event time and state: the rules compare event times only (a vote's ``as_of_ms`` with its
signal's; a vote without one is as old as the signal). The windows
(:class:`SupervisorState`) record the *model output* (every non-HOLD ensemble signal, vetoed or
not), since the bias being detected is the models'. "Overall" is across the symbols one worker
sees: in Kafka each supervisor worker reads the symbols of its partitions, so the runner keeps
one state per partition index (see :func:`streams.stages.partition_for`) and 1 and N
partitions are both reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from streams.config import BiasConfig, Settings, SupervisorPolicy
from streams.contracts.records import (
    BiasShares,
    ModelVote,
    SignalScored,
    SignalSupervised,
    VetoReason,
)
from streams.errors import InvalidInputError
from streams.stages.edge import EdgeGate, edge_veto, gate_from_manifests
from streams.vocabulary import Action, Side, VetoRule, side_of

# ----------------------------------------------------------------------------- state


class BitWindow:
    """Ring buffer of the last ``capacity`` flags, with a running count of the set ones.

    ``push`` is O(1); the count is kept incrementally so the share never needs a scan.
    """

    __slots__ = ("_buf", "_capacity", "_next", "_ones", "_size")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvalidInputError("window capacity", capacity, ">= 1")
        self._capacity = capacity
        self._buf: list[int] = [0] * capacity
        self._next = 0
        self._size = 0
        self._ones = 0

    @property
    def size(self) -> int:
        """Flags currently in the window (<= capacity)."""
        return self._size

    def push_bit(self, bit: bool) -> None:
        """Record one flag, evicting the oldest when full."""
        if self._size == self._capacity:
            self._ones -= self._buf[self._next]
        else:
            self._size += 1
        self._buf[self._next] = int(bit)
        self._ones += int(bit)
        self._next = (self._next + 1) % self._capacity

    def ones_share(self) -> float:
        """Share of the window's flags that are set (0.0 for an empty window)."""
        return self._ones / self._size if self._size else 0.0

    def bits(self) -> list[int]:
        """Window contents, oldest first."""
        start = (self._next - self._size) % self._capacity
        return [self._buf[(start + i) % self._capacity] for i in range(self._size)]

    def copy(self) -> Self:
        """An independent copy (~1 µs; a checkpoint to put back if a signal fails)."""
        other = self.__class__.__new__(self.__class__)
        other._capacity, other._buf, other._next = self._capacity, list(self._buf), self._next
        other._size, other._ones = self._size, self._ones
        return other

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (oldest first) for a Faust table."""
        return {"capacity": self._capacity, "bits": self.bits()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        window = cls(int(data["capacity"]))
        for b in data["bits"]:
            window.push_bit(bool(b))
        return window


class BiasWindow(BitWindow):
    """The sides of the last ``capacity`` non-HOLD signals (a set flag is a long)."""

    __slots__ = ()

    def push(self, side: Side) -> None:
        """Record one non-HOLD signal, evicting the oldest when full."""
        self.push_bit(side is Side.LONG)

    def share(self, side: Side) -> float:
        """Share of the window on ``side`` (0.0 for an empty window)."""
        if self.size == 0:
            return 0.0
        longs = self.ones_share()
        return longs if side is Side.LONG else 1.0 - longs

    def sides(self) -> list[Side]:
        """Window contents, oldest first."""
        return [Side.LONG if b else Side.SHORT for b in self.bits()]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (oldest first) for a Faust table."""
        return {"capacity": self._capacity, "sides": [s.value for s in self.sides()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        window = cls(int(data["capacity"]))
        for s in data["sides"]:
            window.push(Side(s))
        return window


@dataclass(slots=True)
class SupervisorState:
    """Per-symbol and overall bias windows of one supervisor worker (one partition), and which
    of its last BUY/SELL signals were vetoed for model health (:data:`HEALTH_RULES`)."""

    capacity: int
    per_symbol: dict[str, BiasWindow] = field(default_factory=dict)
    overall: BiasWindow | None = None
    health: BitWindow | None = None

    def window(self, symbol: str) -> BiasWindow:
        """The symbol's window, created empty on first use."""
        w = self.per_symbol.get(symbol)
        if w is None:
            w = self.per_symbol[symbol] = BiasWindow(self.capacity)
        return w

    def overall_window(self) -> BiasWindow:
        """The all-symbols window, created empty on first use."""
        if self.overall is None:
            self.overall = BiasWindow(self.capacity)
        return self.overall

    def health_window(self) -> BitWindow:
        """The partition's health-veto flags, created empty on first use."""
        if self.health is None:
            self.health = BitWindow(self.capacity)
        return self.health

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {
            "capacity": self.capacity,
            "per_symbol": {s: w.to_dict() for s, w in self.per_symbol.items()},
            "overall": self.overall_window().to_dict(),
            "health": self.health_window().to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisorState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            capacity=int(data["capacity"]),
            per_symbol={s: BiasWindow.from_dict(w) for s, w in data["per_symbol"].items()},
            overall=BiasWindow.from_dict(data["overall"]),
            # a state written before the health flags starts them empty
            health=BitWindow.from_dict(data["health"]) if "health" in data else None,
        )


# ----------------------------------------------------------------------------- rules

#: Vetoes that say the models are unwell (one-sided, a model missing or stale, the models
#: split), unlike the gate's (no edge, low confidence), which judge one signal's worth. Their
#: share of a partition's recent BUY/SELL signals is the policy layer's veto-rate health input.
HEALTH_RULES: frozenset[VetoRule] = frozenset({
    VetoRule.ONE_SIDED_SYMBOL, VetoRule.ONE_SIDED_OVERALL, VetoRule.MISSING_MODEL,
    VetoRule.STALE_MODEL, VetoRule.MODEL_DISAGREEMENT,
})  # fmt: skip


def opposition(signal: SignalScored) -> float:
    """Weight share of the models whose own vote opposes the ensemble's side.

    0 for a HOLD ensemble (nothing to oppose). A BUY ensemble with two of four equally weighted
    models voting SELL has opposition 0.5.
    """
    side = side_of(signal.action)
    if side is None:
        return 0.0
    return sum(v.weight for v in signal.votes if side_of(v.action) is side.opposite)


def vote_age_ms(signal: SignalScored, v: ModelVote) -> int:
    """How much older the vote's input is than the signal (0 for a vote without ``as_of_ms``)."""
    return 0 if v.as_of_ms is None else signal.event_time_ms - v.as_of_ms


def bias_veto(
    rule: VetoRule, window: BiasWindow, side: Side, threshold: float, min_samples: int
) -> VetoReason | None:
    """Veto when ``side`` holds more than ``threshold`` of a window of >= ``min_samples``."""
    if window.size < min_samples:
        return None
    share = window.share(side)
    if share <= threshold:
        return None
    detail = f"{share:.1%} of last {window.size} signals {side.value} > {threshold:.0%}"
    return VetoReason(rule=rule, detail=detail)


def confidence_veto(signal: SignalScored, min_confidence: float) -> VetoReason | None:
    """Veto a BUY/SELL under the minimum confidence."""
    if side_of(signal.action) is None or signal.confidence >= min_confidence:
        return None
    detail = f"confidence {signal.confidence:.4f} < minimum {min_confidence:.4f}"
    return VetoReason(rule=VetoRule.LOW_CONFIDENCE, detail=detail)


def missing_model_veto(signal: SignalScored, expected: Iterable[str]) -> VetoReason | None:
    """Veto when an expected model has no vote in the signal."""
    present = {v.model for v in signal.votes}
    missing = sorted(set(expected) - present)
    if not missing:
        return None
    return VetoReason(rule=VetoRule.MISSING_MODEL, detail=f"no vote from {', '.join(missing)}")


def stale_model_veto(signal: SignalScored, max_staleness_ms: int) -> VetoReason | None:
    """Veto when a vote scored an input more than ``max_staleness_ms`` older than the signal."""
    stale = [
        f"{v.model}@{v.version} {vote_age_ms(signal, v)} ms old"
        for v in signal.votes
        if vote_age_ms(signal, v) > max_staleness_ms
    ]
    if not stale:
        return None
    detail = f"{'; '.join(stale)} > {max_staleness_ms} ms"
    return VetoReason(rule=VetoRule.STALE_MODEL, detail=detail)


def disagreement_veto(signal: SignalScored, max_disagreement: float) -> VetoReason | None:
    """Veto when at least ``max_disagreement`` of the weight votes against the ensemble side."""
    against = opposition(signal)
    if side_of(signal.action) is None or against < max_disagreement:
        return None
    detail = f"{against:.0%} of weight opposes {signal.action.value} >= {max_disagreement:.0%}"
    return VetoReason(rule=VetoRule.MODEL_DISAGREEMENT, detail=detail)


@dataclass(frozen=True, slots=True)
class EdgeGateLoaded:
    """The gate table the stage applies, or None and why there is none."""

    gate: EdgeGate | None
    problem: str = ""


def gate_veto(
    signal: SignalScored, policy: SupervisorPolicy, edge: EdgeGateLoaded
) -> VetoReason | None:
    """The configured gate's veto: ``NO_EDGE`` (edge gate) or ``LOW_CONFIDENCE``."""
    if policy.gate == "edge":
        return edge_veto(signal, edge.gate, edge.problem)
    return confidence_veto(signal, policy.min_confidence)


def supervise(
    signal: SignalScored,
    state: SupervisorState,
    policy: SupervisorPolicy,
    expected_models: Iterable[str],
    bias: BiasConfig = BiasConfig(),
    edge: EdgeGateLoaded = EdgeGateLoaded(None, "no gate table given"),
) -> tuple[VetoReason, ...]:
    """Record ``signal`` in the bias windows (mutates ``state``); every veto, in rule order."""
    side = side_of(signal.action)
    vetoes: list[VetoReason | None] = []
    if side is not None:
        sym_w, all_w = state.window(signal.symbol), state.overall_window()
        sym_w.push(side)
        all_w.push(side)
        th, n = policy.bias_threshold, bias.min_samples
        vetoes.append(bias_veto(VetoRule.ONE_SIDED_SYMBOL, sym_w, side, th, n))
        vetoes.append(bias_veto(VetoRule.ONE_SIDED_OVERALL, all_w, side, th, n))
        vetoes.append(gate_veto(signal, policy, edge))
    vetoes.append(missing_model_veto(signal, expected_models))
    vetoes.append(stale_model_veto(signal, policy.max_model_staleness_ms))
    vetoes.append(disagreement_veto(signal, policy.max_disagreement))
    reasons = tuple(v for v in vetoes if v is not None)
    if side is not None:
        state.health_window().push_bit(any(r.rule in HEALTH_RULES for r in reasons))
    return reasons


def health_veto_share(state: SupervisorState, min_samples: int) -> float:
    """Share of the partition's last BUY/SELL signals (this one included) vetoed for model
    health; 0.0 until the window holds ``min_samples`` of them, as the bias rule waits."""
    window = state.health_window()
    return window.ones_share() if window.size >= min_samples else 0.0


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


def load_edge_gate(
    registry: Path, versions: Mapping[str, str] | None, weights: Mapping[str, float]
) -> EdgeGateLoaded:
    """The gate table the manifests of ``versions`` carry (reads the registry)."""
    if versions is None:
        return EdgeGateLoaded(None, "the loaded model versions are unknown")
    from models.registry import gate_tables

    gate, problem = gate_from_manifests(gate_tables(registry, dict(versions)), versions, weights)
    return EdgeGateLoaded(gate, problem)


#: Reads the gate table of a model set (``{model: version}``).
GateSource = Callable[[Mapping[str, str]], EdgeGateLoaded]


# ----------------------------------------------------------------------------- stage


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
        edge: EdgeGateLoaded | None = None,
        gates: GateSource | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.expected_models = tuple(expected_models)
        self.bias = bias or BiasConfig()
        self.edge = edge or EdgeGateLoaded(None, "no gate table given")
        """The table of ``versions`` (the startup set); every signal's without ``gates``."""
        self.gates = gates
        """Reads the table of another model set (a signal of a swapped-in set)."""
        self._tables: dict[tuple[tuple[str, str], ...], EdgeGateLoaded] = {}
        if versions is not None:
            self._tables[tuple(sorted(versions.items()))] = self.edge

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        expected_models: Iterable[str],
        versions: Mapping[str, str] | None = None,
    ) -> SupervisorStage:
        """The stage as the settings configure it, expecting a vote from each loaded model.

        With the edge gate, the table comes from the manifests of ``versions`` (the loaded
        models) in ``settings.registry_dir``.
        """
        if settings.supervisor.gate != "edge":
            return cls(settings.supervisor, expected_models, settings.bias)
        registry, weights = settings.registry_dir, settings.ensemble_weights

        def gates(wanted: Mapping[str, str]) -> EdgeGateLoaded:
            return load_edge_gate(registry, wanted, weights)

        edge = load_edge_gate(registry, versions, weights)
        return cls(settings.supervisor, expected_models, settings.bias, edge, gates, versions)

    def edge_for(self, signal: SignalScored) -> EdgeGateLoaded:
        """The gate table of the model set whose votes made ``signal`` (read once per set).

        A signal carries the version of every vote, and the ensemble swaps at a row's event
        time, so the table follows the swap at the same row in every run. A set whose table
        cannot be read has none: its BUY/SELL are vetoed ``NO_EDGE`` with the reason.
        """
        if self.gates is None:
            return self.edge
        key = tuple(sorted((v.model, v.version) for v in signal.votes))
        table = self._tables.get(key)
        if table is None:
            try:
                table = self.gates(dict(key))
            except Exception as exc:  # a registry without that version: no evidence, say so
                table = EdgeGateLoaded(None, f"gate table not read: {exc}")
            self._tables[key] = table
        return table

    def new_state(self) -> SupervisorState:
        """Empty windows of the configured size (one state per partition)."""
        return SupervisorState(self.policy.bias_window)

    def on_signal(self, state: SupervisorState, s: SignalScored) -> SignalSupervised | None:
        """Record ``s`` in the windows (mutates ``state``) and return it with its vetoes."""
        if s.action is Action.HOLD:
            return None
        edge = self.edge_for(s)
        reasons = supervise(s, state, self.policy, self.expected_models, self.bias, edge)
        return SignalSupervised(
            signal_id=s.signal_id,
            symbol=s.symbol,
            event_time_ms=s.event_time_ms,
            signal=s,
            vetoed=bool(reasons),
            veto_reasons=reasons,
            bias=bias_shares(state, s.symbol),
            final_action=Action.HOLD if reasons else s.action,
            health_veto_share=health_veto_share(state, self.bias.min_samples),
        )
