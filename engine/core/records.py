"""What is on record, as text: the journal's runs, the alert queue's entries, the inventory's hosts.

Pure functions returning strings; ``cairn history``, ``cairn show-run``, ``cairn queue``,
``cairn inventory`` and the TUI use them. No I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.core.approval_policy import Outcome
from engine.core.model import format_duration
from engine.core.render import STATUS_MARK, indent, step_id_width, table, when

if TYPE_CHECKING:
    from engine.core.approval_policy import Attempt
    from engine.core.journal_read import RunRecord
    from engine.core.queue_decisions import Decisions
    from engine.core.queue_read import Entry


def inventory_text(rows: list[dict[str, Any]]) -> str:
    """``cairn inventory`` as a table: host, how it is reached, its groups."""
    return (
        table(
            [[r["host"], r["reached_by"], ", ".join(r["groups"]) or "-"] for r in rows],
            ["HOST", "REACHED BY", "GROUPS"],
        )
        + f"\n{len(rows)} host{'s' if len(rows) != 1 else ''}"
    )


def history_text(runs: list[RunRecord]) -> str:
    """``cairn history`` as text."""
    if not runs:
        return "no runs yet; start one with `cairn run ID`"
    rows = []
    for run in runs:
        outcomes = ", ".join(sorted({o["outcome"] for o in run.outcomes.values()})) or "-"
        status = run.status.value + (" (dry run)" if run.dry_run else "")
        rows.append(
            [
                run.id,
                when(run.started_at),
                run.runbook_id,
                _hosts(run.hosts),
                status,
                outcomes,
                started_by_text(run),
            ]
        )
    return table(rows, ["RUN", "STARTED", "RUNBOOK", "TARGETS", "STATUS", "OUTCOME", "STARTED BY"])


def _hosts(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts) if len(hosts) <= 3 else f"{', '.join(hosts[:2])} +{len(hosts) - 2}"


def started_by_text(run: RunRecord) -> str:
    """Who or what started a run: ``alice@host``, ``tui: tui:alice``, ``alert KubeNodeNotReady node=n1``,
    ``requested by alice``; then who approved an alert-started run's remediation."""
    kind = run.trigger.get("kind", "cli")
    alert = run.trigger.get("alert")
    approvers = [label_name(label) for label in approver_labels(run)]
    approved = f"; approved by {', '.join(approvers)}" if approvers else ""
    if kind == "alert" and isinstance(alert, dict) and alert.get("requested_by"):
        return f"requested by {label_name(str(alert['requested_by']))}{approved}"
    if kind == "alert" and isinstance(alert, dict) and alert.get("labels"):
        return f"alert {alert_summary(alert)}{approved}"
    return (run.started_by if kind == "cli" else f"{kind}: {run.started_by}") + approved


def approver_labels(run: RunRecord) -> list[str]:
    """Who approved an alert-started run's remediation, as journaled: each approver's full label
    (``alice (unix uid 1000 on web-1, db role cairn, via cli)``); none for other runs."""
    return [label for label in str(run.trigger.get("approved_by") or "").split("; ") if label]


def label_name(label: str) -> str:
    """The name an identity's label starts with (``alice`` of ``alice (unix uid 1000 …)``)."""
    return label.rsplit(" (", 1)[0] if label.endswith(")") and " (" in label else label


def alert_summary(alert: dict[str, Any]) -> str:
    """An alert in one line: its name, then its other labels (``KubeNodeNotReady node=n1``); a
    request's (``cairn request``): ``requested by alice``."""
    if alert.get("requested_by") and not alert.get("labels"):
        return f"requested by {label_name(str(alert['requested_by']))}"
    labels = dict(alert.get("labels") or {})
    name = str(labels.pop("alertname", "")) or "(no alertname)"
    rest = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{name} {rest}".strip()


