"""``cairn approve``, ``decline``, ``request``, ``queue``, ``show-run`` and ``history`` as real Unix accounts.

Identity comes from the process's uid: alice and bob (group ``cairn-t-sre``) and carol (outside it)
are real accounts (:mod:`tests.people`) running the real ``cairn`` against one PostgreSQL store,
as a team shares it. The entries they decide are escalated in-process, as ``cairn serve`` does it:
claimed, started, then escalated with the :class:`Requirement` its approval policy gives.
"""

from __future__ import annotations

import json
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import AlertQueue, Entry, EntryState
from engine.core.alerts import Alert, AlertStatus, Route
from engine.core.approval_policy import ApprovalPolicy
from engine.core.journal import Journal
from engine.core.journal_read import JournalReader
from engine.core.queue_read import QueueReader
from tests.conftest import cairn_command
from tests.people import GROUP, Person
from tests.terminal import EXITED, Terminal, tmux_terminal

pytestmark = [pytest.mark.cli, pytest.mark.postgres]

HOST = socket.gethostname()
SERVER = "test-server:1:aaaaaa"
"""The holder the test escalates as (a ``cairn serve``'s lease id)."""
WAITS = "remediation waits for a human: needs approval"
TWO_OF_SRE = {"name": "sre", "approvers": {"groups": [GROUP]}, "quorum": 2}
ONE_OF_SRE = {"name": "sre", "approvers": {"groups": [GROUP]}, "quorum": 1}
MALLORY = {name: "mallory" for name in ("LOGNAME", "USER", "LNAME", "USERNAME")}
"""An environment that claims to be someone else: every variable ``getpass`` reads."""
NEEDS_TWO = f"needs 2 approvers from group {GROUP}"


def routed(target: str = "web-1", runbook: str = "node-down") -> Route:
    alert = Alert(
        status=AlertStatus.FIRING,
        labels={"alertname": "KubeNodeNotReady", "node": target},
        annotations={},
        fingerprint=f"fp-{runbook}-{target}",
        starts_at="2026-03-01T09:00:00Z",
    )
    return Route(alert, runbook, 0, target)


def escalate(
    queue: AlertQueue,
    entry_id: int,
    run_id: str,
    rule: Mapping[str, Any],
    *,
    escalated_at: float | None = None,
) -> Entry:
    """Claim ``entry_id``, start ``run_id`` on it and escalate it under ``rule``, as ``cairn serve`` does."""
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    assert queue.started(entry_id, run_id)
    requirement = ApprovalPolicy.of({"rules": [dict(rule)]}).requirement(
        claimed.runbook_id,
        [],
        "critical",
        escalated_at=time.time() if escalated_at is None else escalated_at,
        requested_by=claimed.requested_by,
    )
    assert queue.escalate(entry_id, run_id=run_id, note=WAITS, requirement=requirement)
    return queue.entry(entry_id)


def escalated(queue: AlertQueue, rule: Mapping[str, Any] = TWO_OF_SRE, **kwargs: Any) -> Entry:
    """A firing alert's entry on web-1, escalated under ``rule``."""
    [entry_id] = queue.accept([routed()]).queued
    return escalate(queue, entry_id, "20260301-091500-bbbbbb", rule, **kwargs)


