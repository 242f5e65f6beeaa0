"""engine/alert_queue.py: the durable queue behind `cairn serve`, on a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.alert_queue import AlertQueue, EntryState
from engine.alerts import Alert, AlertStatus, Route
from tests.conftest import REPO


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
def queue(tmp_path: Path) -> Iterator[AlertQueue]:
    opened = AlertQueue(tmp_path / "journal.db")
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


def test_duplicates_from_threads_at_once_still_queue_one(tmp_path: Path) -> None:
    queues = [AlertQueue(tmp_path / "journal.db") for _ in range(8)]  # as many connections as server threads
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


def test_after_a_run_the_same_alert_waits_out_the_cooldown(tmp_path: Path) -> None:
    queue = AlertQueue(tmp_path / "journal.db", cooldown=600)
    [entry_id] = queue.accept([routed()], now=1000.0).queued
    queue.claim(now=1001.0)
    queue.finish(entry_id, EntryState.DONE, run_id="20261129-000000-abcdef", now=1100.0)

    intake = queue.accept([routed()], now=1400.0)
    assert intake.queued == []
    [(runbook, target, why)] = intake.duplicates
    assert (runbook, target) == ("node-down", "n1")
    assert why == f"cooling down: entry {entry_id} ended 300 s ago (cooldown 600 s)"

    assert queue.accept([routed()], now=1701.0).queued != [], "after the cooldown it runs again"
    [done] = queue.entries(EntryState.DONE)
    assert done.run_id == "20261129-000000-abcdef"
    queue.close()


def test_a_route_without_a_target_is_not_queued(queue: AlertQueue) -> None:
    broken = Route(routed().alert, "node-down", 0, "", problem="the trigger's target is empty")
    assert queue.accept([broken]).queued == []
    assert queue.entries() == []


def test_entries_running_when_the_server_died_are_queued_again_saying_so(tmp_path: Path) -> None:
    first = AlertQueue(tmp_path / "journal.db")
    [entry_id] = first.accept([routed()]).queued
    first.claim()
    first.close()  # the server is gone; its entry says "running"

    again = AlertQueue(tmp_path / "journal.db")
    assert again.recover() == [entry_id]
    [entry] = again.entries()
    assert entry.state is EntryState.QUEUED
    assert entry.note.startswith("queued again: the server stopped while its run went on")
    assert again.claim() is not None
    again.close()


ACCEPT_THEN_HANG = textwrap.dedent(
    """
    import sys, time
    from engine.alert_queue import AlertQueue
    from engine.alerts import Alert, AlertStatus, Route
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
