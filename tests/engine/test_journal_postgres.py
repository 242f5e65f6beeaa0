"""The journal on PostgreSQL, and what came with it: runs held by a lease, and the fence.

Tests that take ``store`` run on both stores (a SQLite file, a fresh PostgreSQL database): a
run with a holder is alive while the holder's lease holds, by the database's clock, whatever
process holds its lock file; with a fence, a remediation step's start and each approval are
recorded only while the lease holds, checked in the same transaction. The rest are PostgreSQL's
own: a server that stops, a password in the URL, a reader that never creates the schema, the
TUI's run process on PostgreSQL. The fence here is a small stand-in for
:meth:`engine.core.store.leases.Lease.check` with the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from engine.core.errors import JournalError, JournalUnreachable, LeaseLost
from engine.core.events import Event, StepApproval, StepFinished, StepOutput, StepStarted
from engine.core.journal import Journal, journal_for_a_run
from engine.core.journal_read import JournalReader
from engine.core.loader import load_library
from engine.core.model import LOCALHOST, Phase, RunStatus, StepResult, StepStatus
from engine.core.pacing import Pace, PaceDecision
from engine.core.run_process import RunHandlers, RunOrder, run_in_child
from engine.core.spec import RunSpec, Trigger, TriggerKind
from engine.core.store.database import Database, Transaction
from engine.core.store.location import locate
from engine.core.store.migrate import ensure_current
from tests.engine.test_journal import finish_run, raw_rows, start_run
from tests.postgres import PgCluster

HOLDER = "srv-a"
RUN = "20260101-120000-0000aa"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, journal_path: Path) -> str:
    """This test's journal file, or a fresh PostgreSQL database's URL (as in test_journal.py)."""
    if request.param == "sqlite":
        return str(journal_path)
    url: str = request.getfixturevalue("postgres_url")
    return url


def hold(store: str, holder: str = HOLDER, *, seconds: float = 60.0) -> None:
    """Register ``holder`` with a lease ending ``seconds`` from now by the database's clock."""
    db = Database(store, write=True)
    try:
        ensure_current(db)
        with db.transaction("register a holder") as tx:
            tx.execute(
                "INSERT INTO holders (id, kind, machine, pid, started_at, renewed_at, lease_until, state)"
                f" VALUES (?, 'serve', 'elsewhere', 1, {db.now}, {db.now}, {db.now} + ?, 'live')",
                (holder, seconds),
            )
    finally:
        db.close()


def lapse(store: str, holder: str = HOLDER) -> None:
    """``holder``'s lease runs out now (as when its server was paused or killed)."""
    db = Database(store, write=True)
    try:
        with db.transaction("end a lease") as tx:
            tx.execute(f"UPDATE holders SET lease_until = {db.now} - 1 WHERE id = ?", (holder,))
    finally:
        db.close()


class FakeFence:
    """Checks the holder's lease inside the transaction that records, as a lease's fence does, and
    leaves a mark there: the mark commits with the write, or goes with it."""

    def __init__(self, holder: str = HOLDER) -> None:
        self.holder = holder
        self.checks = 0
        self.in_transaction: list[bool] = []
        self.lost = ""

    def check(self, tx: Transaction) -> None:
        self.checks += 1
        self.in_transaction.append(tx.db.in_transaction())
        tx.execute("UPDATE holders SET note = note || 'x' WHERE id = ?", (self.holder,))
        row = tx.execute(
            f"SELECT state = 'live' AND lease_until > {tx.db.now} FROM holders WHERE id = ?", (self.holder,)
        ).fetchone()
        if row is None or not row[0]:
            raise LeaseLost(f"{self.holder}'s lease lapsed")


def remediation_started(step_id: str) -> StepStarted:
    return StepStarted(host="web1", phase=Phase.REMEDIATE, step_id=step_id, title=step_id, command="rm -f /x")


def remediation_finished(step_id: str) -> StepFinished:
    return StepFinished(
        result=StepResult(host="web1", phase=Phase.REMEDIATE, step_id=step_id, status=StepStatus.OK, rc=0)
    )


def approval(step_id: str) -> StepApproval:
    return StepApproval(
        host="web1", phase=Phase.REMEDIATE, step_id=step_id, command="rm -f /x", approved=True, by="alice"
    )


def shown(store: str, run_id: str = RUN) -> RunStatus:
    reader = JournalReader(store)
    try:
        return reader.get_run(run_id).status
    finally:
        reader.close()


# --------------------------------------------------------------------------- runs held by a lease


