"""Several `cairn serve` on one PostgreSQL, all active: each alert queued and run once, a dead or frozen
server's work taken over without a remediation running twice, guardrails across servers, PostgreSQL
restarted under load.

Everything is real: a throwaway PostgreSQL (tests/postgres.py), `cairn serve` processes, HTTP, two
clustered Alertmanagers, bash on the inventory's local-connection hosts. The runbooks append to files
so the tests see exactly how often a host was changed.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import urllib.error
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine.core.journal_read import RunRecord
from engine.core.queue_read import Entry, EntryState
from engine.core.store.database import Database
from tests.alertmanagers import post_alerts_to_all, webhook_config
from tests.cli.conftest import TOKEN, Served, alert, entries, runs, servers, wait_for, webhook
from tests.conftest import AlertmanagerClusterStarter
from tests.postgres import PgCluster

pytestmark = [pytest.mark.postgres, pytest.mark.cli]

FINAL = (EntryState.DONE, EntryState.ESCALATED, EntryState.FAILED, EntryState.DECLINED, EntryState.CANCELLED)

LOOK = """
id: fleet-look
title: Look at a fleet host
severity: info
summary: One quick look per alert.
triggers:
  - matchers: ['alertname = Look']
    target: "{{ alert.labels.node }}"
targets: fleet
detect:
  - id: look
    title: Look
    run: echo looked at {{ target }}
"""

CHANGE = """
id: needs-change
title: A host needs one change
severity: warning
summary: The host's change file is empty; appending one line is the fix.
triggers:
  - matchers: ['alertname = NeedsChange']
    target: "{{{{ alert.labels.node }}}}"
targets: fleet
detect:
  - id: look
    title: Is the change there
    run: {look_first}test -s {dir}/{{{{ target }}}}.changes && echo changed || echo missing
    expect: out == 'changed'
remediate:
  - id: change
    title: Append the change
    automatic: true
    run: {change}
  - id: after
    title: A second step
    automatic: true
    run: echo after >> {dir}/{{{{ target }}}}.after
