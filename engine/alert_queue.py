"""The alert queue: routed alerts, persisted before the webhook is answered (issue 6, second part).

``cairn serve`` (not built yet) answers Alertmanager only after
:meth:`AlertQueue.accept` has committed, so an accepted alert survives a crash
of the server (``kill -9``): SQLite in WAL mode, in the journal's database file,
so a queued alert and the run it starts sit side by side.

One row per (alert, runbook, target) that was queued. What ``accept`` decides:

* a **firing** alert whose (runbook, target) already has a queued or running
  entry is a duplicate, as is one whose last entry on that key ended (or was
  escalated to a human) less than ``cooldown`` seconds ago: nothing is added (Alertmanager repeats firing
  alerts every ``repeat_interval``, and a group carries every alert again);
* a **resolved** alert cancels the entries of the same alert that have not
  started; a running one goes on (its verify says whether the fix held).

Workers :meth:`claim` the oldest queued entry (atomic: two servers on one
database never take the same one) and :meth:`finish` it. :meth:`recover`, at
start, puts entries that were running when the last server died back in the
queue, saying so: nothing is dropped silently.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from engine.alerts import AlertStatus, Route
from engine.errors import JournalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    target TEXT NOT NULL,
    alert TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT,
    note TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_queue_state ON alert_queue (state, id);
CREATE INDEX IF NOT EXISTS alert_queue_key ON alert_queue (runbook_id, target, state);
CREATE INDEX IF NOT EXISTS alert_queue_fingerprint ON alert_queue (fingerprint, state);
"""


