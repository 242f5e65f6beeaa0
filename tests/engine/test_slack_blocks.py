"""engine/serve/slack_blocks.py and engine/serve/slack.py's delivery: what an escalation looks like in
Slack, and what each answer of Slack's Web API makes of a delivery.

The rendering is checked on the documented notice payloads; delivery goes through the real
slack_sdk ``WebClient`` to the stand-in of Slack (tests/slack_standin.py) from a real store
(SQLite) whose entry was escalated with its notice, as ``cairn serve`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import Action, AlertQueue
from engine.core.approval_policy import ApprovalPolicy
from engine.core.identity import slack_identity
from engine.core.notices import Notice, NoticeKind, payload
from engine.core.outbox import Delivery, Outbox
from engine.core.store.location import Location, locate
from engine.serve.notify_settings import SlackSettings
from engine.serve.sinks import DeliveryFailed
from engine.serve.slack import Slack
from engine.serve.slack_blocks import APPROVE, DECLINE, decline_view, escalation, run_reply
from tests.engine.test_alert_queue import routed
from tests.slack_standin import BOT_TOKEN, CHANNEL, CHANNEL_NAME, SlackStandIn, SlackUser

RUN = "20261129-101500-aaaaaa"
POLICY = ApprovalPolicy.of(
    {"rules": [{"name": "sre", "approvers": {"slack_usergroups": ["sre-oncall"]}, "quorum": 2}]}
)


def escalated_payload(entry_id: int = 7, **details: Any) -> dict[str, Any]:
    """An ``escalated`` notice as :mod:`engine.serve.escalation` writes it."""
    requirement = POLICY.requirement("node-down", [], "critical", escalated_at=1_800_000_000.0)
    return payload(
        NoticeKind.ESCALATED,
        key=f"entry:{entry_id}:escalated:{RUN}",
        summary="node-down on web-1: remediation waits for 2 approvers from Slack group sre-oncall",
        entry={"id": entry_id, "run_id": RUN, "expires_at": requirement.expires_at},
        runbook={"id": "node-down", "title": "A node stopped answering", "severity": "critical"},
        host="web-1",
        details={
            "reason": "the policy does not automate 'node-down'",
            "findings": [{"step": "look", "host": "web-1", "report": "kubelet is down"}],
            "remediation": [
                {
                    "step": "restart",
                    "title": "Restart the kubelet",
                    "kind": "run",
                    "command": "systemctl restart kubelet",
                    "deferred": "",
                    "condition": "",
                    "why": "a hung kubelet stops reporting",
                    "tradeoff": "pods on web-1 restart",
                }
            ],
            "requirement": requirement.as_data() | {"description": requirement.describe()},
            "expires_at": requirement.expires_at,
            "run_id": RUN,
        }
        | details,
    )


def notice(body: dict[str, Any], entry_id: int = 7) -> Notice:
    return Notice(1, body["id"], NoticeKind(body["kind"]), entry_id, RUN, time.time(), body)


def decision(
    kind: NoticeKind, *, by: str = "alice", reason: str = "", approved: tuple[str, ...] = ()
) -> Notice:
    who = slack_identity(f"U{by.upper()}", by)
    body = payload(
        kind,
        key=f"entry:7:{kind.value}:1",
        summary="node-down on web-1: decided",
        details={
            "decision": {
                "by": who.label,
                "by_identity": who.as_data(),
                "reason": reason,
                "message": "approved (2 of 2 approvals (@alice, @bob)): the next run checks again, then remediates",
                "progress": f"{len(approved)} of 2 approvals ({', '.join(approved)})",
                "approved": list(approved),
                "quorum": 2,
            }
        },
    )
    return notice(body)


def everything(blocks: Any) -> str:
    """Every text in ``blocks``, one per line (what a reader could see)."""
    if isinstance(blocks, dict):
        own = [blocks["text"]] if isinstance(blocks.get("text"), str) else []
        return "\n".join(own + [everything(v) for v in blocks.values() if isinstance(v, dict | list)])
    if isinstance(blocks, list):
        return "\n".join(everything(item) for item in blocks)
    return ""


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in blocks if b["type"] == "actions" for e in b["elements"]]


def shown_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] in ("section", "header")]


# ---------------------------------------------------------------------------- the message


def test_an_escalation_shows_the_exact_command_who_may_approve_and_the_buttons() -> None:
    text, blocks = escalation(escalated_payload())
    assert text == "node-down on web-1: remediation waits for 2 approvers from Slack group sre-oncall"
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "A node stopped answering · critical", "emoji": False},
    }
    shown = "\n".join(shown_texts(blocks))
    assert "*Host:* `web-1`    *Runbook:* `node-down`    *Run:* `20261129-101500-aaaaaa`" in shown
    assert "*Why it waits:* the policy does not automate 'node-down'" in shown
    assert "• `look` on `web-1`: kubelet is down" in shown
    assert "*1. Restart the kubelet* (`restart`)" in shown
    assert {
        "type": "rich_text",
        "elements": [
            {
                "type": "rich_text_preformatted",
                "elements": [{"type": "text", "text": "systemctl restart kubelet"}],
            }
        ],
    } in blocks
    assert "*Why:* a hung kubelet stops reporting\n*Trade-off:* pods on web-1 restart" in everything(blocks)
    assert "*Approval:* needs 2 approvers from Slack group sre-oncall · 0 of 2 so far" in shown
    assert "*Expires:* <!date^1800086400^{date_short_pretty} at {time}|2027-01-16 08:00 UTC>" in shown
    assert buttons(blocks) == [(APPROVE, "7"), (DECLINE, "7")]
    approve = blocks[[b["type"] for b in blocks].index("actions")]["elements"][0]
    assert approve["style"] == "primary" and approve["confirm"]["confirm"]["text"] == "Approve"


def test_text_from_hosts_and_people_cannot_mention_or_link_and_commands_are_shown_as_they_are() -> None:
    hostile = "<!channel> see <https://evil.example|the fix> & `rm -rf`"
    _, blocks = escalation(
        escalated_payload(
            findings=[{"step": "look", "host": "web-1", "report": hostile}],
            remediation=[{"step": "fix", "title": "<@U1> fix", "command": "echo '<!here>' && tr a-z A-Z"}],
        )
    )
    shown = "\n".join(shown_texts(blocks))
    assert "&lt;!channel&gt; see &lt;https://evil.example|the fix&gt; &amp; `rm -rf`" in shown
    body = escalated_payload()
    body["summary"] = "node-down on <!channel>: remediation waits"  # the host comes from the alert's labels
    assert escalation(body)[0] == "node-down on &lt;!channel&gt;: remediation waits", "the notification too"
    assert "<!channel>" not in shown and "<@U1>" not in shown
    assert "echo '<!here>' && tr a-z A-Z" in everything(blocks), "preformatted: exactly the command"


def test_deferred_manual_and_long_steps_say_what_they_are_and_the_message_fits_slack() -> None:
    steps = [
        {
            "step": "grow",
            "title": "Grow",
            "command": "resize {{ steps.look.out }}",
            "deferred": "rendered at run time: it reads steps.look",
        },
        {"step": "call", "title": "Call the vendor", "kind": "manual", "command": "Phone +1 555 0100"},
        {"step": "big", "title": "Big", "command": "x" * 5000},
        *({"step": f"s{n}", "title": f"Step {n}", "command": f"echo {n}"} for n in range(20)),
    ]
    _, blocks = escalation(escalated_payload(remediation=steps))
    shown = "\n".join(shown_texts(blocks))
    assert "*1. Grow* (`grow`)\n_rendered at run time: it reads steps.look; its template:_" in shown
    assert (
        "*2. Call the vendor* (`call`)\n_a person does this step; Cairn shows them these instructions:_"
        in shown
    )
    assert "x" * 2800 + "\n… (2200 more characters: `cairn show-run` has it whole)" in everything(blocks)
    assert "… and 13 more steps: `cairn plan` shows them all" in everything(blocks)
    assert len(blocks) <= 50
    assert all(len(t) <= 3000 for t in shown_texts(blocks))


def test_a_decision_redraws_the_message_and_only_a_counted_approval_keeps_the_buttons() -> None:
    counted = decision(NoticeKind.APPROVAL_COUNTED, approved=("@alice",))
    _, blocks = escalation(escalated_payload(), counted)
    assert (
        "*Approval:* needs 2 approvers from Slack group sre-oncall · 1 of 2 approvals (@alice)"
        in shown_texts(blocks)[-1]
    )
    assert buttons(blocks) == [(APPROVE, "7"), (DECLINE, "7")]

    text, blocks = escalation(
        escalated_payload(), decision(NoticeKind.APPROVED, by="bob", approved=("@alice", "@bob"))
    )
    assert buttons(blocks) == []
    assert (
        "✅ *Approved* by @alice, @bob: the next run checks the host again, then remediates"
        in shown_texts(blocks)
    )
    assert text.endswith("— ✅ Approved by @alice, @bob: the next run checks the host again, then remediates")

    _, blocks = escalation(
        escalated_payload(), decision(NoticeKind.DECLINED, by="bob", reason="<b>retired</b>")
    )
    assert buttons(blocks) == []
    assert "⛔ *Declined* by @bob: &lt;b&gt;retired&lt;/b&gt;; nothing was changed" in shown_texts(blocks)

    expired = notice(
        payload(
            NoticeKind.APPROVAL_EXPIRED,
            key="entry:7:expired",
            summary="expired",
            details={"progress": "1 of 2 approvals (@alice)"},
        )
    )
    _, blocks = escalation(escalated_payload(), expired)
    assert buttons(blocks) == []
    assert (
        "⌛ *Expired* (1 of 2 approvals (@alice)): nothing was changed; the alert's next firing asks again"
        in shown_texts(blocks)
    )


def test_a_step_reply_adds_its_report_only_when_the_summary_lacks_it() -> None:
    body = payload(
        NoticeKind.STEP,
        key="run:r:step",
        summary="node-down on web-1: verify look: ok",
        details={"report": "kubelet is <up>"},
    )
    assert run_reply(notice(body)) == "▸ node-down on web-1: verify look: ok\n> kubelet is &lt;up&gt;"
    body["summary"] = "node-down on web-1: verify look: ok: kubelet is <up>"
    assert run_reply(notice(body)) == "▸ node-down on web-1: verify look: ok: kubelet is &lt;up&gt;"


def test_the_decline_dialog_asks_why_and_carries_where_to_answer() -> None:
    view = decline_view(7, "node-down on web-1", channel=CHANNEL, ts="1.2")
    assert view["callback_id"] == "cairn_decline_reason"
    assert json.loads(view["private_metadata"]) == {"entry": 7, "channel": CHANNEL, "ts": "1.2"}
    assert len(view["title"]["text"]) <= 24, "Slack's limit on a modal's title"
    [reason] = [b for b in view["blocks"] if b["type"] == "input"]
    assert reason["element"]["type"] == "plain_text_input" and not reason.get("optional", False)


# ---------------------------------------------------------------------------- delivering to Slack


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    slack = SlackStandIn(usergroups={"S0CAIRNSRE": ("sre-oncall", ["UALICE"])}).start()
    yield slack
    slack.stop()


@pytest.fixture
def store(tmp_path: Path) -> Location:
    return locate(str(tmp_path / "journal.db"))


def escalate(store: Location) -> int:
    """An entry escalated with its notice, as `cairn serve` escalates one."""
    queue = AlertQueue(store, holder="server-1")
    try:
        [entry_id] = queue.accept([routed(target="web-1")]).queued
        queue.claim()
        queue.started(entry_id, RUN)
        requirement = POLICY.requirement("node-down", [], "critical", escalated_at=time.time())
        body = escalated_payload(entry_id)
        assert queue.escalate(entry_id, run_id=RUN, note="waits", requirement=requirement, notice=body)
        return entry_id
    finally:
        queue.close()


def due(store: Location) -> list[Delivery]:
    outbox = Outbox(store, holder="server-1")
    try:
        outbox.expand(["slack"], lambda sink, kind: True)
        return outbox.claim()
    finally:
        outbox.close()


def sink(
    standin: SlackStandIn, store: Location, token: str = BOT_TOKEN, channel: str = "#" + CHANNEL_NAME
) -> Slack:
    settings = SlackSettings(channel=channel, bot_token=token, signing_secret="s", api_url=standin.api_url)
    return Slack(settings, store, say=lambda line: None)


def test_a_delivery_sent_again_after_a_crash_redraws_the_message_instead_of_posting_twice(
    standin: SlackStandIn, store: Location
) -> None:
    entry_id = escalate(store)
    [delivery] = due(store)
    slack = sink(standin, store)
    try:
        slack.deliver(delivery)
        slack.deliver(delivery)  # the dispatcher died before recording it delivered: sent again
    finally:
        slack.close()
    assert len(standin.calls_of("chat.postMessage")) == 1
    assert len(standin.calls_of("chat.update")) == 1
    [message] = standin.top_level()
    outbox = Outbox(store, holder="x")
    assert outbox.slack_message(entry_id) == (CHANNEL, message.ts)
    outbox.close()


def test_slacks_answers_decide_retry_wait_or_give_up(standin: SlackStandIn, store: Location) -> None:
    escalate(store)
    [delivery] = due(store)
    slack = sink(standin, store)
    try:
        standin.fail_once("chat.postMessage", "ratelimited", status=429, retry_after=7)
        with pytest.raises(DeliveryFailed) as limited:
            slack.deliver(delivery)
        assert (str(limited.value), limited.value.retry, limited.value.after) == (
            "ratelimited by Slack",
            True,
            7.0,
        )

        standin.fail_once("chat.postMessage", "internal_error")
        with pytest.raises(DeliveryFailed) as internal:
            slack.deliver(delivery)
        assert (str(internal.value), internal.value.retry) == (
            f"127.0.0.1:{standin.port} answered internal_error",
            True,
        )

        standin.stop()
        with pytest.raises(DeliveryFailed) as down:
            slack.deliver(delivery)
        assert down.value.retry and str(down.value).startswith(f"127.0.0.1:{standin.port} did not answer: ")
        standin.start()
        slack.deliver(delivery)
    finally:
        slack.close()
    assert len(standin.top_level()) == 1


@pytest.mark.parametrize(
    ("token", "channel", "why"),
    [
        (
            "xoxb-wrong",
            "#" + CHANNEL_NAME,
            "Slack refused the bot token (invalid_auth): check slack.bot_token_file",
        ),
        (
            BOT_TOKEN,
            "#nowhere",
            "the channel #nowhere does not exist, or the bot cannot see it: fix slack.channel",
        ),
    ],
)
def test_what_only_a_person_can_fix_is_given_up_at_once_and_says_what_to_fix(
    standin: SlackStandIn, store: Location, token: str, channel: str, why: str
) -> None:
    escalate(store)
    [delivery] = due(store)
    slack = sink(standin, store, token=token, channel=channel)
    try:
        with pytest.raises(DeliveryFailed) as failed:
            slack.deliver(delivery)
    finally:
        slack.close()
    assert (str(failed.value), failed.value.retry) == (why, False)
    assert token not in str(failed.value)


def test_a_bot_outside_the_channel_is_told_to_be_invited(store: Location) -> None:
    standin = SlackStandIn(joined=()).start()
    try:
        escalate(store)
        [delivery] = due(store)
        slack = sink(standin, store)
        try:
            with pytest.raises(DeliveryFailed) as failed:
                slack.deliver(delivery)
        finally:
            slack.close()
    finally:
        standin.stop()
    assert (str(failed.value), failed.value.retry) == (
        "the bot is not in #cairn-alerts: invite the app to the channel (/invite @app)",
        False,
    )


def test_a_users_slack_groups_are_asked_once_a_minute(standin: SlackStandIn, store: Location) -> None:
    """Two presses within the minute: Slack is asked for the group's members once."""
    entry_id = escalate(store)
    slack = sink(standin, store)
    queue = AlertQueue(store)
    try:
        [delivery] = due(store)
        slack.deliver(delivery)
        [message] = standin.top_level()
        for count in (1, 2):
            slack.interactions.take(standin.click(message, APPROVE, SlackUser("UALICE", "alice")))
            standin.wait_for(f"attempt {count} journaled", _attempts(queue, entry_id, count))
        attempts = queue.attempts(entry_id)
    finally:
        queue.close()
        slack.close()
    assert [(a.action, a.outcome.value, a.who.groups) for a in attempts] == [
        (Action.APPROVE, "counted", ("sre-oncall", "S0CAIRNSRE")),
        (Action.APPROVE, "refused", ("sre-oncall", "S0CAIRNSRE")),
    ]
    assert len(standin.calls_of("usergroups.list")) == 1
    assert len(standin.calls_of("usergroups.users.list")) == 1


def _attempts(queue: AlertQueue, entry_id: int, count: int) -> Callable[[], bool]:
    """A condition: ``count`` attempts on the entry are journaled."""
    return lambda: len(queue.attempts(entry_id)) == count
