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

import errno
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from engine.core.approval import Approver, RedactedRequests
from engine.core.errors import ExecutorError
from engine.core.events import (
    EventBus,
    HostFinished,
    PreflightChecked,
    RunFinished,
    RunStarted,
)
from engine.core.executors import ExecutorSet
from engine.core.fanout import INTERRUPTED, ApprovalDesk, WorkerPool, batches, fan_out
from engine.core.inputs import Redactor
from engine.core.model import (
    PHASE_ORDER,
    Host,
    HostOutcome,
    HostReport,
    Phase,
    RunReport,
    Step,
    StepResult,
    StepStatus,
)
from engine.core.open_files import out_of_files
from engine.core.pacing import FreeRunning, Pace, Pacer, PaceRequest
from engine.core.preflight import blocked_remediation, check_host, needs_preflight
from engine.core.spec import RunSpec
from engine.core.steps import HostState, StepRunner
from engine.core.template_bounds import RenderPolicy, rendering

log = logging.getLogger(__name__)


class Runner:
    """Runs one :class:`~engine.core.spec.RunSpec` and reports through an :class:`EventBus`."""

    def __init__(
        self,
        spec: RunSpec,
        *,
        bus: EventBus,
        approver: Approver,
        executors: ExecutorSet | None = None,
        cancel: threading.Event | None = None,
        pacer: Pacer | None = None,
        artifacts: Path | None = None,
    ) -> None:
        self.spec = spec
        self.bus = bus
        self.approver = approver
        self.pacer: Pacer = pacer or FreeRunning()
        """Asked before every step: run it, skip it, or run the previous one again (stepping)."""
        self.cancel = cancel or threading.Event()
        """Set to stop the run: running commands are killed where they run, later steps skipped."""
        self.redact = Redactor.for_run(spec.runbook, spec.inputs, spec.hosts)
        bus.protect(self.redact)  # every event is redacted by the bus itself, whoever built the bus
        self.executors = executors or ExecutorSet(options=spec.options, redact=self.redact)
        self.artifacts = artifacts
        """This run's artifacts folder; executors keep per-step files under it (ansible-runner's)."""
        self._reports: dict[str, HostReport] = {}
        self._interrupted = False
        self._rollout_failed: set[str] = set()
        """Hosts of a rolling remediation whose batch failed (remediation failed, or verify unclean)."""
        self._desk = ApprovalDesk(RedactedRequests(self.approver, self.bus.redact))
        self._steps = StepRunner(spec, bus, self._desk, self.executors, self.redact, self.cancel, artifacts)

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
        req = self.spec
        self._load_executors()
        self.bus.emit(
            RunStarted(
                runbook_id=req.runbook.id,
                runbook_path=req.runbook.source_path,
                runbook_sha256=req.runbook.sha256,
                runbook_text=req.runbook.source_text,
                hosts=tuple(h.name for h in req.hosts),
                inputs=self.redact.inputs(req.runbook, req.inputs),
                started_by=req.started_by,
                trigger=req.journal_trigger(),
                dry_run=req.dry_run,
                last_phase=req.last_phase.value,
            )
        )
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
        finished = self.bus.emit(RunFinished(report=final))
        if self._interrupted:
            raise KeyboardInterrupt
        return finished.report  # as the subscribers saw it: redacted

    def _load_executors(self) -> None:
        """Create the executor of each kind of host now, on this thread, once: importing one (paramiko
        for SSH) is start-up, paid before the run starts rather than by every worker at once, waiting
        on the same import lock. A kind no executor serves fails its hosts later, each with the reason."""
        first_of_kind = {host.connection: host for host in reversed(self.spec.hosts)}
        for host in first_of_kind.values():
            try:
                self.executors.for_host(host)
            except Exception as exc:  # each of its hosts meets it again in its worker, which reports it
                log.debug("no executor for %s yet: %s", host.name, exc)

    def _orchestrate(self, pool: WorkerPool) -> None:
        """Every host through every phase; remediation rolls in batches when a step asks for ``serial``."""
        req = self.spec
        rolling = not req.dry_run and req.last_phase in (Phase.REMEDIATE, Phase.VERIFY)
        size = req.runbook.batch_size(len(req.hosts)) if rolling else None
        desk, on_interrupt = self._desk, self._interrupt
        if size is None:
            fan_out(req.hosts, self._whole_host, pool=pool, desk=desk, on_interrupt=on_interrupt)
            return
        # Rolling: look at every host first (read-only), then change them a batch at a time.
        states = fan_out(req.hosts, self._investigate_host, pool=pool, desk=desk, on_interrupt=on_interrupt)
        waiting = [s for s in states if s is not None]
        rounds = batches(waiting, size)
        for number, batch in enumerate(rounds, 1):
            if self.cancel.is_set():
                break
            fan_out(batch, self._remediate_host, pool=pool, desk=desk, on_interrupt=on_interrupt)
            failed = [s.host.name for s in batch if s.host.name in self._rollout_failed]
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
        self.bus.emit(HostFinished(report=report))
        return report

    def _guarded(self, host: Host, work: Callable[[], HostReport | None]) -> HostReport | None:
        """Run one host's work in a worker: a fault in Cairn fails that host, never the others."""
        try:
            report = work()
        except KeyboardInterrupt:  # only in tests (Ctrl-C lands on the main thread), but be exact
            self._interrupt()
            report = HostReport(host.name, HostOutcome.FAILED, (), reason="interrupted")
        except OSError as exc:
            report = self._internal_error(host, exc) if exc.errno != errno.EMFILE else out_of_files(host)
        except Exception as exc:
            report = self._internal_error(host, exc)
        return self._host_done(report) if report is not None else None

    def _internal_error(self, host: Host, exc: Exception) -> HostReport:
        """A fault in Cairn itself, on one host: logged with its traceback, said in one line."""
        # The traceback is logged redacted: an exception's text can hold a rendered command.
        trace = "".join(traceback.format_exception(exc))
        log.error("internal error on %s\n%s", host.name, self.bus.redact(trace))
        return HostReport(
            host.name, HostOutcome.FAILED, (), reason=f"internal error in Cairn: {type(exc).__name__}: {exc}"
        )

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
        if report is None or report.outcome is HostOutcome.FAILED or state.verify_unclean:
            self._rollout_failed.add(state.host.name)

    def _investigate(self, state: HostState) -> HostReport | None:
        """Detect, then diagnose: the host's report when it ends here, ``None`` when remediation follows."""
        host = state.host
        try:
            executor = self.executors.for_host(host)
            executor.connect(host)
        except ExecutorError as exc:
            return HostReport(host.name, HostOutcome.FAILED, (), reason=str(exc))
        if needs_preflight(self.spec.runbook, host):
            context = state.context(self.spec, self.run_id, Phase.DETECT)
            with rendering(RenderPolicy(cancel=self.cancel)):  # its `requires` templates stop on a cancel too
                preflight = check_host(executor, host, self.spec.runbook, context)
            state.checked(preflight)
            self.bus.emit(
                PreflightChecked(
                    host=host.name,
                    ok=preflight.ok,
                    summary=preflight.summary(self.spec.runbook),
                    missing=preflight.missing,
                )
            )
        detect = self._phase(state, Phase.DETECT)
        findings = _ids(detect, StepStatus.FINDING)
        if not findings:
            if _undecided(detect):
                return state.report(HostOutcome.FAILED, f"detect could not decide: {_undecided(detect)}")
            return state.report(HostOutcome.HEALTHY, "detect found nothing")
        present = state.found(findings)
        if self.spec.last_phase is Phase.DETECT:
            return state.report(HostOutcome.PRESENT, present)
        self._phase(state, Phase.DIAGNOSE)
        if self.spec.last_phase is Phase.DIAGNOSE or not self.spec.runbook.remediate:
            reason = state.present
            if not self.spec.runbook.remediate:
                reason += "; the runbook has no remediation"
            return state.report(HostOutcome.PRESENT, reason)
        return None

    def _remediate(self, state: HostState) -> HostReport:
        """Remediate, then verify: what the host's remediation came to."""
        present = state.present
        if state.preflight is not None:
            context = state.context(self.spec, self.run_id, Phase.REMEDIATE)
            blocked = blocked_remediation(state.preflight, self.spec.runbook, context)
            if blocked:  # before its first step: a remediation that cannot finish does not start
                return state.report(HostOutcome.FAILED, f"{present}; {blocked}")
        remediate = self._phase(state, Phase.REMEDIATE)
        if self.spec.dry_run:
            if any(
                r.status.failed for r in remediate
            ):  # a template or when that fails now would fail for real
                return state.report(HostOutcome.FAILED, f"remediation would fail: {_first_failed(remediate)}")
            return state.report(HostOutcome.PRESENT, f"{present}; dry run: remediation shown, not run")
        attempted = [r for r in remediate if r.status is StepStatus.OK or r.status.failed]
        if not attempted:
            return state.report(HostOutcome.PRESENT, f"{present}; {_nothing_carried_out(remediate)}")
        verify = self._phase(state, Phase.VERIFY)
        still = _ids(verify, StepStatus.FINDING)
        state.verified(clean=not (still or _undecided(verify)))
        if any(r.status.failed for r in remediate):
            failed = f"remediation failed: {_first_failed(remediate)}"
            if still:
                return state.report(
                    HostOutcome.FAILED, f"{failed}; verify still finds it: {', '.join(still)}"
                )
            if _undecided(verify):
                return state.report(
                    HostOutcome.FAILED, f"{failed}; verify could not decide: {_undecided(verify)}"
                )
            step = next(r.step_id for r in remediate if r.status.failed)
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
        for step in self.spec.runbook.steps(phase):
            if self.cancel.is_set():
                stop_reason = stop_reason or "not run: the run was interrupted"
            taken = None if stop_reason else self._taken_over(state.host.name, phase, step.id)
            if stop_reason:
                result = self._steps.finish(state.host, phase, step, StepStatus.NOT_RUN, stop_reason)
            elif taken is not None:
                result = taken
            else:
                result = self._paced_step(state, phase, step, results)
            state.record(result)
            results.append(result)
            if phase is Phase.REMEDIATE and result.status.failed:
                stop_reason = f"not run: remediation step {step.id!r} failed before it"
        return results

    def _taken_over(self, host: str, phase: Phase, step_id: str) -> StepResult | None:
        """The resumed run's result of this step, taken over instead of running it; ``None``: run it.
        A remediation step in doubt (started, end unknown) is taken over only by an unattended run:
        it never starts again (at most once per remediation step); a human resuming is asked again."""
        point = self.spec.resume
        if point is None:
            return None
        key = (host, phase, step_id)
        if key in point.results:
            return self._steps.reuse(point.results[key], point.run_id)
        if self.spec.unattended and phase is Phase.REMEDIATE and key in point.in_doubt:
            return self._steps.reuse_in_doubt(point.in_doubt[key], point.run_id)
        return None

    def _paced_step(
        self, state: HostState, phase: Phase, step: Step, results: list[StepResult]
    ) -> StepResult:
        """Ask the pacer, re-running the phase's previous step as often as it says, then run or skip ``step``."""
        while True:
            previous = results[-1] if results else None
            decision = self.pacer.before(PaceRequest(self.run_id, state.host.name, phase, step, previous))
            if self.cancel.is_set():
                return self._steps.finish(
                    state.host, phase, step, StepStatus.NOT_RUN, "not run: the run was interrupted"
                )
            if decision.pace is Pace.RERUN and previous is not None:
                earlier = next(s for s in self.spec.runbook.steps(phase) if s.id == previous.step_id)
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
    failed = next(r for r in results if r.status.failed)
    return f"{failed.step_id}: {failed.message}"


