"""`cairn serve` with Slack: the real server, the real slack_sdk, and a stand-in of Slack on loopback.

The stand-in (tests/slack_standin.py) serves Slack's Web API and Socket Mode with recorded,
real-shaped payloads and records every call; requests to `POST /slack/actions` carry Slack's real
signature. Each test reads back what a user relies on: the message in the channel (its exact
command, its buttons, its redraws), the thread, what the one who clicked was told, and the
decisions journaled in the store.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import Entry, EntryState
from engine.core.approval_policy import Action, Attempt, Outcome
from engine.core.queue_read import QueueReader
from engine.core.store.location import locate
from tests.cli.conftest import Served, Store, entries, wait_for
from tests.cli.test_cli_serve_remediation import fire, marker, settled
from tests.conftest import CairnRunner
from tests.slack_standin import CHANNEL, SIGNING_SECRET, Message, SlackStandIn, SlackUser, signed

ALICE = SlackUser("U0CAIRNAL1", "alice")
BOB = SlackUser("U0CAIRNBO2", "bob")
CAROL = SlackUser("U0CAIRNCA3", "carol")
SRE = "S0CAIRNSRE"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn(usergroups={SRE: ("sre-oncall", [ALICE.id, BOB.id])}).start()
    yield standin
    standin.stop()


def config(
    folder: Path,
    standin: SlackStandIn,
    *,
    http: bool = True,
    socket: bool = False,
    quorum: int = 1,
    approvers: str = "{slack_usergroups: [sre-oncall], groups: [root]}",
) -> Path:
    """A `cairn serve --config` file with `approvals:` and `slack:` (its secrets in 0600 files)."""
    secrets = {"bot-token": standin.bot_token}
    if http:
        secrets["signing-secret"] = SIGNING_SECRET
    if socket:
        secrets["app-token"] = standin.app_token
    for name, value in secrets.items():
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    lines = [
        "approvals:",
        "  rules:",
        "    - name: on-call",
        f"      approvers: {approvers}",
        f"      quorum: {quorum}",
        "slack:",
        '  channel: "#cairn-alerts"',
        "  bot_token_file: bot-token",
        f"  api_url: {standin.api_url}",
    ]
    if http:
        lines.append("  signing_secret_file: signing-secret")
    if socket:
        lines.append("  app_token_file: app-token")
    path = folder / "serve.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def escalated(served: Served, standin: SlackStandIn, node: str = "web-1") -> tuple[Entry, Message]:
    """Fire the marker alert for ``node``; its escalated entry and its one message in the channel."""
    fire(served, node)
    entry = wait_for(settled(served, node, EntryState.ESCALATED, EntryState.DONE), f"{node}'s escalation")
    assert entry.state is EntryState.ESCALATED, served.diagnosis()
    [message] = standin.wait_for("the escalation's message", standin.top_level)
    return entry, message


def post_action(served: Served, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(served.url + "/slack/actions", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw, code = answer.read().decode(), answer.status
    except urllib.error.HTTPError as error:
        raw, code = error.read().decode(), error.code
    try:
        return code, json.loads(raw)
    except json.JSONDecodeError:
        return code, raw


def attempts(store: Store, entry_id: int) -> list[Attempt]:
    """Every decision attempt on an entry, as `cairn queue --json` reads them."""
    reader = QueueReader(locate(store))
    try:
        return reader.attempts(entry_id)
    finally:
        reader.close()


def texts(message: Message) -> str:
    """Everything a reader sees in a message: its blocks' texts, commands, buttons."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return "\n".join(found)


