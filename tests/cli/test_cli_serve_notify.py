"""`cairn serve` notifying: every notice to every configured webhook, signed, at least once, never lost
and never in the way.

Everything is real: `cairn serve` started with a config file (``webhooks:``), Alertmanager-shaped
webhooks over HTTP, bash on the inventory's (local-connection) hosts, and the receivers — real
aiohttp servers on loopback that check the HMAC signature as docs/notifications.md tells a
receiver to (tests/webhook_receiver.py), and that the tests make refuse, answer 503 or go away.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import Entry, EntryState
from engine.core.notices import NoticeKind, notice_of, payload
from engine.core.outbox import Delivery
from engine.serve.notify_settings import WebhookSettings
from engine.serve.webhooks import Webhook
from tests.cli.conftest import Served, alert, entries, wait_for, webhook
from tests.conftest import CairnRunner
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.cli]

RUNBOOK = """
id: stale-marker
title: A web host's marker is stale
severity: critical
summary: The marker file is missing; touching it is the fix.
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
    run: touch {dir}/{{{{ target }}}}.fixed
"""


@pytest.fixture
def receivers() -> Iterator[Callable[[str], WebhookReceiver]]:
    started: list[WebhookReceiver] = []

    def start(secret: str) -> WebhookReceiver:
        started.append(WebhookReceiver(secret=secret).start())
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def config(folder: Path, **hooks: tuple[WebhookReceiver, str, str]) -> Path:
    """A config naming each webhook ``name=(receiver, its secret as configured, format)``; the
    secrets in files only the server's account reads."""
    lines = ["webhooks:"]
    for name, (receiver, secret, form) in hooks.items():
        secret_file = folder / f"{name}.secret"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        lines += [
            f"  - name: {name}",
            f"    url: {receiver.url}",
            f"    secret_file: {secret_file}",
            f"    format: {form}",
        ]
    path = folder / "serve.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fire(served: Served, node: str) -> None:
    code, body = served.post(webhook(alert(alertname="MarkerStale", node=node)))
    assert code == 200 and len(body["queued"]) == 1, body


def escalated(served: Served, count: int = 1) -> list[Entry]:
    return wait_for(
        lambda: (found := entries(served.journal, EntryState.ESCALATED)) and len(found) == count and found,
        f"{count} entries to escalate",
    )


def notifications(served: Served) -> dict[str, Any]:
    code, body = served.health()
    assert code == 200, body  # a failing sink never makes the server unhealthy
    section: dict[str, Any] = body["notifications"]
    return section


def sent_all(served: Served) -> Callable[[], dict[str, Any] | None]:
    """A condition: nothing is left to send (what /healthz says then)."""

    def check() -> dict[str, Any] | None:
        section = notifications(served)
        return section if section["pending"] == 0 else None

    return check


def metric(served: Served, name: str) -> str:
    code, text = served.get("/metrics")
    assert code == 200
    return next((line for line in text.splitlines() if line.startswith(name)), "")


def test_an_escalation_reaches_each_webhook_signed_with_the_documented_payload(
    serve: Callable[..., Served], receivers: Callable[[str], WebhookReceiver], tmp_path: Path
) -> None:
    pager, chat = receivers("pager-secret"), receivers("chat-secret")
    served = serve(
        "--config",
        str(
            config(
                tmp_path,
                pager=(pager, "pager-secret", "cairn"),
                chat=(chat, "chat-secret", "slack-compatible"),
            )
        ),
        runbook=RUNBOOK.format(dir=tmp_path),
    )
    started = served.stderr.read_text()
    assert "notifies webhook:pager, webhook:chat" in started
    assert "approvals: one approver, any local account that can write the store" in started
    fire(served, "web-1")
    [entry] = escalated(served)

    [got] = pager.wait(lambda r: r.of_kind("escalated"), "the escalation at the pager")
    body = got.payload
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Cairn-Delivery"] == body["id"], "the idempotency key, in the header and the body"
    assert int(got.headers["X-Cairn-Timestamp"]) > 0
    assert got.headers["X-Cairn-Signature"].startswith("sha256="), "checked by the receiver: it accepted it"
    assert (
        json.loads(got.body) == body
        and got.body == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    )
    assert (body["version"], body["kind"], body["host"]) == (1, "escalated", "web-1")
    assert (body["entry"]["id"], body["entry"]["run_id"]) == (entry.id, entry.run_id)
    assert body["runbook"]["id"] == "stale-marker"
    [fix] = body["details"]["remediation"]
    assert (fix["step"], fix["command"], fix["deferred"]) == ("fix", f"touch {tmp_path}/web-1.fixed", "")
    assert (fix["why"], fix["tradeoff"]) == (
        "The web server serves only while its marker is there.",
        "Nothing is restarted.",
    )
    assert [f["report"] for f in body["details"]["findings"]] == ["the marker on web-1 is stale"]

    [chatted] = chat.wait(lambda r: r.of_kind("escalated"), "the escalation in the chat")
    text = chatted.payload["text"]
    assert set(chatted.payload) == {"text"}, "what Mattermost's and Teams' incoming webhooks take"
    assert text.startswith(f"**{body['summary']}**\n")
    assert f"```\ntouch {tmp_path}/web-1.fixed\n```" in text and "the marker on web-1 is stale" in text
    assert chatted.headers["X-Cairn-Delivery"] == body["id"], "the same notice, the same key"

    section = wait_for(sent_all(served), "the deliveries to be recorded")
    assert (section["abandoned"], section["last_error"]) == (0, "")
    assert [(s["name"], s["state"], s["delivered"]) for s in section["sinks"]] == [
        ("webhook:pager", "ok", 1),
        ("webhook:chat", "ok", 1),
    ]
    assert metric(served, 'cairn_notice_deliveries_total{result="delivered",sink="webhook:pager"}').endswith(
        " 1.0"
    )
    assert metric(served, "cairn_notices_pending ") == "cairn_notices_pending 0.0"
    assert pager.path not in served.stderr.read_text(), "a webhook's URL (its token) is never logged"


