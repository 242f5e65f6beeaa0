"""What started a run, as the incident report's first section says it: the alert (its name, every
label, annotations, since when) or who started it and how, who approved, and what it ran on —
inventory, limit, hosts, inputs (as journaled: a secret is ``***``), the runbook and its sha256.
Every value is shown with its control characters as escapes (:mod:`engine.core.visible`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.core.records import alert_summary, approver_labels
from engine.core.visible import visible

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord


def trigger_lines(run: RunRecord) -> tuple[tuple[str, str], ...]:
    """How the run started, and on what: the alert (name, every label, annotations, since when) or
    who started it and how; who approved; inventory, limit, hosts, inputs (secrets as journaled: ***)."""
    trigger = run.trigger
    kind = str(trigger.get("kind") or "cli")
    lines: list[tuple[str, str]] = []
    alert = trigger.get("alert") if kind == "alert" else None
    if isinstance(alert, dict):
        lines += _alert_lines(alert)
        if trigger.get("queue_entry") is not None:
            lines.append(("queue entry", str(trigger["queue_entry"])))
    else:
        how = {
            "cli": "the command line (cairn run)",
            "tui": "the TUI (cairn tui)",
            "resume": f"cairn resume of run {trigger.get('resumes') or '?'}",
        }.get(kind, kind)
        lines.append(("started", f"by {visible(run.started_by)} from {how}"))
    if kind == "alert":
        lines.append(("started by", visible(run.started_by)))
    if approvers := approver_labels(run):
        lines.append(("approved by", visible("; ".join(approvers))))
    if kind == "alert" and trigger.get("resumes"):
        lines.append(("resumes", str(trigger["resumes"])))
    inventory = [str(i) for i in trigger.get("inventory") or []]
    lines.append(("inventory", visible(", ".join(inventory)) if inventory else "none (this machine)"))
    if trigger.get("limit"):
        lines.append(("limit", visible(str(trigger["limit"]))))
    lines.append(("hosts", visible(", ".join(run.hosts)) or "-"))
    lines.append(("inputs", visible(", ".join(f"{k}={_value(v)}" for k, v in run.inputs.items())) or "-"))
    lines.append(("runbook", f"{run.runbook_id} ({visible(run.runbook_path)})"))
    lines.append(("runbook sha256", run.runbook_sha256))
    if run.dry_run:
        lines.append(("dry run", "remediation was not executed"))
    return tuple(lines)


def _alert_lines(alert: dict[str, Any]) -> list[tuple[str, str]]:
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    lines = [("alert", f"{visible(alert_summary(alert))} ({visible(str(alert.get('status') or '?'))})")]
    if isinstance(labels, dict) and labels:
        lines.append(("labels", visible(", ".join(f"{k}={v}" for k, v in sorted(labels.items())))))
    if isinstance(annotations, dict):
        for key, value in sorted(annotations.items()):
            lines.append((f"annotation {visible(str(key))}", visible(str(value))))
    lines.append(("alert started", visible(str(alert.get("startsAt") or "-"))))
    for key, name in (("fingerprint", "fingerprint"), ("generatorURL", "source")):
        if alert.get(key):
            lines.append((name, visible(str(alert[key]))))
    if alert.get("requested_by"):
        lines.append(("requested by", visible(str(alert["requested_by"]))))
    return lines


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
