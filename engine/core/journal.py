"""The run journal: every run, step, output and approval, in the store, written as events arrive.

The journal is an event subscriber: it writes each event as it arrives and commits before the
runner moves on, so a crash of the process loses at most the step in flight. What changes hosts
is also synced to disk before the runner moves on (SQLite's ``synchronous=FULL``; PostgreSQL's
commits always are): a remediation step's start and end, and every approval — and each such
sync takes every commit before it along. So after a power loss the journal still says which
remediation steps began and which finished (a resumed run never repeats one it recorded
finished); what it may lose is the tail of the phases that only look (detect, diagnose, verify:
what ``--dry-run`` runs), which a resumed run looks at again. Output is bounded in the database
and complete in a per-run artifacts folder on this machine (:mod:`engine.core.journal_artifacts`).

**Who runs it.** A run started with a ``holder`` (a server's lease id) is alive while that
holder's lease holds; one without is alive while its process holds the artifacts folder's lock
file (:mod:`engine.core.run_liveness`). A run whose process is gone is read as interrupted
(:mod:`engine.core.journal_read`) and recorded so by :meth:`Journal.reconcile`. With a ``fence``
(:class:`Fence`: the lease, checked inside the transaction that records), a remediation step's
start and every approval are recorded only while the lease holds — the check and the write
commit together — so a process whose lease lapsed never records, hence never starts, a
remediation step another server may now be running.

**When the store refuses a write** (a full, read-only or failing disk; a PostgreSQL that does
not answer) the run's record stops there: the event is not recorded,
:class:`~engine.core.errors.JournalUnwritable` says what the journal holds of the run, and every
later event of that run raises it again — so no step starts that the journal could not record.
A lapsed lease (:class:`~engine.core.errors.LeaseLost`) stops the record the same way. Output is
the exception: a command already running is never stopped half-way by its journal; its output
is dropped and the step's end raises instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from engine.core.errors import JournalError, JournalUnwritable, LeaseLost
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
from engine.core.journal_artifacts import RunArtifacts
from engine.core.journal_read import (
    INTERRUPTED_EXIT,
    INTERRUPTED_STEP,
    LAST,
    ApprovalRecord,
    JournalReader,
    RunRecord,
    StepRecord,
    default_journal_path,
    default_location,
    like_prefix,
)
from engine.core.journal_stops import RunRecords
from engine.core.journal_store import journal_fault
from engine.core.model import Phase, RunStatus
from engine.core.run_liveness import alive, held_sql
from engine.core.store import migrate
from engine.core.store.database import Database, Transaction
from engine.core.store.location import Location

__all__ = [
    "DB_OUTPUT_LIMIT",
    "LAST",
    "ApprovalRecord",
    "Fence",
    "Journal",
    "RunRecord",
    "StepRecord",
    "artifacts_folder",
    "default_journal_path",
    "default_location",
    "like_prefix",
]

log = logging.getLogger(__name__)

DB_OUTPUT_LIMIT = 64 * 1024
"""Characters of each output stream kept in the database; artifacts keep everything."""
WRITE = "write to the journal"
HINT = "choose another place with --journal PATH or CAIRN_JOURNAL"


class Fence(Protocol):
    """What stops a process whose lease lapsed from recording work (:meth:`engine.core.store.leases.Lease.check`)."""

    def check(self, tx: Transaction) -> None:
        """Inside ``tx``, before the write it guards: :class:`LeaseLost` unless the lease holds
        (a statement of ``tx``'s, so the check and the write commit together)."""

    @property
    def lost(self) -> str:
        """Why the lease is known gone ("" while it holds): then no write of a run it fences goes
        through, not even a step's end (the run is another server's to record now)."""


def artifacts_folder(journal_path: Path) -> Path:
    """Where the runs' artifacts folders are beside a journal *file*: ``runs/`` (for any store:
    :attr:`~engine.core.store.location.Location.artifacts_root`)."""
    return journal_path.parent / "runs"


def _bounded(text: str, limit: int = DB_OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    head, tail = limit // 4, limit - limit // 4
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters omitted here; the artifacts folder has all of it …]\n{text[-tail:]}"


class Journal(JournalReader):
    """The journal, to write: subscribe :meth:`record` to a run's event bus (reads as :class:`JournalReader`).

    Opening it creates a SQLite file if needed and brings the schema up to date
    (:func:`~engine.core.store.migrate.ensure_current`); to only read, open a
    :class:`JournalReader`, which writes nothing. ``holder``: the lease id written as the runs'
    holder; ``fence``: checked in the transaction of each remediation step's start and approval.
    """

    def __init__(
        self,
        location: Location | Path | str | None = None,
        *,
        holder: str | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.holder = holder
        self.fence = fence
        self._lock = threading.Lock()
        self._records = RunRecords()
        self._on_close: list[Callable[[], None]] = []
        super().__init__(location)
        self.artifacts_root = self.location.artifacts_root
        self.artifacts = RunArtifacts(self.artifacts_root)
        with contextlib.suppress(JournalError):  # best effort: readers show such runs interrupted anyway
            self.reconcile()

    def _open(self, location: Location) -> Database:
        db = Database(location, write=True, what="the journal", hint=HINT)
        try:
            migrate.ensure_current(db)
        except BaseException:
            db.close()
            raise
        return db

    def when_closed(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this journal closes (a front end's lease let go with it)."""
        self._on_close.append(action)

    def close(self) -> None:
        """Close the database and any open artifact files (a full disk cannot make this fail)."""
        self.artifacts.close()
        super().close()
        while self._on_close:
            self._on_close.pop()()

    # ----------------------------------------------------------------- writing

    def record(self, event: Event) -> None:
        """Persist one event (an :class:`~engine.core.events.EventBus` subscriber).

        :class:`JournalUnwritable` when the store refuses it, :class:`LeaseLost` when the fence
        does, and either again for every later event of the same run but its output (see the
        module's docstring)."""
        with self._lock:
            stopped = self._records.stopped(event.run_id)
            if stopped is not None:
                if isinstance(event, StepOutput):
                    return
                raise stopped
            try:
                self._record(event)
            except (JournalUnwritable, LeaseLost) as exc:
                said = self._records.stop(event.run_id, exc)
                # Its process is here, but its record is over: read as interrupted.
                self.artifacts.drop(event.run_id)
                log.error("journal stopped recording run %s: %s (%s)", event.run_id, said, exc)
                if isinstance(event, StepOutput):
                    return  # the command runs on; its step's end says the journal stopped
                raise said from exc
            self._records.recorded(event)

    def _record(self, event: Event) -> None:
        try:
            self._write_event(event)
        except OSError as exc:  # the artifacts folder's disk (a SQLite journal's own, beside it)
            where = self.location.path or self.artifacts_root
            raise journal_fault(exc, where, "write the journal's artifacts") from exc

    def _write_event(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._run_started(event)
            case StepStarted():
                self._step_started(event)
            case StepOutput():
                self.artifacts.output(event)
            case StepApproval(asked=False):
                pass  # nobody decided: the step's own row says "not asked" and why
            case StepApproval():
                self._write(
                    "INSERT INTO approvals (run_id, seq, host, phase, step_id, command, approved, decided_by,"
                    " note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    fenced=True,
                )
            case StepFinished():
                self._step_finished(event)
            case HostFinished(report=report):
                self._write(
                    "INSERT INTO host_outcomes (run_id, host, outcome, reason) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (run_id, host) DO UPDATE SET outcome = excluded.outcome,"
                    " reason = excluded.reason",
                    (event.run_id, report.host, report.outcome.value, report.reason),
                )
            case RunFinished(report=final):
                status = RunStatus.INTERRUPTED if final.interrupted else RunStatus.FINISHED
                self._write(
                    "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? WHERE id = ?",
                    (status.value, final.exit_code, event.at, event.run_id),
                )
                self.artifacts.release(event.run_id)

    def _write(
        self, statement: str, params: tuple[object, ...], *, synced: bool = False, fenced: bool = False
    ) -> None:
        """One statement, one commit; ``synced``: on disk before it returns (see the module's
        docstring); ``fenced``: only while the lease holds, checked in the same transaction."""
        if self.fence is not None and self.fence.lost:
            raise LeaseLost(f"the lease this run was recorded under is gone ({self.fence.lost})")
        if not synced and not (fenced and self.fence is not None):
            self.db.write_one(statement, params, WRITE)  # commits alone: no BEGIN/COMMIT round trips
            return
        with self.db.transaction(WRITE, synced=synced) as tx:
            if fenced and self.fence is not None:
                self.fence.check(tx)
            tx.execute(statement, params)

    def _run_started(self, event: RunStarted) -> None:
        folder = self.artifacts.start(event.run_id, event.runbook_text)
        self._write(
            "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
            " started_by, trigger, trigger_kind, dry_run, last_phase, status, started_at, artifacts, holder)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                str(event.trigger.get("kind", "")),
                int(event.dry_run),
                event.last_phase,
                RunStatus.RUNNING.value,
                event.at,
                str(folder),
                self.holder,
            ),
        )

    def _step_started(self, event: StepStarted) -> None:
        # A step started again (stepping's "run it again") starts its row afresh.
        remediation = event.phase is Phase.REMEDIATE
        self._write(
            "INSERT INTO steps (run_id, seq, host, phase, step_id, title, status, command, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)"
            " ON CONFLICT (run_id, host, phase, step_id) DO UPDATE SET seq = excluded.seq,"
            " title = excluded.title, status = excluded.status, message = '', command = excluded.command,"
            " rc = NULL, stdout = '', stderr = '', out = NULL, started_at = excluded.started_at,"
            " duration = NULL, approval = ''",
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
            synced=remediation,
            fenced=remediation,
        )

    def _step_finished(self, event: StepFinished) -> None:
        r = event.result
        self.artifacts.step_done(event.run_id, r.host, r.phase.value, r.step_id)
        out = json.dumps(r.out, default=str) if r.out is not None else None
        if out is not None and len(out) > DB_OUTPUT_LIMIT:
            out = json.dumps("[parsed output too large for the journal; see the artifacts folder]")
        self._write(
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

    # ----------------------------------------------------------------- runs whose process is gone

    def _alive(self, row: dict[str, object]) -> bool:
        return self.artifacts.holds(str(row["id"])) or super()._alive(row)

    def reconcile(self) -> list[str]:
        """Record runs whose process is gone as interrupted (readers already show them so); their ids.

        Gone: its holder's lease no longer holds, or (no holder) nobody holds its lock file."""
        running = self.db.read(
            f"SELECT r.id, r.artifacts, {held_sql(self.db)} FROM runs r"  # noqa: S608 (constants and ?s)
            " LEFT JOIN holders h ON h.id = r.holder WHERE r.status = ?",
            (RunStatus.RUNNING.value,),
        )
        stale = [
            str(run_id)
            for run_id, artifacts, held in running
            if not self.artifacts.holds(str(run_id)) and not alive(held, str(artifacts))
        ]
        if not stale:
            return []  # nothing to write: no write lock taken (a server opens a journal per alert)
        with self.db.transaction(WRITE) as tx:
            for run_id in stale:
                tx.execute(
                    "UPDATE runs SET status = ?, exit_code = ? WHERE id = ? AND status = ?",
                    (RunStatus.INTERRUPTED.value, INTERRUPTED_EXIT, run_id, RunStatus.RUNNING.value),
                )
                tx.execute(
                    "UPDATE steps SET status = 'interrupted', message = ? WHERE run_id = ? AND status = 'running'",
                    (INTERRUPTED_STEP, run_id),
                )
        log.info("marked %d run(s) interrupted: %s", len(stale), ", ".join(stale))
        return stale


def journal_for_a_run(location: Location | Path | str | None = None) -> Journal:
    """The journal a front end's own run writes (``cairn run``, ``cairn resume``, the TUI's run).

    On PostgreSQL the run is held by a lease of its own (:class:`~engine.core.store.leases.Lease`,
    renewed while the process lives, let go when the journal closes) and fenced by it: every machine
    reading the store sees the run alive exactly while its process is — a lock file is seen only on
    the machine that holds it. A SQLite journal's runs are held by their lock file."""
    journal = Journal(location)
    if journal.location.dialect == "sqlite":
        return journal
    from engine.core.store.leases import RUN_LEASE, Lease  # noqa: PLC0415 (a heartbeat thread: PostgreSQL only)

    lease = Lease(journal.location, kind="run", ttl=RUN_LEASE, heartbeat=RUN_LEASE / 6)
    try:
        lease.start()
    except BaseException:
        lease.close()
        journal.close()
        raise
    journal.holder, journal.fence = lease.id, lease

    def let_go() -> None:
        lease.release()
        lease.close()

    journal.when_closed(let_go)
    return journal
