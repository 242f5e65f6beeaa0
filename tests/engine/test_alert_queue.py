"""engine/core/alert_queue.py: the durable queue behind `cairn serve`, on a real SQLite file and a real
PostgreSQL database (a throwaway cluster on loopback, tests/postgres.py).

Most tests run on both stores (the ``store`` fixture); what only one of them has — SQLite's synced
commits, a first-release file, ``kill -9`` of a writer of a file — is tested on it alone. Several
queues racing as several servers do is tests/engine/test_queue_shared.py.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

import pytest

from engine.core.alert_queue import Action, AlertQueue, EntryState
from engine.core.alerts import Alert, AlertStatus, Route
from engine.core.errors import JournalError
from engine.core.identity import Identity, Via
from engine.core.queue_read import Entry, QueueReader
from engine.core.store import leases
from engine.core.store.leases import Lease
from engine.core.store.location import locate
from tests.cli.conftest import wait_for
from tests.conftest import REPO
from tests.postgres import PgCluster

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""The two stores a queue lives in: a SQLite file, a PostgreSQL database."""


def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store for ``request.param``: a file under ``tmp_path``, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's queue lives: each test runs on SQLite and on PostgreSQL."""
    return store_at(request, tmp_path)


def routed(
    runbook: str = "node-down", target: str = "n1", *, fingerprint: str = "f1", status: str = "firing"
) -> Route:
    alert = Alert(
        status=AlertStatus(status),
        labels={"alertname": "KubeNodeNotReady", "node": target},
        annotations={},
        fingerprint=fingerprint,
    )
    return Route(alert, runbook, 0, target)


@pytest.fixture
def queue(store: str) -> Iterator[AlertQueue]:
    opened = AlertQueue(store)
    yield opened
    opened.close()


def test_a_firing_alert_is_queued_with_what_it_said(queue: AlertQueue) -> None:
    intake = queue.accept([routed()], now=100.0)
    assert intake.duplicates == [] and intake.cancelled == []
    [entry] = queue.entries()
    assert entry.id == intake.queued[0]
    assert (entry.runbook_id, entry.target, entry.fingerprint, entry.state) == (
        "node-down",
        "n1",
        "f1",
        EntryState.QUEUED,
    )
    assert entry.alert["labels"] == {"alertname": "KubeNodeNotReady", "node": "n1"}
    assert queue.depth() == 1


def test_a_burst_of_duplicates_queues_one_run_per_runbook_and_target(queue: AlertQueue) -> None:
    burst = [routed(fingerprint=f"f{i % 3}") for i in range(50)] + [routed(target="n2")]
    intake = queue.accept(burst)
    assert len(intake.queued) == 2
    assert len(intake.duplicates) == 49
    assert {(e.runbook_id, e.target) for e in queue.entries()} == {("node-down", "n1"), ("node-down", "n2")}
    assert queue.accept([routed()]).queued == [], "still queued: the next webhook repeats it"


