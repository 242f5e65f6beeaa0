"""One step on one host: its condition, approval, execution and result.

The :class:`StepRunner` turns a step into a :class:`~engine.core.model.StepResult`
and the events around it (started, output lines, approval, finished); the
runner decides which steps run on which hosts. Output reaches subscribers as
complete lines, redacted, so a secret is never split across two events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import expr
from engine.core.approval import ApprovalRequest, Decision
from engine.core.become import become_for
from engine.core.context import run_info, template_context
from engine.core.errors import ExecutorError, TemplateError
from engine.core.events import (
    ApprovalRequested,
    EventBus,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.core.executors import ExecutorSet, OutputCallback
from engine.core.fanout import ApprovalDesk
from engine.core.inputs import Redactor
from engine.core.lines import LineSplitter
from engine.core.model import (
    CommandResult,
    Host,
    HostOutcome,
    HostReport,
    Phase,
    Step,
    StepKind,
    StepResult,
    StepStatus,
    host_folder,
)
from engine.core.template_bounds import RenderCancelled, RenderTimeout, rendering
from engine.core.verdict import judge, render_step, render_task, step_policy

if TYPE_CHECKING:
    from engine.core.preflight import Preflight
    from engine.core.spec import RunSpec


class StepRunner:
    """Runs single steps for one run; shared by every host's worker thread."""

    def __init__(
        self,
        spec: RunSpec,
        bus: EventBus,
        desk: ApprovalDesk,
        executors: ExecutorSet,
        redact: Redactor,
        cancel: threading.Event,
        artifacts: Path | None = None,
    ) -> None:
        self.spec = spec
        self.artifacts = artifacts
        """The run's artifacts folder (``None``: nothing is kept on disk)."""
        self.bus = bus
        self.desk = desk
        self.executors = executors
        self.redact = redact
        self.cancel = cancel

    def step(self, state: HostState, phase: Phase, step: Step) -> StepResult:
        # Every render of the step (when, the command, expect, report) is bounded by its timeout and
        # stopped by the run's cancel; ``allow_unquoted`` lets | unquoted take an outsider's text.
        with rendering(step_policy(step, self.cancel)):
            return self._step(state, phase, step)

    def _step(self, state: HostState, phase: Phase, step: Step) -> StepResult:
        host = state.host
        ctx = state.context(self.spec, self.bus.run_id, phase)
        if step.when:
            try:
                go = bool(expr.evaluate(step.when, ctx, step_id=step.id, field="when", redact=self.redact))
            except TemplateError as exc:
                return self._unrendered(host, phase, step, exc)
            if not go:
                return self.finish(host, phase, step, StepStatus.SKIPPED, f"when is false: {step.when}")
        lacking = state.preflight.lacking(step) if state.preflight is not None else []
        if lacking:  # a check that cannot look is an error, never "nothing found"
            return self.finish(host, phase, step, StepStatus.NOT_RUN, f"not run: {'; '.join(lacking)}")
        base_dir = Path(self.spec.runbook.source_path).parent
        escalation = become_for(step, self.spec.runbook, host.vars)
        become = escalation.label if escalation is not None else ""  # shown beside the command everywhere
        try:
            text = render_step(step, ctx, self.redact)
            # The one seam: the action rendered into a task, done by the executor for its kind.
            task = (
                None
                if step.kind is StepKind.MANUAL
                else render_task(step, text, ctx, base_dir=base_dir, redact=self.redact, become=escalation)
            )
        except TemplateError as exc:
            return self._unrendered(host, phase, step, exc)
        shown = self.redact(text)
        if phase is Phase.REMEDIATE and self.spec.dry_run:
            note = (
                "dry run: a human would be asked to do this"
                if step.kind is StepKind.MANUAL
                else "dry run: not run" + (f" ({become})" if become else "")
            )
            return self.finish(host, phase, step, StepStatus.SKIPPED, note, command=shown)
        approval = ""
        if (
            step.kind is StepKind.MANUAL
            or step.confirm
            or (phase is Phase.REMEDIATE and self.spec.unattended)
        ):
            self.bus.emit(
                ApprovalRequested(host=host.name, phase=phase, step_id=step.id, command=shown, become=become)
            )
            decided = self.desk.ask(ApprovalRequest(self.bus.run_id, host.name, phase, step, shown, become))
            approval = decided.by
            self.bus.emit(
                StepApproval(
                    host=host.name,
                    phase=phase,
                    step_id=step.id,
                    command=shown,
                    approved=decided.approved,
                    by=decided.by,
                    note=decided.note,
                    asked=decided.decision is not Decision.NOT_ASKED,
                )
            )
            if decided.decision is Decision.DECLINED:
                note = decided.note or f"declined by {decided.by}"
                return self.finish(
                    host, phase, step, StepStatus.DECLINED, note, command=shown, approval=approval
                )
            if decided.decision is Decision.NOT_ASKED:
                # Nobody answered because the run stopped: not run (resume asks again); else nobody was there.
                status = StepStatus.NOT_RUN if self.cancel.is_set() else StepStatus.NOT_ASKED
                return self.finish(host, phase, step, status, decided.note, command=shown, approval=approval)
            if decided.decision is Decision.SKIPPED:
                return self.finish(
                    host, phase, step, StepStatus.SKIPPED, decided.note, command=shown, approval=approval
                )
            if step.kind is StepKind.MANUAL:
                return self.finish(
                    host,
                    phase,
                    step,
                    StepStatus.OK,
                    f"done, confirmed by {decided.by}",
                    command=shown,
                    approval=approval,
                )
        assert task is not None  # a manual step ended above, with the human's answer
        artifacts = self._artifacts(host, phase, step)

        def call(on_output: OutputCallback) -> CommandResult:
            return self.executors.execute(
                host,
                task,
                timeout=step.timeout,
                on_output=on_output,
                cancel=self.cancel,
                artifacts=artifacts,
                step=(phase, step.id),
            )

        return self._execute(state, phase, step, shown, approval, call, become=become)

    def _unrendered(self, host: Host, phase: Phase, step: Step, exc: TemplateError) -> StepResult:
        """The result of a step one of whose templates could not be rendered: nothing ran."""
        status = StepStatus.ERROR
        if isinstance(exc, RenderCancelled):
            status = StepStatus.CANCELLED
        elif isinstance(exc, RenderTimeout) and exc.step_timeout:
            status = StepStatus.TIMEOUT
        return self.finish(host, phase, step, status, self.redact(str(exc)))

    def _artifacts(self, host: Host, phase: Phase, step: Step) -> Path | None:
        if self.artifacts is None:
            return None
        return self.artifacts / host_folder(host.name) / "ansible" / f"{phase.value}.{step.id}"

    def _execute(
        self,
        state: HostState,
        phase: Phase,
        step: Step,
        shown: str,
        approval: str,
        call: Callable[[OutputCallback], CommandResult],
        *,
        become: str = "",
    ) -> StepResult:
        host = state.host
        started = time.time()
        self.bus.emit(
            StepStarted(
                host=host.name, phase=phase, step_id=step.id, title=step.title, command=shown, become=become
            )
        )

        def emit_lines(stream: str, text: str) -> None:
            self.bus.emit(
                StepOutput(
                    host=host.name, phase=phase, step_id=step.id, stream=stream, text=self.redact(text)
                )
            )

        lines = LineSplitter(emit_lines, redact=self.redact)
        try:
            outcome = call(lines.feed)
        except KeyboardInterrupt:
            lines.flush()
            self.finish(
                host,
                phase,
                step,
                StepStatus.INTERRUPTED,
                "interrupted (Ctrl-C); the command was killed",
                command=shown,
                approval=approval,
                started=started,
            )
            raise
        except ExecutorError as exc:
            lines.flush()
            return self.finish(
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
            step,
            phase,
            outcome,
            stdout,
            stderr,
            state.context(self.spec, self.bus.run_id, phase),
            self.redact,
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
        self.bus.emit(StepFinished(result=result))
        return result

    def _result(
        self, host: Host, phase: Phase, step: Step, status: StepStatus, message: str, **extra: Any
    ) -> StepResult:
        return StepResult(
            host=host.name, phase=phase, step_id=step.id, status=status, message=message, **extra
        )

    def reuse(self, earlier: StepResult, from_run: str) -> StepResult:
        """An interrupted run's result of a step, taken over by the run that resumes it (not run again)."""
        result = replace(earlier, message=f"from run {from_run}: {earlier.message}".rstrip(": "))
        self.bus.emit(StepFinished(result=result))
        return result

    def reuse_in_doubt(self, earlier: StepResult, from_run: str) -> StepResult:
        """A remediation step an interrupted run started and did not finish, taken over by an unattended
        run that resumes it: never started again (it may have changed the host half-way), so it ends
        ``interrupted`` and the rest of the remediation does not run; verify says where the host is."""
        why = (
            "its command was killed when the run was cancelled"
            if earlier.status is StepStatus.CANCELLED
            else "the server running it stopped"
        )
        message = (
            f"started on {earlier.host} and its end is unknown ({why}); not run again: a remediation "
            "step runs at most once — verify says what the host is like now"
        )
        return self.reuse(replace(earlier, status=StepStatus.INTERRUPTED, message=message), from_run)

    def finish(
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
        self.bus.emit(StepFinished(result=result))
        return result


class HostState:
    """Results so far on one host, as templates see them (``steps.<id>``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.results: list[StepResult] = []
        self.steps: dict[str, dict[str, Any]] = {}
        self.present = ""
        """Why detect says the pitfall is present (``found by …``); set by :meth:`found`."""
        self.verify_unclean = False
        """Verify still finds the pitfall or could not decide; set by :meth:`verified`."""
        self.preflight: Preflight | None = None
        """What the host has of the programs the steps need (``None``: the runbook names none)."""

    def checked(self, preflight: Preflight) -> None:
        """The host answered the preflight probe."""
        self.preflight = preflight

    def found(self, findings: list[str]) -> str:
        """Detect found the pitfall through ``findings`` (step ids); the reason, as reports say it."""
        self.present = f"found by {', '.join(findings)}"
        return self.present

    def verified(self, *, clean: bool) -> None:
        """Verify ran after a remediation: ``clean`` when it found nothing and every check looked."""
        self.verify_unclean = not clean

    def record(self, result: StepResult) -> None:
        """Keep ``result`` for the host report and for later templates."""
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

    def replace(self, result: StepResult) -> None:
        """Put a re-run step's result in place of its last result (pacing's "run it again")."""
        for index in range(len(self.results) - 1, -1, -1):
            if (self.results[index].phase, self.results[index].step_id) == (result.phase, result.step_id):
                del self.results[index]
                break
        self.record(result)

    def context(self, req: RunSpec, run_id: str, phase: Phase) -> dict[str, Any]:
        """What templates see while a step of ``phase`` runs on this host (the one builder plans use too)."""
        return template_context(
            req.runbook,
            self.host,
            req.inputs,
            alert=req.alert,
            run=run_info(run_id, phase, dry_run=req.dry_run),
            steps=self.steps,
        )

    def report(self, outcome: HostOutcome, reason: str) -> HostReport:
        """The host's report with every result so far."""
        return HostReport(self.host.name, outcome, tuple(self.results), reason)