def test_a_receiver_that_refuses_the_signature_gets_it_once_and_healthz_says_it_was_abandoned(
    serve: Callable[..., Served], receivers: Callable[[str], WebhookReceiver], tmp_path: Path
) -> None:
    pager = receivers("the-receivers-secret")
    served = serve(
        "--config", str(config(tmp_path, pager=(pager, "another-secret", "cairn"))),
        runbook=RUNBOOK.format(dir=tmp_path),
    )  # fmt: skip
    fire(served, "web-1")
    escalated(served)
    section = wait_for(lambda: (s := notifications(served))["abandoned"] == 1 and s, "the delivery abandoned")
    assert pager.accepted == [] and [r.answered for r in pager.rejected] == [401], "a 4xx is not tried again"
    assert section["pending"] == 0
    assert section["last_error"] == 'webhook:pager: answered 401: {"error": "bad signature"}'
    [sink] = section["sinks"]
    assert (sink["state"], sink["abandoned"], sink["delivered"]) == ("failing", 1, 0)
    log = served.stderr.read_text()
    key = pager.rejected[0].key
    assert (
        f"webhook:pager: gave up on notice {key} (entry " in log
        and 'answered 401: {"error": "bad signature"}' in log
    )
    assert pager.path not in log
    assert metric(served, "cairn_notices_abandoned ") == "cairn_notices_abandoned 1.0"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_server_stopped_with_undelivered_notices_then_a_restart_delivers_each_once(
    serve: Callable[..., Served],
    receivers: Callable[[str], WebhookReceiver],
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    pager = receivers("pager-secret")
    pager.down()
    settings = config(tmp_path, pager=(pager, "pager-secret", "cairn"))
    runbook = RUNBOOK.format(dir=tmp_path)
    served = serve("--config", str(settings), runbook=runbook)
    fire(served, "web-1")
    fire(served, "web-2")
    escalated(served, 2)
    wait_for(
        lambda: "webhook:pager: could not connect: Connection refused" in served.stderr.read_text(),
        "the pager to be found down",
    )
    assert notifications(served)["pending"] == 2
    served.process.send_signal(stop)
    assert served.process.wait(timeout=60) == (0 if stop is signal.SIGTERM else -signal.SIGKILL)

    pager.up()
    again = serve("--config", str(settings), runbook=runbook)
    pager.wait(lambda r: len(r.keys()) == 2, "both escalations after the restart")
    wait_for(sent_all(again), "the deliveries to be recorded")
    assert sorted(pager.keys().values()) == [1, 1], "each notice once per idempotency key"
    assert {r.payload["entry"]["target"] for r in pager.accepted} == {"web-1", "web-2"}
    assert all(r.key == r.payload["id"] for r in pager.accepted)


def test_a_chat_outage_blocks_no_approval_and_no_run_and_its_notices_follow_in_order_once(
    serve: Callable[..., Served],
    receivers: Callable[[str], WebhookReceiver],
    cairn: CairnRunner,
    tmp_path: Path,
) -> None:
    pager = receivers("pager-secret")
    pager.answer(503, retry_after="1")
    served = serve(
        "--config", str(config(tmp_path, pager=(pager, "pager-secret", "cairn"))),
        runbook=RUNBOOK.format(dir=tmp_path),
    )  # fmt: skip
    fire(served, "web-1")
    [entry] = escalated(served)
    pager.wait(lambda r: len(r.rejected) >= 2, "two tries answered 503")
    first, second = pager.rejected[:2]
    assert [first.answered, second.answered] == [503, 503] and first.key == second.key
    assert int(second.headers["X-Cairn-Timestamp"]) > int(first.headers["X-Cairn-Timestamp"]), (
        "tried again after Retry-After, not at once"
    )

    assert entry.run_id is not None
    approved = cairn("approve", entry.run_id, "--journal", str(served.journal))
    assert approved.returncode == 0, approved.stderr  # the pager is down: the decision does not wait for it
    done = wait_for(
        lambda: (e := entries(served.journal)[0]).state is EntryState.DONE and e,
        "the approved run to remediate",
    )
    assert done.note.startswith("remediated approved by") and (tmp_path / "web-1.fixed").exists()
    assert pager.accepted == []

    pager.answer(200)
    pager.wait(lambda r: r.of_kind("remediated"), "the notices once the pager answers")
    wait_for(sent_all(served), "the deliveries to be recorded")
    kinds = [r.event for r in pager.accepted]
    assert kinds == ["escalated", "approved", "remediation_started", "remediated"], (
        "an entry's notices in order"
    )
    assert sorted(pager.keys().values()) == [1, 1, 1, 1], "each once"
    [sink] = notifications(served)["sinks"]
    assert (sink["state"], sink["delivered"], sink["retried"] >= 2) == ("ok", 4, True)
    log = served.stderr.read_text()
    assert "webhook:pager: answered 503" in log and "webhook:pager delivers again" in log


def test_the_receiver_refuses_a_body_changed_on_the_way(receivers: Callable[[str], WebhookReceiver]) -> None:
    """The check the tests above rely on can fail: what is signed is the timestamp and the exact body."""
    receiver = receivers("k")
    sink = Webhook(WebhookSettings("pager", receiver.url, secret="k"))
    body = payload(NoticeKind.DECLINED, key="entry:1:declined:7", summary="declined", at=0)
    notice = notice_of((1, body["id"], "declined", 1, None, 0.0, json.dumps(body)))
    data, headers = sink.request(notice, 1_700_000_000)
    expected = hmac.new(b"k", b"1700000000." + data, hashlib.sha256).hexdigest()
    assert headers["X-Cairn-Signature"] == f"sha256={expected}"
    for changed in (data.replace(b"declined", b"approved"), data):
        request = urllib.request.Request(
            receiver.url, data=changed, headers=headers | {"X-Cairn-Timestamp": "1700000001"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 401
    sink.deliver(Delivery(1, sink.name, 0, notice))
    assert [r.key for r in receiver.accepted] == ["entry:1:declined:7"]
    assert [r.answered for r in receiver.rejected] == [401, 401]


@pytest.mark.postgres
def test_servers_sharing_a_store_send_each_notice_once(
    serve: Callable[..., Served],
    receivers: Callable[[str], WebhookReceiver],
    tmp_path: Path,
    postgres_url: str,
) -> None:
    nodes = [f"web-{n}" for n in range(1, 9)]
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(
        "all:\n  children:\n    web:\n      hosts:\n"
        + "".join(f"        {node}: {{ansible_connection: local}}\n" for node in nodes)
    )
    pager = receivers("pager-secret")
    settings = str(config(tmp_path, pager=(pager, "pager-secret", "cairn")))
    runbook = RUNBOOK.format(dir=tmp_path)
    servers = [
        serve("--config", settings, runbook=runbook, hosts=str(inventory), journal=postgres_url)
        for _ in range(2)
    ]
    code, body = servers[0].post(webhook(*(alert(alertname="MarkerStale", node=node) for node in nodes)))
    assert code == 200 and len(body["queued"]) == len(nodes), body
    escalated(servers[0], len(nodes))
    pager.wait(lambda r: len(r.keys()) == len(nodes), "every escalation")
    for served in servers:
        wait_for(sent_all(served), "the deliveries to be recorded")
    assert set(pager.keys().values()) == {1}, "no notice sent by both servers"
    delivered = [s["delivered"] for served in servers for s in notifications(served)["sinks"]]
    assert sum(delivered) == len(nodes)
