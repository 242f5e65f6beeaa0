"""Several `cairn serve` on one store, all active: each alert queued once and run once, a killed
server's run resumed by another without repeating its remediation, a server frozen past its lease
starting nothing when it wakes, and SIGTERM handing the work over.

Everything is real: the `cairn serve` processes, HTTP, bash on the inventory's (local-connection)
hosts, signals, and the store — one SQLite file, or a real PostgreSQL (``postgres_url``). The
runbook's steps append to files under the test's folder, so the tests count exactly what ran on the
"host"; gates (files the test creates) hold a run at a known step.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core.alert_queue import Entry, EntryState
from engine.core.journal_read import RunRecord
from engine.core.model import RunStatus
from tests.cli.conftest import Served, Store, alert, entries, runs, servers, wait_for, webhook
from tests.postgres import PgCluster

pytestmark = pytest.mark.cli

LEASE = "2"
"""--lease for these tests: a frozen server's work is taken over about this long after its last renewal."""

RUNBOOK = """
id: stale-marker
title: A web host's marker is stale
severity: warning
summary: The marker file is missing; the fix (automatic) counts itself and touches it.
triggers:
  - matchers: ['alertname = MarkerStale']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: look
    title: Is the marker there
    run: test -e {dir}/{{{{ target }}}}.fixed && echo fixed || echo stale
    expect: out == 'fixed'
  - id: gate
    title: Wait until the test opens the detect gate
    run: echo started >> {dir}/{{{{ target }}}}.gate; while [ ! -e {dir}/open-detect ]; do sleep 0.05; done; echo open
remediate:
  - id: fix
    title: Fix it (this must happen once)
    automatic: true
    run: echo fix >> {dir}/{{{{ target }}}}.fixes; while [ ! -e {dir}/open-fix ]; do sleep 0.05; done; touch {dir}/{{{{ target }}}}.fixed
verify:
  - id: check
    title: Is the marker there now
    run: test -e {dir}/{{{{ target }}}}.fixed && echo fixed || echo stale
    expect: out == 'fixed'
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, journal_path: Path) -> Store:
    """The store the servers share: the test's SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return journal_path


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    """Where the runbook's commands count themselves and wait for their gates. Whatever happens, the
    gates are open at the end: commands run in sessions of their own and outlive a killed server."""
    folder = tmp_path / "marks"
    folder.mkdir()
    try:
        yield folder
    finally:
        (folder / "open-detect").touch()
        (folder / "open-fix").touch()


@pytest.fixture
def pair(serve: Callable[..., Served], store: Store, marks: Path) -> Callable[..., tuple[Served, Served]]:
    """Two servers on ``store``, automating the runbook (its ``fix`` step is ``automatic``)."""

    def start(*extra: str) -> tuple[Served, Served]:
        runbook = RUNBOOK.format(dir=marks)
        options = ("--automate", "stale-marker", "--lease", LEASE, "--cooldown", "0", *extra)
        return (
            serve(*options, runbook=runbook, journal=store),
            serve(*options, runbook=runbook, journal=store),
        )

    return start


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def fire(served: Served, *nodes: str, fingerprint: str = "") -> list[int]:
    """Send one webhook (an alert per node) to ``served``; the entries it queued."""
    fired = [
        alert(alertname="MarkerStale", node=n, fingerprint=f"{fingerprint}{n}" if fingerprint else "")
        for n in nodes
    ]
    code, body = served.post(webhook(*fired))
    assert code == 200, body
    return list(body["queued"])


def only_entry(store: Store) -> Entry:
    [entry] = entries(store)
    return entry


def runs_of(store: Store, entry: Entry) -> list[RunRecord]:
    """The entry's runs, oldest first."""
    return sorted(
        (r for r in runs(store) if r.trigger.get("queue_entry") == entry.id), key=lambda r: r.started_at
    )


def holding(entry: Entry, *candidates: Served) -> tuple[Served, Served]:
    """(the server holding ``entry``, the other one); ids are read from each server's /healthz."""
    ids = {s.server_id: s for s in candidates}
    holder = ids[str(entry.holder)]
    [other] = [s for s in candidates if s is not holder]
    return holder, other


def metric(served: Served, name: str) -> float:
    code, text = served.get("/metrics")
    assert code == 200
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


# ------------------------------------------------------------------------------------------- intake


