"""The promotion gate: a candidate model set replaces the champion only on shadow evidence.

Shadow scoring (:func:`shadow_score`): both sets vote on the *same* rows, the candidate's
held-back block (after its training data, never seen by its final fit), and each set trades
only where its own gate table (``models/edge.py``) says so; a row's decision PnL is the net
return of that action at the label horizon after the paper venue's round-trip costs, 0 where the
set stands aside. Nothing here reads the evaluation window.

The rule (:func:`decide`), every condition reported with its figures:

* at least ``min_decisions`` candidate decisions on the shadow rows;
* the candidate beats always-HOLD: bootstrap lower bound of its mean decision PnL per row > 0;
* the candidate beats the champion: lower bound of the mean per-row PnL difference > 0
  (a paired moving-block bootstrap, the same event-time blocks for both);
* its signal balance stays within the supervisor's bias limit (share of one side <= limit).

A champion trained on data that covers the shadow rows is scored in-sample there, which favours
it: the gate errs towards keeping the champion. The decision becomes ``models.events`` records
(``SHADOW_SCORED`` per set, then ``PROMOTED`` or ``PROMOTION_REFUSED``), which ``models train
--promote`` and ``models shadow`` append to ``<registry>/events.jsonl`` (and produce to the topic
when a broker is configured).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.edge import block_bootstrap_ci, block_ids, net_returns
from streams.config import PromotionRule, Settings
from streams.contracts.records import ModelEventRecorded, ShadowScored
from streams.stages.edge import EdgeGate, lookup
from streams.vocabulary import CLASSES, Action, ModelEventKind

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True)
class ShadowScore:
    """One model set's decisions on the shadow rows."""

    versions: Mapping[str, str]
    rows: int
    decisions: int
    buy_share: float
    """Share of BUY among the decisions (0.5 when there is none)."""
    mean_pnl: float
    """Mean decision PnL per shadow row (0 for rows where the set stood aside)."""
    lower: float
    upper: float

    def describe(self) -> str:
        """One line for a report or an event detail."""
        sets = ", ".join(f"{m}@{v}" for m, v in sorted(self.versions.items()))
        return (
            f"{sets}: {self.decisions} decisions on {self.rows} rows, BUY share "
            f"{self.buy_share:.0%}, mean PnL/row {self.mean_pnl:+.5%} "
            f"CI [{self.lower:+.5%}, {self.upper:+.5%}]"
        )


def gated_actions(gate: EdgeGate | None, action: IntArray, prob: FloatArray,
                  volatility: FloatArray) -> IntArray:  # fmt: skip
    """The actions a set takes: its vote where its gate's bucket is tradeable, else HOLD."""
    hold = CLASSES.index(Action.HOLD)
    out = np.full(len(action), hold, dtype=np.int64)
    if gate is None:
        return out
    for i, a in enumerate(action):
        if a == hold:
            continue
        bucket = lookup(gate, CLASSES[int(a)], float(prob[i]), float(volatility[i]))
        if bucket is not None and bucket.tradeable:
            out[i] = a
    return out


def decision_pnl(actions: IntArray, fwd_return: FloatArray, cost: float) -> FloatArray:
    """Per-row PnL of the actions (0 for HOLD)."""
    return net_returns(actions, fwd_return, cost)


def shadow_score(
    versions: Mapping[str, str], actions: IntArray, pnl: FloatArray, blocks: IntArray,
    rule: PromotionRule,
) -> ShadowScore:  # fmt: skip
    """Bootstrap the mean per-row decision PnL of one set."""
    hold = CLASSES.index(Action.HOLD)
    acted = actions != hold
    n = int(acted.sum())
    buys = int((actions == CLASSES.index(Action.BUY)).sum())
    lower, upper = block_bootstrap_ci(pnl, blocks, rule.n_boot, rule.ci, rule.seed)
    return ShadowScore(
        versions=dict(versions), rows=len(pnl), decisions=n,
        buy_share=buys / n if n else 0.5, mean_pnl=float(pnl.mean()), lower=lower, upper=upper,
    )  # fmt: skip


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict with its numbers."""

    promote: bool
    reasons: tuple[str, ...]
    """Every failed condition (empty when promoted)."""
    candidate: ShadowScore
    champion: ShadowScore
    diff_lower: float
    diff_upper: float

    def detail(self) -> str:
        """The event detail: verdict, both scores and the paired difference."""
        verdict = "promote" if self.promote else "refuse: " + "; ".join(self.reasons)
        return (
            f"{verdict} | candidate {self.candidate.describe()} | champion "
            f"{self.champion.describe()} | candidate - champion CI "
            f"[{self.diff_lower:+.5%}, {self.diff_upper:+.5%}]"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form for a report."""
        from dataclasses import asdict

        return asdict(self)


