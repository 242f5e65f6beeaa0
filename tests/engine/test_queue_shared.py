"""Several servers on one store: queues racing in threads and in processes, on SQLite and on a real
PostgreSQL (a throwaway cluster on loopback), and `cairn queue` / `approve` / `decline` over it.

What `cairn serve` in active/active relies on: an alert Alertmanager sends to every server is
queued once; each entry is claimed by one server, and racing servers never wait on each other
for it; the fleet budget and the breaker hold across servers; a human's decision is written
once; the CLI says which server holds what. Each race runs real connections at once (a thread or
a process each, as servers have); the checks read the database afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.core.alert_queue import Action, AlertQueue, EntryState, Intake
from engine.core.alerts import Route
from engine.core.identity import Via, local_identity
from engine.core.store.leases import Lease
from engine.core.store.location import locate
from tests.conftest import REPO, CairnRunner
from tests.engine.test_alert_queue import STORES, person, routed, store_at

ALERTS = 200
SERVERS = 3


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the servers' queue lives: each test runs on SQLite and on PostgreSQL."""
    return store_at(request, tmp_path)


def alerts(count: int = ALERTS) -> list[Route]:
    """``count`` distinct firing alerts (one runbook, ``count`` targets)."""
    return [routed(target=f"n{i:03}", fingerprint=f"fp{i}") for i in range(count)]


def in_webhooks(routes: list[Route], seed: int, size: int = 10) -> list[list[Route]]:
    """``routes`` shuffled by ``seed`` and cut into webhooks of ``size``: each server gets them in
    its own order (Alertmanager's groups and retries do not arrive alike everywhere)."""
    shuffled = list(routes)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]


