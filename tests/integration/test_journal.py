"""The journal on real PostgreSQL and Kafka: trades equal trades.csv, no duplicates, no loss.

Two real topology runs of the same day (``run_demo``: Faust worker subprocess, bundled real
data, ONNX models) are journaled into a fresh database schema per test. Faults are injected
inside the database (a trigger that raises, or that kills the sink's own connection), so the
sink meets them exactly where a real failure would hit it: in the middle of its transaction.

A broker with time retention (the project's development Kafka has none) would delete replayed
records, which carry their 2025 event times, at its next check: the test gives its run topics
unlimited retention right after they are created, so they are still there when the journal
reads them (and deletes them at the end).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.adapters.journal import JournalWriteError, MigrationError
from streams.adapters.journal.migrations import load_migrations, migrate, timescale_available
from streams.adapters.journal.rows import TABLES
from streams.adapters.journal.sink import (
    JournalOptions,
    JournalStats,
    default_group,
    journal_run,
    journal_topics,
)
from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.report import TRADE_COLUMNS, TRADES_FILE, _cell

pytestmark = [pytest.mark.postgres]

DEFAULT_DSN = "postgresql://quantum:quantum@127.0.0.1:5432/quantum_trader"
WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))
GATES = {
    "gate": "confidence",
    "min_confidence": 0.5,
}  # as the golden test: one day trades enough to bite
#: report.json count -> journal table holding one row per such record
COUNTED_TABLES = {
    "supervised": "signals",
    "decisions": "decisions",
    "approvals": "approvals",
    "rejections": "rejections",
    "orders": "orders",
    "fills": "fills",
    "position_changes": "positions",
    "closed_trades": "trades",
    "rewards": "rewards",
    "dead_letters": "dead_letters",
}


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dsn() -> str:
    import psycopg

    value = os.environ.get("QT_JOURNAL_DSN", DEFAULT_DSN)
    try:
        psycopg.connect(value, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {value.rsplit('@', 1)[-1]} ({exc}); run "
                    "`bash infra/postgres/ensure-postgres.sh` or set QT_JOURNAL_DSN")  # fmt: skip
    return value


@pytest.fixture
def conn(dsn: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def schema(conn: Any) -> Iterator[str]:
    """A fresh schema for this test (dropped afterwards): concurrent sessions never collide."""
    name = f"jt_{secrets.token_hex(5)}"
    yield name
    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@dataclass(frozen=True)
class Run:
    prefix: str
    run_dir: Path
    report: dict[str, Any]


def _keep_forever(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC, name,
            incremental_configs=[ConfigEntry("retention.ms", "-1",
                                             incremental_operation=AlterConfigOpType.SET)],
        )
        for name in names
    ]  # fmt: skip
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


@pytest.fixture(scope="module")
def runs(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Run, Run]]:
    """Two real topology runs of the same day (the replay, and a second replay of it)."""
    from confluent_kafka.admin import AdminClient

    import streams.app
    from streams.demo import DemoPlan, run_demo

    original = streams.app.ensure_topics
    created: list[str] = []

    def ensure_topics_kept(bootstrap: str, settings: Settings, **kw: Any) -> list[str]:
        names = original(bootstrap, settings, **kw)
        prefix = settings.topic_prefix
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        mine = [t for t in topics if t.startswith(prefix)]
        _keep_forever(bootstrap, mine)
        created.extend(mine)
        return names

    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, partitions=2, feedback_lag_ms=300_000,
        supervisor=GATES, runs_dir=tmp_path_factory.mktemp("runs"),
    )  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.setattr(streams.app, "ensure_topics", ensure_topics_kept)
    try:
        done = []
        for _ in range(2):
            result = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=900))
            done.append(Run(result.report["topic_prefix"], result.run_dir, result.report))
        yield done[0], done[1]
    finally:
        mp.undo()
        if created:
            AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(created)


# ------------------------------------------------------------------------------- helpers


def table_counts(conn: Any, schema: str) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {schema}.{t}").fetchone()[0] for t in TABLES}


def trades_csv_from_db(conn: Any, schema: str) -> str:
    """The trades table in trades.csv's canonical form (streams/report.py), cell by cell."""
    cols = ", ".join(TRADE_COLUMNS)
    rows = conn.execute(
        f"SELECT {cols} FROM {schema}.trades ORDER BY event_time_ms, trade_id"
    ).fetchall()
    lines = [",".join(TRADE_COLUMNS)]
    lines.extend(",".join(_cell(v) for v in row) for row in rows)
    return "\n".join(lines) + "\n"


