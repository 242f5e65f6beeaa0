"""What Cairn looks like in Slack: the Block Kit of an escalation's message, its thread replies and
the decline dialog, drawn from the notices' documented payloads (:mod:`engine.core.notices`).

An escalated entry has **one message** in the channel. It is drawn from the entry's ``escalated``
notice — the runbook's title and severity, the host, each finding's report line, the exact command
of each remediation step on that host, why, the trade-off, who may approve and the quorum, when
the request expires — plus the latest decision, if any: the quorum's progress while approvals are
counted; who approved, who declined (and why) or that it expired once it is over, and then its
**Approve** / **Decline** buttons are gone. Progress and the verify verdict are replies in its
thread.

Every text that comes from a host or a person (a report line, a reason, a name) is escaped for
``mrkdwn`` (``&``, ``<``, ``>``), so it cannot mention ``@channel`` or forge a link; commands are
shown in ``rich_text_preformatted`` elements, which Slack shows exactly as given. The payloads
are already redacted (:mod:`engine.core.notices`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.core.approval_policy import Requirement
from engine.core.notices import Notice, NoticeKind

APPROVE = "cairn_approve"
"""The Approve button's ``action_id`` (its ``value`` is the entry id)."""
DECLINE = "cairn_decline"
"""The Decline button's ``action_id`` (its ``value`` is the entry id): opens :func:`decline_view`."""
DECIDE_BLOCK = "cairn_decide"
"""The ``block_id`` of the buttons' actions block."""
DECLINE_VIEW = "cairn_decline_reason"
"""The decline dialog's ``callback_id``."""
REASON_BLOCK = "reason"
REASON_ACTION = "reason"

SECTION_LIMIT = 3000
"""Slack's limit on a section's text."""
HEADER_LIMIT = 150
"""Slack's limit on a header's text."""
COMMAND_LIMIT = 2800
"""Longer commands are cut in the message (``cairn show-run`` has them whole)."""
MAX_STEPS = 10
"""Remediation steps shown one by one (a message holds at most 50 blocks)."""

Block = dict[str, Any]

DECISIONS = (
    NoticeKind.APPROVAL_COUNTED,
    NoticeKind.APPROVED,
    NoticeKind.DECLINED,
    NoticeKind.APPROVAL_EXPIRED,
)
"""Notices that change an escalation's message."""


def escape(text: object) -> str:
    """``text`` safe in ``mrkdwn``: Slack's three control characters escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    """Inline code in ``mrkdwn`` (a backtick inside, which would end it, is shown as ``'``)."""
    return "`" + escape(text).replace("`", "'") + "`"


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def when(epoch: object) -> str:
    """A time shown in each reader's own time zone (Slack's date formatting), UTC as the fallback."""
    if epoch is None or epoch == "":
        return "never"
    if not isinstance(epoch, int | float):
        return escape(epoch)  # already words (an ISO time)
    fallback = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(epoch)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}]}


def preformatted(text: str) -> Block:
    """A command exactly as it is (no ``mrkdwn`` read into it)."""
    if len(text) > COMMAND_LIMIT:
        text = (
            text[:COMMAND_LIMIT]
            + f"\n… ({len(text) - COMMAND_LIMIT} more characters: `cairn show-run` has it whole)"
        )
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_preformatted", "elements": [{"type": "text", "text": text}]}],
    }


# ---------------------------------------------------------------------------- the escalation


def escalation(escalated: Mapping[str, Any], latest: Notice | None = None) -> tuple[str, list[Block]]:
    """The entry's message: its ``escalated`` payload, with the latest decision (``None``: waiting).

    Returns the notification text and the blocks."""
    details: Mapping[str, Any] = escalated.get("details") or {}
    blocks = [_header(escalated), section(_where(escalated, details))]
    findings = [f for f in details.get("findings") or () if isinstance(f, Mapping)]
    if findings:
        blocks.append(section("*Findings*\n" + "\n".join(_finding(f) for f in findings)))
    blocks += _remediation(details.get("remediation") or ())
    blocks.append(section(_approval(escalated, details, latest)))
    over = latest is not None and latest.kind is not NoticeKind.APPROVAL_COUNTED
    if not over:
        blocks.append(_buttons(escalated))
    run_id = details.get("run_id") or (escalated.get("entry") or {}).get("run_id")
    if run_id and not over:
        blocks.append(
            context(
                f"Or from a terminal: {code(f'cairn approve {run_id}')} / {code(f'cairn decline {run_id}')}"
            )
        )
    text = str(escalated.get("summary") or "an escalation waits for approval")
    if latest is not None:
        text = f"{text} — {_outcome_line(latest)}"
    return escape(text), blocks  # the notification's text is mrkdwn too


