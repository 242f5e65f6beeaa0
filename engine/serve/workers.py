"""``cairn serve``'s workers: a bounded pool of threads that run the queued alerts.

Each queued entry runs on its target — the exact inventory host the trigger names, which
must be one of the runbook's ``targets`` (a label value is never used as a host pattern:
``node="all"`` runs nowhere). Detect and diagnose always run. Remediation runs only where
:mod:`engine.core.policy` allows it (the runbook's ``automatic`` steps, a policy that
automates the runbook, the circuit breaker and fleet budget) or a human approved the entry
(``cairn approve RUN_ID``); otherwise the entry is escalated and waits. Runs are journaled
with the alert as their trigger. At shutdown, running runs get ``grace`` seconds, then are
cancelled (checkpointed): their entries go back to the queue and the next server resumes them.

**A journal that cannot be written** never stops a worker and never leaves an entry running
without a run. What an entry came to is a :class:`Conclusion`, written to the queue when the
run is over; while the disk refuses it the worker keeps it and writes it again every second
(the entry says ``running`` meanwhile, and only then). A run stopped by its journal (the disk
refused one of its events: no step starts after that) goes back to the queue and resumes from
what its journal holds. While the journal cannot be written, a watcher writes a small probe
every second; ``/healthz`` is healthy again once one goes through.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, AlertQueue, Entry, EntryState
from engine.core.errors import JournalError, JournalUnwritable
from engine.core.model import Host, HostOutcome, Phase, ResumePoint, Runbook, RunReport, RunStatus, StepStatus
from engine.core.policy import AlertApprover, Policy

if TYPE_CHECKING:
    from engine.core.journal import Journal
    from engine.serve.catalog import Catalog
    from engine.serve.metrics import Metrics
    from engine.serve.settings import ServeSettings

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0
"""Seconds a worker waits for new work before it looks at the queue again; also how often a
conclusion the journal refused is written again, and the journal probed while it refuses."""


@dataclass(frozen=True)
class Conclusion:
    """What a claimed entry came to: written to the queue, again and again while the journal refuses it."""

    state: EntryState
    """``QUEUED``: back in the queue (checkpointed, or stopped by its journal); else how it ended."""
    note: str
    run_id: str | None = None
    result: str = ""
    """Its label in the ``cairn_runs`` metric ("" counts nothing)."""
    ledger_id: int | None = None
    """A remediation ledger row still to end (the journal refused it when the run ended)."""


class Workers:
    """The worker threads around one queue connection, and the runs they have going."""

    def __init__(self, config: ServeSettings, catalog: Catalog, queue: AlertQueue, metrics: Metrics) -> None:
        self.config = config
        self.catalog = catalog
        self.queue = queue
        self.metrics = metrics
        self.health = metrics.health
        self._work = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher: threading.Thread | None = None
        self._running: dict[int, threading.Event] = {}
        """Each running entry's cancel event (set at shutdown, after the grace period)."""
        self._running_lock = threading.Lock()
        self._cancelling = False
        self.health.count_workers(lambda: (sum(t.is_alive() for t in self._threads), len(self._threads)))

    def wake(self) -> None:
        """New entries are queued: an idle worker looks at the queue now."""
        self._work.set()

    def start(self) -> None:
        """Re-queue what a previous server left running, then start the workers and the journal's watcher."""
        again = self.queue.recover()
        if again:
            log.warning("queued again after a restart (their runs resume): entries %s", again)
            self._work.set()
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._serve_queue, name=f"cairn-serve-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._watcher = threading.Thread(target=self._watch_journal, name="cairn-serve-journal", daemon=True)
        self._watcher.start()

    def stop(self, grace: float | None = None, cancelled_wait: float = 30.0) -> None:
        """Take no new entries; give running runs ``grace`` seconds, then cancel (checkpoint) them.

        A cancelled run's commands are killed where they run, the run is journaled as
        interrupted and its entry goes back to the queue: the next server resumes it.
        """
        self._stop.set()
        self._work.set()
        self._join(self.config.grace if grace is None else grace)
        with self._running_lock:
            self._cancelling = True  # a run registering from now on is cancelled at once
            running = list(self._running.values())
        for cancel in running:
            cancel.set()
        self._join(cancelled_wait)
        if self._watcher is not None:
            self._watcher.join(IDLE_WAIT * 2)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ a worker

    def _serve_queue(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception as exc:  # a fault of Cairn's: said, and the worker goes on
                log.exception("a worker's turn failed")
                self.health.say(f"a worker's turn failed, it goes on: {type(exc).__name__}: {exc}")
                self._stop.wait(IDLE_WAIT)

    def _turn(self) -> None:
        """Claim the oldest queued entry, run it, write what it came to."""
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
        self._settle(entry, self._run_entry(entry))

    def _run_entry(self, entry: Entry) -> Conclusion:
        """Run one claimed entry; what it came to, whatever happened (nothing is raised)."""
        try:
            return self.execute(entry)
        except JournalError as exc:  # before its run, or while it wrote the entry's run id
            self._journal_refused(exc)
            return self._stopped_by_journal(exc, None)
        except Exception as exc:  # a fault of Cairn's: the entry says so, the worker goes on
            log.exception("entry %s failed", entry.id)
            return Conclusion(EntryState.FAILED, f"{type(exc).__name__}: {exc}", result="error")

    def _settle(self, entry: Entry, conclusion: Conclusion) -> None:
        """Write ``conclusion``; while the journal refuses it, keep it and write it again every second.

        The entry stays ``running`` meanwhile (its run is over, its conclusion not written yet). At
        shutdown the worker lets go: the next server's ``recover()`` queues the entry again."""
        waiting = False
        while True:
            try:
                conclusion = self._write(entry.id, conclusion)
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
                continue
            break
        if waiting:
            self.health.say(f"entry {entry.id} is {conclusion.state.value} now")
        if conclusion.result:
            self.metrics.runs.labels(conclusion.result).inc()
        if conclusion.state is EntryState.QUEUED:
            self._work.set()

    def _write(self, entry_id: int, conclusion: Conclusion) -> Conclusion:
        """Write one conclusion (the ledger first); the conclusion as it stands after each write."""
        if conclusion.ledger_id is not None:
            self.queue.end_remediation(conclusion.ledger_id)
            conclusion = replace(conclusion, ledger_id=None)
        if conclusion.state is EntryState.QUEUED:
            self.queue.requeue(entry_id, conclusion.note)
        else:
            self.queue.finish(entry_id, conclusion.state, run_id=conclusion.run_id, note=conclusion.note)
        return conclusion

    def _journal_refused(self, exc: JournalError) -> None:
        if isinstance(exc, JournalUnwritable):
            self.health.journal_refused(exc)
        else:
            log.error("the journal refused a write: %s", exc)

    def _watch_journal(self) -> None:
        """While the journal cannot be written, write a probe every second: healthy again once one goes through."""
        from engine.core.journal import artifacts_folder  # noqa: PLC0415
        from engine.core.journal_store import probe_folder  # noqa: PLC0415

        while not self._stop.wait(IDLE_WAIT):
            if self.health.journal_fault is None:
                continue
            try:
                self.queue.probe()
                probe_folder(artifacts_folder(self.config.journal_path))
            except JournalError as exc:
                self._journal_refused(exc)
            else:
                self.health.journal_writable()

    # ------------------------------------------------------------------ a run

    def execute(self, entry: Entry) -> Conclusion:
        """Run one entry on its target: what it came to (its run, or why there is none)."""
        from engine.core.errors import InputError, InventoryError  # noqa: PLC0415
        from engine.core.inputs import resolve_inputs  # noqa: PLC0415
        from engine.core.journal import Journal  # noqa: PLC0415

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
        journal = Journal(self.config.journal_path)
        try:
            return self._execute(entry, runbook, host, inputs, journal)
        finally:
            journal.close()

    def _execute(
        self, entry: Entry, runbook: Runbook, host: Host, inputs: dict[str, Any], journal: Journal
    ) -> Conclusion:
        from engine.core.launch import prepare_run  # noqa: PLC0415
        from engine.core.spec import RunSpec, Trigger, TriggerKind  # noqa: PLC0415

        resume = self._resume_point(entry, runbook, journal)
        if isinstance(resume, Conclusion):
            return resume  # concluded from its earlier run, which had ended
        policy = self.config.policy
        automatic = entry.approved_by is None and not policy.why_not(runbook) and bool(runbook.remediate)
        remediates = entry.approved_by is not None or automatic
        approver = AlertApprover(
            self.queue,
            policy,
            runbook.id,
            approved_by=entry.approved_by,
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
                resumes=resume.run_id if resume.results else None,
                approved_by=entry.approved_by or None,
            ),
            alert=entry.alert,
            options=replace(self.config.options, inventory_sources=self.config.inventory_sources),
            last_phase=Phase.VERIFY if remediates else Phase.DIAGNOSE,
            forks=1,
            resume=resume if resume.results else None,
            unattended=True,
            started_by="alertmanager",
        )
        runner = prepare_run(spec, journal=journal, approver=approver)
        runner.bus.subscribe(self.metrics.step_finished)
        self.queue.started(entry.id, runner.run_id)
        with self._running_lock:
            self._running[entry.id] = runner.cancel
            if self._cancelling:
                runner.cancel.set()
        stopped: JournalError | None = None
        try:
            with self.metrics.run_seconds.time():
                report = runner.run()
        except JournalError as exc:  # the run stopped where its journal did
            stopped = exc
        finally:
            unended = self._close(approver)
            with self._running_lock:
                self._running.pop(entry.id, None)
        if stopped is not None:
            self._journal_refused(stopped)
            return self._stopped_by_journal(stopped, runner.run_id, unended)
        if report.interrupted:
            return Conclusion(
                EntryState.QUEUED,
                f"checkpointed at shutdown: run {runner.run_id} was interrupted; "
                "the next cairn serve resumes it without repeating finished steps",
                result="interrupted",
                ledger_id=unended,
            )
        state, note, result = conclude(report, runbook, policy, approver)
        return Conclusion(state, note, run_id=runner.run_id, result=result, ledger_id=unended)

    def _close(self, approver: AlertApprover) -> int | None:
        """End the run's ledger row; its id when the journal refused that (it is ended with the conclusion)."""
        try:
            approver.close()
        except JournalError as exc:
            self._journal_refused(exc)
            return approver.guard.ledger_id if approver.guard is not None else None
        return None

    @staticmethod
    def _stopped_by_journal(
        exc: JournalError, run_id: str | None, ledger_id: int | None = None
    ) -> Conclusion:
        """Back to the queue: once the journal can be written, the run goes on from what it holds."""
        why = exc.problem if isinstance(exc, JournalUnwritable) else f"the journal refused a write ({exc})"
        run = f"run {run_id} stopped where its journal does" if run_id else "its run could not start"
        return Conclusion(
            EntryState.QUEUED,
            f"queued again: {why}, so {run}; it goes on once the journal can be written",
            result="journal",
            ledger_id=ledger_id,
        )

    def _resume_point(self, entry: Entry, runbook: Runbook, journal: Journal) -> ResumePoint | Conclusion:
        """What to reuse from the entry's earlier run, if a server stopped while it went on.

        An interrupted run of the same runbook text is resumed (its finished steps reused); an
        earlier run that had ended concludes the entry at once (a :class:`Conclusion`). An
        approved entry's earlier run is the one the human approved: a new run.
        """
        from engine.core.resume import resume_point  # noqa: PLC0415

        if not entry.run_id:
            return ResumePoint("", {})
        try:
            record = journal.get_run(entry.run_id)
        except JournalError:
            return ResumePoint("", {})
        if record.status is RunStatus.INTERRUPTED:
            if record.runbook_sha256 != runbook.sha256:
                return ResumePoint("", {})  # the runbook changed since: start again
            return resume_point(record)
        if entry.approved_by or record.status is RunStatus.RUNNING:
            return ResumePoint("", {})
        present = record.exit_code == 1 and bool(runbook.remediate)
        return Conclusion(
            EntryState.ESCALATED if present else EntryState.DONE,
            f"run {record.id} had ended (exit code {record.exit_code}) when the server stopped"
            + ("; remediation waits for a human" if present else ""),
        )


