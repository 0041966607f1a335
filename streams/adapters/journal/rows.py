"""Journal rows: a decoded business record -> the rows of its journal table(s).

Every journal table (``streams/journal_migrations`` creates them; an integration test checks
the match) is declared in :data:`TABLES` with its columns in COPY order and its natural key.

Ticks: 1-minute klines are kept as they are (a kline *is* the 1-minute aggregate); raw trade
ticks are sampled deterministically, ``trade_id % trade_sample_every == 0``, so two replays keep
the same trades. A record the journal cannot decode becomes a ``journal_undecodable`` row
(:func:`undecodable_row`, by topic, partition, offset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streams.adapters.journal import JournalSchemaError
from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    ControlCommand,
    DeadLettered,
    DecisionSized,
    FillExecuted,
    HistoryBar,
    ModelEventRecorded,
    OrderApproved,
    OrderPlanned,
    OrderRejected,
    PositionChanged,
    RewardComputed,
    ShadowScored,
    SignalSupervised,
    TickKind,
    TickReceived,
    TradeClosed,
    TradingModeChanged,
    UniverseChanged,
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A journal table: its columns in COPY order and its natural key (the conflict target)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


def _spec(name: str, key: str, columns: str) -> TableSpec:
    return TableSpec(name, tuple(columns.split()), tuple(key.split()))


_TIME = "event_time event_time_ms"
#: Every journal table, as created by ``streams/journal_migrations`` (a test checks the match).
TABLES: Final[Mapping[str, TableSpec]] = {
    s.name: s
    for s in (
        _spec("ticks", "symbol event_time",
              f"symbol {_TIME} open high low close volume interval_ms source"),
        _spec("trade_ticks", "symbol trade_id event_time",
              f"symbol trade_id {_TIME} price qty is_buyer_maker source"),
        _spec("signals", "signal_id event_time",
              f"signal_id symbol {_TIME} feature_version action confidence probabilities close "
              "atr_pct volatility vetoed final_action votes bias model_drift health_veto_share"),
        _spec("vetoes", "signal_id ordinal event_time",
              f"signal_id ordinal symbol {_TIME} rule detail observed threshold"),
        _spec("decisions", "decision_id event_time",
              f"decision_id signal_id symbol {_TIME} side confidence price atr_pct regime "
              "strategy size_multiplier risk_fraction margin_usd model_versions model_drift "
              "health_veto_share"),
        _spec("approvals", "order_id event_time",
              f"order_id decision_id symbol {_TIME} approved_margin_usd max_leverage equity_usd "
              "open_positions trading_mode mode_reasons"),
        _spec("rejections", "decision_id event_time",
              f"decision_id symbol {_TIME} side margin_usd confidence rule detail observed "
              "limit_value"),
        _spec("orders", "order_id event_time",
              f"order_id decision_id symbol {_TIME} side entry_type entry_price qty leverage "
              "margin_usd legs strategy regime size_multiplier confidence model_versions"),
        _spec("fills", "fill_id event_time",
              f"fill_id order_id decision_id symbol {_TIME} leg_id leg_kind side qty price fee "
              "is_partial liquidity venue slippage_bps"),
        _spec("positions", "position_id event qty_open event_time",
              f"position_id event qty_open order_id decision_id symbol {_TIME} side "
              "entry_price mark_price realized_pnl unrealized_pnl stop_price fill_id"),
        _spec("trades", "trade_id event_time",
              f"trade_id decision_id order_id symbol {_TIME} opened_ms side entry_price "
              "exit_price qty leverage margin_usd gross_pnl fees net_pnl return_pct holding_ms "
              "exit_reason strategy regime size_multiplier confidence model_versions"),
        _spec("rewards", "reward_id event_time",
              f"reward_id trade_id decision_id symbol {_TIME} learner state action reward "
              "net_pnl return_pct regime strategy size_multiplier"),
        _spec("model_events", "event_id event_time",
              f"event_id model version {_TIME} kind detail symbol metric_name metric"),
        _spec("control_commands", "command_id event_time",
              f"command_id command {_TIME} issued_at_ms issued_by reason symbol args"),
        _spec("universe_changes", "event_id event_time",
              f"event_id symbol {_TIME} change verdict rank quote_volume range_ratio "
              "listed_days universe_size server_time_ms reason"),
        _spec("mode_changes", "event_id event_time",
              f"event_id {_TIME} mode previous reasons cause equity_usd peak_equity_usd "
              "drawdown"),
        _spec("shadow_scores", "shadow_id symbol event_time",
              f"shadow_id symbol {_TIME} decided_ms candidate champion votes candidate_action "
              "candidate_confidence champion_action champion_confidence volatility "
              "forward_return round_trip_cost candidate_pnl champion_pnl"),
        _spec("dead_letters", "dead_letter_id",
              "dead_letter_id reason error_type stage detail raw symbol event_time_ms "
              "source_topic source_partition source_offset source_file source_line raw_key"),
        _spec("journal_undecodable", "topic partition offset",
              "topic partition offset reason raw raw_key"),
    )
}  # fmt: skip

Row = tuple[str, tuple[Any, ...]]


def event_time(ms: int) -> datetime:
    """The UTC instant of epoch milliseconds ``ms``, exactly (integer arithmetic, no float)."""
    return _EPOCH + timedelta(milliseconds=ms)


def _row(table: str, **values: Any) -> Row:
    """``values`` in the COPY column order of ``table``; drift between code and table raises."""
    spec = TABLES[table]
    if values.keys() != set(spec.columns):
        missing = set(spec.columns) - values.keys()
        extra = values.keys() - set(spec.columns)
        raise JournalSchemaError(f"{table}: row missing {sorted(missing)}, extra {sorted(extra)}")
    return table, tuple(values[c] for c in spec.columns)


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _timed(ms: int) -> dict[str, Any]:
    return {"event_time": event_time(ms), "event_time_ms": ms}


def undecodable_row(
    topic: str, partition: int, offset: int, error: Exception, raw: bytes, raw_key: bytes | None
) -> Row:
    """The ``journal_undecodable`` row of a record that could not be decoded (kept raw)."""
    return _row("journal_undecodable", topic=topic, partition=partition, offset=offset,
                reason=str(error)[:2000], raw=raw, raw_key=raw_key)  # fmt: skip


# ------------------------------------------------------------------- records -> table rows


def tick_rows(t: TickReceived, trade_sample_every: int) -> list[Row]:
    """A kline as it is, after each bar of its warm-up history (a joiner's, source
    ``<source> (history)``; a bar the journal has already is kept as it was); a trade tick
    only if its id falls in the deterministic sample."""
    if t.kind == TickKind.KLINE_1M:
        history = f"{t.source} (history)"
        bars = [(h, history) for h in t.history] + [(t, t.source)]
        return [
            _row("ticks", symbol=t.symbol, **_timed(_open_time(b)), open=b.open, high=b.high,
                 low=b.low, close=b.close, volume=b.volume, interval_ms=t.interval_ms,
                 source=source)
            for b, source in bars
        ]  # fmt: skip
    keep = trade_sample_every > 0 and t.trade_id is not None
    if not keep or (t.trade_id or 0) % trade_sample_every != 0:
        return []
    return [
        _row("trade_ticks", symbol=t.symbol, trade_id=t.trade_id, **_timed(t.event_time_ms),
             price=t.close, qty=t.volume, is_buyer_maker=t.is_buyer_maker, source=t.source)
    ]  # fmt: skip


def _open_time(bar: TickReceived | HistoryBar) -> int:
    return bar.open_time_ms if isinstance(bar, HistoryBar) else bar.event_time_ms


def signal_rows(s: SignalSupervised) -> list[Row]:
    """The supervised signal, plus one ``vetoes`` row per veto reason."""
    sig = s.signal
    rows = [
        _row("signals", signal_id=s.signal_id, symbol=s.symbol, **_timed(s.event_time_ms),
             feature_version=sig.feature_version, action=str(sig.action),
             confidence=sig.confidence, probabilities=list(sig.probabilities), close=sig.close,
             atr_pct=sig.atr_pct, volatility=sig.volatility, vetoed=s.vetoed,
             final_action=str(s.final_action), votes=_jsonb([v.to_avro() for v in sig.votes]),
             bias=_jsonb(s.bias.to_avro()), model_drift=str(sig.model_drift),
             health_veto_share=s.health_veto_share)
    ]  # fmt: skip
    rows.extend(
        _row("vetoes", signal_id=s.signal_id, ordinal=i, symbol=s.symbol,
             **_timed(s.event_time_ms), rule=str(v.rule), detail=v.detail, observed=v.observed,
             threshold=v.threshold)
        for i, v in enumerate(s.veto_reasons)
    )  # fmt: skip
    return rows


def decision_rows(d: DecisionSized) -> list[Row]:
    """``decisions.sized`` -> ``decisions``."""
    return [
        _row("decisions", decision_id=d.decision_id, signal_id=d.signal_id, symbol=d.symbol,
             **_timed(d.event_time_ms), side=str(d.side), confidence=d.confidence, price=d.price,
             atr_pct=d.atr_pct, regime=str(d.regime), strategy=d.strategy,
             size_multiplier=d.size_multiplier, risk_fraction=d.risk_fraction,
             margin_usd=d.margin_usd, model_versions=_jsonb(dict(d.model_versions)),
             model_drift=str(d.model_drift), health_veto_share=d.health_veto_share)
    ]  # fmt: skip


def approval_rows(a: OrderApproved) -> list[Row]:
    """``orders.approved`` -> ``approvals`` (its decision is journaled from its own topic)."""
    return [
        _row("approvals", order_id=a.order_id, decision_id=a.decision_id, symbol=a.symbol,
             **_timed(a.event_time_ms), approved_margin_usd=a.approved_margin_usd,
             max_leverage=a.max_leverage, equity_usd=a.equity_usd,
             open_positions=a.open_positions, trading_mode=str(a.trading_mode),
             mode_reasons=_jsonb(list(a.mode_reasons)))
    ]  # fmt: skip


def rejection_rows(r: OrderRejected) -> list[Row]:
    """``risk.rejections`` -> ``rejections``."""
    return [
        _row("rejections", decision_id=r.decision_id, symbol=r.symbol, **_timed(r.event_time_ms),
             side=str(r.side), margin_usd=r.margin_usd, confidence=r.confidence,
             rule=str(r.rule), detail=r.detail, observed=r.observed, limit_value=r.limit)
    ]  # fmt: skip


def order_rows(o: OrderPlanned) -> list[Row]:
    """``orders.intents`` -> ``orders`` (legs as JSON)."""
    return [
        _row("orders", order_id=o.order_id, decision_id=o.decision_id, symbol=o.symbol,
             **_timed(o.event_time_ms), side=str(o.side), entry_type=str(o.entry_type),
             entry_price=o.entry_price, qty=o.qty, leverage=o.leverage, margin_usd=o.margin_usd,
             legs=_jsonb([leg.to_avro() for leg in o.legs]), strategy=o.strategy,
             regime=str(o.regime), size_multiplier=o.size_multiplier, confidence=o.confidence,
             model_versions=_jsonb(dict(o.model_versions)))
    ]  # fmt: skip


def fill_rows(f: FillExecuted) -> list[Row]:
    """``execution.fills`` -> ``fills``."""
    return [
        _row("fills", fill_id=f.fill_id, order_id=f.order_id, decision_id=f.decision_id,
             symbol=f.symbol, **_timed(f.event_time_ms), leg_id=f.leg_id,
             leg_kind=str(f.leg_kind), side=str(f.side), qty=f.qty, price=f.price, fee=f.fee,
             is_partial=f.is_partial, liquidity=str(f.liquidity), venue=f.venue,
             slippage_bps=f.slippage_bps)
    ]  # fmt: skip


def position_rows(p: PositionChanged) -> list[Row]:
    """``positions.events`` -> ``positions``."""
    return [
        _row("positions", position_id=p.position_id, event=str(p.event), qty_open=p.qty_open,
             order_id=p.order_id, decision_id=p.decision_id, symbol=p.symbol,
             **_timed(p.event_time_ms), side=str(p.side), entry_price=p.entry_price,
             mark_price=p.mark_price, realized_pnl=p.realized_pnl,
             unrealized_pnl=p.unrealized_pnl, stop_price=p.stop_price, fill_id=p.fill_id)
    ]  # fmt: skip


def trade_rows(t: TradeClosed) -> list[Row]:
    """``trades.closed`` -> ``trades`` (every field, exact doubles)."""
    return [
        _row("trades", trade_id=t.trade_id, decision_id=t.decision_id, order_id=t.order_id,
             symbol=t.symbol, **_timed(t.event_time_ms), opened_ms=t.opened_ms,
             side=str(t.side), entry_price=t.entry_price, exit_price=t.exit_price, qty=t.qty,
             leverage=t.leverage, margin_usd=t.margin_usd, gross_pnl=t.gross_pnl, fees=t.fees,
             net_pnl=t.net_pnl, return_pct=t.return_pct, holding_ms=t.holding_ms,
             exit_reason=str(t.exit_reason), strategy=t.strategy, regime=str(t.regime),
             size_multiplier=t.size_multiplier, confidence=t.confidence,
             model_versions=_jsonb(dict(t.model_versions)))
    ]  # fmt: skip


def reward_rows(r: RewardComputed) -> list[Row]:
    """``learning.rewards`` -> ``rewards``."""
    return [
        _row("rewards", reward_id=r.reward_id, trade_id=r.trade_id, decision_id=r.decision_id,
             symbol=r.symbol, **_timed(r.event_time_ms), learner=str(r.learner), state=r.state,
             action=r.action, reward=r.reward, net_pnl=r.net_pnl, return_pct=r.return_pct,
             regime=str(r.regime), strategy=r.strategy, size_multiplier=r.size_multiplier)
    ]  # fmt: skip


def model_event_rows(m: ModelEventRecorded) -> list[Row]:
    """``models.events`` -> ``model_events``."""
    return [
        _row("model_events", event_id=m.event_id, model=m.model, version=m.version,
             **_timed(m.event_time_ms), kind=str(m.kind), detail=m.detail, symbol=m.symbol,
             metric_name=m.metric_name, metric=m.metric)
    ]  # fmt: skip


def command_rows(c: ControlCommand) -> list[Row]:
    """``control.commands`` -> ``control_commands``."""
    return [
        _row("control_commands", command_id=c.command_id, command=str(c.command),
             **_timed(c.event_time_ms), issued_at_ms=c.issued_at_ms, issued_by=c.issued_by,
             reason=c.reason, symbol=c.symbol, args=_jsonb(dict(c.args)))
    ]  # fmt: skip


def universe_rows(u: UniverseChanged) -> list[Row]:
    """``universe.events`` -> ``universe_changes``."""
    return [
        _row("universe_changes", event_id=u.event_id, symbol=u.symbol, **_timed(u.event_time_ms),
             change=str(u.change), verdict=None if u.verdict is None else str(u.verdict),
             rank=u.rank, quote_volume=u.quote_volume, range_ratio=u.range_ratio,
             listed_days=u.listed_days, universe_size=u.universe_size,
             server_time_ms=u.server_time_ms, reason=u.reason)
    ]  # fmt: skip


def mode_change_rows(m: TradingModeChanged) -> list[Row]:
    """``policy.modes`` -> ``mode_changes``."""
    return [
        _row("mode_changes", event_id=m.event_id, **_timed(m.event_time_ms), mode=str(m.mode),
             previous=str(m.previous), reasons=_jsonb(list(m.reasons)), cause=m.cause,
             equity_usd=m.equity_usd, peak_equity_usd=m.peak_equity_usd, drawdown=m.drawdown)
    ]  # fmt: skip


def shadow_rows(s: ShadowScored) -> list[Row]:
    """``signals.shadow`` -> ``shadow_scores``."""
    return [
        _row("shadow_scores", shadow_id=s.shadow_id, symbol=s.symbol, **_timed(s.event_time_ms),
             decided_ms=s.decided_ms, candidate=_jsonb(dict(s.candidate)),
             champion=_jsonb(dict(s.champion)), votes=_jsonb([v.to_avro() for v in s.votes]),
             candidate_action=str(s.candidate_action),
             candidate_confidence=s.candidate_confidence, champion_action=str(s.champion_action),
             champion_confidence=s.champion_confidence, volatility=s.volatility,
             forward_return=s.forward_return, round_trip_cost=s.round_trip_cost,
             candidate_pnl=s.candidate_pnl, champion_pnl=s.champion_pnl)
    ]  # fmt: skip


def dead_letter_rows(d: DeadLettered) -> list[Row]:
    """``deadletter`` -> ``dead_letters`` (raw bytes kept)."""
    return [
        _row("dead_letters", dead_letter_id=d.dead_letter_id, reason=d.reason,
             error_type=d.error_type, stage=d.stage, detail=d.detail, raw=d.raw,
             symbol=d.symbol, event_time_ms=d.event_time_ms, source_topic=d.source_topic,
             source_partition=d.source_partition, source_offset=d.source_offset,
             source_file=d.source_file, source_line=d.source_line, raw_key=d.raw_key)
    ]  # fmt: skip


_ROW_BUILDERS: Final[Mapping[type[AvroRecord], Callable[[Any], list[Row]]]] = {
    SignalSupervised: signal_rows,
    DecisionSized: decision_rows,
    OrderApproved: approval_rows,
    OrderRejected: rejection_rows,
    OrderPlanned: order_rows,
    FillExecuted: fill_rows,
    PositionChanged: position_rows,
    TradeClosed: trade_rows,
    RewardComputed: reward_rows,
    ModelEventRecorded: model_event_rows,
    ControlCommand: command_rows,
    UniverseChanged: universe_rows,
    TradingModeChanged: mode_change_rows,
    ShadowScored: shadow_rows,
    DeadLettered: dead_letter_rows,
}


def rows_for(record: AvroRecord, trade_sample_every: int = 100) -> list[Row]:
    """The journal rows of one decoded business record (empty for a non-sampled trade tick)."""
    if isinstance(record, TickReceived):
        return tick_rows(record, trade_sample_every)
    builder = _ROW_BUILDERS.get(type(record))
    if builder is None:
        raise JournalSchemaError(f"no journal table for {type(record).__name__}")
    return builder(record)
