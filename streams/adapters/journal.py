"""The journal: every business record of the topology into PostgreSQL, idempotently.

A sink at the edge of the topology (DESIGN.md, "journal sink"). It consumes the business topics
with its own confluent-kafka consumer group and writes one table per record type
(``streams/journal_migrations``). Guarantees, and how they are kept:

* **Idempotent.** Every table is keyed by the record's natural id (``trade_id``,
  ``decision_id``, ...; ids derive from causes, docs/determinism.md). A batch is COPYed into
  per-connection staging tables, then ``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING``:
  a redelivery, a restart or a second replay of the same data adds no row (first write wins;
  deterministic ids mean a second write would carry the same values anyway).
* **Committed with the offsets.** All tables of a batch are written in ONE database
  transaction; only after it committed are the Kafka offsets of the batch committed
  (synchronously). A crash between the two re-delivers the batch, which the keys absorb.
* **No loss on failure.** A database error rolls the transaction back, commits no offset, seeks
  the consumer back to the batch's first offsets, backs off and tries again (and, when
  ``max_attempts`` is set, gives up with :class:`JournalWriteError` instead of skipping).

Ticks: 1-minute klines are kept as they are (a kline *is* the 1-minute aggregate); raw trade
ticks are sampled deterministically, ``trade_id % trade_sample_every == 0``, so two replays keep
the same trades. ``market.features`` (derived from ticks, large windows) and
``signals.ensemble`` (embedded in every ``signals.supervised`` record) are not journaled.
In-band watermarks (header ``qt-watermark``) carry no business data and are skipped, but their
offsets are committed like any other. A record the journal cannot decode is stored raw in
``journal_undecodable`` (by topic, partition, offset): the sink never commits past a record it
did not keep.

Migrations (:func:`migrate`): ``NNN_name[.variant].sql`` applied in order, each in its own
transaction together with its row in ``schema_migrations`` (version, name, variant, sha256).
A version with a ``timescale`` and a ``plain`` variant gets the first when the TimescaleDB
extension is available, the second otherwise. A changed file of an applied version is an error.

Wall-clock time is used only for batching and retry pacing (the sink's own edge), never for
trading logic; ``clock`` and ``sleep`` are injectable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

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
    SignalSupervised,
    TickKind,
    TickReceived,
    TradeClosed,
)
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Consumer, Message, TopicPartition

    from streams.contracts.registry import SchemaRegistry

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "journal_migrations"
#: Business topics the journal consumes (features and ensemble signals are left out: see above).
JOURNALED_TOPICS: Final = (
    Topic.MARKET_TICKS,
    Topic.SIGNALS_SUPERVISED,
    Topic.DECISIONS_SIZED,
    Topic.ORDERS_APPROVED,
    Topic.RISK_REJECTIONS,
    Topic.ORDERS_INTENTS,
    Topic.EXECUTION_FILLS,
    Topic.POSITIONS_EVENTS,
    Topic.TRADES_CLOSED,
    Topic.LEARNING_REWARDS,
    Topic.MODELS_EVENTS,
    Topic.CONTROL_COMMANDS,
    Topic.DEADLETTER,
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")


# ------------------------------------------------------------------------------------ errors


class JournalError(Exception):
    """Base of the journal's errors."""


class JournalConfigError(JournalError):
    """Bad journal options (schema name, sampling rate, ...)."""


class MigrationError(JournalError):
    """A migration file is malformed, changed after it was applied, or failed to apply."""


class JournalSchemaError(JournalError):
    """A row does not match its table's declared columns (code and migrations drifted)."""


class JournalWriteError(JournalError):
    """``attempts`` consecutive writes failed; the last batch's offsets were not committed.

    ``first_offsets`` maps ``(topic, partition)`` to the first offset of the batch: where the
    consumer stands (nothing from there on is committed).
    """

    def __init__(
        self, attempts: int, first_offsets: Mapping[tuple[str, int], int], cause: BaseException
    ) -> None:
        self.attempts = attempts
        self.first_offsets = dict(first_offsets)
        self.cause = cause
        where = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(first_offsets.items()))
        super().__init__(
            f"journal batch not written after {attempts} attempt(s), offsets not committed "
            f"(batch starts at {where}): {type(cause).__name__}: {cause}"
        )


