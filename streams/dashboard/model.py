"""The dashboard's read model: what the topics say, folded into bounded views.

:class:`ReadModel` takes the decoded records of the topology's topics in whatever order the
topics deliver them (every join here tolerates any order between topics) and keeps only what
the pages show: the newest signals with their verdicts, open positions with their exit plan,
the realised equity curve, counters, the Q-table and bandit arms rebuilt from the rewards, and
the operator commands. Every collection is bounded, so thousands of signals a minute cost
constant memory; :meth:`ReadModel.drain_changes` hands the server only the rows that changed
since the last push (incremental updates).

It is a read model in the strict sense: nothing in the topology reads it. It is also fed the
stages' **stored state**, the records of their ``state-<stage>`` changelogs
(:meth:`ReadModel.apply_state_record`, folded by
:class:`~streams.agents.durable.StateChangelog`): when the strategy stage's state is there,
the learning view is its Q-tables (per symbol, full state key with the drawdown bucket, visit
counts) and bandit arms exactly as stored at its latest flush; when the risk stage's is there,
the overview's trading mode, kill switch, equity and day/week marks are the portfolio it
guards. Without stored state (a finished run folder of the in-process runner, no broker) the
learning view falls back to a replay of ``learning.rewards`` through the strategy stage's own
update rules (:class:`~streams.stages.strategies.MetaSelector`, the Q update of
:class:`~streams.stages.sizing.QTable`); a reward names its sizing state without the drawdown
bucket, so that heatmap folds the drawdown buckets together, and it applies a reward as soon
as it is read, not ``QT_FEEDBACK_LAG_MS`` later. Every view says which source it shows.

Pure: no Kafka, no web server; the same model serves a live run, a replay in progress and (as
its :meth:`ReadModel.snapshot`, written to ``dashboard.json``) a finished run folder.
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from models.promotion import PromotionDecision, ShadowTally
from streams.agents.durable import StateChangelog, StateFormatError, StoredDocument, StoredHead
from streams.config import RiskLimits, SelectorConfig, Settings, SizingConfig
from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    ControlCommand,
    DeadLettered,
    DecisionSized,
    FillExecuted,
    ModelEventRecorded,
    OrderApproved,
    OrderPlanned,
    OrderRejected,
    PositionChanged,
    RewardComputed,
    ShadowScored,
    SignalScored,
    SignalSupervised,
    TickReceived,
    TradeClosed,
    TradingModeChanged,
    UniverseChanged,
)
from streams.ordering import END_OF_STREAM
from streams.stages.portfolio import DAY_MS, day_index, drawdown, iso_week_index
from streams.stages.promotion import PromotionStage
from streams.stages.sizing import bucket
from streams.stages.strategies import STRATEGIES, MetaSelector
from streams.vocabulary import (
    Action,
    CommandKind,
    Learner,
    LegKind,
    ModelEventKind,
    PositionEvent,
    SignalOutcome,
    UniverseChangeKind,
)

#: Newest signals kept whatever their outcome, and newest signals that reached a decision
#: (kept apart, so a flood of HOLDs never pushes the few decisions out of the table).
RECENT_SIGNALS = 1000
DECIDED_SIGNALS = 2000
#: Most rows one incremental update carries (the table shows the newest anyway).
PUSH_ROWS = 200
#: Risk verdicts and exit plans waiting for their decision / position, and recent lists.
PENDING_LIMIT = 5000
RECENT_TRADES = 200
RECENT_COMMANDS = 50
RECENT_MODEL_EVENTS = 200
#: Shadows kept (the oldest by their newest row goes first).
RECENT_SHADOWS = 20
#: The gate's verdicts on a shadow (``models.events``).
SHADOW_VERDICTS = frozenset({ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED})
RECENT_UNIVERSE_CHANGES = 200
RECENT_MODE_CHANGES = 100
SNAPSHOT_VERSION = 1
#: Stages whose stored documents the pages read; of the others only sizes and flush times.
DOCUMENT_STAGES = frozenset({"strategy", "risk"})


@dataclass(slots=True)
class ShadowProgress:
    """One shadow as the dashboard follows it: the promotion stage's kind of tally over the rows
    read so far (each once: a restarted shadow stage re-sends some), and the rule's decision on
    them, kept until another row comes (a bootstrap per page refresh would be wasted)."""

    tally: ShadowTally
    first_ms: int
    last_ms: int = 0
    rows: int = 0
    #: (symbol, row time) of the rows counted, while the shadow is open (dropped at its verdict).
    seen: set[tuple[str, int]] = field(default_factory=set)
    cached: tuple[int, PromotionDecision] | None = None

    def count(self, s: ShadowScored, block_ms: int) -> None:
        """Add a settled row, unless it was counted already."""
        key = (s.symbol, s.event_time_ms)
        if key in self.seen:
            return
        self.seen.add(key)
        self.tally.count(s, block_ms)
        self.rows += 1
        self.last_ms = max(self.last_ms, s.event_time_ms)

    def decision(self, gate: PromotionStage) -> PromotionDecision:
        """The promotion rule on the rows so far."""
        if self.cached is None or self.cached[0] != self.rows:
            self.cached = (self.rows, self.tally.decide(gate.rule, gate.bias_limit))
        return self.cached[1]


@dataclass(slots=True)
class SignalRow:
    """One signal of the signals page: votes, verdict, decision and risk's answer."""

    signal_id: str
    symbol: str
    event_time_ms: int
    action: str | None = None
    confidence: float | None = None
    probabilities: list[float] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    vetoed: bool | None = None
    veto_reasons: list[dict[str, Any]] = field(default_factory=list)
    final_action: str | None = None
    decision_id: str | None = None
    side: str | None = None
    strategy: str | None = None
    regime: str | None = None
    size_multiplier: float | None = None
    margin_usd: float | None = None
    risk_verdict: str | None = None
    risk_rule: str | None = None
    risk_detail: str | None = None
    approved_margin_usd: float | None = None

    @property
    def outcome(self) -> SignalOutcome:
        """How far the signal got (see :class:`SignalOutcome`)."""
        if self.risk_verdict is not None:
            return SignalOutcome(self.risk_verdict)
        if self.decision_id is not None:
            return SignalOutcome.DECIDED
        if self.vetoed is True:
            return SignalOutcome.VETOED
        if self.vetoed is False:
            return SignalOutcome.PASSED
        if self.action == Action.HOLD.value:
            return SignalOutcome.HOLD
        return SignalOutcome.PENDING

    def as_json(self) -> dict[str, Any]:
        """The row as the pages get it (with its outcome)."""
        return {**asdict(self), "outcome": self.outcome.value}