def race(work: Callable[[int], Any], count: int) -> list[Any]:
    """``work(index)`` in ``count`` threads released together; what each returned, in index order."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count
    failures: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:  # said by the test, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def active_keys(queue: AlertQueue) -> Counter[tuple[str, str]]:
    return Counter((e.runbook_id, e.target) for e in queue.entries())


# --------------------------------------------------------------------------- intake


def test_three_servers_given_the_same_200_alerts_queue_each_once(store: str) -> None:
    queues = [AlertQueue(store, holder=f"web-{i}") for i in range(SERVERS)]
    try:

        def serve(index: int) -> list[Intake]:
            intakes: list[Intake] = []
            for batch in in_webhooks(alerts(), seed=index):  # group commit: 2 webhooks a transaction
                intakes += queues[index].accept_many([batch[:5], batch[5:]])
            return intakes

        said = [intake for intakes in race(serve, SERVERS) for intake in intakes]
        queued = [entry_id for intake in said for entry_id in intake.queued]
        assert len(queued) == ALERTS == len(set(queued))
        duplicates = [why for intake in said for (_, _, why) in intake.duplicates]
        assert len(duplicates) == ALERTS * (SERVERS - 1)
        assert all(why.endswith(" for the same runbook and target") for why in duplicates), duplicates[:3]
        keys = active_keys(queues[0])
        assert len(keys) == ALERTS and set(keys.values()) == {1}
    finally:
        for queue in queues:
            queue.close()


ACCEPT_ALL = textwrap.dedent(
    """
    import json, random, sys
    from engine.core.alert_queue import AlertQueue
    from engine.core.alerts import Alert, AlertStatus, Route
    seed = int(sys.argv[1])
    queue = AlertQueue(None, holder=f"web-{seed}")  # $CAIRN_JOURNAL: a URL stays off the command line
    routes = [
        Route(Alert(AlertStatus.FIRING, {"node": f"n{i:03}"}, {}, f"fp{i}"), "node-down", 0, f"n{i:03}")
        for i in range(200)
    ]
    random.Random(seed).shuffle(routes)
    print("ready", flush=True)
    sys.stdin.readline()
    queued = duplicates = 0
    for start in range(0, len(routes), 10):
        intake = queue.accept(routes[start : start + 10])
        queued += len(intake.queued)
        duplicates += len(intake.duplicates)
    queue.close()
    print(json.dumps({"queued": queued, "duplicates": duplicates}), flush=True)
    """
)


def in_processes(script: str, count: int, store: str, *args: str) -> list[dict[str, Any]]:
    """``script`` in ``count`` processes, each on ``store`` (``$CAIRN_JOURNAL``) with its index and
    ``args``; all started before any is let go; what each printed last, as JSON."""
    env = os.environ | {"PYTHONPATH": str(REPO), "CAIRN_JOURNAL": store}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(index), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for index in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            said = process.stdout.readline()
            assert said.strip() == "ready", said + (process.stderr.read() if process.stderr else "")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def test_three_server_processes_given_the_same_200_alerts_queue_each_once(store: str) -> None:
    AlertQueue(store).close()  # the schema, as the first server to start makes it
    said = in_processes(ACCEPT_ALL, SERVERS, store)
    assert sum(s["queued"] for s in said) == ALERTS
    assert sum(s["duplicates"] for s in said) == ALERTS * (SERVERS - 1)
    queue = AlertQueue(store)
    try:
        keys = active_keys(queue)
        assert len(keys) == ALERTS and set(keys.values()) == {1}
    finally:
        queue.close()


def test_the_same_webhook_at_two_servers_at_once_is_queued_once(store: str) -> None:
    queues = [AlertQueue(store, holder="web-1"), AlertQueue(store, holder="web-2")]
    try:
        for round_ in range(20):
            webhook = [routed(target=f"r{round_}-n{i}", fingerprint=f"r{round_}-{i}") for i in range(5)]
            orders = [webhook, webhook[::-1]]  # the same alerts, grouped the other way round

            def send(index: int, orders: list[list[Route]] = orders) -> Intake:
                return queues[index].accept(orders[index])

            intakes: list[Intake] = race(send, 2)
            assert sum(len(i.queued) for i in intakes) == 5, f"round {round_}: {intakes}"
            assert sum(len(i.duplicates) for i in intakes) == 5
        assert set(active_keys(queues[0]).values()) == {1}
    finally:
        for queue in queues:
            queue.close()


# --------------------------------------------------------------------------- claiming


def test_racing_servers_claim_each_entry_once_as_themselves(store: str) -> None:
    queues = [AlertQueue(store, holder=f"web-{i}") for i in range(4)]
    try:
        ids = queues[0].accept(alerts(100)).queued

        def claim_all(index: int) -> list[int]:
            taken = []
            while (entry := queues[index].claim()) is not None:
                assert entry.holder == f"web-{index}"
                taken.append(entry.id)
            return taken

        claimed: list[list[int]] = race(claim_all, len(queues))
        every = [entry_id for taken in claimed for entry_id in taken]
        assert sorted(every) == sorted(ids), "each entry claimed once, none lost"
        holders = {e.id: e.holder for e in queues[0].entries()}
        for index, taken in enumerate(claimed):
            assert {holders[entry_id] for entry_id in taken} <= {f"web-{index}"}
        assert queues[0].depth() == 0 and queues[0].count(EntryState.RUNNING) == 100
    finally:
        for queue in queues:
            queue.close()


@pytest.mark.postgres
def test_a_claim_passes_over_an_entry_another_server_is_claiming_without_waiting(postgres_url: str) -> None:
    queue = AlertQueue(postgres_url, holder="web-2")
    first, second = queue.accept(alerts(2)).queued
    other = psycopg.connect(postgres_url, autocommit=True)  # another server, mid-claim on the oldest entry
    try:
        other.execute("BEGIN")
        other.execute("SELECT id FROM alert_queue WHERE id = %s FOR UPDATE", (first,))
        claimed = queue.claim()  # waiting would end in lock_timeout's error, not in an entry
        assert claimed is not None and (claimed.id, claimed.holder) == (second, "web-2")
        other.execute("ROLLBACK")
        again = queue.claim()
        assert again is not None and again.id == first
    finally:
        other.close()
        queue.close()


# --------------------------------------------------------------------------- guardrails

TAKE_THE_BUDGET = textwrap.dedent(
    """
    import json, sys
    from engine.core.alert_queue import AlertQueue
    index, rounds = int(sys.argv[1]), int(sys.argv[2])
    queue = AlertQueue(None, holder=f"web-{index}")
    print("ready", flush=True)
    sys.stdin.readline()
    granted = refused = most_open = 0
    for round_ in range(rounds):
        guard = queue.begin_remediation(
            f"host-{index}-{round_}", "rb", f"run-{index}-{round_}", automatic=True, breaker=10**6, budget=1
        )
        if guard.ledger_id is None:
            assert guard.tripped == "budget", guard
            refused += 1
            continue
        granted += 1
        [(open_rows,)] = queue.db.read("SELECT count(*) FROM remediations WHERE ended_at IS NULL")
        most_open = max(most_open, int(open_rows))
        queue.end_remediation(guard.ledger_id)
    queue.close()
    print(json.dumps({"granted": granted, "refused": refused, "most_open": most_open}), flush=True)
    """
)


def test_a_budget_of_one_holds_across_racing_servers(store: str) -> None:
    AlertQueue(store).close()
    said = in_processes(TAKE_THE_BUDGET, 2, store, "150")
    assert all(s["granted"] + s["refused"] == 150 for s in said)
    assert max(s["most_open"] for s in said) == 1, f"two hosts were remediated at once: {said}"
    queue = AlertQueue(store)
    try:
        rows = queue.db.read("SELECT started_at, ended_at, holder FROM remediations ORDER BY started_at, id")
    finally:
        queue.close()
    assert len(rows) == sum(s["granted"] for s in said)
    assert {holder for *_, holder in rows} <= {"web-0", "web-1"}
    for (_, ended, _), (started, _, _) in itertools.pairwise(rows):
        assert ended is not None and ended <= started, "a remediation began before the one before it ended"


def test_the_breaker_holds_across_racing_servers(store: str) -> None:
    queues = [AlertQueue(store, holder=f"web-{i}") for i in range(4)]
    try:

        def take(index: int) -> list[str]:
            guards = [
                queues[index].begin_remediation(
                    "n1", "rb", f"r{index}-{n}", automatic=True, breaker=3, budget=9
                )
                for n in range(5)
            ]
            for guard in guards:
                if guard.ledger_id is not None:
                    queues[index].end_remediation(guard.ledger_id)
            return [guard.tripped for guard in guards]

        tripped = [t for taken in race(take, len(queues)) for t in taken]
        assert Counter(tripped) == {"": 3, "breaker": 17}
    finally:
        for queue in queues:
            queue.close()


# --------------------------------------------------------------------------- humans


def escalated(queue: AlertQueue, target: str, run_id: str) -> int:
    [entry_id] = queue.accept([routed(target=target, fingerprint=f"fp-{target}")]).queued
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    assert queue.started(entry_id, run_id)
    assert queue.finish(entry_id, EntryState.ESCALATED, note="remediation waits for a human: policy")
    return entry_id


def test_two_humans_deciding_at_once_one_decision_is_written(store: str) -> None:
    server = AlertQueue(store, holder="web-1")
    humans = [AlertQueue(store), AlertQueue(store)]
    try:
        for round_ in range(10):
            run_id = f"20261129-1015{round_:02}-aaaaaa"
            entry_id = escalated(server, f"n{round_}", run_id)

            def decide(index: int, run_id: str = run_id) -> str:
                if index == 0:
                    decided = humans[0].decide(run_id, person("alice"), Action.APPROVE)
                else:
                    decided = humans[1].decide(run_id, person("bob"), Action.DECLINE, reason="retiring")
                return decided.message if decided.refused else ""

            refusals = [said for said in race(decide, 2) if said]
            assert len(refusals) == 1 and "is not waiting for a human" in refusals[0], refusals
            entry = server.entry(entry_id)
            assert entry.state in (EntryState.QUEUED, EntryState.DECLINED)
            approved = entry.approved_by is not None and entry.approved_by.startswith("alice (")
            assert approved == (entry.state is EntryState.QUEUED), entry
            assert len(server.attempts(entry_id)) == 2, "both attempts are journaled, the refused one too"
            if entry.state is EntryState.QUEUED:  # the approved run, done: the next round's entry is next
                assert server.claim() is not None
                assert server.finish(entry_id, EntryState.DONE, note="remediated")
    finally:
        server.close()
        for human in humans:
            human.close()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def serving(store: str) -> Iterator[tuple[str, Lease, AlertQueue]]:
    """A server on ``store`` as `cairn serve` makes one: its queue, then its lease, live."""
    lease = Lease(locate(store))
    queue = AlertQueue(store, holder=lease.id)
    lease.start()
    try:
        yield store, lease, queue
    finally:
        lease.close()
        queue.close()


def test_cairn_queue_says_which_server_holds_each_running_entry(
    serving: tuple[str, Lease, AlertQueue], cairn: CairnRunner
) -> None:
    store, lease, queue = serving
    held_id, waiting_id = queue.accept([routed(target="n1"), routed(target="n2", fingerprint="f2")]).queued
    assert queue.claim() is not None
    assert queue.started(held_id, "20261129-101500-aaaaaa")

    listed = cairn("queue", "--journal", store)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert f"entry {held_id} (node-down on n1, run 20261129-101500-aaaaaa): {lease.id}" in listed.stdout
    assert "servers: 1 live" in listed.stdout
    [server_line] = [line for line in listed.stdout.splitlines() if line.startswith(f"  {lease.id}  ")]
    assert f"serve, pid {os.getpid()} on " in server_line and server_line.endswith("holds 1"), server_line

    shown = json.loads(cairn("queue", "--json", "--journal", store).stdout)
    holders = {e["id"]: (e["state"], e["holder"]) for e in shown["entries"]}
    assert holders == {held_id: ("running", lease.id), waiting_id: ("queued", None)}
    [server] = shown["servers"]
    assert (server["id"], server["kind"], server["state"], server["pid"]) == (
        lease.id,
        "serve",
        "live",
        os.getpid(),
    )
    assert 0 < server["lease_left"] <= lease.ttl

    lease.release("stopped (SIGTERM)")
    after = cairn("queue", "--journal", store)
    assert "no live cairn serve on this journal (none holds a lease)" in after.stdout


def test_cairn_approve_and_decline_on_the_store(
    serving: tuple[str, Lease, AlertQueue], cairn: CairnRunner
) -> None:
    store, _, queue = serving
    approved_id = escalated(queue, "n1", "20261129-101500-aaaaaa")
    declined_id = escalated(queue, "n2", "20261129-101500-bbbbbb")
    listed = cairn("queue", "--journal", store)
    assert "2 waiting for a human" in listed.stdout

    me = local_identity(Via.CLI)  # who decides: this process's account, by its uid (never --by or $USER)
    approved = cairn("approve", "20261129-101500-aaaa", "--journal", store, "--json")
    assert approved.returncode == 0, approved.stderr
    data = json.loads(approved.stdout)
    assert data["outcome"] == "approved"
    assert (data["entry"]["id"], data["entry"]["state"], data["entry"]["holder"]) == (
        approved_id,
        "queued",
        None,
    )
    assert data["entry"]["approved_by"].startswith(f"{me.name} (unix uid {me.uid} on {me.machine}")
    declined = cairn("decline", "20261129-101500-bbbbbb", "--reason", "retiring", "--journal", store)
    assert declined.returncode == 0, declined.stderr
    assert declined.stdout.strip() == (
        f"node-down on n2 (queue entry {declined_id}): declined: nothing is changed"
    )
    entry = queue.entry(declined_id)
    assert (entry.state, entry.note) == (EntryState.DECLINED, f"declined by {me.name}: retiring")

    again = cairn("approve", "20261129-101500-bbbbbb", "--journal", store)
    assert again.returncode == 1, "refused: the entry no longer waits"
    assert (
        f"run 20261129-101500-bbbbbb is not waiting for a human: its queue entry {declined_id} is declined "
        f"(declined by {me.name}: retiring)"
    ) in again.stderr, again.stderr
    claimed = queue.claim()
    assert claimed is not None and claimed.id == approved_id
    assert claimed.approved_by == data["entry"]["approved_by"]


@pytest.mark.postgres
def test_the_cli_keeps_a_databases_password_to_itself(
    pg_cluster: Any, postgres_url: str, cairn: CairnRunner
) -> None:
    password = "pa:ss/w@rd%!"
    database = postgres_url.rsplit("/", 1)[1]
    url = pg_cluster.create_role("cairn_cli", password, database)
    queue = AlertQueue(url)
    escalated(queue, "n1", "20261129-101500-aaaaaa")
    queue.close()

    listed = cairn("queue", "--json", CAIRN_JOURNAL=url)  # the URL in the environment, not on a command line
    assert listed.returncode == 0, listed.stderr
    assert [e["target"] for e in json.loads(listed.stdout)["entries"]] == ["n1"]
    refused = cairn("approve", "nope", CAIRN_JOURNAL=url)
    assert refused.returncode == 2
    assert "no alert-started run 'nope' in postgresql://cairn_cli:***@127.0.0.1:" in refused.stderr
    wrong = cairn("queue", CAIRN_JOURNAL=url.replace("pa%3Ass", "wrong"))
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr
    for done in (listed, refused, wrong):
        assert "pa:ss" not in done.stdout + done.stderr and "pa%3Ass" not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_an_alert_arriving_as_its_run_ends_waits_out_the_cooldown(store: str) -> None:
    """The cooldown's read and the insert are two statements: a run ending between them (another
    server's worker) must not let the alert in again."""
    intake, worker = AlertQueue(store, cooldown=300), AlertQueue(store, holder="web-2")
    try:
        for round_ in range(150):
            route = routed(target=f"n{round_}", fingerprint=f"fp{round_}")
            [entry_id] = intake.accept([route]).queued
            assert worker.claim() is not None

            def act(index: int, entry_id: int = entry_id, route: Route = route) -> object:
                if index == 0:
                    return intake.accept([route])
                return worker.finish(entry_id, EntryState.DONE, note="healthy")

            race(act, 2)
            assert active_keys(intake)[("node-down", f"n{round_}")] == 1, f"round {round_}: queued twice"
    finally:
        intake.close()
        worker.close()
