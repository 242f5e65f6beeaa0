"""Reading the run journal — runs, their steps and approvals — without writing a byte.

:class:`JournalReader` opens the journal's file read-only
(:func:`~engine.core.journal_store.open_reader`): ``cairn history``, ``cairn show-run`` and
``cairn resume``'s look at the run read through it, on a full or read-only disk too. A run
whose process is gone (nobody holds its lock file) still says ``running`` in the file; it is
*shown* as interrupted — exit code 130, its unfinished steps interrupted — and only a writer
records that (:meth:`engine.core.journal.Journal.reconcile`). A journal of an earlier schema is
read the way this version reads it; only a writer upgrades the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.core.errors import JournalError
from engine.core.journal_store import has_table, open_reader
from engine.core.model import RunStatus

LAST = "last"
"""Stands for the newest run wherever a run id is asked for (``cairn show-run last``)."""
SCHEMA_VERSION = 2
"""1: the first release; 2: unfinished steps have their own statuses (not_run, cancelled, interrupted)."""
STATES_FROM_WORDS = (
    ("interrupted", "error", "interrupted:"),
    ("cancelled", "error", "cancelled"),
    ("not_run", "error", "not run:"),
    ("not_run", "skipped", "not run:"),
    ("not_run", "not_asked", "not run:"),
)
"""(status now, status in version 1, how its message starts): version 1 told unfinished steps by
their message's first words; version 2 records it as the status."""
INTERRUPTED_STEP = "interrupted: the run stopped before this step finished"
"""The message of a step whose run's process went away while it ran."""
INTERRUPTED_EXIT = 130


