"""Decisions in the store: every attempt journaled with its author, quorum, expiry, requests, and
the notice of each change committed with the change (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from engine.core.alert_queue import Action, AlertQueue, EntryState, Outcome
from engine.core.approval_policy import ApprovalPolicy, Requirement
from engine.core.errors import JournalError
from engine.core.identity import Identity, Via
from engine.core.notices import NoticeKind, payload
from engine.core.store.database import Database
from engine.core.store.location import locate
from tests.engine.test_alert_queue import person, routed, store  # noqa: F401 (the store fixture)
from tests.engine.test_queue_shared import race

NOW = 1_900_000_000.0
SRE = ApprovalPolicy.of(
    {"rules": [{"name": "critical", "approvers": {"groups": ["sre"]}, "quorum": 2, "expires": "1h"}]}
)


def sre(name: str) -> Identity:
    return Identity("unix", name, name, Via.CLI, groups=("sre",), uid=1000, machine="ops-1")


@pytest.fixture
def server(store: str) -> Iterator[AlertQueue]:  # noqa: F811
    queue = AlertQueue(store, holder="web-1")
    yield queue
    queue.close()


def escalate(
    queue: AlertQueue,
    target: str = "n1",
    run_id: str = "20261207-060000-aaaaaa",
    requirement: Requirement | None = None,
    entry_id: int | None = None,
) -> int:
    """An entry escalated as cairn serve escalates one: with its requirement and its notice."""
    if entry_id is None:
        [entry_id] = queue.accept([routed(target=target, fingerprint=f"fp-{target}")], now=NOW).queued
    claimed = queue.claim(now=NOW)
    assert claimed is not None and claimed.id == entry_id
    assert queue.started(entry_id, run_id, now=NOW)
    needs = requirement or SRE.requirement("node-down", [], "critical", escalated_at=NOW)
    body = payload(NoticeKind.ESCALATED, key=f"entry:{entry_id}:escalated:{run_id}", summary="waits", at=NOW)
    assert queue.escalate(
        entry_id, run_id=run_id, note="waits for 2", requirement=needs, notice=body, now=NOW
    )
    return entry_id


def notices_of(queue: AlertQueue, entry_id: int) -> list[tuple[str, str]]:
    rows = queue.db.read("SELECT kind, key FROM notices WHERE entry_id = ? ORDER BY id", (entry_id,))
    return [(str(kind), str(key)) for kind, key in rows]


def test_a_quorum_of_two_journals_every_attempt_and_tells_of_each_change(server: AlertQueue) -> None:
    entry_id = escalate(server)
    steps = [
        (sre("alice"), Outcome.COUNTED, "approval counted: 1 of 2 approvals (alice)"),
        (sre("alice"), Outcome.REFUSED, "alice already approved; 1 of 2 so far (alice)"),
        (person("carol"), Outcome.REFUSED, "carol may not approve this: needs 2 approvers from group sre"),
        (sre("bob"), Outcome.APPROVED, "approved (2 of 2 approvals (alice, bob))"),
    ]
    for at, (who, outcome, said) in enumerate(steps, start=1):
        decided = server.decide("20261207-060000-aaaaaa", who, Action.APPROVE, now=NOW + at)
        assert decided.outcome is outcome and said in decided.message, decided.message
    entry = server.entry(entry_id)
    assert entry.state is EntryState.QUEUED
    assert entry.approved_by is not None
    assert (
        entry.approved_by.startswith("alice (unix uid 1000 on ops-1")
        and "; bob (unix uid 1000" in entry.approved_by
    )
    journaled = server.attempts(entry_id)
    assert [(a.who.name, a.outcome.value) for a in journaled] == [
        ("alice", "counted"),
        ("alice", "refused"),
        ("carol", "refused"),
        ("bob", "approved"),
    ]
    assert all(a.who.uid == 1000 and a.who.machine == "ops-1" for a in journaled)
    assert [kind for kind, _ in notices_of(server, entry_id)] == ["escalated", "approval_counted", "approved"]
    progress = server.progress(entry)
    assert progress is not None and progress.describe() == "2 of 2 approvals (alice, bob)"


def test_the_notice_is_part_of_the_decisions_transaction(server: AlertQueue) -> None:
    entry_id = escalate(server)
    [(_, key)] = notices_of(server, entry_id)
    decided = server.decide(
        "20261207-060000-aaaaaa", sre("alice"), Action.DECLINE, reason="draining", now=NOW + 1
    )
    assert decided.outcome is Outcome.DECLINED and decided.entry.state is EntryState.DECLINED
    assert decided.entry.note == "declined by alice: draining"
    [row] = server.db.read("SELECT payload FROM notices WHERE kind = 'declined'")
    body = json.loads(row[0])
    assert body["details"]["decision"]["reason"] == "draining"
    assert body["entry"]["state"] == "declined" and body["entry"]["id"] == entry_id
    assert body["details"]["decision"]["by_identity"]["name"] == "alice"
    body2 = payload(NoticeKind.ESCALATED, key=key, summary="again", at=NOW)
    server.add_notice(NoticeKind.ESCALATED, body2, entry_id=entry_id, run_id=None)
    assert len(notices_of(server, entry_id)) == 2, "a notice is added once per key"


def test_two_approvers_at_once_make_one_approval(store: str) -> None:  # noqa: F811
    server = AlertQueue(store, holder="web-1")
    humans = [AlertQueue(store), AlertQueue(store)]
    try:
        for round_ in range(8):
            run_id = f"20261207-0600{round_:02}-aaaaaa"
            entry_id = escalate(server, f"n{round_}", run_id)

            def approve(index: int, run_id: str = run_id) -> Outcome:
                return humans[index].decide(run_id, sre(("alice", "bob")[index]), Action.APPROVE).outcome

            outcomes = race(approve, 2)
            assert sorted(o.value for o in outcomes) == ["approved", "counted"], outcomes
            assert server.entry(entry_id).state is EntryState.QUEUED
            claimed = server.claim()
            assert claimed is not None and claimed.id == entry_id
            assert server.finish(entry_id, EntryState.DONE, note="remediated")
    finally:
        server.close()
        for human in humans:
            human.close()


def test_an_expired_request_ends_without_changing_anything(server: AlertQueue) -> None:
    entry_id = escalate(server)
    server.decide("20261207-060000-aaaaaa", sre("alice"), Action.APPROVE, now=NOW + 1)
    assert server.expire(now=NOW + 3599) == []
    [expired] = server.expire(now=NOW + 3600)
    assert (expired.id, expired.state) == (entry_id, EntryState.EXPIRED)
    assert expired.note.startswith("approval expired (1 of 2 approvals (alice)): nothing was changed")
    assert server.expire(now=NOW + 4000) == [], "expired once"
    late = server.decide("20261207-060000-aaaaaa", sre("bob"), Action.APPROVE, now=NOW + 3601)
    assert late.refused and "is not waiting for a human" in late.message and "expired" in late.message
    assert [kind for kind, _ in notices_of(server, entry_id)] == [
        "escalated",
        "approval_counted",
        "approval_expired",
    ]
    assert server.claim() is None
    repeat = server.accept([routed(target="n1", fingerprint="fp-n1")], now=NOW + 4000)
    assert repeat.queued, "an expired request is no duplicate: the alert's next firing asks again"


def test_an_approval_after_the_deadline_is_refused_before_expiry_runs(server: AlertQueue) -> None:
    escalate(server)
    late = server.decide("20261207-060000-aaaaaa", sre("alice"), Action.APPROVE, now=NOW + 3600)
    assert late.refused and late.message.startswith("the approval request expired")
    assert late.entry.state is EntryState.ESCALATED


def test_whoever_requested_a_run_cannot_approve_it(server: AlertQueue) -> None:
    alice = sre("alice")
    requested = server.request("node-down", "n1", alice, "disk looks full", now=NOW)
    assert requested.state is EntryState.QUEUED and requested.requested_by is not None
    assert requested.requested_by.name == "alice" and requested.note == "requested by alice: disk looks full"
    with pytest.raises(
        JournalError, match=r"node-down on n1 already has an active entry: entry \d+ is queued"
    ):
        server.request("node-down", "n1", sre("bob"), now=NOW)
    needs = SRE.requirement(
        "node-down", [], "critical", escalated_at=NOW, requested_by=requested.requested_by
    )
    escalate(server, requirement=needs, entry_id=requested.id)
    refused = server.decide("20261207-060000-aaaaaa", alice, Action.APPROVE, now=NOW + 1)
    assert refused.refused
    assert refused.message.startswith("alice asked for this run and cannot approve it: needs 2 approvers")


def test_escalating_an_entry_held_elsewhere_writes_nothing(server: AlertQueue, store: str) -> None:  # noqa: F811
    [entry_id] = server.accept([routed()], now=NOW).queued
    assert server.claim(now=NOW) is not None
    other = AlertQueue(store, holder="web-2")
    try:
        body = payload(NoticeKind.ESCALATED, key="entry:1:escalated:x", summary="waits", at=NOW)
        needs = SRE.requirement("node-down", [], "critical", escalated_at=NOW)
        assert not other.escalate(entry_id, run_id="x", note="n", requirement=needs, notice=body)
    finally:
        other.close()
    assert server.entry(entry_id).state is EntryState.RUNNING
    assert notices_of(server, entry_id) == []


@pytest.mark.postgres
def test_the_database_role_is_the_one_the_server_authenticated(postgres_url: str) -> None:
    db = Database(locate(postgres_url), write=False, what="the store")
    try:
        assert db.role() == "postgres"
    finally:
        db.close()


def test_a_late_decider_naming_the_escalated_run_is_told_it_no_longer_waits(server: AlertQueue) -> None:
    entry_id = escalate(
        server, requirement=ApprovalPolicy().requirement("node-down", [], "info", escalated_at=NOW)
    )
    assert (
        server.decide("20261207-060000-aaaaaa", sre("alice"), Action.APPROVE, now=NOW + 1).outcome
        is Outcome.APPROVED
    )
    assert server.claim(now=NOW + 2) is not None
    assert server.started(entry_id, "20261207-060100-bbbbbb", now=NOW + 2)  # the approved run: a new id
    late = server.decide("20261207-060000-aaaaaa", sre("bob"), Action.APPROVE, now=NOW + 3)
    assert late.refused and f"its queue entry {entry_id} is running" in late.message
    assert [(a.who.name, a.outcome.value) for a in server.attempts(entry_id)] == [
        ("alice", "approved"),
        ("bob", "refused"),
    ]
