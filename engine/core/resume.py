"""Resuming an interrupted run: the same runbook text, hosts and inputs, without repeating finished steps.

A run stopped by Ctrl-C, SIGTERM, a cancel in the TUI or a killed process is
``interrupted`` in the journal. :func:`resume_plan` rebuilds what it ran on from
the journal alone — the runbook *as it was run* (its journaled text, even if the
file changed since), the hosts (re-resolved from the recorded inventory and
limit), the inputs (secrets are never journaled: they must be given again) — and
a :class:`~engine.core.model.ResumePoint` with every step that finished. The new run
reuses those results (``from run …``) and runs only what is left, so a finished
remediation is never repeated.

A remediation step the interrupted run started and did not finish (its process died
under it, or its command was killed) is *in doubt*: it may have changed the host
half-way. The resume point names those steps apart; an unattended run (``cairn
serve`` taking over a dead server's run) never starts one again, a human resuming
is asked for it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.core.defaults import DEFAULT_FORKS
from engine.core.errors import CairnError
from engine.core.executors import ExecutionOptions
from engine.core.journal import RunRecord, StepRecord
from engine.core.loader import check_text
from engine.core.model import (
    InputSpec,
    Phase,
    ResumePoint,
    RunStatus,
    StepResult,
    StepStatus,
)
from engine.core.spec import RunSpec, Trigger, TriggerKind


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """A resumed run, ready to start, and how much of it is taken over."""

    spec: RunSpec
    reused: int
    """How many step results are taken over from the interrupted run."""


def resume_plan(
    record: RunRecord,
    given: Mapping[str, Any],
    *,
    ask: Callable[[InputSpec], str | None] | None = None,
    options: ExecutionOptions | None = None,
    forks: int = DEFAULT_FORKS,
) -> ResumePlan:
    """What resuming ``record`` runs; a :class:`CairnError` naming the fix when it cannot be resumed.

    ``options``: how the front end reaches hosts (its inventory is replaced by the recorded one)."""
    from engine.core.inputs import resolve_inputs  # noqa: PLC0415
    from engine.core.inventory import resolve_targets  # noqa: PLC0415

    if record.status is not RunStatus.INTERRUPTED:
        raise CairnError(f"run {record.id} is {record.status.value}: only an interrupted run can be resumed")
    if record.dry_run:
        raise CairnError(f"run {record.id} was a dry run: start a new one instead")
    loaded = check_text(record.runbook_text, record.runbook_path or "<journal>")
    if loaded.runbook is None:
        raise CairnError(f"the runbook text journaled with run {record.id} no longer loads: start a new run")
    runbook = loaded.runbook
    if "inventory" not in record.trigger and record.hosts != ("localhost",):
        raise CairnError(
            f"run {record.id} did not journal where its hosts came from (it predates resume): start a new run"
        )
    inventory = tuple(record.trigger.get("inventory") or ())
    limit = record.trigger.get("limit")
    found = {h.name: h for h in resolve_targets(list(inventory), runbook.targets, limit)}
    missing = [name for name in record.hosts if name not in found]
    if missing:
        raise CairnError(
            f"run {record.id} ran on {', '.join(missing)}, which the inventory no longer has; start a new run"
        )
    secret = {spec.name for spec in runbook.inputs if spec.secret}
    kept = {name: value for name, value in record.inputs.items() if name not in secret}
    inputs = resolve_inputs(runbook, kept | dict(given), ask=ask)
    point = resume_point(record)
    spec = RunSpec(
        runbook=runbook,
        hosts=tuple(found[name] for name in record.hosts),
        inputs=inputs,
        trigger=Trigger(kind=TriggerKind.RESUME, limit=limit, resumes=record.id),
        options=replace(options or ExecutionOptions(), inventory_sources=inventory),
        last_phase=Phase(record.last_phase),
        forks=forks,
        resume=point,
    )
    return ResumePlan(spec, len(point.results))


def resume_point(record: RunRecord) -> ResumePoint:
    """Every step ``record`` finished, to reuse in the run that resumes it, and the remediation
    steps it started and did not finish (in doubt)."""
    finished: dict[tuple[str, Phase, str], StepResult] = {}
    in_doubt: dict[tuple[str, Phase, str], StepResult] = {}
    for step in record.steps:
        result = _result(step)
        key = (result.host, result.phase, result.step_id)
        if result.status.finished:
            finished[key] = result
        elif _in_doubt(result):
            in_doubt[key] = result
    return ResumePoint(record.id, finished, in_doubt)


def _in_doubt(result: StepResult) -> bool:
    """Whether an unfinished step had started changing its host: a remediation step that was running
    when its process died (``interrupted``) or whose command was killed (``cancelled``). A step
    ``not run`` never started; detect, diagnose and verify steps only look, and run again."""
    return result.phase is Phase.REMEDIATE and result.status in (StepStatus.INTERRUPTED, StepStatus.CANCELLED)


def _status(step: StepRecord) -> StepStatus:
    """The step's state, from its recorded status (never its message): steps not run, cancelled or
    interrupted are not finished (the journal marks a step ``interrupted`` when the process that ran
    it died, ``kill -9`` or power loss, while it ran; one still ``running`` is read the same way)."""
    return StepStatus.INTERRUPTED if step.status == "running" else StepStatus(step.status)


def _result(step: StepRecord) -> StepResult:
    return StepResult(
        host=step.host,
        phase=Phase(step.phase),
        step_id=step.step_id,
        status=_status(step),
        message=step.message,
        command=step.command,
        rc=step.rc,
        stdout=step.stdout,
        stderr=step.stderr,
        out=step.out,
        started_at=step.started_at or 0.0,
        duration=step.duration or 0.0,
        approval=step.approval,
    )