def _header(escalated: Mapping[str, Any]) -> Block:
    runbook = escalated.get("runbook") or {}
    title = str(runbook.get("title") or runbook.get("id") or "runbook")
    severity = str(runbook.get("severity") or "")
    text = f"{title} · {severity}" if severity else title
    return {"type": "header", "text": {"type": "plain_text", "text": cut(text, HEADER_LIMIT), "emoji": False}}


def _where(escalated: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    runbook = escalated.get("runbook") or {}
    lines = [f"*Host:* {code(escalated.get('host') or '?')}    *Runbook:* {code(runbook.get('id') or '?')}"]
    run_id = details.get("run_id") or (escalated.get("entry") or {}).get("run_id")
    if run_id:
        lines[0] += f"    *Run:* {code(run_id)}"
    if details.get("reason"):
        lines.append(f"*Why it waits:* {escape(details['reason'])}")
    return "\n".join(lines)


def _finding(finding: Mapping[str, Any]) -> str:
    said = f"• {code(finding.get('step') or '?')}"
    if finding.get("host"):
        said += f" on {code(finding['host'])}"
    report = str(finding.get("report") or "").strip()
    return f"{said}: {escape(report)}" if report else said


def _remediation(steps: Sequence[Any]) -> list[Block]:
    steps = [s for s in steps if isinstance(s, Mapping)]
    if not steps:
        return []
    blocks = [section(f"*What it would run* ({len(steps)} step{'s' if len(steps) != 1 else ''})")]
    for number, step in enumerate(steps[:MAX_STEPS], start=1):
        head = f"*{number}. {escape(step.get('title') or step.get('step') or '?')}* ({code(step.get('step') or '?')})"
        if step.get("as_user"):
            head += f" as {code(step['as_user'])}"
        head += _step_notes(step)
        blocks.append(section(head))
        if step.get("command"):
            blocks.append(preformatted(str(step["command"])))
        notes = []
        if step.get("why"):
            notes.append(f"*Why:* {escape(step['why'])}")
        if step.get("tradeoff"):
            notes.append(f"*Trade-off:* {escape(step['tradeoff'])}")
        if notes:
            blocks.append(context("\n".join(notes)))
    if len(steps) > MAX_STEPS:
        blocks.append(context(f"… and {len(steps) - MAX_STEPS} more steps: `cairn plan` shows them all"))
    return blocks


def _step_notes(step: Mapping[str, Any]) -> str:
    """What to know before reading a step's command: a human's step, a template, a condition, an error."""
    notes = []
    if step.get("kind") == "manual":
        notes.append("a person does this step; Cairn shows them these instructions:")
    if step.get("error"):
        notes.append(f"it cannot be shown: {escape(step['error'])}")
    deferred = step.get("deferred")
    if deferred:
        said = str(deferred) if isinstance(deferred, str) else "rendered at run time"
        if not said.startswith("rendered at run time"):
            said = f"rendered at run time: {said}"
        notes.append(f"{escape(said)}; its template:")
    if step.get("condition") == "skip":
        notes.append("skipped on this host as things stand (its `when` is false)")
    elif step.get("condition"):
        notes.append("runs only if its `when` holds at run time")
    return "".join(f"\n_{note}_" for note in notes)


def _approval(escalated: Mapping[str, Any], details: Mapping[str, Any], latest: Notice | None) -> str:
    requirement = Requirement.of(details.get("requirement"))
    needs = escape(requirement.describe())
    expires = (
        details.get("expires_at")
        or (escalated.get("entry") or {}).get("expires_at")
        or requirement.expires_at
    )
    asked = requirement.requested_by
    if latest is None:
        line = f"*Approval:* {needs} · 0 of {requirement.quorum} so far"
    elif latest.kind is NoticeKind.APPROVAL_COUNTED:
        line = f"*Approval:* {needs} · {escape(_decision(latest).get('progress') or '')}"
    else:
        return _outcome_line(latest, rich=True)
    if asked is not None:
        line += f"\n*Asked for by:* {escape(asked.short)} (who asked cannot approve)"
    return line + f"\n*Expires:* {when(expires)}"


def _decision(notice: Notice) -> Mapping[str, Any]:
    decision = (notice.payload.get("details") or {}).get("decision")
    return decision if isinstance(decision, Mapping) else {}


def _outcome_line(notice: Notice, *, rich: bool = False) -> str:
    """What the latest decision came to, in one line (``rich``: ``mrkdwn`` for the message)."""
    decision = _decision(notice)
    details = notice.payload.get("details") or {}
    approved = ", ".join(str(a) for a in decision.get("approved") or details.get("approved") or ())
    bold = (lambda s: f"*{s}*") if rich else (lambda s: s)
    text = escape if rich else str
    if notice.kind is NoticeKind.APPROVED:
        return (
            f"✅ {bold('Approved')} by {text(approved)}: the next run checks the host again, then remediates"
        )
    if notice.kind is NoticeKind.DECLINED:
        reason = decision.get("reason") or ""
        who = _short(decision)
        return (
            f"⛔ {bold('Declined')} by {text(who)}"
            + (f": {text(reason)}" if reason else "")
            + "; nothing was changed"
        )
    if notice.kind is NoticeKind.APPROVAL_EXPIRED:
        progress = details.get("progress") or ""
        return (
            f"⌛ {bold('Expired')}"
            + (f" ({text(progress)})" if progress else "")
            + ": nothing was changed; the alert's next firing asks again"
        )
    return text(str(decision.get("progress") or notice.payload.get("summary") or ""))


def _short(decision: Mapping[str, Any]) -> str:
    """The decider's short name (``alice``, ``@alice``) from the decision's identity."""
    who = decision.get("by_identity")
    if isinstance(who, Mapping) and who.get("name"):
        return f"@{who['name']}" if who.get("kind") == "slack" else str(who["name"])
    return str(decision.get("by") or "someone")


def _buttons(escalated: Mapping[str, Any]) -> Block:
    entry_id = str((escalated.get("entry") or {}).get("id", ""))
    host = str(escalated.get("host") or "the host")
    return {
        "type": "actions",
        "block_id": DECIDE_BLOCK,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": entry_id,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve the remediation?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": cut(f"Cairn checks {escape(host)} again, then runs the commands above.", 300),
                    },
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
            {
                "type": "button",
                "action_id": DECLINE,
                "text": {"type": "plain_text", "text": "Decline"},
                "style": "danger",
                "value": entry_id,
            },
        ],
    }


