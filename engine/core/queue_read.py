"""The alert queue's entries as ``cairn queue``, the TUI and ``cairn serve``'s ``/healthz`` read them.

:class:`QueueReader` opens the store to read only (:class:`~engine.core.store.database.Database`
with ``write=False``: a SQLite file read without writing a byte, on a full disk too; a
PostgreSQL connection the server keeps read-only). It reads what is there, as it is: a store
without a queue yet has no entries, a queue written before approvals reads with no approver,
one written by the first release (no servers, no leases) with no holder. The writer,
:class:`~engine.core.alert_queue.AlertQueue`, reads the same way on its own connection.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from engine.core.approval_policy import Action, Attempt, Outcome, Progress, Requirement
from engine.core.errors import JournalError
from engine.core.identity import Identity, identity_of
from engine.core.store import leases
from engine.core.store.database import Database
from engine.core.store.location import Location, locate


class EntryState(Enum):
    """Where a queued alert is."""

    QUEUED = "queued"
    """Waiting for a server to claim it."""
    RUNNING = "running"
    """A server claimed it (its holder) and runs it."""
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
    EXPIRED = "expired"
    """Waited for a human longer than its approval policy allows: nothing was changed."""


ACTIVE = (EntryState.QUEUED.value, EntryState.RUNNING.value, EntryState.ESCALATED.value)
"""States in which a firing alert for the same runbook and target is a duplicate (the store's
partial unique index ``alert_queue_one_active`` holds one such entry per runbook and target)."""
COOLING = (EntryState.DONE.value, EntryState.DECLINED.value)
"""States after which the cooldown applies: a run ended, or a human said no. A cancelled entry
never ran. A failed one (its target or runbook is unknown) cools down only until the server reads
its inventory and runbooks again (see :attr:`AlertQueue.failed_forgotten_before`)."""
COLUMNS = (
    "id, received_at, fingerprint, runbook_id, target, alert, state, run_id, note, updated_at, approved_by,"
    " holder, requirement, requested_by, expires_at"
)
"""An entry's columns, in :func:`entry_of`'s order."""
LATER_COLUMNS = ("approved_by", "holder", "requirement", "requested_by", "expires_at")
"""Columns an older queue may lack (read as NULL): approvals came after the first queue, holders
with the shared store, requirements and requests with approval policies."""


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
    holder: str | None = None
    """The server that holds it while it runs (its lease id, ``cairn queue`` shows it); ``None``
    when no server holds it."""
    requirement: Requirement | None = None
    """What its approval needs (fixed when it escalated); ``None`` before it escalated."""
    requested_by: Identity | None = None
    """The human who asked for this run (``cairn request``); ``None`` for an alert."""
    expires_at: float | None = None
    """When its request for approval lapses (escalated entries)."""


class QueueReader:
    """The queue's entries, read-only; :class:`~engine.core.alert_queue.AlertQueue` adds the writing.

    ``location``: a :class:`~engine.core.store.location.Location`, a SQLite file, a
    ``postgresql://`` URL, or ``None`` for ``$CAIRN_JOURNAL`` or the default file."""

    def __init__(self, location: Location | Path | str | None = None) -> None:
        self.location = locate(location)
        self.db = self._open(self.location)
        try:
            self._columns = self._readable_columns()
        except BaseException:
            self.db.close()
            raise

    def _open(self, location: Location) -> Database:
        return Database(location, write=False, what="the alert queue")

    @property
    def where(self) -> str:
        """The store as messages name it: a file, or a URL without its password."""
        return self.db.where

    def _readable_columns(self) -> str | None:
        """What to select for an entry (``None``: there is no queue in the store yet)."""
        if "alert_queue" not in self.db.tables():
            return None
        present = self.db.columns("alert_queue")
        columns = COLUMNS
        for later in LATER_COLUMNS:
            if later not in present:
                columns = columns.replace(later, f"NULL AS {later}")
        return columns

    def close(self) -> None:
        self.db.close()

    def entry(self, entry_id: int) -> Entry:
        """One entry by id."""
        rows = self._select("WHERE id = ?", (entry_id,))
        if not rows:
            raise JournalError(f"no queue entry {entry_id} in {self.where}")
        return entry_of(rows[0])

    def entries(self, *states: EntryState) -> list[Entry]:
        """Every entry (or those in ``states``), oldest first."""
        if not states:
            return [entry_of(row) for row in self._select("ORDER BY id", ())]
        marks = ", ".join("?" * len(states))
        rows = self._select(f"WHERE state IN ({marks}) ORDER BY id", tuple(s.value for s in states))
        return [entry_of(row) for row in rows]

    def recent(self, *states: EntryState, limit: int) -> list[Entry]:
        """The ``limit`` entries in ``states`` updated last, the latest first (the rest are not read)."""
        marks = ", ".join("?" * len(states))
        rows = self._select(
            f"WHERE state IN ({marks}) ORDER BY updated_at DESC, id DESC LIMIT ?",
            (*(s.value for s in states), limit),
        )
        return [entry_of(row) for row in rows]

    def attempts(self, entry_id: int) -> list[Attempt]:
        """Every approve or decline attempt on an entry, refused ones too, oldest first."""
        if "approval_attempts" not in self.db.tables():
            return []
        rows = self.db.read(
            f"SELECT {ATTEMPT_COLUMNS} FROM approval_attempts WHERE entry_id = ? ORDER BY id",  # noqa: S608
            (entry_id,),
        )
        return [attempt_of(row) for row in rows]

    def progress(self, entry: Entry) -> Progress | None:
        """Where an escalated entry's quorum stands (``None`` for an entry that has no requirement)."""
        if entry.requirement is None:
            return None
        return entry.requirement.progress(self.attempts(entry.id))

    def count(self, *states: EntryState) -> int:
        """How many entries are in ``states``."""
        marks = ", ".join("?" * len(states))
        return self._count(f"state IN ({marks})", tuple(s.value for s in states))

    def depth(self) -> int:
        """Entries waiting to start."""
        return self._count("state = ?", (EntryState.QUEUED.value,))

    def servers(self) -> list[dict[str, Any]]:
        """The servers that hold or held work in this store (:func:`~engine.core.store.leases.holders`:
        id, kind, machine, pid, state, note, started_at, seconds ``left`` on the lease), live first;
        none in a store no server has used (a first-release one too)."""
        if "holders" not in self.db.tables():
            return []
        return leases.holders(self.db)

    def _select(self, where: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        if self._columns is None:
            return []
        return self.db.read(f"SELECT {self._columns} FROM alert_queue {where}", params)  # noqa: S608 (only ?s)

    def _count(self, where: str, params: Sequence[object]) -> int:
        if self._columns is None:
            return 0
        rows = self.db.read(f"SELECT count(*) FROM alert_queue WHERE {where}", params)  # noqa: S608 (only ?s)
        return int(rows[0][0])


def entry_of(row: Sequence[Any]) -> Entry:
    """An :class:`Entry` from a row of :data:`COLUMNS`."""
    (
        entry_id,
        received_at,
        fingerprint,
        runbook_id,
        target,
        alert,
        state,
        run_id,
        note,
        updated,
        approved,
        holder,
        requirement,
        requested_by,
        expires_at,
    ) = row
    return Entry(
        id=int(entry_id),
        received_at=float(received_at),
        fingerprint=str(fingerprint),
        runbook_id=str(runbook_id),
        target=str(target),
        alert=json.loads(str(alert)),
        state=EntryState(state),
        run_id=str(run_id) if run_id is not None else None,
        note=str(note),
        updated_at=float(updated),
        approved_by=str(approved) if approved is not None else None,
        holder=str(holder) if holder is not None else None,
        requirement=Requirement.of(json.loads(requirement)) if requirement else None,
        requested_by=identity_of(json.loads(requested_by)) if requested_by else None,
        expires_at=float(expires_at) if expires_at is not None else None,
    )


ATTEMPT_COLUMNS = "id, entry_id, at, action, outcome, identity, reason, message"


def attempt_of(row: Sequence[Any]) -> Attempt:
    """An :class:`~engine.core.approval_policy.Attempt` from a row of :data:`ATTEMPT_COLUMNS`."""
    attempt_id, entry_id, at, action, outcome, identity, reason, message = row
    who = identity_of(json.loads(identity))
    assert who is not None
    return Attempt(
        int(attempt_id),
        int(entry_id),
        float(at),
        Action(action),
        Outcome(outcome),
        who,
        str(reason),
        str(message or ""),
    )