def conclude(
    report: RunReport, runbook: Runbook, policy: Policy, approver: AlertApprover
) -> tuple[EntryState, str, str]:
    """What an alert-started run comes to for its queue entry: (state, note, result for the metrics).

    The pitfall still present with a remediation nobody ran, or an automatic remediation
    that failed or did not verify, **escalates**: a human decides (``cairn approve``).
    """
    outcome = report.hosts[0].outcome if report.hosts else HostOutcome.FAILED
    reason = report.hosts[0].reason if report.hosts else "the run ended without a result"
    approved = approver.approved_by is not None
    if outcome is HostOutcome.HEALTHY:
        return EntryState.DONE, f"healthy: {reason}", "healthy"
    if outcome is HostOutcome.REMEDIATED:
        by = f"approved by {approver.approved_by}" if approved else "automatically"
        return EntryState.DONE, f"remediated {by}; verify is clean", "remediated"
    if approved:
        return EntryState.DONE, f"{outcome.value} after the approved remediation: {reason}", outcome.value
    if not runbook.remediate:
        return EntryState.DONE, f"{outcome.value}: {reason}", outcome.value
    attempted = any(
        r.phase is Phase.REMEDIATE
        and r.status not in (StepStatus.DECLINED, StepStatus.SKIPPED, StepStatus.NOT_ASKED)
        for h in report.hosts
        for r in h.results
    )
    if outcome is HostOutcome.FAILED and not attempted:
        return EntryState.DONE, f"failed: {reason}", "failed"
    why = approver.escalation or policy.why_not(runbook)
    if attempted:
        why = f"the automatic remediation did not fix it ({reason})" + (f"; {why}" if why else "")
    return EntryState.ESCALATED, f"{WAITS_FOR_A_HUMAN}{why or reason}", "escalated"