def default_journal_path() -> Path:
    """``$CAIRN_JOURNAL``, else ``$XDG_STATE_HOME/cairn/journal.db`` (``~/.local/state/cairn``)."""
    explicit = os.environ.get("CAIRN_JOURNAL")
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cairn" / "journal.db"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A step as the journal holds it."""

    seq: int
    host: str
    phase: str
    step_id: str
    title: str
    status: str
    message: str
    command: str
    rc: int | None
    stdout: str
    stderr: str
    out: Any
    started_at: float | None
    duration: float | None
    approval: str


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A decision on a step."""

    host: str
    phase: str
    step_id: str
    command: str
    approved: bool
    decided_by: str
    note: str
    at: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as the journal holds it; ``steps``/``approvals`` are filled by :meth:`JournalReader.get_run`."""

    id: str
    runbook_id: str
    runbook_path: str
    runbook_sha256: str
    runbook_text: str
    hosts: tuple[str, ...]
    inputs: dict[str, Any]
    started_by: str
    trigger: dict[str, Any]
    dry_run: bool
    last_phase: str
    status: RunStatus
    exit_code: int | None
    outcomes: dict[str, dict[str, str]]
    started_at: float
    finished_at: float | None
    artifacts: str
    steps: tuple[StepRecord, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()


class JournalReader:
    """The journal, read-only: :meth:`list_runs` and :meth:`get_run` (a missing file has no runs)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_journal_path()
        self._lock = threading.Lock()
        self._db = self._connect()
        self._version, self._has_runs = SCHEMA_VERSION, False
        if self._db is not None:
            try:
                self._version = self._db.execute("PRAGMA user_version").fetchone()[0]
                self._has_runs = has_table(self._db, "runs")
            except sqlite3.Error as exc:
                self._db.close()
                raise JournalError(f"cannot read the journal at {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection | None:
        return open_reader(self.path, what="the journal")

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()

    def list_runs(
        self, *, limit: int = 20, runbook_id: str | None = None, trigger_kind: str | None = None
    ) -> list[RunRecord]:
        """Most recent runs first; ``trigger_kind="alert"``: only those an alert started."""
        where: list[str] = []
        params: list[Any] = []
        if runbook_id:
            where.append("runbook_id = ?")
            params.append(runbook_id)
        if trigger_kind:
            where.append("json_extract(trigger, '$.kind') = ?")
            params.append(trigger_kind)
        query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 (only ?s)
        query += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [self._run(row) for row in self._rows(query, params)]

    def get_run(self, run_id: str) -> RunRecord:
        """The run whose id is ``run_id`` or starts with it (``last``: the newest run), with its steps and approvals."""
        if run_id == LAST:
            rows = self._rows("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1", [])
            if not rows:
                raise JournalError(f"no run yet in {self.path}; start one with `cairn run ID`")
            run_id = rows[0]["id"]
        rows = self._rows("SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id", [like_prefix(run_id)])
        if not rows:
            raise JournalError(f"no run {run_id!r} in {self.path}; `cairn history` lists the runs")
        exact = [r for r in rows if r["id"] == run_id]
        if len(rows) > 1 and not exact:
            listed = ", ".join(r["id"] for r in rows[:5])
            raise JournalError(f"run id {run_id!r} is ambiguous: {listed}; give more of it")
        row = exact[0] if exact else rows[0]
        steps = tuple(
            self._step(s)
            for s in self._rows("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", [row["id"]])
        )
        approvals = tuple(
            ApprovalRecord(
                host=a["host"],
                phase=a["phase"],
                step_id=a["step_id"],
                command=a["command"],
                approved=bool(a["approved"]),
                decided_by=a["decided_by"],
                note=a["note"],
                at=a["at"],
            )
            for a in self._rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY seq", [row["id"]])
        )
        return self._run(row, steps, approvals)

    def _rows(self, query: str, params: list[Any]) -> list[sqlite3.Row]:
        if self._db is None or not self._has_runs:
            return []  # no journal yet: no runs
        with self._lock:
            try:
                cursor = self._db.execute(query, params)
                cursor.row_factory = sqlite3.Row
                return cursor.fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal at {self.path}: {exc}") from exc

    def _alive(self, run_id: str, artifacts: str) -> bool:
        """Whether the process running ``run_id`` is still there (it holds the run's lock file)."""
        return lock_held(Path(artifacts) / ".lock")

    def _step(self, s: sqlite3.Row) -> StepRecord:
        status = s["status"] if self._version >= 2 else _status_in_version_1(s["status"], s["message"])
        return StepRecord(
            seq=s["seq"],
            host=s["host"],
            phase=s["phase"],
            step_id=s["step_id"],
            title=s["title"],
            status=status,
            message=s["message"],
            command=s["command"],
            rc=s["rc"],
            stdout=s["stdout"],
            stderr=s["stderr"],
            out=json.loads(s["out"]) if s["out"] else None,
            started_at=s["started_at"],
            duration=s["duration"],
            approval=s["approval"],
        )

    def _run(
        self, row: sqlite3.Row, steps: tuple[StepRecord, ...] = (), approvals: tuple[ApprovalRecord, ...] = ()
    ) -> RunRecord:
        status = RunStatus(row["status"])
        exit_code = row["exit_code"]
        if status is RunStatus.RUNNING and not self._alive(row["id"], row["artifacts"]):
            status, exit_code = RunStatus.INTERRUPTED, INTERRUPTED_EXIT  # as reconcile() would record it
            steps = tuple(
                replace(s, status="interrupted", message=INTERRUPTED_STEP) if s.status == "running" else s
                for s in steps
            )
        return RunRecord(
            id=row["id"],
            runbook_id=row["runbook_id"],
            runbook_path=row["runbook_path"],
            runbook_sha256=row["runbook_sha256"],
            runbook_text=row["runbook_text"],
            hosts=tuple(json.loads(row["hosts"])),
            inputs=json.loads(row["inputs"]),
            started_by=row["started_by"],
            trigger=json.loads(row["trigger"]),
            dry_run=bool(row["dry_run"]),
            last_phase=row["last_phase"],
            status=status,
            exit_code=exit_code,
            outcomes=json.loads(row["outcomes"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            artifacts=row["artifacts"],
            steps=steps,
            approvals=approvals,
        )


def _status_in_version_1(status: str, message: str) -> str:
    """A step's status as version 2 records it, from a version-1 journal's status and message."""
    for now, then, words in STATES_FROM_WORDS:
        if status == then and message.startswith(words):
            return now
    return status


def like_prefix(prefix: str) -> str:
    """``prefix`` as a LIKE pattern (ESCAPE '\\') that matches it literally, then anything."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def lock_held(path: Path) -> bool:
    """True when another open file description holds ``path``'s lock (its run is alive).

    Opened read-only: asking never creates or changes the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody can hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
