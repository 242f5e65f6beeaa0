"""``cairn serve``'s workers: a bounded pool of threads that run the queued alerts.

Each queued entry runs on its target — the exact inventory host the trigger names, which
must be one of the runbook's ``targets`` (a label value is never used as a host pattern:
``node="all"`` runs nowhere). Detect and diagnose always run. Remediation runs only where
:mod:`engine.core.policy` allows it (the runbook's ``automatic`` steps, a policy that
automates the runbook, the circuit breaker and fleet budget) or a human approved the entry
(``cairn approve RUN_ID``); otherwise the entry is escalated and waits. Runs are journaled
with the alert as their trigger. At shutdown, running runs get ``grace`` seconds, then are
cancelled (checkpointed): their entries go back to the queue and the next server resumes them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, AlertQueue, Entry, EntryState
from engine.core.errors import JournalError
from engine.core.model import Host, HostOutcome, Phase, ResumePoint, Runbook, RunReport, RunStatus, StepStatus
from engine.core.policy import AlertApprover, Policy

if TYPE_CHECKING:
    from engine.core.journal import Journal
    from engine.serve.catalog import Catalog
    from engine.serve.metrics import Metrics
    from engine.serve.settings import ServeSettings

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0
"""Seconds a worker waits for new work before it looks at the queue again."""


class Workers:
    """The worker threads around one queue connection, and the runs they have going."""

    def __init__(self, config: ServeSettings, catalog: Catalog, queue: AlertQueue, metrics: Metrics) -> None:
        self.config = config
        self.catalog = catalog
        self.queue = queue
        self.metrics = metrics
        self._work = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, threading.Event] = {}
        """Each running entry's cancel event (set at shutdown, after the grace period)."""
        self._running_lock = threading.Lock()
        self._cancelling = False

    def wake(self) -> None:
        """New entries are queued: an idle worker looks at the queue now."""
        self._work.set()

    def start(self) -> None:
        """Re-queue what a previous server left running, then start the workers."""
        again = self.queue.recover()
        if again:
            log.warning("queued again after a restart (their runs resume): entries %s", again)
            self._work.set()
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._serve_queue, name=f"cairn-serve-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

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

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve_queue(self) -> None:
        while not self._stop.is_set():
            try:
                entry = self.queue.claim()
            except JournalError as exc:  # locked or failing for now: the worker waits, never dies
                log.error("cannot read the alert queue: %s", exc)
                self._stop.wait(IDLE_WAIT)
                continue
            if entry is None:
                self._work.wait(IDLE_WAIT)
                self._work.clear()
                continue
            try:
                self.execute(entry)
            except Exception as exc:  # a fault of Cairn's: the entry says so, the worker goes on
                log.exception("entry %s failed", entry.id)
                with contextlib.suppress(JournalError):  # else recover() re-queues it at the next start
                    self.queue.finish(entry.id, EntryState.FAILED, note=f"{type(exc).__name__}: {exc}")
                self.metrics.runs.labels("error").inc()

    def execute(self, entry: Entry) -> None:
        """Run one entry on its target; the entry records the run and what it came to, or why there is none."""
        from engine.core.errors import InputError, InventoryError  # noqa: PLC0415
        from engine.core.inputs import resolve_inputs  # noqa: PLC0415
        from engine.core.journal import Journal  # noqa: PLC0415

        runbook = self.catalog.runbook(entry.runbook_id)
        if runbook is None:
            self.queue.finish(entry.id, EntryState.FAILED, note=f"runbook {entry.runbook_id!r} is not loaded")
            self.metrics.runs.labels("failed").inc()
            return
        try:
            host = self.catalog.target_host(runbook, entry.target)
            inputs = resolve_inputs(runbook, self.config.inputs.get(runbook.id, {}))
        except (InventoryError, InputError) as exc:
            self.queue.finish(entry.id, EntryState.FAILED, note=str(exc))
            self.metrics.runs.labels("failed").inc()
            return
        journal = Journal(self.config.journal_path)
        try:
            self._execute(entry, runbook, host, inputs, journal)
        finally:
            journal.close()

    def _execute(
        self, entry: Entry, runbook: Runbook, host: Host, inputs: dict[str, Any], journal: Journal
    ) -> None:
        from engine.core.launch import prepare_run  # noqa: PLC0415
        from engine.core.spec import RunSpec, Trigger, TriggerKind  # noqa: PLC0415

        resume = self._resume_point(entry, runbook, journal)
        if resume is None:
            return  # concluded from its earlier run, which had ended
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
        try:
            with self.metrics.run_seconds.time():
                report = runner.run()
        finally:
            approver.close()
            with self._running_lock:
                self._running.pop(entry.id, None)
        if report.interrupted:
            self.queue.requeue(
                entry.id,
                f"checkpointed at shutdown: run {runner.run_id} was interrupted; "
                "the next cairn serve resumes it without repeating finished steps",
            )
            self.metrics.runs.labels("interrupted").inc()
            return
        state, note, result = conclude(report, runbook, policy, approver)
        self.queue.finish(entry.id, state, run_id=runner.run_id, note=note)
        self.metrics.runs.labels(result).inc()

    def _resume_point(self, entry: Entry, runbook: Runbook, journal: Journal) -> ResumePoint | None:
        """What to reuse from the entry's earlier run, if a server stopped while it went on.

        An interrupted run of the same runbook text is resumed (its finished steps reused); an
        earlier run that had ended concludes the entry at once (``None`` with the entry
        finished). An approved entry's earlier run is the one the human approved: a new run.
        """
        from engine.core.errors import JournalError  # noqa: PLC0415
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
        self.queue.finish(
            entry.id,
            EntryState.ESCALATED if present else EntryState.DONE,
            note=f"run {record.id} had ended (exit code {record.exit_code}) when the server stopped"
            + ("; remediation waits for a human" if present else ""),
        )
        return None


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