class JournalDatabaseError(JournalError):
    """The journal database cannot be reached (DSN wrong, server down, authentication)."""


class JournalConsumeError(JournalError):
    """The Kafka consumer reported an error the sink cannot continue past."""


# ------------------------------------------------------------------------------------ tables


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
              "atr_pct volatility vetoed final_action votes bias"),
        _spec("vetoes", "signal_id ordinal event_time",
              f"signal_id ordinal symbol {_TIME} rule detail observed threshold"),
        _spec("decisions", "decision_id event_time",
              f"decision_id signal_id symbol {_TIME} side confidence price atr_pct regime "
              "strategy size_multiplier risk_fraction margin_usd model_versions"),
        _spec("approvals", "order_id event_time",
              f"order_id decision_id symbol {_TIME} approved_margin_usd max_leverage equity_usd "
              "open_positions"),
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


# ------------------------------------------------------------------- records -> table rows


def tick_rows(t: TickReceived, trade_sample_every: int) -> list[Row]:
    """A kline as it is; a trade tick only if its id falls in the deterministic sample."""
    if t.kind == TickKind.KLINE_1M:
        return [
            _row("ticks", symbol=t.symbol, **_timed(t.event_time_ms), open=t.open, high=t.high,
                 low=t.low, close=t.close, volume=t.volume, interval_ms=t.interval_ms,
                 source=t.source)
        ]  # fmt: skip
    keep = trade_sample_every > 0 and t.trade_id is not None
    if not keep or (t.trade_id or 0) % trade_sample_every != 0:
        return []
    return [
        _row("trade_ticks", symbol=t.symbol, trade_id=t.trade_id, **_timed(t.event_time_ms),
             price=t.close, qty=t.volume, is_buyer_maker=t.is_buyer_maker, source=t.source)
    ]  # fmt: skip


def signal_rows(s: SignalSupervised) -> list[Row]:
    """The supervised signal, plus one ``vetoes`` row per veto reason."""
    sig = s.signal
    rows = [
        _row("signals", signal_id=s.signal_id, symbol=s.symbol, **_timed(s.event_time_ms),
             feature_version=sig.feature_version, action=str(sig.action),
             confidence=sig.confidence, probabilities=list(sig.probabilities), close=sig.close,
             atr_pct=sig.atr_pct, volatility=sig.volatility, vetoed=s.vetoed,
             final_action=str(s.final_action), votes=_jsonb([v.to_avro() for v in sig.votes]),
             bias=_jsonb(s.bias.to_avro()))
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
             margin_usd=d.margin_usd, model_versions=_jsonb(dict(d.model_versions)))
    ]  # fmt: skip