def queue_text(
    entries: list[Entry],
    *,
    waiting_only: bool,
    decisions: Mapping[int, Decisions] | None = None,
    now: float | None = None,
) -> str:
    """``cairn queue`` as text: what waits for a human first, with why; then, for each entry whose
    approval has a requirement (``decisions``), its quorum, approvers, asker, expiry and attempts."""
    if not entries:
        return (
            "nothing waits for a human, nothing is queued or running"
            if waiting_only
            else "the alert queue is empty: `cairn serve` fills it from Alertmanager webhooks"
        )
    order = {"escalated": 0, "queued": 1, "running": 2}
    rows = [
        [
            e.run_id or "-",
            e.state.value.upper() if e.state.value == "escalated" else e.state.value,
            when(e.received_at),
            e.runbook_id,
            e.target,
            alert_summary(e.alert),
        ]
        for e in sorted(entries, key=lambda e: (order.get(e.state.value, 3), e.id))
    ]
    text = table(rows, ["RUN", "STATE", "RECEIVED", "RUNBOOK", "TARGET", "ALERT"])
    notes = [f"  {e.run_id or f'entry {e.id}'}: {e.note}" for e in entries if e.note]
    waiting = [e for e in entries if e.state.value == "escalated"]
    hint = (
        [
            "",
            f"{len(waiting)} waiting for a human: `cairn show-run RUN` to see what the run found, "
            "then `cairn approve RUN` or `cairn decline RUN --reason …`",
        ]
        if waiting
        else []
    )
    approvals = [
        approval_lines(decisions[e.id], now)
        for e in sorted(entries, key=lambda e: (order.get(e.state.value, 3), e.id))
        if decisions and e.id in decisions and decisions[e.id].requirement is not None
    ]
    return "\n".join(
        [
            text,
            *(["", "why:", *notes] if notes else []),
            *(["", "approvals:", *(line for lines in approvals for line in lines)] if approvals else []),
            *hint,
        ]
    )


def approval_lines(decisions: Decisions, now: float | None = None) -> list[str]:
    """One entry's approval for ``cairn queue``: what it needs, how far it is, who asked, when it
    expires (while it waits), every attempt."""
    entry = decisions.entry
    assert decisions.requirement is not None and decisions.progress is not None
    rows = [
        ("progress", decisions.progress.describe()),
        ("approvers", decisions.requirement.describe()),
    ]
    if entry.requested_by is not None:
        rows.append(("asked by", entry.requested_by.label))
    if entry.state.value == "escalated" and entry.expires_at is not None:
        rows.append(("expires", f"{expires_text(entry.expires_at, now)} ({when(entry.expires_at)})"))
    for number, attempt in enumerate(decisions.attempts):
        rows.append(("attempts" if number == 0 else "", attempt_text(attempt)))
    head = f"  {entry.run_id or '-'}  {entry.runbook_id} on {entry.target} (queue entry {entry.id}, {entry.state.value})"
    return [head, *(f"    {name:<10} {value}" for name, value in rows)]


def attempt_text(attempt: Attempt) -> str:
    """One attempt in a line: ``2026-03-01 09:20:00  alice approve: refused — alice may not approve this: …``"""
    said = f"{when(attempt.at)}  {attempt.who.short} {attempt.action.value}: {attempt.outcome.value}"
    return said + _attempt_why(attempt)


def _attempt_why(attempt: Attempt) -> str:
    """A refusal's message and a decision's reason, after a dash (nothing when there is neither)."""
    why = [attempt.message] if attempt.outcome is Outcome.REFUSED and attempt.message else []
    if attempt.reason:
        why.append(f"reason: {attempt.reason}")
    return f" — {'; '.join(why)}" if why else ""


def expires_text(expires_at: float | None, now: float | None = None) -> str:
    """``in 3h12m``, ``in 40s``, ``expired 5m ago``; ``""`` when it never expires."""
    if expires_at is None:
        return ""
    left = expires_at - (time.time() if now is None else now)
    if left <= 0:
        return f"expired {_span(-left)} ago"
    return f"in {_span(left)}"


