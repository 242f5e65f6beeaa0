"""The run state machine: phases in order, conditions, approvals, verify.

For each target: **detect** decides whether the pitfall is present. If it is,
**diagnose** gathers evidence, **remediate** runs (each step approved unless it
says ``confirm: false``; the first failure stops the phase) and **verify** must
come back clean for the remediation to count. Every step result goes out as an
event before the next step starts; the runner never writes anything itself.

A failing step is a result, never an exception. Exceptions that reach the
caller are faults of the inputs (raised before anything runs) or Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import expr
from engine.approval import ApprovalRequest, Approver, Decision
from engine.errors import ExecutorError, TemplateError
from engine.events import (
    ApprovalRequested,
    EventBus,
    HostFinished,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.executors import ExecutorSet
from engine.inputs import Redactor
from engine.model import (
    PHASE_ORDER,
    Host,
    HostOutcome,
    HostReport,
    Phase,
    Runbook,
    RunReport,
    Step,
    StepKind,
    StepResult,
    StepStatus,
)
from engine.verdict import judge, render_step

log = logging.getLogger(__name__)

_FAILED = (StepStatus.ERROR, StepStatus.TIMEOUT)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything a run needs, resolved and validated before it starts."""

    runbook: Runbook
    hosts: tuple[Host, ...]
    inputs: Mapping[str, Any]
    started_by: str
    trigger: Mapping[str, Any] = field(default_factory=lambda: {"kind": "cli"})
    alert: Mapping[str, Any] | None = None
    dry_run: bool = False
    last_phase: Phase = Phase.VERIFY
    """Stop after this phase; remediate always continues into verify."""


class _Lines:
    """Turns output chunks into complete lines, so a secret is never split across events."""

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self._emit = emit
        self._pending: dict[str, str] = {}

    def feed(self, stream: str, text: str) -> None:
        data = self._pending.get(stream, "") + text
        head, sep, tail = data.rpartition("\n")
        self._pending[stream] = tail
        if sep:
            self._emit(stream, head + sep)

    def flush(self) -> None:
        for stream, text in self._pending.items():
            if text:
                self._emit(stream, text)
        self._pending.clear()


