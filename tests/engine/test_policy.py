"""engine/core/policy.py: who may remediate in an alert-started run, decided step by step.

The runbooks are loaded by the real loader, the guardrails live in a real
store (a SQLite file; PostgreSQL too where servers share them): what these
tests assert is what `cairn serve` relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.alert_queue import AlertQueue
from engine.core.approval import ApprovalRequest, Decision
from engine.core.loader import check_text
from engine.core.model import Phase, Runbook
from engine.core.policy import AlertApprover, Policy
from tests.engine.test_alert_queue import STORES, store_at

RUNBOOK = """
id: disk-full
title: The disk is full
severity: warning
summary: Old logs fill the disk.
detect:
  - id: usage
    title: Disk usage
    run: df -P /
    confirm: true
remediate:
  - id: rotate
    title: Rotate the logs
    run: logrotate -f /etc/logrotate.conf
    automatic: true
  - id: purge
    title: Purge the old logs
    run: find /var/log -name '*.gz' -delete
  - id: tell
    title: Tell the owner
    manual: Write to the service's owner.
"""


def load(text: str = RUNBOOK) -> Runbook:
    result = check_text(text)
    assert result.runbook is not None, result.problems
    return result.runbook


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[AlertQueue]:
    opened = AlertQueue(tmp_path / "journal.db")
    yield opened
    opened.close()


def ask(runbook: Runbook, step_id: str, host: str = "n1", run_id: str = "run-1") -> ApprovalRequest:
    phase, step = next((p, s) for p in Phase for s in runbook.steps(p) if s.id == step_id)
    return ApprovalRequest(run_id, host, phase, step, "the command")


def test_both_the_runbook_and_the_policy_must_say_yes() -> None:
    runbook = load()
    assert runbook.automatic
    assert (
        Policy().why_not(runbook)
        == "the policy does not automate 'disk-full' (cairn serve --automate disk-full)"
    )
    assert Policy(automate=("disk-*",)).why_not(runbook) == ""
    assert Policy(automate=("disk",)).why_not(runbook) != "", "a pattern matches the whole id"
    manual_only = load(RUNBOOK.replace("    automatic: true\n", ""))
    assert (
        Policy(automate=("disk-full",)).why_not(manual_only)
        == "runbook 'disk-full' marks no remediation step automatic"
    )


def test_the_policy_approves_only_automatic_steps_and_never_a_manual_one(queue: AlertQueue) -> None:
    runbook = load()
    approver = AlertApprover(queue, Policy(automate=("disk-full",)), runbook.id)
    rotate = approver.decide(ask(runbook, "rotate"))
    assert (rotate.decision, rotate.by) == (Decision.APPROVED, "policy")
    purge = approver.decide(ask(runbook, "purge"))
    assert (purge.decision, purge.note) == (
        Decision.NOT_ASKED,
        "not asked: not automatic, it waits for a human (cairn approve run-1)",
    )
    tell = approver.decide(ask(runbook, "tell"))
    assert (tell.decision, tell.note) == (
        Decision.NOT_ASKED,
        "not asked: a manual step needs a human at a terminal (`cairn run` or the TUI)",
    )
    check = approver.decide(ask(runbook, "usage"))
    assert check.decision is Decision.NOT_ASKED, "a check that asks for a human is not run unasked"
    assert approver.escalation == "not automatic, a human decides: purge"


def test_a_tripped_breaker_declines_and_says_why(queue: AlertQueue) -> None:
    runbook = load()
    policy = Policy(automate=("disk-full",), breaker=1)
    first = AlertApprover(queue, policy, runbook.id)
    assert first.decide(ask(runbook, "rotate")).approved
    first.close()
    trips: list[str] = []
    second = AlertApprover(queue, policy, runbook.id, on_trip=trips.append)
    refused = second.decide(ask(runbook, "rotate", run_id="run-2"))
    assert (refused.decision, refused.by) == (Decision.NOT_ASKED, "breaker")
    assert refused.note.startswith(
        "escalated: circuit breaker: 1 automatic remediations on n1 in the last hour"
    )
    assert second.escalation.startswith("circuit breaker: ")
    assert trips == ["breaker"]
    other_host = AlertApprover(queue, policy, runbook.id)
    assert other_host.decide(ask(runbook, "rotate", host="n2")).approved


def test_a_humans_approval_passes_the_breaker_and_holds_a_budget_slot_until_closed(queue: AlertQueue) -> None:
    runbook = load()
    policy = Policy(automate=("disk-full",), breaker=1, budget=1)
    automatic = AlertApprover(queue, policy, runbook.id)
    assert automatic.decide(ask(runbook, "rotate")).approved  # n1's one automatic remediation this hour
    human = AlertApprover(queue, policy, runbook.id, approved_by="alice")
    for step_id in ("rotate", "purge"):
        decided = human.decide(ask(runbook, step_id, run_id="run-h"))
        assert (decided.decision, decided.by) == (Decision.APPROVED, "alice")
    assert human.decide(ask(runbook, "tell")).decision is Decision.NOT_ASKED, (
        "approving commands is not doing a manual step"
    )
    busy = AlertApprover(queue, policy, runbook.id).decide(ask(runbook, "rotate", host="n2"))
    assert busy.by == "budget", "n1 is being changed (twice): the budget of one host is taken"
    human.close()
    assert (
        AlertApprover(queue, policy, runbook.id).decide(ask(runbook, "rotate", host="n3")).by == "budget"
    ), "n1's automatic remediation is still open"
    automatic.close()
    assert AlertApprover(queue, policy, runbook.id).decide(ask(runbook, "rotate", host="n3")).approved


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_at(request, tmp_path)


def test_the_guardrails_hold_across_servers_and_each_server_closes_its_own(store: str) -> None:
    runbook = load()
    policy = Policy(automate=("disk-full",), breaker=1, budget=1)
    web1, web2 = AlertQueue(store, holder="web-1:1:aaaaaa"), AlertQueue(store, holder="web-2:2:bbbbbb")
    try:
        first = AlertApprover(web1, policy, runbook.id)
        assert first.decide(ask(runbook, "rotate", host="n1")).approved
        busy = AlertApprover(web2, policy, runbook.id).decide(
            ask(runbook, "rotate", host="n2", run_id="run-2")
        )
        assert (busy.decision, busy.by) == (Decision.NOT_ASKED, "budget")
        assert busy.note == "escalated: fleet budget: 1 hosts are being remediated now (at most 1): n1"
        assert web2.db.read("SELECT host, holder FROM remediations WHERE ended_at IS NULL") == [
            ("n1", "web-1:1:aaaaaa")
        ]
        first.close()
        again = AlertApprover(web2, policy, runbook.id).decide(
            ask(runbook, "rotate", host="n1", run_id="run-3")
        )
        assert (again.decision, again.by) == (Decision.NOT_ASKED, "breaker"), (
            "web-1's remediation of n1 counts"
        )
        assert AlertApprover(web2, policy, runbook.id).decide(ask(runbook, "rotate", host="n2")).approved
    finally:
        web1.close()
        web2.close()
