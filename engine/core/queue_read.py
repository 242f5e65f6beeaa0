"""The alert queue's entries as ``cairn queue`` and ``cairn serve``'s ``/healthz`` read them.

:class:`QueueReader` opens the journal's file read-only
(:func:`~engine.core.journal_store.open_reader`: no byte written, on a full disk too); the
writer, :class:`~engine.core.alert_queue.AlertQueue`, reads the same way on its own connection.
A file without a queue yet has no entries; a queue written before approvals existed reads with
no approver.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.core.errors import JournalError
from engine.core.journal_store import has_table, open_reader


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
COLUMNS = (
    "id, received_at, fingerprint, runbook_id, target, alert, state, run_id, note, updated_at, approved_by"
)
"""An entry's columns, in :func:`entry_of`'s order."""


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


class QueueReader:
    """The queue's entries, read-only; :class:`~engine.core.alert_queue.AlertQueue` adds the writing."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = self._connect()
        self._columns = self._readable_columns()

    def _connect(self) -> sqlite3.Connection | None:
        return open_reader(self.path, what="the alert queue")

    def _readable_columns(self) -> str | None:
        """What to select for an entry (``None``: there is no queue in the file yet)."""
        if self._db is None:
            return None
        try:
            if not has_table(self._db, "alert_queue"):
                return None
            names = {row[1] for row in self._db.execute("PRAGMA table_info(alert_queue)")}
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(f"cannot read the alert queue at {self.path}: {exc}") from exc
        return COLUMNS if "approved_by" in names else COLUMNS.replace("approved_by", "NULL AS approved_by")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def entry(self, entry_id: int) -> Entry:
        """One entry by id."""
        rows = self._select("WHERE id = ?", (entry_id,))
        if not rows:
            raise JournalError(f"no queue entry {entry_id} in {self.path}")
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

    def count(self, *states: EntryState) -> int:
        """How many entries are in ``states``."""
        marks = ", ".join("?" * len(states))
        return self._count(f"state IN ({marks})", tuple(s.value for s in states))

    def depth(self) -> int:
        """Entries waiting to start."""
        return self._count("state = ?", (EntryState.QUEUED.value,))

    def _select(self, where: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        if self._columns is None:
            return []
        return self._read(f"SELECT {self._columns} FROM alert_queue {where}", params)  # noqa: S608 (only ?s)

    def _count(self, where: str, params: Sequence[object]) -> int:
        if self._columns is None:
            return 0
        rows = self._read(f"SELECT count(*) FROM alert_queue WHERE {where}", params)  # noqa: S608 (only ?s)
        return int(str(rows[0][0]))

    def _read(self, query: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        assert self._db is not None
        try:  # not under the writer's lock: a read never waits behind a transaction in Python
            return self._db.execute(query, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the alert queue at {self.path}: {exc}") from exc


def entry_of(row: Sequence[object]) -> Entry:
    """An :class:`Entry` from a row of :data:`COLUMNS`."""
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