"""


def change_runbook(folder: Path, *, change: str = "", look_first: str = "") -> str:
    append = f"echo change >> {folder}/{{{{ target }}}}.changes"
    return CHANGE.format(dir=folder, change=change or append, look_first=look_first)


def fleet(tmp_path: Path, n: int) -> str:
    path = tmp_path / f"fleet-{n}.yml"
    hosts = "".join(f"        host-{i}: {{ansible_connection: local}}\n" for i in range(n))
    path.write_text(f"all:\n  children:\n    fleet:\n      hosts:\n{hosts}", encoding="utf-8")
    return str(path)


def three_servers(
    serve: Callable[..., Served], store: str, runbook: str, hosts: str, *extra: str
) -> list[Served]:
    return [serve(*extra, runbook=runbook, hosts=hosts, journal=store) for _ in range(3)]


def final(store: str, count: int) -> Callable[[], list[Entry] | None]:
    def check() -> list[Entry] | None:
        now = entries(store)
        return now if len(now) >= count and all(e.state in FINAL for e in now) else None

    return check


def steps_of(run: RunRecord, step_id: str) -> list[Any]:
    return [s for s in run.steps if s.step_id == step_id]


def ran_here(step: Any) -> bool:
    """A step row this run carried out itself, not one taken over from the run it resumed."""
    return not str(step.message).startswith("from run ")


def holder_of(store: str, target: str) -> str:
    [entry] = [e for e in entries(store) if e.target == target]
    assert entry.holder, entry
    return entry.holder


# ----------------------------------------------------------------------------- once, whoever receives it


def test_three_servers_given_200_alerts_each_queue_every_alert_once_and_run_it_once(
    serve: Callable[..., Served], postgres_url: str, tmp_path: Path, runbook_dir: Callable[..., Path]
) -> None:
    served = three_servers(serve, postgres_url, LOOK, fleet(tmp_path, 200))
    bodies = [webhook(alert(alertname="Look", node=f"host-{i}")) for i in range(200)]

    def send(job: tuple[Served, str]) -> tuple[int, Any]:
        server, body = job
        return server.post(body)

    jobs = [(server, body) for body in bodies for server in served]  # every alert to every server
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(send, jobs))
    assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    queued = [entry_id for _, body in answers for entry_id in body["queued"]]
    assert len(queued) == len(set(queued)) == 200, "each alert queued by exactly one server"

    done = wait_for(final(postgres_url, 200), "the 200 entries to be run", timeout=240)
    assert len(done) == 200 and {e.state for e in done} == {EntryState.DONE}
    assert sorted(e.target for e in done) == sorted(f"host-{i}" for i in range(200))
    history = runs(postgres_url)
    assert len(history) == 200, "one run per alert, none twice, none lost"
    assert {r.id for r in history} == {e.run_id for e in done}
    assert all(r.hosts == (next(e.target for e in done if e.run_id == r.id),) for r in history)
    assert {server.server_id for server in served} <= set(servers(postgres_url))


@pytest.mark.alertmanager
def test_an_alertmanager_pair_feeding_three_servers_runs_each_alert_once(
    serve: Callable[..., Served],
    postgres_url: str,
    tmp_path: Path,
    alertmanager_cluster: AlertmanagerClusterStarter,
) -> None:
    served = three_servers(serve, postgres_url, LOOK, fleet(tmp_path, 20))
    apis = alertmanager_cluster(2, webhook_config([s.url + "/alertmanager" for s in served], TOKEN)).apis
    post_alerts_to_all(apis, [{"labels": {"alertname": "Look", "node": f"host-{i}"}} for i in range(20)])

    done = wait_for(final(postgres_url, 20), "the 20 alerts to be run", timeout=120)
    assert sorted(e.target for e in done) == sorted(f"host-{i}" for i in range(20))
    assert len(runs(postgres_url)) == 20

    def duplicates_said() -> float:
        total = 0.0
        for server in served:
            _, text = server.get("/metrics")
            total += sum(
                float(line.rsplit(" ", 1)[1])
                for line in str(text).splitlines()
                if line.startswith("cairn_alerts_duplicate_total")
            )
        return total

    # Every server got every notification (one URL each): two of three were told "duplicate".
    assert wait_for(
        lambda: duplicates_said() >= 40 or None, "the other servers to see duplicates", timeout=30
    )


# ----------------------------------------------------------------------------- a server dies


def test_kill_9_during_a_remediation_another_server_resumes_and_the_step_never_runs_twice(
    serve: Callable[..., Served], postgres_url: str, tmp_path: Path
) -> None:
    changes = tmp_path / "host-0.changes"
    slow = f"echo change >> {tmp_path}/{{{{ target }}}}.changes; sleep 5"
    served = three_servers(
        serve,
        postgres_url,
        change_runbook(tmp_path, change=slow),
        fleet(tmp_path, 1),
        "--automate",
        "needs-change",
    )
    for server in served:  # Alertmanager with one URL per server
        code, _ = server.post(webhook(alert(alertname="NeedsChange", node="host-0")))
        assert code == 200
    wait_for(lambda: changes.exists() and changes.read_text() == "change\n", "the remediation to be running")
    holder = holder_of(postgres_url, "host-0")
    [victim] = [s for s in served if s.server_id == holder]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()

    [entry] = wait_for(final(postgres_url, 1), "another server to take the entry over and end it", timeout=60)
    assert changes.read_text() == "change\n", "the host was changed once"
    history = runs(postgres_url)
    assert len(history) == 2
    first, resumed = sorted(history, key=lambda r: r.started_at)
    assert resumed.trigger.get("resumes") == first.id and entry.run_id == resumed.id
    carried_out = [s for run in history for s in steps_of(run, "change") if ran_here(s)]
    assert len(carried_out) == 1, "the remediation step appears once as carried out"
    [taken] = steps_of(resumed, "change")
    assert (
        taken.status == "interrupted"
        and "not run again: a remediation step runs at most once" in taken.message
    )
    assert not (tmp_path / "host-0.after").exists(), "no later remediation step ran"
    assert entry.state is EntryState.ESCALATED, entry
    assert servers(postgres_url)[holder]["state"] == "lapsed"


def test_a_server_frozen_past_its_lease_starts_nothing_when_it_wakes(
    serve: Callable[..., Served], postgres_url: str, tmp_path: Path
) -> None:
    changes = tmp_path / "host-0.changes"
    runbook = change_runbook(tmp_path, look_first="sleep 2; ")
    served = three_servers(
        serve, postgres_url, runbook, fleet(tmp_path, 1), "--automate", "needs-change", "--lease", "2"
    )
    code, _ = served[0].post(webhook(alert(alertname="NeedsChange", node="host-0")))
    assert code == 200

    def detecting() -> str | None:
        now = entries(postgres_url)
        return now[0].holder if now and now[0].state is EntryState.RUNNING and now[0].run_id else None

    holder = wait_for(detecting, "a server to start the entry's run")
    [frozen] = [s for s in served if s.server_id == holder]
    others = [s for s in served if s is not frozen]
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: servers(postgres_url)[holder]["state"] == "lapsed", "the frozen server's lease to lapse"
        )
        [entry] = wait_for(final(postgres_url, 1), "another server to remediate the host", timeout=60)
        assert entry.state is EntryState.DONE and entry.holder != holder, entry
    finally:
        frozen.process.send_signal(signal.SIGCONT)

    def registered_again() -> dict[str, Any] | None:
        code, health = frozen.health()
        lost = health.get("lease_lost") or {}
        return (
            health if code == 200 and lost.get("server") == holder and health.get("lease") == "held" else None
        )

    # A server that lost its lease never holds that work again: it registers as a new holder.
    health = wait_for(registered_again, "the woken server to say it lost its lease and registered again")
    assert health["server"] != holder
    assert changes.read_text() == "change\n", "only the server holding the work changed the host"
    frozen_runs = [r for r in runs(postgres_url) if r.id != entry.run_id]
    assert all(not steps_of(r, "change") for r in frozen_runs), "the frozen server started no remediation"
    assert all(s.health()[0] == 200 for s in others)


def test_sigterm_hands_the_work_over_at_once(
    serve: Callable[..., Served], postgres_url: str, tmp_path: Path
) -> None:
    runbook = change_runbook(tmp_path, look_first="sleep 3; ")
    hosts = fleet(tmp_path, 1)
    served = [
        serve("--grace", "0", "--lease", "60", runbook=runbook, hosts=hosts, journal=postgres_url)
        for _ in range(2)
    ]
    code, _ = served[0].post(webhook(alert(alertname="NeedsChange", node="host-0")))
    assert code == 200
    holder = wait_for(
        lambda: (e := entries(postgres_url)) and e[0].state is EntryState.RUNNING and e[0].holder,
        "a server to start it",
    )
    [leaving] = [s for s in served if s.server_id == holder]
    leaving.process.send_signal(signal.SIGTERM)
    assert leaving.process.wait(timeout=60) == 0
    assert servers(postgres_url)[str(holder)]["state"] == "released"
    # With a 60 s lease, only the handover (not a lapse) lets the other server go on within the deadline.
    [entry] = wait_for(final(postgres_url, 1), "the other server to finish the run", timeout=45)
    assert entry.holder != holder and len(runs(postgres_url)) == 2


# ----------------------------------------------------------------------------- guardrails across servers


def test_a_budget_of_one_holds_across_two_racing_servers(
    serve: Callable[..., Served], postgres_url: str, tmp_path: Path
) -> None:
    change = f"echo change >> {tmp_path}/{{{{ target }}}}.changes; sleep 0.5"
    runbook = change_runbook(tmp_path, change=change)
    hosts = fleet(tmp_path, 6)
    served = [
        serve(
            "--automate", "needs-change", "--budget", "1", runbook=runbook, hosts=hosts, journal=postgres_url
        )
        for _ in range(2)
    ]
    bodies = [webhook(alert(alertname="NeedsChange", node=f"host-{i}")) for i in range(6)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda job: job[0].post(job[1]), [(s, b) for b in bodies for s in served]))
    assert {code for code, _ in answers} == {200}
    done = wait_for(final(postgres_url, 6), "every host to be remediated or escalated", timeout=120)

    db = Database(postgres_url, write=False)
    try:
        rows = db.read("SELECT host, started_at, ended_at, holder FROM remediations ORDER BY started_at")
    finally:
        db.close()
    assert rows, "at least one remediation ran"
    for (host_a, _, end_a, _), (host_b, start_b, _, _) in itertools.pairwise(rows):
        assert end_a is not None and end_a <= start_b, f"{host_a} and {host_b} were remediated at once"
    refused = [e for e in done if e.state is EntryState.ESCALATED and "fleet budget" in e.note]
    remediated = [e for e in done if e.state is EntryState.DONE]
    assert len(refused) + len(remediated) == 6 and refused, [(e.target, e.state, e.note) for e in done]


# ----------------------------------------------------------------------------- PostgreSQL restarted


def test_postgresql_restarted_under_load_answers_503_meanwhile_and_loses_nothing_acknowledged(
    serve: Callable[..., Served], own_pg_cluster: PgCluster, tmp_path: Path
) -> None:
    store = own_pg_cluster.create_database("cairn")
    hosts = fleet(tmp_path, 400)
    served = [serve(runbook=LOOK, hosts=hosts, journal=store) for _ in range(2)]
    answered: dict[int, int] = {}
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            try:
                code, _ = served[n % 2].post(webhook(alert(alertname="Look", node=f"host-{n}")))
            except (OSError, urllib.error.URLError):
                code = 0
            answered[n] = code
            n += 1

    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for(lambda: len(answered) >= 30, "alerts to flow")
        own_pg_cluster.stop("fast")
        for server in served:
            wait_for(health_is(server, 503), "the server to say the store is unreachable")
            code, body = server.post(webhook(alert(alertname="Look", node="host-399")))
            assert code == 503, body
            assert "does not answer" in json.dumps(server.health()[1])
        own_pg_cluster.start()
        for server in served:
            wait_for(health_is(server, 200), "the server to be healthy again", timeout=60)
    finally:
        stop.set()
        sender.join()
    acknowledged = {f"host-{n}" for n, code in answered.items() if code == 200}
    assert len(acknowledged) >= 30
    queued = wait_for(
        lambda: (now := entries(store)) and {e.target for e in now} >= acknowledged and now,
        "every acknowledged alert in the queue",
        timeout=60,
    )
    assert acknowledged <= {e.target for e in queued}, "nothing answered 200 was lost"
    try:
        wait_for(final(store, len(queued)), "every queued alert to be run", timeout=180)
    except AssertionError as failed:
        stuck = [
            (e.id, e.target, e.state.value, e.holder, e.note) for e in entries(store) if e.state not in FINAL
        ]
        raise AssertionError(f"{failed}: {stuck[:5]}\n" + "\n".join(s.diagnosis() for s in served)) from None


def health_is(server: Served, code: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return server.health()[0] == code
        except OSError:
            return False

    return check