def decide(
    candidate: ShadowScore, champion: ShadowScore, cand_pnl: FloatArray, champ_pnl: FloatArray,
    blocks: IntArray, rule: PromotionRule, bias_limit: float,
) -> PromotionDecision:  # fmt: skip
    """The promotion rule (module doc) on per-row PnL aligned on the same shadow rows."""
    lo, hi = block_bootstrap_ci(cand_pnl - champ_pnl, blocks, rule.n_boot, rule.ci, rule.seed)
    return verdict(candidate, champion, lo, hi, rule, bias_limit)


def verdict(
    candidate: ShadowScore, champion: ShadowScore, diff_lower: float, diff_upper: float,
    rule: PromotionRule, bias_limit: float,
) -> PromotionDecision:  # fmt: skip
    """Every condition of the rule on both sets' scores and their paired difference's interval."""
    lo, hi = diff_lower, diff_upper
    reasons = []
    if candidate.decisions < rule.min_decisions:
        reasons.append(f"{candidate.decisions} shadow decisions < {rule.min_decisions}")
    if candidate.lower <= 0.0:
        reasons.append(f"does not beat always-HOLD (lower bound {candidate.lower:+.5%} <= 0)")
    if lo <= 0.0:
        reasons.append(f"does not beat the champion (lower bound {lo:+.5%} <= 0)")
    side_share = max(candidate.buy_share, 1.0 - candidate.buy_share)
    if candidate.decisions and side_share > bias_limit:
        reasons.append(f"one-sided: {side_share:.0%} of decisions on one side > {bias_limit:.0%}")
    return PromotionDecision(not reasons, tuple(reasons), candidate, champion, lo, hi)


@dataclass
class ShadowTally:
    """A stream shadow's running totals (``streams/stages/shadow.py``): per event-time block
    its rows and both sets' PnL sums, and each set's decisions. The block bootstrap needs no
    more (:func:`models.edge.block_sums_ci`), so the tally stays small however long it runs."""

    candidate: dict[str, str]
    champion: dict[str, str]
    started_ms: int
    blocks: dict[int, list[float]] = field(default_factory=dict)
    """Block (decision time // block length) -> [rows, candidate PnL sum, champion PnL sum]."""
    decisions: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """Candidate decisions, candidate BUYs, champion decisions, champion BUYs."""

    def add(self, block: int, cand: Action, cand_pnl: float, champ: Action, champ_pnl: float
            ) -> None:  # fmt: skip
        """One settled row."""
        totals = self.blocks.setdefault(block, [0.0, 0.0, 0.0])
        totals[0] += 1.0
        totals[1] += cand_pnl
        totals[2] += champ_pnl
        for i, action in ((0, cand), (2, champ)):
            if action is not Action.HOLD:
                self.decisions[i] += 1
                self.decisions[i + 1] += action is Action.BUY

    def count(self, row: ShadowScored, block_ms: int) -> None:
        """One settled row of ``signals.shadow`` in its ``block_ms`` block (the champion as the
        row names it: a swap during the shadow changes it)."""
        self.champion = dict(row.champion)
        self.add(row.decided_ms // block_ms, row.candidate_action, row.candidate_pnl,
                 row.champion_action, row.champion_pnl)  # fmt: skip

    @property
    def candidate_decisions(self) -> int:
        """How many rows the candidate would have traded."""
        return self.decisions[0]

    def decide(self, rule: PromotionRule, bias_limit: float) -> PromotionDecision:
        """The rule (:func:`verdict`) on the totals so far."""
        from models.edge import block_sums_ci

        keys = sorted(self.blocks)
        table = np.array([self.blocks[k] for k in keys], dtype=np.float64).reshape(-1, 3)
        counts, cand, champ = table[:, 0], table[:, 1], table[:, 2]
        rows = int(counts.sum())

        def score(versions: Mapping[str, str], sums: FloatArray, n: int, buys: int
                  ) -> ShadowScore:  # fmt: skip
            lower, upper = block_sums_ci(sums, counts, rule.n_boot, rule.ci, rule.seed)
            return ShadowScore(
                versions=dict(versions), rows=rows, decisions=n,
                buy_share=buys / n if n else 0.5,
                mean_pnl=float(sums.sum() / rows) if rows else 0.0, lower=lower, upper=upper,
            )  # fmt: skip

        c_n, c_buys, h_n, h_buys = self.decisions
        lo, hi = block_sums_ci(cand - champ, counts, rule.n_boot, rule.ci, rule.seed)
        candidate = score(self.candidate, cand, c_n, c_buys)
        champion = score(self.champion, champ, h_n, h_buys)
        return verdict(candidate, champion, lo, hi, rule, bias_limit)

    def to_state(self) -> dict[str, Any]:
        """JSON form (stage state)."""
        return {"candidate": self.candidate, "champion": self.champion,
                "started_ms": self.started_ms, "decisions": self.decisions,
                "blocks": [[k, *v] for k, v in sorted(self.blocks.items())]}  # fmt: skip

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> ShadowTally:
        """Inverse of :meth:`to_state`."""
        return cls(
            candidate=dict(data["candidate"]), champion=dict(data["champion"]),
            started_ms=int(data["started_ms"]), decisions=[int(x) for x in data["decisions"]],
            blocks={int(b[0]): [float(x) for x in b[1:]] for b in data["blocks"]},
        )  # fmt: skip