class Runner:
    """Runs one :class:`RunRequest` and reports through an :class:`EventBus`."""

    def __init__(
        self,
        request: RunRequest,
        *,
        bus: EventBus,
        approver: Approver,
        executors: ExecutorSet | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.request = request
        self.bus = bus
        self.approver = approver
        self.executors = executors or ExecutorSet()
        self.cancel = cancel
        self.redact = Redactor.for_inputs(request.runbook, request.inputs)

    @property
    def run_id(self) -> str:
        """The id every event of this run carries."""
        return self.bus.run_id

    # ----------------------------------------------------------------- run

    def run(self) -> RunReport:
        """Run every phase on every host; Ctrl-C ends the run as interrupted and re-raises."""
        req = self.request
        self.bus.emit(
            RunStarted,
            runbook_id=req.runbook.id,
            runbook_path=req.runbook.source_path,
            runbook_sha256=req.runbook.sha256,
            runbook_text=req.runbook.source_text,
            hosts=tuple(h.name for h in req.hosts),
            inputs=self.redact.inputs(req.runbook, req.inputs),
            started_by=req.started_by,
            trigger=dict(req.trigger),
            dry_run=req.dry_run,
            last_phase=req.last_phase.value,
        )
        reports: list[HostReport] = []
        try:
            for host in req.hosts:
                report = self._run_host(host)
                reports.append(report)
                self.bus.emit(HostFinished, report=report)
        except KeyboardInterrupt:
            final = RunReport(self.run_id, req.runbook.id, tuple(reports), interrupted=True)
            self.bus.emit(RunFinished, report=final)
            raise
        finally:
            self.executors.close()
        final = RunReport(self.run_id, req.runbook.id, tuple(reports))
        self.bus.emit(RunFinished, report=final)
        return final

    def _run_host(self, host: Host) -> HostReport:
        try:
            self.executors.for_host(host)
        except ExecutorError as exc:
            return HostReport(host.name, HostOutcome.FAILED, (), reason=str(exc))
        state = _HostState(host)
        detect = self._phase(state, Phase.DETECT)
        findings = _ids(detect, StepStatus.FINDING)
        if not findings:
            if _undecided(detect):
                return state.report(HostOutcome.FAILED, f"detect could not decide: {_undecided(detect)}")
            return state.report(HostOutcome.HEALTHY, "detect found nothing")
        present = f"found by {', '.join(findings)}"
        if self.request.last_phase is Phase.DETECT:
            return state.report(HostOutcome.PRESENT, present)
        self._phase(state, Phase.DIAGNOSE)
        if self.request.last_phase is Phase.DIAGNOSE or not self.request.runbook.remediate:
            reason = (
                present if self.request.runbook.remediate else f"{present}; the runbook has no remediation"
            )
            return state.report(HostOutcome.PRESENT, reason)
        remediate = self._phase(state, Phase.REMEDIATE)
        if self.request.dry_run:
            if any(
                r.status in _FAILED for r in remediate
            ):  # a template or when that fails now would fail for real
                return state.report(HostOutcome.FAILED, f"remediation would fail: {_first_failed(remediate)}")
            return state.report(HostOutcome.PRESENT, f"{present}; dry run: remediation shown, not run")
        attempted = [r for r in remediate if r.status in (StepStatus.OK, *_FAILED)]
        if not attempted:
            return state.report(HostOutcome.PRESENT, f"{present}; no remediation step was carried out")
        verify = self._phase(state, Phase.VERIFY)
        if any(r.status in _FAILED for r in remediate):
            return state.report(HostOutcome.FAILED, f"remediation failed: {_first_failed(remediate)}")
        still = _ids(verify, StepStatus.FINDING)
        if still:
            return state.report(HostOutcome.PRESENT, f"verify still finds it: {', '.join(still)}")
        if _undecided(verify):
            return state.report(HostOutcome.FAILED, f"verify could not decide: {_undecided(verify)}")
        return state.report(HostOutcome.REMEDIATED, "remediated; verify is clean")

    def _phase(self, state: _HostState, phase: Phase) -> list[StepResult]:
        results: list[StepResult] = []
        stop_reason = ""
        for step in self.request.runbook.steps(phase):
            if stop_reason:
                result = self._result(state.host, phase, step, StepStatus.SKIPPED, stop_reason)
                self.bus.emit(StepFinished, result=result)
            else:
                result = self._step(state, phase, step)
            state.record(result)
            results.append(result)
            if phase is Phase.REMEDIATE and result.status in _FAILED:
                stop_reason = f"not run: remediation step {step.id!r} failed before it"
        return results

    # ----------------------------------------------------------------- one step

    def _step(self, state: _HostState, phase: Phase, step: Step) -> StepResult:
        host = state.host
        ctx = state.context(self, phase)
        if step.when:
            try:
                go = bool(expr.evaluate(step.when, ctx, step_id=step.id, field="when"))
            except TemplateError as exc:
                return self._finish(host, phase, step, StepStatus.ERROR, str(exc))
            if not go:
                return self._finish(host, phase, step, StepStatus.SKIPPED, f"when is false: {step.when}")
        if step.kind is StepKind.ANSIBLE and not (phase is Phase.REMEDIATE and self.request.dry_run):
            return self._finish(
                host,
                phase,
                step,
                StepStatus.ERROR,
                "ansible steps run through ansible-runner, which this version of Cairn does not include yet",
            )
        try:
            text = render_step(step, ctx)
        except TemplateError as exc:
            return self._finish(host, phase, step, StepStatus.ERROR, str(exc))
        shown = self.redact(text)
        if phase is Phase.REMEDIATE and self.request.dry_run:
            note = (
                "dry run: a human would be asked to do this"
                if step.kind is StepKind.MANUAL
                else "dry run: not run"
            )
            return self._finish(host, phase, step, StepStatus.SKIPPED, note, command=shown)
        approval = ""
        if step.kind is StepKind.MANUAL or step.confirm:
            self.bus.emit(ApprovalRequested, host=host.name, phase=phase, step_id=step.id, command=shown)
            decided = self.approver.decide(ApprovalRequest(self.run_id, host.name, phase, step, shown))
            approval = decided.by
            self.bus.emit(
                StepApproval,
                host=host.name,
                phase=phase,
                step_id=step.id,
                command=shown,
                approved=decided.approved,
                by=decided.by,
                note=decided.note,
            )
            if decided.decision is Decision.DECLINED:
                note = decided.note or f"declined by {decided.by}"
                return self._finish(
                    host, phase, step, StepStatus.DECLINED, note, command=shown, approval=approval
                )
            if decided.decision is Decision.SKIPPED:
                return self._finish(
                    host, phase, step, StepStatus.SKIPPED, decided.note, command=shown, approval=approval
                )
            if step.kind is StepKind.MANUAL:
                return self._finish(
                    host,
                    phase,
                    step,
                    StepStatus.OK,
                    f"done, confirmed by {decided.by}",
                    command=shown,
                    approval=approval,
                )
        return self._run_command(state, phase, step, text, shown, approval)

    def _run_command(
        self, state: _HostState, phase: Phase, step: Step, command: str, shown: str, approval: str
    ) -> StepResult:
        host = state.host
        started = time.time()
        self.bus.emit(
            StepStarted, host=host.name, phase=phase, step_id=step.id, title=step.title, command=shown
        )

        def emit_lines(stream: str, text: str) -> None:
            self.bus.emit(
                StepOutput,
                host=host.name,
                phase=phase,
                step_id=step.id,
                stream=stream,
                text=self.redact(text),
            )

        lines = _Lines(emit_lines)
        executor = self.executors.for_host(host)
        try:
            outcome = executor.run(
                host, command, timeout=step.timeout, on_output=lines.feed, cancel=self.cancel
            )
        except KeyboardInterrupt:
            lines.flush()
            self._finish(
                host,
                phase,
                step,
                StepStatus.ERROR,
                "interrupted (Ctrl-C); the command was killed",
                command=shown,
                approval=approval,
                started=started,
            )
            raise
        except ExecutorError as exc:
            lines.flush()
            return self._finish(
                host,
                phase,
                step,
                StepStatus.ERROR,
                str(exc),
                command=shown,
                approval=approval,
                started=started,
            )
        lines.flush()
        stdout, stderr = self.redact(outcome.stdout), self.redact(outcome.stderr)
        status, message, out = judge(
            step, phase, outcome, stdout, stderr, state.context(self, phase), self.redact
        )
        result = StepResult(
            host=host.name,
            phase=phase,
            step_id=step.id,
            status=status,
            message=message,
            command=shown,
            rc=outcome.rc,
            stdout=stdout,
            stderr=stderr,
            out=out,
            started_at=started,
            duration=outcome.duration,
            approval=approval,
        )
        self.bus.emit(StepFinished, result=result)
        return result

    def _result(
        self, host: Host, phase: Phase, step: Step, status: StepStatus, message: str, **extra: Any
    ) -> StepResult:
        return StepResult(
            host=host.name, phase=phase, step_id=step.id, status=status, message=message, **extra
        )

    def _finish(
        self,
        host: Host,
        phase: Phase,
        step: Step,
        status: StepStatus,
        message: str,
        *,
        command: str = "",
        approval: str = "",
        started: float | None = None,
    ) -> StepResult:
        now = time.time()
        result = self._result(
            host,
            phase,
            step,
            status,
            message,
            command=command,
            approval=approval,
            started_at=started or now,
            duration=now - started if started else 0.0,
        )
        self.bus.emit(StepFinished, result=result)
        return result


class _HostState:
    """Results so far on one host, as templates see them (``steps.<id>``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.results: list[StepResult] = []
        self.steps: dict[str, dict[str, Any]] = {}

    def record(self, result: StepResult) -> None:
        self.results.append(result)
        self.steps[result.step_id] = {
            "status": result.status.value,
            "ok": result.status is StepStatus.OK,
            "finding": result.status is StepStatus.FINDING,
            "out": result.out,
            "rc": result.rc,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "message": result.message,
        }

    def context(self, runner: Runner, phase: Phase) -> dict[str, Any]:
        req = runner.request
        return {
            "target": self.host.name,
            "vars": self.host.vars,
            "inputs": dict(req.inputs),
            "steps": self.steps,
            "alert": req.alert,
            "run": {"id": runner.run_id, "phase": phase.value, "dry_run": req.dry_run},
        }

    def report(self, outcome: HostOutcome, reason: str) -> HostReport:
        return HostReport(self.host.name, outcome, tuple(self.results), reason)


def _ids(results: list[StepResult], *statuses: StepStatus) -> list[str]:
    return [r.step_id for r in results if r.status in statuses]


def _first_failed(results: list[StepResult]) -> str:
    failed = next(r for r in results if r.status in _FAILED)
    return f"{failed.step_id}: {failed.message}"


def _undecided(results: list[StepResult]) -> str:
    """The first step that did not get to look: failed, timed out, or not approved; "" if none.

    A check that was declined (or skipped by the approver) proves nothing either way, so
    it stops detect from calling a host healthy and verify from calling it clean. A step
    skipped by its own ``when`` was not needed and does not count.
    """
    for r in results:
        if r.status in (*_FAILED, StepStatus.DECLINED) or (r.status is StepStatus.SKIPPED and r.approval):
            return f"{r.step_id}: {r.message or r.status.value}"
    return ""


def phases_until(last: Phase) -> tuple[Phase, ...]:
    """The phases a run stopping after ``last`` goes through."""
    if last in (Phase.REMEDIATE, Phase.VERIFY):
        return PHASE_ORDER
    return PHASE_ORDER[: PHASE_ORDER.index(last) + 1]