def test_a_run_with_a_holder_is_alive_while_its_lease_holds_and_interrupted_once_it_lapses(
    store: str,
) -> None:
    hold(store)
    journal = Journal(store, holder=HOLDER)
    try:
        bus = start_run(journal, RUN)
        bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="look", title="look", command="true"))
        assert raw_rows(store, "SELECT holder FROM runs WHERE id = ?", (RUN,)) == [(HOLDER,)]

        Journal(store).close()  # another writer opens the store: the run's lease holds, it stays running
        assert shown(store) is RunStatus.RUNNING
        assert raw_rows(store, "SELECT status FROM runs WHERE id = ?", (RUN,)) == [("running",)]

        lapse(store)  # this process still holds the run's lock file: the lease decides, not the file
        assert shown(store) is RunStatus.INTERRUPTED
        assert raw_rows(store, "SELECT status FROM runs WHERE id = ?", (RUN,)) == [("running",)], "read only"

        Journal(store).close()  # a writer records what readers show
        assert raw_rows(store, "SELECT status, exit_code FROM runs WHERE id = ?", (RUN,)) == [
            ("interrupted", 130)
        ]
        assert raw_rows(store, "SELECT status FROM steps WHERE run_id = ?", (RUN,)) == [("interrupted",)]
    finally:
        journal.close()


def test_a_run_whose_holder_is_unknown_reads_interrupted(store: str) -> None:
    journal = Journal(store, holder="never-registered")
    try:
        start_run(journal, RUN)
        assert shown(store) is RunStatus.INTERRUPTED
    finally:
        journal.close()


# --------------------------------------------------------------------------- the fence


def test_a_fence_lets_remediation_be_recorded_while_the_lease_holds_and_stops_the_run_once_it_lapsed(
    store: str,
) -> None:
    hold(store)
    fence = FakeFence()
    journal = Journal(store, holder=HOLDER, fence=fence)
    try:
        bus = start_run(journal, RUN)
        bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="look", title="look", command="true"))
        bus.emit(
            StepFinished(
                result=StepResult(host="web1", phase=Phase.DETECT, step_id="look", status=StepStatus.FINDING)
            )
        )
        assert fence.checks == 0, "steps that only look are not fenced"
        bus.emit(approval("fix"))
        bus.emit(remediation_started("fix"))
        bus.emit(remediation_finished("fix"))
        assert (fence.checks, fence.in_transaction) == (2, [True, True]), "the approval and the start"

        lapse(store)
        with pytest.raises(LeaseLost) as lost:
            bus.emit(remediation_started("fix_more"))
        refused: list[Callable[[], object]] = [
            lambda: bus.emit(remediation_finished("fix_more")),
            lambda: bus.emit(approval("fix_more")),
            lambda: finish_run(bus),
        ]
        for later in refused:
            with pytest.raises(LeaseLost):
                later()
        bus.emit(
            StepOutput(host="web1", phase=Phase.REMEDIATE, step_id="fix_more", stream="stdout", text="x\n")
        )
    finally:
        journal.close()

    assert str(lost.value) == (
        f"run {RUN} stopped: the lease it ran under lapsed before the next step could be recorded (the "
        "process was paused or cut off from the store for longer than the lease), so nothing more of the "
        "run starts here; another server may hold its work now (the journal holds it up to "
        "remediate/fix on web1 (2 steps recorded))"
    )
    steps = raw_rows(store, "SELECT phase, step_id, status FROM steps WHERE run_id = ? ORDER BY seq", (RUN,))
    assert steps == [("detect", "look", "finding"), ("remediate", "fix", "ok")], "fix_more never recorded"
    assert raw_rows(store, "SELECT step_id FROM approvals WHERE run_id = ?", (RUN,)) == [("fix",)]
    assert raw_rows(store, "SELECT note FROM holders WHERE id = ?", (HOLDER,)) == [("xx",)], (
        "the two checks that let a write through committed with it; the refused one went with its write"
    )
    assert shown(store) is RunStatus.INTERRUPTED


def test_without_a_fence_nothing_is_checked(store: str) -> None:
    journal = Journal(store)
    try:
        bus = start_run(journal, RUN)
        bus.emit(approval("fix"))
        bus.emit(remediation_started("fix"))
        bus.emit(remediation_finished("fix"))
        finish_run(bus)
    finally:
        journal.close()
    assert shown(store) is RunStatus.FINISHED


# --------------------------------------------------------------------------- a front end's own run


def test_a_front_ends_run_on_postgresql_is_held_by_a_lease_of_its_own_and_on_sqlite_by_its_lock_file(
    store: str,
) -> None:
    journal = journal_for_a_run(store)
    try:
        finish_run(start_run(journal, RUN))
        [(holder,)] = raw_rows(store, "SELECT holder FROM runs WHERE id = ?", (RUN,))
        if store.startswith("postgresql://"):
            assert holder == journal.holder and journal.fence is not None
            assert raw_rows(store, "SELECT kind, state FROM holders WHERE id = ?", (holder,)) == [
                ("run", "live")
            ]
        else:
            assert holder is None and journal.fence is None
    finally:
        journal.close()
    if holder is not None:
        assert raw_rows(store, "SELECT state FROM holders WHERE id = ?", (holder,)) == [("released",)]