def decision_event_id(model: str, version: str, kind: ModelEventKind, event_time_ms: int) -> str:
    """``<model>:<version>:<kind>:<event time>``: a decision record's id, from its cause."""
    return f"{model}:{version}:{kind.value}:{event_time_ms}"


def decision_events(decision: PromotionDecision, event_time_ms: int) -> list[ModelEventRecorded]:
    """``SHADOW_SCORED``, then ``PROMOTED``/``PROMOTION_REFUSED``, for each model the candidate
    swaps in (the members it shares with the champion are not candidates)."""
    kind = ModelEventKind.PROMOTED if decision.promote else ModelEventKind.PROMOTION_REFUSED
    events = []
    champion = decision.champion.versions
    swapped = {m: v for m, v in decision.candidate.versions.items() if champion.get(m) != v}
    for model, version in sorted(swapped.items()):
        for k, metric_name, metric, detail in (
            (ModelEventKind.SHADOW_SCORED, "shadow_mean_pnl_lower", decision.candidate.lower,
             decision.candidate.describe()),
            (kind, "shadow_pnl_diff_lower", decision.diff_lower, decision.detail()),
        ):  # fmt: skip
            events.append(
                ModelEventRecorded(
                    event_id=decision_event_id(model, version, k, event_time_ms),
                    model=model,
                    version=version,
                    event_time_ms=event_time_ms,
                    kind=k,
                    detail=detail,
                    metric_name=metric_name,
                    metric=float(metric),
                )
            )
    return events


def read_events(registry: Path) -> list[ModelEventRecorded]:
    """The registry's history, ``<registry>/events.jsonl``, oldest first.

    A line written before a field existed gets the field's default; a line that does not parse
    (torn by a crash in the middle of its write) is skipped with a warning: its record is made
    again by whatever made it.
    """
    path = registry / EVENTS_FILE
    if not path.is_file():
        return []
    defaults = {f.name: f.default for f in fields(ModelEventRecorded) if f.default is not MISSING}
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(ModelEventRecorded.from_avro({**defaults, **json.loads(line)}))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s line %d is not a model event, skipped: %s", path, number, exc)
    return out


def append_events(registry: Path, events: list[ModelEventRecorded]) -> Path:
    """Append the events to ``<registry>/events.jsonl`` (the registry's own history); an event
    whose id is there already (written before a crash, then made again) is not added twice."""
    path = registry / EVENTS_FILE
    known = {e.event_id for e in read_events(registry)}
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a", encoding="utf-8") as fh:
        if torn:  # a crash cut the last line: the next record starts a line of its own
            fh.write("\n")
        for e in events:
            if e.event_id not in known:
                known.add(e.event_id)
                fh.write(json.dumps(e.to_avro(), sort_keys=True) + "\n")
    return path


def recorded_decision(registry: Path, candidate: Mapping[str, str], event_time_ms: int
                      ) -> list[ModelEventRecorded]:  # fmt: skip
    """The gate's records (or a stream shadow's start) for ``candidate`` at ``event_time_ms``
    already in the registry's history (a trainer that crashed after deciding, before
    publishing): empty if none."""
    ids = {
        decision_event_id(m, v, k, event_time_ms)
        for m, v in candidate.items()
        for k in (
            ModelEventKind.SHADOW_STARTED,
            ModelEventKind.SHADOW_SCORED,
            ModelEventKind.PROMOTED,
            ModelEventKind.PROMOTION_REFUSED,
        )
    }
    return [e for e in read_events(registry) if e.event_id in ids]


