"""``cairn diff RUN_A RUN_B``: what differs between two journaled runs, as data and as text.

First the runbook text each run used (the journal keeps it as run), as a unified diff; then the
decisions: each host's outcome (and reason), each (host, phase, step)'s status and message, each
remediation step's command (what it ran, or would have run), the steps only one run has, and the
approvals. Inputs that differ are shown too, as context (they
explain a changed message) but are not decisions. A step that ran more than once in a run (a
re-run while stepping) counts with its last result. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.render import STATUS_MARK
from engine.core.visible import visible

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord, StepRecord

StepKey = tuple[str, str, str]
"""(host, phase, step id)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the two runs decided differently: ``a`` and ``b`` as each run says it (``""``:
    that run has none)."""

    kind: str
    """``outcome``, ``step`` (its status and message), ``command`` (a remediation step's command as
    rendered), ``only in A``, ``only in B``, ``approval`` or ``input``."""
    subject: str
    """The host, ``host phase/step``, or the input's name."""
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class RunDiff:
    """Two runs compared: the runbook diff, then every change."""

    run_a: str
    run_b: str
    sha_a: str
    sha_b: str
    runbook_diff: tuple[str, ...]
    """The unified diff's lines (empty: the same text)."""
    changes: tuple[Change, ...]

    @property
    def same_text(self) -> bool:
        return not self.runbook_diff

    @property
    def decisions(self) -> tuple[Change, ...]:
        """The changes that are decisions (inputs are context)."""
        return tuple(c for c in self.changes if c.kind != "input")

    @property
    def same(self) -> bool:
        """The same runbook text and the same decisions (``cairn diff`` exits 0)."""
        return self.same_text and not self.decisions


def diff_runs(a: RunRecord, b: RunRecord) -> RunDiff:
    """What differs between run ``a`` and run ``b``."""
    return RunDiff(
        run_a=a.id,
        run_b=b.id,
        sha_a=a.runbook_sha256,
        sha_b=b.runbook_sha256,
        runbook_diff=runbook_diff(a, b),
        changes=(
            *_input_changes(a, b),
            *_outcome_changes(a, b),
            *_step_changes(a, b),
            *_approval_changes(a, b),
        ),
    )


def runbook_diff(a: RunRecord, b: RunRecord) -> tuple[str, ...]:
    """The unified diff of the runbook texts, labelled ``RUN/runbook.yaml (sha256 abcd1234…)``."""
    if a.runbook_text == b.runbook_text:
        return ()
    return tuple(
        visible(line)
        for line in difflib.unified_diff(
            a.runbook_text.splitlines(),
            b.runbook_text.splitlines(),
            fromfile=f"{a.id}/runbook.yaml (sha256 {a.runbook_sha256[:12]}…)",
            tofile=f"{b.id}/runbook.yaml (sha256 {b.runbook_sha256[:12]}…)",
            lineterm="",
        )
    )


def _input_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    return [
        Change("input", visible(name), _value(a.inputs, name), _value(b.inputs, name))
        for name in dict.fromkeys([*a.inputs, *b.inputs])
        if a.inputs.get(name, _MISSING) != b.inputs.get(name, _MISSING)
    ]


_MISSING = object()


def _value(inputs: dict[str, Any], name: str) -> str:
    if name not in inputs:
        return ""
    value = inputs[name]
    return visible(value if isinstance(value, str) else json.dumps(value, default=str))


def _outcome_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    changes = []
    for host in dict.fromkeys([*a.hosts, *a.outcomes, *b.hosts, *b.outcomes]):
        said_a, said_b = _outcome(a, host), _outcome(b, host)
        if said_a != said_b:
            changes.append(Change("outcome", visible(host), said_a, said_b))
    return changes


def _outcome(run: RunRecord, host: str) -> str:
    if host not in run.outcomes:
        return "" if host not in run.hosts else "no outcome recorded"
    outcome = run.outcomes[host]
    reason = outcome.get("reason", "")
    return visible(f"{outcome.get('outcome', '')}: {reason}" if reason else outcome.get("outcome", ""))


def _last_results(run: RunRecord) -> dict[StepKey, StepRecord]:
    found: dict[StepKey, StepRecord] = {}
    for step in sorted(run.steps, key=lambda s: s.seq):
        found[(step.host, step.phase, step.step_id)] = step
    return found


def _said(step: StepRecord) -> str:
    status = STATUS_MARK.get(step.status, step.status)
    return visible(f"{status}: {step.message}" if step.message else status)


def _step_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    steps_a, steps_b = _last_results(a), _last_results(b)
    changes = []
    for key in dict.fromkeys([*steps_a, *steps_b]):
        subject = f"{visible(key[0])} {key[1]}/{key[2]}"
        step_a, step_b = steps_a.get(key), steps_b.get(key)
        if step_a is None and step_b is not None:
            changes.append(Change("only in B", subject, "", _said(step_b)))
        elif step_b is None and step_a is not None:
            changes.append(Change("only in A", subject, _said(step_a), ""))
        elif step_a is not None and step_b is not None:
            if _said(step_a) != _said(step_b):
                changes.append(Change("step", subject, _said(step_a), _said(step_b)))
            if key[1] == "remediate" and step_a.command != step_b.command:
                # what a remediation did, or would have done: the change a reviewer must see
                changes.append(Change("command", subject, visible(step_a.command), visible(step_b.command)))
    return changes


def _approval_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    def decided(run: RunRecord) -> dict[StepKey, str]:
        return {
            (x.host, x.phase, x.step_id): visible(
                f"{'approved' if x.approved else 'declined'} by {x.decided_by}"
            )
            for x in sorted(run.approvals, key=lambda x: x.at)
        }

    said_a, said_b = decided(a), decided(b)
    return [
        Change("approval", f"{visible(key[0])} {key[1]}/{key[2]}", said_a.get(key, ""), said_b.get(key, ""))
        for key in dict.fromkeys([*said_a, *said_b])
        if said_a.get(key, "") != said_b.get(key, "")
    ]


def diff_text(diff: RunDiff) -> str:
    """``cairn diff`` as text: the runbook diff (or "same runbook text"), then the changes."""
    out = [f"runbook: A = {diff.run_a}, B = {diff.run_b}"]
    if diff.same_text:
        out.append(f"same runbook text (sha256 {diff.sha_a[:12]}…)")
    else:
        out += list(diff.runbook_diff)
    inputs = [c for c in diff.changes if c.kind == "input"]
    if inputs:
        out += ["", "inputs that differ:"]
        out += [f"  {c.subject}: A {c.a or '(not set)'} · B {c.b or '(not set)'}" for c in inputs]
    decisions = diff.decisions
    out.append("")
    if not decisions:
        out.append("same decisions: every host's outcome, every step's result and every approval")
    else:
        out.append(f"{len(decisions)} decision{'s differ' if len(decisions) != 1 else ' differs'}:")
        for change in decisions:
            out += _change_lines(change)
    return "\n".join(out)


def _change_lines(change: Change) -> list[str]:
    head = f"  {change.kind} {change.subject}"
    if change.kind == "only in A":
        return [f"{head}: {change.a}"]
    if change.kind == "only in B":
        return [f"{head}: {change.b}"]
    return [head, f"    A: {change.a or '(none)'}", f"    B: {change.b or '(none)'}"]
