"""PostgreSQL through psycopg 3: the connection settings, in one place, and its faults said as Cairn says them.

Imported only when a store's location is a ``postgresql://`` URL. Connections run in autocommit
mode (Cairn issues ``BEGIN``/``COMMIT`` itself, as for SQLite); a reader's connection is
read-only at the server (``default_transaction_read_only``), so reading cannot write.
Commits are durable when they return (PostgreSQL's default ``synchronous_commit=on``).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from engine.core.errors import JournalError, JournalUnreachable, JournalUnwritable
from engine.core.store.location import Location

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds to wait for a connection before the store is said unreachable."""
STATEMENT_TIMEOUT_MS = 30_000
"""No statement of Cairn's takes this long; one that does is stuck behind a lock: refused, said."""
LOCK_TIMEOUT_MS = 5_000
"""Like SQLite's busy timeout: how long a write waits for another transaction's row locks."""
IDLE_IN_TRANSACTION_MS = 3_000
"""A session that sits in an open transaction this long is ended by the server. Cairn's transactions
never pause (statement after statement, then commit); a process frozen half-way through one (SIGSTOP,
a paused VM) would otherwise keep its row locks — the fence's ``FOR SHARE`` on its own lease among
them — and hold off the takeover of its work for as long as it stays frozen."""
UNREACHABLE = "the journal's database does not answer"
FULL = "the journal's database server is out of disk space"
READ_ONLY = "the journal's database is read-only (a standby?)"


def connect(location: Location, *, write: bool, role: str) -> psycopg.Connection[Any]:
    """A connection to ``location``'s database; ``write=False``: one that cannot write."""
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
    options += f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    if not write:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            location.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=f"cairn {role}"[:63],
            options=options,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        raise fault(exc, location, f"open {role}") from exc


def fault(exc: BaseException, location: Location, doing: str) -> JournalError:
    """``exc`` as Cairn says it: the server down or restarting → :class:`JournalUnreachable`; out of
    disk or read-only → :class:`JournalUnwritable`; else a :class:`JournalError` naming what failed."""
    detail = _detail(exc)
    where = location.shown
    if isinstance(exc, (pg_errors.AdminShutdown, pg_errors.CannotConnectNow, pg_errors.CrashShutdown)):
        return JournalUnreachable(UNREACHABLE, where, detail)
    if isinstance(exc, pg_errors.DiskFull):
        return JournalUnwritable(FULL, where, detail)
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return JournalUnwritable(READ_ONLY, where, detail)
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        if _refused_by_the_server(str(exc)):  # it answered: a wrong password, no such database or role
            return JournalError(f"cannot {doing} at {where}: {detail}")
        return JournalUnreachable(UNREACHABLE, where, detail)  # no answer at all: refused, reset, timed out
    if isinstance(exc, psycopg.InterfaceError):
        return JournalUnreachable(UNREACHABLE, where, detail)  # the connection was closed under us
    return JournalError(f"cannot {doing} at {where}: {detail}")


_TRANSIENT = ("starting up", "shutting down", "in recovery mode", "too many clients", "not yet accepting")


def _refused_by_the_server(text: str) -> bool:
    """A connection the server answered and refused for good (authentication, a missing database
    or role) rather than one it could not take now (starting, stopping, full)."""
    lowered = text.lower()
    if any(word in lowered for word in _TRANSIENT):
        return False
    return "fatal:" in lowered or "authentication failed" in lowered or "does not exist" in lowered


def broken(connection: psycopg.Connection[Any] | None) -> bool:
    """Whether ``connection`` can no longer be used (the server went away): reconnect."""
    return connection is None or connection.closed or connection.broken


def in_transaction(connection: psycopg.Connection[Any]) -> bool:
    return connection.info.transaction_status not in (
        psycopg.pq.TransactionStatus.IDLE,
        psycopg.pq.TransactionStatus.UNKNOWN,
    )


def _detail(exc: BaseException) -> str:
    """What the server or the driver said, on one line, without the connection string."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.removeprefix("FATAL:  ").removeprefix("ERROR:  ")
