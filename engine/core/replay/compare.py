"""What a runbook concluded, against what a case expects or a recorded run concluded.

Both sides are put in one shape — per host the outcome, each step's status and message
(its report line, finding, or why it failed), and the remediation steps that ran — so
:func:`test_diff` can show a failing case as a unified diff of expected against got,
and :func:`changes` can tell, step by step and host by host, what a new version of a
runbook decides differently from a recorded run.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from engine.core.model import Phase, RunReport, StepResult, StepStatus
from engine.core.replay.case import Expected, ExpectedHost, ExpectedStep
from engine.core.replay.executor import Unrecorded

NOT_CARRIED_OUT = frozenset(
    {StepStatus.SKIPPED, StepStatus.DECLINED, StepStatus.NOT_ASKED, StepStatus.NOT_RUN}
)
"""A remediation step with one of these did not run its command."""
DECIDED = frozenset({StepStatus.DECLINED, StepStatus.NOT_ASKED})
"""Their message is a person's note or who was there: not the runbook's decision."""


def key_of(result: StepResult) -> str:
    return f"{result.phase.value}.{result.step_id}"


def ran(result: StepResult) -> bool:
    """Whether a step's command (or manual action) was carried out."""
    return result.status not in NOT_CARRIED_OUT


def status_only(status: StepStatus, *, asked: bool, manual: bool) -> bool:
    """Whether a step's message is a person's (a note, who decided) rather than the runbook's words:
    then only its status is compared."""
    return status in DECIDED or manual or (asked and status is StepStatus.SKIPPED)


def observed(
    report: RunReport, decided: frozenset[tuple[str, str]] = frozenset(), manual: frozenset[str] = frozenset()
) -> Expected:
    """Everything ``report`` concluded, as an expectation; ``decided``: (host, ``phase.step``) the approver
    was asked about, ``manual``: the ``phase.step`` keys of manual steps."""
    hosts = {}
    for host in report.hosts:
        steps = {}
        for result in host.results:
            key = key_of(result)
            only = status_only(result.status, asked=(host.host, key) in decided, manual=key in manual)
            steps[key] = ExpectedStep(result.status, None if only else result.message)
        remediation = tuple(r.step_id for r in host.results if r.phase is Phase.REMEDIATE and ran(r))
        hosts[host.host] = ExpectedHost(host.outcome, host.reason, steps, remediation)
    return Expected(exit=report.exit_code, hosts=hosts)


def as_data(expected: Expected, *, reasons: bool = True) -> dict[str, Any]:
    """The YAML-able form a case's ``expect`` has (a step without a report is its bare status)."""
    data: dict[str, Any] = {}
    if expected.exit is not None:
        data["exit"] = expected.exit
    hosts: dict[str, Any] = {}
    for name, host in expected.hosts.items():
        item: dict[str, Any] = {}
        if host.outcome is not None:
            item["outcome"] = host.outcome.value
        if reasons and host.reason is not None:
            item["reason"] = host.reason
        if host.steps:
            item["steps"] = {
                key: step.status.value
                if step.report is None
                else {"status": step.status.value, "report": step.report}
                for key, step in host.steps.items()
            }
        if host.remediation is not None:
            item["remediation"] = list(host.remediation)
        hosts[name] = item
    if hosts:
        data["hosts"] = hosts
    return data


def _like(got: Expected, expected: Expected) -> Expected:
    """``got`` cut to what ``expected`` states, so the diff shows only what the case asks about."""
    hosts = {}
    for name, want in expected.hosts.items():
        have = got.hosts.get(name)
        if have is None:
            continue
        steps = {}
        for key, step in want.steps.items():
            found = have.steps.get(key)
            if found is None:
                continue
            steps[key] = ExpectedStep(found.status, None if step.report is None else (found.report or ""))
        hosts[name] = ExpectedHost(
            outcome=have.outcome if want.outcome is not None else None,
            reason=have.reason if want.reason is not None else None,
            steps=steps,
            remediation=have.remediation if want.remediation is not None else None,
        )
    return Expected(exit=got.exit if expected.exit is not None else None, hosts=hosts)


