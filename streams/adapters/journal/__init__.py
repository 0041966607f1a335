"""The journal: every business record of the topology into PostgreSQL, idempotently.

A sink at the edge of the topology (DESIGN.md, "journal sink", docs/journal.md). It consumes
the business topics with its own confluent-kafka consumer group and writes one table per record
type. Four modules, one job each:

* :mod:`.rows`: decoded record -> table rows (the tables' columns and natural keys);
* :mod:`.migrations`: the versioned SQL of ``streams/journal_migrations`` applied in order;
* :mod:`.writer`: one batch of rows into the database in ONE transaction (COPY into staging
  tables, then ``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING``);
* :mod:`.sink`: the Kafka consumer: batches, writes, commits the offsets only after the
  database committed, retries a failed write without losing or skipping anything.

Guarantees, and how they are kept:

* **Idempotent.** Every table is keyed by the record's natural id (``trade_id``,
  ``decision_id``, ...; ids derive from causes, docs/determinism.md): a redelivery, a restart
  or a second replay of the same data adds no row (first write wins; deterministic ids mean a
  second write would carry the same values anyway).
* **Committed with the offsets.** All tables of a batch are written in one database
  transaction; only after it committed are the Kafka offsets of the batch committed
  (synchronously). A crash between the two re-delivers the batch, which the keys absorb.
* **No loss on failure.** A database error rolls the transaction back, commits no offset, seeks
  the consumer back to the batch's first offsets, backs off and tries again (and, when
  ``max_attempts`` is set, gives up with :class:`JournalWriteError` instead of skipping).

The errors of all four modules are defined here.
"""

from __future__ import annotations

from collections.abc import Mapping


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
