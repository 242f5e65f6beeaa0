"""The alert queue: routed alerts, persisted before the webhook is answered, and the remediation ledger.

``cairn serve`` answers Alertmanager only after :meth:`AlertQueue.accept` has
committed, and that commit is synced to disk (``synchronous=FULL``,
:mod:`engine.core.journal_store`), so an accepted alert survives a crash of the
server (``kill -9``) and a power loss: SQLite in WAL mode, in the journal's
database file, so a queued alert and the run it starts sit side by side. So are
a human's decision (:meth:`AlertQueue.approve`, :meth:`AlertQueue.decline`) and
a remediation taken in the ledger (the breaker must count it). The workers' own
transitions (claim, started, finish, requeue) survive a crash at once and a
power loss once a later synced commit takes them along; one lost to a power loss
leaves its entry running, which the next start's :meth:`AlertQueue.recover`
queues again, and the journal (synced at each step's end) says what its run did. A write
the disk refuses (full, read-only, failing) is one error,
:class:`~engine.core.errors.JournalUnwritable`, with nothing half written; the
same connection writes again once the disk takes it (:meth:`AlertQueue.probe`
asks). Reading is :class:`~engine.core.queue_read.QueueReader`'s.

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
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.alerts import AlertStatus, Route
from engine.core.errors import JournalError
from engine.core.journal_read import like_prefix
from engine.core.journal_store import WriteTransaction, journal_fault, open_writer
from engine.core.queue_read import ACTIVE, COLUMNS, COOLING, Entry, EntryState, QueueReader, entry_of

__all__ = ["ACTIVE", "COOLING", "WAITS_FOR_A_HUMAN", "AlertQueue", "Entry", "EntryState", "Guard", "Intake"]

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
_CLAIM = (
    "UPDATE alert_queue SET state = ?, updated_at = ? WHERE id ="  # noqa: S608 (only constants)
    f" (SELECT id FROM alert_queue WHERE state = ? ORDER BY id LIMIT 1) RETURNING {COLUMNS}"
)
"""The oldest queued entry becomes running (one statement: two servers never take the same one)."""
_PROBE = "CREATE TABLE IF NOT EXISTS journal_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)"
"""Made at the first probe (never at open: a server must start on a full disk, to say so)."""

HOUR = 3600.0
WAITS_FOR_A_HUMAN = "remediation waits for a human: "
"""How an escalated entry's note starts (then why: the policy, a guardrail, a failed fix)."""


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