def approval_rows(a: OrderApproved) -> list[Row]:
    """``orders.approved`` -> ``approvals`` (its decision is journaled from its own topic)."""
    return [
        _row("approvals", order_id=a.order_id, decision_id=a.decision_id, symbol=a.symbol,
             **_timed(a.event_time_ms), approved_margin_usd=a.approved_margin_usd,
             max_leverage=a.max_leverage, equity_usd=a.equity_usd,
             open_positions=a.open_positions)
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


# ------------------------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: version, name, variant (``""``, ``plain`` or ``timescale``), SQL."""

    version: int
    name: str
    variant: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the SQL text: an applied migration must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate` did: versions applied now, and whether TimescaleDB is used."""

    applied: tuple[int, ...]
    timescale: bool


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNN_name[.variant].sql`` in ``directory``, sorted by version then variant."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: not named NNN_name[.plain|.timescale].sql")
        version, name, variant = int(match[1]), match[2], match[3] or ""
        found.append(Migration(version, name, variant, path.read_text()))
    return sorted(found, key=lambda m: (m.version, m.variant))


def choose_variants(migrations: Sequence[Migration], timescale: bool) -> list[Migration]:
    """One migration per version: the variant for this server (plain or timescale)."""
    by_version: dict[int, dict[str, Migration]] = {}
    for m in migrations:
        by_version.setdefault(m.version, {})[m.variant] = m
    chosen = []
    for version, variants in sorted(by_version.items()):
        if "" in variants and len(variants) > 1:
            raise MigrationError(f"version {version:03d} has both a plain file and variants")
        if "" in variants:
            chosen.append(variants[""])
            continue
        want = "timescale" if timescale else "plain"
        if want not in variants:
            raise MigrationError(f"version {version:03d} has no '{want}' variant")
        chosen.append(variants[want])
    return chosen


def validate_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case SQL identifier (it is interpolated as one)."""
    if not _SCHEMA_NAME.match(schema):
        raise JournalConfigError(f"journal schema {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def timescale_available(conn: psycopg.Connection[Any]) -> bool:
    """Whether TimescaleDB is installed in this database, or can be (then it is created).

    Creation needs the library preloaded (``shared_preload_libraries``); a failure to create
    it means "not available", inside a savepoint so the caller's transaction survives.
    """
    import psycopg

    with conn.transaction():
        installed = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        if installed:
            return True
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if not available:
            return False
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            log.warning("TimescaleDB is packaged but cannot be created (%s): plain tables", exc)
            return False
        return True


def migrate(
    conn: psycopg.Connection[Any],
    schema: str = "public",
    *,
    timescale: bool | None = None,
    directory: Path = MIGRATIONS_DIR,
) -> MigrationReport:
    """Create ``schema`` and apply the pending migrations, each in its own transaction.

    Concurrent migrators serialise on an advisory lock per schema. ``timescale=None`` detects
    the extension; a version already applied keeps its variant (no silent conversion).
    """
    from psycopg import sql

    validate_schema_name(schema)
    use_timescale = timescale_available(conn) if timescale is None else timescale
    migrations = choose_variants(load_migrations(directory), use_timescale)
    ident = sql.Identifier(schema)
    applied_now = []
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, variant text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
    for migration in migrations:
        if _apply_one(conn, schema, migration):
            applied_now.append(migration.version)
    return MigrationReport(tuple(applied_now), use_timescale)


def _apply_one(conn: psycopg.Connection[Any], schema: str, migration: Migration) -> bool:
    """Apply ``migration`` unless already applied (checked under the schema's lock)."""
    import psycopg
    from psycopg import sql

    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qt-journal:{schema}",))
        done = conn.execute(
            sql.SQL("SELECT variant, checksum FROM {}.schema_migrations WHERE version = %s").format(
                ident
            ),
            (migration.version,),
        ).fetchone()
        if done is not None:
            _check_unchanged(migration, done[0], done[1])
            return False
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident))
        try:
            conn.execute(migration.sql.encode())
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {migration.version:03d}_{migration.name}"
                f"{'.' + migration.variant if migration.variant else ''} failed in schema "
                f"{schema}: {exc}"
            ) from exc
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.schema_migrations (version, name, variant, checksum)"
                " VALUES (%s, %s, %s, %s)"
            ).format(ident),
            (migration.version, migration.name, migration.variant, migration.checksum),
        )
    return True


def _check_unchanged(migration: Migration, variant: str, checksum: str) -> None:
    if variant != migration.variant:
        log.info(
            "migration %03d was applied as '%s'; this server would choose '%s': kept as applied",
            migration.version, variant or "-", migration.variant or "-",
        )  # fmt: skip
        return
    if checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:03d}_{migration.name} changed after it was applied "
            "(checksum differs): add a new migration instead of editing an applied one"
        )


# ----------------------------------------------------------------------------------- writing


@dataclass
class Batch:
    """Rows of a batch per table, and the Kafka positions it covers."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    #: (topic, partition) -> first offset in the batch (where to seek back on failure)
    first: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> next offset to consume (what to commit on success)
    next: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0
    watermarks: int = 0
    undecodable: int = 0

    def add_position(self, topic: str, partition: int, offset: int) -> None:
        """Cover ``offset`` of ``topic[partition]``."""
        self.first.setdefault((topic, partition), offset)
        self.next[(topic, partition)] = offset + 1

    def add_rows(self, rows: Iterable[Row]) -> None:
        """Queue ``rows`` for their tables."""
        for table, values in rows:
            self.rows.setdefault(table, []).append(values)

    @property
    def row_count(self) -> int:
        """Rows queued over all tables."""
        return sum(len(v) for v in self.rows.values())

    def __bool__(self) -> bool:
        return bool(self.next)


def _stage_name(table: str) -> str:
    return f"qt_stage_{table}"


def prepare_staging(conn: psycopg.Connection[Any], schema: str) -> None:
    """Per-connection staging tables, emptied at every commit (``ON COMMIT DELETE ROWS``).

    Temporary, so concurrent sinks never see each other's staging rows; created once per
    connection, so batches churn no catalog rows.
    """
    from psycopg import sql

    with conn.transaction():
        for table in TABLES:
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}.{} INCLUDING DEFAULTS)"
                    " ON COMMIT DELETE ROWS"
                ).format(
                    sql.Identifier(_stage_name(table)),
                    sql.Identifier(schema),
                    sql.Identifier(table),
                )
            )


def write_batch(conn: psycopg.Connection[Any], schema: str, batch: Batch) -> Counter[str]:
    """Write every row of ``batch`` in ONE transaction; the number of new rows per table.

    COPY into the staging table, then insert what is not there yet: ``ON CONFLICT (natural
    key) DO NOTHING`` also absorbs duplicates inside the batch (a redelivered record).
    """
    from psycopg import sql

    inserted: Counter[str] = Counter()
    with conn.transaction(), conn.cursor() as cur:
        for table, rows in batch.rows.items():
            spec = TABLES[table]
            cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
            stage = sql.Identifier(_stage_name(table))
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
                for row in rows:
                    copy.write_row(row)
            insert = sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING")
            key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
            target = (sql.Identifier(schema), sql.Identifier(table))
            cur.execute(insert.format(*target, cols, cols, stage, key))
            inserted[table] += max(cur.rowcount, 0)
    return inserted


# -------------------------------------------------------------------------------- the sink


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """How the sink batches, samples and retries."""

    schema: str = "public"
    batch_size: int = 5_000
    max_batch_wait_s: float = 1.0
    trade_sample_every: int = 100
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    #: give up (raise :class:`JournalWriteError`) after this many consecutive failed writes
    #: (a retry re-polls from the batch's first offsets, so its batch may differ);
    #: ``None`` = retry forever (the long-running sink: it waits for the database to return)
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        if self.batch_size < 1 or self.trade_sample_every < 0 or self.retry_initial_s < 0:
            raise JournalConfigError(f"invalid journal options: {self}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise JournalConfigError("max_attempts must be >= 1 (or None: retry forever)")


@dataclass
class JournalStats:
    """What a sink did: records, rows inserted per table, watermarks, retries, commits."""

    records: int = 0
    watermarks: int = 0
    undecodable: int = 0
    batches: int = 0
    failed_writes: int = 0
    commit_failures: int = 0
    inserted: Counter[str] = field(default_factory=Counter)


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff before retry ``attempt`` (1-based): initial, 2x, 4x, ... capped."""
    return float(min(max_s, initial_s * 2 ** max(attempt - 1, 0)))


class JournalSink:
    """Consumes decoded business records, writes batches, commits offsets after the database.

    The consumer is given (subscribed or assigned by the caller) and must have
    ``enable.auto.commit=false``; ``connect`` opens a database connection (called again after
    a connection is lost).
    """

    def __init__(
        self,
        consumer: Consumer,
        connect: Callable[[], psycopg.Connection[Any]],
        prefix: str,
        options: JournalOptions,
        *,
        registry: SchemaRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._connect = connect
        self._prefix = prefix
        self._options = options
        self._registry = registry
        self._clock = clock
        self._sleep = sleep
        self._conn: psycopg.Connection[Any] | None = None
        self._failures = 0
        self.stats = JournalStats()
        #: (topic, partition) -> next offset to consume: start, then after each committed batch
        self.positions: dict[tuple[str, int], int] = {}
        self._eof: dict[tuple[str, int], int] = {}

    def reached(self, pending: Batch | None = None) -> dict[tuple[str, int], int]:
        """How far each partition is covered: committed batches, ``pending``, end-of-partition.

        An end-of-partition event counts only when no write is outstanding before it: a failed
        batch forgets the events it saw (:meth:`_seek_back`).
        """
        out = dict(self.positions)
        for key, offset in (pending.next if pending is not None else {}).items():
            out[key] = max(out.get(key, 0), offset)
        for key, offset in self._eof.items():
            out[key] = max(out.get(key, 0), offset)
        return out

    # ------------------------------------------------------------------------- consuming

    def poll_batch(self, done: Callable[[Batch], bool] | None = None) -> Batch:
        """Consume until the batch is full, ``max_batch_wait_s`` passed, or ``done(batch)``."""
        batch = Batch()
        deadline = self._clock() + self._options.max_batch_wait_s
        while batch.row_count < self._options.batch_size and self._clock() < deadline:
            if done is not None and done(batch):
                break
            messages = self._consumer.consume(num_messages=500, timeout=0.2)
            for msg in messages:
                self._take(batch, msg)
        return batch

    def _take(self, batch: Batch, msg: Message) -> None:
        from confluent_kafka import KafkaError

        error = msg.error()
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # Everything before ``offset`` was delivered (trailing transaction markers
                # included, which no record covers); forgotten again if the batch fails.
                self._eof[(topic, partition)] = offset
                return
            if error.fatal() or not error.retriable():
                raise JournalConsumeError(f"consuming {topic}[{partition}]: {error}")
            log.warning("consumer: %s", error)
            return
        batch.add_position(topic, partition, offset)
        if header_value(msg.headers(), WATERMARK_HEADER) is not None:
            batch.watermarks += 1
            return
        batch.records += 1
        batch.add_rows(self._rows_of(msg, batch))

    def _rows_of(self, msg: Message, batch: Batch) -> list[Row]:
        from streams.contracts.codec import topic_codec
        from streams.contracts.errors import ContractError

        name = msg.topic() or ""
        base = Topic(name.removeprefix(self._prefix))
        raw = msg.value() or b""
        try:
            record = topic_codec(base, self._registry).decode_record(raw)
        except ContractError as exc:
            batch.undecodable += 1
            return [
                _row("journal_undecodable", topic=name, partition=msg.partition(),
                     offset=msg.offset(), reason=str(exc)[:2000], raw=raw, raw_key=msg.key())
            ]  # fmt: skip
        return rows_for(record, self._options.trade_sample_every)

    # --------------------------------------------------------------------------- writing

    def flush(self, batch: Batch) -> bool:
        """Write ``batch`` then commit its offsets; False (and seek back) if the write failed.

        Raises :class:`JournalWriteError` once ``max_attempts`` writes of the same batch failed.
        """
        import psycopg

        if not batch:
            return True
        try:
            if batch.rows:
                inserted = write_batch(self._connection(), self._options.schema, batch)
                self.stats.inserted.update(inserted)
        except psycopg.Error as exc:
            self._on_write_failure(batch, exc)
            return False
        self._failures = 0
        self._commit(batch)
        self.stats.batches += 1
        self.stats.records += batch.records
        self.stats.watermarks += batch.watermarks
        self.stats.undecodable += batch.undecodable
        return True

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            prepare_staging(conn, self._options.schema)
            self._conn = conn
        return self._conn

    def _on_write_failure(self, batch: Batch, exc: BaseException) -> None:
        """Roll back (done by the transaction block), rewind the consumer, back off."""
        self._failures += 1
        self.stats.failed_writes += 1
        if self._conn is not None and self._conn.broken:
            self._conn.close()
            self._conn = None
        self._seek_back(batch)
        attempts = self._options.max_attempts
        if attempts is not None and self._failures >= attempts:
            raise JournalWriteError(self._failures, batch.first, exc) from exc
        delay = backoff_s(self._failures, self._options.retry_initial_s, self._options.retry_max_s)
        log.warning(
            "journal write failed (attempt %d), retrying in %.1f s, offsets not committed: %s",
            self._failures, delay, exc,
        )  # fmt: skip
        self._sleep(delay)

    def _seek_back(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        for (topic, partition), offset in batch.first.items():
            self._eof.pop((topic, partition), None)
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Revoked by a rebalance meanwhile: its new owner starts from the committed
                # offset, which is at or before this batch, so nothing is lost either way.
                log.warning("seek %s[%d]@%d failed: %s", topic, partition, offset, exc)

    def _commit(self, batch: Batch) -> None:
        """Commit the batch's next offsets, synchronously, after the database commit."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in the database: a redelivery after this is absorbed by the keys.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (rows are written; redelivery is harmless): %s", exc)
        for key, offset in batch.next.items():
            self.positions[key] = max(self.positions.get(key, 0), offset)

    def close(self) -> None:
        """Close the database connection (the caller closes the consumer)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ------------------------------------------------------------------------------ entry points


def migrate_dsn(dsn: str, schema: str = "public") -> MigrationReport:
    """:func:`migrate` on a fresh connection to ``dsn``; an unreachable server is ours to raise."""
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name="quantum-trader-journal")
    except psycopg.OperationalError as exc:
        raise JournalDatabaseError(f"cannot connect to the journal database: {exc}") from exc
    with conn:
        return migrate(conn, schema)


def journal_topics(prefix: str) -> list[str]:
    """Broker-side names of the journaled topics under ``prefix``."""
    return [topic_name(t, prefix) for t in JOURNALED_TOPICS]


def _consumer(bootstrap: str, group: str) -> Consumer:
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )


def default_group(prefix: str) -> str:
    """The journal's consumer group under ``prefix`` (apart from every stage's group)."""
    return f"{prefix}journal"


def _connector(dsn: str) -> Callable[[], psycopg.Connection[Any]]:
    def connect() -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(dsn, application_name="quantum-trader-journal")

    return connect


def _run_bounds(
    consumer: Consumer, topics: Sequence[str]
) -> tuple[list[TopicPartition], dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(partitions, start positions, end offsets) of ``topics`` for this consumer's group."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    metadata = consumer.list_topics(timeout=10).topics
    parts = [
        TopicPartition(t, p)
        for t in topics
        if t in metadata and metadata[t].error is None
        for p in sorted(metadata[t].partitions)
    ]
    ends: dict[tuple[str, int], int] = {}
    starts: dict[tuple[str, int], int] = {}
    committed = {(c.topic, c.partition): c.offset for c in consumer.committed(parts, timeout=10)}
    for tp in parts:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        key = (tp.topic, tp.partition)
        ends[key] = high
        start = committed.get(key, -1)
        starts[key] = start if start >= 0 else low
        tp.offset = start if start >= 0 else OFFSET_BEGINNING
    return parts, starts, ends


def journal_run(
    bootstrap: str,
    prefix: str,
    dsn: str,
    *,
    group: str | None = None,
    options: JournalOptions | None = None,
    registry: SchemaRegistry | None = None,
    migrate_first: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> JournalStats:
    """Journal a finished run's topics (under ``prefix``) up to their current end, then stop.

    Resumes from the group's committed offsets (default group ``<prefix>journal``), so a rerun
    after a failure continues where the last committed batch ended. For tests and the demo.
    """
    opts = options or JournalOptions(max_attempts=5)
    if migrate_first:
        migrate_dsn(dsn, opts.schema)
    consumer = _consumer(bootstrap, group or default_group(prefix))
    sink = JournalSink(consumer, _connector(dsn), prefix, opts, registry=registry, sleep=sleep)
    try:
        parts, starts, ends = _run_bounds(consumer, journal_topics(prefix))
        sink.positions.update(starts)
        consumer.assign(parts)

        def reached_end() -> bool:
            return covers(sink.reached(), ends)

        while not reached_end():
            batch = sink.poll_batch(done=lambda b: covers(sink.reached(b), ends))
            sink.flush(batch)
        return sink.stats
    finally:
        sink.close()
        consumer.close()


def covers(positions: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]) -> bool:
    """Whether ``positions`` reach ``ends`` on every partition (absent = 0)."""
    return all(positions.get(key, 0) >= end for key, end in ends.items())


def journal_forever(
    bootstrap: str,
    prefix: str,
    dsn: str,
    *,
    stop: Callable[[], bool],
    group: str | None = None,
    options: JournalOptions | None = None,
    registry: SchemaRegistry | None = None,
    on_batch: Callable[[JournalStats], None] | None = None,
) -> JournalStats:
    """The long-running sink: subscribe (in a group: instances share partitions) until ``stop()``.

    Retries a failing database forever by default (``max_attempts=None``): the consumer stays
    where the last committed batch ended, so nothing is lost while the database is away.
    """
    opts = options or JournalOptions()
    migrate_dsn(dsn, opts.schema)
    consumer = _consumer(bootstrap, group or default_group(prefix))
    sink = JournalSink(consumer, _connector(dsn), prefix, opts, registry=registry)
    try:
        consumer.subscribe(journal_topics(prefix))
        while not stop():
            batch = sink.poll_batch(done=lambda _b: stop())
            if sink.flush(batch) and batch and on_batch is not None:
                on_batch(sink.stats)
        return sink.stats
    finally:
        sink.close()
        consumer.close()
