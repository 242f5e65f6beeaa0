"""The run journal: every run, step, output and approval, in SQLite (WAL).

The journal is an event subscriber: it writes each event as it arrives and
commits before the runner moves on, so a crash loses at most the step in
flight. Output is bounded in the database and complete in a per-run artifacts
folder. A running run holds a lock file; a run whose lock nobody holds any
more (the process was killed) is shown as interrupted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine.core.errors import JournalError
from engine.core.events import (
    Event,
    HostFinished,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.core.model import RunStatus, host_folder

log = logging.getLogger(__name__)

LAST = "last"
"""Stands for the newest run wherever a run id is asked for (``cairn show-run last``)."""
DB_OUTPUT_LIMIT = 64 * 1024
"""Characters of each output stream kept in the database; artifacts keep everything."""
_SCHEMA_VERSION = 2
"""1: the first release; 2: unfinished steps have their own statuses (not_run, cancelled, interrupted)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    runbook_id TEXT NOT NULL,
    runbook_path TEXT NOT NULL,
    runbook_sha256 TEXT NOT NULL,
    runbook_text TEXT NOT NULL,
    hosts TEXT NOT NULL,
    inputs TEXT NOT NULL,
    started_by TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    last_phase TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    outcomes TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    finished_at REAL,
    artifacts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    host TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL DEFAULT '',
    rc INTEGER,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    out TEXT,
    started_at REAL,
    duration REAL,
    approval TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host, phase, step_id)
);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    host TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    command TEXT NOT NULL,
    approved INTEGER NOT NULL,
    decided_by TEXT NOT NULL,
    note TEXT NOT NULL,
    at REAL NOT NULL
);
"""


def default_journal_path() -> Path:
    """``$CAIRN_JOURNAL``, else ``$XDG_STATE_HOME/cairn/journal.db`` (``~/.local/state/cairn``)."""
    explicit = os.environ.get("CAIRN_JOURNAL")
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cairn" / "journal.db"


def _bounded(text: str, limit: int = DB_OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit // 4, limit - limit // 4
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters omitted here; the artifacts folder has all of it …]\n{text[-tail:]}"


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
    """A run as the journal holds it; ``steps``/``approvals`` are filled by :meth:`Journal.get_run`."""

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


_STATES_FROM_WORDS = (
    ("interrupted", "error", "interrupted:%"),
    ("cancelled", "error", "cancelled%"),
    ("not_run", "error", "not run:%"),
    ("not_run", "skipped", "not run:%"),
    ("not_run", "not_asked", "not run:%"),
)
"""Version 1 told unfinished steps by their message's first words; version 2 records it as the status."""


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a journal written by an earlier version up to this one (once: ``user_version`` says)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version >= _SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            for new, old, words in _STATES_FROM_WORDS:
                db.execute(
                    "UPDATE steps SET status = ? WHERE status = ? AND message LIKE ?", (new, old, words)
                )
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class Journal:
    """SQLite run store; subscribe :meth:`record` to a run's event bus."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_journal_path()
        self.artifacts_root = self.path.parent / "runs"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            _upgrade(self._db)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"cannot open the journal at {self.path}: {exc}; "
                "choose another place with --journal PATH or CAIRN_JOURNAL"
            ) from exc
        self._lock = threading.Lock()
        self._run_locks: dict[str, IO[bytes]] = {}
        self._outputs: dict[tuple[str, str, str, str, str], IO[str]] = {}

    def close(self) -> None:
        """Close the database and any open artifact files."""
        for output in self._outputs.values():
            output.close()
        for lock in self._run_locks.values():
            lock.close()
        self._db.close()

    # ----------------------------------------------------------------- writing

    def record(self, event: Event) -> None:
        """Persist one event (an :class:`~engine.core.events.EventBus` subscriber)."""
        with self._lock:
            try:
                self._record(event)
            except sqlite3.Error as exc:
                raise JournalError(f"cannot write to the journal at {self.path}: {exc}") from exc

    def _record(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._run_started(event)
            case StepStarted():
                self._db.execute(
                    "INSERT OR REPLACE INTO steps (run_id, seq, host, phase, step_id, title, status, command, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                    (
                        event.run_id,
                        event.seq,
                        event.host,
                        event.phase.value,
                        event.step_id,
                        event.title,
                        event.command,
                        event.at,
                    ),
                )
            case StepOutput():
                key = (event.run_id, event.host, event.phase.value, event.step_id, event.stream)
                handle = self._outputs.get(key)
                if handle is None:
                    folder = self.artifacts_root / event.run_id / host_folder(event.host)
                    folder.mkdir(parents=True, exist_ok=True)
                    name = f"{event.phase.value}.{event.step_id}.{event.stream}"
                    handle = self._outputs[key] = (folder / name).open("a", encoding="utf-8")
                handle.write(event.text)
                handle.flush()
            case StepApproval(asked=False):
                pass  # nobody decided: the step's own row says "not asked" and why
            case StepApproval():
                self._db.execute(
                    "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.run_id,
                        event.seq,
                        event.host,
                        event.phase.value,
                        event.step_id,
                        event.command,
                        int(event.approved),
                        event.by,
                        event.note,
                        event.at,
                    ),
                )
            case StepFinished():
                self._step_finished(event)
            case HostFinished():
                report = event.report
                self._db.execute(
                    "UPDATE runs SET outcomes = json_set(outcomes, '$.' || json_quote(?), json(?)) WHERE id = ?",
                    (
                        report.host,
                        json.dumps({"outcome": report.outcome.value, "reason": report.reason}),
                        event.run_id,
                    ),
                )
            case RunFinished():
                final = event.report
                status = RunStatus.INTERRUPTED if final.interrupted else RunStatus.FINISHED
                self._db.execute(
                    "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? WHERE id = ?",
                    (status.value, final.exit_code, event.at, event.run_id),
                )
                self._release(event.run_id)

    def _run_started(self, event: RunStarted) -> None:
        folder = self.artifacts_root / event.run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "runbook.yaml").write_text(event.runbook_text, encoding="utf-8")
        lock = (folder / ".lock").open("wb")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._run_locks[event.run_id] = lock
        self._db.execute(
            "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
            " started_by, trigger, dry_run, last_phase, status, started_at, artifacts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.run_id,
                event.runbook_id,
                event.runbook_path,
                event.runbook_sha256,
                event.runbook_text,
                json.dumps(list(event.hosts)),
                json.dumps(event.inputs, default=str),
                event.started_by,
                json.dumps(event.trigger, default=str),
                int(event.dry_run),
                event.last_phase,
                RunStatus.RUNNING.value,
                event.at,
                str(folder),
            ),
        )

    def _step_finished(self, event: StepFinished) -> None:
        r = event.result
        for stream in ("stdout", "stderr"):
            handle = self._outputs.pop((event.run_id, r.host, r.phase.value, r.step_id, stream), None)
            if handle:
                handle.close()
        out = json.dumps(r.out, default=str) if r.out is not None else None
        if out is not None and len(out) > DB_OUTPUT_LIMIT:
            out = json.dumps("[parsed output too large for the journal; see the artifacts folder]")
        self._db.execute(
            "INSERT INTO steps (run_id, seq, host, phase, step_id, status, message, command, rc, stdout, stderr,"
            " out, started_at, duration, approval) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, host, phase, step_id) DO UPDATE SET status = excluded.status,"
            " message = excluded.message, command = excluded.command, rc = excluded.rc,"
            " stdout = excluded.stdout, stderr = excluded.stderr, out = excluded.out,"
            " duration = excluded.duration, approval = excluded.approval",
            (
                event.run_id,
                event.seq,
                r.host,
                r.phase.value,
                r.step_id,
                r.status.value,
                r.message,
                r.command,
                r.rc,
                _bounded(r.stdout),
                _bounded(r.stderr),
                out,
                r.started_at or event.at,
                r.duration,
                r.approval,
            ),
        )

    def _release(self, run_id: str) -> None:
        lock = self._run_locks.pop(run_id, None)
        if lock:
            lock.close()

    # ----------------------------------------------------------------- reading

    def reconcile(self) -> list[str]:
        """Mark runs whose process is gone as interrupted; returns their ids."""
        stale: list[str] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, artifacts FROM runs WHERE status = ?", (RunStatus.RUNNING.value,)
            )
            for run_id, artifacts in rows.fetchall():
                if run_id in self._run_locks or _lock_held(Path(artifacts) / ".lock"):
                    continue
                stale.append(run_id)
                self._db.execute(
                    "UPDATE runs SET status = ?, exit_code = 130 WHERE id = ?",
                    (RunStatus.INTERRUPTED.value, run_id),
                )
                self._db.execute(
                    "UPDATE steps SET status = 'interrupted', message = 'interrupted: the run stopped before"
                    " this step finished' WHERE run_id = ? AND status = 'running'",
                    (run_id,),
                )
        if stale:
            log.info("marked %d run(s) interrupted: %s", len(stale), ", ".join(stale))
        return stale

    def list_runs(
        self, *, limit: int = 20, runbook_id: str | None = None, trigger_kind: str | None = None
    ) -> list[RunRecord]:
        """Most recent runs first; ``trigger_kind="alert"``: only those an alert started."""
        self.reconcile()
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
        self.reconcile()
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
            StepRecord(
                seq=s["seq"],
                host=s["host"],
                phase=s["phase"],
                step_id=s["step_id"],
                title=s["title"],
                status=s["status"],
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
        with self._lock:
            cursor = self._db.execute(query, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    @staticmethod
    def _run(
        row: sqlite3.Row, steps: tuple[StepRecord, ...] = (), approvals: tuple[ApprovalRecord, ...] = ()
    ) -> RunRecord:
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
            status=RunStatus(row["status"]),
            exit_code=row["exit_code"],
            outcomes=json.loads(row["outcomes"]),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            artifacts=row["artifacts"],
            steps=steps,
            approvals=approvals,
        )


def like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _lock_held(path: Path) -> bool:
    """True when another open file description holds ``path``'s lock (its run is alive)."""
    try:
        with path.open("ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return False