class AlertQueue(QueueReader):
    """The queue in the journal's SQLite database, to write; safe to share between threads."""

    def __init__(self, path: Path | str, *, cooldown: float = 0.0) -> None:
        self.cooldown = cooldown
        """Seconds after a run on a (runbook, target) during which the same firing alert is a duplicate."""
        self.failed_forgotten_before = 0.0
        """Failed entries that ended before this time start no cooldown: the server has read its
        inventory and runbooks since (at start, at SIGHUP), so the alert's next firing may run."""
        super().__init__(path)

    def _connect(self) -> sqlite3.Connection:
        db = open_writer(self.path, _SCHEMA, what="the alert queue")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(alert_queue)")}
            if "approved_by" not in columns:  # a queue written before approvals existed
                db.execute("ALTER TABLE alert_queue ADD COLUMN approved_by TEXT")
        except sqlite3.Error as exc:
            db.close()
            raise journal_fault(exc, self.path, "open the alert queue") from exc
        return db

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None  # a writer always has its file
        return self._db

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this connection (never, between calls)."""
        return self.db.in_transaction

    def accept(self, routes: Iterable[Route], now: float | None = None) -> Intake:
        """Queue the firing routes that are new, cancel what resolved ones end; one transaction."""
        return self.accept_many([routes], now)[0]

    def accept_many(self, webhooks: Sequence[Iterable[Route]], now: float | None = None) -> list[Intake]:
        """:meth:`accept` for several webhooks, in order, in **one** transaction (group commit:
        the server gathers the webhooks that arrive while the previous commit runs)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction(synced=True):
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
            cursor = self.db.execute(
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
        row = self.db.execute(
            "SELECT id, state FROM alert_queue WHERE runbook_id = ? AND target = ? AND state IN (?, ?, ?) LIMIT 1",
            (route.runbook_id, route.target, *ACTIVE),
        ).fetchone()
        if row:
            return f"entry {row[0]} is {row[1]} for the same runbook and target"
        if self.cooldown > 0:
            row = self.db.execute(
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
        rows = self.db.execute(
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
            self.db.execute(
                "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                (EntryState.CANCELLED.value, note, at, entry_id),
            )
        return [row[0] for row in rows]

    def claim(self, now: float | None = None) -> Entry | None:
        """Take the oldest queued entry (it becomes running), or ``None``."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            row = self.db.execute(
                _CLAIM,
                (EntryState.RUNNING.value, at, EntryState.QUEUED.value),
            ).fetchone()
        return entry_of(row) if row else None

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
            self.db.execute(
                "UPDATE alert_queue SET state = ?, run_id = COALESCE(?, run_id), note = ?, updated_at = ? WHERE id = ?",
                (state.value, run_id, note, at, entry_id),
            )

    def started(self, entry_id: int, run_id: str, now: float | None = None) -> None:
        """Record the run working on a claimed entry (before it runs: a crash then knows what to resume)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self.db.execute(
                "UPDATE alert_queue SET run_id = ?, updated_at = ? WHERE id = ?", (run_id, at, entry_id)
            )

    def requeue(self, entry_id: int, note: str, now: float | None = None) -> None:
        """Put a running entry back in the queue (its run was checkpointed at shutdown)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self.db.execute(
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
                for row in self.db.execute(
                    "SELECT id FROM alert_queue WHERE state = ? ORDER BY id", (EntryState.RUNNING.value,)
                )
            ]
            for entry_id in ids:
                self.db.execute(
                    "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ?",
                    (
                        EntryState.QUEUED.value,
                        "queued again: the server stopped while its run went on; the run resumes",
                        at,
                        entry_id,
                    ),
                )
            self.db.execute("UPDATE remediations SET ended_at = ? WHERE ended_at IS NULL", (at,))
        return ids

    # ------------------------------------------------------------------ humans

    def approve(self, run_id: str, by: str, now: float | None = None) -> Entry:
        """Queue an escalated entry again, its remediation approved by ``by``; :class:`JournalError` if
        ``run_id`` (or a unique prefix of it) is not waiting for a human."""
        at = time.time() if now is None else now
        with self._lock, self._transaction(synced=True):
            entry = self._waiting(run_id)
            self.db.execute(
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
        with self._lock, self._transaction(synced=True):
            entry = self._waiting(run_id)
            note = f"declined by {by}" + (f": {reason}" if reason else "")
            self.db.execute(
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
            entry_of(row)
            for row in self.db.execute(
                f"SELECT {COLUMNS} FROM alert_queue WHERE run_id LIKE ? ESCAPE '\\' ORDER BY id DESC",  # noqa: S608
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
        with self._lock, self._transaction(synced=True):
            if automatic:
                recent = self.db.execute(
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
                    for row in self.db.execute(
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
            cursor = self.db.execute(
                "INSERT INTO remediations (host, runbook_id, run_id, automatic, started_at) VALUES (?, ?, ?, ?, ?)",
                (host, runbook_id, run_id, int(automatic), at),
            )
            assert cursor.lastrowid is not None
            return Guard(cursor.lastrowid)

    def end_remediation(self, ledger_id: int, now: float | None = None) -> None:
        """The remediation is over (its host no longer counts toward the budget)."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self.db.execute("UPDATE remediations SET ended_at = ? WHERE id = ?", (at, ledger_id))

    # ------------------------------------------------------------------ the disk

    def probe(self, now: float | None = None) -> None:
        """Write one small row: :class:`~engine.core.errors.JournalUnwritable` while the disk refuses it.

        ``cairn serve`` asks while its journal cannot be written, to see when it can again."""
        at = time.time() if now is None else now
        with self._lock, self._transaction():
            self.db.execute(_PROBE)
            self.db.execute("INSERT OR REPLACE INTO journal_probe (id, at) VALUES (1, ?)", (at,))

    def _transaction(self, *, synced: bool = False) -> WriteTransaction:
        """``synced``: the commit survives a power loss (see the module's docstring for which are)."""
        return WriteTransaction(self.db, self.path, "write the alert queue", synced=synced)