def shadow_compare(
    registry: Path,
    candidate: Mapping[str, str],
    champion: Mapping[str, str],
    weights: Mapping[str, float],
    rule: PromotionRule,
    bias_limit: float,
    cache_dir: Path,
    log: Any = print,
) -> tuple[PromotionDecision, int, EdgeGate]:
    """Score both sets on the candidate's held-back block; the decision, its event time and the
    candidate's gate table.

    The candidate's gate is built here from its folds (``models/edge.py``); the champion's is
    the one in its manifests (none: the champion stands aside everywhere).
    """
    from models.edge import (
        HELD_BACK,
        GateEvidence,
        OutOfFold,
        ensemble_votes,
        measure_gate,
    )
    from models.registry import gate_tables
    from models.scorer import EnsembleScorer
    from streams.config import PaperConfig
    from streams.stages.edge import gate_from_manifests

    paper = PaperConfig()
    cand_gate, oof = measure_gate(registry, candidate, weights, paper,
                                  GateEvidence(seed=rule.seed), cache_dir, log)  # fmt: skip
    shadow = oof.subset(oof.source == HELD_BACK)
    cand_votes = ensemble_votes(shadow, cand_gate.weights)
    champ_probs = _score_rows(registry, champion, oof_rows=shadow, scorer=EnsembleScorer)
    champ_w = {m: float(weights[m]) for m in champion if weights.get(m, 0.0) > 0}
    champ_votes = ensemble_votes(
        OutOfFold(champ_probs, shadow.time_ms, shadow.symbol, shadow.fwd_return,
                  shadow.volatility, shadow.source, shadow.meta), champ_w,
    )  # fmt: skip
    champ_gate, problem = gate_from_manifests(gate_tables(registry, dict(champion)), champion,
                                              champ_w)  # fmt: skip
    if champ_gate is None:
        log(f"champion has no usable gate ({problem}): it stands aside on every shadow row")
    blocks = block_ids(shadow.time_ms, GateEvidence().block_minutes)
    cost = cand_gate.round_trip_cost
    cand_act = gated_actions(cand_gate, cand_votes.action, cand_votes.prob, cand_votes.volatility)
    champ_act = gated_actions(champ_gate, champ_votes.action, champ_votes.prob,
                              champ_votes.volatility)  # fmt: skip
    cand_pnl = decision_pnl(cand_act, shadow.fwd_return, cost)
    champ_pnl = decision_pnl(champ_act, shadow.fwd_return, cost)
    decision = decide(
        shadow_score(candidate, cand_act, cand_pnl, blocks, rule),
        shadow_score(champion, champ_act, champ_pnl, blocks, rule),
        cand_pnl, champ_pnl, blocks, rule, bias_limit,
    )  # fmt: skip
    return decision, int(shadow.time_ms.max()) + 60_000, cand_gate


def gate_and_promote(
    registry: Path,
    candidate: Mapping[str, str],
    settings: Settings,
    cache_dir: Path,
    event_time_ms: int | None = None,
    log: Any = print,
) -> tuple[PromotionDecision, list[ModelEventRecorded]]:
    """Shadow-score ``candidate`` against the promoted set, record the gate's decision in the
    registry's history and, only when it passes, promote the candidate's versions.

    ``event_time_ms`` is the decision records' event time (and so when workers swap); default
    the end of the shadow rows. The caller publishes the records to ``models.events``.

    A promoted set's members get the gate table it was measured with (the edge gate trades on
    it from the swap on), written before the records and the index, so a crash at any point
    leaves either no decision or one whose tables are in place; :func:`apply_recorded`
    finishes what a crash interrupted.
    """
    from models.edge import attach_gate
    from models.registry import RegistryError, read_index

    champion = read_index(registry)
    if not champion:
        raise RegistryError(f"nothing is promoted in {registry}: no champion to shadow-score")
    decision, at, gate = shadow_compare(
        registry, candidate, champion, settings.ensemble_weights, settings.promotion,
        settings.supervisor.bias_threshold, cache_dir, log,
    )  # fmt: skip
    events = decision_events(decision, at if event_time_ms is None else event_time_ms)
    if decision.promote:
        attach_gate(registry, gate)
    append_events(registry, events)
    apply_recorded(registry, events)
    return decision, events


