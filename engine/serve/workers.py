"""``cairn serve``'s workers: a bounded pool of threads that run the queued alerts.

Each queued entry runs on its target — the exact inventory host the trigger names, which
must be one of the runbook's ``targets`` (a label value is never used as a host pattern:
``node="all"`` runs nowhere). Detect and diagnose always run. Remediation runs only where
:mod:`engine.core.policy` allows it (the runbook's ``automatic`` steps, a policy that
automates the runbook, the circuit breaker and fleet budget) or a human approved the entry
(its approval policy's quorum); otherwise the entry is escalated — its requirement fixed from
the config's ``approvals:`` and its ESCALATED notice written with it — and waits. Runs are
journaled with the alert as their trigger, and with this server as their holder; their progress
becomes notices (:mod:`engine.serve.escalation`).

**Several servers** share the queue: a worker claims an entry only while its server surely holds
its lease (:mod:`engine.serve.takeover`), every step of its run asks the same first
(:class:`~engine.serve.takeover.HeldPacer`), and the journal's fence refuses a remediation step
of a server whose lease lapsed. An entry another server took over meanwhile is not this server's
to conclude: ``started``/``finish``/``requeue`` say so, nothing is written, and the log says it
in one line. At shutdown, running runs get ``grace`` seconds, then are cancelled (checkpointed):
their entries go back to the queue and another server resumes them. A lost lease cancels them
at once.

**A journal that cannot be written** (a full disk, a PostgreSQL that does not answer) never
stops a worker and never leaves an entry running without a run. What an entry came to is a
:class:`~engine.serve.conclusions.Conclusion`, written to the queue when the run is over; while
the store refuses it the worker keeps it and writes it again every second (the entry says
``running`` meanwhile, and only then). A run stopped by its journal (the store refused one of its
events: no step starts after that) goes back to the queue and resumes from what its journal
holds. While the journal cannot be written, a watcher writes a small probe every second;
``/healthz`` is healthy again once one goes through.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.core.alert_queue import AlertQueue, Entry, EntryState
from engine.core.errors import JournalError, JournalUnwritable, LeaseLost
from engine.core.model import Host, Phase, Runbook
from engine.core.policy import AlertApprover
from engine.serve.conclusions import (
    Conclusion,
    conclude,
    escalating,
    interrupted,
    recorded_results,
    resume_chain,
    resume_from,
    resumes,
    stopped_by_journal,
)
from engine.serve.escalation import RunNotices, approvers_of
from engine.serve.takeover import HeldPacer

if TYPE_CHECKING:
    from engine.core.journal import Journal
    from engine.serve.catalog import Catalog
    from engine.serve.metrics import Metrics
    from engine.serve.settings import ServeSettings
    from engine.serve.takeover import Tenure

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0
"""Seconds a worker waits for new work before it looks at the queue again; also how often a
conclusion the journal refused is written again, and the journal probed while it refuses."""


class Workers:
    """The worker threads around one queue connection, and the runs they have going."""

    def __init__(
        self, config: ServeSettings, catalog: Catalog, queue: AlertQueue, metrics: Metrics, tenure: Tenure
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.queue = queue
        self.metrics = metrics
        self.tenure = tenure
        self.health = metrics.health
        self._work = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher: threading.Thread | None = None
        self._running: dict[int, threading.Event] = {}
        """Each running entry's cancel event (set at shutdown, after the grace period)."""
        self._held: set[int] = set()
        """Entries claimed and not concluded yet (``cairn_entries_held``)."""
        self._running_lock = threading.Lock()
        self._journal = threading.local()
        """Each worker thread's journal (``.kept``), reused from run to run."""
        self._cancelling = False
        self.health.count_workers(lambda: (sum(t.is_alive() for t in self._threads), len(self._threads)))

    @property
    def held(self) -> int:
        """How many entries this server holds: claimed, not concluded yet."""
        return len(self._held)

    def wake(self) -> None:
        """New entries are queued: an idle worker looks at the queue now."""
        self._work.set()

    def start(self) -> None:
        """Start the workers and the journal's watcher."""
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._serve_queue, name=f"cairn-serve-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._watcher = threading.Thread(target=self._watch_journal, name="cairn-serve-journal", daemon=True)
        self._watcher.start()

    def stop(self, grace: float | None = None, cancelled_wait: float = 30.0) -> None:
        """Take no new entries; give running runs ``grace`` seconds, then cancel (checkpoint) them.

        A cancelled run's commands are killed where they run, the run is journaled as
        interrupted and its entry goes back to the queue: another server resumes it.
        """
        self._stop.set()
        self._work.set()
        self._join(self.config.grace if grace is None else grace)
        self._cancel_all()
        self._join(cancelled_wait)
        if self._watcher is not None:
            self._watcher.join(IDLE_WAIT * 2)

    def lease_lost(self, why: str) -> None:
        """The server lost its lease (any thread; never blocks): claim nothing more, cancel every run —
        their work is another server's now."""
        self._stop.set()
        self._work.set()
        self._cancel_all()

    def _cancel_all(self) -> None:
        with self._running_lock:
            self._cancelling = True  # a run registering from now on is cancelled at once
            running = list(self._running.values())
        for cancel in running:
            cancel.set()

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ a worker

    def _serve_queue(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._turn()
                except Exception as exc:  # a fault of Cairn's: said, and the worker goes on
                    log.exception("a worker's turn failed")
                    self.health.say(f"a worker's turn failed, it goes on: {type(exc).__name__}: {exc}")
                    self._stop.wait(IDLE_WAIT)
        finally:
            kept = getattr(self._journal, "kept", None)
            if kept is not None:
                kept.close()

    def _worker_journal(self) -> Journal:
        """This worker's journal, opened once and kept from run to run (opening one costs a connection,
        a schema check and a reconcile: about 20 ms on PostgreSQL); a new one under a new lease."""
        from engine.core.journal import Journal  # noqa: PLC0415

        kept: Journal | None = getattr(self._journal, "kept", None)
        if kept is not None and kept.holder == self.tenure.id:
            return kept
        if kept is not None:
            kept.close()
            self._journal.kept = None
        journal = Journal(self.config.journal, holder=self.tenure.id, fence=self.tenure.lease)
        self._journal.kept = journal
        return journal

    def _turn(self) -> None:
        """Claim the oldest queued entry (only while the lease surely holds), run it, write what it came to."""
        if not self.tenure.wait_held(IDLE_WAIT):
            return  # frozen past the lease, or the store does not answer: claim nothing yet
        try:
            entry = self.queue.claim()
        except JournalError as exc:  # locked or refused for now: the worker waits, never dies
            self._journal_refused(exc)
            self._stop.wait(IDLE_WAIT)
            return
        if entry is None:
            self._work.wait(IDLE_WAIT)
            self._work.clear()
            return
        self._held.add(entry.id)
        try:
            if not self.tenure.holds():  # lost (or frozen) while claiming: give it back, untouched
                note = f"queued again: {self.tenure.id} claimed it as its lease ran out; it did not start it"
                self._settle(entry, Conclusion(EntryState.QUEUED, note))
                return
            self._settle(entry, self._run_entry(entry))
        finally:
            self._held.discard(entry.id)

    def _run_entry(self, entry: Entry) -> Conclusion | None:
        """Run one claimed entry; what it came to, whatever happened (nothing is raised); ``None``
        when another server took the entry over meanwhile (nothing to write)."""
        try:
            return self.execute(entry)
        except JournalError as exc:  # before its run, or while it wrote the entry's run id
            self._journal_refused(exc)
            return stopped_by_journal(exc, None)
        except Exception as exc:  # a fault of Cairn's: the entry says so, the worker goes on
            log.exception("entry %s failed", entry.id)
            return Conclusion(EntryState.FAILED, f"{type(exc).__name__}: {exc}", result="error")

    def _settle(self, entry: Entry, conclusion: Conclusion | None) -> None:
        """Write ``conclusion``; while the journal refuses it, keep it and write it again every second.

        The entry stays ``running`` meanwhile (its run is over, its conclusion not written yet). At
        shutdown the worker lets go: the entry is handed back, or taken over once the lease lapses."""
        waiting = False
        written = None
        while conclusion is not None:
            try:
                written = self._write(entry.id, conclusion)
                break
            except JournalError as exc:
                self._journal_refused(exc)
                if not waiting:
                    waiting = True
                    self.health.say(
                        f"entry {entry.id} ({entry.runbook_id} on {entry.target}) waits for the journal: "
                        f"it becomes {conclusion.state.value} once the journal can be written"
                    )
                if self._stop.wait(IDLE_WAIT):
                    return
        if written is None:
            self.health.say(
                f"entry {entry.id} ({entry.runbook_id} on {entry.target}) was taken over by another server "
                "meanwhile: this server writes nothing more of it"
            )
            return
        conclusion = written
        if waiting:
            self.health.say(f"entry {entry.id} is {conclusion.state.value} now")
        if conclusion.result:
            self.metrics.runs.labels(conclusion.result).inc()
        if conclusion.state is EntryState.QUEUED:
            self._work.set()

    def _write(self, entry_id: int, conclusion: Conclusion) -> Conclusion | None:
        """Write one conclusion (the ledger first); the conclusion as it stands after each write,
        ``None`` when the entry is no longer this server's (nothing was written to it)."""
        if conclusion.ledger_id is not None:
            self.queue.end_remediation(conclusion.ledger_id)
            conclusion = replace(conclusion, ledger_id=None)
        if conclusion.state is EntryState.QUEUED:
            written = self.queue.requeue(entry_id, conclusion.note)
        elif conclusion.escalation is not None:
            written = conclusion.escalation.write(
                self.queue, self.config.notify.approvals, run_id=conclusion.run_id, note=conclusion.note
            )
        else:
            written = self.queue.finish(
                entry_id, conclusion.state, run_id=conclusion.run_id, note=conclusion.note
            )
        return conclusion if written else None

    def _journal_refused(self, exc: JournalError) -> None:
        if isinstance(exc, JournalUnwritable):
            self.health.journal_refused(exc)
        elif isinstance(exc, LeaseLost):
            log.warning("%s", exc)  # the lease's own listeners stop the server
        else:
            log.error("the journal refused a write: %s", exc)

    def _watch_journal(self) -> None:
        """While the journal cannot be written, write a probe every second: healthy again once one goes through."""
        from engine.core.journal_store import probe_folder  # noqa: PLC0415

        while not self._stop.wait(IDLE_WAIT):
            if self.health.journal_fault is None:
                continue
            try:
                self.queue.probe()
                probe_folder(self.config.journal.artifacts_root)
            except JournalError as exc:
                self._journal_refused(exc)
            else:
                self.health.journal_writable()

    # ------------------------------------------------------------------ a run

    def execute(self, entry: Entry) -> Conclusion | None:
        """Run one entry on its target: what it came to (its run, or why there is none); ``None`` when
        another server took it over before its run started."""
        from engine.core.errors import InputError, InventoryError  # noqa: PLC0415
        from engine.core.inputs import resolve_inputs  # noqa: PLC0415

        runbook = self.catalog.runbook(entry.runbook_id)
        if runbook is None:
            return Conclusion(
                EntryState.FAILED, f"runbook {entry.runbook_id!r} is not loaded", result="failed"
            )
        try:
            host = self.catalog.target_host(runbook, entry.target)
            inputs = resolve_inputs(runbook, self.config.inputs.get(runbook.id, {}))
        except (InventoryError, InputError) as exc:
            return Conclusion(EntryState.FAILED, str(exc), result="failed")
        return self._execute(entry, runbook, host, inputs, self._worker_journal())

    def _execute(
        self, entry: Entry, runbook: Runbook, host: Host, inputs: dict[str, Any], journal: Journal
    ) -> Conclusion | None:
        from engine.core.launch import prepare_run  # noqa: PLC0415
        from engine.core.spec import RunSpec, Trigger, TriggerKind  # noqa: PLC0415

        resume = resume_from(entry, runbook, journal)
        if isinstance(resume, Conclusion):  # concluded from its earlier run, which had ended
            if resume.state is not EntryState.ESCALATED:
                return resume
            earlier = recorded_results(journal, resume.run_id or entry.run_id)
            return escalating(resume, entry, runbook, host, inputs, earlier)
        policy = self.config.policy
        automatic = entry.approved_by is None and not policy.why_not(runbook) and bool(runbook.remediate)
        remediates = entry.approved_by is not None or automatic
        approver = AlertApprover(
            self.queue,
            policy,
            runbook.id,
            approved_by=entry.approved_by,
            approvers=approvers_of(self.queue, entry),
            on_trip=lambda guard: self.metrics.trips.labels(guard).inc(),
        )
        spec = RunSpec(
            runbook=runbook,
            hosts=(host,),
            inputs=inputs,
            trigger=Trigger(
                kind=TriggerKind.ALERT,
                limit=host.name,
                queue_entry=entry.id,
                resumes=resume.run_id if resumes(resume) else None,
                approved_by=entry.approved_by or None,
            ),
            alert=entry.alert,
            options=replace(self.config.options, inventory_sources=self.config.inventory_sources),
            last_phase=Phase.VERIFY if remediates else Phase.DIAGNOSE,
            forks=1,
            resume=resume if resumes(resume) else None,
            unattended=True,
            started_by="alertmanager",
        )
        cancel = threading.Event()
        runner = prepare_run(
            spec, journal=journal, approver=approver, pacer=HeldPacer(self.tenure, cancel), cancel=cancel
        )
        runner.bus.subscribe(self.metrics.step_finished)
        runner.bus.subscribe(
            RunNotices(
                self.queue,
                entry,
                runbook,
                chain=resume_chain(resume, journal, runner.run_id),
                approved_by=entry.approved_by,
                cancel=runner.cancel,
            )
        )
        if not self.queue.started(entry.id, runner.run_id):
            return None  # taken over between the claim and now: its run is another server's
        with self._running_lock:
            self._running[entry.id] = runner.cancel
            if self._cancelling:
                runner.cancel.set()
        stopped: JournalError | None = None
        try:
            with self.metrics.run_seconds.time():
                report = runner.run()
        except JournalError as exc:  # the run stopped where its journal did (or where its lease did)
            stopped = exc
        finally:
            unended = self._close(approver)
            with self._running_lock:
                self._running.pop(entry.id, None)
        if stopped is not None:
            self._journal_refused(stopped)
            return stopped_by_journal(stopped, runner.run_id, unended)
        if report.interrupted:
            return interrupted(runner.run_id, self._why_cancelled(), unended)
        state, note, result = conclude(report, runbook, policy, approver)
        concluded = Conclusion(state, note, run_id=runner.run_id, result=result, ledger_id=unended)
        return escalating(
            concluded, entry, runbook, host, inputs, [r for h in report.hosts for r in h.results]
        )

    def _why_cancelled(self) -> str:
        server = self.tenure.id
        if self.tenure.lost:
            return f"handed back by {server}, which lost its lease"
        if self._stop.is_set():
            return f"handed over at shutdown by {server}"
        return f"handed back by {server}, which could not renew its lease in time"

    def _close(self, approver: AlertApprover) -> int | None:
        """End the run's ledger row; its id when the journal refused that (it is ended with the conclusion)."""
        try:
            approver.close()
        except JournalError as exc:
            self._journal_refused(exc)
            return approver.guard.ledger_id if approver.guard is not None else None
        return None
