"""What ``cairn serve`` tells people about an entry: the ESCALATED notice, and a run's progress.

**An escalation** (:class:`Escalation`) is built when a run concludes that its remediation waits
for people. It carries what an approver must see to decide without opening a terminal: each
finding's report line, and the **exact command each remediation step would run on that host** —
rendered by :func:`engine.core.plan.plan_run` for the entry's alert and the server's inputs
(a step that reads an earlier step's result can only be rendered at run time: the notice says so
and shows its template). The entry's :class:`~engine.core.approval_policy.Requirement` is fixed
from the approval policy when the escalation is written (the database's time, so every server
agrees on when it expires), and the notice is added in the same transaction
(:meth:`~engine.core.alert_queue.AlertQueue.escalate`).

**Run notices** (:class:`RunNotices`, a subscriber of the run's event bus): the remediation
started, each remediate and verify step that finished, and the verdict (remediated, or verify
failed). Their keys name the first run of a resume chain, the host, the phase and the step, so a
resumed run adds none twice. A notice that cannot be added is logged; it never fails the run.

Everything is redacted with the run's redactor: the events already are (the bus), and the
payloads are passed through it again whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, AlertQueue, Entry, EntryState, notice_entry
from engine.core.approval_policy import ApprovalPolicy, Requirement
from engine.core.errors import JournalError
from engine.core.events import Event, HostFinished, StepFinished, StepStarted
from engine.core.inputs import Redactor
from engine.core.journal_read import StepRecord
from engine.core.model import (
    AnsibleAction,
    Host,
    HostOutcome,
    HostReport,
    ManualAction,
    Phase,
    Runbook,
    StepResult,
    StepStatus,
)
from engine.core.notices import NoticeKind, payload

log = logging.getLogger(__name__)

NOT_CARRIED_OUT = frozenset(
    {StepStatus.NOT_ASKED, StepStatus.DECLINED, StepStatus.SKIPPED, StepStatus.NOT_RUN}
)
"""A remediation step in one of these never touched the host."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One step that found the pitfall: its report line."""

    step: str
    host: str
    report: str


def findings_of(results: Iterable[StepResult]) -> tuple[Finding, ...]:
    """The detect and diagnose steps that found something, with their report line (or first output line)."""
    return tuple(
        Finding(r.step_id, r.host, r.message or _first_line(r.stdout))
        for r in results
        if r.phase in (Phase.DETECT, Phase.DIAGNOSE) and r.status is StepStatus.FINDING
    )


def recorded_results(steps: Iterable[StepRecord]) -> list[StepResult]:
    """A journaled run's steps as step results (an escalation concluded from an earlier run's record)."""
    results = []
    for step in steps:
        try:
            phase, status = Phase(step.phase), StepStatus(step.status)
        except ValueError:  # a step still said running: it found nothing yet
            continue
        results.append(
            StepResult(
                step.host, phase, step.step_id, status, step.message, step.command, step.rc, step.stdout
            )
        )
    return results


