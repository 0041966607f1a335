"""Veto rules of the ``supervisor`` stage.

A veto is data: :func:`supervise` evaluates *every* rule and returns the signal together
with all the reasons it must not be traded (possibly none). Nothing is dropped here; the
strategy stage skips vetoed signals and the report counts them.

Rules (each a pure function returning ``Veto | None``), in report order:

``ONE_SIDED_SYMBOL`` / ``ONE_SIDED_OVERALL``
    More than ``bias_threshold`` (70 %) of the last ``bias_window`` non-HOLD ensemble signals
    (the current one included) are on the current signal's side, per symbol and across all
    symbols. Only the dominant side is vetoed: a BUY arriving in a 99 % SELL stream works
    against the bias. Needs ``BiasConfig.min_samples`` signals before it can fire, so the first
    signals of a run are not vetoed at "100 %" of one sample.
``LOW_CONFIDENCE``
    A BUY/SELL whose ensemble confidence is under ``min_confidence`` (65 %).
``MISSING_MODEL``
    An expected model did not vote.
``STALE_MODEL``
    A model's vote scored an input older than ``max_model_staleness_ms`` before the signal.
``MODEL_DISAGREEMENT``
    At least ``max_disagreement`` of the ensemble weight voted the opposite side
    (see :func:`streams.logic.voting.opposition`); ``>=`` because a 2-against-2 split is
    exactly the "strong disagreement" the rule exists for.

HOLD signals are not trades: only the model-health rules apply to them.

The windows record the *model output* (every non-HOLD ensemble signal, vetoed or not), since
the bias being detected is the models'. "Overall" is across the symbols this worker sees; with
``signals.ensemble`` on N partitions each worker's overall window covers its own symbols.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.config import BiasConfig, SupervisorPolicy
from streams.errors import InvalidInputError
from streams.logic.voting import EnsembleSignal, opposition
from streams.vocabulary import Side, VetoRule, side_of


@dataclass(frozen=True, slots=True)
class Veto:
    """Why a signal must not be traded: the rule that fired and a human-readable detail."""

    rule: VetoRule
    detail: str

    def to_dict(self) -> dict[str, str]:
        """Plain dict for a record."""
        return {"rule": self.rule, "detail": self.detail}


class BiasWindow:
    """Ring buffer of the sides of the last ``capacity`` non-HOLD signals, with running counts.

    ``push`` is O(1); the long count is kept incrementally so the share never needs a scan.
    """

    __slots__ = ("_buf", "_capacity", "_longs", "_next", "_size")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvalidInputError("bias window capacity", capacity, ">= 1")
        self._capacity = capacity
        self._buf: list[int] = [0] * capacity  # 1 = long, 0 = short
        self._next = 0
        self._size = 0
        self._longs = 0

    @property
    def size(self) -> int:
        """Signals currently in the window (<= capacity)."""
        return self._size

    def push(self, side: Side) -> None:
        """Record one non-HOLD signal, evicting the oldest when full."""
        bit = 1 if side is Side.LONG else 0
        if self._size == self._capacity:
            self._longs -= self._buf[self._next]
        else:
            self._size += 1
        self._buf[self._next] = bit
        self._longs += bit
        self._next = (self._next + 1) % self._capacity

    def share(self, side: Side) -> float:
        """Share of the window on ``side`` (0.0 for an empty window)."""
        if self._size == 0:
            return 0.0
        longs = self._longs / self._size
        return longs if side is Side.LONG else 1.0 - longs

    def sides(self) -> list[Side]:
        """Window contents, oldest first."""
        start = (self._next - self._size) % self._capacity
        bits = [self._buf[(start + i) % self._capacity] for i in range(self._size)]
        return [Side.LONG if b else Side.SHORT for b in bits]

    def copy(self) -> BiasWindow:
        """An independent copy (~1 µs; a checkpoint to put back if a signal fails)."""
        other = BiasWindow.__new__(BiasWindow)
        other._capacity, other._buf, other._next = self._capacity, list(self._buf), self._next
        other._size, other._longs = self._size, self._longs
        return other

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (oldest first) for a Faust table."""
        return {"capacity": self._capacity, "sides": [s.value for s in self.sides()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasWindow:
        """Inverse of :meth:`to_dict`."""
        window = cls(int(data["capacity"]))
        for s in data["sides"]:
            window.push(Side(s))
        return window


@dataclass(slots=True)
class SupervisorState:
    """Per-symbol and overall bias windows of one supervisor worker."""

    capacity: int
    per_symbol: dict[str, BiasWindow] = field(default_factory=dict)
    overall: BiasWindow | None = None

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

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {
            "capacity": self.capacity,
            "per_symbol": {s: w.to_dict() for s, w in self.per_symbol.items()},
            "overall": self.overall_window().to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisorState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            capacity=int(data["capacity"]),
            per_symbol={s: BiasWindow.from_dict(w) for s, w in data["per_symbol"].items()},
            overall=BiasWindow.from_dict(data["overall"]),
        )


@dataclass(frozen=True, slots=True)
class SupervisedSignal:
    """A signal and every veto raised against it; tradeable only without vetoes."""

    signal: EnsembleSignal
    vetoes: tuple[Veto, ...]

    @property
    def approved(self) -> bool:
        """True when no rule fired."""
        return not self.vetoes


def bias_veto(
    rule: VetoRule, window: BiasWindow, side: Side, threshold: float, min_samples: int
) -> Veto | None:
    """Veto when ``side`` holds more than ``threshold`` of a window of >= ``min_samples``."""
    if window.size < min_samples:
        return None
    share = window.share(side)
    if share <= threshold:
        return None
    return Veto(rule, f"{share:.1%} of last {window.size} signals {side.value} > {threshold:.0%}")


def confidence_veto(signal: EnsembleSignal, min_confidence: float) -> Veto | None:
    """Veto a BUY/SELL under the minimum confidence."""
    if side_of(signal.action) is None or signal.confidence >= min_confidence:
        return None
    detail = f"confidence {signal.confidence:.4f} < minimum {min_confidence:.4f}"
    return Veto(VetoRule.LOW_CONFIDENCE, detail)


def missing_model_veto(signal: EnsembleSignal, expected: Iterable[str]) -> Veto | None:
    """Veto when an expected model has no vote in the signal."""
    present = {v.model for v in signal.votes}
    missing = sorted(set(expected) - present)
    if not missing:
        return None
    return Veto(VetoRule.MISSING_MODEL, f"no vote from {', '.join(missing)}")


def stale_model_veto(signal: EnsembleSignal, max_staleness_ms: int) -> Veto | None:
    """Veto when a vote scored an input more than ``max_staleness_ms`` older than the signal."""
    stale = [
        f"{v.model}@{v.version} {signal.event_time_ms - v.as_of_ms} ms old"
        for v in signal.votes
        if signal.event_time_ms - v.as_of_ms > max_staleness_ms
    ]
    if not stale:
        return None
    return Veto(VetoRule.STALE_MODEL, f"{'; '.join(stale)} > {max_staleness_ms} ms")


def disagreement_veto(signal: EnsembleSignal, max_disagreement: float) -> Veto | None:
    """Veto when at least ``max_disagreement`` of the weight votes against the ensemble side."""
    against = opposition(signal)
    if side_of(signal.action) is None or against < max_disagreement:
        return None
    return Veto(
        VetoRule.MODEL_DISAGREEMENT, f"{against:.0%} of weight opposes {signal.action.value} "
        f">= {max_disagreement:.0%}"
    )  # fmt: skip


def supervise(
    signal: EnsembleSignal,
    state: SupervisorState,
    policy: SupervisorPolicy,
    expected_models: Iterable[str],
    bias: BiasConfig = BiasConfig(),
) -> SupervisedSignal:
    """Record ``signal`` in the bias windows (mutates ``state``) and evaluate every rule."""
    side = side_of(signal.action)
    vetoes: list[Veto | None] = []
    if side is not None:
        sym_w, all_w = state.window(signal.symbol), state.overall_window()
        sym_w.push(side)
        all_w.push(side)
        th, n = policy.bias_threshold, bias.min_samples
        vetoes.append(bias_veto(VetoRule.ONE_SIDED_SYMBOL, sym_w, side, th, n))
        vetoes.append(bias_veto(VetoRule.ONE_SIDED_OVERALL, all_w, side, th, n))
        vetoes.append(confidence_veto(signal, policy.min_confidence))
    vetoes.append(missing_model_veto(signal, expected_models))
    vetoes.append(stale_model_veto(signal, policy.max_model_staleness_ms))
    vetoes.append(disagreement_veto(signal, policy.max_disagreement))
    return SupervisedSignal(signal, tuple(v for v in vetoes if v is not None))
