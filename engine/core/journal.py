"""The run journal: every run, step, output and approval, in SQLite (WAL), written as events arrive.

The journal is an event subscriber: it writes each event as it arrives and commits before the
runner moves on, so a crash of the process loses at most the step in flight. What changes hosts
is also synced to disk before the runner moves on (``synchronous=FULL``,
:mod:`engine.core.journal_store`): a remediation step's start and end, and every approval —
and each such sync takes every commit before it along. So after a power loss the journal still
says which remediation steps began and which finished (a resumed run never repeats one it
recorded finished); what it may lose is the tail of the phases that only look (detect,
diagnose, verify: what ``--dry-run`` runs), which a resumed run looks at again. Output is
bounded in the database and complete in a per-run artifacts folder (written as it comes, never
synced: a power loss can cut the folder's copy short, not the database's). A running run
holds a lock file; a run whose lock nobody holds any more (the process was killed) is read as
interrupted (:mod:`engine.core.journal_read`) and recorded so by :meth:`Journal.reconcile`.

**When the disk refuses a write** (full, read-only, failing) the run's record stops there: the
event is not recorded, :class:`~engine.core.errors.JournalUnwritable` says what the journal
holds of the run, and every later event of that run raises it again — so no step starts that
the journal could not record. Output is the exception: a command already running is never
stopped half-way by its journal; its output is dropped and the step's end raises instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from engine.core.errors import JournalError, JournalUnwritable
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
from engine.core.journal_read import (
    INTERRUPTED_EXIT,
    INTERRUPTED_STEP,
    LAST,
    SCHEMA_VERSION,
    STATES_FROM_WORDS,
    ApprovalRecord,
    JournalReader,
    RunRecord,
    StepRecord,
    default_journal_path,
    like_prefix,
    lock_held,
)
from engine.core.journal_store import WriteTransaction, journal_fault, open_writer
from engine.core.journal_store import synced as synced_commits
from engine.core.model import Phase, RunStatus, host_folder

__all__ = [
    "DB_OUTPUT_LIMIT",
    "LAST",
    "ApprovalRecord",
    "Journal",
    "RunRecord",
    "StepRecord",
    "artifacts_folder",
    "default_journal_path",
    "like_prefix",
]

log = logging.getLogger(__name__)

DB_OUTPUT_LIMIT = 64 * 1024
"""Characters of each output stream kept in the database; artifacts keep everything."""
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


def artifacts_folder(journal_path: Path) -> Path:
    """Where the runs' artifacts folders are: ``runs/`` beside the journal's file."""
    return journal_path.parent / "runs"


def _bounded(text: str, limit: int = DB_OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit // 4, limit - limit // 4
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters omitted here; the artifacts folder has all of it …]\n{text[-tail:]}"


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a journal written by an earlier version up to this one (once: ``user_version`` says)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            for new, old, words in STATES_FROM_WORDS:
                db.execute(
                    "UPDATE steps SET status = ? WHERE status = ? AND message LIKE ?", (new, old, words + "%")
                )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a full disk rolls it back already
            db.execute("ROLLBACK")
        raise


@dataclass
class _Held:
    """What the journal holds of one run: for the message when it can hold no more."""

    started: bool = False
    steps: int = 0
    last: str = ""

    def said(self, run_id: str) -> str:
        if not self.started:
            return f"run {run_id} did not start: nothing of it was recorded and nothing ran"
        if not self.steps:
            held = "its start and no finished step"
        else:
            held = f"it up to {self.last} ({self.steps} step{'s' if self.steps != 1 else ''} recorded)"
        return (
            f"run {run_id} stopped: the journal holds {held}; "
            "commands already started on hosts may have finished"
        )


class Journal(JournalReader):
    """The journal, to write: subscribe :meth:`record` to a run's event bus (reads as :class:`JournalReader`).

    Opening it creates the file if needed and upgrades an earlier schema; to only read, open a
    :class:`JournalReader`, which writes nothing.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self._run_locks: dict[str, IO[bytes]] = {}
        self._outputs: dict[tuple[str, str, str, str, str], IO[str]] = {}
        self._held: dict[str, _Held] = {}
        self._stopped: dict[str, JournalUnwritable] = {}
        """Runs whose record stopped: the disk refused one of their writes."""
        super().__init__(path)
        self.artifacts_root = artifacts_folder(self.path)
        with contextlib.suppress(JournalError):  # best effort: readers show such runs interrupted anyway
            self.reconcile()

    def _connect(self) -> sqlite3.Connection:
        db = open_writer(
            self.path,
            _SCHEMA,
            what="the journal",
            hint="choose another place with --journal PATH or CAIRN_JOURNAL",
        )
        try:
            _upgrade(db)
        except (OSError, sqlite3.Error) as exc:
            db.close()
            raise journal_fault(exc, self.path, "upgrade the journal") from exc
        return db

    def close(self) -> None:
        """Close the database and any open artifact files (a full disk cannot make this fail)."""
        for output in self._outputs.values():
            with contextlib.suppress(OSError):  # what it still buffers cannot be written: it is lost
                output.close()
        for lock in self._run_locks.values():
            lock.close()
        super().close()

    # ----------------------------------------------------------------- writing

    def record(self, event: Event) -> None:
        """Persist one event (an :class:`~engine.core.events.EventBus` subscriber).

        :class:`JournalUnwritable` when the disk refuses it, and for every later event of the
        same run but its output (see the module's docstring)."""
        with self._lock:
            stopped = self._stopped.get(event.run_id)
            if stopped is not None:
                if isinstance(event, StepOutput):
                    return
                raise stopped.about(stopped.context, recorded=stopped.recorded)
            try:
                self._record(event)
            except (OSError, sqlite3.Error) as exc:
                fault = journal_fault(exc, self.path, "write to the journal")
                if not isinstance(fault, JournalUnwritable):
                    raise fault from exc
                self._stop(event, fault)
                if isinstance(event, StepOutput):
                    return  # the command runs on; its step's end says the journal stopped
                raise self._stopped[event.run_id] from exc
            self._note(event)

    def _stop(self, event: Event, fault: JournalUnwritable) -> None:
        """The run's record ends here: its open files are let go, later events refused."""
        held = self._held.get(event.run_id, _Held())
        self._stopped[event.run_id] = fault.about(held.said(event.run_id), recorded=held.started)
        for key in [k for k in self._outputs if k[0] == event.run_id]:
            with contextlib.suppress(OSError):
                self._outputs.pop(key).close()
        self._release(event.run_id)  # its process is here, but its record is over: read as interrupted
        log.error("journal stopped recording run %s: %s", event.run_id, self._stopped[event.run_id])

    def _note(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._held[event.run_id] = _Held(started=True)
            case StepFinished(result=r):
                held = self._held.setdefault(event.run_id, _Held(started=True))
                held.steps += 1
                held.last = f"{r.phase.value}/{r.step_id} on {r.host}"
            case RunFinished():
                self._held.pop(event.run_id, None)

    def _record(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._run_started(event)
            case StepStarted():
                self._db_write(
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
                    synced=event.phase is Phase.REMEDIATE,
                )
            case StepOutput():
                self._output(event)
            case StepApproval(asked=False):
                pass  # nobody decided: the step's own row says "not asked" and why
            case StepApproval():
                self._db_write(
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
                    synced=True,
                )
            case StepFinished():
                self._step_finished(event)
            case HostFinished():
                report = event.report
                self._db_write(
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
                self._db_write(
                    "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? WHERE id = ?",
                    (status.value, final.exit_code, event.at, event.run_id),
                )
                self._release(event.run_id)

    def _db_write(self, statement: str, params: tuple[object, ...], *, synced: bool = False) -> None:
        """One statement, one commit; ``synced``: on disk before it returns (see the module's docstring)."""
        assert self._db is not None
        if not synced:
            self._db.execute(statement, params)
            return
        with synced_commits(self._db):
            self._db.execute(statement, params)

    def _output(self, event: StepOutput) -> None:
        key = (event.run_id, event.host, event.phase.value, event.step_id, event.stream)
        handle = self._outputs.get(key)
        if handle is None:
            folder = self.artifacts_root / event.run_id / host_folder(event.host)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{event.phase.value}.{event.step_id}.{event.stream}"
            handle = self._outputs[key] = (folder / name).open("a", encoding="utf-8")
        handle.write(event.text)
        handle.flush()

    def _run_started(self, event: RunStarted) -> None:
        folder = self.artifacts_root / event.run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "runbook.yaml").write_text(event.runbook_text, encoding="utf-8")
        lock = (folder / ".lock").open("wb")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._run_locks[event.run_id] = lock
        self._db_write(
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
        self._db_write(
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
            synced=r.phase is Phase.REMEDIATE,
        )

    def _release(self, run_id: str) -> None:
        lock = self._run_locks.pop(run_id, None)
        if lock:
            lock.close()

    def _alive(self, run_id: str, artifacts: str) -> bool:
        return run_id in self._run_locks or lock_held(Path(artifacts) / ".lock")

    def reconcile(self) -> list[str]:
        """Record runs whose process is gone as interrupted (readers already show them so); their ids."""
        assert self._db is not None
        with self._lock:
            running = self._db.execute(
                "SELECT id, artifacts FROM runs WHERE status = ?", (RunStatus.RUNNING.value,)
            ).fetchall()
        stale = [run_id for run_id, artifacts in running if not self._alive(run_id, artifacts)]
        if not stale:
            return []  # nothing to write: no write lock taken (a server opens a journal per alert)
        with self._lock, WriteTransaction(self._db, self.path, "write to the journal"):
            for run_id in stale:
                self._db.execute(
                    "UPDATE runs SET status = ?, exit_code = ? WHERE id = ? AND status = ?",
                    (RunStatus.INTERRUPTED.value, INTERRUPTED_EXIT, run_id, RunStatus.RUNNING.value),
                )
                self._db.execute(
                    "UPDATE steps SET status = 'interrupted', message = ? WHERE run_id = ? AND status = 'running'",
                    (INTERRUPTED_STEP, run_id),
                )
        log.info("marked %d run(s) interrupted: %s", len(stale), ", ".join(stale))
        return stale