def remediation_of(
    runbook: Runbook, host: Host, inputs: Mapping[str, Any], alert: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Each remediation step as it would run on ``host``: its exact command, or its template and why
    it can only be rendered at run time."""
    from engine.core.plan import plan_run  # noqa: PLC0415

    [plan] = plan_run(runbook, [host], inputs, last_phase=Phase.REMEDIATE, alert=alert)
    steps = []
    for planned in plan.steps:
        if planned.phase is not Phase.REMEDIATE:
            continue
        step = planned.step
        steps.append(
            {
                "step": step.id,
                "title": step.title,
                "kind": _kind(step.action),
                "command": planned.text,
                "deferred": f"rendered at run time: it {planned.deferred}" if planned.deferred else "",
                "condition": planned.condition,
                "error": planned.error,
                "automatic": step.automatic,
                "as_user": planned.become.user if planned.become is not None else "",
                "become": planned.become.label if planned.become is not None else "",
                "why": step.why,
                "tradeoff": step.tradeoff,
            }
        )
    return steps


def _kind(action: object) -> str:
    """``run`` (a shell command), ``ansible`` (a module or playbook), ``manual`` (a human does it:
    an approval never runs it, the instructions are shown)."""
    if isinstance(action, ManualAction):
        return "manual"
    if isinstance(action, AnsibleAction):
        return "ansible"
    return "run"


@dataclass(frozen=True)
class Escalation:
    """An entry whose remediation now waits for people: what its requirement and its notice are made of."""

    entry: Entry
    runbook: Runbook
    host: str
    run_id: str | None
    note: str
    findings: tuple[Finding, ...]
    remediation: tuple[dict[str, Any], ...]
    redact: Redactor = field(default_factory=lambda: Redactor([]))

    def requirement(self, policy: ApprovalPolicy, escalated_at: float) -> Requirement:
        """What its approval needs, by the policy's rule for its runbook, from ``escalated_at``."""
        return policy.requirement(
            self.runbook.id,
            self.runbook.tags,
            self.runbook.severity.value,
            escalated_at=escalated_at,
            requested_by=self.entry.requested_by,
        )

    def write(self, queue: AlertQueue, policy: ApprovalPolicy, *, run_id: str | None, note: str) -> bool:
        """Escalate the entry (held by ``queue``'s holder): its requirement fixed by ``policy`` at the
        store's time (the clock every server shares), written with its ESCALATED notice in one
        transaction. False when the entry is no longer held (nothing written)."""
        now = float(queue.db.read(f"SELECT {queue.db.now}")[0][0])
        requirement = self.requirement(policy, now)
        return queue.escalate(
            self.entry.id, run_id=run_id, note=note, requirement=requirement, notice=self.notice(requirement)
        )

    def notice(self, requirement: Requirement) -> dict[str, Any]:
        """The ESCALATED notice's payload (redacted)."""
        waits = requirement.describe().removeprefix("needs ")
        reason = self.note.removeprefix(WAITS_FOR_A_HUMAN)
        run = self.run_id or self.entry.run_id or ""
        body = payload(
            NoticeKind.ESCALATED,
            key=f"entry:{self.entry.id}:escalated:{run}",
            summary=f"{self.runbook.id} on {self.host}: remediation waits for {waits}",
            entry=notice_entry(self.entry)
            | {
                "state": EntryState.ESCALATED.value,
                "run_id": run,
                "note": self.note,
                "expires_at": requirement.expires_at,
            },
            runbook=runbook_data(self.runbook),
            host=self.host,
            details={
                "reason": reason,
                "findings": [{"step": f.step, "host": f.host, "report": f.report} for f in self.findings],
                "remediation": list(self.remediation),
                "requirement": requirement.as_data() | {"description": requirement.describe()},
                "expires_at": requirement.expires_at,
                "run_id": run,
                "decide": {
                    "approve": f"cairn approve {run}",
                    "decline": f"cairn decline {run} --reason TEXT",
                },
            },
        )
        redacted: dict[str, Any] = self.redact.data(body)
        return redacted


def escalation_of(
    entry: Entry,
    runbook: Runbook,
    host: Host,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None,
    note: str,
    results: Iterable[StepResult],
) -> Escalation:
    """The escalation of ``entry`` after a run whose step results are ``results``. A remediation that
    cannot be planned (a fault of Cairn's) is said in the notice, never raised."""
    try:
        remediation = remediation_of(runbook, host, inputs, entry.alert)
    except Exception as exc:  # the escalation itself must be written: it is what a human acts on
        log.exception("could not render %s's remediation for %s", runbook.id, host.name)
        remediation = [
            {"step": s.id, "title": s.title, "command": "", "error": f"could not be rendered: {exc}"}
            for s in runbook.remediate
        ]
    return Escalation(
        entry=entry,
        runbook=runbook,
        host=host.name,
        run_id=run_id,
        note=note,
        findings=findings_of(results),
        remediation=tuple(remediation),
        redact=Redactor.for_inputs(runbook, inputs),
    )


def approvers_of(queue: AlertQueue, entry: Entry) -> tuple[str, ...]:
    """The people whose approvals met an approved entry's quorum, by short name (``()`` when it was
    not approved, or the store cannot say)."""
    if entry.approved_by is None:
        return ()
    try:
        progress = queue.progress(entry)
    except JournalError:
        return ()
    return progress.approved if progress is not None else ()


def runbook_data(runbook: Runbook) -> dict[str, Any]:
    """A runbook as notices name it."""
    return {"id": runbook.id, "title": runbook.title, "severity": runbook.severity.value}


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# --------------------------------------------------------------------------- a run's progress


class RunNotices:
    """Subscribes to one alert-started run's events and adds its notices: REMEDIATION_STARTED (the
    first remediation step is about to run on a host), STEP (a remediate or verify step finished),
    REMEDIATED / VERIFY_FAILED (the verdict, once per host, unless the run was cancelled: the run
    resuming it gives the verdict).

    ``chain``: the first run of the resume chain this run belongs to (its own id when it resumes
    nothing): keys are ``run:<chain>:…``, so a resumed run adds none of the earlier run's again.
    ``approved_by``: who approved the entry (``None``: the policy let the remediation run alone)."""

    def __init__(
        self,
        queue: AlertQueue,
        entry: Entry,
        runbook: Runbook,
        *,
        chain: str,
        approved_by: str | None,
        cancel: threading.Event,
    ) -> None:
        self.queue = queue
        self.entry = entry
        self.runbook = runbook
        self.chain = chain
        self.approved_by = approved_by
        self.cancel = cancel
        self._started: set[str] = set()

    def __call__(self, event: Event) -> None:
        try:
            match event:
                case StepStarted(phase=Phase.REMEDIATE, host=host) if host not in self._started:
                    self._started.add(host)
                    self._remediation_started(host, event.run_id)
                case StepFinished(result=result) if result.phase in (Phase.REMEDIATE, Phase.VERIFY):
                    self._step(result, event.run_id)
                case HostFinished(report=report) if not self.cancel.is_set():
                    self._verdict(report, event.run_id)
        except Exception:  # a notice is never worth a run: said in the log, the run goes on
            log.exception("could not add the notice of run %s's %s", event.run_id, type(event).__name__)

    def _notice(
        self, kind: NoticeKind, key: str, host: str, run_id: str, summary: str, details: dict[str, Any]
    ) -> None:
        body = payload(
            kind,
            key=f"run:{self.chain}:{key}",
            summary=f"{self.runbook.id} on {host}: {summary}",
            entry=notice_entry(self.entry) | {"run_id": run_id},
            runbook=runbook_data(self.runbook),
            host=host,
            details={"run_id": run_id} | details,
        )
        try:
            self.queue.add_notice(kind, body, entry_id=self.entry.id, run_id=run_id)
        except JournalError as exc:  # the store refuses writes now: the run's own record says so
            log.warning("could not add the %s notice %s: %s", kind.value, body["id"], exc)

    def _remediation_started(self, host: str, run_id: str) -> None:
        automatic = self.approved_by is None
        how = "automatically, as the policy allows" if automatic else f"approved by {self.approved_by}"
        self._notice(
            NoticeKind.REMEDIATION_STARTED,
            f"remediation_started:{host}",
            host,
            run_id,
            f"remediation started {how}",
            {"automatic": automatic, "approved_by": self.approved_by or ""},
        )

    def _step(self, result: StepResult, run_id: str) -> None:
        step = next((s for s in self.runbook.steps(result.phase) if s.id == result.step_id), None)
        report = result.message or _first_line(result.stdout)
        self._notice(
            NoticeKind.STEP,
            f"step:{result.host}:{result.phase.value}:{result.step_id}",
            result.host,
            run_id,
            f"{result.phase.value} {result.step_id}: {result.status.label}"
            + (f": {report}" if report else ""),
            {
                "phase": result.phase.value,
                "step": result.step_id,
                "title": step.title if step is not None else "",
                "status": result.status.value,
                "report": report,
                "exit_code": result.rc,
            },
        )

    def _verdict(self, report: HostReport, run_id: str) -> None:
        remediated = [
            r for r in report.results if r.phase is Phase.REMEDIATE and r.status not in NOT_CARRIED_OUT
        ]
        if not remediated:
            return  # nothing was changed: no verdict to give
        verify = [
            {"step": r.step_id, "status": r.status.value, "report": r.message or _first_line(r.stdout)}
            for r in report.results
            if r.phase is Phase.VERIFY
        ]
        details = {"outcome": report.outcome.value, "reason": report.reason, "verify": verify}
        if report.outcome is HostOutcome.REMEDIATED:
            kind, summary = NoticeKind.REMEDIATED, "remediated; verify is clean"
        else:
            kind, summary = NoticeKind.VERIFY_FAILED, f"not fixed ({report.outcome.value}): {report.reason}"
        self._notice(kind, f"verdict:{report.host}", report.host, run_id, summary, details)
