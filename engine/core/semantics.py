"""Checks the JSON Schema cannot express, reported like schema errors.

Duplicate step ids; templates and expressions that do not compile or use an
unknown filter; references to unknown or later steps, unknown inputs or unknown
variables; regular expressions that do not compile; keys that mean nothing for
a step's kind; input defaults of the wrong type; templates certain to go past
a render's bounds (:mod:`engine.core.template_lint`); an outsider's text put
unquoted into a command (:mod:`engine.core.outsider_checks`). Works on the raw
data and skips whatever has the wrong shape (the schema reports that), so one
pass finds every problem. What only may go wrong is returned as warnings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from engine.core import confine, expr
from engine.core.alerts import Matcher
from engine.core.errors import Problem
from engine.core.model import InputType, parse_duration
from engine.core.outsider_checks import check_outsiders
from engine.core.yamlsource import Document, pointer, yaml_repr

PHASES = ("detect", "diagnose", "remediate", "verify")
_RUN_ONLY_KEYS = ("parse", "expect", "report", "exit_codes", "on_timeout", "timeout", "become")
_MAX_TIMEOUT = 24 * 3600.0


def check(doc: Document) -> list[Problem]:
    """Append every semantic problem of ``doc.data`` to ``doc.problems``; return the warnings.

    Warnings are what may go wrong depending on the data (loops nested deep, a macro that calls
    itself, an ``allow_unquoted`` nothing needs): worth a look, not a reason to refuse the file."""
    data = doc.data
    warnings: list[Problem] = []
    if not isinstance(data, dict):
        return warnings
    raw_inputs = data.get("inputs")
    inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
    _check_inputs(doc, inputs)
    steps = _steps_in_order(data)
    order: dict[str, int] = {}
    for index, (ptr, step) in enumerate(steps):
        sid = step.get("id")
        if not isinstance(sid, str):
            continue
        if sid in order:
            first_ptr = steps[order[sid]][0]
            line = doc.where(first_ptr)[0]
            doc.add(f"{ptr}/id", f"duplicate step id {sid!r} (first at line {line}); step ids must be unique")
        else:
            order[sid] = index
    triggers = data.get("triggers")
    alerts = bool(triggers)
    for index, (ptr, step) in enumerate(steps):
        _check_step(doc, ptr, step, _Scope(order, frozenset(inputs), index, step.get("id"), alerts, warnings))
        _check_requires(
            doc,
            f"{ptr}/requires",
            step.get("requires"),
            _Scope(order, frozenset(inputs), -1, None, alerts, warnings),
        )
    _check_requires(
        doc, "/requires", data.get("requires"), _Scope(order, frozenset(inputs), -1, None, alerts, warnings)
    )
    for i, trigger in enumerate(triggers if isinstance(triggers, list) else []):
        matchers = trigger.get("matchers") if isinstance(trigger, dict) else None
        for j, text in enumerate(matchers if isinstance(matchers, list) else []):
            if isinstance(text, str):
                try:
                    Matcher.parse(text)
                except ValueError as exc:
                    doc.add(f"/triggers/{i}/matchers/{j}", f"{exc} (Alertmanager's matcher syntax)")
        if isinstance(trigger, dict) and isinstance(trigger.get("target"), str):
            scope = _Scope(order, frozenset(inputs), -1, None, alerts, warnings)
            _check_template(
                doc, f"/triggers/{i}/target", trigger["target"], scope, names=frozenset({"alert", "inputs"})
            )
    return warnings


@dataclass(frozen=True, slots=True)
class _Scope:
    """What a template may refer to: step ids (with their order), inputs, and its own step."""

    order: dict[str, int]
    inputs: frozenset[str]
    position: int
    """Index of the step the template belongs to; -1 outside steps."""
    self_id: Any
    alerts: bool = True
    """The runbook has triggers, so an alert can start it and ``alert`` can be set."""
    warnings: list[Problem] = field(default_factory=list)
    """Where the checks put what is worth a warning (shared by every scope of one document)."""


def _steps_in_order(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for phase in PHASES:
        steps = data.get(phase)
        if not isinstance(steps, list):
            continue
        found.extend((pointer((phase, i)), step) for i, step in enumerate(steps) if isinstance(step, dict))
    return found


def _check_inputs(doc: Document, inputs: dict[str, Any]) -> None:
    for name, spec in inputs.items():
        if not isinstance(spec, dict):
            continue
        try:
            kind = InputType(spec.get("type"))
        except ValueError:
            continue  # the schema reports it
        base = pointer(("inputs", name))
        default_ok = spec.get("default") is not None  # an empty default is the schema's to report
        if default_ok:
            problem = input_value_problem(kind, spec["default"])
            if problem:
                doc.add(f"{base}/default", f"default of input {name!r} {problem}")
                default_ok = False
        choices = spec.get("choices")
        valid_choices = []
        for i, choice in enumerate(choices if isinstance(choices, list) else []):
            problem = input_value_problem(kind, choice)
            if problem:
                doc.add(f"{base}/choices/{i}", f"choice of input {name!r} {problem}")
            else:
                valid_choices.append(choice)
        if spec.get("secret") is True and "default" in spec:
            doc.add(
                f"{base}/default",
                f"secret input {name!r} has a default, which anyone who can read the runbook sees; "
                "remove it and give the value with -e or at the prompt",
            )
        if default_ok and isinstance(choices, list):
            same = parse_duration if kind is InputType.DURATION else _identity
            if same(spec["default"]) not in [same(c) for c in valid_choices]:
                doc.add(
                    f"{base}/default",
                    f"default {yaml_repr(spec['default'])} of input {name!r} is not one of its choices",
                )


def _identity(value: Any) -> Any:
    return value


def input_value_problem(kind: InputType, value: Any) -> str:
    """Why ``value`` is not a valid ``kind``, or ``""`` when it is."""
    match kind:
        case InputType.STRING:
            ok = isinstance(value, str)
        case InputType.INTEGER:
            ok = isinstance(value, int) and not isinstance(value, bool)
        case InputType.NUMBER:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        case InputType.BOOLEAN:
            ok = isinstance(value, bool)
        case InputType.DURATION:
            try:
                parse_duration(value)
                ok = True
            except (ValueError, TypeError, AttributeError):
                ok = False
    if ok:
        return ""
    examples = {
        InputType.STRING: "text",
        InputType.INTEGER: "a whole number",
        InputType.NUMBER: "a number",
        InputType.BOOLEAN: "true or false",
        InputType.DURATION: "a duration like 30m",
    }
    return f"must be {examples[kind]} (type {kind.value}), not {yaml_repr(value)}"


def _check_step(doc: Document, ptr: str, step: dict[str, Any], scope: _Scope) -> None:
    phase = ptr.split("/")[1]
    if isinstance(step.get("run"), str):
        _check_template(doc, f"{ptr}/run", step["run"], scope, names=expr.TEMPLATE_NAMES)
    if isinstance(step.get("manual"), str):
        _check_template(doc, f"{ptr}/manual", step["manual"], scope, names=expr.TEMPLATE_NAMES)
        if step.get("confirm") is False:
            doc.add(
                f"{ptr}/confirm",
                "a manual step always asks the human to confirm it was done; remove confirm: false",
                key=True,
            )
        for key in _RUN_ONLY_KEYS:
            if key in step:
                doc.add(
                    f"{ptr}/{key}",
                    f"{key!r} means nothing for a manual step (it runs no command); remove it",
                    key=True,
                )
    ansible = step.get("ansible")
    if isinstance(ansible, dict) and "become" in step:
        doc.add(
            f"{ptr}/become",
            "an ansible step escalates with Ansible's own become: write it under ansible (ansible: {become: true})",
            key=True,
        )
    if isinstance(ansible, dict):
        _check_data_templates(doc, f"{ptr}/ansible/args", ansible.get("args"), scope)
        playbook = ansible.get("playbook")
        if isinstance(playbook, str):
            _check_playbook(doc, f"{ptr}/ansible/playbook", playbook)
    if isinstance(step.get("when"), str):
        _check_template(doc, f"{ptr}/when", step["when"], scope, names=expr.TEMPLATE_NAMES, expression=True)
    if isinstance(step.get("expect"), str):
        _check_template(doc, f"{ptr}/expect", step["expect"], scope, names=expr.EXPECT_NAMES, expression=True)
    if isinstance(step.get("report"), str):
        _check_template(doc, f"{ptr}/report", step["report"], scope, names=expr.EXPECT_NAMES)
    parse = step.get("parse")
    if isinstance(parse, dict) and isinstance(parse.get("regex"), str):
        try:
            re.compile(parse["regex"])
        except re.error as exc:
            doc.add(f"{ptr}/parse/regex", f"regular expression does not compile: {exc}")
        except (OverflowError, RecursionError, ValueError):
            doc.add(
                f"{ptr}/parse/regex",
                "regular expression does not compile: it is too large or nested too deeply",
            )
    _check_timeout(doc, f"{ptr}/timeout", step.get("timeout"))
    check_outsiders(doc, ptr, step, alerts=scope.alerts, warnings=scope.warnings)
    if phase != "remediate" and "serial" in step:
        doc.add(
            f"{ptr}/serial",
            "serial rolls a remediation out in batches; it means nothing outside remediate; remove it",
            key=True,
        )
    if step.get("automatic") is True and (phase != "remediate" or "manual" in step):
        doc.add(
            f"{ptr}/automatic",
            "automatic lets an alert-started run remediate without a human; it means something only on "
            "a remediate step that runs a command (a manual step always needs a human); remove it",
            key=True,
        )
    if phase == "remediate" and step.get("on_timeout") == "finding":
        doc.add(
            f"{ptr}/on_timeout",
            "on_timeout: finding is for detect, diagnose and verify; a remediation that hangs is an error",
        )


PREFLIGHT_NAMES = frozenset({"target", "vars", "inputs", "alert", "run"})
"""What a ``requires`` template may read: it is rendered before any step ran."""


def _check_requires(doc: Document, ptr: str, programs: Any, scope: _Scope) -> None:
    for i, program in enumerate(programs if isinstance(programs, list) else []):
        if isinstance(program, str) and "{" in program:
            _check_template(doc, f"{ptr}/{i}", program, scope, names=PREFLIGHT_NAMES)


def _check_timeout(doc: Document, ptr: str, timeout: Any) -> None:
    if not isinstance(timeout, str | int) or isinstance(timeout, bool):
        return  # absent, or the wrong type: the schema reports that
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        if "too large" in str(exc):
            doc.add(ptr, "timeout is too large; nothing in a runbook should wait longer than a day")
        return  # otherwise a malformed duration: the schema reports it
    if seconds > _MAX_TIMEOUT:
        doc.add(ptr, "timeout is longer than a day; nothing in a runbook should wait that long")
    elif seconds <= 0 and isinstance(timeout, str):  # an integer 0 is the schema's (minimum 1)
        doc.add(ptr, "timeout is zero: the command would be killed at once; give a positive duration")


def _check_data_templates(doc: Document, ptr: str, value: Any, scope: _Scope) -> None:
    if isinstance(value, str):
        _check_template(doc, ptr, value, scope, names=expr.TEMPLATE_NAMES)
    elif isinstance(value, dict):
        for key, sub in value.items():
            _check_data_templates(doc, pointer((*_split(ptr), key)), sub, scope)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_data_templates(doc, f"{ptr}/{i}", sub, scope)


def _split(ptr: str) -> tuple[str, ...]:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in ptr.split("/")[1:])


def _check_playbook(doc: Document, ptr: str, playbook: str) -> None:
    """A playbook must be a file inside the runbook's folder (symlinks followed): see engine.core.confine."""
    folder = Path(doc.file).parent
    if not folder.is_dir():
        return  # a runbook given as text (no folder): nothing to look at
    try:
        path = confine.inside(folder, playbook)
    except confine.OutsideFolder as exc:
        doc.add(ptr, f"playbook {exc}")
        return
    if not path.is_file():
        doc.add(ptr, f"playbook {playbook!r} not found next to the runbook ({folder / playbook})")


