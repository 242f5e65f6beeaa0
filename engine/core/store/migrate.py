"""The store's one schema, as Alembic migrations, and who applies them when.

The schema is the chain in ``migrations/versions`` (``0001`` the first release's tables, which
also takes over a SQLite journal that release wrote; ``0002`` servers and leases; …), applied
inside one transaction (PostgreSQL's DDL is transactional; SQLite's ``BEGIN IMMEDIATE`` too), so
a failed upgrade leaves the store as it was.

Who migrates:

* ``cairn journal migrate`` — always, for either database (:func:`upgrade`);
* a writer of a **SQLite** file at open (:func:`ensure_current`): the embedded store has one
  user, and a journal from an earlier release just works;
* a writer of an **empty PostgreSQL** database: nothing runs on it yet, so creating the schema
  disturbs nobody (an advisory lock lets one of several servers starting together do it). A
  PostgreSQL store with an older schema is not upgraded behind the operator's back — other
  servers may be running the older release on it: the writer refuses, naming the command.

Readers never migrate: they read what is there (:mod:`engine.core.journal_read` reads a first-release file).
SQLAlchemy and Alembic are imported only here, only when a migration is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import JournalError
from engine.core.store.database import Database
from engine.core.store.location import Location, locate

HEAD = "0003"
"""The newest revision this Cairn knows (a test checks it is the migrations' head)."""
KNOWN = ("0001", "0002", "0003")
"""Every revision, oldest first."""
LOCK_KEY = 0x6361_6972_6E  # "cairn": one migration at a time on a PostgreSQL database
MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True, slots=True)
class Migration:
    """What :func:`upgrade` did."""

    where: str
    before: str | None
    """The revision it found (``None``: an empty store, or a journal of the first release)."""
    after: str
    legacy: bool = False
    """It took over a journal the first release wrote (no revision recorded)."""

    @property
    def changed(self) -> bool:
        return self.before != self.after


def revision(db: Database) -> str | None:
    """The store's revision (``None``: no schema recorded — empty, or written by the first release)."""
    if "alembic_version" not in db.tables():
        return None
    rows = db.read("SELECT version_num FROM alembic_version")
    return str(rows[0][0]) if rows else None


def ensure_current(db: Database) -> None:
    """Before a writer writes: the schema this Cairn needs, or a :class:`JournalError` saying what to run."""
    found = revision(db)
    if found == HEAD:
        return
    if found is not None and found not in KNOWN:
        raise JournalError(
            f"{db.what} at {db.where} was written by a newer Cairn (schema {found}; this one knows up to "
            f"{HEAD}): upgrade Cairn"
        )
    if db.dialect == "postgresql" and found is None and "runs" not in db.tables():
        upgrade(db.location)  # an empty database: nobody runs on it yet
        return
    if db.dialect == "postgresql":
        raise JournalError(
            f"{db.what} at {db.where} has schema {found or 'of the first release'}; this Cairn needs {HEAD}: "
            f"run `cairn journal migrate --journal {db.where}` (every server on it must run this release)"
        )
    upgrade(db.location)


def upgrade(location: Location | Path | str | None) -> Migration:
    """Bring the store to :data:`HEAD`, in one transaction; what it found and left."""
    import sqlalchemy as sa  # noqa: PLC0415
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    where = locate(location)
    engine = _engine(where)
    try:
        with engine.begin() as connection:
            if where.dialect == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            inspector = sa.inspect(connection)
            tables = set(inspector.get_table_names())
            before = _revision(connection, tables)
            if before is not None and before not in KNOWN:
                raise JournalError(
                    f"the journal at {where.shown} was written by a newer Cairn (schema {before}; this one "
                    f"knows up to {HEAD}): upgrade Cairn"
                )
            legacy = before is None and bool({"runs", "alert_queue"} & tables)
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = _revision(connection, {"alembic_version"}) or HEAD
    except sa.exc.DBAPIError as exc:
        raise _fault(exc.orig or exc, where) from exc
    finally:
        engine.dispose()
    return Migration(where.shown, before, after, legacy)


def _revision(connection: Any, tables: set[str]) -> str | None:
    import sqlalchemy as sa  # noqa: PLC0415

    if "alembic_version" not in tables:
        return None
    value = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None


def _engine(where: Location) -> Any:
    """A SQLAlchemy engine for one migration: SQLite through Cairn's own opening (file modes, WAL,
    busy timeout) with ``BEGIN IMMEDIATE``; PostgreSQL through psycopg with Cairn's settings."""
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    if where.dialect == "sqlite":
        from engine.core.journal_store import open_writer  # noqa: PLC0415

        path = where.path
        assert path is not None
        engine = sa.create_engine(
            "sqlite://", creator=lambda: open_writer(path, "", what="the journal"), poolclass=NullPool
        )

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    from engine.core.store import postgres  # noqa: PLC0415

    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: _pg_for_migration(where, postgres),
        poolclass=NullPool,
    )


def _pg_for_migration(where: Location, postgres: Any) -> Any:
    connection = postgres.connect(where, write=True, role="journal migrate")
    connection.autocommit = False  # SQLAlchemy begins and commits
    return connection


def _fault(exc: BaseException, where: Location) -> JournalError:
    if where.dialect == "sqlite":
        from engine.core.journal_store import journal_fault  # noqa: PLC0415

        assert where.path is not None
        return journal_fault(exc, where.path, "migrate the journal")
    from engine.core.store import postgres  # noqa: PLC0415

    fault: JournalError = postgres.fault(exc, where, "migrate the journal")
    return fault
