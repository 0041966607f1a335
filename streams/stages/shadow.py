"""Shadow scoring on the stream: a candidate model set votes beside the champion, never trades.

A retrain's ``SHADOW_STARTED`` records (one per candidate model, all at the same event time,
``QT_PROMOTION__SHADOW=stream``) name the candidate set. From that event time on, every feature
row is scored by the champion (the served set, swapped like the ensemble stage's) and by the
candidate; each set's *would-be decision* is its ensemble vote where its own gate table's bucket
is tradeable, else HOLD (the supervisor's ``NO_EDGE`` rule, :func:`would_do`). The row waits,
*open*, for the row one label horizon later (the candidate gate's ``horizon_bars``), which settles
it: forward return ``close[t+h] / close[t] - 1`` and each decision's net return after one round
trip of costs (:func:`models.edge.net_returns`), a :class:`ShadowScored` record on
``signals.shadow``. A row whose bar h later never comes (a gap) is dropped, as the training labels
drop it. The promotion stage (:mod:`streams.agents.promotion`) tallies the records and decides.

The shadow ends at the event time of the gate's decision on it (``PROMOTED`` /
``PROMOTION_REFUSED``), or of a newer ``SHADOW_STARTED`` (one shadow at a time); rows already open
are still settled. Records a shadow that arrives late (live: the trainer took minutes) could
have scored start at the next row, as a late hot swap does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from models.edge import net_returns
from streams.contracts.records import (
    FeaturesComputed,
    ModelEventRecorded,
    ModelVote,
    ShadowScored,
    SignalScored,
)
from streams.stages.edge import EdgeGate, edge_veto
from streams.stages.ensemble import EnsembleStage
from streams.vocabulary import CLASSES, Action, ModelEventKind

log = logging.getLogger(__name__)

BAR_MS = 60_000
#: The gate's verdicts: a shadow ends at the event time of one on a member of its candidate.
DECISIONS = (ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED)
#: Builds the stage scoring a set ``{model: version}`` and reads that set's gate table.
SetLoader = Callable[[Mapping[str, str]], EnsembleStage]
GateReader = Callable[[Mapping[str, str]], tuple[EdgeGate | None, str]]


def shadow_id(started_ms: int) -> str:
    """A shadow's id, from its cause: the event time of its ``SHADOW_STARTED`` records."""
    return f"shadow:{started_ms}"


def would_do(signal: SignalScored, gate: EdgeGate | None) -> Action:
    """A set's would-be decision: its vote where its gate's bucket is tradeable, else HOLD
    (the supervisor's ``NO_EDGE`` rule; no table: HOLD)."""
    return signal.action if edge_veto(signal, gate, "") is None else Action.HOLD


def decision_return(action: Action, forward_return: float, cost: float) -> float:
    """Net return of acting on ``action`` over the horizon (0 for HOLD)."""
    import numpy as np

    a = np.array([CLASSES.index(action)], dtype=np.int64)
    return float(net_returns(a, np.array([forward_return]), cost)[0])


@dataclass(frozen=True)
class OpenRow:
    """A scored row waiting for the bar one horizon later."""

    decided_ms: int
    close: float
    volatility: float
    votes: tuple[ModelVote, ...]
    candidate: tuple[Action, float]
    champion: tuple[Action, float]
    champion_versions: Mapping[str, str]

    def to_state(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "decided_ms": self.decided_ms, "close": self.close, "volatility": self.volatility,
            "votes": [v.to_avro() for v in self.votes],
            "candidate": [self.candidate[0].value, self.candidate[1]],
            "champion": [self.champion[0].value, self.champion[1]],
            "champion_versions": dict(self.champion_versions),
        }  # fmt: skip

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> OpenRow:
        """Inverse of :meth:`to_state`."""
        return cls(
            decided_ms=int(d["decided_ms"]), close=float(d["close"]),
            volatility=float(d["volatility"]),
            votes=tuple(ModelVote.from_avro(v) for v in d["votes"]),
            candidate=(Action(d["candidate"][0]), float(d["candidate"][1])),
            champion=(Action(d["champion"][0]), float(d["champion"][1])),
            champion_versions=dict(d["champion_versions"]),
        )  # fmt: skip


@dataclass
class ShadowRun:
    """The candidate set being shadow-scored, from ``started_ms`` until ``ends_ms``."""

    started_ms: int
    candidate: dict[str, str]
    causes: list[str]
    ends_ms: int | None = None

    @property
    def shadow_id(self) -> str:
        """See :func:`shadow_id`."""
        return shadow_id(self.started_ms)

    def covers(self, t: int) -> bool:
        """Whether a row at event time ``t`` is shadow-scored."""
        return t >= self.started_ms and (self.ends_ms is None or t < self.ends_ms)