def committed(bootstrap: str, group: str, prefix: str) -> dict[tuple[str, int], int]:
    """Committed offsets of ``group`` on the journaled topics (partitions without a commit
    are left out)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = consumer.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in journal_topics(prefix) if t in meta
                 for p in meta[t].partitions]  # fmt: skip
        return {(c.topic, c.partition): c.offset
                for c in consumer.committed(parts, timeout=10) if c.offset >= 0}  # fmt: skip
    finally:
        consumer.close()


def end_offsets(bootstrap: str, prefix: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        meta = consumer.list_topics(timeout=10).topics
        return {
            (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
            for t in journal_topics(prefix) if t in meta for p in meta[t].partitions
        }  # fmt: skip
    finally:
        consumer.close()


def journal(bootstrap: str, run: Run, dsn: str, schema: str, **kw: Any) -> JournalStats:
    group = kw.pop("group", f"{default_group(run.prefix)}{schema}")
    opts = kw.pop("options", JournalOptions(schema=schema, max_attempts=3))
    return journal_run(bootstrap, run.prefix, dsn, group=group, options=opts, **kw)


# --------------------------------------------------------------------------- migrations


def test_migrations_create_the_declared_tables_once(conn: Any, schema: str) -> None:
    first = migrate(conn, schema)
    again = migrate(conn, schema)
    versions = sorted({m.version for m in load_migrations()})
    assert first.applied == tuple(versions)
    assert again.applied == ()
    variant = "timescale" if timescale_available(conn) else "plain"
    rows = conn.execute(
        f"SELECT version, variant FROM {schema}.schema_migrations ORDER BY version"
    ).fetchall()
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 7
    assert rows == [(v, variant if v == 2 else "") for v in versions]
    for spec in TABLES.values():  # the code's column order and keys are the database's
        cols = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, spec.name),
        ).fetchall()
        assert tuple(c for (c,) in cols) == spec.columns, spec.name
        key = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)",
            (f"{schema}.{spec.name}",),
        ).fetchall()
        assert tuple(k for (k,) in key) == spec.key, spec.name


def test_an_edited_applied_migration_is_refused(conn: Any, schema: str, tmp_path: Path) -> None:
    for m in load_migrations():
        suffix = f".{m.variant}" if m.variant else ""
        (tmp_path / f"{m.version:03d}_{m.name}{suffix}.sql").write_text(m.sql)
    migrate(conn, schema, directory=tmp_path)
    edited = tmp_path / "001_business_tables.sql"
    edited.write_text(edited.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(conn, schema, directory=tmp_path)


def test_a_failing_migration_leaves_no_trace(conn: Any, schema: str, tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_broken.sql").write_text("CREATE TABLE b (x int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match="002_broken"):
        migrate(conn, schema, directory=tmp_path)
    assert conn.execute(f"SELECT version FROM {schema}.schema_migrations").fetchall() == [(1,)]
    assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.b",)).fetchone() == (None,)


# ------------------------------------------------------------------------ the journal


@pytest.mark.kafka
@pytest.mark.slow
def test_the_journaled_trades_equal_trades_csv(
    kafka_bootstrap: str, runs: tuple[Run, Run], dsn: str, conn: Any, schema: str
) -> None:
    run = runs[0]
    stats = journal(kafka_bootstrap, run, dsn, schema)

    assert run.report["counts"]["closed_trades"] >= 5, "the window must trade to be a test"
    assert trades_csv_from_db(conn, schema) == (run.run_dir / TRADES_FILE).read_text()
    counts = table_counts(conn, schema)
    for report_key, table in COUNTED_TABLES.items():
        assert counts[table] == run.report["counts"][report_key], table
    assert counts["vetoes"] == sum(run.report["counts"]["vetoes_by_reason"].values())
    bars = conn.execute(f"SELECT count(DISTINCT (symbol, event_time)) FROM {schema}.ticks")
    assert counts["ticks"] == 5 * 24 * 60 == bars.fetchone()[0]
    assert stats.failed_writes == 0 and stats.undecodable == 0
    assert committed(kafka_bootstrap, f"{default_group(run.prefix)}{schema}", run.prefix) == {
        k: v for k, v in end_offsets(kafka_bootstrap, run.prefix).items() if v > 0
    }


@pytest.mark.kafka
@pytest.mark.slow
def test_journaling_again_or_a_second_replay_adds_no_row(
    kafka_bootstrap: str, runs: tuple[Run, Run], dsn: str, conn: Any, schema: str
) -> None:
    first, second = runs
    once = journal(kafka_bootstrap, first, dsn, schema)
    before = table_counts(conn, schema)
    again = journal(kafka_bootstrap, first, dsn, schema, group=f"{schema}-again")
    replay = journal(kafka_bootstrap, second, dsn, schema)

    assert once.records > 0
    assert again.records == replay.records == once.records  # both re-read every record
    assert sum(again.inserted.values()) == 0
    assert sum(replay.inserted.values()) == 0
    assert table_counts(conn, schema) == before
    assert trades_csv_from_db(conn, schema) == (second.run_dir / TRADES_FILE).read_text()


def _fault(conn: Any, schema: str, body: str) -> Callable[[], None]:
    """A trigger on the trades table running ``body`` before each insert; returns its remover."""
    conn.execute(f"CREATE SEQUENCE {schema}.fault_calls")
    conn.execute(
        f"CREATE FUNCTION {schema}.fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body} RETURN NEW; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER fault BEFORE INSERT ON {schema}.trades "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.fault()"
    )
    return lambda: conn.execute(f"DROP TRIGGER fault ON {schema}.trades")


@pytest.mark.kafka
@pytest.mark.slow
def test_a_database_failure_commits_no_offset_and_loses_nothing(
    kafka_bootstrap: str, runs: tuple[Run, Run], dsn: str, conn: Any, schema: str
) -> None:
    run = runs[0]
    reference = f"{schema}_ref"
    journal(kafka_bootstrap, run, dsn, reference)
    expected = table_counts(conn, reference)
    conn.execute(f"DROP SCHEMA {reference} CASCADE")

    migrate(conn, schema)
    remove = _fault(conn, schema, "RAISE EXCEPTION 'journal test: disk full';")
    group = f"{schema}-faulty"
    sleeps: list[float] = []
    small = JournalOptions(schema=schema, batch_size=500, max_attempts=3, retry_initial_s=0.01)
    with pytest.raises(JournalWriteError) as failed:
        journal(kafka_bootstrap, run, dsn, schema, group=group, options=small,
                sleep=sleeps.append)  # fmt: skip

    # Backed off between consecutive failures, then gave up. (A retry re-polls, and may get a
    # batch without a trade that succeeds first: the count restarts, hence only the tail.)
    assert failed.value.attempts == 3 and sleeps[-2:] == [0.01, 0.02]
    assert conn.execute(f"SELECT count(*) FROM {schema}.trades").fetchone() == (0,)
    offsets = committed(kafka_bootstrap, group, run.prefix)
    for key, first in failed.value.first_offsets.items():  # the failed batch: nothing committed
        assert offsets.get(key, 0) <= first, key
    trades_topic = f"{run.prefix}trades.closed"
    ends = end_offsets(kafka_bootstrap, run.prefix)
    assert offsets.get((trades_topic, 0), 0) < ends[(trades_topic, 0)]
    partial = table_counts(conn, schema)
    assert all(partial[t] <= expected[t] for t in TABLES)  # committed batches only, no dupes

    remove()
    resumed = journal(kafka_bootstrap, run, dsn, schema, group=group, options=small)
    assert resumed.failed_writes == 0
    assert table_counts(conn, schema) == expected  # no loss, no duplicate
    assert trades_csv_from_db(conn, schema) == (run.run_dir / TRADES_FILE).read_text()


@pytest.mark.kafka
@pytest.mark.slow
def test_transient_failures_and_a_killed_connection_are_retried(
    kafka_bootstrap: str, runs: tuple[Run, Run], dsn: str, conn: Any, schema: str
) -> None:
    run = runs[0]
    migrate(conn, schema)
    # 1st insert into trades: the server kills the sink's own connection mid-transaction;
    # 2nd: an error; from the 3rd on the database is healthy again.
    _fault(conn, schema, f"""
        CASE nextval('{schema}.fault_calls')
          WHEN 1 THEN PERFORM pg_terminate_backend(pg_backend_pid());
          WHEN 2 THEN RAISE EXCEPTION 'journal test: transient';
          ELSE NULL;
        END CASE;""")  # fmt: skip
    sleeps: list[float] = []
    opts = JournalOptions(schema=schema, max_attempts=5, retry_initial_s=0.01)
    stats = journal(kafka_bootstrap, run, dsn, schema, options=opts, sleep=sleeps.append)

    # Both faults may hit one batch (backoff 0.01 then 0.02) or two batches (0.01 each), as the
    # consumer happened to batch the records; the doubling itself is checked in the test above.
    assert stats.failed_writes == 2 and sleeps in ([0.01, 0.02], [0.01, 0.01])
    assert trades_csv_from_db(conn, schema) == (run.run_dir / TRADES_FILE).read_text()
    counts = table_counts(conn, schema)
    for report_key, table in COUNTED_TABLES.items():
        assert counts[table] == run.report["counts"][report_key], table


# ------------------------------------------------------------------- the live universe


def test_the_live_universe_changes_are_journaled_once(
    kafka_bootstrap: str, unique_prefix: str, conn: Any, dsn: str, schema: str
) -> None:
    """``universe.events``, written by the live ingest's own sink, becomes ``universe_changes``."""
    from streams.adapters.live.sink import kafka_live_sink
    from streams.contracts.records import UniverseChanged
    from streams.vocabulary import UniverseChangeKind, UniverseVerdict

    t0, t1 = 1_747_785_600_000, 1_747_789_200_000
    joined = UniverseChanged(
        event_id=f"universe:{t0}:SOLUSDT", symbol="SOLUSDT", event_time_ms=t0,
        change=UniverseChangeKind.JOINED, verdict=UniverseVerdict.SELECTED, rank=3,
        quote_volume=1.5e9, range_ratio=0.061, listed_days=1_200.5, universe_size=5,
        server_time_ms=t0 + 17, reason="SELECTED: rank 3 of 5",
    )  # fmt: skip
    left = UniverseChanged(
        event_id=f"universe:{t1}:SOLUSDT", symbol="SOLUSDT", event_time_ms=t1,
        change=UniverseChangeKind.LEFT, verdict=None, universe_size=5, server_time_ms=t1,
        reason="no longer listed",
    )  # fmt: skip
    sink = kafka_live_sink(kafka_bootstrap, unique_prefix, partitions=2)
    for record in (joined, left, joined):  # a restarted ingest may write a change again
        sink.send_universe(record)
    sink.flush()
    run = Run(unique_prefix, Path("."), {})
    stats = journal(kafka_bootstrap, run, dsn, schema)
    again = journal(kafka_bootstrap, run, dsn, schema, group=f"{schema}-again")
    rows = conn.execute(
        f"SELECT event_id, symbol, event_time_ms, change, verdict, rank, quote_volume, "
        f"range_ratio, listed_days, universe_size, server_time_ms, reason, "
        f"extract(epoch FROM event_time) * 1000 FROM {schema}.universe_changes "
        "ORDER BY event_time_ms"
    ).fetchall()
    assert rows == [
        (joined.event_id, "SOLUSDT", t0, "JOINED", "SELECTED", 3, 1.5e9, 0.061, 1_200.5, 5,
         t0 + 17, "SELECTED: rank 3 of 5", t0),
        (left.event_id, "SOLUSDT", t1, "LEFT", None, None, 0.0, 0.0, None, 5, t1,
         "no longer listed", t1),
    ]  # fmt: skip
    assert stats.records == 3 and stats.inserted["universe_changes"] == 2
    assert again.records == 3 and again.inserted["universe_changes"] == 0  # first write wins