class EntryState(Enum):
    """Where a queued alert is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    """Its run ended (whatever the run found: the run says)."""
    CANCELLED = "cancelled"
    """Resolved before it started."""
    ESCALATED = "escalated"
    """A guardrail held it back; it waits for a human."""


ACTIVE = (EntryState.QUEUED.value, EntryState.RUNNING.value)


@dataclass(frozen=True)
class Entry:
    """One queued alert."""

    id: int
    received_at: float
    fingerprint: str
    runbook_id: str
    target: str
    alert: dict[str, object]
    state: EntryState
    run_id: str | None
    note: str


@dataclass
class Intake:
    """What one webhook did to the queue."""

    queued: list[int] = field(default_factory=list)
    """Ids of the new entries."""
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    """(runbook, target, why) of firing alerts not queued again."""
    cancelled: list[int] = field(default_factory=list)
    """Ids of entries a resolved alert cancelled."""


class AlertQueue:
    """The queue in the journal's SQLite database; safe to share between threads."""

    def __init__(self, path: Path | str, *, cooldown: float = 0.0) -> None:
        self.path = Path(path)
        self.cooldown = cooldown
        """Seconds after a run on a (runbook, target) during which the same firing alert is a duplicate."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "PRAGMA synchronous=NORMAL"
            )  # in WAL: a committed row survives a crash of the process
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the alert queue at {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def accept(self, routes: Iterable[Route], now: float | None = None) -> Intake:
        """Queue the firing routes that are new, cancel what resolved ones end; one transaction."""
        at = time.time() if now is None else now
        intake = Intake()
        with self._lock, self._transaction():
            for route in routes:
                if route.problem:
                    continue  # no target: the server reports it, nothing to queue
                if route.alert.status is AlertStatus.RESOLVED:
                    intake.cancelled += self._cancel(route, at)
                    continue
                why = self._duplicate(route, at)
                if why:
                    intake.duplicates.append((route.runbook_id, route.target, why))
                    continue
                cursor = self._db.execute(
                    "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        at,
                        route.alert.fingerprint,
                        route.runbook_id,
                        route.target,
                        json.dumps(route.alert.context()),
                        EntryState.QUEUED.value,
                        at,
                    ),
                )
                assert cursor.lastrowid is not None
                intake.queued.append(cursor.lastrowid)
        return intake

    def _duplicate(self, route: Route, at: float) -> str:
        row = self._db.execute(
            "SELECT id, state FROM alert_queue WHERE runbook_id = ? AND target = ? AND state IN (?, ?) LIMIT 1",
            (route.runbook_id, route.target, *ACTIVE),
        ).fetchone()
        if row:
            return f"entry {row[0]} is {row[1]} for the same runbook and target"
        if self.cooldown > 0:
            row = self._db.execute(
                "SELECT id, updated_at, state FROM alert_queue WHERE runbook_id = ? AND target = ?"
                " AND state IN (?, ?) AND updated_at > ? ORDER BY updated_at DESC LIMIT 1",
                (
                    route.runbook_id,
                    route.target,
                    EntryState.DONE.value,
                    EntryState.ESCALATED.value,
                    at - self.cooldown,
                ),
            ).fetchone()
            if row:
                ended = "was escalated" if row[2] == EntryState.ESCALATED.value else "ended"
                return f"cooling down: entry {row[0]} {ended} {at - row[1]:.0f} s ago (cooldown {self.cooldown:g} s)"
        return ""

    def _cancel(self, route: Route, at: float) -> list[int]:
        ids = [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM alert_queue WHERE fingerprint = ? AND runbook_id = ? AND target = ? AND state = ?",
                (route.alert.fingerprint, route.runbook_id, route.target, EntryState.QUEUED.value),
            )
        ]
        for entry_id in ids:
            self._db.execute(
                "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                (EntryState.CANCELLED.value, "the alert resolved before its run started", at, entry_id),
            )
        return ids

    def claim(self, now: float | None = None) -> Entry | None:
        """Take the oldest queued entry (it becomes running), or ``None``."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            row = self._db.execute(
                "UPDATE alert_queue SET state = ?, updated_at = ? WHERE id ="
                " (SELECT id FROM alert_queue WHERE state = ? ORDER BY id LIMIT 1) RETURNING *",
                (EntryState.RUNNING.value, at, EntryState.QUEUED.value),
            ).fetchone()
        return _entry(row) if row else None

    def finish(
        self,
        entry_id: int,
        state: EntryState,
        *,
        run_id: str | None = None,
        note: str = "",
        now: float | None = None,
    ) -> None:
        """Record how an entry ended (or that it was escalated), with its run."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE alert_queue SET state = ?, run_id = COALESCE(?, run_id), note = ?, updated_at = ? WHERE id = ?",
                (state.value, run_id, note, at, entry_id),
            )

    def recover(self, now: float | None = None) -> list[int]:
        """At start: entries running when the last server stopped go back to the queue, saying so."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            ids = [
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM alert_queue WHERE state = ? ORDER BY id", (EntryState.RUNNING.value,)
                )
            ]
            for entry_id in ids:
                self._db.execute(
                    "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                    (
                        EntryState.QUEUED.value,
                        "queued again: the server stopped while its run went on (that run is interrupted)",
                        at,
                        entry_id,
                    ),
                )
        return ids

    def entries(self, state: EntryState | None = None) -> list[Entry]:
        """Every entry (or those in ``state``), oldest first."""
        if state is None:
            rows = self._db.execute("SELECT * FROM alert_queue ORDER BY id")
        else:
            rows = self._db.execute("SELECT * FROM alert_queue WHERE state = ? ORDER BY id", (state.value,))
        return [_entry(row) for row in rows]

    def depth(self) -> int:
        """Entries waiting to start."""
        row = self._db.execute("SELECT count(*) FROM alert_queue WHERE state = ?", (EntryState.QUEUED.value,))
        return int(row.fetchone()[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an error), errors said as :class:`JournalError`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the alert queue at {self.path}: {exc}") from exc

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self.db.execute("ROLLBACK")
                raise JournalError(f"cannot write the alert queue at {self.path}: {error}") from error
        self.db.execute("ROLLBACK")


def _entry(row: tuple[object, ...]) -> Entry:
    entry_id, received_at, fingerprint, runbook_id, target, alert, state, run_id, note, _updated = row
    return Entry(
        id=int(str(entry_id)),
        received_at=float(str(received_at)),
        fingerprint=str(fingerprint),
        runbook_id=str(runbook_id),
        target=str(target),
        alert=json.loads(str(alert)),
        state=EntryState(state),
        run_id=str(run_id) if run_id is not None else None,
        note=str(note),
    )
