"""`cairn serve` with an approval policy: who may approve, how many, never one's own request, until when.

Everything is real: `cairn serve` started with a config file, an Alertmanager-shaped webhook over
HTTP, bash on the inventory's (local-connection) hosts, one PostgreSQL store, and `cairn approve`
/ `cairn request` run as real Unix accounts — alice and bob in group ``cairn-t-sre``, carol outside
it (:mod:`tests.people`): identities come from the uid, so these are the people the policy judges.
The notices the server adds are read back from the store's outbox; one test receives them as a
webhook receiver checking the signature.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.notices import NOTICE_COLUMNS, Notice, NoticeKind, notice_of
from engine.core.queue_read import Entry, EntryState, QueueReader
from engine.core.store.database import Database
from engine.core.store.location import locate
from tests.cli.conftest import Served, alert, entries, runs, wait_for, webhook
from tests.conftest import CairnRunner, cairn_command
from tests.people import GROUP, Person
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.cli]

SECRET = "s3cr3t-Api-Key-77"
HOST = socket.gethostname()

RUNBOOK = """
id: stale-marker
title: A web host's marker is stale
severity: critical
summary: The marker file is missing; touching it is the fix.
inputs:
  api_key: {{type: string, secret: true}}
triggers:
  - matchers: ['alertname = MarkerStale']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: look
    title: Is the marker there
    run: test -e {dir}/{{{{ target }}}}.fixed && echo fixed || echo stale
    expect: out == 'fixed'
    report: "the marker on {{{{ target }}}} is {{{{ out }}}}"
remediate:
  - id: fix
    title: Touch the marker
    why: The web server serves only while its marker is there.
    tradeoff: Nothing is restarted.
    run: touch {dir}/{{{{ target }}}}.fixed && test -n {{{{ inputs.api_key }}}}
"""

POLICY = f"""
approvals:
  expires: {{expires}}
  rules:
    - name: sre
      severity: [critical]
      approvers: {{{{groups: [{GROUP}]}}}}
      quorum: 2
inputs:
  stale-marker: {{{{api_key: {SECRET}}}}}
"""


def config(folder: Path, expires: str = "1h", extra: str = "") -> Path:
    path = folder / "serve.yml"
    path.write_text(POLICY.format(expires=expires) + extra)
    return path


def fire(served: Served, node: str = "web-1") -> None:
    code, body = served.post(webhook(alert(alertname="MarkerStale", node=node)))
    assert code == 200 and len(body["queued"]) == 1, body


def settled(served: Served, *states: EntryState, entry_id: int | None = None) -> Callable[[], Entry | None]:
    """A condition: the newest entry (or ``entry_id``) is in one of ``states``."""

    def check() -> Entry | None:
        found = [e for e in entries(served.journal) if entry_id is None or e.id == entry_id]
        return found[-1] if found and found[-1].state in states else None

    return check


def decide(person: Person, served: Served, verb: str, run_id: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``cairn approve|decline RUN_ID --json`` run as ``person``: its exit code and what it said."""
    done = person.run([*cairn_command(), verb, run_id, "--journal", str(served.journal), "--json", *extra])
    assert done.stdout, done.stderr
    said: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, said


def notices(store: str | Path) -> list[Notice]:
    """The notices in the store's outbox, oldest first."""
    db = Database(locate(store), write=False, what="the outbox")
    try:
        return [notice_of(row) for row in db.read(f"SELECT {NOTICE_COLUMNS} FROM notices ORDER BY id")]
    finally:
        db.close()


def attempts(store: str | Path, entry_id: int) -> list[tuple[str, str, str]]:
    reader = QueueReader(locate(store))
    try:
        return [(a.who.name, a.action.value, a.outcome.value) for a in reader.attempts(entry_id)]
    finally:
        reader.close()


def label(person: Person) -> str:
    """How the journal names ``person`` deciding with ``cairn approve`` on this PostgreSQL store."""
    return f"{person.account} (unix uid {person.uid} on {HOST}, db role postgres, via cli)"


