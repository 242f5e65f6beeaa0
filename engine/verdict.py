"""What a step's result is: rendering a step, and judging a finished command.

Pure functions: the runner gives them the step, the command's outcome (output
already redacted) and the template context, and records what they return.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from engine import expr
from engine.errors import TemplateError
from engine.model import (
    CommandResult,
    OnTimeout,
    ParseKind,
    Phase,
    Step,
    StepKind,
    StepStatus,
    format_duration,
)
from engine.parsing import ParseError, parse_output


def render_step(step: Step, context: Mapping[str, Any], redact: Callable[[str], str] | None = None) -> str:
    """What the step will do, rendered: the command, the instructions, or the Ansible action."""
    if step.kind is StepKind.MANUAL:
        return expr.render_text(step.instructions, context, step_id=step.id, field="manual", redact=redact)
    if step.kind is StepKind.RUN:
        return expr.render_command(step.run, context, step_id=step.id, redact=redact)
    action = step.ansible
    assert action is not None  # the loader builds ansible steps with their action
    become = " (become)" if action.become else ""
    if action.playbook:
        return f"ansible-playbook {action.playbook}{become}"
    args = expr.render_data(action.args, context, step_id=step.id, field="ansible.args", redact=redact)
    if isinstance(args, Mapping):  # shown as Ansible's key=value form
        args = " ".join(f"{k}={expr.shell_quote(v)}" for k, v in args.items())
    return f"ansible {action.module} {args or ''}".rstrip() + become


def judge(
    step: Step,
    phase: Phase,
    outcome: CommandResult,
    stdout: str,
    stderr: str,
    context: Mapping[str, Any],
    redact: Callable[[str], str],
) -> tuple[StepStatus, str, Any]:
    """Status, message and parsed ``out`` of a finished command (stdout/stderr already redacted).

    In order: cancelled → error; timed out → finding or timeout (``on_timeout``); an exit
    code outside ``exit_codes`` → error; ``parse`` fails → error; ``expect`` false →
    finding (error in remediate); else ok. ``report`` gives the message.
    """
    if outcome.cancelled:
        return StepStatus.ERROR, "cancelled; the command was killed", None
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


def _report(step: Step, context: Mapping[str, Any], redact: Callable[[str], str]) -> str:
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
