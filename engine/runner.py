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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.approval import Approver
from engine.errors import ExecutorError
from engine.events import (
    EventBus,
    HostFinished,
    PreflightChecked,
    RunFinished,
    RunStarted,
)
from engine.executors import ExecutorSet
from engine.fanout import DEFAULT_FORKS, INTERRUPTED, ApprovalDesk, WorkerPool, batches, fan_out
from engine.inputs import Redactor
from engine.model import (
    PHASE_ORDER,
    Host,
    HostOutcome,
    HostReport,
    Phase,
    ResumePoint,
    Runbook,
    RunReport,
    Step,
    StepResult,
    StepStatus,
)
from engine.pacing import FreeRunning, Pace, Pacer, PaceRequest
from engine.preflight import blocked_remediation, check_host
from engine.steps import HostState, StepRunner

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
    forks: int = DEFAULT_FORKS
    """Hosts worked on at once."""
    artifacts: Path | None = None
    """This run's artifacts folder; executors keep per-step files under it (ansible-runner's)."""
    resume: ResumePoint | None = None
    """An interrupted run this one resumes: its finished steps are reused, not run again."""
    unattended: bool = False
    """No human started this run (an alert did): every remediation step goes to the approver,
    even one that says ``confirm: false``, so the policy and the guardrails see each of them."""


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
        pacer: Pacer | None = None,
    ) -> None:
        self.request = request
        self.bus = bus
        self.approver = approver
        self.pacer: Pacer = pacer or FreeRunning()
        """Asked before every step: run it, skip it, or run the previous one again (stepping)."""
        self.executors = executors or ExecutorSet()
        self.cancel = cancel or threading.Event()
        """Set to stop the run: running commands are killed where they run, later steps skipped."""
        self.redact = Redactor.for_inputs(request.runbook, request.inputs)
        self.executors.redact = self.redact

    @property
    def run_id(self) -> str:
        """The id every event of this run carries."""
        return self.bus.run_id

    # ----------------------------------------------------------------- run

    def run(self) -> RunReport:
        """Run every phase on every host, ``forks`` hosts at a time.

        Ctrl-C (on the calling thread) cancels the running commands, which are killed
        where they run; the run ends as interrupted and the interrupt is re-raised.
        """
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
        self._reports: dict[str, HostReport] = {}
        self._interrupted = False
        self._desk = ApprovalDesk(self.approver)
        self._steps = StepRunner(req, self.bus, self._desk, self.executors, self.redact, self.cancel)
        workers = max(1, min(req.forks, len(req.hosts)))
        try:
            with WorkerPool(workers, "cairn-host") as pool:
                try:
                    self._orchestrate(pool)
                except KeyboardInterrupt:
                    # Between two fan-outs, or before one got going: the workers
                    # must see the cancel before the pool waits for them.
                    self._interrupt()
                    self._desk.close(INTERRUPTED)
                    raise
        except KeyboardInterrupt:
            self._interrupted = True
        finally:
            self.executors.close()
        done = tuple(self._reports[h.name] for h in req.hosts if h.name in self._reports)
        # A cancel from another thread (the TUI's cancel key) interrupts the run as Ctrl-C does.
        interrupted = self._interrupted or self.cancel.is_set()
        final = RunReport(self.run_id, req.runbook.id, done, interrupted=interrupted)
        self.bus.emit(RunFinished, report=final)
        if self._interrupted:
            raise KeyboardInterrupt
        return final

    def _orchestrate(self, pool: WorkerPool) -> None:
        """Every host through every phase; remediation rolls in batches when a step asks for ``serial``."""
        req = self.request
        rolling = not req.dry_run and req.last_phase in (Phase.REMEDIATE, Phase.VERIFY)
        size = req.runbook.batch_size(len(req.hosts)) if rolling else None
        common = {"pool": pool, "desk": self._desk, "on_interrupt": self._interrupt}
        if size is None:
            fan_out(req.hosts, self._whole_host, **common)  # type: ignore[arg-type]
            return
        # Rolling: look at every host first (read-only), then change them a batch at a time.
        states = fan_out(req.hosts, self._investigate_host, **common)  # type: ignore[arg-type]
        waiting = [s for s in states if s is not None]
        rounds = batches(waiting, size)
        for number, batch in enumerate(rounds, 1):
            if self.cancel.is_set():
                break
            fan_out(batch, self._remediate_host, **common)  # type: ignore[arg-type]
            failed = [s.host.name for s in batch if s.rollout_failed]
            if failed:
                later = [s for rest in rounds[number:] for s in rest]
                why = (
                    f"{{}}; not remediated: the roll-out stopped because batch {number} of "
                    f"{len(rounds)} failed verify on {', '.join(failed)}"
                )
                for state in later:
                    self._host_done(state.report(HostOutcome.PRESENT, why.format(state.present)))
                return

    def _interrupt(self) -> None:
        self._interrupted = True
        self.cancel.set()

    def _host_done(self, report: HostReport) -> HostReport:
        self._reports[report.host] = report
        self.bus.emit(HostFinished, report=report)
        return report

    def _guarded(self, host: Host, work: Callable[[], HostReport | None]) -> HostReport | None:
        """Run one host's work in a worker: a fault in Cairn fails that host, never the others."""
        try:
            report = work()
        except KeyboardInterrupt:  # only in tests (Ctrl-C lands on the main thread), but be exact
            self._interrupt()
            report = HostReport(host.name, HostOutcome.FAILED, (), reason="interrupted")
        except Exception as exc:
            log.exception("internal error on %s", host.name)
            report = HostReport(
                host.name,
                HostOutcome.FAILED,
                (),
                reason=f"internal error in Cairn: {type(exc).__name__}: {exc}",
            )
        return self._host_done(report) if report is not None else None

    def _whole_host(self, host: Host) -> None:
        def work() -> HostReport:
            state = HostState(host)
            return self._investigate(state) or self._remediate(state)

        self._guarded(host, work)

    def _investigate_host(self, host: Host) -> HostState | None:
        state = HostState(host)
        pending: list[HostState] = []

        def work() -> HostReport | None:
            report = self._investigate(state)
            if report is None:
                pending.append(state)
            return report

        self._guarded(host, work)
        return pending[0] if pending else None

    def _remediate_host(self, state: HostState) -> None:
        report = self._guarded(state.host, lambda: self._remediate(state))
        state.rollout_failed = report is None or report.outcome is HostOutcome.FAILED or state.verify_unclean

    def _investigate(self, state: HostState) -> HostReport | None:
        """Detect, then diagnose: the host's report when it ends here, ``None`` when remediation follows."""
        host = state.host
        try:
            executor = self.executors.for_host(host)
            executor.connect(host)
        except ExecutorError as exc:
            return HostReport(host.name, HostOutcome.FAILED, (), reason=str(exc))
        if self.request.runbook.has_requirements:
            context = state.context(self.request, self.run_id, Phase.DETECT)
            state.preflight = check_host(executor, host, self.request.runbook, context)
            self.bus.emit(
                PreflightChecked,
                host=host.name,
                ok=state.preflight.ok,
                summary=state.preflight.summary(self.request.runbook),
                missing=state.preflight.missing,
            )
        detect = self._phase(state, Phase.DETECT)
        findings = _ids(detect, StepStatus.FINDING)
        if not findings:
            if _undecided(detect):
                return state.report(HostOutcome.FAILED, f"detect could not decide: {_undecided(detect)}")
            return state.report(HostOutcome.HEALTHY, "detect found nothing")
        state.present = f"found by {', '.join(findings)}"
        if self.request.last_phase is Phase.DETECT:
            return state.report(HostOutcome.PRESENT, state.present)
        self._phase(state, Phase.DIAGNOSE)
        if self.request.last_phase is Phase.DIAGNOSE or not self.request.runbook.remediate:
            reason = state.present
            if not self.request.runbook.remediate:
                reason += "; the runbook has no remediation"
            return state.report(HostOutcome.PRESENT, reason)
        return None

    def _remediate(self, state: HostState) -> HostReport:
        """Remediate, then verify: what the host's remediation came to."""
        present = state.present
        if state.preflight is not None:
            context = state.context(self.request, self.run_id, Phase.REMEDIATE)
            blocked = blocked_remediation(state.preflight, self.request.runbook, context)
            if blocked:  # before its first step: a remediation that cannot finish does not start
                return state.report(HostOutcome.FAILED, f"{present}; {blocked}")
        remediate = self._phase(state, Phase.REMEDIATE)
        if self.request.dry_run:
            if any(
                r.status in _FAILED for r in remediate
            ):  # a template or when that fails now would fail for real
                return state.report(HostOutcome.FAILED, f"remediation would fail: {_first_failed(remediate)}")
            return state.report(HostOutcome.PRESENT, f"{present}; dry run: remediation shown, not run")
        attempted = [r for r in remediate if r.status in (StepStatus.OK, *_FAILED)]
        if not attempted:
            return state.report(HostOutcome.PRESENT, f"{present}; {_nothing_carried_out(remediate)}")
        verify = self._phase(state, Phase.VERIFY)
        still = _ids(verify, StepStatus.FINDING)
        state.verify_unclean = bool(still or _undecided(verify))
        if any(r.status in _FAILED for r in remediate):
            failed = f"remediation failed: {_first_failed(remediate)}"
            if still:
                return state.report(
                    HostOutcome.FAILED, f"{failed}; verify still finds it: {', '.join(still)}"
                )
            if _undecided(verify):
                return state.report(
                    HostOutcome.FAILED, f"{failed}; verify could not decide: {_undecided(verify)}"
                )
            step = next(r.step_id for r in remediate if r.status in _FAILED)
            return state.report(
                HostOutcome.FAILED,
                f"{failed}; yet verify is clean: the pitfall is not present now, but {step} did not finish, "
                f"so the host may be half-changed — read its output (cairn show-run {self.run_id}) "
                "before you trust it",
            )
        if still:
            return state.report(HostOutcome.PRESENT, f"verify still finds it: {', '.join(still)}")
        if _undecided(verify):
            return state.report(HostOutcome.FAILED, f"verify could not decide: {_undecided(verify)}")
        return state.report(HostOutcome.REMEDIATED, "remediated; verify is clean")

    def _phase(self, state: HostState, phase: Phase) -> list[StepResult]:
        results: list[StepResult] = []
        stop_reason = ""
        for step in self.request.runbook.steps(phase):
            if self.cancel.is_set():
                stop_reason = stop_reason or "not run: the run was interrupted"
            reused = self._reused(state.host.name, phase, step.id)
            if stop_reason:
                result = self._steps.finish(state.host, phase, step, StepStatus.SKIPPED, stop_reason)
            elif reused is not None:
                result = self._steps.reuse(reused, self.request.resume.run_id if self.request.resume else "")
            else:
                result = self._paced_step(state, phase, step, results)
            state.record(result)
            results.append(result)
            if phase is Phase.REMEDIATE and result.status in _FAILED:
                stop_reason = f"not run: remediation step {step.id!r} failed before it"
        return results

    def _reused(self, host: str, phase: Phase, step_id: str) -> StepResult | None:
        """The interrupted run's result of this step, when this run resumes it and the step had finished."""
        if self.request.resume is None:
            return None
        return self.request.resume.results.get((host, phase, step_id))

    def _paced_step(
        self, state: HostState, phase: Phase, step: Step, results: list[StepResult]
    ) -> StepResult:
        """Ask the pacer, re-running the phase's previous step as often as it says, then run or skip ``step``."""
        while True:
            previous = results[-1] if results else None
            decision = self.pacer.before(PaceRequest(self.run_id, state.host.name, phase, step, previous))
            if self.cancel.is_set():
                return self._steps.finish(
                    state.host, phase, step, StepStatus.SKIPPED, "not run: the run was interrupted"
                )
            if decision.pace is Pace.RERUN and previous is not None:
                earlier = next(s for s in self.request.runbook.steps(phase) if s.id == previous.step_id)
                again = self._steps.step(state, phase, earlier)
                state.replace(again)
                results[-1] = again
                continue
            if decision.pace is Pace.SKIP:
                by = decision.by or "a human"
                return self._steps.finish(
                    state.host, phase, step, StepStatus.SKIPPED, f"skipped by {by}", approval=by
                )
            return self._steps.step(state, phase, step)