def test_a_webhook_sent_to_both_servers_is_queued_once_and_run_once(
    pair: Callable[..., tuple[Served, Served]], store: Store, marks: Path
) -> None:
    (marks / "open-detect").touch()
    (marks / "open-fix").touch()
    first, second = pair()
    nodes = ("web-1", "web-2")
    # Alertmanager with one receiver URL per server: the same webhook to each.
    queued = fire(first, *nodes, fingerprint="same-") + fire(second, *nodes, fingerprint="same-")
    assert len(queued) == 2, "each alert is queued once, whichever server it reached first"

    def all_done() -> list[Entry] | None:
        done = entries(store, EntryState.DONE)
        return done if len(done) == 2 else None

    try:
        done = wait_for(all_done, "both entries to be remediated")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{first.diagnosis()}\n{second.diagnosis()}") from None
    assert {e.note for e in done} == {"remediated automatically; verify is clean"}
    assert len(runs(store)) == 2, "one run per alert"
    for node in nodes:
        assert lines(marks / f"{node}.fixes") == ["fix"], f"{node} was fixed once"

    ids = {first.server_id, second.server_id}
    assert len(ids) == 2, "each server is its own holder"
    for served in (first, second):
        code, health = served.health()
        assert (code, health["ok"], health["lease"]) == (200, True, "held"), health
        assert health["store"] == str(store)
        assert metric(served, "cairn_lease_held") == 1.0
        assert metric(served, f'cairn_server_info{{id="{health["server"]}"}}') == 1.0
        assert metric(served, "cairn_entries_held") == 0.0
    known = servers(store)
    assert {known[i]["state"] for i in ids} == {"live"}


@pytest.mark.postgres
def test_a_store_url_password_is_never_shown(
    serve: Callable[..., Served], postgres_url: str, pg_role_url: str, marks: Path
) -> None:
    """A PostgreSQL URL with a password: the start-up line, /healthz and /metrics show it without."""
    served = serve("--lease", LEASE, runbook=RUNBOOK.format(dir=marks), journal=pg_role_url)
    password = pg_role_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    code, health = served.health()
    assert code == 200, health
    assert ":***@" in health["store"] and password not in health["store"]
    assert password not in served.get("/metrics")[1]
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=60)
    log = served.stderr.read_text()
    assert f"journal {health['store']}" in log
    assert password not in log


@pytest.fixture
def pg_role_url(postgres_url: str, pg_cluster: PgCluster) -> str:
    """``postgres_url``'s database, reached as a role with a password (which must never be shown)."""
    name = postgres_url.rsplit("/", 1)[1]
    return pg_cluster.create_role(f"r_{name[-8:]}", f"pw-{name[-8:]}-s3cret", database=name)


# ------------------------------------------------------------------------------------------- failover


def test_kill_9_mid_remediation_another_server_resumes_and_the_fix_runs_once(
    pair: Callable[..., tuple[Served, Served]], store: Store, marks: Path
) -> None:
    (marks / "open-detect").touch()  # the fix step holds: its gate stays shut until the end
    first, second = pair()
    fire(first, "web-1")
    wait_for(lambda: lines(marks / "web-1.fixes"), "the fix to start")
    entry = only_entry(store)
    killed, survivor = holding(entry, first, second)
    killed_id = killed.server_id
    killed.process.kill()
    killed.process.wait(timeout=30)

    def concluded() -> Entry | None:
        now = only_entry(store)
        return now if now.state in (EntryState.DONE, EntryState.ESCALATED) else None

    try:
        after = wait_for(concluded, "the survivor to resume the run and conclude")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{survivor.diagnosis()}") from None
    assert lines(marks / "web-1.fixes") == ["fix"], "the remediation ran once on the host"
    interrupted, resumed = runs_of(store, after)
    assert interrupted.status is RunStatus.INTERRUPTED
    assert resumed.trigger["resumes"] == interrupted.id
    fixes = [s for run in (interrupted, resumed) for s in run.steps if s.step_id == "fix"]
    assert [s.message.startswith("from run ") for s in fixes] == [False, True], (
        "one row of the fix step ran; the resumed run reused it, never running it again"
    )
    assert resumed.steps[0].message.startswith(f"from run {interrupted.id}"), "look was not run again"
    # Its end is unknown: verify looked, the fix did not hold (its gate is shut), a human decides.
    assert after.state is EntryState.ESCALATED, after.note
    assert servers(store)[killed_id]["state"] == "lapsed"
    assert metric(survivor, "cairn_takeovers_total") == 1.0
    assert metric(survivor, "cairn_entries_taken_over_total") == 1.0