def start_shadow(
    registry: Path,
    candidate: Mapping[str, str],
    settings: Settings,
    cache_dir: Path,
    event_time_ms: int,
    log: Any = print,
) -> list[ModelEventRecorded]:
    """Hand ``candidate`` to the stream's shadow stage (``QT_PROMOTION__SHADOW=stream``): its gate
    table, measured on its folds, goes into its members' manifests (the shadow stage trades it
    by that table), then one ``SHADOW_STARTED`` record per member at ``event_time_ms``, recorded
    in the registry's history. The promotion stage decides later, on the settled rows."""
    from models.dataset import ms_to_iso
    from models.edge import GateEvidence, attach_gate, measure_gate
    from streams.config import PaperConfig

    gate, _ = measure_gate(registry, candidate, settings.ensemble_weights, PaperConfig(),
                           GateEvidence(seed=settings.promotion.seed), cache_dir, log)  # fmt: skip
    attach_gate(registry, gate)
    pairs = ", ".join(f"{m}@{v}" for m, v in sorted(candidate.items()))
    tradeable = len(gate.tradeable())
    events = [
        ModelEventRecorded(
            event_id=decision_event_id(m, v, ModelEventKind.SHADOW_STARTED, event_time_ms),
            model=m,
            version=v,
            event_time_ms=event_time_ms,
            kind=ModelEventKind.SHADOW_STARTED,
            detail=(
                f"shadow-scored on the stream beside the champion from "
                f"{ms_to_iso(event_time_ms)}: candidate {pairs}; its gate table has "
                f"{tradeable} tradeable buckets; decided after "
                f"{settings.promotion.min_decisions} would-be decisions"
            ),
            metric_name="gate_tradeable_buckets",
            metric=float(tradeable),
        )
        for m, v in sorted(candidate.items())
    ]
    append_events(registry, events)
    return events


def apply_recorded(registry: Path, events: list[ModelEventRecorded]) -> None:
    """Make the index name every version a ``PROMOTED`` record of ``events`` promotes
    (a no-op for versions it names already)."""
    from models.registry import promote, read_index

    index = read_index(registry)
    for e in events:
        if e.kind == ModelEventKind.PROMOTED and index.get(e.model) != e.version:
            promote(registry, e.model, e.version)


def _score_rows(registry: Path, versions: Mapping[str, str], oof_rows: Any, scorer: Any
                ) -> dict[str, FloatArray]:  # fmt: skip
    """The champion's probabilities on the shadow rows (rebuilt features, ONNX scoring)."""
    from models.dataset import LabelSpec, build_dataset

    meta = oof_rows.meta
    label = LabelSpec(**{k: meta["label"][k] for k in ("horizon_bars", "fee_rate", "dead_zone")})
    # the labels of the last rows look ahead to the training end: the same end as the rows had
    lo, hi = int(oof_rows.time_ms.min()), meta["train_end_exclusive"]
    ds = build_dataset(Path(meta["data_dir"]), sorted(set(oof_rows.symbol.tolist())), lo, hi,
                       label)  # fmt: skip
    key = {(int(t), str(s)): i for i, (t, s) in enumerate(zip(ds.time_ms, ds.symbol, strict=True))}
    idx = np.array([key[(int(t), str(s))] for t, s in zip(oof_rows.time_ms, oof_rows.symbol,
                                                           strict=True)])  # fmt: skip
    sub = ds.subset(idx)
    probs = scorer.from_registry(registry, dict(versions)).score(sub.tabular, sub.window)
    return {m: np.asarray(p, dtype=np.float64) for m, p in probs.items()}


def served_history(registry: Path, model: str) -> list[str]:
    """The versions of ``model`` that PROMOTED / ROLLED_BACK records in the registry's history
    made current, oldest first."""
    kinds = {ModelEventKind.PROMOTED, ModelEventKind.ROLLED_BACK}
    return [e.version for e in read_events(registry) if e.model == model and e.kind in kinds]


def rollback_target(current: str, history: list[str], registered: list[str]) -> str | None:
    """The version to roll back to: the one served before ``current`` in ``history``, else the
    highest registered version below it (None: there is nothing older)."""
    served = [v for i, v in enumerate(history) if i == 0 or history[i - 1] != v]
    last = len(served) - 1 - served[::-1].index(current) if current in served else 0
    if last > 0:
        return served[last - 1]
    older = registered[: registered.index(current)] if current in registered else []
    return older[-1] if older else None


def rollback_event(model: str, version: str, was: str, event_time_ms: int, reason: str
                   ) -> ModelEventRecorded:  # fmt: skip
    """The ``ROLLED_BACK`` record: workers serve ``version`` from ``event_time_ms`` on."""
    return ModelEventRecorded(
        event_id=f"{model}:{version}:{ModelEventKind.ROLLED_BACK.value}:{event_time_ms}",
        model=model,
        version=version,
        event_time_ms=event_time_ms,
        kind=ModelEventKind.ROLLED_BACK,
        detail=f"rolled back from {was}: {reason}",
    )