def _vote(v: Any) -> dict[str, Any]:
    return {
        "model": v.model,
        "version": v.version,
        "action": v.action.value,
        "confidence": v.confidence,
        "probabilities": list(v.probabilities),
    }


def _plan_levels(plan: OrderPlanned) -> dict[str, Any]:
    """Take-profit ladder, stop and trailing callback of an exit plan."""
    tps = [{"price": x.price, "fraction": x.fraction} for x in plan.legs if x.kind is LegKind.TP]
    stop = next((leg.price for leg in plan.legs if leg.kind is LegKind.SL), None)
    trail = next((leg.callback for leg in plan.legs if leg.kind is LegKind.TRAIL), None)
    return {"take_profits": tps, "stop_loss": stop, "trailing_callback": trail}


def live_pnl(side: str, entry: float, mark: float, qty: float) -> float:
    """Unrealised PnL of ``qty`` opened at ``entry`` and marked at ``mark``."""
    sign = 1.0 if side == "LONG" else -1.0
    return sign * (mark - entry) * qty


def drawdown_curve(start_equity: float, equity: Iterable[float]) -> list[float]:
    """Drawdown from the running peak (fraction of the peak) at each point of ``equity``."""
    peak, out = start_equity, []
    for e in equity:
        peak = max(peak, e)
        out.append((peak - e) / peak if peak > 0 else 0.0)
    return out