@dataclass
class ShadowStage:
    """Scores rows with both sets while a shadow runs; settles open rows at the horizon."""

    champion: EnsembleStage
    load_set: SetLoader
    read_gate: GateReader
    run: ShadowRun | None = None
    open_rows: dict[str, list[OpenRow]] = field(default_factory=dict)
    _candidate: EnsembleStage | None = None
    _gates: dict[tuple[tuple[str, str], ...], tuple[EdgeGate | None, str]] = field(
        default_factory=dict
    )

    # -- model events ---------------------------------------------------------------------------
    def on_model_event(self, event: ModelEventRecorded) -> None:
        """A swap (the champion changes at its event time), a shadow's start or its end."""
        self.champion.on_model_event(event)
        self.champion.events = []  # the ensemble stage answers swaps on models.events
        run = self.run
        if event.kind is ModelEventKind.SHADOW_STARTED:
            if run is not None and run.started_ms == event.event_time_ms:
                if event.event_id not in run.causes:  # another member of the same set
                    run.candidate[event.model] = event.version
                    run.causes.append(event.event_id)
                    self._candidate = None
                return
            if run is not None and run.ends_ms is None:
                run.ends_ms = event.event_time_ms
            self.run = ShadowRun(event.event_time_ms, {event.model: event.version},
                                 [event.event_id])  # fmt: skip
            self._candidate = None
            log.info("shadow %s: %s@%s", self.run.shadow_id, event.model, event.version)
        elif (event.kind in DECISIONS and run is not None and run.ends_ms is None
              and run.candidate.get(event.model) == event.version):  # fmt: skip
            run.ends_ms = max(event.event_time_ms, run.started_ms)
            log.info("shadow %s ends at %d (%s)", run.shadow_id, run.ends_ms, event.kind.value)

    # -- rows -----------------------------------------------------------------------------------
    def on_features(self, row: FeaturesComputed) -> list[ShadowScored]:
        """The records ``row`` settles, then ``row`` itself scored if a shadow covers it."""
        settled = self._settle(row)
        run = self.run
        if run is not None and run.covers(row.event_time_ms):
            opened = self._score(run, row)
            if opened is not None:
                self.open_rows.setdefault(row.symbol, []).append(opened)
        return settled

    def _horizon_and_cost(self) -> tuple[int, float] | None:
        gate = self._gate(self.run.candidate)[0] if self.run else None
        return None if gate is None else (gate.horizon_bars * BAR_MS, gate.round_trip_cost)

    def _settle(self, row: FeaturesComputed) -> list[ShadowScored]:
        rows = self.open_rows.get(row.symbol)
        if not rows or self.run is None:
            return []
        horizon_cost = self._horizon_and_cost()
        if horizon_cost is None:
            return []
        horizon, cost = horizon_cost
        out = []
        while rows and rows[0].decided_ms + horizon <= row.event_time_ms:
            r = rows.pop(0)
            if r.decided_ms + horizon == row.event_time_ms:  # else: the bar h later is missing
                out.append(self._settled(r, row, cost))
        if not rows:
            del self.open_rows[row.symbol]
        return out

    def _settled(self, r: OpenRow, row: FeaturesComputed, cost: float) -> ShadowScored:
        assert self.run is not None
        forward = row.close / r.close - 1.0
        return ShadowScored(
            shadow_id=self.run.shadow_id, symbol=row.symbol, event_time_ms=row.event_time_ms,
            decided_ms=r.decided_ms, candidate=dict(self.run.candidate),
            champion=dict(r.champion_versions), votes=r.votes,
            candidate_action=r.candidate[0], candidate_confidence=r.candidate[1],
            champion_action=r.champion[0], champion_confidence=r.champion[1],
            volatility=r.volatility, forward_return=forward, round_trip_cost=cost,
            candidate_pnl=decision_return(r.candidate[0], forward, cost),
            champion_pnl=decision_return(r.champion[0], forward, cost),
        )  # fmt: skip

    def _score(self, run: ShadowRun, row: FeaturesComputed) -> OpenRow | None:
        candidate = self._candidate_stage(run)
        if candidate is None:
            return None
        champ = self.champion.on_features([row])[0]
        cand = candidate.on_features([row])[0]
        champ_gate = self._gate(self.champion.versions)[0]
        cand_gate = self._gate(run.candidate)[0]
        return OpenRow(
            decided_ms=row.event_time_ms, close=row.close, volatility=row.volatility,
            votes=cand.votes,
            candidate=(would_do(cand, cand_gate), cand.confidence),
            champion=(would_do(champ, champ_gate), champ.confidence),
            champion_versions=dict(self.champion.versions),
        )  # fmt: skip

    def _candidate_stage(self, run: ShadowRun) -> EnsembleStage | None:
        """The candidate's scorer, loaded on its first row (None, once logged, if it cannot be:
        a set without a gate table or whose artifacts do not load is not shadow-scored)."""
        if self._candidate is not None:
            return self._candidate
        gate, problem = self._gate(run.candidate)
        try:
            if gate is None:
                raise RuntimeError(f"no gate table: {problem}")
            self._candidate = self.load_set(run.candidate)
        except Exception as exc:  # a broken candidate never stops the stage
            log.warning("shadow %s not scored: %s", run.shadow_id, exc)
            run.ends_ms = run.started_ms
            return None
        return self._candidate

    def _gate(self, versions: Mapping[str, str]) -> tuple[EdgeGate | None, str]:
        key = tuple(sorted(versions.items()))
        if key not in self._gates:
            self._gates[key] = self.read_gate(versions)
        return self._gates[key]

    # -- state ----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The run and the open rows (the scorers are reloaded from the registry)."""
        return {
            "run": asdict(self.run) if self.run else None,
            "open": {s: [r.to_state() for r in rows] for s, rows in self.open_rows.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        run = data.get("run")
        self.run = ShadowRun(**run) if run else None
        self._candidate = None
        self.open_rows = {
            s: [OpenRow.from_state(r) for r in rows] for s, rows in data.get("open", {}).items()
        }
