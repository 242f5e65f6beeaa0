"""The run journal, driven through an EventBus: what it keeps, bounds, and reports after a crash.

Tests that take ``store`` run on both stores: a SQLite file and a fresh PostgreSQL database
(marker ``postgres``: a throwaway cluster on loopback, tests/postgres.py). The rest are about the
SQLite file itself. More on PostgreSQL, leases and the fence: test_journal_postgres.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.core.errors import JournalError
from engine.core.events import (
    EventBus,
    HostFinished,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.core.journal import DB_OUTPUT_LIMIT, Journal
from engine.core.journal_read import JournalReader
from engine.core.model import (
    HostOutcome,
    HostReport,
    Phase,
    RunReport,
    RunStatus,
    StepResult,
    StepStatus,
)

REPO = Path(__file__).resolve().parents[2]
RUNBOOK_TEXT = "id: disk-full\ntitle: Disk full\nseverity: warning\nsummary: s\ndetect: []\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, journal_path: Path) -> str:
    """What ``--journal`` names: this test's journal file, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(journal_path)
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def journal(store: str) -> Iterator[Journal]:
    opened = Journal(store)
    yield opened
    opened.close()


@pytest.fixture
def reader(store: str, journal: Journal) -> Iterator[Journal]:
    """A second Journal on the same store: sees only what the first has committed."""
    opened = Journal(store)
    yield opened
    opened.close()


@pytest.fixture
def file_journal(journal_path: Path) -> Iterator[Journal]:
    """A journal on this test's SQLite file (for what is about the file itself)."""
    opened = Journal(journal_path)
    yield opened
    opened.close()