def _bounded_put(table: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


@dataclass(slots=True)
class QCell:
    """One (state, multiplier) cell of the rebuilt Q-table."""

    q: float = 0.0
    n: int = 0


class ReadModel:
    """Every view of the dashboard, fed with :meth:`apply` (see the module doc)."""

    def __init__(
        self,
        starting_equity: float,
        sizing: SizingConfig | None = None,
        selector: SelectorConfig | None = None,
        limits: RiskLimits | None = None,
        gate: PromotionStage | None = None,
    ) -> None:
        self.starting_equity = starting_equity
        #: The promotion rule, bias limit and block length the shadows are weighed with.
        self.gate = gate or PromotionStage.from_settings(Settings())
        self.sizing = sizing or SizingConfig()
        self.selector = selector or SelectorConfig()
        self.limits = limits or RiskLimits(starting_equity_usd=starting_equity)
        #: Stage -> its changelog folded; ``stored_from``: how it was read (live, at the end).
        self.stored: dict[str, StateChangelog] = {}
        self.stored_from = "live"
        self.version = 0
        self.counts: Counter[str] = Counter()
        self.vetoes_by_rule: Counter[str] = Counter()
        self.rejections_by_rule: Counter[str] = Counter()
        self.recent: OrderedDict[str, SignalRow] = OrderedDict()
        self.decided: OrderedDict[str, SignalRow] = OrderedDict()
        self._signal_of_decision: OrderedDict[str, str] = OrderedDict()
        self._verdicts: OrderedDict[str, OrderApproved | OrderRejected] = OrderedDict()
        self._changed: OrderedDict[str, None] = OrderedDict()
        self.plans: OrderedDict[str, OrderPlanned] = OrderedDict()
        self.positions: dict[str, PositionChanged] = {}
        self._closed_positions: set[str] = set()
        self.venues: Counter[str] = Counter()
        self.marks: dict[str, tuple[int, float]] = {}
        self.last_event_ms: int | None = None
        self.fees = 0.0
        self._closes: list[tuple[int, str, float]] = []  # (close time, trade id, net PnL)
        self._trade_ids: set[str] = set()
        self.trades: deque[dict[str, Any]] = deque(maxlen=RECENT_TRADES)
        self.commands: deque[ControlCommand] = deque(maxlen=RECENT_COMMANDS)
        self.kill_switch: ControlCommand | None = None
        self.model_events: deque[ModelEventRecorded] = deque(maxlen=RECENT_MODEL_EVENTS)
        #: The newest approval by event time: the policy layer's mode it was sized in.
        self.last_approval: OrderApproved | None = None
        #: The live universe (``universe.events``): recent changes, the latest per symbol.
        self.universe_changes: deque[UniverseChanged] = deque(maxlen=RECENT_UNIVERSE_CHANGES)
        self.universe_latest: dict[str, UniverseChanged] = {}
        self._universe_ids: set[str] = set()
        #: The portfolio's trading mode changes (``policy.modes``), one each.
        self.mode_changes: dict[str, TradingModeChanged] = {}
        #: Shadows on ``signals.shadow``: their running tallies, and the gate's verdicts (on
        #: ``models.events``) by candidate model and version.
        self.shadows: dict[str, ShadowProgress] = {}
        self.shadow_verdicts: dict[tuple[str, str], ModelEventRecorded] = {}
        self.votes: dict[str, Counter[str]] = {}
        self.balance: dict[str, Counter[str]] = {}
        self.bias: dict[str, dict[str, Any]] = {}
        self.qtables: dict[str, dict[str, dict[str, QCell]]] = {}
        self.bandits: dict[str, MetaSelector] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadModel:
        """The read model of a run with ``settings`` (its equity, learners, limits, gate)."""
        return cls(settings.risk.starting_equity_usd, settings.sizing, settings.selector,
                   settings.risk, PromotionStage.from_settings(settings))  # fmt: skip

    # ------------------------------------------------------------------------- feeding

    def apply(self, record: AvroRecord) -> None:
        """Fold one decoded record of any topic in (unknown types are only counted)."""
        self.version += 1
        self.counts[type(record).__name__] += 1
        handler = _HANDLERS.get(type(record))
        if handler is not None:
            handler(self, record)

    def apply_all(self, records: Iterable[AvroRecord]) -> ReadModel:
        """:meth:`apply` each record; returns self."""
        for r in records:
            self.apply(r)
        return self

    def apply_state_record(
        self,
        stage: str,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Fold one record of ``stage``'s state changelog in (changelog order per partition)."""
        self.version += 1
        fold = self.stored.get(stage)
        if fold is None:
            fold = self.stored[stage] = StateChangelog(stage in DOCUMENT_STAGES)
        fold.add(offset, key, value, timestamp_ms)

    def set_stored_state(self, stage: str, fold: StateChangelog, read: str) -> None:
        """``stage``'s changelog as read in one go (``read`` says when, for the pages)."""
        self.version += 1
        self.stored[stage], self.stored_from = fold, read

    def _documents(self, stage: str) -> tuple[dict[int, StoredDocument], str | None]:
        """``stage``'s stored documents (empty: none) and why they could not be read."""
        fold = self.stored.get(stage)
        if fold is None or not fold.keep_documents:
            return {}, None
        try:
            return fold.documents(), None
        except StateFormatError as exc:
            return {}, f"stored state of {stage} unreadable: {exc}"

    def _row(self, signal_id: str, symbol: str, event_time_ms: int) -> SignalRow:
        row = self.decided.get(signal_id) or self.recent.get(signal_id)
        if row is None:
            row = SignalRow(signal_id, symbol, event_time_ms)
            _bounded_put(self.recent, signal_id, row, RECENT_SIGNALS)
        _bounded_put(self._changed, signal_id, None, PUSH_ROWS)
        return row

    def _on_tick(self, t: TickReceived) -> None:
        known = self.marks.get(t.symbol)
        if known is None or t.event_time_ms >= known[0]:
            self.marks[t.symbol] = (t.event_time_ms, t.close)
        if self.last_event_ms is None or t.event_time_ms > self.last_event_ms:
            self.last_event_ms = t.event_time_ms

    def _on_signal(self, s: SignalScored) -> None:
        row = self._row(s.signal_id, s.symbol, s.event_time_ms)
        row.action, row.confidence = s.action.value, s.confidence
        row.probabilities = list(s.probabilities)
        row.votes = [_vote(v) for v in s.votes]
        self.balance.setdefault(s.symbol, Counter())[s.action.value] += 1
        for v in s.votes:
            self.votes.setdefault(v.model, Counter())[v.version] += 1

    def _on_supervised(self, s: SignalSupervised) -> None:
        row = self._row(s.signal_id, s.symbol, s.event_time_ms)
        if row.action is None:  # the ensemble's record not read yet: same signal inside
            row.action, row.confidence = s.signal.action.value, s.signal.confidence
            row.probabilities = list(s.signal.probabilities)
            row.votes = [_vote(v) for v in s.signal.votes]
        row.vetoed, row.final_action = s.vetoed, s.final_action.value
        row.veto_reasons = [{"rule": v.rule.value, "detail": v.detail} for v in s.veto_reasons]
        self.vetoes_by_rule.update(v.rule.value for v in s.veto_reasons)
        self.bias[s.symbol] = {"event_time_ms": s.event_time_ms, **asdict(s.bias)}

    def _on_decision(self, d: DecisionSized) -> None:
        row = self._row(d.signal_id, d.symbol, d.event_time_ms)
        _bounded_put(self.decided, d.signal_id, row, DECIDED_SIGNALS)
        _bounded_put(self._signal_of_decision, d.decision_id, d.signal_id, PENDING_LIMIT)
        row.decision_id, row.side, row.strategy = d.decision_id, d.side.value, d.strategy
        row.regime, row.size_multiplier, row.margin_usd = (
            d.regime.value,
            d.size_multiplier,
            d.margin_usd,
        )
        waiting = self._verdicts.pop(d.decision_id, None)
        if waiting is not None:
            self._set_verdict(row, waiting)

    def _on_verdict(self, v: OrderApproved | OrderRejected) -> None:
        if isinstance(v, OrderRejected):
            self.rejections_by_rule[v.rule.value] += 1
        else:
            last = self.last_approval
            if last is None or (v.event_time_ms, v.order_id) >= (last.event_time_ms,
                                                                  last.order_id):  # fmt: skip
                self.last_approval = v
        signal_id = self._signal_of_decision.get(v.decision_id)
        row = None if signal_id is None else self.decided.get(signal_id)
        if row is None:  # the decision is not read yet (another topic): park the verdict
            _bounded_put(self._verdicts, v.decision_id, v, PENDING_LIMIT)
            return
        _bounded_put(self._changed, row.signal_id, None, PUSH_ROWS)
        self._set_verdict(row, v)

    @staticmethod
    def _set_verdict(row: SignalRow, v: OrderApproved | OrderRejected) -> None:
        if isinstance(v, OrderApproved):
            row.risk_verdict, row.approved_margin_usd = "APPROVED", v.approved_margin_usd
        else:
            row.risk_verdict, row.risk_rule, row.risk_detail = "REJECTED", v.rule.value, v.detail

    def _on_plan(self, p: OrderPlanned) -> None:
        _bounded_put(self.plans, p.order_id, p, PENDING_LIMIT)

    def _on_fill(self, f: FillExecuted) -> None:
        self.fees += f.fee
        self.venues[f.venue] += 1

    def _on_position(self, p: PositionChanged) -> None:
        known = self.positions.get(p.position_id)
        late = known is not None and known.event_time_ms > p.event_time_ms
        if late or p.position_id in self._closed_positions:
            return  # an older event read late, or one of a position already closed
        if p.event is PositionEvent.CLOSED or p.qty_open <= 0.0:
            self.positions.pop(p.position_id, None)
            self._closed_positions.add(p.position_id)
        else:
            self.positions[p.position_id] = p

    def _on_trade(self, t: TradeClosed) -> None:
        if t.trade_id in self._trade_ids:
            return  # redelivered (at-least-once)
        self._trade_ids.add(t.trade_id)
        bisect.insort(self._closes, (t.event_time_ms, t.trade_id, t.net_pnl))
        self.trades.append(
            {k: getattr(t, k) for k in _TRADE_FIELDS} | {"exit_reason": t.exit_reason.value}
        )

    def _on_reward(self, r: RewardComputed) -> None:
        if r.learner is Learner.SIZING:
            table = self.qtables.setdefault(r.symbol, {})
            cell = table.setdefault(r.state, {}).setdefault(r.action, QCell())
            cell.q += self.sizing.alpha * (r.reward - cell.q)  # the stage's one-step update
            cell.n += 1
        elif r.strategy in STRATEGIES:
            bandit = self.bandits.setdefault(r.symbol, MetaSelector())
            bandit.update(r.regime, r.strategy, r.reward, self.selector)

    def _on_command(self, c: ControlCommand) -> None:
        self.commands.append(c)
        if c.command not in (CommandKind.HALT, CommandKind.RESUME):
            return
        latest = self.kill_switch
        if latest is None or (c.event_time_ms, c.issued_at_ms) >= (
            latest.event_time_ms,
            latest.issued_at_ms,
        ):
            self.kill_switch = c

    def _on_model_event(self, e: ModelEventRecorded) -> None:
        self.model_events.append(e)
        if e.kind in SHADOW_VERDICTS:
            self.shadow_verdicts[(e.model, e.version)] = e
            for shadow in self.shadows.values():  # decided: no row counts any more
                if self._verdict_of(shadow.tally.candidate, shadow.tally.champion) is not None:
                    shadow.seen.clear()

    def _on_shadow(self, s: ShadowScored) -> None:
        if self._verdict_of(s.candidate, s.champion) is not None:
            return  # decided: the promotion stage counts no row after its verdict's
        shadow = self.shadows.get(s.shadow_id)
        if shadow is None:
            if len(self.shadows) >= RECENT_SHADOWS:
                del self.shadows[min(self.shadows, key=lambda k: self.shadows[k].last_ms)]
            tally = ShadowTally(dict(s.candidate), dict(s.champion), s.decided_ms)
            shadow = self.shadows[s.shadow_id] = ShadowProgress(tally, s.event_time_ms)
        shadow.count(s, self.gate.block_ms)

    def _verdict_of(
        self, candidate: Mapping[str, str], champion: Mapping[str, str]
    ) -> ModelEventRecorded | None:
        """The gate's verdict on a candidate: on a model it swaps in (versions are never reused)."""
        for model, version in sorted(candidate.items()):
            if champion.get(model) != version and (model, version) in self.shadow_verdicts:
                return self.shadow_verdicts[(model, version)]
        return None

    def _on_universe(self, u: UniverseChanged) -> None:
        if u.event_id in self._universe_ids:
            return  # a restarted ingest may write a change again: one row each
        self._universe_ids.add(u.event_id)
        self.universe_changes.append(u)
        latest = self.universe_latest.get(u.symbol)
        if latest is None or (u.event_time_ms, u.event_id) >= (latest.event_time_ms,
                                                                latest.event_id):  # fmt: skip
            self.universe_latest[u.symbol] = u

    def _on_mode_change(self, m: TradingModeChanged) -> None:
        self.mode_changes[m.event_id] = m  # a restarted worker's copy replaces, never adds
        if len(self.mode_changes) > RECENT_MODE_CHANGES:
            oldest = min(self.mode_changes.values(), key=lambda c: (c.event_time_ms, c.event_id))
            del self.mode_changes[oldest.event_id]

    def _on_dead_letter(self, d: DeadLettered) -> None:
        self.counts[f"dead:{d.reason}"] += 1

    # ------------------------------------------------------------------------- views

    def drain_changes(self) -> list[dict[str, Any]]:
        """Signal rows changed since the last call (the newest :data:`PUSH_ROWS`), oldest first."""
        rows = []
        for signal_id in self._changed:
            row = self.decided.get(signal_id) or self.recent.get(signal_id)
            if row is not None:
                rows.append(row.as_json())
        self._changed.clear()
        return rows

    def signal_rows(self) -> list[dict[str, Any]]:
        """Every signal row held, newest event time first."""
        rows = {**self.recent, **self.decided}.values()
        ordered = sorted(rows, key=lambda r: (r.event_time_ms, r.signal_id), reverse=True)
        return [r.as_json() for r in ordered]

    def equity_points(self) -> list[tuple[int, float]]:
        """Realised equity after each closed trade, in close-time order."""
        equity, out = self.starting_equity, []
        for t, _trade_id, pnl in self._closes:
            equity += pnl
            out.append((t, equity))
        return out

    def open_positions(self) -> list[dict[str, Any]]:
        """Open positions with live PnL (newest tick close) and their exit plan."""
        out = []
        for p in sorted(self.positions.values(), key=lambda x: (x.symbol, x.position_id)):
            mark_ms, mark = self.marks.get(p.symbol, (p.event_time_ms, p.mark_price))
            if mark_ms < p.event_time_ms:
                mark = p.mark_price
            plan = self.plans.get(p.order_id)
            out.append(
                {
                    "position_id": p.position_id,
                    "decision_id": p.decision_id,
                    "symbol": p.symbol,
                    "side": p.side.value,
                    "entry_price": p.entry_price,
                    "qty_open": p.qty_open,
                    "mark_price": mark,
                    "live_pnl": live_pnl(p.side.value, p.entry_price, mark, p.qty_open),
                    "realized_pnl": p.realized_pnl,
                    "current_stop": p.stop_price,
                    "leverage": None if plan is None else plan.leverage,
                    "margin_usd": None if plan is None else plan.margin_usd,
                    "opened_ms": p.event_time_ms,
                    **(_plan_levels(plan) if plan is not None else {}),
                }
            )
        return out

    def risk_state(self) -> dict[str, Any] | None:
        """The risk stage's portfolio as stored at its latest flush (None: no stored state)."""
        docs, error = self._documents("risk")
        doc = docs.get(0)
        if doc is None:
            return None if error is None else {"error": error}
        stored = (doc.document.get("handler") or {}).get("portfolio")
        p = None if stored is None else stored.get("portfolio")
        head = _head_json(doc.head)
        if p is None:  # the stage has state, but no portfolio yet (no decision, close, command)
            return {"portfolio": None, "stored": head}
        equity = float(p["equity"])
        # how far in event time the stage has released its inputs (the progress it sent)
        progress = [int(t) for t in (doc.document["handler"].get("progress_sent") or {}).values()]
        at = self.last_event_ms
        # The stage rolls its marks at its next decision or close: a later day starts afresh.
        new_day = at is not None and day_index(at) > int(p["day"])
        new_week = at is not None and iso_week_index(at) > int(p["week"])
        return {
            "portfolio": True,
            "equity_usd": equity,
            "day": int(p["day"]) * DAY_MS,
            "day_start_equity_usd": float(p["day_start_equity"]),
            "week": int(p["week"]),
            "week_start_ms": (int(p["week"]) * 7 - 3) * DAY_MS,
            "week_start_equity_usd": float(p["week_start_equity"]),
            "daily_drawdown": 0.0 if new_day else drawdown(float(p["day_start_equity"]), equity),
            "weekly_drawdown": 0.0 if new_week else drawdown(float(p["week_start_equity"]), equity),
            "max_daily_drawdown": self.limits.max_daily_drawdown,
            "max_weekly_drawdown": self.limits.max_weekly_drawdown,
            "reserved_positions": len(p.get("positions") or {}),
            "reserved_margin_usd": sum(
                float(x["margin"]) for x in (p.get("positions") or {}).values()
            ),
            "halted": bool(p["halted"]),
            "halt_reason": str(p.get("halt_reason") or ""),
            "progress_ms": max(progress, default=None),
            "stored": head,
        }

    def trading_mode(self, risk: Mapping[str, Any] | None) -> dict[str, Any]:
        """NORMAL, DEFENSIVE (a drawdown limit refuses new entries) or HALTED, and from where."""
        ks = self.kill_switch
        sent = None if ks is None else ks.command.value
        if risk is None or not risk.get("portfolio"):
            halted = sent == CommandKind.HALT.value
            return {
                "mode": "HALTED" if halted else "NORMAL",
                "detail": "from the last HALT/RESUME on control.commands"
                + ("" if risk is None else " (the risk stage has no portfolio yet)"),
                "source": "commands",
            }
        if risk["halted"]:
            mode, detail = "HALTED", f"kill switch: {risk['halt_reason']}"
        elif risk["daily_drawdown"] >= risk["max_daily_drawdown"]:
            mode, detail = "DEFENSIVE", "daily drawdown at its limit: new entries refused"
        elif risk["weekly_drawdown"] >= risk["max_weekly_drawdown"]:
            mode, detail = "DEFENSIVE", "weekly drawdown at its limit: new entries refused"
        else:
            mode, detail = "NORMAL", "entries allowed"
        pending = sent is not None and (sent == CommandKind.HALT.value) != bool(risk["halted"])
        if pending and ks is not None:
            # In event time the command is in force from its time on: every decision from then
            # is refused (or allowed again); the stage applies it when its merge gets there.
            at, progress = time_text(ks.event_time_ms), risk.get("progress_ms")
            where = "" if progress is None else f", it is at {time_text(progress)}"
            detail = (
                f"{sent} sent on control.commands for event time {at}: the risk stage applies it "
                f"when it gets there{where} (its stored state: {mode}, {detail})"
            )
            mode = "HALTED" if sent == CommandKind.HALT.value else "NORMAL"
        return {"mode": mode, "detail": detail, "source": "state", "pending": pending}

    def overview(self) -> dict[str, Any]:
        """Equity and drawdown, PnL, fees, positions, the kill switch and the counters."""
        points = self.equity_points()
        positions = self.open_positions()
        realised = sum(pnl for _t, _i, pnl in self._closes)
        unrealised = sum(p["live_pnl"] for p in positions)
        equity = [e for _t, e in points]
        ks = self.kill_switch
        risk = self.risk_state()
        from_state = risk is not None and bool(risk.get("portfolio"))
        mode = self.trading_mode(risk)
        return {
            "starting_equity_usd": self.starting_equity,
            "equity_curve": {
                "t": [t for t, _e in points],
                "equity": equity,
                "drawdown": drawdown_curve(self.starting_equity, equity),
            },
            "realized_pnl_usd": realised,
            "unrealized_pnl_usd": unrealised,
            "equity_usd": risk["equity_usd"]
            if from_state and risk is not None
            else self.starting_equity + realised + unrealised,
            "equity_source": "the risk stage's stored state (realised equity)"
            if from_state
            else "closed trades + open positions at the newest tick",
            "fees_usd": self.fees,
            "venues": dict(self.venues),
            "positions": positions,
            "recent_trades": list(self.trades)[::-1],
            "last_event_ms": self.last_event_ms,
            "trading_mode": mode,
            "policy_mode": self.policy_mode(),
            "risk": risk,
            "kill_switch": {
                "halted": mode["mode"] == "HALTED",
                "source": mode["source"],
                "command": None if ks is None else _command_json(ks),
                "rejections": self.rejections_by_rule.get("KILL_SWITCH", 0),
            },
            "commands": [_command_json(c) for c in reversed(self.commands)],
            "universe": self.universe(),
            "mode_changes": self.mode_change_rows(),
            "counts": self.record_counts(),
        }

    def policy_mode(self) -> dict[str, Any] | None:
        """The policy layer's mode of the newest approval (NORMAL, or DEFENSIVE: sized down)
        with its reasons; None before any approval."""
        a = self.last_approval
        if a is None:
            return None
        return {"mode": a.trading_mode.value, "reasons": list(a.mode_reasons),
                "event_time_ms": a.event_time_ms, "symbol": a.symbol}  # fmt: skip

    def mode_change_rows(self) -> list[dict[str, Any]]:
        """The portfolio's trading mode changes, newest first."""
        changes = sorted(self.mode_changes.values(), key=lambda c: (c.event_time_ms, c.event_id),
                         reverse=True)  # fmt: skip
        return [
            {"event_time_ms": c.event_time_ms, "mode": c.mode.value, "previous": c.previous.value,
             "reasons": list(c.reasons), "cause": c.cause, "equity_usd": c.equity_usd,
             "drawdown": c.drawdown}
            for c in changes
        ]  # fmt: skip

    def universe(self) -> dict[str, Any]:
        """The live universe: its members, the symbols winding down, the changes newest first
        (empty for a file replay, which has no universe events)."""
        latest = self.universe_latest.values()
        changes = sorted(self.universe_changes, key=lambda u: (u.event_time_ms, u.event_id),
                         reverse=True)  # fmt: skip
        return {
            "members": sorted(u.symbol for u in latest if u.change is UniverseChangeKind.JOINED),
            "winding_down": sorted(u.symbol for u in latest if u.change is UniverseChangeKind.LEFT),
            "changes": [_universe_json(u) for u in changes],
        }

    def record_counts(self) -> dict[str, Any]:
        """Records read per type, vetoes per rule, rejections per rule."""
        return {
            "records": dict(sorted(self.counts.items())),
            "vetoes_by_rule": dict(sorted(self.vetoes_by_rule.items())),
            "rejections_by_rule": dict(sorted(self.rejections_by_rule.items())),
        }

    def models(self) -> dict[str, Any]:
        """Versions that voted, signal balance per symbol and overall, the supervisor's bias."""
        overall: Counter[str] = Counter()
        for c in self.balance.values():
            overall.update(c)
        return {
            "voting_versions": {m: dict(c) for m, c in sorted(self.votes.items())},
            "balance": {s: dict(c) for s, c in sorted(self.balance.items())},
            "balance_overall": dict(overall),
            "bias": dict(sorted(self.bias.items())),
            "events": [asdict(e) | {"kind": e.kind.value} for e in reversed(self.model_events)],
            "shadows": self.shadow_rows(),
        }

    def shadow_rows(self) -> list[dict[str, Any]]:
        """Each shadow, newest first: its rows, both sets' scores so far and where the gate
        stands (the promotion rule on the rows read so far; once decided, the verdict)."""
        out = []
        for shadow_id, shadow in sorted(self.shadows.items(), key=lambda kv: -kv[1].last_ms):
            verdict = self._verdict_of(shadow.tally.candidate, shadow.tally.champion)
            now = shadow.decision(self.gate)
            out.append({
                "shadow_id": shadow_id, "candidate": shadow.tally.candidate,
                "champion": shadow.tally.champion, "started_ms": shadow.tally.started_ms,
                "first_ms": shadow.first_ms, "last_ms": shadow.last_ms,
                "rows": now.candidate.rows, "min_decisions": self.gate.rule.min_decisions,
                "scores": {side: asdict(score) for side, score in
                           (("candidate", now.candidate), ("champion", now.champion))},
                "diff_lower": now.diff_lower, "diff_upper": now.diff_upper,
                "status": "open" if verdict is None else verdict.kind.value,
                "reasons": list(now.reasons) if verdict is None else [verdict.detail],
            })  # fmt: skip
        return out

    def learning(self) -> dict[str, Any]:
        """Q-table cells per symbol (state x multiplier) and bandit arms per symbol, with the
        source: the strategy stage's stored state, else the rebuild from the rewards."""
        base = {
            "multipliers": [repr(m) for m in self.sizing.multipliers],
            "alpha": self.sizing.alpha,
            "strategies": list(STRATEGIES),
        }
        docs, error = self._documents("strategy")
        if docs:
            return base | self._learning_from_state(docs)
        detail = (
            "rebuilt from learning.rewards with the strategy stage's update rules (no stored "
            "state of the strategy stage here); drawdown buckets folded together"
        )
        return base | {
            "source": {"kind": "rewards", "detail": detail, "error": error},
            "qtables": {
                symbol: {
                    state: {a: asdict(c) for a, c in sorted(cells.items())}
                    for state, cells in sorted(table.items())
                }
                for symbol, table in sorted(self.qtables.items())
            },
            "bandits": {s: b.to_dict() for s, b in sorted(self.bandits.items())},
            "symbols": {},
        }

    def _learning_from_state(self, docs: Mapping[int, StoredDocument]) -> dict[str, Any]:
        qtables: dict[str, Any] = {}
        bandits: dict[str, Any] = {}
        symbols: dict[str, Any] = {}
        for partition, doc in docs.items():
            states = (doc.document.get("handler") or {}).get("symbols") or {}
            for symbol, st in states.items():
                qtables[symbol] = self._qtable_cells(st["qtable"])
                bandits[symbol] = dict(sorted(st["selector"].items()))
                equity, peak = float(st["equity"]), float(st["peak_equity"])
                dd = (peak - equity) / peak if peak else 0.0
                symbols[symbol] = {
                    "partition": partition,
                    "regime": st["regime"],
                    "equity": equity,
                    "peak_equity": peak,
                    "drawdown": dd,
                    "drawdown_bucket": bucket(dd, self.sizing.drawdown_edges),
                    "pending_sizing": len(st.get("pending_sizing") or {}),
                    "pending_strategy": len(st.get("pending_strategy") or ()),
                }
        when = "read live" if self.stored_from == "live" else self.stored_from
        return {
            "source": {
                "kind": "state",
                "detail": f"the strategy stage's stored state (state-strategy changelog, {when}),"
                " exact per symbol and drawdown bucket",
                "partitions": {str(p): _head_json(d.head) for p, d in docs.items()},
            },
            "qtables": dict(sorted(qtables.items())),
            "bandits": dict(sorted(bandits.items())),
            "symbols": dict(sorted(symbols.items())),
        }

    def _qtable_cells(self, qtable: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """A stored :class:`~streams.stages.sizing.QTable` as state -> multiplier -> cell
        (cells never updated left out: their Q is 0 by construction)."""
        n_actions = int(qtable["n_actions"])
        mults = self.sizing.multipliers
        labels = (
            [repr(m) for m in mults]
            if len(mults) == n_actions
            else [f"#{i}" for i in range(n_actions)]
        )
        out: dict[str, dict[str, Any]] = {}
        for state, values in sorted(qtable["q"].items()):
            visits = qtable["visits"].get(state) or [0] * len(values)
            out[state] = {
                labels[i]: {"q": float(values[i]), "n": int(visits[i])}
                for i in range(len(values))
                if visits[i] > 0
            }
        return out

    def state_summary(self) -> dict[str, Any]:
        """Per stage: instances stored, their stored size, the last flush (head timestamp)."""
        out: dict[str, Any] = {}
        for stage, fold in sorted(self.stored.items()):
            try:
                heads = fold.heads()
            except StateFormatError as exc:
                out[stage] = {"error": str(exc)}
                continue
            sizes = [h.size_bytes for h in heads.values()]
            written = [h.written_ms for h in heads.values() if h.written_ms is not None]
            out[stage] = {
                "instances": len(heads),
                "size_bytes": None if None in sizes else sum(s or 0 for s in sizes),
                "largest_bytes": max((s or 0 for s in sizes), default=0),
                "last_flush_ms": max(written, default=None),
                "records": fold.records,
            }
        return out

    def snapshot(self) -> dict[str, Any]:
        """Every view at once: the live pages' first load, and a run folder's dashboard.json."""
        return {
            "snapshot_version": SNAPSHOT_VERSION,
            "version": self.version,
            "overview": self.overview(),
            "signals": self.signal_rows(),
            "models": self.models(),
            "learning": self.learning(),
            "state": self.state_summary(),
        }


def time_text(ms: int) -> str:
    """Epoch milliseconds as UTC ``YYYY-MM-DD HH:MM:SS`` ("end of stream" for the replay's end)."""
    import datetime as dt

    if ms >= END_OF_STREAM:  # a finished replay's progress: no calendar time
        return "end of stream"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _head_json(head: StoredHead) -> dict[str, Any]:
    return {
        "partition": head.partition,
        "offset": head.offset,
        "written_ms": head.written_ms,
        "parts": head.parts,
        "size_bytes": head.size_bytes,
    }


_TRADE_FIELDS = (
    "trade_id", "decision_id", "symbol", "side", "opened_ms", "event_time_ms", "entry_price",
    "exit_price", "qty", "leverage", "net_pnl", "fees", "strategy",
)  # fmt: skip


def _command_json(c: ControlCommand) -> dict[str, Any]:
    return {
        "command_id": c.command_id,
        "command": c.command.value,
        "event_time_ms": c.event_time_ms,
        "issued_at_ms": c.issued_at_ms,
        "issued_by": c.issued_by,
        "reason": c.reason,
    }


def _universe_json(u: UniverseChanged) -> dict[str, Any]:
    return {
        "event_id": u.event_id,
        "symbol": u.symbol,
        "event_time_ms": u.event_time_ms,
        "change": u.change.value,
        "verdict": None if u.verdict is None else u.verdict.value,
        "rank": u.rank,
        "quote_volume": u.quote_volume,
        "range_ratio": u.range_ratio,
        "listed_days": u.listed_days,
        "universe_size": u.universe_size,
        "reason": u.reason,
    }


_HANDLERS: Mapping[type, Any] = {
    TickReceived: ReadModel._on_tick,
    SignalScored: ReadModel._on_signal,
    SignalSupervised: ReadModel._on_supervised,
    DecisionSized: ReadModel._on_decision,
    OrderApproved: ReadModel._on_verdict,
    OrderRejected: ReadModel._on_verdict,
    OrderPlanned: ReadModel._on_plan,
    FillExecuted: ReadModel._on_fill,
    PositionChanged: ReadModel._on_position,
    TradeClosed: ReadModel._on_trade,
    RewardComputed: ReadModel._on_reward,
    ControlCommand: ReadModel._on_command,
    ModelEventRecorded: ReadModel._on_model_event,
    DeadLettered: ReadModel._on_dead_letter,
    UniverseChanged: ReadModel._on_universe,
    TradingModeChanged: ReadModel._on_mode_change,
    ShadowScored: ReadModel._on_shadow,
}


def select_rows(
    rows: Iterable[Mapping[str, Any]],
    symbol: str | None = None,
    outcome: str | None = None,
    limit: int = 200,
) -> list[Mapping[str, Any]]:
    """The rows of one symbol and/or outcome (``None`` = any), at most ``limit``."""
    out = []
    for row in rows:
        if symbol and row["symbol"] != symbol:
            continue
        if outcome and row["outcome"] != outcome:
            continue
        out.append(row)
        if len(out) >= limit:
            break
    return out
