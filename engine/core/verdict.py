"""What a step's result is: rendering a step, and judging a finished command.

Pure functions: the runner gives them the step, the command's outcome (output
already redacted) and the template context, and records what they return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.core import expr
from engine.core.errors import TemplateError
from engine.core.executors import AnsibleTask, Redact, Shell, Task
from engine.core.model import (
    AnsibleAction,
    CommandResult,
    ManualAction,
    OnTimeout,
    ParseKind,
    Phase,
    RunAction,
    Step,
    StepStatus,
    format_duration,
)
from engine.core.parsing import ParseError, parse_output


def render_step(step: Step, context: Mapping[str, Any], redact: Redact | None = None) -> str:
    """What the step will do, rendered: the command, the instructions, or the Ansible action."""
    match step.action:
        case ManualAction(instructions=instructions):
            return expr.render_text(instructions, context, step_id=step.id, field="manual", redact=redact)
        case RunAction(command=command):
            return expr.render_command(command, context, step_id=step.id, redact=redact)
        case AnsibleAction() as action:
            become = " (become)" if action.become else ""
            if action.playbook:
                return f"ansible-playbook {action.playbook}{become}"
            args = _ansible_args(step, action, context, redact)
            if isinstance(args, Mapping):  # shown as Ansible's key=value form
                args = " ".join(f"{k}={expr.shell_quote(v)}" for k, v in args.items())
            return f"ansible {action.module} {args or ''}".rstrip() + become


def render_task(
    step: Step, rendered: str, context: Mapping[str, Any], *, base_dir: Path, redact: Redact | None = None
) -> Task:
    """What an executor is asked to do for ``step`` on the host of ``context``.

    ``rendered`` is :func:`render_step`'s text, the command that was shown (and approved): a
    ``run`` step runs exactly that. ``base_dir`` is the runbook's folder (playbooks are beside
    it). A manual step has no task: a human does it.
    """
    match step.action:
        case RunAction():
            return Shell(rendered)
        case AnsibleAction() as action:
            args = None if action.playbook else _ansible_args(step, action, context, redact)
            return AnsibleTask(action, args, base_dir)
        case ManualAction():
            raise ValueError(f"step {step.id!r} is manual: a human does it, no executor")


def _ansible_args(
    step: Step, action: AnsibleAction, context: Mapping[str, Any], redact: Redact | None
) -> Any:
    return expr.render_data(action.args, context, step_id=step.id, field="ansible.args", redact=redact)


def judge(
    step: Step,
    phase: Phase,
    outcome: CommandResult,
    stdout: str,
    stderr: str,
    context: Mapping[str, Any],
    redact: Redact,
) -> tuple[StepStatus, str, Any]:
    """Status, message and parsed ``out`` of a finished command (stdout/stderr already redacted).

    In order: cancelled → cancelled; timed out → finding or timeout (``on_timeout``); an exit
    code outside ``exit_codes`` → error; ``parse`` fails → error; ``expect`` false →
    finding (error in remediate); else ok. ``report`` gives the message.
    """
    if outcome.cancelled:
        return StepStatus.CANCELLED, "cancelled; the command was killed", None
    if outcome.timed_out:
        limit = format_duration(step.timeout)
        if step.on_timeout is OnTimeout.FINDING:
            return StepStatus.FINDING, f"no answer within {limit}: the hang is the symptom (killed)", None
        return StepStatus.TIMEOUT, f"timed out after {limit}; the command was killed", None
    if outcome.rc not in step.exit_codes:
        detail = _last_line(stderr) or _last_line(stdout)
        message = f"exit code {outcome.rc}" + (f": {detail}" if detail else "")
        if outcome.rc == 127:  # bash: command not found
            message += " (a program this step runs is not installed there: name it in `requires` and preflight says so before anything runs)"
        return StepStatus.ERROR, message, None
    try:
        out = parse_output(step.parse, stdout)
    except ParseError as exc:
        return StepStatus.ERROR, f"parse {step.parse.kind.value}: {exc}", None
    if outcome.data is not None and step.parse.kind is ParseKind.TEXT:
        # An Ansible module's result is already structured: `out` is that dict (redacted).
        out = json.loads(redact(json.dumps(outcome.data, default=str)))
    ctx = {**context, "out": out, "rc": outcome.rc, "stdout": stdout, "stderr": stderr}
    try:
        met = (
            bool(expr.evaluate(step.expect, ctx, step_id=step.id, field="expect", redact=redact))
            if step.expect
            else True
        )
    except TemplateError as exc:
        return StepStatus.ERROR, str(exc), out
    report = _report(step, ctx, redact)
    if met:
        return StepStatus.OK, report, out
    unmet = f"expect is false: {expr.unwrap(step.expect)}"
    if phase is Phase.REMEDIATE:
        return StepStatus.ERROR, report or f"the action did not have its effect ({unmet})", out
    return StepStatus.FINDING, report or unmet, out


def _report(step: Step, context: Mapping[str, Any], redact: Redact) -> str:
    if not step.report:
        return ""
    try:
        text = expr.render_text(step.report, context, step_id=step.id, field="report", redact=redact)
        return redact(text.strip())
    except TemplateError as exc:
        return f"(report could not be rendered: {exc})"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