def _ids(results: list[StepResult], *statuses: StepStatus) -> list[str]:
    return [r.step_id for r in results if r.status in statuses]


def _first_failed(results: list[StepResult]) -> str:
    failed = next(r for r in results if r.status in _FAILED)
    return f"{failed.step_id}: {failed.message}"


def _nothing_carried_out(remediate: list[StepResult]) -> str:
    """Why no remediation step ran, in words: nobody was asked, a human declined or skipped, …"""
    not_asked = [r for r in remediate if r.status is StepStatus.NOT_ASKED]
    if not_asked:
        why = not_asked[0].message.removeprefix("not asked: ")
        return f"not remediated: {len(not_asked)} step(s) not asked ({why})"
    declined = [r for r in remediate if r.status is StepStatus.DECLINED]
    if declined:
        return f"not remediated: {declined[0].step_id} {declined[0].message}"
    return "no remediation step was carried out"


def _undecided(results: list[StepResult]) -> str:
    """The first step that did not get to look: failed, timed out, or not approved; "" if none.

    A check that was declined (or skipped by the approver) proves nothing either way, so
    it stops detect from calling a host healthy and verify from calling it clean. A step
    skipped by its own ``when`` was not needed and does not count.
    """
    for r in results:
        if r.status in (*_FAILED, StepStatus.DECLINED, StepStatus.NOT_ASKED) or (
            r.status is StepStatus.SKIPPED and r.approval
        ):
            return f"{r.step_id}: {r.message or r.status.value}"
    return ""


def phases_until(last: Phase) -> tuple[Phase, ...]:
    """The phases a run stopping after ``last`` goes through."""
    if last in (Phase.REMEDIATE, Phase.VERIFY):
        return PHASE_ORDER
    return PHASE_ORDER[: PHASE_ORDER.index(last) + 1]