def buttons(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def commands(message: Message) -> list[str]:
    """The texts shown preformatted (the exact commands)."""
    return [
        element["text"]
        for block in message.blocks
        if block["type"] == "rich_text"
        for part in block["elements"]
        if part["type"] == "rich_text_preformatted"
        for element in part["elements"]
    ]


def replies(standin: SlackStandIn, message: Message, count: int) -> list[str]:
    """The first ``count`` replies in ``message``'s thread, once there are that many."""
    found = standin.wait_for(
        f"{count} replies in the thread", lambda: (r := standin.thread(message.ts)) and len(r) >= count and r
    )
    return [r.text for r in found]


# ---------------------------------------------------------------------------- the message, HTTP


def test_an_escalation_is_one_message_and_a_signed_press_approves_it(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    served = serve("--config", str(config(tmp_path, slack)), runbook=marker(tmp_path))
    entry, message = escalated(served, slack)

    [post] = slack.calls_of("chat.postMessage")
    assert post.token == "<bot>" and post.args["channel"] == "#cairn-alerts"
    assert message.channel == CHANNEL
    shown = texts(message)
    assert "A web host's marker is stale · warning" in shown  # the header: title and severity
    assert "*Host:* `web-1`" in shown
    assert "`look` on `web-1`" in shown  # the finding
    assert commands(message) == [f"touch {tmp_path}/web-1.fixed", f"touch {tmp_path}/web-1.also"]
    assert "needs 1 approver from group root or Slack group sre-oncall · 0 of 1 so far" in shown
    assert buttons(message) == ["cairn_approve", "cairn_decline"]
    assert f"cairn approve {entry.run_id}" in shown

    body, headers = signed(slack.click(message, "cairn_approve", ALICE), SIGNING_SECRET)
    assert post_action(served, body, headers) == (200, "")
    done = wait_for(settled(served, "web-1", EntryState.DONE), "the approved run")
    assert done.note == "remediated approved by @alice; verify is clean"
    assert (tmp_path / "web-1.fixed").exists() and (tmp_path / "web-1.also").exists()

    [attempt] = attempts(served.journal, entry.id)
    assert (attempt.action, attempt.outcome) == (Action.APPROVE, Outcome.APPROVED)
    assert (attempt.who.kind, attempt.who.id, attempt.who.name) == ("slack", ALICE.id, "alice")
    assert attempt.who.groups == ("sre-oncall", SRE), "asked of Slack: usergroups.users.list"
    assert slack.calls_of("usergroups.users.list")[0].args["usergroup"] == SRE

    slack.wait_for("the message redrawn", lambda: message.updates >= 1)
    assert buttons(message) == [], "decided: the buttons are gone"
    assert "✅ *Approved* by @alice: the next run checks the host again, then remediates" in texts(message)
    assert replies(slack, message, 6) == [
        "✅ @alice (slack U0CAIRNAL1, via slack) approved: approved (1 of 1 approval (@alice)):"
        " the next run checks again, then remediates",
        "🔧 stale-marker on web-1: remediation started approved by @alice (slack U0CAIRNAL1, via slack)",
        "▸ stale-marker on web-1: remediate fix: ok",
        "▸ stale-marker on web-1: remediate also: ok",
        "▸ stale-marker on web-1: verify look: ok: fixed",
        "✅ stale-marker on web-1: remediated; verify is clean",
    ]


# ---------------------------------------------------------------------------- Socket Mode


def test_socket_mode_counts_an_approval_then_a_decline_asks_why(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    served = serve(
        "--config", str(config(tmp_path, slack, http=False, socket=True, quorum=2)), runbook=marker(tmp_path)
    )
    slack.wait_for("Socket Mode to connect", slack.connected)
    assert [c.token for c in slack.calls_of("apps.connections.open")] == ["<app>"]
    code, _ = post_action(served, *signed({"type": "block_actions"}, SIGNING_SECRET))
    assert code == 404, "no signing secret: no POST /slack/actions"
    entry, message = escalated(served, slack)
    assert "needs 2 approvers from group root or Slack group sre-oncall · 0 of 2 so far" in texts(message)

    envelope = slack.send_envelope(slack.click(message, "cairn_approve", ALICE))
    slack.wait_for("the press acknowledged", lambda: slack.acked(envelope))
    slack.wait_for("the message redrawn", lambda: message.updates >= 1)
    assert "needs 2 approvers from group root or Slack group sre-oncall · 1 of 2 approvals (@alice)" in texts(
        message
    )
    assert buttons(message) == ["cairn_approve", "cairn_decline"], "one more approval is needed"
    assert replies(slack, message, 1) == [
        "👍 @alice (slack U0CAIRNAL1, via slack) approved: 1 of 2 approvals (@alice)"
    ]

    envelope = slack.send_envelope(slack.click(message, "cairn_decline", BOB))
    slack.wait_for("the press acknowledged", lambda: slack.acked(envelope))
    [opened] = slack.wait_for("the decline dialog", lambda: slack.calls_of("views.open"))
    view = opened.args["view"]
    assert view["title"]["text"] == "Decline remediation" and view["submit"]["text"] == "Decline"
    assert [a.action for a in attempts(served.journal, entry.id)] == [Action.APPROVE], (
        "a dialog decides nothing"
    )

    submission = slack.submit(
        opened.args["trigger_id"], BOB, {"reason": {"reason": "web-1 is being retired"}}
    )
    envelope = slack.send_envelope(submission)
    slack.wait_for("the submission acknowledged", lambda: slack.acked(envelope))
    ended = wait_for(settled(served, "web-1", EntryState.DECLINED), "the decline")
    assert ended.note == "declined by @bob: web-1 is being retired"
    journaled = attempts(served.journal, entry.id)
    assert [(a.action, a.outcome, a.who.id, a.reason) for a in journaled] == [
        (Action.APPROVE, Outcome.COUNTED, ALICE.id, ""),
        (Action.DECLINE, Outcome.DECLINED, BOB.id, "web-1 is being retired"),
    ]
    slack.wait_for("the message redrawn", lambda: message.updates >= 2)
    assert buttons(message) == []
    assert "⛔ *Declined* by @bob: web-1 is being retired; nothing was changed" in texts(message)
    assert (
        replies(slack, message, 2)[1]
        == "⛔ @bob (slack U0CAIRNBO2, via slack) declined: web-1 is being retired; nothing was changed"
    )
    assert not (tmp_path / "web-1.fixed").exists()


def test_socket_mode_comes_back_after_slack_did_and_takes_presses_again(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    served = serve(
        "--config", str(config(tmp_path, slack, http=False, socket=True)), runbook=marker(tmp_path)
    )
    slack.wait_for("Socket Mode to connect", slack.connected)
    slack.stop()
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.ESCALATED), "the escalation, Slack or not")
    slack.start()
    slack.wait_for("Socket Mode to connect again", slack.connected, timeout=60)
    [message] = slack.wait_for("the escalation's message", slack.top_level, timeout=60)
    envelope = slack.send_envelope(slack.click(message, "cairn_approve", ALICE))
    slack.wait_for("the press acknowledged", lambda: slack.acked(envelope))
    wait_for(settled(served, "web-1", EntryState.DONE), "the approved run")
    assert [a.who.id for a in attempts(served.journal, entry.id)] == [ALICE.id]
    assert len(slack.calls_of("apps.connections.open")) >= 2, "a new websocket URL for the new connection"


# ---------------------------------------------------------------------------- who may, and signatures


def test_only_signed_fresh_new_requests_are_taken_and_a_refusal_is_told_to_the_clicker_alone(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    served = serve("--config", str(config(tmp_path, slack)), runbook=marker(tmp_path))
    entry, message = escalated(served, slack)
    press = slack.click(message, "cairn_approve", ALICE)
    now = int(time.time())
    body, headers = signed(press, SIGNING_SECRET)
    refused = {
        "missing headers": (body, {"Content-Type": "application/x-www-form-urlencoded"}),
        "no signature": (body, {k: v for k, v in headers.items() if k != "X-Slack-Signature"}),
        "wrong secret": signed(press, "not-the-signing-secret"),
        "stale": signed(press, SIGNING_SECRET, timestamp=now - 301),
        "from the future": signed(press, SIGNING_SECRET, timestamp=now + 301),
        "tampered": (signed(slack.click(message, "cairn_approve", CAROL), SIGNING_SECRET)[0], headers),
        "not a timestamp": (body, headers | {"X-Slack-Request-Timestamp": "yesterday"}),
    }
    said = {what: post_action(served, *request) for what, request in refused.items()}
    assert {what: code for what, (code, _) in said.items()} == dict.fromkeys(refused, 401)
    assert said["missing headers"][1] == {
        "error": "missing X-Slack-Request-Timestamp or X-Slack-Signature: not a request signed by Slack"
    }
    assert said["wrong secret"][1] == {
        "error": "bad X-Slack-Signature: not signed with this app's signing secret"
    }
    assert said["stale"][1] == {
        "error": "stale request: X-Slack-Request-Timestamp is more than 5 minutes from this server's clock"
    }
    assert said["tampered"][1] == said["wrong secret"][1]
    assert attempts(served.journal, entry.id) == [], "nothing refused by its signature was decided"

    carol, carol_headers = signed(slack.click(message, "cairn_approve", CAROL), SIGNING_SECRET)
    assert post_action(served, carol, carol_headers) == (200, "")
    [told] = slack.wait_for("carol told", lambda: slack.calls_of("chat.postEphemeral"))
    assert (told.args["channel"], told.args["user"]) == (CHANNEL, CAROL.id)
    assert told.args["text"] == (
        "Cairn did not take your decision: @carol may not approve this: needs 1 approver from group root or"
        " Slack group sre-oncall; a Slack user approves only when named in approvals (slack_users,"
        " slack_usergroups or people)"
    )
    [attempt] = attempts(served.journal, entry.id)
    assert (attempt.outcome, attempt.who.id, attempt.who.name, attempt.who.groups) == (
        Outcome.REFUSED,
        CAROL.id,
        "carol",
        (),
    )
    assert post_action(served, carol, carol_headers) == (
        401,
        {"error": "replayed request: this signature was already used"},
    )
    assert len(attempts(served.journal, entry.id)) == 1, "a replay decides nothing, not even a refusal"
    [still] = entries(served.journal)
    assert still.state is EntryState.ESCALATED
    assert len(slack.calls_of("chat.postEphemeral")) == 1
    assert (
        "slack: refused a POST /slack/actions: missing X-Slack-Request-Timestamp" in served.stderr.read_text()
    )


# ---------------------------------------------------------------------------- Slack down


@pytest.mark.parametrize("outage", ["stopped", "answering 500"])
def test_with_slack_down_the_cli_still_decides_and_the_channel_catches_up_after(
    serve: Callable[..., Served], slack: SlackStandIn, cairn: CairnRunner, tmp_path: Path, outage: str
) -> None:
    served = serve("--config", str(config(tmp_path, slack)), runbook=marker(tmp_path))
    if outage == "stopped":
        slack.stop()
    else:
        slack.answer_every_call(500)
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.ESCALATED), "the escalation")
    assert entry.run_id is not None

    approved = cairn("approve", entry.run_id, "--journal", str(served.journal))
    assert approved.returncode == 0, approved.stderr
    wait_for(settled(served, "web-1", EntryState.DONE), "the approved run, Slack or not")
    assert (tmp_path / "web-1.fixed").exists()
    assert slack.top_level() == []
    health = served.health()[1]
    assert health["ok"] is True, "Slack down is said, not a failing server"

    if outage == "stopped":
        slack.start()
    else:
        slack.answer_every_call(None)
    [message] = slack.wait_for("the escalation's message, once Slack is back", slack.top_level, timeout=90)
    thread = replies(slack, message, 6)
    assert thread[0].startswith("✅ root (unix uid 0 on ")
    assert thread[-1] == "✅ stale-marker on web-1: remediated; verify is clean"
    assert buttons(message) == [] and "✅ *Approved* by root" in texts(message)
    assert len(slack.top_level()) == 1, "each notice once: one message, redrawn"


# ---------------------------------------------------------------------------- no human, no time


def test_an_automatic_remediation_opens_its_own_message_and_threads_its_progress(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    served = serve(
        "--automate", "stale-*", "--config", str(config(tmp_path, slack)), runbook=marker(tmp_path)
    )
    fire(served, "web-1")
    wait_for(settled(served, "web-1", EntryState.DONE), "the automatic remediation")
    [message] = slack.wait_for("the run's message", slack.top_level)
    assert "🔧 *A web host's marker is stale* on `web-1`" in texts(message)
    assert "remediation started automatically, as the policy allows" in texts(message)
    assert buttons(message) == [], "nobody is asked"
    thread = replies(slack, message, 4)
    assert thread[0] == "▸ stale-marker on web-1: remediate fix: ok"
    assert thread[-1] == "✅ stale-marker on web-1: remediated; verify is clean"
    assert len(slack.top_level()) == 1


def test_an_expired_request_loses_its_buttons_and_a_late_press_is_told_why(
    serve: Callable[..., Served], slack: SlackStandIn, tmp_path: Path
) -> None:
    path = config(tmp_path, slack)
    path.write_text(path.read_text().replace("      quorum: 1\n", "      quorum: 1\n      expires: 2s\n"))
    served = serve("--config", str(path), runbook=marker(tmp_path))
    entry, message = escalated(served, slack)
    late = slack.click(message, "cairn_approve", ALICE)
    wait_for(settled(served, "web-1", EntryState.EXPIRED), "the request to expire")
    slack.wait_for("the message redrawn", lambda: message.updates >= 1)
    assert buttons(message) == []
    assert "⌛ *Expired* (0 of 1 approval): nothing was changed; the alert's next firing asks again" in texts(
        message
    )
    assert replies(slack, message, 1) == [
        "⌛ *Expired* (0 of 1 approval): nothing was changed; the alert's next firing asks again"
    ]

    assert post_action(served, *signed(late, SIGNING_SECRET)) == (200, "")
    [told] = slack.wait_for("alice told", lambda: slack.calls_of("chat.postEphemeral"))
    assert told.args["user"] == ALICE.id
    assert (
        "is not waiting for a human: its queue entry" in told.args["text"]
        and "is expired" in told.args["text"]
    )
    assert [a.outcome for a in attempts(served.journal, entry.id)] == [Outcome.REFUSED]
    assert not (tmp_path / "web-1.fixed").exists()


def test_a_channel_the_bot_cannot_post_in_is_given_up_at_once_and_said(
    serve: Callable[..., Served], slack: SlackStandIn, cairn: CairnRunner, tmp_path: Path
) -> None:
    path = config(tmp_path, slack)
    path.write_text(path.read_text().replace('"#cairn-alerts"', '"#nowhere"'))
    served = serve("--config", str(path), runbook=marker(tmp_path))
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.ESCALATED), "the escalation")
    why = "the channel #nowhere does not exist, or the bot cannot see it: fix slack.channel"

    def given_up() -> dict[str, Any] | None:
        code, health = served.health()
        notifications = health.get("notifications") or {}
        return health if code == 200 and notifications.get("abandoned") else None

    health = wait_for(given_up, "/healthz to say the notice was given up")
    assert health["ok"] is True, "runs and approvals do not need Slack"
    assert why in health["notifications"]["last_error"]
    assert len(slack.calls_of("chat.postMessage")) == 1, "not retried: only a person can fix it"
    assert why in served.stderr.read_text()
    assert slack.bot_token not in served.stderr.read_text()
    assert entry.run_id is not None
    approved = cairn("approve", entry.run_id, "--journal", str(served.journal))
    assert approved.returncode == 0, approved.stderr
