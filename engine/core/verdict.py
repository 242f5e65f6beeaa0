"""What a step's result is: rendering a step, and judging a finished command.

Pure functions: the runner gives them the step, the command's outcome (output
already redacted) and the template context, and records what they return.

A secret input in a ``run`` command renders as ``"$CAIRN_SECRET_<NAME>"``
(:mod:`engine.core.template_values`); :func:`render_task` puts the values in the
command's own environment (``Shell.env``), and refuses a command that would still
carry one (through a filter, ``~`` or ``| unquoted``), so a secret is never on a
command line, where every user of the host can read it (``/proc/*/cmdline``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.core import expr
from engine.core.become import Become
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
from engine.core.template_bounds import RenderPolicy
from engine.core.template_values import Secret


def step_policy(step: Step, cancel: threading.Event | None = None) -> RenderPolicy:
    """What the step's renders may do: take no longer than its timeout, stop on ``cancel``, and give
    ``| unquoted`` an outsider's text only when it says why (``allow_unquoted``)."""
    return RenderPolicy(timeout=step.timeout, cancel=cancel, allow_unquoted=bool(step.allow_unquoted))


def render_step(step: Step, context: Mapping[str, Any], redact: Redact | None = None) -> str:
    """What the step will do, rendered: the command, the instructions, or the Ansible action."""
    match step.action:
        case ManualAction(instructions=instructions):
            return expr.render_text(instructions, context, step_id=step.id, field="manual", redact=redact)
        case RunAction(command=command):
            rendered = expr.render_command(command, context, step_id=step.id, redact=redact)
            refuse_secret_values(step, rendered, context)
            return rendered
        case AnsibleAction() as action:
            become = " (become)" if action.become else ""
            if action.playbook:
                return f"ansible-playbook {action.playbook}{become}"
            args = _ansible_args(step, action, context, redact)
            if isinstance(args, Mapping):  # shown as Ansible's key=value form
                args = " ".join(f"{k}={expr.shell_quote(v)}" for k, v in args.items())
            return f"ansible {action.module} {args or ''}".rstrip() + become


def render_task(
    step: Step,
    rendered: str,
    context: Mapping[str, Any],
    *,
    base_dir: Path,
    redact: Redact | None = None,
    become: Become | None = None,
) -> Task:
    """What an executor is asked to do for ``step`` on the host of ``context``.

    ``rendered`` is :func:`render_step`'s text, the command that was shown (and approved): a
    ``run`` step runs exactly that, as ``become`` says (:func:`engine.core.become.become_for`).
    ``base_dir`` is the runbook's folder (playbooks are beside it). A manual step has no task: a
    human does it.
    """
    match step.action:
        case RunAction():
            refuse_secret_values(step, rendered, context)
            return Shell(rendered, secret_env(rendered, context), become)
        case AnsibleAction() as action:
            args = None if action.playbook else _ansible_args(step, action, context, redact)
            return AnsibleTask(action, args, base_dir)
        case ManualAction():
            raise ValueError(f"step {step.id!r} is manual: a human does it, no executor")


SEARCHED_SECRET_LENGTH = 4
"""Secrets at least this long are searched for in a rendered command; a shorter value would be found
in ordinary text (``t`` in ``cat``). The sandbox refuses every way to write a secret out in a command
whatever its length (a filter, ``~`` with a list, a dict written whole); this is the last guard."""


def _secrets(context: Mapping[str, Any]) -> list[Secret]:
    inputs = context.get("inputs") or {}
    return [value for value in inputs.values() if isinstance(value, Secret) and str(value)]


def refuse_secret_values(step: Step, command: str, context: Mapping[str, Any]) -> None:
    """The last guard: a rendered command that still holds a secret's value is refused."""
    for secret in _secrets(context):
        if len(secret) >= SEARCHED_SECRET_LENGTH and str(secret) in command:
            name = secret.input_name
            raise TemplateError(
                f"the value of secret input {name!r} would be on the command line, where every user of "
                f"the host can read it; write {{{{ inputs.{name} }}}} on its own (it becomes "
                f"{secret.reference}, a variable of the command's environment), or join text to it with ~",
                step_id=step.id,
                field="run",
            )


def secret_env(command: str, context: Mapping[str, Any]) -> dict[str, str]:
    """The environment a command needs: each secret it refers to (``$CAIRN_SECRET_<NAME>``), by value."""
    return {
        secret.env_name: str(secret)
        for secret in _secrets(context)
        if f"${secret.env_name}" in command or f"${{{secret.env_name}}}" in command
    }


def _ansible_args(
    step: Step, action: AnsibleAction, context: Mapping[str, Any], redact: Redact | None
) -> Any:
    return expr.render_data(
        action.args,
        context,
        step_id=step.id,
        field="ansible.args",
        redact=redact,
        shell_text=action.module in expr.SHELL_MODULES,  # a command line: no outsider's text unquoted
    )


_SURVIVED = "cairn: could not kill process"
"""How an executor's stderr starts the line naming a step's processes that are still running."""


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
    # The executors name what they could not kill on stderr (executors/process_trees.py): never say
    # "killed" about a process that is still running.
    survived = _SURVIVED in stderr
    ended = "some of its processes could not be killed (see stderr)" if survived else "the command was killed"
    if outcome.cancelled:
        return StepStatus.CANCELLED, f"cancelled; {ended}", None
    if outcome.timed_out:
        limit = format_duration(step.timeout)
        if step.on_timeout is OnTimeout.FINDING:
            how = "some of its processes could not be killed: see stderr" if survived else "killed"
            return StepStatus.FINDING, f"no answer within {limit}: the hang is the symptom ({how})", None
        return StepStatus.TIMEOUT, f"timed out after {limit}; {ended}", None
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
