"""A journaled run turned into a test case: what each host answered, and what the run concluded.

:func:`case_from_run` reads a finished run — its steps' commands, outputs (complete,
from the artifacts folder, when the journal kept only the head and tail), exit codes,
hangs, the executor errors, hosts that could not be reached, programs preflight found
missing, each decision on a step — and writes them as a case whose expectation is what
the run concluded. Everything comes from the journal, which holds it redacted:
secret inputs stay ``***``. Inputs equal to the runbook's defaults are left out, so a
case follows the runbook's defaults (a threshold edited in the runbook changes the
result, as it should).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import CairnError
from engine.core.journal_read import RunRecord, StepRecord
from engine.core.loader import check_text
from engine.core.model import HostOutcome, Phase, Runbook, RunStatus, StepKind, StepStatus, host_folder
from engine.core.replay.case import Expected, ExpectedHost, ExpectedStep
from engine.core.replay.compare import NOT_CARRIED_OUT, as_data, status_only

_OMITTED = "characters omitted here; the artifacts folder has all of it"
_MISSING = re.compile(r"(\S+) is not installed on ")
_VARS = re.compile(r"\bvars\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['\"]([A-Za-z_]\w*)['\"]\s*\])")
_SECRET_NAME = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
"""Inventory variables never written into a case, whatever a runbook reads."""

VarsOf = Callable[[str], Mapping[str, Any]]
"""A host's inventory variables, by host name (``{}`` when they cannot be read)."""


def recorded_runbook(record: RunRecord) -> Runbook:
    """The runbook as the run used it (its journaled text)."""
    loaded = check_text(record.runbook_text, record.runbook_path or "<journal>")
    if loaded.runbook is None:
        raise CairnError(
            f"the runbook text journaled with run {record.id} no longer loads: {loaded.problems[0]}"
        )
    return loaded.runbook


def case_from_run(
    record: RunRecord, *, name: str | None = None, vars_of: VarsOf | None = None
) -> dict[str, Any]:
    """The case (as data, ready for YAML) recorded from ``record``; :class:`CairnError` when it cannot be."""
    if record.status is not RunStatus.FINISHED:
        raise CairnError(
            f"run {record.id} is {record.status.value}: only a finished run has a conclusion to record"
            + ("; resume it first (cairn resume)" if record.status is RunStatus.INTERRUPTED else "")
        )
    if record.dry_run:
        raise CairnError(f"run {record.id} was a dry run: its remediation never ran; record a real run")
    runbook = recorded_runbook(record)
    kinds = {(phase, s.id): s.kind for phase in Phase for s in runbook.steps(phase)}
    wanted_vars = {a or b for a, b in _VARS.findall(record.runbook_text)} - {""}
    hosts: dict[str, Any] = {}
    expected: dict[str, ExpectedHost] = {}
    for host in record.hosts:
        steps = [s for s in record.steps if s.host == host]
        outcome = record.outcomes.get(host, {})
        hosts[host] = _host(record, host, steps, outcome, kinds, wanted_vars, vars_of)
        expected[host] = _expected(steps, outcome, kinds)
    data: dict[str, Any] = {
        "case": name or _default_name(record),
        "runbook": record.runbook_id,
        "recorded_from": f"run {record.id} (started by {record.started_by})",
        "run_id": record.id,
    }
    if record.last_phase != Phase.VERIFY.value:
        data["phase"] = record.last_phase
    inputs = _given_inputs(runbook, record.inputs)
    if inputs:
        data["inputs"] = inputs
    if record.trigger.get("alert") is not None:
        data["alert"] = record.trigger["alert"]
    data["hosts"] = hosts
    data["expect"] = as_data(Expected(exit=record.exit_code, hosts=expected), reasons=False)
    return data


def _default_name(record: RunRecord) -> str:
    outcomes = sorted({o.get("outcome", "?") for o in record.outcomes.values()})
    return f"{record.runbook_id}: {', '.join(outcomes) or 'no hosts'} (recorded)"


