"""One connection to the store — to write, or only to read — shared by threads, and its transactions.

Statements are written once for both databases: ``?`` placeholders (turned into ``%s`` for
psycopg), and only SQL both SQLite and PostgreSQL speak (``INSERT … ON CONFLICT``, ``RETURNING``,
partial indexes). Where they differ, :class:`Database` says it once: :attr:`Database.now` (the
database's clock, which every server agrees on), :attr:`Database.skip_locked`.

Faults are said as Cairn says them (:mod:`engine.core.errors`): a disk that refuses writes
(:class:`~engine.core.errors.JournalUnwritable`), a PostgreSQL that does not answer
(:class:`~engine.core.errors.JournalUnreachable`: the connection is opened again at the next
call), anything else a :class:`~engine.core.errors.JournalError` naming what failed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from engine.core.errors import JournalError
from engine.core.journal_store import journal_fault, open_reader, open_writer
from engine.core.store.location import Location, locate

log = logging.getLogger(__name__)

Params = Sequence[object]


class Cursor(Protocol):
    """What both drivers' cursors give back."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@functools.lru_cache(maxsize=512)
def _for_psycopg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Database:
    """One connection to the store at ``location``; ``write=False`` opens it so it cannot write.

    A reader of a SQLite file that does not exist has no connection (:attr:`exists` is false):
    nothing is created by reading. Safe to share between threads: calls are serialised.
    """

    def __init__(
        self,
        location: Location | Path | str | None,
        *,
        write: bool,
        what: str = "the journal",
        hint: str = "",
    ) -> None:
        self.location = locate(location)
        self.write = write
        self.what = what
        self.hint = hint
        self.dialect = self.location.dialect
        self.lock = threading.RLock()
        self._role: str | None = None
        self._conn: Any = None
        self._conn = self._open()

    # ------------------------------------------------------------------ the connection

    @property
    def where(self) -> str:
        """The store as messages name it (no password)."""
        return self.location.shown

    @property
    def exists(self) -> bool:
        """False only for a reader of a SQLite file that is not there (it has nothing)."""
        return self._conn is not None or self.dialect == "postgresql"

    @property
    def now(self) -> str:
        """SQL for the database's clock, in seconds since the epoch (one clock for every server)."""
        if self.dialect == "postgresql":
            return "extract(epoch from clock_timestamp())::float8"
        return "((julianday('now') - 2440587.5) * 86400.0)"

    @property
    def skip_locked(self) -> str:
        """After a ``SELECT`` that picks work: rows another transaction holds are passed over
        (PostgreSQL); SQLite's ``BEGIN IMMEDIATE`` lets one writer in at a time anyway."""
        return " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""

    @property
    def for_share(self) -> str:
        """After a ``SELECT`` whose rows must not change until the transaction ends (PostgreSQL's row
        lock; under SQLite's ``BEGIN IMMEDIATE`` nothing else writes meanwhile)."""
        return " FOR SHARE" if self.dialect == "postgresql" else ""

    @property
    def for_update(self) -> str:
        """After a ``SELECT`` of the row a transaction is about to change: concurrent changers of it
        wait for this one (PostgreSQL's row lock; SQLite's ``BEGIN IMMEDIATE`` already serialises)."""
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    def role(self) -> str:
        """The database role the server authenticated this connection as (PostgreSQL's
        ``current_user``, as the server says, not as the URL claims); ``""`` for SQLite."""
        if self.dialect != "postgresql":
            return ""
        if self._role is None:
            self._role = str(self.read("SELECT current_user")[0][0])
        return self._role

    def _open(self) -> Any:
        if self.dialect == "sqlite":
            assert self.location.path is not None
            if self.write:
                return open_writer(self.location.path, "", what=self.what, hint=self.hint)
            return open_reader(self.location.path, what=self.what)
        from engine.core.store import postgres  # noqa: PLC0415 (psycopg only for PostgreSQL)

        return postgres.connect(self.location, write=self.write, role=self.what.removeprefix("the "))

    def connection(self) -> Any:
        """The driver's connection, opened again if PostgreSQL dropped it."""
        if self.dialect == "postgresql":
            from engine.core.store import postgres  # noqa: PLC0415

            if postgres.broken(self._conn):
                self._conn = None
                self._conn = self._open()
        return self._conn

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ statements

    def sql(self, statement: str) -> str:
        """``statement`` as this database's driver takes it."""
        return _for_psycopg(statement) if self.dialect == "postgresql" else statement

    def read(self, statement: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of one query ([] for a reader with no file)."""
        with self.lock:
            if not self.exists:
                return []
            try:
                return [
                    tuple(row) for row in self.connection().execute(self.sql(statement), params).fetchall()
                ]
            except (sqlite3.Error, OSError, _pg_error()) as exc:
                raise self.fault(exc, f"read {self.what}") from exc

    def read_dicts(self, statement: str, params: Params = ()) -> list[dict[str, Any]]:
        """The rows of one query as dicts by column name."""
        with self.lock:
            if not self.exists:
                return []
            try:
                cursor = self.connection().execute(self.sql(statement), params)
                names = [column[0] for column in cursor.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            except (sqlite3.Error, OSError, _pg_error()) as exc:
                raise self.fault(exc, f"read {self.what}") from exc

    def write_one(self, statement: str, params: Params = (), doing: str = "") -> int:
        """One statement on its own, committed as it runs (one round trip to PostgreSQL, where a
        transaction costs three); the rows it changed. Not synced: use :meth:`transaction` for that."""
        with self.lock:
            try:
                cursor = self.connection().execute(self.sql(statement), params)
                return int(cursor.rowcount)
            except (sqlite3.Error, OSError, _pg_error()) as exc:
                raise self.fault(exc, doing or f"write to {self.what}") from exc

    def write_returning(self, statement: str, params: Params = (), doing: str = "") -> tuple[Any, ...] | None:
        """:meth:`write_one` for a statement with ``RETURNING``: its first row (``None``: none)."""
        with self.lock:
            try:
                row = self.connection().execute(self.sql(statement), params).fetchone()
                return tuple(row) if row is not None else None
            except (sqlite3.Error, OSError, _pg_error()) as exc:
                raise self.fault(exc, doing or f"write to {self.what}") from exc

    def transaction(self, doing: str = "", *, synced: bool = False) -> Transaction:
        """A write transaction (``with db.transaction("…") as tx: tx.execute(…)``), serialised with
        every other call on this object; ``synced``: on disk before it returns (SQLite's
        ``synchronous=FULL``; PostgreSQL's commits always are)."""
        return Transaction(self, doing or f"write to {self.what}", synced=synced)

    def fault(self, exc: BaseException, doing: str) -> JournalError:
        """``exc`` said as Cairn says it; a dropped PostgreSQL connection is opened again next time."""
        if self.dialect == "sqlite":
            assert self.location.path is not None
            return journal_fault(exc, self.location.path, doing)
        from engine.core.store import postgres  # noqa: PLC0415

        if postgres.broken(self._conn):
            self._conn = None
        return postgres.fault(exc, self.location, doing)

    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection (never, between calls)."""
        if self._conn is None:
            return False
        if self.dialect == "sqlite":
            return bool(self._conn.in_transaction)
        from engine.core.store import postgres  # noqa: PLC0415

        return not postgres.broken(self._conn) and postgres.in_transaction(self._conn)

    # ------------------------------------------------------------------ what the file holds

    def tables(self) -> set[str]:
        """The tables the store has (none in a missing file)."""
        if self.dialect == "sqlite":
            rows = self.read("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.read("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {str(row[0]) for row in rows}

    def columns(self, table: str) -> set[str]:
        """The columns of ``table`` (empty when there is no such table)."""
        if self.dialect == "sqlite":
            return {str(row[1]) for row in self.read(f"PRAGMA table_info({table})")}
        rows = self.read(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?",
            (table,),
        )
        return {str(row[0]) for row in rows}


def _pg_error() -> type[Exception]:
    """psycopg's base error when psycopg is loaded (a SQLite store never loads it)."""
    import sys  # noqa: PLC0415

    module = sys.modules.get("psycopg")
    error: type[Exception] = module.Error if module is not None else sqlite3.Error
    return error


class Transaction:
    """``BEGIN`` (SQLite: ``BEGIN IMMEDIATE``) … ``COMMIT``; any fault raised as a :class:`JournalError`.

    On an error the transaction is rolled back — unless the database already did (SQLite does on
    a full disk; a dropped PostgreSQL connection has nothing left to roll back), so the error
    raised is the first one, and the connection is ready for the next transaction.
    """

    def __init__(self, db: Database, doing: str, *, synced: bool) -> None:
        self.db = db
        self.doing = doing
        self.synced = synced and db.dialect == "sqlite"

    def execute(self, statement: str, params: Params = ()) -> Cursor:
        """One statement inside the transaction."""
        cursor: Cursor = self.db.connection().execute(self.db.sql(statement), params)
        return cursor

    def __enter__(self) -> Transaction:
        self.db.lock.acquire()
        try:
            connection = self.db.connection()
            if self.synced:
                connection.execute("PRAGMA synchronous=FULL")
            connection.execute("BEGIN IMMEDIATE" if self.db.dialect == "sqlite" else "BEGIN")
        except (sqlite3.Error, OSError, _pg_error()) as exc:
            self._unsync()
            self.db.lock.release()
            raise self.db.fault(exc, self.doing) from exc
        except BaseException:
            self.db.lock.release()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                try:
                    self.db.connection().execute("COMMIT")
                    return
                except (sqlite3.Error, OSError, _pg_error()) as error:
                    self._roll_back()
                    raise self.db.fault(error, self.doing) from error
            self._roll_back()
            if isinstance(exc, (sqlite3.Error, OSError, _pg_error())) and not isinstance(exc, JournalError):
                raise self.db.fault(exc, self.doing) from exc
        finally:
            self._unsync()
            self.db.lock.release()

    def _unsync(self) -> None:
        if self.synced and self.db._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db._conn.execute("PRAGMA synchronous=NORMAL")

    def _roll_back(self) -> None:
        if not self.db.in_transaction():
            return  # the database rolled it back itself, or the connection is gone
        try:
            self.db._conn.execute("ROLLBACK")
        except Exception:
            log.warning("could not roll back a transaction on %s", self.db.where, exc_info=True)