def _nothing_carried_out(remediate: list[StepResult]) -> str:
    """Why no remediation step ran, in words: nobody was asked, a human declined or skipped, …"""
    reasons = []
    declined = [r for r in remediate if r.status is StepStatus.DECLINED]
    if declined:  # a person's no comes first: it is why, more than a manual step nobody was asked about
        reasons.append(f"{declined[0].step_id} {declined[0].message}")
    not_asked = [r for r in remediate if r.status is StepStatus.NOT_ASKED]
    if not_asked:
        why = not_asked[0].message.removeprefix("not asked: ")
        reasons.append(f"{len(not_asked)} step(s) not asked ({why})")
    return f"not remediated: {'; '.join(reasons)}" if reasons else "no remediation step was carried out"


def _undecided(results: list[StepResult]) -> str:
    """The first step that did not get to look: failed, timed out, not run, or not approved; "" if none.

    A check that was declined, not asked, not run (the run stopped, a program is missing) or
    skipped by the approver proves nothing either way, so it stops detect from calling a host
    healthy and verify from calling it clean. A step skipped by its own ``when`` was not needed
    and does not count.
    """
    for r in results:
        if (
            r.status.failed
            or r.status in (StepStatus.DECLINED, StepStatus.NOT_ASKED, StepStatus.NOT_RUN)
            or (r.status is StepStatus.SKIPPED and r.approval)
        ):
            return f"{r.step_id}: {r.message or r.status.value}"
    return ""


def phases_until(last: Phase) -> tuple[Phase, ...]:
    """The phases a run stopping after ``last`` goes through."""
    if last in (Phase.REMEDIATE, Phase.VERIFY):
        return PHASE_ORDER
    return PHASE_ORDER[: PHASE_ORDER.index(last) + 1]