@pytest.mark.postgres
def test_a_quorum_of_two_people_of_the_group_then_the_host_is_checked_again_and_remediated(
    serve: Callable[..., Served], people: dict[str, Person], postgres_url: str, tmp_path: Path
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    served = serve(
        "--config", str(config(tmp_path)), runbook=RUNBOOK.format(dir=tmp_path), journal=postgres_url
    )
    assert f"approvals: sre: 2 of group {GROUP}" in served.stderr.read_text()
    fire(served)
    entry = wait_for(settled(served, EntryState.ESCALATED, EntryState.DONE), "web-1's run")
    assert entry.state is EntryState.ESCALATED
    assert (
        entry.requirement is not None
        and entry.requirement.describe() == f"needs 2 approvers from group {GROUP}"
    )
    assert entry.run_id is not None
    run_id = entry.run_id

    code, said = decide(alice, served, "approve", run_id)
    assert (code, said["outcome"]) == (0, "counted"), said
    assert (said["progress"]["approved"], said["progress"]["quorum"]) == ([alice.account], 2)
    assert f"1 of 2 approvals ({alice.account})" in said["message"]

    code, said = decide(alice, served, "approve", run_id)
    assert (code, said["outcome"]) == (1, "refused")
    assert f"{alice.account} already approved" in said["message"]

    code, said = decide(carol, served, "approve", run_id)
    assert (code, said["outcome"]) == (1, "refused")
    assert said["message"] == f"{carol.account} may not approve this: needs 2 approvers from group {GROUP}"
    assert not (tmp_path / "web-1.fixed").exists(), "nothing ran while the quorum was not met"

    code, said = decide(bob, served, "approve", run_id)
    assert (code, said["outcome"]) == (0, "approved"), said

    done = wait_for(settled(served, EntryState.DONE, entry_id=entry.id), "the approved run", timeout=90)
    assert done.note == f"remediated approved by {alice.account}, {bob.account}; verify is clean"
    assert (tmp_path / "web-1.fixed").exists()
    [approved_run] = [r for r in runs(served.journal) if r.id == done.run_id]
    assert approved_run.id != run_id, "the approval started a new run: it checked the host again first"
    assert [(s.phase, s.step_id, s.status) for s in approved_run.steps] == [
        ("detect", "look", "finding"),
        ("remediate", "fix", "ok"),
        ("verify", "look", "ok"),
    ]
    [approval] = approved_run.approvals
    assert approval.approved and approval.decided_by == f"{label(alice)}; {label(bob)}"
    assert approved_run.trigger["approved_by"] == f"{label(alice)}; {label(bob)}"
    assert attempts(served.journal, entry.id) == [
        (alice.account, "approve", "counted"),
        (alice.account, "approve", "refused"),
        (carol.account, "approve", "refused"),
        (bob.account, "approve", "approved"),
    ]

    told = wait_for(
        lambda: (n := notices(served.journal)) and n[-1].kind is NoticeKind.REMEDIATED and n, "the verdict"
    )
    assert [n.kind for n in told] == [
        NoticeKind.ESCALATED,
        NoticeKind.APPROVAL_COUNTED,
        NoticeKind.APPROVED,
        NoticeKind.REMEDIATION_STARTED,
        NoticeKind.STEP,
        NoticeKind.STEP,
        NoticeKind.REMEDIATED,
    ]
    started = told[3].payload["details"]
    assert started["automatic"] is False and started["approved_by"] == f"{label(alice)}; {label(bob)}"
    assert [n.payload["details"]["step"] for n in told[4:6]] == ["fix", "look"]


@pytest.mark.postgres
def test_who_asked_for_a_run_cannot_approve_it(
    serve: Callable[..., Served], people: dict[str, Person], postgres_url: str, tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    served = serve(
        "--config", str(config(tmp_path)), runbook=RUNBOOK.format(dir=tmp_path), journal=postgres_url
    )
    asked = alice.run([*cairn_command(), "request", "stale-marker", "--target", "web-1", "--reason", "looks stale",
                       "--journal", postgres_url, "--json"])  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    entry = wait_for(
        settled(served, EntryState.ESCALATED, EntryState.DONE, EntryState.FAILED), "the requested run"
    )
    assert entry.state is EntryState.ESCALATED, entry.note
    assert entry.requested_by is not None and entry.requested_by.name == alice.account
    assert entry.run_id is not None

    code, said = decide(alice, served, "approve", entry.run_id)
    assert (code, said["outcome"]) == (1, "refused")
    assert said["message"].startswith(
        f"{alice.account} asked for this run and cannot approve it: needs 2 approvers from group {GROUP}"
    )
    code, said = decide(bob, served, "approve", entry.run_id)
    assert (code, said["outcome"]) == (0, "counted")
    [escalated] = [n for n in notices(served.journal) if n.kind is NoticeKind.ESCALATED]
    assert escalated.payload["details"]["requirement"]["requested_by"]["name"] == alice.account


@pytest.mark.postgres
def test_an_approval_request_expires_and_nothing_runs(
    serve: Callable[..., Served], people: dict[str, Person], postgres_url: str, tmp_path: Path
) -> None:
    served = serve(
        "--config",
        str(config(tmp_path, expires="2s")),
        runbook=RUNBOOK.format(dir=tmp_path),
        journal=postgres_url,
    )
    fire(served)
    escalated = wait_for(settled(served, EntryState.ESCALATED, EntryState.EXPIRED), "web-1's escalation")
    assert escalated.expires_at is not None
    expired = wait_for(settled(served, EntryState.EXPIRED, entry_id=escalated.id), "the request to expire")
    assert expired.note.startswith("approval expired (0 of 2 approvals): nothing was changed")
    assert escalated.run_id is not None
    code, said = decide(people["alice"], served, "approve", escalated.run_id)
    assert (code, said["outcome"]) == (1, "refused")
    assert "expired" in said["message"], said["message"]
    [lapsed] = [n for n in notices(served.journal) if n.kind is NoticeKind.APPROVAL_EXPIRED]
    assert lapsed.entry_id == escalated.id
    assert not (tmp_path / "web-1.fixed").exists()
    assert [s.phase for r in runs(served.journal) for s in r.steps] == ["detect"], "nothing but the check ran"


def test_the_escalation_notice_carries_the_exact_command_for_the_host_and_no_secret(
    serve: Callable[..., Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = WebhookReceiver(secret="hmac-key-from-the-environment").start()
    try:
        monkeypatch.setenv("CAIRN_WEBHOOK_SECRET_PAGER", receiver.secret)
        hook = f"webhooks:\n  - name: pager\n    url: {receiver.url}\n    events: [escalated]\n"
        served = serve("--config", str(config(tmp_path, extra=hook)), runbook=RUNBOOK.format(dir=tmp_path))
        fire(served)
        entry = wait_for(settled(served, EntryState.ESCALATED, EntryState.DONE), "web-1's run")
        [notice] = [n for n in notices(served.journal) if n.kind is NoticeKind.ESCALATED]
        details = notice.payload["details"]
        assert (
            notice.payload["summary"]
            == f"stale-marker on web-1: remediation waits for 2 approvers from group {GROUP}"
        )
        assert details["findings"] == [
            {"step": "look", "host": "web-1", "report": "the marker on web-1 is stale"}
        ]
        [fix] = details["remediation"]
        assert fix["command"] == f'touch {tmp_path}/web-1.fixed && test -n "$CAIRN_SECRET_API_KEY"'
        assert (fix["why"], fix["tradeoff"], fix["deferred"]) == (
            "The web server serves only while its marker is there.",
            "Nothing is restarted.",
            "",
        )
        assert details["decide"]["approve"] == f"cairn approve {entry.run_id}"
        assert SECRET not in json.dumps(notice.payload)
        [received] = receiver.wait(lambda r: r.of_kind("escalated"), "the escalation at the receiver")
        assert received.payload == notice.payload, "signed with the secret from $CAIRN_WEBHOOK_SECRET_PAGER"
        assert receiver.rejected == []
        assert SECRET not in served.stderr.read_text()
    finally:
        receiver.close()


def test_a_plain_http_webhook_to_another_machine_is_warned_about_without_its_url(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    hook = "webhooks:\n  - name: chat\n    url: http://192.0.2.10:8065/hooks/T0KEN-xyz\n    format: slack-compatible\n"
    served = serve("--config", str(config(tmp_path, extra=hook)), runbook=RUNBOOK.format(dir=tmp_path))
    said = served.stderr.read_text()
    assert (
        "cairn serve: warning: webhook:chat posts over plain http:// to a host that is not loopback" in said
    )
    assert "T0KEN-xyz" not in said and "192.0.2.10" not in said


def test_every_bad_approvals_webhooks_and_slack_value_is_said_with_its_line(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    token = tmp_path / "bot-token"
    token.write_text("xoxb-not-private\n")
    token.chmod(0o644)
    bad = tmp_path / "serve.yml"
    bad.write_text(
        "approvals:\n"  # 1
        "  expires: soon\n"  # 2
        "  rules:\n"  # 3
        "    - name: nobody\n"  # 4
        "      approvers: {}\n"  # 5
        "    - name: too-few\n"  # 6
        "      approvers: {users: [alice, bob]}\n"  # 7
        "      quorum: 3\n"  # 8
        "    - approvers: {groups: [sre]}\n"  # 9
        "      quorum: 0\n"  # 10
        "      severity: [urgent]\n"  # 11
        "webhooks:\n"  # 12
        "  - name: pager\n"  # 13
        "    url: ftp://files.example/T0KEN\n"  # 14
        "    events: [escalate]\n"  # 15
        "    format: teams\n"  # 16
        "  - name: pager\n"  # 17
        "    url: https://example.com/hook\n"  # 18
        "    timeout: 0\n"  # 19
        "slack:\n"  # 20
        "  channel: C0123\n"  # 21
        "  bot_token_file: bot-token\n"  # 22
        "  api_url: slack.example\n"  # 23
    )
    result = cairn("serve", "--config", str(bad), "--allow-no-token")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "the config file has problems:" in result.stderr
    for line, problem in [
        (2, "[/approvals/expires] 'soon' is not a duration"),
        (5, "[/approvals/rules/0/approvers] this rule names no approvers"),
        (8, "[/approvals/rules/1/quorum] quorum 3 but only 2 users can approve"),
        (10, "[/approvals/rules/2/quorum] 0 is less than the minimum of 1"),
        (11, "[/approvals/rules/2/severity/0] 'urgent' is not one of ['info', 'warning', 'critical']"),
        (14, "[/webhooks/0/url] url must be an http:// or https:// URL"),
        (15, "[/webhooks/0/events/0] 'escalate' is not one of ['escalated'"),
        (16, "[/webhooks/0/format] 'teams' is not one of ['cairn', 'slack-compatible']"),
        (17, "[/webhooks/1/name] another webhook is named 'pager'"),
        (19, "[/webhooks/1/timeout] 0 is no time at all"),
        (23, "[/slack/api_url] api_url must be an http:// or https:// URL"),
    ]:
        assert f"{bad}:{line}:" in result.stderr and problem in result.stderr, (line, problem, result.stderr)
    assert "T0KEN" not in result.stderr, "a webhook's URL is never shown"

    # The file's structure is right now: what is left is the secrets.
    bad.write_text(f"slack:\n  channel: C0123\n  bot_token_file: {token}\n")
    result = cairn("serve", "--config", str(bad), "--allow-no-token", CAIRN_SLACK_BOT_TOKEN="")
    assert result.returncode == 2
    assert f"{bad}:3:" in result.stderr
    assert (
        f"slack bot_token_file {token} is open to other accounts (mode 0644): run chmod 600 {token}"
        in result.stderr
    )
    assert f"{bad}:1:" in result.stderr
    assert "buttons need either Socket Mode (app_token_file" in result.stderr
    assert "xoxb-not-private" not in result.stderr

    token.chmod(0o600)
    loose = tmp_path / "signing-secret"
    loose.write_text("s1gning\n")
    loose.chmod(0o640)
    result = cairn(
        "serve", "--config", str(bad), "--allow-no-token", "--slack-signing-secret-file", str(loose)
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cairn: error: --slack-signing-secret-file {loose} is open to other accounts (mode 0640): run chmod 600 {loose}"
    )


def test_slack_secrets_may_come_from_the_environment(cairn: CairnRunner, tmp_path: Path) -> None:
    """With both tokens in the environment the config is complete: serve gets as far as its store."""
    conf = tmp_path / "serve.yml"
    conf.write_text("slack:\n  channel: C0123\n")
    result = cairn(
        "serve",
        "--config",
        str(conf),
        "--listen",
        "127.0.0.1:x",
        "--allow-no-token",
        CAIRN_SLACK_BOT_TOKEN="xoxb-1",
        CAIRN_SLACK_SIGNING_SECRET="s1gning",
    )
    assert result.returncode == 2
    assert "--listen '127.0.0.1:x': write HOST:PORT" in result.stderr, "the config itself was fine"
    assert os.environ.get("CAIRN_SLACK_BOT_TOKEN") is None
