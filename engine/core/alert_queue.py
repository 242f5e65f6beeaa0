"""The alert queue: routed alerts, persisted before the webhook is answered, and the remediation ledger.

``cairn serve`` answers Alertmanager only after :meth:`AlertQueue.accept` has
committed, so an accepted alert survives a crash of the server (``kill -9``):
SQLite in WAL mode, in the journal's database file, so a queued alert and the
run it starts sit side by side.

One row per (alert, runbook, target) that was queued. What ``accept`` decides:

* a **firing** alert whose (runbook, target) already has an entry that is
  queued, running or waiting for a human (escalated) is a duplicate, as is one
  whose last entry on that key ended less than ``cooldown`` seconds ago:
  nothing is added (Alertmanager repeats firing alerts every
  ``repeat_interval``, and a group carries every alert again);
* a **resolved** alert cancels the entries of the same alert that have not
  started, and those waiting for a human (nothing was changed on the host); a
  running one goes on (its verify says whether the fix held).

Workers :meth:`claim` the oldest queued entry (atomic: two servers on one
database never take the same one), say which run works on it
(:meth:`started`) and :meth:`finish` it. An entry whose remediation needs a
human is **escalated**; :meth:`approve` (``cairn approve RUN_ID``) queues it
again with the approver's name, :meth:`decline` ends it. :meth:`recover`, at
start, puts entries that were running when the last server died back in the
queue, saying so: nothing is dropped silently, and the worker resumes their
interrupted run.

The **remediation ledger** (:meth:`begin_remediation`, :meth:`end_remediation`)
holds the guardrails shared by every runbook: at most ``breaker`` automatic
remediations per host per hour, at most ``budget`` hosts being remediated at
once across the fleet. Both are checked and recorded in one transaction, so
workers racing for the last slot cannot both take it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from engine.core.alerts import AlertStatus, Route
from engine.core.errors import JournalError
from engine.core.journal import like_prefix

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
    updated_at REAL NOT NULL,
    approved_by TEXT
);
CREATE TABLE IF NOT EXISTS remediations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    automatic INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS remediations_host ON remediations (host, started_at);
CREATE INDEX IF NOT EXISTS remediations_open ON remediations (ended_at);
CREATE INDEX IF NOT EXISTS alert_queue_state ON alert_queue (state, id);
CREATE INDEX IF NOT EXISTS alert_queue_key ON alert_queue (runbook_id, target, state);
CREATE INDEX IF NOT EXISTS alert_queue_fingerprint ON alert_queue (fingerprint, state);
CREATE INDEX IF NOT EXISTS alert_queue_run ON alert_queue (run_id);
"""


class EntryState(Enum):
    """Where a queued alert is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    """Its run ended (whatever the run found: the run says)."""
    CANCELLED = "cancelled"
    """Resolved before it started (or while it waited for a human)."""
    ESCALATED = "escalated"
    """The pitfall is present and remediating it needs a human: ``cairn approve`` or ``cairn decline``."""
    DECLINED = "declined"
    """A human declined the remediation."""
    FAILED = "failed"
    """Could not be run at all (unknown target, runbook not loaded): the note says why."""


ACTIVE = (EntryState.QUEUED.value, EntryState.RUNNING.value, EntryState.ESCALATED.value)
"""States in which a firing alert for the same runbook and target is a duplicate."""
COOLING = (EntryState.DONE.value, EntryState.DECLINED.value)
"""States after which the cooldown applies: a run ended, or a human said no. A cancelled entry
never ran. A failed one (its target or runbook is unknown) cools down only until the server reads
its inventory and runbooks again (see :attr:`AlertQueue.failed_forgotten_before`)."""
HOUR = 3600.0
WAITS_FOR_A_HUMAN = "remediation waits for a human: "
"""How an escalated entry's note starts (then why: the policy, a guardrail, a failed fix)."""


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
    """The run working on it, or the last one that did."""
    note: str
    updated_at: float = 0.0
    approved_by: str | None = None
    """Who approved its remediation (``cairn approve``); its next run remediates."""


