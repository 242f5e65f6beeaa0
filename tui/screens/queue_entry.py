"""One alert-queue entry as the Alerts screen shows it: its row in the table and the pane under it
(the alert, the note, and for an entry that asked for approval: the quorum so far, who may approve,
who asked, when it expires and every attempt). The screen is :mod:`tui.screens.queue`."""

from __future__ import annotations

import time

from rich.text import Text

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, Entry, EntryState
from engine.core.queue_decisions import Decisions
from engine.core.records import alert_summary, attempt_text, expires_text
from engine.core.render import when

STATE_STYLE = {
    EntryState.ESCALATED: "bold black on yellow",
    EntryState.QUEUED: "cyan",
    EntryState.RUNNING: "bold cyan",
    EntryState.DONE: "green",
    EntryState.DECLINED: "magenta",
    EntryState.EXPIRED: "magenta",
    EntryState.CANCELLED: "dim",
    EntryState.FAILED: "bold red",
}
OUTCOME_STYLE = {"counted": "green", "approved": "bold green", "declined": "magenta", "refused": "red"}


def text_map(value: object) -> dict[str, str]:
    """A labels or annotations mapping of an alert as strings (an alert is JSON: be lenient)."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def received_text(at: float, now: float | None = None) -> str:
    """``10:37:41`` today, ``11-28 10:37`` before (local time; the pane below has the full date)."""
    today = time.localtime(now).tm_yday, time.localtime(now).tm_year
    stamp = time.localtime(at)
    return time.strftime("%H:%M:%S" if (stamp.tm_yday, stamp.tm_year) == today else "%m-%d %H:%M", stamp)


def cells(entry: Entry) -> tuple[Text, ...]:
    """One row; an escalated row is bold from end to end, its note without "remediation waits for a human"
    (the state says it; the pane below has the whole note)."""
    bold = "bold" if entry.state is EntryState.ESCALATED else ""
    annotations = text_map(entry.alert.get("annotations"))
    alert = alert_summary(entry.alert) + (
        f" — {annotations['summary']}" if annotations.get("summary") else ""
    )
    row = (
        Text(entry.state.value, style=STATE_STYLE.get(entry.state, "")),
        Text(received_text(entry.received_at), style=bold),
        Text(entry.runbook_id, style="bold"),
        Text(entry.target, style=bold),
        Text(" ".join(entry.note.removeprefix(WAITS_FOR_A_HUMAN).split()), style=bold or "dim"),
        Text(alert),
        Text(entry.run_id or "-", style="dim"),
    )
    for cell in row:  # a cell wider than its column ends in "…", not cut mid-word
        cell.overflow, cell.no_wrap = "ellipsis", True
    return row


def entry_detail(entry: Entry, decisions: Decisions | None = None) -> Text:
    """Everything the queue holds about one entry, for the pane under the table."""
    text = Text.assemble(
        (entry.state.value, STATE_STYLE.get(entry.state, "")),
        (f"  entry {entry.id} · ", "dim"),
        (entry.runbook_id, "bold"),
        " on ",
        (entry.target, "bold"),
    )
    if entry.state is EntryState.ESCALATED and entry.run_id:
        text.append(
            "\nwaiting for a human: y approves (the next run checks again, then remediates), n declines",
            style="bold yellow",
        )
    elif entry.state is EntryState.ESCALATED:
        text.append(
            "\nit could not run at all: fix what the note says; it ends when the alert resolves", "yellow"
        )
    text.append(f"\n{entry.note or '(no note)'}")
    if decisions is not None:
        text.append_text(approval_detail(decisions))
    text.append(f"\nreceived {when(entry.received_at)} · updated {when(entry.updated_at)}", style="dim")
    run = f"run {entry.run_id} (Enter opens it)" if entry.run_id else "no run yet"
    text.append(f"\n{run}")
    if entry.holder:
        text.append(f"\nheld by server {entry.holder} (it runs it)", style="cyan")
    if entry.approved_by:
        text.append(f"\napproved by {entry.approved_by}", style="green")
    alert_status = str(entry.alert.get("status", ""))
    text.append(f"\n\nalert ({alert_status or 'status unknown'}) · fingerprint {entry.fingerprint}\n", "bold")
    for title, mapping in (
        ("labels", text_map(entry.alert.get("labels"))),
        ("annotations", text_map(entry.alert.get("annotations"))),
    ):
        text.append(f"{title}\n", style="underline")
        text.append("".join(f"  {k}: {v}\n" for k, v in mapping.items()) or "  -\n")
    if entry.alert.get("startsAt"):
        text.append(f"starts at {entry.alert['startsAt']}", style="dim")
    return text


def approval_detail(decisions: Decisions) -> Text:
    """The quorum so far, who may approve, who asked, the expiry (while it waits) and every attempt;
    nothing for an entry that never asked for approval."""
    text = Text()
    entry, requirement, progress = decisions.entry, decisions.requirement, decisions.progress
    if requirement is not None and progress is not None:
        text.append("\n\napproval ", style="bold")
        text.append(progress.describe(), style="bold green" if progress.met else "bold")
        text.append(f" · {requirement.describe()}")
    if entry.requested_by is not None:
        text.append(f"\nasked by {entry.requested_by.label} (they cannot approve it)")
    if entry.state is EntryState.ESCALATED and entry.expires_at is not None:
        lapsed = entry.expires_at <= time.time()
        text.append(
            f"\nexpires {expires_text(entry.expires_at)} ({when(entry.expires_at)})",
            style="red" if lapsed else "",
        )
    if decisions.attempts:
        text.append("\nattempts", style="underline")
    for attempt in decisions.attempts:
        text.append("\n  ")
        text.append(
            attempt_text(attempt),
            style=OUTCOME_STYLE.get(attempt.outcome.value, ""),
        )
    return text


def why_not_waiting(entry: Entry, verb: str) -> str:
    """What ``verb`` (approve, decline) cannot do on ``entry``, and why."""
    if entry.state is not EntryState.ESCALATED:
        note = f" ({entry.note})" if entry.note else ""
        return f"entry {entry.id} is {entry.state.value}, not waiting for a human: nothing to {verb}{note}"
    return (
        f"entry {entry.id} never got a run, so there is nothing to {verb} here: {entry.note}"
        " (it ends when the alert resolves)"
    )