def _given_inputs(runbook: Runbook, values: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs the run was given: those that differ from the runbook's defaults, and secrets (``***``)."""
    given = {}
    for spec in runbook.inputs:
        if spec.name not in values:
            continue
        value = values[spec.name]
        if spec.secret:
            given[spec.name] = "***"
        elif not spec.has_default or json.loads(json.dumps(spec.default)) != value:
            given[spec.name] = value
    return given


def _host(
    record: RunRecord,
    host: str,
    steps: list[StepRecord],
    outcome: Mapping[str, str],
    kinds: Mapping[tuple[Phase, str], StepKind],
    wanted_vars: set[str],
    vars_of: VarsOf | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    known = dict(vars_of(host)) if vars_of is not None else {}
    chosen = {k: known[k] for k in sorted(wanted_vars) if k in known and not _SECRET_NAME.search(k)}
    if chosen:
        item["vars"] = chosen
    reason = outcome.get("reason", "")
    if not steps and outcome.get("outcome") == HostOutcome.FAILED.value and reason:
        item["unreachable"] = reason.removeprefix(f"{host}: ")
    texts = [reason] + [s.message for s in steps]
    missing = sorted({m for text in texts for m in _MISSING.findall(text)})
    if missing:
        item["missing"] = missing
    decisions = {}
    answers: dict[str, Any] = {}
    for step in steps:
        key = f"{step.phase}.{step.step_id}"
        status = StepStatus(step.status) if step.status != "running" else StepStatus.INTERRUPTED
        decision = _decision(step, status)
        if decision is not None:
            decisions[key] = decision
        if kinds.get((Phase(step.phase), step.step_id)) is StepKind.MANUAL or status in NOT_CARRIED_OUT:
            continue
        if not step.command:  # a template that could not be rendered: nothing ran, nothing to record
            continue
        answers[key] = _answer(record, step, status)
        if kinds.get((Phase(step.phase), step.step_id)) is StepKind.ANSIBLE and isinstance(step.out, dict):
            answers[key]["data"] = step.out  # the module's result: what the step's `out` is
    if decisions:
        item["decisions"] = decisions
    if answers:
        item["steps"] = answers
    return item


def _decision(step: StepRecord, status: StepStatus) -> str | None:
    if status is StepStatus.DECLINED:
        return "decline"
    if status is StepStatus.NOT_ASKED:
        return "not-asked"
    if not step.approval:
        return None
    return "skip" if status is StepStatus.SKIPPED else "approve"


def _answer(record: RunRecord, step: StepRecord, status: StepStatus) -> dict[str, Any]:
    if status in (StepStatus.CANCELLED, StepStatus.INTERRUPTED):
        raise CairnError(
            f"step {step.phase}.{step.step_id} on {step.host} was {status.value}: nothing to record"
        )
    answer: dict[str, Any] = {"command": step.command}
    if step.rc is None and status is StepStatus.ERROR:
        answer["error"] = step.message.removeprefix(f"{step.host}: ")
        return answer
    stdout = _full(record, step, "stdout", step.stdout)
    stderr = _full(record, step, "stderr", step.stderr)
    if stdout:
        answer["stdout"] = stdout
    if stderr:
        answer["stderr"] = stderr
    if step.rc is None:
        answer["hang"] = True
    elif step.rc != 0:
        answer["rc"] = step.rc
    if step.duration:
        answer["duration"] = round(step.duration, 3)
    return answer


def _full(record: RunRecord, step: StepRecord, stream: str, kept: str) -> str:
    """The step's whole output: the journal's copy, or the artifacts file when the journal cut it."""
    if _OMITTED not in kept or not record.artifacts:
        return kept
    path = Path(record.artifacts) / host_folder(step.host) / f"{step.phase}.{step.step_id}.{stream}"
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return kept


def _expected(
    steps: list[StepRecord], outcome: Mapping[str, str], kinds: Mapping[tuple[Phase, str], StepKind]
) -> ExpectedHost:
    expected = {}
    remediation = []
    for step in steps:
        status = StepStatus(step.status) if step.status != "running" else StepStatus.INTERRUPTED
        phase = Phase(step.phase)
        manual = kinds.get((phase, step.step_id)) is StepKind.MANUAL
        only = status_only(status, asked=bool(step.approval), manual=manual)
        expected[f"{step.phase}.{step.step_id}"] = ExpectedStep(status, None if only else step.message)
        if phase is Phase.REMEDIATE and status not in NOT_CARRIED_OUT:
            remediation.append(step.step_id)
    found = outcome.get("outcome")
    return ExpectedHost(
        outcome=HostOutcome(found) if found else None, steps=expected, remediation=tuple(remediation)
    )


def case_yaml(data: Mapping[str, Any], *, comment: str = "", modeline: str = "") -> str:
    """A case as YAML people can read: multi-line output as block text, keys in the case's order;
    ``modeline`` (the editor's schema line) and ``comment`` first."""
    import yaml  # noqa: PLC0415

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value and not value.startswith((" ", "\t")) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text)
    body = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    return (f"{modeline}\n" if modeline else "") + head + body
