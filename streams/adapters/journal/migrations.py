"""Journal migrations: ``NNN_name[.variant].sql`` of ``streams/journal_migrations``, in order.

:func:`migrate` applies each pending version in its own transaction together with its row in
``schema_migrations`` (version, name, variant, sha256). A version with a ``timescale`` and a
``plain`` variant gets the first when the TimescaleDB extension is available, the second
otherwise. A changed file of an applied version is an error: add a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from streams.adapters.journal import JournalConfigError, JournalDatabaseError, MigrationError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "journal_migrations"
_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")


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


def migrate_dsn(dsn: str, schema: str = "public") -> MigrationReport:
    """:func:`migrate` on a fresh connection to ``dsn``; an unreachable server is ours to raise."""
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name="quantum-trader-journal")
    except psycopg.OperationalError as exc:
        raise JournalDatabaseError(f"cannot connect to the journal database: {exc}") from exc
    with conn:
        return migrate(conn, schema)