def _span(seconds: float) -> str:
    """A duration to the minute once it is past a minute: ``3h12m``, ``2d4h``, ``40s``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    days, rest = divmod(whole // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    return f"{hours}h{minutes}m" if hours else f"{minutes}m"


def decisions_lines(decisions: Decisions) -> list[str]:
    """``cairn show-run``'s account of the entry an alert-started run worked on: what its approval
    needs and every attempt, each with the decider's full label (account, uid, machine, db role,
    front end; or Slack user id and name)."""
    entry = decisions.entry
    if decisions.requirement is None and not decisions.attempts:
        return []
    head = f"decisions (queue entry {entry.id}, now {entry.state.value})"
    if decisions.requirement is not None and decisions.progress is not None:
        head += f": {decisions.requirement.describe()}; {decisions.progress.describe()}"
    lines = [head]
    if entry.requested_by is not None:
        lines.append(f"  asked by {entry.requested_by.label}")
    for attempt in decisions.attempts:
        lines.append(
            f"  {when(attempt.at)} {attempt.action.value} {attempt.outcome.value:<9} by {attempt.who.label}"
            + _attempt_why(attempt)
        )
    return lines


def run_text(run: RunRecord, *, full_output: bool = False, decisions: Decisions | None = None) -> str:
    """``cairn show-run`` as text; ``decisions``: those of the queue entry an alert-started run worked on."""
    out = [
        f"run {run.id}: {run.runbook_id} — {run.status.value}"
        + (f", exit {run.exit_code}" if run.exit_code is not None else ""),
        f"  started   {when(run.started_at)} by {started_by_text(run)}",
        f"  finished  {when(run.finished_at)}",
        f"  targets   {', '.join(run.hosts)}",
        f"  inputs    {', '.join(f'{k}={v}' for k, v in run.inputs.items()) or '-'}",
        f"  runbook   {run.runbook_path} (sha256 {run.runbook_sha256[:12]})",
        f"  artifacts {run.artifacts}",
    ]
    alert = run.trigger.get("alert") if run.trigger.get("kind") == "alert" else None
    if alert:
        out.append(
            f"  alert     {alert.get('status', '?')} since {alert.get('startsAt') or '-'} "
            f"(fingerprint {alert.get('fingerprint') or '-'})"
        )
        for key, value in sorted((alert.get("annotations") or {}).items()):
            out.append(f"            {key}: {value}")
        for key in ("approved_by", "resumes"):
            if run.trigger.get(key):
                out.append(f"  {key.replace('_', ' '):<9} {run.trigger[key]}")
    if run.dry_run:
        out.append("  dry run: remediation was not executed")
    for name, outcome in run.outcomes.items():
        out.append(f"  {name}: {outcome['outcome']} — {outcome['reason']}")
    host: str | None = None
    phase: str | None = None
    width = step_id_width(s.step_id for s in run.steps)
    for step in run.steps:
        if step.host != host:
            host, phase = step.host, None
            out.append(f"\n{host}")
        if step.phase != phase:
            phase = step.phase
            out.append(f"  {phase}")
        mark = STATUS_MARK.get(step.status, step.status)
        took = format_duration(step.duration) if step.duration else ""
        rc = f" rc={step.rc}" if step.rc is not None else ""
        out.append(f"    {step.step_id:<{width}} {mark:<9} {took:>6}{rc}  {step.message}".rstrip())
        if step.command:
            out.append(indent(step.command.strip(), "      $ "))
        if step.approval:
            out.append(f"      approval: {step.approval}")
        for name, text in (("stdout", step.stdout), ("stderr", step.stderr)):
            if text.strip():
                shown = text if full_output else _tail(text, 10)
                out.append(f"      {name}:")
                out.append(indent(shown.rstrip(), "        "))
    if run.approvals:
        out.append("\napprovals")
        for a in run.approvals:
            verdict = "approved" if a.approved else "declined"
            note = f" — {a.note}" if a.note else ""
            out.append(f"  {when(a.at)} {a.host} {a.phase}/{a.step_id}: {verdict} by {a.decided_by}{note}")
    if decisions is not None and (lines := decisions_lines(decisions)):
        out += ["", *lines]
    return "\n".join(out)


def _tail(text: str, lines: int) -> str:
    all_lines = text.rstrip().splitlines()
    if len(all_lines) <= lines:
        return text
    return f"[… {len(all_lines) - lines} earlier lines; --output shows all …]\n" + "\n".join(
        all_lines[-lines:]
    )