def _check_template(
    doc: Document, ptr: str, source: str, scope: _Scope, *, names: frozenset[str], expression: bool = False
) -> None:
    what = "expression" if expression else "template"
    if not source.strip():
        return  # the schema reports empty values
    result = expr.check(source, expression=expression)
    for error in result.errors:
        doc.add(ptr, f"{what} {error}")
    if result.errors:
        return
    scope.warnings.extend(doc.problem(ptr, f"{what} {warning}") for warning in result.warnings)
    for name in sorted(result.names - names):
        close = get_close_matches(name, sorted(names), n=1)
        if name in expr.EXPECT_NAMES - expr.TEMPLATE_NAMES and names >= expr.TEMPLATE_NAMES:
            hint = "; it is only available in expect and report (this step's own output)"
        elif close:
            hint = f"; did you mean {close[0]!r}?"
        else:
            hint = f"; available: {', '.join(sorted(names))} (host variables are vars.<name>)"
        doc.add(ptr, f"{what} uses unknown variable {name!r}{hint}")
    if "alert" in result.names and "alert" in names and not scope.alerts:
        doc.add(
            ptr,
            f"{what} reads alert, but the runbook has no triggers: no alert ever starts it, so alert is "
            "always none; add a trigger (runbook format §10) or take the value as an input",
        )
    for ref in sorted(result.step_refs):
        if ref not in scope.order:
            close = get_close_matches(ref, list(scope.order), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            doc.add(ptr, f"{what} reads steps.{ref}, but there is no step {ref!r}{hint}")
        elif ref == scope.self_id:
            doc.add(
                ptr,
                f"{what} reads steps.{ref}, its own step, which has no result yet; in expect use out, rc or stdout",
            )
        elif scope.position >= 0 and scope.order[ref] > scope.position:
            doc.add(
                ptr, f"{what} reads steps.{ref}, which runs after this step; a step only sees earlier steps"
            )
    for ref in sorted(result.input_refs - scope.inputs):
        close = get_close_matches(ref, sorted(scope.inputs), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        declared = f" (declared: {', '.join(sorted(scope.inputs))})" if scope.inputs and not close else ""
        doc.add(ptr, f"{what} reads inputs.{ref}, but the runbook declares no input {ref!r}{hint}{declared}")