def cairn_as(
    person: Person, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return person.run([*cairn_command(), *args], env)


@pytest.fixture
def queue(postgres_url: str) -> Iterator[AlertQueue]:
    opened = AlertQueue(postgres_url, holder=SERVER)
    yield opened
    opened.close()


def attempts(url: str, entry_id: int) -> list[tuple[str, str, str, str]]:
    reader = QueueReader(url)
    try:
        return [(a.who.name, a.action.value, a.outcome.value, a.reason) for a in reader.attempts(entry_id)]
    finally:
        reader.close()


def label(person: Person) -> str:
    return f"{person.account} (unix uid {person.uid} on {HOST}, db role postgres, via cli)"


# ------------------------------------------------------------------ approve, decline


def test_a_quorum_of_two_needs_two_people_of_the_group(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    entry = escalated(queue)
    run = entry.run_id
    assert run is not None
    said = f"node-down on web-1 (queue entry {entry.id}): "

    first = cairn_as(alice, "approve", run, "--journal", postgres_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{said}approval counted: 1 of 2 approvals ({alice.account}); {NEEDS_TWO}\n"

    again = cairn_as(alice, "approve", run, "--journal", postgres_url)
    assert again.returncode == 1, again.stderr
    assert again.stdout == ""
    assert again.stderr == (
        f"cairn: refused: {said}{NEEDS_TWO}; {alice.account} already approved; 1 of 2 so far ({alice.account})\n"
    )

    outsider = cairn_as(carol, "approve", run, "--journal", postgres_url)
    assert outsider.returncode == 1
    assert outsider.stderr == f"cairn: refused: {said}{carol.account} may not approve this: {NEEDS_TWO}\n"
    assert queue.entry(entry.id).state is EntryState.ESCALATED, "refusals change nothing"

    listed = cairn_as(carol, "queue", "--journal", postgres_url)  # anyone who can read the store sees it
    assert listed.returncode == 0, listed.stderr
    assert f"progress   1 of 2 approvals ({alice.account})" in listed.stdout
    assert f"approvers  {NEEDS_TWO}" in listed.stdout
    assert "expires    in 23h59m" in listed.stdout or "expires    in 24h" in listed.stdout
    assert f"{alice.account} approve: counted" in listed.stdout
    assert f"{carol.account} approve: refused — {carol.account} may not approve this" in listed.stdout

    second = cairn_as(bob, "approve", run, "--journal", postgres_url)
    assert second.returncode == 0, second.stderr
    assert second.stdout == (
        f"{said}approved (2 of 2 approvals ({alice.account}, {bob.account})): "
        "the next run checks again, then remediates\n"
    )
    after = queue.entry(entry.id)
    assert after.state is EntryState.QUEUED
    assert after.approved_by == f"{label(alice)}; {label(bob)}"
    assert attempts(postgres_url, entry.id) == [
        (alice.account, "approve", "counted", ""),
        (alice.account, "approve", "refused", ""),
        (carol.account, "approve", "refused", ""),
        (bob.account, "approve", "approved", ""),
    ]

    late = cairn_as(carol, "decline", run, "--journal", postgres_url)
    assert late.returncode == 1
    assert f"run {run} is not waiting for a human: its queue entry {entry.id} is queued" in late.stderr


def test_the_environment_names_nobody_and_there_is_no_by(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice = people["alice"]
    entry = escalated(queue)
    assert entry.run_id is not None

    claimed = cairn_as(alice, "approve", entry.run_id, "--by", "mallory", "--journal", postgres_url)
    assert claimed.returncode == 2
    assert "unrecognized arguments: --by mallory" in claimed.stderr

    lying = cairn_as(alice, "approve", entry.run_id, "--journal", postgres_url, env=MALLORY)
    assert lying.returncode == 0, lying.stderr
    assert "mallory" not in lying.stdout
    reader = QueueReader(postgres_url)
    try:
        [attempt] = reader.attempts(entry.id)
    finally:
        reader.close()
    assert (attempt.who.id, attempt.who.uid, attempt.who.role) == (alice.account, alice.uid, "postgres")
    assert attempt.who.label == label(alice)

    helped = cairn_as(alice, "approve", "--help")
    assert helped.returncode == 0
    assert "uid" in helped.stdout and "$USER" in helped.stdout


def test_who_asked_for_a_run_cannot_approve_it(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice, bob = people["alice"], people["bob"]
    asked = cairn_as(
        alice,
        "request",
        "node-down",
        "--target",
        "web-2",
        "--reason",
        "disk filling",
        "--journal",
        postgres_url,
    )
    assert asked.returncode == 0, asked.stderr
    assert "requested: node-down on web-2 (queue entry 1)" in asked.stdout
    assert "you cannot approve its remediation yourself" in asked.stdout
    assert "no live cairn serve" in asked.stdout, "nothing will run it until a server starts"
    [entry] = queue.entries()
    assert (entry.state, entry.runbook_id, entry.target) == (EntryState.QUEUED, "node-down", "web-2")
    assert entry.requested_by is not None and entry.requested_by.label == label(alice)
    assert entry.note == f"requested by {alice.account}: disk filling"

    twice = cairn_as(bob, "request", "node-down", "--target", "web-2", "--journal", postgres_url)
    assert twice.returncode == 2
    assert twice.stderr.count("\n") == 1 and "node-down on web-2 already has an active entry" in twice.stderr

    escalate(queue, entry.id, "20260301-100000-cccccc", ONE_OF_SRE)
    listed = cairn_as(bob, "queue", "--journal", postgres_url)
    assert f"asked by   {label(alice)}" in listed.stdout

    own = cairn_as(alice, "approve", "20260301-100000-cccccc", "--journal", postgres_url)
    assert own.returncode == 1
    assert f"{alice.account} asked for this run and cannot approve it" in own.stderr
    other = cairn_as(bob, "approve", "20260301-100000-cccccc", "--journal", postgres_url)
    assert other.returncode == 0, other.stderr
    assert f"approved (1 of 1 approval ({bob.account}))" in other.stdout


def test_request_refuses_what_is_not_a_runbook_id_or_target(
    people: dict[str, Person], postgres_url: str
) -> None:
    alice = people["alice"]
    for args, said in (
        (["Node Down", "--target", "web-1"], "'Node Down' is not a runbook id"),
        (["node-down", "--target", " "], "give the host to run it on"),
        (["node-down", "--target", "web-1\x1b[2J"], "the target may not contain"),
    ):
        done = cairn_as(alice, "request", *args, "--journal", postgres_url)
        assert done.returncode == 2, done.stdout
        assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_decline_ends_the_entry_with_the_reason_and_an_outsider_cannot(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    bob, carol = people["bob"], people["carol"]
    entry = escalated(queue)
    assert entry.run_id is not None
    refused = cairn_as(carol, "decline", entry.run_id, "--reason", "no", "--journal", postgres_url)
    assert refused.returncode == 1
    assert f"{carol.account} may not decide this: {NEEDS_TWO}" in refused.stderr

    done = cairn_as(
        bob, "decline", entry.run_id, "--reason", "web-1 is being drained", "--journal", postgres_url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node-down on web-1 (queue entry {entry.id}): declined: nothing is changed\n"
    after = queue.entry(entry.id)
    assert (after.state, after.note) == (
        EntryState.DECLINED,
        f"declined by {bob.account}: web-1 is being drained",
    )
    assert attempts(postgres_url, entry.id) == [
        (carol.account, "decline", "refused", "no"),
        (bob.account, "decline", "declined", "web-1 is being drained"),
    ]


def test_json_says_the_outcome_the_progress_and_the_entry(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice, carol = people["alice"], people["carol"]
    entry = escalated(queue)
    assert entry.run_id is not None

    counted = cairn_as(alice, "approve", entry.run_id, "--json", "--journal", postgres_url)
    assert counted.returncode == 0, counted.stderr
    data = json.loads(counted.stdout)
    assert data["outcome"] == "counted"
    assert data["message"] == f"approval counted: 1 of 2 approvals ({alice.account}); {NEEDS_TWO}"
    assert data["progress"] == {
        "approved": [alice.account],
        "quorum": 2,
        "describe": f"1 of 2 approvals ({alice.account})",
    }
    assert (data["entry"]["id"], data["entry"]["state"]) == (entry.id, "escalated")

    refused = cairn_as(carol, "approve", entry.run_id, "--json", "--journal", postgres_url)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["outcome"] == "refused"

    listed = json.loads(cairn_as(carol, "queue", "--json", "--journal", postgres_url).stdout)
    [shown] = listed["entries"]
    assert shown["requirement"]["describe"] == NEEDS_TWO
    assert shown["requirement"]["quorum"] == 2 and shown["requirement"]["approvers"]["groups"] == [GROUP]
    assert shown["progress"] == {
        "approved": [alice.account],
        "quorum": 2,
        "describe": f"1 of 2 approvals ({alice.account})",
    }
    assert shown["requested_by"] is None
    assert shown["expires_at"] == pytest.approx(time.time() + 24 * 3600, abs=120)
    assert [(a["who"], a["action"], a["outcome"]) for a in shown["attempts"]] == [
        (label(alice), "approve", "counted"),
        (label(carol), "approve", "refused"),
    ]
    assert shown["attempts"][1]["message"] == f"{carol.account} may not approve this: {NEEDS_TWO}"
    assert set(shown["attempts"][0]) >= {"at", "action", "outcome", "who", "identity", "reason", "message"}

    asked = cairn_as(carol, "request", "node-down", "--target", "web-3", "--json", "--journal", postgres_url)
    assert asked.returncode == 0, asked.stderr
    request = json.loads(asked.stdout)
    assert request["live_servers"] == 0
    assert (request["entry"]["state"], request["entry"]["target"]) == ("queued", "web-3")
    assert request["entry"]["requested_by"]["label"] == label(carol)


def test_no_such_run_and_an_unreachable_store_exit_2_in_one_line(
    people: dict[str, Person], postgres_url: str
) -> None:
    alice = people["alice"]
    missing = cairn_as(alice, "approve", "20991231-nope", "--journal", postgres_url)
    assert missing.returncode == 2
    assert missing.stderr.startswith("cairn: error: ") and missing.stderr.count("\n") == 1
    gone = cairn_as(alice, "approve", "x", "--journal", "postgresql://cairn:s3cret@127.0.0.1:1/none")
    assert gone.returncode == 2
    assert gone.stderr.startswith("cairn: error: ") and gone.stderr.count("\n") == 1, gone.stderr
    assert "s3cret" not in gone.stderr and "Traceback" not in gone.stderr


def test_an_expired_request_is_refused_then_listed_with_all(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice = people["alice"]
    lapsed = {**TWO_OF_SRE, "expires": "1h"}
    entry = escalated(queue, lapsed, escalated_at=time.time() - 7200)
    assert entry.run_id is not None
    listed = cairn_as(alice, "queue", "--journal", postgres_url)
    assert "expires    expired" in listed.stdout

    late = cairn_as(alice, "approve", entry.run_id, "--journal", postgres_url)
    assert late.returncode == 1
    assert "the approval request expired: nothing will run" in late.stderr

    assert [e.id for e in queue.expire()] == [entry.id]
    waiting = cairn_as(alice, "queue", "--journal", postgres_url)
    assert "nothing waits for a human" in waiting.stdout
    everything = cairn_as(alice, "queue", "--all", "--journal", postgres_url)
    assert "expired" in everything.stdout and "approval expired (0 of 2 approvals)" in everything.stdout


# ------------------------------------------------------------------ show-run, history, interactive runs


RUNBOOK = """\
id: node-down
title: A node stops reporting ready
severity: critical
summary: The kubelet's marker is missing.
detect:
  - id: look
    title: Look for the kubelet's marker
    run: echo missing
    expect: out == 'present'
    report: "marker {{ out }}"
remediate:
  - id: restart
    title: Restart the kubelet
    run: "true"
verify:
  - id: again
    title: Look again
    run: echo present
    expect: out == 'present'
"""


def alert_run(url: str, entry: Entry, *, approved_by: str | None = None) -> str:
    """A run of ``node-down`` on this machine for ``entry``, journaled as ``cairn serve`` starts it."""
    from engine.core.approval import NobodyToAsk
    from engine.core.launch import prepare_run
    from engine.core.loader import check_text
    from engine.core.model import LOCALHOST, Phase
    from engine.core.spec import RunSpec, Trigger, TriggerKind

    runbook = check_text(RUNBOOK).runbook
    assert runbook is not None
    journal = Journal(url)
    try:
        spec = RunSpec(
            runbook=runbook,
            hosts=(LOCALHOST,),
            inputs={},
            trigger=Trigger(kind=TriggerKind.ALERT, queue_entry=entry.id, approved_by=approved_by),
            alert=entry.alert,
            last_phase=Phase.DIAGNOSE,
            unattended=True,
            started_by="alertmanager",
        )
        runner = prepare_run(spec, journal=journal, approver=NobodyToAsk())
        runner.run()
    finally:
        journal.close()
    return runner.run_id


def test_show_run_and_history_name_who_decided(
    people: dict[str, Person], queue: AlertQueue, postgres_url: str
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    [entry_id] = queue.accept([routed()]).queued
    first = alert_run(postgres_url, queue.entry(entry_id))
    entry = escalate(queue, entry_id, first, TWO_OF_SRE)
    for person, verb in ((alice, "approve"), (carol, "approve"), (bob, "approve")):
        cairn_as(person, verb, first, "--journal", postgres_url)
    approved_by = queue.entry(entry.id).approved_by
    second = alert_run(postgres_url, queue.entry(entry.id), approved_by=approved_by)

    shown = cairn_as(carol, "show-run", first, "--journal", postgres_url)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"decisions (queue entry {entry.id}, now queued): {NEEDS_TWO}" in text
    assert f"2 of 2 approvals ({alice.account}, {bob.account})" in text
    assert f"approve counted   by {label(alice)}" in text
    assert f"approve refused   by {label(carol)} — {carol.account} may not approve this" in text
    assert f"approve approved  by {label(bob)}" in text
    as_json = json.loads(cairn_as(carol, "show-run", first, "--json", "--journal", postgres_url).stdout)
    decisions = as_json["decisions"]
    assert decisions["entry"]["id"] == entry.id and decisions["progress"]["approved"] == [
        alice.account,
        bob.account,
    ]
    assert [(a["identity"]["id"], a["outcome"]) for a in decisions["attempts"]] == [
        (alice.account, "counted"),
        (carol.account, "refused"),
        (bob.account, "approved"),
    ]

    history = cairn_as(carol, "history", "--journal", postgres_url)
    assert history.returncode == 0, history.stderr
    [line] = [row for row in history.stdout.splitlines() if row.startswith(second)]
    assert line.endswith(f"alert KubeNodeNotReady node=web-1; approved by {alice.account}, {bob.account}")
    listed = json.loads(cairn_as(carol, "history", "--json", "--journal", postgres_url).stdout)
    by_id = {run["id"]: run for run in listed}
    assert by_id[second]["approved_by"] == [label(alice), label(bob)]
    assert by_id[first]["approved_by"] == []


def test_an_interactive_runs_approval_is_journaled_as_the_uids_account(
    people: dict[str, Person], postgres_url: str
) -> None:
    alice = people["alice"]
    folder = Path(tempfile.mkdtemp(prefix="cairn-approvals-", dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        (folder / "node-down.yaml").write_text(textwrap.dedent(RUNBOOK), encoding="utf-8")
        (folder / "node-down.yaml").chmod(0o644)
        terminal: Terminal
        with tmux_terminal() as terminal:
            terminal.start(
                [
                    "setpriv",
                    f"--reuid={alice.uid}",
                    f"--regid={pwd.getpwuid(alice.uid).pw_gid}",
                    "--init-groups",
                    "--reset-env",
                    "env",
                    *(f"{k}={v}" for k, v in MALLORY.items()),
                    f"HOME={alice.home}",
                    *cairn_command(),
                    "run",
                    "node-down",
                    "--runbooks",
                    str(folder),
                    "--journal",
                    postgres_url,
                ],
                {},
                width=120,
            )
            terminal.wait_for(lambda screen: "run it?" in screen, "the approval prompt")
            terminal.keys("y", "Enter")
            terminal.wait_for(lambda screen: f"{EXITED}0" in screen, "the run to end", history=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    journal = JournalReader(postgres_url)
    try:
        run = journal.get_run("last")
    finally:
        journal.close()
    assert run.started_by == f"{alice.account}@{HOST}"
    [approval] = run.approvals
    assert approval.decided_by == f"tty:{alice.account} (db role postgres)"