QUICK = """
id: quick
title: A quick check
severity: info
summary: Says hello.
detect:
  - id: hello
    title: Say hello
    run: echo hello
"""


@pytest.mark.postgres
def test_the_tuis_run_process_journals_on_postgresql(
    postgres_url: str, runbook_dir: Callable[..., Path], isolated_state: Path
) -> None:
    [loaded] = load_library([runbook_dir(QUICK)]).results
    assert loaded.runbook is not None
    spec = RunSpec(
        runbook=loaded.runbook, hosts=(LOCALHOST,), inputs={}, trigger=Trigger(kind=TriggerKind.TUI)
    )
    crashes: list[str] = []
    events: list[Event] = []
    run_in_child(
        RunOrder(spec, locate(postgres_url)),
        RunHandlers(
            pace=lambda request: PaceDecision(Pace.RUN),
            approve=lambda request: pytest.fail(f"nothing here needs approval: {request}"),
            cancel=threading.Event(),
            on_events=events.extend,
            on_crash=crashes.append,
        ),
    )
    assert crashes == []
    reader = JournalReader(postgres_url)
    try:
        run = reader.get_run(spec.run_id)
    finally:
        reader.close()
    assert (run.status, [(s.step_id, s.stdout) for s in run.steps]) == (
        RunStatus.FINISHED,
        [("hello", "hello\n")],
    )
    assert run.artifacts == str(isolated_state / "cairn" / "runs" / spec.run_id), (
        "this machine's state folder"
    )
    assert (Path(run.artifacts) / "localhost" / "detect.hello.stdout").read_text(
        encoding="utf-8"
    ) == "hello\n"


# --------------------------------------------------------------------------- PostgreSQL's own


@pytest.fixture
def own_database(own_pg_cluster: PgCluster) -> Iterator[tuple[PgCluster, str]]:
    yield own_pg_cluster, own_pg_cluster.create_database("journal")


@pytest.mark.postgres
def test_a_postgresql_that_stops_stops_the_runs_record_and_the_journal_writes_again_once_it_is_back(
    own_database: tuple[PgCluster, str],
) -> None:
    cluster, url = own_database
    journal = Journal(url)
    try:
        bus = start_run(journal, RUN)
        bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="first", title="", command="true"))
        bus.emit(
            StepFinished(
                result=StepResult(host="web1", phase=Phase.DETECT, step_id="first", status=StepStatus.OK)
            )
        )
        cluster.stop()
        with pytest.raises(JournalUnreachable) as down:
            bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="second", title="", command="true"))
        with pytest.raises(JournalUnreachable):  # the run stays stopped, even once the server is back
            bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="third", title="", command="true"))
        cluster.start()
        with pytest.raises(JournalUnreachable):
            bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="third", title="", command="true"))

        finish_run(start_run(journal, "20260101-120000-0000bb"))  # the same journal writes again
    finally:
        journal.close()

    message = str(down.value)
    assert message.startswith(f"the journal's database does not answer ({url}: "), message
    assert message.endswith(
        f"run {RUN} stopped: the journal holds it up to detect/first on web1 (1 step recorded); "
        "commands already started on hosts may have finished"
    ), message
    reader = JournalReader(url)
    try:
        stopped, later = reader.get_run(RUN), reader.get_run("20260101-120000-0000bb")
    finally:
        reader.close()
    assert (stopped.status, [s.step_id for s in stopped.steps]) == (RunStatus.INTERRUPTED, ["first"])
    assert later.status is RunStatus.FINISHED


@pytest.mark.postgres
def test_a_password_in_the_url_is_in_no_message(pg_cluster: PgCluster, postgres_url: str) -> None:
    password = "s3cret-Pa55!"
    database = postgres_url.rsplit("/", 1)[1]
    url = pg_cluster.create_role("journal_writer", password, database)
    assert quote(password, safe="") in url

    journal = Journal(url)
    try:
        finish_run(start_run(journal, RUN))
        with pytest.raises(JournalError) as unknown:
            journal.get_run("nope")
        where = journal.where
    finally:
        journal.close()
    with pytest.raises(JournalUnreachable) as refused:
        JournalReader(url.replace(f":{pg_cluster.port}/", ":1/"))

    said = [where, str(unknown.value), str(refused.value)]
    assert where == f"postgresql://journal_writer:***@127.0.0.1:{pg_cluster.port}/{database}"
    for text in said:
        assert password not in text and quote(password, safe="") not in text, text
    assert shown(url) is RunStatus.FINISHED


@pytest.mark.postgres
def test_a_reader_of_an_empty_postgresql_database_finds_no_run_and_creates_nothing(postgres_url: str) -> None:
    reader = JournalReader(postgres_url)
    try:
        assert reader.list_runs() == []
        with pytest.raises(JournalError, match="no run yet in"):
            reader.get_run("last")
    finally:
        reader.close()
    assert raw_rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
