"""Journal writes: one batch of rows into the database in ONE transaction.

Each batch is COPYed into per-connection staging tables, then ``INSERT ... SELECT ... ON
CONFLICT (natural key) DO NOTHING`` moves what is new into the journal tables: a redelivered
record, a restart or a second replay adds no row. :class:`Batch` also carries the Kafka
positions it covers, which the sink commits only after this transaction committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.adapters.journal.rows import TABLES, Row

if TYPE_CHECKING:
    import psycopg


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