@dataclass(frozen=True)
class Guard:
    """What :meth:`AlertQueue.begin_remediation` decided."""

    ledger_id: int | None
    """The ledger row to end when the remediation is over; ``None`` when refused."""
    tripped: str = ""
    """``breaker`` or ``budget`` when refused."""
    reason: str = ""
    """Why it was refused, for the human it escalates to."""


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
        self.failed_forgotten_before = 0.0
        """Failed entries that ended before this time start no cooldown: the server has read its
        inventory and runbooks since (at start, at SIGHUP), so the alert's next firing may run."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "PRAGMA synchronous=NORMAL"
            )  # in WAL: a committed row survives a crash of the process
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(alert_queue)")}
            if "approved_by" not in columns:  # a queue written before approvals existed
                self._db.execute("ALTER TABLE alert_queue ADD COLUMN approved_by TEXT")
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the alert queue at {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def accept(self, routes: Iterable[Route], now: float | None = None) -> Intake:
        """Queue the firing routes that are new, cancel what resolved ones end; one transaction."""
        return self.accept_many([routes], now)[0]

    def accept_many(self, webhooks: Sequence[Iterable[Route]], now: float | None = None) -> list[Intake]:
        """:meth:`accept` for several webhooks, in order, in **one** transaction (group commit:
        the server gathers the webhooks that arrive while the previous commit runs)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            return [self._accept(routes, at) for routes in webhooks]

    def _accept(self, routes: Iterable[Route], at: float) -> Intake:
        intake = Intake()
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
            "SELECT id, state FROM alert_queue WHERE runbook_id = ? AND target = ? AND state IN (?, ?, ?) LIMIT 1",
            (route.runbook_id, route.target, *ACTIVE),
        ).fetchone()
        if row:
            return f"entry {row[0]} is {row[1]} for the same runbook and target"
        if self.cooldown > 0:
            row = self._db.execute(
                "SELECT id, updated_at, state FROM alert_queue WHERE runbook_id = ? AND target = ?"
                " AND (state IN (?, ?) OR (state = ? AND updated_at > ?)) AND updated_at > ?"
                " ORDER BY updated_at DESC LIMIT 1",
                (
                    route.runbook_id,
                    route.target,
                    *COOLING,
                    EntryState.FAILED.value,
                    self.failed_forgotten_before,
                    at - self.cooldown,
                ),
            ).fetchone()
            if row:
                return (
                    f"cooling down: entry {row[0]} ended ({row[2]}) {at - row[1]:.0f} s ago"
                    f" (cooldown {self.cooldown:g} s)"
                )
        return ""

    def _cancel(self, route: Route, at: float) -> list[int]:
        rows = self._db.execute(
            "SELECT id, state FROM alert_queue WHERE fingerprint = ? AND runbook_id = ? AND target = ?"
            " AND state IN (?, ?)",
            (
                route.alert.fingerprint,
                route.runbook_id,
                route.target,
                EntryState.QUEUED.value,
                EntryState.ESCALATED.value,
            ),
        ).fetchall()
        for entry_id, state in rows:
            note = (
                "the alert resolved while its remediation waited for a human; nothing was changed"
                if state == EntryState.ESCALATED.value
                else "the alert resolved before its run started"
            )
            self._db.execute(
                "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                (EntryState.CANCELLED.value, note, at, entry_id),
            )
        return [row[0] for row in rows]

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

    def started(self, entry_id: int, run_id: str, now: float | None = None) -> None:
        """Record the run working on a claimed entry (before it runs: a crash then knows what to resume)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE alert_queue SET run_id = ?, updated_at = ? WHERE id = ?", (run_id, at, entry_id)
            )

    def requeue(self, entry_id: int, note: str, now: float | None = None) -> None:
        """Put a running entry back in the queue (its run was checkpointed at shutdown)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ? AND state = ?",
                (EntryState.QUEUED.value, note, at, entry_id, EntryState.RUNNING.value),
            )

    def recover(self, now: float | None = None) -> list[int]:
        """At start: entries running when the last server stopped go back to the queue, saying so.

        Remediations the ledger still shows in progress are closed: their server is gone.
        """
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
                        "queued again: the server stopped while its run went on; the run resumes",
                        at,
                        entry_id,
                    ),
                )
            self._db.execute("UPDATE remediations SET ended_at = ? WHERE ended_at IS NULL", (at,))
        return ids

    # ------------------------------------------------------------------ humans

    def approve(self, run_id: str, by: str, now: float | None = None) -> Entry:
        """Queue an escalated entry again, its remediation approved by ``by``; :class:`JournalError` if
        ``run_id`` (or a unique prefix of it) is not waiting for a human."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            entry = self._waiting(run_id)
            self._db.execute(
                "UPDATE alert_queue SET state = ?, approved_by = ?, note = ?, updated_at = ? WHERE id = ?",
                (
                    EntryState.QUEUED.value,
                    by,
                    f"approved by {by}: the next run checks again, then remediates",
                    at,
                    entry.id,
                ),
            )
        return self.entry(entry.id)

    def decline(self, run_id: str, by: str, reason: str = "", now: float | None = None) -> Entry:
        """End an escalated entry without remediating; :class:`JournalError` as for :meth:`approve`."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            entry = self._waiting(run_id)
            note = f"declined by {by}" + (f": {reason}" if reason else "")
            self._db.execute(
                "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                (EntryState.DECLINED.value, note, at, entry.id),
            )
        return self.entry(entry.id)

    def _waiting(self, run_id: str) -> Entry:
        if not run_id.strip():
            raise JournalError(
                "give the run id (or its start) of the run waiting for a human: see `cairn queue`"
            )
        rows = [
            _entry(row)
            for row in self._db.execute(
                "SELECT * FROM alert_queue WHERE run_id LIKE ? ESCAPE '\\' ORDER BY id DESC",
                (like_prefix(run_id),),
            )
        ]
        if not rows:
            raise JournalError(
                f"no alert-started run {run_id!r} in {self.path}; `cairn queue` lists the runs waiting for a human"
            )
        runs = {e.run_id for e in rows}
        if len(runs) > 1 and run_id not in runs:
            raise JournalError(
                f"run id {run_id!r} is ambiguous: {', '.join(sorted(r or '' for r in runs)[:5])}"
            )
        entry = next(e for e in rows if e.run_id == run_id) if run_id in runs else rows[0]
        if entry.state is not EntryState.ESCALATED:
            raise JournalError(
                f"run {entry.run_id} is not waiting for a human: its queue entry {entry.id} is "
                f"{entry.state.value}" + (f" ({entry.note})" if entry.note else "")
            )
        return entry

    # ------------------------------------------------------------------ guardrails

    def begin_remediation(
        self,
        host: str,
        runbook_id: str,
        run_id: str,
        *,
        automatic: bool,
        breaker: int,
        budget: int,
        now: float | None = None,
    ) -> Guard:
        """Record that ``host`` is being remediated, or refuse an automatic remediation.

        Refused when ``host`` had ``breaker`` automatic remediations in the last hour, or
        ``budget`` other hosts are being remediated now. A human's approval is never
        refused (the human is who guardrails escalate to) but counts toward the budget.
        """
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            if automatic:
                recent = self._db.execute(
                    "SELECT count(*), min(started_at) FROM remediations"
                    " WHERE host = ? AND automatic = 1 AND started_at > ?",
                    (host, at - HOUR),
                ).fetchone()
                if recent[0] >= breaker:
                    again = recent[1] + HOUR - at
                    return Guard(
                        None,
                        "breaker",
                        f"circuit breaker: {recent[0]} automatic remediations on {host} in the last hour "
                        f"(at most {breaker}); the next is allowed in {again / 60:.0f} min",
                    )
                busy = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT DISTINCT host FROM remediations WHERE ended_at IS NULL AND host != ? ORDER BY host",
                        (host,),
                    )
                ]
                if len(busy) >= budget:
                    return Guard(
                        None,
                        "budget",
                        f"fleet budget: {len(busy)} hosts are being remediated now (at most {budget}): "
                        + ", ".join(busy[:5]),
                    )
            cursor = self._db.execute(
                "INSERT INTO remediations (host, runbook_id, run_id, automatic, started_at) VALUES (?, ?, ?, ?, ?)",
                (host, runbook_id, run_id, int(automatic), at),
            )
            assert cursor.lastrowid is not None
            return Guard(cursor.lastrowid)

    def end_remediation(self, ledger_id: int, now: float | None = None) -> None:
        """The remediation is over (its host no longer counts toward the budget)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self._db.execute("UPDATE remediations SET ended_at = ? WHERE id = ?", (at, ledger_id))

    # ------------------------------------------------------------------ reading

    def entry(self, entry_id: int) -> Entry:
        """One entry by id."""
        row = self._db.execute("SELECT * FROM alert_queue WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise JournalError(f"no queue entry {entry_id} in {self.path}")
        return _entry(row)

    def entries(self, *states: EntryState) -> list[Entry]:
        """Every entry (or those in ``states``), oldest first."""
        if not states:
            rows = self._db.execute("SELECT * FROM alert_queue ORDER BY id")
        else:
            marks = ", ".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT * FROM alert_queue WHERE state IN ({marks}) ORDER BY id",  # noqa: S608 (only ?s)
                tuple(s.value for s in states),
            )
        return [_entry(row) for row in rows]

    def recent(self, *states: EntryState, limit: int) -> list[Entry]:
        """The ``limit`` entries in ``states`` updated last, the latest first (the rest are not read)."""
        marks = ", ".join("?" * len(states))
        rows = self._db.execute(
            f"SELECT * FROM alert_queue WHERE state IN ({marks})"  # noqa: S608 (only ?s)
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            (*(s.value for s in states), limit),
        )
        return [_entry(row) for row in rows]

    def count(self, *states: EntryState) -> int:
        """How many entries are in ``states``."""
        marks = ", ".join("?" * len(states))
        row = self._db.execute(
            f"SELECT count(*) FROM alert_queue WHERE state IN ({marks})",  # noqa: S608 (only ?s)
            tuple(s.value for s in states),
        )
        return int(row.fetchone()[0])

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
    entry_id, received_at, fingerprint, runbook_id, target, alert, state, run_id, note, updated, approved = (
        row
    )
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
        updated_at=float(str(updated)),
        approved_by=str(approved) if approved is not None else None,
    )
