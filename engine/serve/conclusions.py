"""What a claimed queue entry came to (:class:`Conclusion`), from its run or from why it has none.

The workers (:mod:`engine.serve.workers`) write a conclusion to the queue when a run is over —
again and again while the store refuses it, and never for an entry another server took over
meanwhile. An entry whose earlier run a stopped server left is resumed, or concluded from that
run when it had ended (:func:`resume_from`); a run resuming others belongs to the chain of its
first (:func:`resume_chain`: its notices are keyed by it). A conclusion that escalates carries what
its requirement and its ESCALATED notice are made of (:func:`escalating`,
:mod:`engine.serve.escalation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, Entry, EntryState
from engine.core.errors import JournalError, JournalUnwritable, LeaseLost
from engine.core.model import (
    Host,
    HostOutcome,
    Phase,
    ResumePoint,
    Runbook,
    RunReport,
    RunStatus,
    StepResult,
    StepStatus,
)

if TYPE_CHECKING:
    from engine.core.journal import Journal
    from engine.core.policy import AlertApprover, Policy
    from engine.serve.escalation import Escalation


@dataclass(frozen=True)
class Conclusion:
    """What a claimed entry came to: written to the queue, again and again while the journal refuses it."""

    state: EntryState
    """``QUEUED``: back in the queue (handed over, or stopped by its journal); else how it ended."""
    note: str
    run_id: str | None = None
    result: str = ""
    """Its label in the ``cairn_runs`` metric ("" counts nothing)."""
    ledger_id: int | None = None
    """A remediation ledger row still to end (the journal refused it when the run ended)."""
    escalation: Escalation | None = None
    """``ESCALATED``: what its requirement and its notice are made of (:func:`escalating`)."""


def escalating(
    conclusion: Conclusion,
    entry: Entry,
    runbook: Runbook,
    host: Host,
    inputs: Mapping[str, Any],
    results: Iterable[StepResult],
) -> Conclusion:
    """``conclusion`` with its :class:`~engine.serve.escalation.Escalation` when it escalates
    (``results``: the step results the findings come from); else as it is."""
    if conclusion.state is not EntryState.ESCALATED:
        return conclusion
    from engine.serve.escalation import escalation_of  # noqa: PLC0415

    escalation = escalation_of(
        entry,
        runbook,
        host,
        inputs,
        run_id=conclusion.run_id or entry.run_id,
        note=conclusion.note,
        results=results,
    )
    return replace(conclusion, escalation=escalation)


def recorded_results(journal: Journal, run_id: str | None) -> list[StepResult]:
    """The step results the journal holds of ``run_id`` (none when it cannot say)."""
    from engine.serve.escalation import recorded_results as of_steps  # noqa: PLC0415

    if not run_id:
        return []
    try:
        return of_steps(journal.get_run(run_id).steps)
    except JournalError:
        return []


def resume_chain(point: ResumePoint, journal: Journal, run_id: str) -> str:
    """The first run of the chain ``run_id`` belongs to: the run it resumes, the one that one resumed …
    (``run_id`` itself when it resumes nothing). A run's notices are keyed by it, so a resumed run
    adds none that an earlier run of its chain added."""
    if not resumes(point):
        return run_id
    first = point.run_id
    for _ in range(1000):  # a chain is a few runs long; never loop on a damaged journal
        try:
            earlier = journal.get_run(first).trigger.get("resumes")
        except JournalError:
            break
        if not earlier or earlier == first:
            break
        first = str(earlier)
    return first


def stopped_by_journal(exc: JournalError, run_id: str | None, ledger_id: int | None = None) -> Conclusion:
    """Back to the queue: once the journal can be written (or by another server), the run goes on
    from what the journal holds."""
    run = f"run {run_id} stopped where its journal does" if run_id else "its run could not start"
    if isinstance(exc, LeaseLost):
        return Conclusion(
            EntryState.QUEUED,
            f"queued again: this server lost its lease, so {run}; another server resumes it",
            result="interrupted",
            ledger_id=ledger_id,
        )
    why = exc.problem if isinstance(exc, JournalUnwritable) else f"the journal refused a write ({exc})"
    return Conclusion(
        EntryState.QUEUED,
        f"queued again: {why}, so {run}; it goes on once the journal can be written",
        result="journal",
        ledger_id=ledger_id,
    )


def interrupted(run_id: str, how: str, ledger_id: int | None) -> Conclusion:
    """A run cancelled by its server (stopping, or no longer sure of its lease): back to the queue,
    ``how`` said first (``handed over at shutdown by SERVER``)."""
    return Conclusion(
        EntryState.QUEUED,
        f"{how}: run {run_id} was interrupted; another cairn serve resumes it without repeating finished steps",
        result="interrupted",
        ledger_id=ledger_id,
    )


def resume_from(entry: Entry, runbook: Runbook, journal: Journal) -> ResumePoint | Conclusion:
    """What to reuse from the entry's earlier run, if a server stopped while it went on.

    An interrupted run of the same runbook text (or one still said running: its journal stopped
    under it) is resumed — its finished steps reused, a remediation step it started and whose end is
    unknown never run again; an earlier run that had ended concludes the entry at once (a
    :class:`Conclusion`). An approved entry's earlier run is the one the human approved: a new run.
    """
    from engine.core.resume import resume_point  # noqa: PLC0415

    if not entry.run_id:
        return ResumePoint("", {})
    try:
        record = journal.get_run(entry.run_id)
    except JournalError:
        return ResumePoint("", {})
    if record.status in (RunStatus.INTERRUPTED, RunStatus.RUNNING):
        # The entry was back in the queue, so no server runs its run any more: one still said
        # ``running`` stopped where its journal did (the store refused its end).
        point = resume_point(record)
        if record.runbook_sha256 != runbook.sha256:
            if point.in_doubt:  # a new run would start it again: at most once means a human decides
                return _changed_with_steps_in_doubt(record.id, point)
            return ResumePoint("", {})  # the runbook changed since: start again
        return point
    if entry.approved_by:
        return ResumePoint("", {})  # the run a human approved had ended: a new run checks again
    present = record.exit_code == 1 and bool(runbook.remediate)
    return Conclusion(
        EntryState.ESCALATED if present else EntryState.DONE,
        f"run {record.id} had ended (exit code {record.exit_code}) when the server stopped"
        + ("; remediation waits for a human" if present else ""),
    )


def _changed_with_steps_in_doubt(run_id: str, point: ResumePoint) -> Conclusion:
    steps = ", ".join(f"{step} on {host}" for host, _, step in point.in_doubt)
    return Conclusion(
        EntryState.ESCALATED,
        f"{WAITS_FOR_A_HUMAN}run {run_id} started {steps} and its end is unknown (the server running it "
        "stopped), and the runbook changed since, so the run cannot be resumed; a remediation step runs at "
        "most once without a human: cairn approve starts a new run, which checks again",
        run_id=run_id,
        result="escalated",
    )


def resumes(point: ResumePoint) -> bool:
    """Whether the earlier run left anything to take over: finished steps, or remediation steps in doubt."""
    return bool(point.results or point.in_doubt)


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
        by = (
            f"approved by {', '.join(approver.approvers) or approver.approved_by}"
            if approved
            else "automatically"
        )
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
