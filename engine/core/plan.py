"""Plan: the exact commands each target would run, rendered, without running anything.

Steps whose command or condition reads an earlier step's result can only be
rendered at run time; the plan says so and shows the template instead. The
templates see what a run's would (:func:`engine.core.context.template_context`,
the one builder), under each step's own render policy, so a secret shows as the
``"$CAIRN_SECRET_<NAME>"`` a run uses and an outsider's text is refused where a
run would refuse it; every message is redacted. Each step says how it would escalate on its host
(``become``: :func:`engine.core.become.become_for`, from the step, the runbook and the host's inventory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.core import expr
from engine.core.become import Become, become_for
from engine.core.context import run_info, template_context
from engine.core.errors import TemplateError
from engine.core.inputs import Redactor
from engine.core.model import Action, AnsibleAction, Host, ManualAction, Phase, RunAction, Runbook, Step
from engine.core.runner import phases_until
from engine.core.template_bounds import rendering
from engine.core.verdict import render_step, step_policy


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step on one host as it would run."""

    phase: Phase
    step: Step
    text: str
    """Rendered command or instructions; the raw template when ``deferred``."""
    deferred: str = ""
    """Why it can only be rendered at run time (it reads ``steps.<id>``)."""
    condition: str = ""
    """``""`` (always runs), ``skip`` (its ``when`` is false now) or ``run time`` (decided later)."""
    error: str = ""
    """A template that fails to render for this host."""
    become: Become | None = None
    """How it would escalate on this host (``as root via sudo``); ``None``: as the login user."""


@dataclass(frozen=True, slots=True)
class HostPlan:
    """Every planned step on one host."""

    host: Host
    steps: tuple[PlannedStep, ...]


def plan_run(
    runbook: Runbook,
    hosts: list[Host],
    inputs: Mapping[str, Any],
    *,
    last_phase: Phase = Phase.VERIFY,
    alert: Mapping[str, Any] | None = None,
) -> list[HostPlan]:
    """Render every step of the phases a run would go through, for every host."""
    redact = Redactor.for_run(runbook, inputs, hosts)
    plans = []
    for host in hosts:
        steps = [
            _plan_step(
                phase,
                step,
                template_context(
                    runbook, host, inputs, alert=alert, run=run_info("(plan)", phase, dry_run=True), steps={}
                ),
                redact,
                become_for(step, runbook, host.vars),
            )
            for phase in phases_until(last_phase)
            if runbook.remediate or phase in (Phase.DETECT, Phase.DIAGNOSE)  # verify follows remediation
            for step in runbook.steps(phase)
        ]
        plans.append(HostPlan(host, tuple(steps)))
    return plans


def _written(action: Action) -> str:
    """The action as written: what the plan shows when it cannot render it (yet)."""
    match action:
        case RunAction(command=text) | ManualAction(instructions=text):
            return text
        case AnsibleAction(module=module, args=args, playbook=playbook):
            return repr(args) if module else playbook


def _plan_step(
    phase: Phase, step: Step, context: dict[str, Any], redact: Redactor, become: Become | None
) -> PlannedStep:
    with rendering(step_policy(step)):
        return replace(_planned(phase, step, context, redact), become=become)


def _planned(phase: Phase, step: Step, context: dict[str, Any], redact: Redactor) -> PlannedStep:
    source = _written(step.action)
    condition = ""
    if step.when:
        if expr.check(step.when, expression=True).step_refs:
            condition = "run time"
        else:
            try:
                went = expr.evaluate(step.when, context, step_id=step.id, field="when", redact=redact)
                condition = "" if went else "skip"
            except TemplateError as exc:
                return PlannedStep(phase, step, source, error=redact(str(exc)))
    refs = expr.check(source).step_refs
    if refs:
        reads = ", ".join(f"steps.{r}" for r in sorted(refs))
        return PlannedStep(phase, step, source, deferred=f"reads {reads}", condition=condition)
    try:
        text = render_step(step, context, redact)
    except TemplateError as exc:
        return PlannedStep(phase, step, source, condition=condition, error=redact(str(exc)))
    return PlannedStep(phase, step, redact(text), condition=condition)