# ------------------------------------------------------------------- the promotion gate


def test_a_shadows_settled_rows_are_journaled_once(
    kafka_bootstrap: str, unique_prefix: str, conn: Any, dsn: str, schema: str
) -> None:
    """``signals.shadow`` (the promotion gate's evidence) becomes ``shadow_scores``: one row per
    (shadow, symbol, row time), however often a restarted shadow stage sent it."""
    import dataclasses

    from confluent_kafka import Producer

    from streams.contracts.codec import topic_codec
    from streams.contracts.examples import load_example
    from streams.topics import Topic, topic_name
    from tests.kafka_topics import create_topics

    codec = topic_codec(Topic.SIGNALS_SHADOW)
    first = codec.decode_record(codec.encode(load_example(Topic.SIGNALS_SHADOW)))
    other = dataclasses.replace(first, symbol="ETHUSDT", candidate_pnl=-0.002)
    later = dataclasses.replace(first, event_time_ms=first.event_time_ms + 60_000)
    name = topic_name(Topic.SIGNALS_SHADOW, unique_prefix)
    create_topics(kafka_bootstrap, [name])
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for record in (first, other, later, first):  # the last: a restarted stage's copy
        producer.produce(name, key=record.symbol.encode(), value=codec.encode(record))
    assert producer.flush(30) == 0
    run = Run(unique_prefix, Path("."), {})
    stats = journal(kafka_bootstrap, run, dsn, schema)
    rows = conn.execute(
        f"SELECT shadow_id, symbol, event_time_ms, candidate, champion, candidate_action, "
        f"champion_action, candidate_pnl, champion_pnl, votes->0->>'model' "
        f"FROM {schema}.shadow_scores ORDER BY event_time_ms, symbol"
    ).fetchall()
    t = first.event_time_ms
    assert [(r[1], r[2], r[7]) for r in rows] == [
        ("BTCUSDT", t, first.candidate_pnl), ("ETHUSDT", t, -0.002),
        ("BTCUSDT", t + 60_000, first.candidate_pnl),
    ]  # fmt: skip
    shadow_id, _, _, candidate, champion, cand_action, champ_action, _, champ_pnl, model = rows[0]
    assert shadow_id == first.shadow_id and candidate == dict(first.candidate)
    assert champion == dict(first.champion) and model == first.votes[0].model
    assert (cand_action, champ_action, champ_pnl) == (
        str(first.candidate_action), str(first.champion_action), first.champion_pnl,
    )  # fmt: skip
    assert stats.records == 4 and stats.inserted["shadow_scores"] == 3