def test_diff(expected: Expected, got: Expected) -> list[str]:
    """A unified diff of what the case expects against what the runbook concluded; [] when they agree."""
    import yaml  # noqa: PLC0415

    def text(value: Expected) -> list[str]:
        dumped = yaml.safe_dump(as_data(value), sort_keys=False, allow_unicode=True, width=100)
        return dumped.splitlines(keepends=False)

    want, have = text(expected), text(_like(got, expected))
    if want == have:
        return []
    return list(difflib.unified_diff(want, have, "expected", "got", lineterm="", n=2))


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a recorded run and a replay of it."""

    host: str
    what: str
    """``outcome``, ``step``, ``remediation`` or ``unrecorded``."""
    key: str
    """``phase.step`` (empty for the outcome)."""
    before: str
    after: str
    text: str
    """The line a person reads."""

    def as_dict(self) -> dict[str, str]:
        return {
            "host": self.host,
            "what": self.what,
            "step": self.key,
            "before": self.before,
            "after": self.after,
            "text": self.text,
        }


def _shown(step: ExpectedStep | None) -> str:
    if step is None:
        return "not reached"
    return step.status.value + (f": {step.report}" if step.report else "")


def changes(recorded: Expected, replayed: Expected, unrecorded: tuple[Unrecorded, ...]) -> list[Change]:
    """What the replay decided differently from the recording, host by host, in step order."""
    out: list[Change] = []
    missing = {(u.host, u.key) for u in unrecorded}
    for name, before in recorded.hosts.items():
        after = replayed.hosts.get(name, ExpectedHost())
        if before.outcome != after.outcome:
            was = before.outcome.value if before.outcome else "none"
            now = after.outcome.value if after.outcome else "none"
            text = f"outcome: {was} → {now} ({after.reason})"
            if any(h == name for h, _ in missing):
                text = f"outcome: {was} → {now}, resting on steps never recorded (below): not a conclusion"
            out.append(Change(name, "outcome", "", was, now, text))
        was_run, now_run = list(before.remediation or ()), list(after.remediation or ())
        told = {f"remediate.{s}" for s in set(was_run) ^ set(now_run)} | {k for h, k in missing if h == name}
        for key in list(before.steps) + [k for k in after.steps if k not in before.steps]:
            if key not in told:
                out.extend(_step_change(name, key, before.steps.get(key), after.steps.get(key)))
        for step_id in now_run:
            if step_id not in was_run:
                text = f"remediate.{step_id} would now run (it did not in the recorded run)"
                out.append(Change(name, "remediation", f"remediate.{step_id}", "not run", "runs", text))
        for step_id in was_run:
            if step_id not in now_run:
                text = f"remediate.{step_id} would no longer run (it ran in the recorded run)"
                out.append(Change(name, "remediation", f"remediate.{step_id}", "ran", "not run", text))
    for item in unrecorded:
        text = f"{item.key}: the new version runs it and the recording has no output for it ({item.why})"
        out.append(Change(item.host, "unrecorded", item.key, "", f"never recorded: {item.why}", text))
    return out


def _step_change(host: str, key: str, was: ExpectedStep | None, now: ExpectedStep | None) -> list[Change]:
    if was == now:
        return []
    if was is not None and now is not None:
        if was.status == now.status and (was.report is None or now.report is None):
            return []  # a decided step: its message is a person's, not the runbook's
        return [
            Change(host, "step", key, _shown(was), _shown(now), f"{key}: {_shown(was)}  →  {_shown(now)}")
        ]
    if now is None:
        return [Change(host, "unreached", key, _shown(was), "not reached", f"{key} is no longer reached")]
    return [Change(host, "reached", key, "not reached", _shown(now), f"{key} is now reached: {_shown(now)}")]
