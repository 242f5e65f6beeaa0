"""Plans and run reports as text and data: what a run would do, and how each host's run ended.

Pure functions returning strings or JSON-ready data; ``cairn plan``, ``cairn run`` and the TUI
use them. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.core.model import (
    Phase,
    Runbook,
    RunReport,
    StepKind,
    StepResult,
    format_duration,
)
from engine.core.render import STATUS_MARK, STEP_ID_WIDTH, indent, table

if TYPE_CHECKING:
    from engine.core.become import Become
    from engine.core.plan import HostPlan
    from engine.core.preflight import Preflight


# --------------------------------------------------------------------------- plan


def plan_text(
    runbook: Runbook, plans: list[HostPlan], preflights: Mapping[str, Preflight] | None = None
) -> str:
    """``cairn plan`` as text (with each host's preflight when it was checked)."""
    noun = "host" if len(plans) == 1 else "hosts"
    probe = " but the preflight probe" if preflights else ""
    out = [f"Plan for {runbook.id} on {len(plans)} {noun} — nothing is run{probe}"]
    for host_plan in plans:
        out.append(f"\n{host_plan.host.name} (connection: {host_plan.host.connection})")
        preflight = (preflights or {}).get(host_plan.host.name)
        if preflight is not None:
            mark = "" if preflight.ok else "PROBLEM: "
            out.append(f"  preflight: {mark}{preflight.summary(runbook)}")
        phase: Phase | None = None
        for planned in host_plan.steps:
            if planned.phase is not phase:
                phase = planned.phase
                suffix = " (re-runs detect)" if phase is Phase.VERIFY and runbook.verify_is_detect else ""
                out.append(f"  {phase.value}{suffix}")
            notes = []
            if planned.step.confirm or planned.step.kind is StepKind.MANUAL:
                notes.append("needs approval" if planned.step.kind is not StepKind.MANUAL else "manual")
            if planned.condition == "skip":
                notes.append(f"skipped: when is false ({planned.step.when})")
            elif planned.condition:
                notes.append(f"only if: {planned.step.when}")
            note = f"  [{'; '.join(notes)}]" if notes else ""
            become = f" ({planned.become.label})" if planned.become is not None else ""
            out.append(f"    {planned.step.id}: {planned.step.title}{become}{note}")
            if planned.error:
                out.append(f"      ! cannot render: {planned.error}")
            elif planned.deferred:
                out.append(f"      (rendered at run time: {planned.deferred})")
                out.append(indent(planned.text.strip(), "      | "))
            elif planned.step.kind is StepKind.MANUAL:
                out.append(indent(planned.text.strip(), "      > "))
            else:
                out.append(indent(planned.text.strip(), "      $ "))
    return "\n".join(out)


def plan_data(
    runbook: Runbook, plans: list[HostPlan], preflights: Mapping[str, Preflight] | None = None
) -> dict[str, Any]:
    """``cairn plan --json``."""
    return {
        "runbook": runbook.id,
        "hosts": [
            {
                "host": p.host.name,
                "connection": p.host.connection,
                "preflight": _preflight_data(runbook, (preflights or {}).get(p.host.name)),
                "steps": [
                    {
                        "phase": s.phase.value,
                        "id": s.step.id,
                        "title": s.step.title,
                        "kind": s.step.kind.value,
                        "text": s.text,
                        "deferred": s.deferred,
                        "condition": s.condition,
                        "confirm": s.step.confirm or s.step.kind is StepKind.MANUAL,
                        "timeout": s.step.timeout,
                        "error": s.error,
                        "become": _become_data(s.become),
                    }
                    for s in p.steps
                ],
            }
            for p in plans
        ],
    }


def _become_data(become: Become | None) -> dict[str, str] | None:
    """As whom and how a step escalates (never its password); ``None``: as the login user."""
    if become is None:
        return None
    return {"user": become.user, "method": become.method}


def _preflight_data(runbook: Runbook, preflight: Preflight | None) -> dict[str, Any] | None:
    if preflight is None:
        return None
    return {
        "ok": preflight.ok,
        "summary": preflight.summary(runbook),
        "found": dict(preflight.found),
        "missing": list(preflight.missing),
        "error": preflight.error or None,
        "blocked_steps": {
            step.id: preflight.lacking(step)
            for phase in Phase
            for step in runbook.steps(phase)
            if preflight.lacking(step)
        },
    }


# --------------------------------------------------------------------------- runs


def step_line(result: StepResult, width: int = STEP_ID_WIDTH) -> str:
    """One line for a finished step: id, status, time, message; columns in line for ids up to ``width``."""
    mark = STATUS_MARK.get(result.status.value, result.status.value)
    took = format_duration(result.duration) if result.duration else ""
    message = result.message.splitlines()[0] if result.message else ""
    return f"{result.step_id:<{width}} {mark:<9} {took:>6}  {message}".rstrip()


def summary_rows(report: RunReport) -> list[dict[str, Any]]:
    """Per host: the last phase it reached, what the run concluded, and its steps counted by status."""
    rows = []
    for h in report.hosts:
        counts: dict[str, int] = {}
        for r in h.results:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        reached = h.results[-1].phase.value if h.results else "connect"
        rows.append(
            {
                "host": h.host,
                "phase": reached,
                "outcome": h.outcome.value,
                "reason": h.reason,
                "steps": counts,
            }
        )
    return rows


def summary_text(report: RunReport) -> str:
    """The end-of-run table: host, the phase it reached, outcome, steps, reason; then the totals."""
    rows = summary_rows(report)
    if not rows:
        return "no host was run" + ("\nthe run was interrupted" if report.interrupted else "")
    text = table(
        [
            [
                r["host"],
                r["phase"],
                r["outcome"],
                " ".join(f"{n} {STATUS_MARK.get(s, s).lower()}" for s, n in r["steps"].items()),
                r["reason"],
            ]
            for r in rows
        ],
        ["HOST", "PHASE", "OUTCOME", "STEPS", "REASON"],
    )
    if len(rows) > 1:
        totals: dict[str, int] = {}
        for r in rows:
            totals[r["outcome"]] = totals.get(r["outcome"], 0) + 1
        text += f"\n{len(rows)} hosts: " + ", ".join(f"{n} {o}" for o, n in sorted(totals.items()))
    if report.interrupted:
        text += "\nthe run was interrupted"
    return text