def test_duplicates_from_threads_at_once_still_queue_one(store: str) -> None:
    queues = [AlertQueue(store) for _ in range(8)]  # as many connections as server threads
    start = threading.Barrier(len(queues))
    queued: list[int] = []

    def send(q: AlertQueue) -> None:
        start.wait()
        for _ in range(20):
            queued.extend(q.accept([routed()]).queued)

    threads = [threading.Thread(target=send, args=(q,)) for q in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(queued) == 1
    assert len(queues[0].entries()) == 1
    for q in queues:
        q.close()


def test_a_resolved_alert_cancels_its_queued_work_but_not_a_running_run(queue: AlertQueue) -> None:
    first = queue.accept([routed(target="n1", fingerprint="a"), routed(target="n2", fingerprint="b")]).queued
    running = queue.claim()
    assert running is not None and running.id == first[0]

    intake = queue.accept(
        [
            routed(target="n1", fingerprint="a", status="resolved"),
            routed(target="n2", fingerprint="b", status="resolved"),
        ]
    )
    assert intake.cancelled == [first[1]]
    states = {e.target: (e.state, e.note) for e in queue.entries()}
    assert states["n1"] == (EntryState.RUNNING, "")
    assert states["n2"] == (EntryState.CANCELLED, "the alert resolved before its run started")


def test_claims_take_the_oldest_first_and_each_entry_once(queue: AlertQueue) -> None:
    ids = queue.accept([routed(target=f"n{i}") for i in range(3)]).queued
    claimed = [queue.claim(), queue.claim(), queue.claim(), queue.claim()]
    assert [e.id if e else None for e in claimed] == [*ids, None]
    assert all(e.state is EntryState.RUNNING for e in queue.entries())


def test_after_a_run_the_same_alert_waits_out_the_cooldown(store: str) -> None:
    queue = AlertQueue(store, cooldown=600)
    [entry_id] = queue.accept([routed()], now=1000.0).queued
    queue.claim(now=1001.0)
    queue.finish(entry_id, EntryState.DONE, run_id="20261129-000000-abcdef", now=1100.0)

    intake = queue.accept([routed()], now=1400.0)
    assert intake.queued == []
    [(runbook, target, why)] = intake.duplicates
    assert (runbook, target) == ("node-down", "n1")
    assert why == f"cooling down: entry {entry_id} ended (done) 300 s ago (cooldown 600 s)"

    assert queue.accept([routed()], now=1701.0).queued != [], "after the cooldown it runs again"
    [done] = queue.entries(EntryState.DONE)
    assert done.run_id == "20261129-000000-abcdef"
    queue.close()


def test_a_route_without_a_target_is_not_queued(queue: AlertQueue) -> None:
    broken = Route(routed().alert, "node-down", 0, "", problem="the trigger's target is empty")
    assert queue.accept([broken]).queued == []
    assert queue.entries() == []


def test_entries_a_first_release_server_left_running_are_queued_again_saying_so(store: str) -> None:
    first = AlertQueue(store)  # no holder: as the first release's server claimed
    [entry_id] = first.accept([routed()]).queued
    first.claim()
    first.close()  # the server is gone; its entry says "running", held by nobody

    lease = Lease(locate(store), ttl=3600, heartbeat=3600)  # a live server: registered, its lease current
    lease.start()
    again = AlertQueue(store, holder=lease.id)
    assert again.take_over().entries == (entry_id,)
    [entry] = again.entries()
    assert (entry.state, entry.holder) == (EntryState.QUEUED, None)
    assert entry.note == (
        "queued again: the server running it (an earlier cairn serve) stopped; its run resumes"
    )
    claimed = again.claim()
    assert claimed is not None and claimed.holder == lease.id
    assert again.take_over().entries == (), "a live holder's entry stays its own"
    again.close()
    lease.close()


def test_an_entry_held_by_no_live_server_is_queued_again(store: str) -> None:
    """A server that claimed in the instant before it was found lapsed (or one never registered)
    holds nothing: its entry is not left running for ever."""
    ghost = AlertQueue(store, holder="web-9:99:ffffff")  # no lease in the store
    [entry_id] = ghost.accept([routed()]).queued
    assert ghost.claim() is not None
    ghost.close()
    lease = Lease(locate(store), ttl=3600, heartbeat=3600)
    lease.start()
    live = AlertQueue(store, holder=lease.id)
    try:
        assert live.take_over().entries == (entry_id,)
        assert live.entry(entry_id).state is EntryState.QUEUED
    finally:
        live.close()
        lease.close()


ACCEPT_THEN_HANG = textwrap.dedent(
    """
    import sys, time
    from engine.core.alert_queue import AlertQueue
    from engine.core.alerts import Alert, AlertStatus, Route
    queue = AlertQueue(sys.argv[1])
    for i in range(25):
        alert = Alert(AlertStatus.FIRING, {"node": f"n{i}"}, {}, f"f{i}")
        queue.accept([Route(alert, "node-down", 0, f"n{i}")])
    print("accepted", flush=True)
    time.sleep(600)
    """
)


def test_accepted_alerts_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    process = subprocess.Popen(
        [sys.executable, "-c", ACCEPT_THEN_HANG, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "accepted"  # what the server would answer 200 after
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    queue = AlertQueue(path)
    assert [e.target for e in queue.entries(EntryState.QUEUED)] == [f"n{i}" for i in range(25)]
    queue.close()


def test_an_accepted_alert_is_synced_to_disk_so_it_survives_a_power_loss(tmp_path: Path) -> None:
    """`cairn serve` answers 200 after ``accept`` committed. That commit runs with ``synchronous=FULL``
    (WAL mode: synced to disk before it returns), so the alert survives a power loss, not only a
    ``kill -9`` (the test above); so do a human's decision and a remediation taken in the ledger. A
    power loss cannot be made here: this checks the setting each of those commits runs with. (A
    PostgreSQL commit is durable when it returns, every one: nothing to check there.)"""
    queue = AlertQueue(tmp_path / "journal.db")
    said: list[str] = []
    connection = queue.db.connection()
    connection.set_trace_callback(said.append)

    def synced_commit(write: Callable[[], object]) -> bool:
        said.clear()
        write()
        if "BEGIN IMMEDIATE" not in said:  # one statement that committed alone: NORMAL, never synced
            return False
        begin, commit = said.index("BEGIN IMMEDIATE"), said.index("COMMIT")
        return said[begin - 1 : begin] == ["PRAGMA synchronous=FULL"] and said[commit + 1 : commit + 2] == [
            "PRAGMA synchronous=NORMAL"
        ]

    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert synced_commit(lambda: queue.accept([routed()]))
    assert not synced_commit(queue.claim), "a claim lost to a power loss is queued again by a takeover"
    assert synced_commit(
        lambda: queue.begin_remediation("n1", "rb", "r1", automatic=True, breaker=5, budget=5)
    )
    escalate(queue, target="n7", run_id="20261129-101500-aaaaaa")
    assert synced_commit(lambda: decline(queue, "20261129-101500-aaaaaa", "alice"))
    escalate(queue, target="n8", run_id="20261129-101500-bbbbbb")
    assert synced_commit(lambda: approve(queue, "20261129-101500-bbbbbb", "alice"))
    connection.set_trace_callback(None)
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,), "NORMAL again between synced commits"
    queue.close()


# --------------------------------------------------------------------------- waiting for a human


def person(name: str) -> Identity:
    """A local account as ``cairn approve`` run by it would be identified."""
    return Identity("unix", name, name, Via.CLI, uid=1000, machine="ops-1")


def approve(queue: AlertQueue, run_id: str, name: str) -> Entry:
    decided = queue.decide(run_id, person(name), Action.APPROVE)
    assert not decided.refused, decided.message
    return decided.entry


def decline(queue: AlertQueue, run_id: str, name: str, reason: str = "") -> Entry:
    decided = queue.decide(run_id, person(name), Action.DECLINE, reason=reason)
    assert not decided.refused, decided.message
    return decided.entry


def escalate(queue: AlertQueue, target: str = "n1", run_id: str = "20261129-101500-aaaaaa") -> int:
    """An entry whose run found the pitfall and whose remediation waits for a human."""
    [entry_id] = queue.accept([routed(target=target, fingerprint=f"fp-{target}")]).queued
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    queue.started(entry_id, run_id)
    queue.finish(entry_id, EntryState.ESCALATED, note="remediation waits for a human: policy")
    return entry_id


def test_an_entry_waiting_for_a_human_makes_repeats_of_its_alert_duplicates(store: str) -> None:
    queue = AlertQueue(store, cooldown=0)  # no cooldown: waiting alone holds them back
    entry_id = escalate(queue)
    intake = queue.accept([routed(fingerprint="fp-n1")])
    assert intake.queued == []
    assert intake.duplicates == [
        ("node-down", "n1", f"entry {entry_id} is escalated for the same runbook and target")
    ]
    queue.close()


def test_approving_queues_the_entry_again_with_who_approved(queue: AlertQueue) -> None:
    entry_id = escalate(queue)
    approved = approve(queue, "20261129-101500", "alice")  # a unique prefix is enough, as in cairn show-run
    role = (
        ", db role postgres" if queue.db.dialect == "postgresql" else ""
    )  # the role the server authenticated
    label = f"alice (unix uid 1000 on ops-1{role}, via cli)"
    assert (approved.id, approved.state, approved.approved_by) == (entry_id, EntryState.QUEUED, label)
    assert "approved by alice" in approved.note
    claimed = queue.claim()
    assert claimed is not None and claimed.approved_by == label
    assert claimed.run_id == "20261129-101500-aaaaaa", "the run the human approved, until the next one starts"


def test_declining_ends_the_entry_with_the_reason(queue: AlertQueue) -> None:
    escalate(queue)
    declined = decline(queue, "20261129-101500-aaaaaa", "bob", "node is being drained")
    assert declined.state is EntryState.DECLINED
    assert declined.note == "declined by bob: node is being drained"
    assert queue.claim() is None


def test_approving_what_does_not_wait_says_why_and_changes_nothing(queue: AlertQueue) -> None:
    with pytest.raises(JournalError, match=r"no alert-started run 'nope'.*cairn queue"):
        queue.decide("nope", person("alice"), Action.APPROVE)
    [entry_id] = queue.accept([routed()]).queued
    queue.claim()
    queue.started(entry_id, "20261129-101500-bbbbbb")
    queue.finish(entry_id, EntryState.DONE, note="healthy: detect found nothing")
    late = queue.decide("20261129-101500-bbbbbb", person("alice"), Action.APPROVE)
    assert late.refused and late.entry.state is EntryState.DONE
    assert re.match(
        r"run \S+ is not waiting for a human: its queue entry \d+ is done \(healthy", late.message
    )
    assert [a.outcome.value for a in queue.attempts(entry_id)] == ["refused"], (
        "a refused attempt is journaled too"
    )
    escalate(queue, target="n2", run_id="20261129-101500-bbbccc")
    with pytest.raises(JournalError, match="ambiguous"):
        queue.decide("20261129-101500-bbb", person("alice"), Action.DECLINE)
    with pytest.raises(JournalError, match="give the run id"):
        queue.decide("  ", person("alice"), Action.APPROVE)  # an empty prefix would match every run
    assert [e.state for e in queue.entries()] == [EntryState.DONE, EntryState.ESCALATED]


def test_a_resolved_alert_cancels_the_remediation_waiting_for_a_human(queue: AlertQueue) -> None:
    entry_id = escalate(queue)
    intake = queue.accept([routed(fingerprint="fp-n1", status="resolved")])
    assert intake.cancelled == [entry_id]
    [entry] = queue.entries()
    assert entry.state is EntryState.CANCELLED
    assert entry.note == "the alert resolved while its remediation waited for a human; nothing was changed"


# --------------------------------------------------------------------------- guardrails


class Limits(TypedDict):
    """``begin_remediation``'s guardrail arguments."""

    automatic: bool
    breaker: int
    budget: int


def test_the_breaker_allows_n_automatic_remediations_per_host_per_hour(queue: AlertQueue) -> None:
    limits: Limits = {"automatic": True, "breaker": 2, "budget": 10}
    for minute in (0, 10):
        guard = queue.begin_remediation("n1", "rb", f"run-{minute}", now=1000.0 + 60 * minute, **limits)
        assert guard.ledger_id is not None
        queue.end_remediation(guard.ledger_id, now=1001.0 + 60 * minute)
    third = queue.begin_remediation("n1", "rb", "run-20", now=1000.0 + 60 * 20, **limits)
    assert (third.ledger_id, third.tripped) == (None, "breaker")
    assert third.reason == (
        "circuit breaker: 2 automatic remediations on n1 in the last hour (at most 2); "
        "the next is allowed in 40 min"
    )
    assert queue.begin_remediation("n2", "rb", "run-x", now=1000.0 + 60 * 20, **limits).ledger_id, "per host"
    human = queue.begin_remediation(
        "n1", "rb", "run-h", now=1000.0 + 60 * 20, **(limits | {"automatic": False})
    )
    assert human.ledger_id is not None, "a human's approval is what the breaker escalates to"
    later = queue.begin_remediation("n1", "rb", "run-61", now=1000.0 + 60 * 61, **limits)
    assert later.ledger_id is not None, "an hour after the first, one more is allowed"


def test_the_budget_bounds_hosts_remediated_at_once_across_the_fleet(queue: AlertQueue) -> None:
    limits = {"breaker": 10, "budget": 2}
    a = queue.begin_remediation("n1", "rb-a", "r1", automatic=True, **limits)
    b = queue.begin_remediation("n2", "rb-b", "r2", automatic=False, **limits)  # a human's counts too
    assert a.ledger_id and b.ledger_id
    refused = queue.begin_remediation("n3", "rb-a", "r3", automatic=True, **limits)
    assert (refused.ledger_id, refused.tripped) == (None, "budget")
    assert refused.reason == "fleet budget: 2 hosts are being remediated now (at most 2): n1, n2"
    same_host = queue.begin_remediation("n1", "rb-b", "r4", automatic=True, **limits)
    assert same_host.ledger_id is not None, "a host already being changed adds nothing to the budget"
    queue.end_remediation(b.ledger_id)
    assert queue.begin_remediation("n3", "rb-a", "r5", automatic=True, **limits).ledger_id is not None


def test_racing_workers_never_exceed_the_budget(store: str) -> None:
    queues = [AlertQueue(store) for _ in range(8)]
    start = threading.Barrier(len(queues))
    granted: list[str] = []

    def take(index: int, q: AlertQueue) -> None:
        start.wait()
        guard = q.begin_remediation(f"n{index}", "rb", f"r{index}", automatic=True, breaker=5, budget=3)
        if guard.ledger_id is not None:
            granted.append(f"n{index}")

    threads = [threading.Thread(target=take, args=(i, q)) for i, q in enumerate(queues)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 3
    for q in queues:
        q.close()


def test_a_server_whose_lease_lapsed_loses_its_entries_and_its_remediations(store: str) -> None:
    lease = Lease(locate(store), ttl=0.5, heartbeat=3600)  # registered, then never renewed: a frozen server
    frozen = AlertQueue(store, holder=lease.id)  # opened first, as `cairn serve` does: it makes the schema
    lease.start()
    [entry_id] = frozen.accept([routed()]).queued
    assert frozen.claim() is not None
    assert frozen.begin_remediation("n1", "rb", "r1", automatic=True, breaker=5, budget=1).ledger_id
    live = AlertQueue(store, holder="web-2:77:abcdef")
    assert live.begin_remediation("n2", "rb", "r2", automatic=True, breaker=5, budget=1).tripped == "budget"

    taken = wait_for(lambda: live.take_over().entries, "the frozen server's lease to lapse", timeout=30)
    assert taken == (entry_id,)
    [entry] = live.entries()
    assert (entry.state, entry.holder) == (EntryState.QUEUED, None)
    assert entry.note == f"queued again: the server running it ({lease.id}) stopped; its run resumes"
    assert live.begin_remediation("n2", "rb", "r2", automatic=True, breaker=5, budget=1).ledger_id, (
        "the lapsed server's remediation no longer holds the budget"
    )
    assert (
        live.begin_remediation("n1", "rb", "r3", automatic=True, breaker=1, budget=5).tripped == "breaker"
    ), "the hour's count survives the takeover"
    lease.close()
    frozen.close()
    live.close()


def test_a_queue_written_before_approvals_existed_reads_as_it_is_and_opens_to_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE alert_queue (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL,"
            " fingerprint TEXT NOT NULL, runbook_id TEXT NOT NULL, target TEXT NOT NULL, alert TEXT NOT NULL,"
            " state TEXT NOT NULL, run_id TEXT, note TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO alert_queue VALUES (1, 1.0, 'f1', 'node-down', 'n1', '{}', 'running', NULL, '', 1.0)"
        )
    before = path.read_bytes()
    listed = QueueReader(path)  # `cairn queue`: reads it as it is, upgrades nothing
    try:
        [entry] = listed.entries()
        assert listed.servers() == [], "no server has held work in a first-release file"
    finally:
        listed.close()
    assert (entry.target, entry.state, entry.approved_by, entry.holder) == (
        "n1",
        EntryState.RUNNING,
        None,
        None,
    )
    assert path.read_bytes() == before
    queue = AlertQueue(path)  # a writer migrates the file to the store's schema
    [entry] = queue.entries()
    assert (entry.target, entry.state, entry.approved_by, entry.holder) == (
        "n1",
        EntryState.RUNNING,
        None,
        None,
    )
    assert queue.take_over().entries == (1,), "the first release's running entry is nobody's now"
    queue.close()


def test_webhooks_committed_together_are_answered_each_in_order(queue: AlertQueue) -> None:
    first, second, third = queue.accept_many(
        [[routed()], [routed(), routed(target="n2")], [routed(status="resolved", target="n2")]]
    )
    assert len(first.queued) == 1
    assert second.duplicates == [
        ("node-down", "n1", f"entry {first.queued[0]} is queued for the same runbook and target")
    ]
    assert len(second.queued) == 1
    assert third.cancelled == second.queued, "the resolve in the same commit sees the entry queued before it"


def test_recent_reads_only_the_latest_ended_entries(queue: AlertQueue) -> None:
    ids = queue.accept([routed(target=f"n{i}") for i in range(5)], now=10.0).queued
    for minute, entry_id in enumerate(ids):
        queue.claim(now=20.0)
        queue.finish(entry_id, EntryState.DONE, note=f"done {minute}", now=100.0 + minute)
    queue.accept([routed(target="n9")], now=200.0)
    latest = queue.recent(EntryState.DONE, EntryState.FAILED, limit=2)
    assert [e.note for e in latest] == ["done 4", "done 3"]
    assert queue.count(EntryState.DONE) == 5 and queue.count(EntryState.QUEUED, EntryState.RUNNING) == 1


def test_an_entry_that_could_not_run_cools_down_until_the_server_reads_its_inventory_again(
    store: str,
) -> None:
    queue = AlertQueue(store, cooldown=600)
    [entry_id] = queue.accept([routed()], now=1000.0).queued
    queue.claim(now=1001.0)
    queue.finish(entry_id, EntryState.FAILED, note="target 'n1' is not a host of 'web'", now=1002.0)
    [(_, _, why)] = queue.accept([routed()], now=1010.0).duplicates
    assert why == f"cooling down: entry {entry_id} ended (failed) 8 s ago (cooldown 600 s)", (
        "no storm of failures"
    )
    queue.failed_forgotten_before = 1005.0  # SIGHUP: the operator fixed the inventory
    assert queue.accept([routed()], now=1010.0).queued != [], "the next firing runs"
    queue.close()


# --------------------------------------------------------------------------- holders


def test_a_claim_records_its_holder_and_only_that_holder_changes_the_entry(store: str) -> None:
    mine, other = AlertQueue(store, holder="web-1:10:aaaaaa"), AlertQueue(store, holder="web-2:20:bbbbbb")
    try:
        [entry_id] = mine.accept([routed()]).queued
        claimed = mine.claim()
        assert claimed is not None and (claimed.id, claimed.holder) == (entry_id, "web-1:10:aaaaaa")
        assert other.started(entry_id, "20261129-000000-bbbbbb") is False
        assert other.finish(entry_id, EntryState.DONE, note="not mine") is False
        assert other.requeue(entry_id, "not mine") is False
        untouched = mine.entry(entry_id)
        assert (untouched.state, untouched.run_id, untouched.note, untouched.holder) == (
            EntryState.RUNNING,
            None,
            "",
            "web-1:10:aaaaaa",
        ), "another server's calls wrote nothing"
        assert mine.started(entry_id, "20261129-000000-aaaaaa") is True
        assert mine.finish(entry_id, EntryState.DONE, note="healthy") is True
        done = mine.entry(entry_id)
        assert (done.state, done.run_id, done.note, done.holder) == (
            EntryState.DONE,
            "20261129-000000-aaaaaa",
            "healthy",
            None,
        ), "an ended entry is held by nobody"
        assert mine.finish(entry_id, EntryState.FAILED, note="again") is False, "only a running entry is held"
    finally:
        mine.close()
        other.close()


def test_a_server_whose_entry_was_taken_over_writes_nothing_more_to_it(store: str) -> None:
    lease = Lease(locate(store), ttl=0.5, heartbeat=3600)
    frozen = AlertQueue(store, holder=lease.id)
    lease.start()
    live = AlertQueue(store, holder="web-2:77:abcdef")
    try:
        [entry_id] = frozen.accept([routed()]).queued
        assert frozen.claim() is not None
        assert frozen.started(entry_id, "20261129-000000-aaaaaa")
        wait_for(lambda: live.take_over().entries, "the frozen server's lease to lapse", timeout=30)
        claimed = live.claim()
        assert claimed is not None and claimed.holder == "web-2:77:abcdef"

        # The frozen server wakes up and goes on as if it still held the entry: every write is refused.
        assert frozen.started(entry_id, "20261129-000000-cccccc") is False
        assert frozen.finish(entry_id, EntryState.DONE, note="remediated") is False
        assert frozen.requeue(entry_id, "checkpointed") is False
        assert frozen.hand_back("stopping") == []
        entry = live.entry(entry_id)
        assert (entry.state, entry.holder, entry.run_id) == (
            EntryState.RUNNING,
            "web-2:77:abcdef",
            "20261129-000000-aaaaaa",
        ), "the run the new holder resumes"
    finally:
        lease.close()
        frozen.close()
        live.close()


def test_a_stopping_server_hands_back_its_entries_and_closes_its_remediations(store: str) -> None:
    stopping, other = AlertQueue(store, holder="web-1:10:aaaaaa"), AlertQueue(store, holder="web-2:20:bbbbbb")
    try:
        ids = stopping.accept([routed(target=f"n{i}", fingerprint=f"f{i}") for i in range(3)]).queued
        assert stopping.claim() is not None and other.claim() is not None and stopping.claim() is not None
        assert stopping.begin_remediation("n0", "rb", "r0", automatic=True, breaker=5, budget=2).ledger_id
        assert other.begin_remediation("n1", "rb", "r1", automatic=True, breaker=5, budget=2).ledger_id

        assert stopping.hand_back("queued again: web-1 stopped (SIGTERM); its run resumes") == [
            ids[0],
            ids[2],
        ]
        states = {e.id: (e.state, e.holder, e.note) for e in other.entries()}
        assert states == {
            ids[0]: (EntryState.QUEUED, None, "queued again: web-1 stopped (SIGTERM); its run resumes"),
            ids[1]: (EntryState.RUNNING, "web-2:20:bbbbbb", ""),
            ids[2]: (EntryState.QUEUED, None, "queued again: web-1 stopped (SIGTERM); its run resumes"),
        }
        open_rows = other.db.read("SELECT host, holder FROM remediations WHERE ended_at IS NULL")
        assert open_rows == [("n1", "web-2:20:bbbbbb")], "only the stopping server's remediation ended"
        assert stopping.hand_back("again") == [], "nothing left to hand back"
    finally:
        stopping.close()
        other.close()


def test_the_ledger_records_which_server_remediates(store: str) -> None:
    queue = AlertQueue(store, holder="web-1:10:aaaaaa")
    try:
        guard = queue.begin_remediation("n1", "rb", "r1", automatic=True, breaker=5, budget=5)
        assert guard.ledger_id is not None
        assert queue.db.read("SELECT host, run_id, holder, ended_at FROM remediations") == [
            ("n1", "r1", "web-1:10:aaaaaa", None)
        ]
        queue.end_remediation(guard.ledger_id)
        [(ended,)] = queue.db.read("SELECT ended_at FROM remediations")
        assert ended is not None
    finally:
        queue.close()


def test_a_probe_writes_one_row_and_changes_no_schema(store: str) -> None:
    queue = AlertQueue(store, holder="web-1:10:aaaaaa")
    try:
        tables, columns = queue.db.tables(), queue.db.columns("store_probe")
        queue.probe()
        queue.probe()
        assert queue.db.read("SELECT id, holder FROM store_probe") == [(1, "web-1:10:aaaaaa")]
        assert (queue.db.tables(), queue.db.columns("store_probe")) == (tables, columns)
    finally:
        queue.close()


def test_times_are_the_databases_clock(store: str) -> None:
    queue = AlertQueue(store)
    try:
        [(clock,)] = queue.db.read(f"SELECT {queue.db.now}")
        [entry_id] = queue.accept([routed()]).queued
        claimed = queue.claim()
        assert claimed is not None
        entry = queue.entry(entry_id)
        [(after,)] = queue.db.read(f"SELECT {queue.db.now}")
        assert clock <= entry.received_at <= entry.updated_at <= after
    finally:
        queue.close()


@pytest.mark.postgres
def test_messages_name_the_database_without_its_password(pg_cluster: PgCluster, postgres_url: str) -> None:
    password = "s3cret:p@ss/word"
    database = urlsplit(postgres_url).path.lstrip("/")
    url = pg_cluster.create_role("cairn_queue", password, database)
    queue = AlertQueue(url)
    try:
        assert "***" in queue.where and password not in queue.where
        with pytest.raises(JournalError) as missing:
            queue.entry(404)
        assert str(missing.value) == f"no queue entry 404 in {queue.where}"
        with pytest.raises(JournalError) as unknown:
            queue.decide("nope", person("alice"), Action.APPROVE)
        assert queue.where in str(unknown.value) and password not in str(unknown.value)
    finally:
        queue.close()
    wrong = url.replace("s3cret", "wrong")
    with pytest.raises(JournalError) as refused:
        QueueReader(wrong)
    assert "password authentication failed" in str(refused.value)
    assert "wrong" not in str(refused.value) and password not in str(refused.value)


def test_the_reader_lists_the_servers_live_first(store: str) -> None:
    queue = AlertQueue(store)
    first, second = Lease(locate(store)), Lease(locate(store))
    try:
        first.start()
        second.start()
        first.release("stopped (SIGTERM)")
        reader = QueueReader(store)
        try:
            servers: list[dict[str, Any]] = reader.servers()
        finally:
            reader.close()
        assert [(s["id"], s["state"]) for s in servers] == [(second.id, "live"), (first.id, "released")]
        assert leases.holders(queue.db)[0]["id"] == second.id
    finally:
        first.close()
        second.close()
        queue.close()