# ---------------------------------------------------------------------------- replies


def decision_reply(notice: Notice) -> str:
    """A thread reply saying who did what (``mrkdwn``)."""
    decision = _decision(notice)
    who = escape(decision.get("by") or _short(decision))
    if notice.kind is NoticeKind.APPROVAL_COUNTED:
        return f"👍 {who} approved: {escape(decision.get('progress') or '')}"
    if notice.kind is NoticeKind.APPROVED:
        return f"✅ {who} approved: {escape(decision.get('message') or decision.get('progress') or '')}"
    if notice.kind is NoticeKind.DECLINED:
        reason = decision.get("reason") or ""
        return f"⛔ {who} declined" + (f": {escape(reason)}" if reason else "") + "; nothing was changed"
    return _outcome_line(notice, rich=True)


RUN_MARKS = {
    NoticeKind.REMEDIATION_STARTED: "🔧",
    NoticeKind.STEP: "▸",
    NoticeKind.REMEDIATED: "✅",
    NoticeKind.VERIFY_FAILED: "❌",
}


def run_reply(notice: Notice) -> str:
    """A run's progress or verdict as a thread reply (``mrkdwn``): its summary, and a step's report."""
    details = notice.payload.get("details") or {}
    line = f"{RUN_MARKS.get(notice.kind, '•')} {escape(notice.payload.get('summary') or notice.kind.value)}"
    said = details.get("report") or details.get("line") or ""
    if notice.kind is NoticeKind.STEP and said and str(said) not in str(notice.payload.get("summary")):
        line += f"\n> {escape(cut(str(said), 500))}"
    return line


def run_opening(notice: Notice) -> tuple[str, list[Block]]:
    """The top-level message of an entry that has none yet (an automatic remediation: nobody was
    asked), which the run's replies then thread under."""
    runbook = notice.payload.get("runbook") or {}
    title = str(runbook.get("title") or runbook.get("id") or "runbook")
    host = notice.payload.get("host") or "?"
    text = str(notice.payload.get("summary") or f"{title} on {host}")
    return escape(text), [
        section(f"{RUN_MARKS.get(notice.kind, '•')} *{escape(title)}* on {code(host)}\n{escape(text)}")
    ]


def refusal(message: str, *, groups_unknown: str = "") -> str:
    """What the one who clicked is told, and only them, when their decision was refused."""
    text = f"Cairn did not take your decision: {escape(message)}"
    if groups_unknown:
        text += f"\n(Cairn could not ask Slack which user groups you are in: {escape(groups_unknown)})"
    return text


# ---------------------------------------------------------------------------- the decline dialog


def decline_view(entry_id: int, what: str, *, channel: str, ts: str) -> dict[str, Any]:
    """The modal that asks why (its submission declines ``entry_id``)."""
    return {
        "type": "modal",
        "callback_id": DECLINE_VIEW,
        "private_metadata": json.dumps({"entry": entry_id, "channel": channel, "ts": ts}),
        "title": {"type": "plain_text", "text": "Decline remediation"},
        "submit": {"type": "plain_text", "text": "Decline"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"Decline {escape(what)}? Nothing is changed on the host."),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why decline?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION,
                    "multiline": True,
                    "max_length": 500,
                },
            },
        ],
    }