def raw_rows(store: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``statement`` (``?`` placeholders) straight through the driver, beside Cairn's own connections."""
    if not store.startswith("postgresql://"):
        with sqlite3.connect(store) as db:
            rows = db.execute(statement, params).fetchall()
        db.close()
        return rows
    with psycopg.connect(store, autocommit=True) as pg:
        return [tuple(row) for row in pg.execute(statement.replace("?", "%s"), params).fetchall()]


def start_run(
    journal: Journal, run_id: str, *, runbook_id: str = "disk-full", hosts: tuple[str, ...] = ("web1",)
) -> EventBus:
    bus = EventBus(run_id)
    bus.subscribe(journal.record)
    bus.emit(
        RunStarted(
            runbook_id=runbook_id,
            runbook_path=f"/srv/runbooks/{runbook_id}.yaml",
            runbook_sha256=hashlib.sha256(RUNBOOK_TEXT.encode()).hexdigest(),
            runbook_text=RUNBOOK_TEXT,
            hosts=hosts,
            inputs={"path": "/var", "token": "***"},
            started_by="alice",
            trigger={"kind": "cli"},
            dry_run=False,
            last_phase="verify",
        )
    )
    return bus


def finish_run(bus: EventBus, runbook_id: str = "disk-full", *, interrupted: bool = False) -> None:
    report = RunReport(
        run_id=bus.run_id,
        runbook_id=runbook_id,
        hosts=(HostReport(host="web1", outcome=HostOutcome.HEALTHY, results=()),),
        interrupted=interrupted,
    )
    bus.emit(RunFinished(report=report))


def step_started(bus: EventBus, step_id: str, command: str = "df -P /var", host: str = "web1") -> None:
    bus.emit(
        StepStarted(
            host=host, phase=Phase.DETECT, step_id=step_id, title=f"Title of {step_id}", command=command
        )
    )


# --------------------------------------------------------------------------- a whole run


def test_run_steps_and_approvals_read_back(journal: Journal, journal_path: Path) -> None:
    run_id = "20260101-120000-abcdef"
    bus = start_run(journal, run_id, hosts=("web1", "db-1.example.com"))
    step_started(bus, "disk_usage")
    bus.emit(StepOutput(host="web1", phase=Phase.DETECT, step_id="disk_usage", stream="stdout", text="91\n"))
    bus.emit(
        StepFinished(
            result=StepResult(
                host="web1",
                phase=Phase.DETECT,
                step_id="disk_usage",
                status=StepStatus.FINDING,
                message="/var is 91% full",
                command="df -P /var",
                rc=0,
                stdout="91\n",
                stderr="warning: slow\n",
                out=91,
                started_at=1.0,
                duration=0.25,
            )
        )
    )
    bus.emit(
        StepApproval(
            host="web1",
            phase=Phase.REMEDIATE,
            step_id="clean_logs",
            command="journalctl --vacuum-size=500M",
            approved=True,
            by="tty:alice",
            note="looks safe",
        )
    )
    step_started(bus, "clean_logs", command="journalctl --vacuum-size=500M")
    bus.emit(
        StepFinished(
            result=StepResult(
                host="web1",
                phase=Phase.DETECT,
                step_id="clean_logs",
                status=StepStatus.OK,
                command="journalctl --vacuum-size=500M",
                rc=0,
                out={"freed": ["a", "b"]},
                approval="tty:alice",
            )
        )
    )
    bus.emit(
        StepApproval(
            host="db-1.example.com",
            phase=Phase.REMEDIATE,
            step_id="clean_logs",
            command="journalctl --vacuum-size=500M",
            approved=False,
            by="no terminal",
        )
    )
    bus.emit(
        HostFinished(
            report=HostReport(host="web1", outcome=HostOutcome.REMEDIATED, results=(), reason="cleaned")
        )
    )
    bus.emit(
        HostFinished(
            report=HostReport(
                host="db-1.example.com", outcome=HostOutcome.PRESENT, results=(), reason="declined"
            )
        )
    )
    bus.emit(
        RunFinished(
            report=RunReport(
                run_id=run_id,
                runbook_id="disk-full",
                hosts=(
                    HostReport(host="web1", outcome=HostOutcome.REMEDIATED, results=()),
                    HostReport(host="db-1.example.com", outcome=HostOutcome.PRESENT, results=()),
                ),
            )
        )
    )

    run = journal.get_run(run_id)

    assert run.id == run_id
    assert run.runbook_id == "disk-full"
    assert run.runbook_path == "/srv/runbooks/disk-full.yaml"
    assert run.runbook_text == RUNBOOK_TEXT
    assert run.runbook_sha256 == hashlib.sha256(RUNBOOK_TEXT.encode()).hexdigest()
    assert run.hosts == ("web1", "db-1.example.com")
    assert run.inputs == {"path": "/var", "token": "***"}
    assert run.started_by == "alice"
    assert run.trigger == {"kind": "cli"}
    assert run.dry_run is False
    assert run.last_phase == "verify"
    assert run.status is RunStatus.FINISHED
    assert run.exit_code == 1
    assert run.finished_at is not None
    assert run.finished_at >= run.started_at
    assert run.outcomes == {
        "web1": {"outcome": "remediated", "reason": "cleaned"},
        "db-1.example.com": {"outcome": "present", "reason": "declined"},
    }
    assert run.artifacts == str(journal_path.parent / "runs" / run_id)

    assert [(s.step_id, s.status) for s in run.steps] == [("disk_usage", "finding"), ("clean_logs", "ok")]
    usage, clean = run.steps
    assert usage.title == "Title of disk_usage"
    assert usage.message == "/var is 91% full"
    assert usage.command == "df -P /var"
    assert usage.rc == 0
    assert usage.stdout == "91\n"
    assert usage.stderr == "warning: slow\n"
    assert usage.out == 91
    assert usage.duration == 0.25
    assert clean.out == {"freed": ["a", "b"]}
    assert clean.approval == "tty:alice"

    assert [(a.host, a.step_id, a.approved, a.decided_by, a.note) for a in run.approvals] == [
        ("web1", "clean_logs", True, "tty:alice", "looks safe"),
        ("db-1.example.com", "clean_logs", False, "no terminal", ""),
    ]
    assert run.approvals[0].phase == "remediate"
    assert run.approvals[0].command == "journalctl --vacuum-size=500M"


def test_finished_run_reads_back_from_a_new_journal(journal: Journal, store: str) -> None:
    bus = start_run(journal, "20260101-120000-000001")
    finish_run(bus)
    journal.close()

    reopened = Journal(store)
    try:
        run = reopened.get_run("20260101-120000-000001")
    finally:
        reopened.close()

    assert run.status is RunStatus.FINISHED
    assert run.exit_code == 0


def test_interrupted_run_report_is_recorded_as_interrupted(journal: Journal) -> None:
    bus = start_run(journal, "20260101-120000-000002")
    finish_run(bus, interrupted=True)

    run = journal.get_run("20260101-120000-000002")

    assert run.status is RunStatus.INTERRUPTED
    assert run.exit_code == 130


# --------------------------------------------------------------------------- finding runs


def test_get_run_by_unique_prefix(journal: Journal) -> None:
    for run_id in ("20260101-120000-aaa111", "20260101-120000-aab222"):
        finish_run(start_run(journal, run_id))

    assert journal.get_run("20260101-120000-aab").id == "20260101-120000-aab222"
    assert journal.get_run("20260101-120000-aaa1").id == "20260101-120000-aaa111"


def test_get_run_by_ambiguous_prefix_lists_the_candidates(journal: Journal) -> None:
    for run_id in ("20260101-120000-aaa111", "20260101-120000-aab222", "20260102-000000-ccc333"):
        finish_run(start_run(journal, run_id))

    with pytest.raises(JournalError) as caught:
        journal.get_run("20260101-120000-aa")

    assert str(caught.value) == (
        "run id '20260101-120000-aa' is ambiguous: 20260101-120000-aaa111, 20260101-120000-aab222;"
        " give more of it"
    )


def test_get_run_unknown_id_says_how_to_list_runs(journal: Journal, store: str) -> None:
    finish_run(start_run(journal, "20260101-120000-aaa111"))

    with pytest.raises(JournalError) as caught:
        journal.get_run("20991231")

    assert str(caught.value) == f"no run '20991231' in {store}; `cairn history` lists the runs"


@pytest.mark.parametrize("pattern", ["%", "_", "2026010_-%"])
def test_get_run_treats_like_wildcards_literally(journal: Journal, pattern: str) -> None:
    finish_run(start_run(journal, "20260101-120000-aaa111"))

    with pytest.raises(JournalError, match="no run"):
        journal.get_run(pattern)


def test_list_runs_most_recent_first_with_limit_and_runbook_filter(journal: Journal) -> None:
    # Started in this order; ids sort the same way, so equal timestamps would not change the order.
    started = [
        ("20260101-000001-000001", "disk-full"),
        ("20260101-000002-000002", "branch-cleanup"),
        ("20260101-000003-000003", "disk-full"),
        ("20260101-000004-000004", "disk-full"),
    ]
    for run_id, runbook_id in started:
        finish_run(start_run(journal, run_id, runbook_id=runbook_id), runbook_id)

    assert [r.id for r in journal.list_runs()] == [run_id for run_id, _ in reversed(started)]
    assert [r.id for r in journal.list_runs(limit=2)] == ["20260101-000004-000004", "20260101-000003-000003"]
    assert [r.id for r in journal.list_runs(runbook_id="disk-full", limit=2)] == [
        "20260101-000004-000004",
        "20260101-000003-000003",
    ]
    assert [r.id for r in journal.list_runs(runbook_id="branch-cleanup")] == ["20260101-000002-000002"]
    assert journal.list_runs(runbook_id="no-such-runbook") == []
    assert all(r.steps == () for r in journal.list_runs())


def test_list_runs_of_an_empty_journal(journal: Journal) -> None:
    assert journal.list_runs() == []


# --------------------------------------------------------------------------- written as it happens


def test_step_is_recorded_as_running_when_it_starts(journal: Journal, reader: Journal) -> None:
    bus = start_run(journal, "20260101-120000-000003")
    step_started(bus, "slow_check", command="sleep 30")

    running = reader.get_run("20260101-120000-000003")

    assert running.status is RunStatus.RUNNING
    assert [(s.step_id, s.status, s.command, s.title) for s in running.steps] == [
        ("slow_check", "running", "sleep 30", "Title of slow_check")
    ]
    assert running.steps[0].started_at is not None

    bus.emit(
        StepFinished(
            result=StepResult(
                host="web1", phase=Phase.DETECT, step_id="slow_check", status=StepStatus.OK, rc=0
            )
        )
    )

    finished = reader.get_run("20260101-120000-000003")
    assert [(s.step_id, s.status, s.title) for s in finished.steps] == [
        ("slow_check", "ok", "Title of slow_check")
    ]


def test_run_is_visible_to_another_reader_as_soon_as_it_starts(journal: Journal, reader: Journal) -> None:
    start_run(journal, "20260101-120000-000004")

    assert [r.id for r in reader.list_runs()] == ["20260101-120000-000004"]
    assert reader.get_run("20260101-120000-000004").status is RunStatus.RUNNING


def test_long_output_is_bounded_in_the_database_and_complete_in_artifacts(
    journal: Journal, journal_path: Path
) -> None:
    run_id = "20260101-120000-000005"
    bus = start_run(journal, run_id)
    step_started(bus, "big")
    lines = [f"line {i:06d} {'x' * 40}\n" for i in range(5000)]
    full = "".join(lines)
    assert len(full) > 2 * DB_OUTPUT_LIMIT
    for chunk_start in range(0, len(lines), 700):
        text = "".join(lines[chunk_start : chunk_start + 700])
        bus.emit(StepOutput(host="web1", phase=Phase.DETECT, step_id="big", stream="stdout", text=text))
    bus.emit(StepOutput(host="web1", phase=Phase.DETECT, step_id="big", stream="stderr", text="err\n"))
    bus.emit(
        StepFinished(
            result=StepResult(
                host="web1",
                phase=Phase.DETECT,
                step_id="big",
                status=StepStatus.OK,
                rc=0,
                stdout=full,
                stderr="err\n",
            )
        )
    )

    stored = journal.get_run(run_id).steps[0].stdout

    assert len(stored) < len(full)
    assert len(stored) <= DB_OUTPUT_LIMIT + 200
    assert "omitted" in stored
    assert full.startswith(stored.split("\n[…", 1)[0])
    assert stored.startswith("line 000000 ")
    assert stored.endswith(lines[-1])
    folder = journal_path.parent / "runs" / run_id / "web1"
    assert (folder / "detect.big.stdout").read_text(encoding="utf-8") == full
    assert (folder / "detect.big.stderr").read_text(encoding="utf-8") == "err\n"


def test_output_within_the_limit_is_stored_whole(journal: Journal) -> None:
    text = "y" * DB_OUTPUT_LIMIT
    bus = start_run(journal, "20260101-120000-000006")
    bus.emit(
        StepFinished(
            result=StepResult(host="web1", phase=Phase.DETECT, step_id="s", status=StepStatus.OK, stdout=text)
        )
    )

    assert journal.get_run("20260101-120000-000006").steps[0].stdout == text


def test_runbook_snapshot_is_written_to_the_artifacts_folder(journal: Journal, journal_path: Path) -> None:
    run_id = "20260101-120000-000007"
    start_run(journal, run_id)

    snapshot = journal_path.parent / "runs" / run_id / "runbook.yaml"

    assert snapshot.read_text(encoding="utf-8") == RUNBOOK_TEXT
    assert journal.get_run(run_id).artifacts == str(snapshot.parent)


# --------------------------------------------------------------------------- crashes

HOLDER = textwrap.dedent(
    """
    import sys
    from engine.core.events import EventBus, RunStarted, StepStarted
    from engine.core.journal import Journal
    from engine.core.model import Phase

    journal = Journal(sys.argv[1])
    bus = EventBus(sys.argv[2])
    bus.subscribe(journal.record)
    bus.emit(RunStarted(runbook_id="disk-full",
        runbook_path="/srv/runbooks/disk-full.yaml",
        runbook_sha256="0" * 64,
        runbook_text="id: disk-full\\n",
        hosts=("web1",),
        inputs={},
        started_by="holder"))
    bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="hang", title="Hang", command="sleep 600"))
    print("ready", flush=True)
    sys.stdin.read()  # blocks until the test closes stdin, or kills us
    """
)


@pytest.fixture
def holder(store: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Another process that has started a run and is in the middle of a step."""
    run_id = "20260101-120000-f00d00"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store, run_id],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # EOF (not a hang) if the holder fails
        if line != "ready\n":
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"holder process did not start its run: {line!r} {err}")
        yield proc, run_id
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_run_of_a_killed_process_is_reported_interrupted(
    holder: tuple[subprocess.Popen[str], str], store: str
) -> None:
    proc, run_id = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    journal = Journal(store)
    try:
        run = journal.get_run(run_id)
    finally:
        journal.close()

    assert run.status is RunStatus.INTERRUPTED
    assert run.exit_code == 130
    assert [(s.step_id, s.status) for s in run.steps] == [("hang", "interrupted")]
    assert run.steps[0].message.startswith("interrupted")


def test_run_of_a_killed_process_is_interrupted_in_the_history_too(
    holder: tuple[subprocess.Popen[str], str], store: str
) -> None:
    proc, run_id = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    journal = Journal(store)
    try:
        listed = journal.list_runs()
    finally:
        journal.close()

    assert [(r.id, r.status, r.exit_code) for r in listed] == [(run_id, RunStatus.INTERRUPTED, 130)]


def test_run_held_by_a_live_process_stays_running(
    holder: tuple[subprocess.Popen[str], str], store: str
) -> None:
    proc, run_id = holder

    journal = Journal(store)
    try:
        run = journal.get_run(run_id)
        listed = journal.list_runs()
    finally:
        journal.close()

    assert proc.poll() is None
    assert run.status is RunStatus.RUNNING
    assert run.exit_code is None
    assert [(s.step_id, s.status, s.message) for s in run.steps] == [("hang", "running", "")]
    assert [(r.id, r.status) for r in listed] == [(run_id, RunStatus.RUNNING)]


def test_run_of_this_process_stays_running_for_another_journal(journal: Journal, reader: Journal) -> None:
    start_run(journal, "20260101-120000-000008")

    assert reader.get_run("20260101-120000-000008").status is RunStatus.RUNNING


# --------------------------------------------------------------------------- the database


def test_database_uses_wal(file_journal: Journal, journal_path: Path) -> None:
    with sqlite3.connect(journal_path) as raw:
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
    raw.close()

    assert mode == "wal"


def test_unwritable_path_names_the_path_and_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    path = blocker / "cairn" / "journal.db"

    with pytest.raises(JournalError) as caught:
        Journal(path)

    message = str(caught.value)
    assert message.startswith(f"cannot open the journal at {path}: ")
    assert "--journal PATH" in message


def test_journal_defaults_to_cairn_journal_env(journal_path: Path) -> None:
    journal = Journal()
    try:
        assert journal.location.path == journal_path
    finally:
        journal.close()
    assert journal_path.exists()


# --------------------------------------------------------------------------- reading writes nothing; durability


def test_a_killed_run_is_read_as_interrupted_and_only_a_writer_records_it(
    holder: tuple[subprocess.Popen[str], str], store: str
) -> None:
    proc, run_id = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    reader = JournalReader(store)
    try:
        shown = reader.get_run(run_id)
    finally:
        reader.close()
    stored = raw_rows(store, "SELECT status FROM runs WHERE id = ?", (run_id,))
    assert (shown.status, shown.exit_code, shown.steps[0].status) == (
        RunStatus.INTERRUPTED,
        130,
        "interrupted",
    )
    assert stored == [("running",)], "reading wrote nothing"

    Journal(store).close()  # a writer opening the journal records what readers show
    assert raw_rows(store, "SELECT status, exit_code FROM runs WHERE id = ?", (run_id,)) == [
        ("interrupted", 130)
    ]
    assert raw_rows(store, "SELECT status FROM steps WHERE run_id = ?", (run_id,)) == [("interrupted",)]


def test_a_reader_reads_a_first_release_journal_as_this_version_and_leaves_the_upgrade_to_a_writer(
    journal_path: Path,
) -> None:
    first_release_journal(journal_path, user_version=1)
    before = journal_path.read_bytes()

    reader = JournalReader(journal_path)
    try:
        run = reader.get_run("last")
        listed = reader.list_runs(trigger_kind="alert")
    finally:
        reader.close()

    assert {s.step_id: s.status for s in run.steps} == {
        "killed": "interrupted",
        "later": "not_run",
        "fine": "error",
    }
    assert run.outcomes == {"web1": {"outcome": "present", "reason": "still full"}}
    assert [r.id for r in listed] == [FIRST_RELEASE_RUN]
    assert journal_path.read_bytes() == before, "the reader did not upgrade the file"
    assert not journal_path.with_name("journal.db-wal").exists()


def test_a_writer_upgrades_a_first_release_journal_and_reads_it_as_before(journal_path: Path) -> None:
    first_release_journal(journal_path, user_version=1)

    journal = Journal(journal_path)
    try:
        run = journal.get_run(FIRST_RELEASE_RUN)
        bus = start_run(journal, "20260101-130000-000001")
        bus.emit(
            HostFinished(report=HostReport(host="web1", outcome=HostOutcome.HEALTHY, results=(), reason="ok"))
        )
        finish_run(bus)
        alerts = [r.id for r in journal.list_runs(trigger_kind="alert")]
        new = journal.get_run("20260101-130000-000001")
    finally:
        journal.close()

    assert {s.step_id: s.status for s in run.steps} == {
        "killed": "interrupted",
        "later": "not_run",
        "fine": "error",
    }
    assert run.outcomes == {"web1": {"outcome": "present", "reason": "still full"}}
    assert alerts == [FIRST_RELEASE_RUN]
    assert new.outcomes == {"web1": {"outcome": "healthy", "reason": "ok"}}
    with sqlite3.connect(journal_path) as raw:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        statuses = dict(
            raw.execute("SELECT step_id, status FROM steps WHERE run_id = ?", (FIRST_RELEASE_RUN,))
        )
        kind = raw.execute("SELECT trigger_kind FROM runs WHERE id = ?", (FIRST_RELEASE_RUN,)).fetchone()
    raw.close()
    assert {"alembic_version", "host_outcomes", "holders"} <= tables
    assert statuses == {"killed": "interrupted", "later": "not_run", "fine": "error"}, "upgraded on file"
    assert kind == ("alert",)


def test_what_changes_hosts_is_synced_to_disk_before_the_run_goes_on(file_journal: Journal) -> None:
    """A remediation step's start and end, and an approval, commit with ``synchronous=FULL``: synced
    to disk, with every commit before them, before the runner takes its next step. After a power loss
    the journal still says which remediation steps began and which finished, so a resume never
    repeats one it recorded finished. Steps that only look (detect, diagnose, verify) are not synced on
    their own: a power loss may take back their tail, which a resumed run looks at again. A power
    loss cannot be made here; this checks the setting each commit runs with."""
    connection = file_journal.db.connection()
    said: list[str] = []
    connection.set_trace_callback(said.append)
    bus = start_run(file_journal, "20260101-120000-00000a")
    for phase, step_id in ((Phase.DETECT, "look"), (Phase.REMEDIATE, "fix")):
        bus.emit(StepStarted(host="web1", phase=phase, step_id=step_id, title=step_id, command="true"))
        if phase is Phase.REMEDIATE:
            bus.emit(
                StepApproval(
                    host="web1", phase=phase, step_id=step_id, command="true", approved=True, by="alice"
                )
            )
        bus.emit(
            StepFinished(
                result=StepResult(host="web1", phase=phase, step_id=step_id, status=StepStatus.OK, message="")
            )
        )
    finish_run(bus)
    connection.set_trace_callback(None)

    synced = [
        synced_writes for synced_writes in _commits(said) if synced_writes[0] == "PRAGMA synchronous=FULL"
    ]
    written = [" ".join(next(s for s in c if s.startswith(("INSERT", "UPDATE"))).split()[:3]) for c in synced]
    assert written == ["INSERT INTO steps", "INSERT INTO approvals", "INSERT INTO steps"], said
    assert all(any("'fix'" in s for s in c) for c in synced), "only the remediation step's commits are synced"
    assert all(c[-1] == "PRAGMA synchronous=NORMAL" for c in synced), "back to NORMAL after each"
    last = _commits(said)[-1]
    assert any(s.startswith("UPDATE runs SET status = 'finished'") for s in last), last
    assert "PRAGMA synchronous=FULL" not in last, "the run's end is not synced on its own"
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _commits(said: list[str]) -> list[list[str]]:
    """The traced statements cut into one list per commit: a transaction (with the PRAGMAs around
    it), or a statement that commits alone (autocommit, outside BEGIN … COMMIT)."""
    commits: list[list[str]] = [[]]
    for statement in said:
        alone = not commits[-1] and statement.startswith(("INSERT", "UPDATE"))
        commits[-1].append(statement)
        synced = commits[-1][0] == "PRAGMA synchronous=FULL"
        if alone or statement == ("PRAGMA synchronous=NORMAL" if synced else "COMMIT"):
            commits.append([])
    return [c for c in commits if any(s.startswith(("INSERT", "UPDATE")) for s in c)]


# --------------------------------------------------------------------------- a journal of the first release

FIRST_RELEASE_RUN = "20260101-120000-000009"
FIRST_RELEASE_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, runbook_id TEXT NOT NULL, runbook_path TEXT NOT NULL, runbook_sha256 TEXT NOT NULL,
    runbook_text TEXT NOT NULL, hosts TEXT NOT NULL, inputs TEXT NOT NULL, started_by TEXT NOT NULL,
    trigger TEXT NOT NULL, dry_run INTEGER NOT NULL, last_phase TEXT NOT NULL, status TEXT NOT NULL,
    exit_code INTEGER, outcomes TEXT NOT NULL DEFAULT '{}', started_at REAL NOT NULL, finished_at REAL,
    artifacts TEXT NOT NULL
);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs (id), seq INTEGER NOT NULL, host TEXT NOT NULL, phase TEXT NOT NULL,
    step_id TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL DEFAULT '', rc INTEGER, stdout TEXT NOT NULL DEFAULT '', stderr TEXT NOT NULL DEFAULT '',
    out TEXT, started_at REAL, duration REAL, approval TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host, phase, step_id)
);
CREATE TABLE approvals (
    run_id TEXT NOT NULL REFERENCES runs (id), seq INTEGER NOT NULL, host TEXT NOT NULL, phase TEXT NOT NULL,
    step_id TEXT NOT NULL, command TEXT NOT NULL, approved INTEGER NOT NULL, decided_by TEXT NOT NULL,
    note TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE alert_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, fingerprint TEXT NOT NULL,
    runbook_id TEXT NOT NULL, target TEXT NOT NULL, alert TEXT NOT NULL, state TEXT NOT NULL, run_id TEXT,
    note TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL, approved_by TEXT
);
CREATE TABLE remediations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, runbook_id TEXT NOT NULL, run_id TEXT NOT NULL,
    automatic INTEGER NOT NULL, started_at REAL NOT NULL, ended_at REAL
);
"""
"""The tables as the first release created them (its journal.py and alert_queue.py)."""


def first_release_journal(
    path: Path, *, user_version: int = 2, steps: tuple[tuple[str, str, str], ...] | None = None
) -> None:
    """A journal file as the first release wrote it, one alert-started run in it, finished with three
    steps and an outcome kept in the run's own row. ``user_version=1``: steps stopped before their end
    as that release's first version recorded them (told apart by their messages only). ``steps``:
    (step id, status, message) instead, as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    interrupted, not_run = ("error", "skipped") if user_version < 2 else ("interrupted", "not_run")
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.executescript(FIRST_RELEASE_SCHEMA)
        raw.execute(
            "INSERT INTO runs VALUES (?, 'disk-full', '/srv/runbooks/disk-full.yaml', ?, ?, '[\"web1\"]', '{}',"
            " 'cairn serve', ?, 0, 'verify', 'interrupted', 130, ?, 1767268800.0, 1767268805.0, ?)",
            (
                FIRST_RELEASE_RUN,
                hashlib.sha256(RUNBOOK_TEXT.encode()).hexdigest(),
                RUNBOOK_TEXT,
                '{"kind": "alert", "alert": "DiskFull"}',
                '{"web1": {"outcome": "present", "reason": "still full"}}',
                str(path.parent / "runs" / FIRST_RELEASE_RUN),
            ),
        )
        kept = steps or (
            ("killed", interrupted, "interrupted: the run stopped before this step finished"),
            ("later", not_run, "not run: the run was interrupted"),
            ("fine", "error", "exit code 3"),
        )
        for seq, (step_id, status, message) in enumerate(kept):
            raw.execute(
                "INSERT INTO steps (run_id, seq, host, phase, step_id, status, message) VALUES (?, ?, 'web1',"
                " 'detect', ?, ?, ?)",
                (FIRST_RELEASE_RUN, seq, step_id, status, message),
            )
        raw.execute(f"PRAGMA user_version={user_version}")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