def test_a_server_frozen_past_its_lease_starts_nothing_when_it_wakes(
    pair: Callable[..., tuple[Served, Served]], store: Store, marks: Path
) -> None:
    (marks / "open-fix").touch()
    first, second = pair()
    fire(first, "web-1")
    wait_for(lambda: lines(marks / "web-1.gate"), "the run to reach the detect gate")
    frozen, other = holding(only_entry(store), first, second)
    frozen_id, other_id = frozen.server_id, other.server_id
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: only_entry(store).holder == other_id and len(lines(marks / "web-1.gate")) == 2,
            "the other server to take the entry over once the frozen one's lease ran out, and resume",
        )
        (marks / "open-detect").touch()  # the frozen server's gate command ends too: it does not see it
        done = wait_for(
            lambda: (e := only_entry(store)).state is EntryState.DONE and e, "the other server to remediate"
        )
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    assert done.note == "remediated automatically; verify is clean"

    def registered_again() -> dict[str, object] | None:
        health = frozen.health()[1]
        lost = health.get("lease_lost")
        again = isinstance(lost, dict) and lost["server"] == frozen_id and health["lease"] == "held"
        return health if again else None

    try:
        health = wait_for(registered_again, "the woken server to say its lease was lost, and register again")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{frozen.diagnosis()}") from None
    assert health["server"] != frozen_id, "a new holder id: the lost lease never holds again"
    assert metric(frozen, "cairn_lease_losses_total") == 1.0
    assert metric(frozen, "cairn_lease_held") == 1.0
    assert servers(store)[frozen_id]["state"] == "lapsed"
    assert lines(marks / "web-1.fixes") == ["fix"], "the woken server did not remediate again"
    first_run, resumed = runs_of(store, done)
    assert resumed.trigger["resumes"] == first_run.id
    started_after = [
        (s.step_id, s.status) for s in first_run.steps if s.phase != "detect" and s.status != "not_run"
    ]
    assert started_after == [], "the frozen server's run started nothing after its lease lapsed"
    log = frozen.stderr.read_text()
    assert f"this server ({frozen_id}) lost its lease" in log, log
    assert "Traceback" not in log


def test_sigterm_hands_the_running_entry_over_to_the_other_server(
    pair: Callable[..., tuple[Served, Served]], store: Store, marks: Path
) -> None:
    (marks / "open-fix").touch()
    first, second = pair("--grace", "0")
    fire(first, "web-1")
    wait_for(lambda: lines(marks / "web-1.gate"), "the run to reach the detect gate")
    stopping, other = holding(only_entry(store), first, second)
    stopping_id, other_id = stopping.server_id, other.server_id
    stopping.process.send_signal(signal.SIGTERM)
    assert stopping.process.wait(timeout=60) == 0
    assert servers(store)[stopping_id]["state"] == "released", "it let go of its lease itself"

    resumed_at_gate = wait_for(
        lambda: (e := only_entry(store)).holder == other_id and len(lines(marks / "web-1.gate")) == 2 and e,
        "the other server to claim the handed-over entry and resume its run",
    )
    [first_run] = runs_of(store, resumed_at_gate)[:1]
    assert resumed_at_gate.note == (
        f"handed over at shutdown by {stopping_id}: run {first_run.id} was interrupted; "
        "another cairn serve resumes it without repeating finished steps"
    )
    (marks / "open-detect").touch()
    done = wait_for(lambda: (e := only_entry(store)).state is EntryState.DONE and e, "the resumed run")
    assert done.note == "remediated automatically; verify is clean"
    interrupted, resumed = runs_of(store, done)
    assert (interrupted.id, interrupted.status) == (first_run.id, RunStatus.INTERRUPTED)
    assert resumed.trigger["resumes"] == interrupted.id
    assert [(s.step_id, s.message.split(":")[0]) for s in resumed.steps][:2] == [
        ("look", f"from run {interrupted.id}"),
        ("gate", ""),
    ]
    assert lines(marks / "web-1.fixes") == ["fix"]
    assert "cairn serve: stopped (SIGTERM)" in stopping.stderr.read_text()


# ------------------------------------------------------------------------------------------- the store


@pytest.mark.postgres
def test_a_store_that_does_not_answer_is_a_503_and_the_server_carries_on_after(
    serve: Callable[..., Served], own_pg_cluster: PgCluster, marks: Path
) -> None:
    """PostgreSQL down: webhooks and /healthz answer 503 (Alertmanager retries); back up, the server is
    healthy again by itself and the retried webhook runs — as when the journal's disk is full."""
    (marks / "open-detect").touch()
    (marks / "open-fix").touch()
    url = own_pg_cluster.create_database("cairn_outage")
    options = ("--automate", "stale-marker", "--lease", LEASE)
    served = serve(*options, runbook=RUNBOOK.format(dir=marks), journal=url)
    fired = webhook(alert(alertname="MarkerStale", node="web-1"))

    own_pg_cluster.stop(mode="immediate")
    try:
        code, body = served.post(fired)
        assert code == 503, body
        assert body["error"].startswith(
            "could not persist the alerts: the journal's database does not answer"
        )
        code, health = served.health()
        assert (code, health["ok"]) == (503, False), health
        assert health["store"] == url
    finally:
        own_pg_cluster.start()

    try:
        wait_for(lambda: served.health()[0] == 200, "the server to be healthy again by itself")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{served.get('/healthz')}\n{served.diagnosis()}") from None
    code, body = served.post(fired)  # Alertmanager's retry
    assert code == 200 and len(body["queued"]) == 1, body
    done = wait_for(lambda: (e := only_entry(url)).state is EntryState.DONE and e, "the retried alert's run")
    assert done.note == "remediated automatically; verify is clean"
    assert lines(marks / "web-1.fixes") == ["fix"]
    log = served.stderr.read_text()
    assert "the journal's database does not answer" in log and "Traceback" not in log, log
