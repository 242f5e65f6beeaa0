"""The store: its one schema (Alembic), migrate and prune through the CLI, leases and their fence — on SQLite and real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core.errors import JournalError, LeaseLost
from engine.core.store import migrate
from engine.core.store.database import Database
from engine.core.store.leases import LAPSED, Lease, take_over
from engine.core.store.location import Location, locate
from tests.conftest import REPO, CairnRunner
from tests.postgres import PgCluster

FIRST_RELEASE = """
CREATE TABLE runs (id TEXT PRIMARY KEY, runbook_id TEXT NOT NULL, runbook_path TEXT NOT NULL,
  runbook_sha256 TEXT NOT NULL, runbook_text TEXT NOT NULL, hosts TEXT NOT NULL, inputs TEXT NOT NULL,
  started_by TEXT NOT NULL, trigger TEXT NOT NULL, dry_run INTEGER NOT NULL, last_phase TEXT NOT NULL,
  status TEXT NOT NULL, exit_code INTEGER, outcomes TEXT NOT NULL DEFAULT '{}', started_at REAL NOT NULL,
  finished_at REAL, artifacts TEXT NOT NULL);
CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id), seq INTEGER NOT NULL, host TEXT NOT NULL,
  phase TEXT NOT NULL, step_id TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '', command TEXT NOT NULL DEFAULT '', rc INTEGER,
  stdout TEXT NOT NULL DEFAULT '', stderr TEXT NOT NULL DEFAULT '', out TEXT, started_at REAL, duration REAL,
  approval TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, host, phase, step_id));
CREATE TABLE alert_queue (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL,
  fingerprint TEXT NOT NULL, runbook_id TEXT NOT NULL, target TEXT NOT NULL, alert TEXT NOT NULL,
  state TEXT NOT NULL, run_id TEXT, note TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL);
"""
"""A journal as the first release wrote it (user_version 1: no approvals table, no approved_by)."""


def first_release_journal(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE)
        db.execute("PRAGMA user_version=1")
        db.execute(
            "INSERT INTO runs VALUES ('r1', 'web', 'web.yaml', 'abc', 'id: web', '[\"web-1\"]', '{}', 'ann',"
            " '{\"kind\": \"alert\"}', 0, 'verify', 'finished', 0, '{}', 100.0, 110.0, '/nowhere')"
        )
        db.execute(
            "INSERT INTO steps (run_id, seq, host, phase, step_id, status, message) VALUES"
            " ('r1', 1, 'web-1', 'detect', 'look', 'error', 'interrupted: the run stopped')"
        )
        for entry_id in (1, 2):  # the same key active twice: a race the first release could lose
            db.execute(
                "INSERT INTO alert_queue (id, received_at, fingerprint, runbook_id, target, alert, state,"
                " updated_at) VALUES (?, 1.0, 'f', 'web', 'web-1', '{}', 'queued', 1.0)",
                (entry_id,),
            )


# ----------------------------------------------------------------------------- the schema


def test_the_known_head_is_the_migrations_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert script.get_current_head() == migrate.HEAD
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(migrate.KNOWN)


def test_journal_migrate_takes_over_a_first_release_journal(cairn: CairnRunner, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first_release_journal(path)

    result = cairn("journal", "migrate", "--journal", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"took over the journal at {path}, written by the first release: now schema {migrate.HEAD}"
    )
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT status FROM steps").fetchall() == [("interrupted",)]
        assert db.execute("SELECT trigger_kind FROM runs").fetchall() == [("alert",)]
        states = db.execute("SELECT id, state, note FROM alert_queue ORDER BY id").fetchall()
        assert states == [
            (1, "queued", ""),
            (2, "cancelled", "cancelled by journal migrate: a duplicate of entry 1"),
        ]
        assert {"approvals", "holders", "host_outcomes"} <= {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    again = cairn("journal", "migrate", "--journal", str(path), "--json")
    assert json.loads(again.stdout) == {
        "journal": str(path),
        "before": migrate.HEAD,
        "after": migrate.HEAD,
        "changed": False,
        "legacy": False,
    }


def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first_release_journal(path)
    with sqlite3.connect(path) as db:  # a table 0002 is about to create: the upgrade fails half-way
        db.execute("CREATE TABLE holders (anything TEXT)")
    with pytest.raises(JournalError, match="cannot migrate the journal"):
        migrate.upgrade(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT status FROM steps").fetchall() == [("error",)]  # not rewritten
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "alembic_version" not in tables and "approvals" not in tables


@pytest.mark.postgres
def test_journal_migrate_on_postgresql_creates_then_has_nothing_to_do(
    cairn: CairnRunner, postgres_url: str
) -> None:
    first = cairn("journal", "migrate", "--journal", postgres_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created the journal's schema {migrate.HEAD} at {postgres_url}"
    second = cairn("journal", "migrate", "--journal", postgres_url)
    assert "is up to date" in second.stdout
    db = Database(postgres_url, write=False)
    try:
        assert migrate.revision(db) == migrate.HEAD
        assert {"runs", "steps", "approvals", "alert_queue", "remediations", "holders"} <= db.tables()
    finally:
        db.close()


@pytest.mark.postgres
def test_a_writer_refuses_an_older_postgresql_schema_and_names_the_command(postgres_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = migrate._engine(locate(postgres_url))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(migrate.MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")  # as an older release would leave it
    finally:
        engine.dispose()
    db = Database(postgres_url, write=True)
    try:
        with pytest.raises(JournalError) as refused:
            migrate.ensure_current(db)
    finally:
        db.close()
    assert f"run `cairn journal migrate --journal {postgres_url}`" in str(refused.value)


@pytest.mark.postgres
def test_a_password_in_the_url_is_never_shown(
    cairn: CairnRunner, pg_cluster: PgCluster, postgres_url: str
) -> None:
    url = pg_cluster.create_role("cairn_pw", "s3cr3t-Pa55", database=postgres_url.rsplit("/", 1)[1])
    wrong = url.replace("s3cr3t-Pa55", "wrong-Pa55")
    refused = cairn("journal", "migrate", "--journal", wrong)
    assert refused.returncode == 2
    assert "wrong-Pa55" not in refused.stdout + refused.stderr
    assert "postgresql://cairn_pw:***@" in refused.stderr and "Traceback" not in refused.stderr
    assert "password authentication failed" in refused.stderr and "does not answer" not in refused.stderr
    done = cairn("journal", "migrate", "--journal", url)
    assert done.returncode == 0, done.stderr
    assert "s3cr3t-Pa55" not in done.stdout + done.stderr
    assert "postgresql://cairn_pw:***@" in done.stdout


@pytest.mark.postgres
def test_the_password_may_live_in_a_pgpass_file_instead_of_the_url(
    cairn: CairnRunner, pg_cluster: PgCluster, postgres_url: str, tmp_path: Path
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with_password = pg_cluster.create_role("cairn_pgpass", "pgpass-Pa55", database=database)
    url = with_password.replace(":pgpass-Pa55@", "@")  # what goes on the command line and in the unit file
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_cluster.port}:{database}:cairn_pgpass:pgpass-Pa55\n")
    pgpass.chmod(0o600)
    without = cairn("journal", "migrate", "--journal", url, PGPASSFILE=str(tmp_path / "none"))
    assert without.returncode == 2 and "password" in without.stderr, without.stderr
    done = cairn("journal", "migrate", "--journal", url, PGPASSFILE=str(pgpass))
    assert done.returncode == 0, done.stderr
    listed = cairn("history", "--journal", url, PGPASSFILE=str(pgpass))
    assert listed.returncode == 0, listed.stderr


def test_an_unreachable_postgresql_is_one_line_and_exit_2(cairn: CairnRunner) -> None:
    result = cairn("journal", "migrate", "--journal", "postgresql://cairn:hunter22@127.0.0.1:1/cairn")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "cairn: error: the journal's database does not answer (postgresql://cairn:***@"
    )
    assert "hunter22" not in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- prune


def _old_and_new(db: Database, artifacts: Path, now: float) -> None:
    """Runs and entries 100 days old and 1 day old, one still running, one waiting for a human."""
    day = 86400.0
    with db.transaction() as tx:
        for run_id, age_days, status in (
            ("old", 100, "finished"),
            ("new", 1, "finished"),
            ("live", 100, "running"),
        ):
            folder = artifacts / run_id
            folder.mkdir(parents=True)
            (folder / "runbook.yaml").write_text("id: x\n")
            started = now - age_days * day
            tx.execute(
                "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
                " started_by, trigger, dry_run, last_phase, status, started_at, finished_at, artifacts)"
                " VALUES (?, 'x', 'x.yaml', 's', 'id: x', '[]', '{}', 'me', '{}', 0, 'verify', ?, ?, ?, ?)",
                (run_id, status, started, started + 5 if status == "finished" else None, str(folder)),
            )
            tx.execute(
                "INSERT INTO steps (run_id, seq, host, phase, step_id, status) VALUES (?, 1, 'h', 'detect', 'a', 'ok')",
                (run_id,),
            )
        for state, age_days in (("done", 100), ("escalated", 100), ("done", 1), ("expired", 100)):
            tx.execute(
                "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, updated_at)"
                " VALUES (?, 'f', ?, 't', '{}', ?, ?)",
                (now - age_days * day, f"rb-{state}-{age_days}", state, now - age_days * day),
            )
        [(expired,)] = tx.execute("SELECT id FROM alert_queue WHERE state = 'expired'").fetchall()
        [(waiting,)] = tx.execute("SELECT id FROM alert_queue WHERE state = 'escalated'").fetchall()
        for entry_id in (expired, waiting):  # an attempt and a Slack message each
            tx.execute(
                "INSERT INTO approval_attempts (entry_id, at, action, outcome, who_key, who, identity)"
                " VALUES (?, ?, 'approve', 'counted', 'unix:a', 'a', '{}')",
                (entry_id, now - 100 * day),
            )
            tx.execute(
                "INSERT INTO slack_messages (entry_id, channel, ts, posted_at) VALUES (?, 'C1', ?, ?)",
                (entry_id, f"1.{entry_id}", now - 100 * day),
            )
        for key, age_days, state in (
            ("sent", 100, "delivered"),
            ("stuck", 100, "pending"),
            ("fresh", 1, "delivered"),
        ):
            [(notice,)] = tx.execute(
                "INSERT INTO notices (key, kind, entry_id, created_at, payload, expanded)"
                " VALUES (?, 'escalated', ?, ?, '{}', 1) RETURNING id",
                (key, waiting, now - age_days * day),
            ).fetchall()
            tx.execute(
                "INSERT INTO deliveries (notice_id, entry_id, sink, state, next_at) VALUES (?, ?, 'slack', ?, ?)",
                (notice, waiting, state, now),
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state" / "journal.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_journal_prune_removes_what_ended_long_ago_and_says_what(
    cairn: CairnRunner, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "XDG_STATE_HOME", str(tmp_path / "state-home")
    )  # a PostgreSQL store's artifacts are here
    location = locate(store_url)
    migrate.upgrade(location)
    db = Database(location, write=True)
    _old_and_new(db, location.artifacts_root, time.time())
    db.close()
    dry = cairn("journal", "prune", "--older-than", "90d", "--journal", store_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(
        f"would remove from {location.shown} (ended before the cut-off): 1 runs, 1 steps"
    )
    assert (location.artifacts_root / "old").is_dir()

    result = cairn("journal", "prune", "--older-than", "90d", "--journal", store_url, "--json")
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    assert (said["runs"], said["steps"], said["queue_entries"], said["artifacts_folders"]) == (1, 1, 2, 1)
    assert (said["decision_attempts"], said["notices"]) == (1, 1)
    db = Database(location, write=False)
    try:
        assert sorted(r[0] for r in db.read("SELECT id FROM runs")) == ["live", "new"]
        assert sorted(r[0] for r in db.read("SELECT state FROM alert_queue")) == ["done", "escalated"]
        assert len(db.read("SELECT 1 FROM approval_attempts")) == 1, "the waiting entry's attempt stays"
        assert len(db.read("SELECT 1 FROM slack_messages")) == 1
        kept = sorted(r[0] for r in db.read("SELECT key FROM notices"))
        assert kept == ["fresh", "stuck"], "a notice still to be sent is never removed"
        assert len(db.read("SELECT 1 FROM deliveries")) == 2
    finally:
        db.close()
    assert not (location.artifacts_root / "old").exists()
    assert (location.artifacts_root / "new").is_dir() and (location.artifacts_root / "live").is_dir()


def test_prune_never_removes_a_folder_outside_the_stores_artifacts(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    migrate.upgrade(path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    db = Database(path, write=True)
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
            " started_by, trigger, dry_run, last_phase, status, started_at, finished_at, artifacts)"
            " VALUES ('r', 'x', 'x.yaml', 's', 'id: x', '[]', '{}', 'me', '{}', 0, 'verify', 'finished', 1, 2, ?)",
            (str(precious),),
        )
    from engine.core.store.prune import prune

    pruned = prune(db, 86400)
    db.close()
    assert pruned.runs == 1 and pruned.kept_artifacts == [str(precious)]
    assert (precious / "keep.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- leases


def _queue_running_entry(db: Database, holder: str) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, updated_at,"
            " holder, run_id) VALUES (1, 'f', 'web', 'web-1', '{}', 'running', 1, ?, 'run-1')",
            (holder,),
        )
        tx.execute(
            "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
            " started_by, trigger, dry_run, last_phase, status, started_at, artifacts, holder)"
            " VALUES ('run-1', 'web', 'w', 's', 't', '[]', '{}', 'alertmanager', '{}', 0, 'verify', 'running', 1, '', ?)",
            (holder,),
        )
        tx.execute(
            "INSERT INTO steps (run_id, seq, host, phase, step_id, status) VALUES ('run-1', 1, 'web-1', 'remediate', 'fix', 'running')"
        )


def test_a_lapsed_lease_is_taken_over_and_its_holder_fenced(store_url: str) -> None:
    location = locate(store_url)
    migrate.upgrade(location)
    lease = Lease(location, ttl=0.5, heartbeat=60)  # no renewal in time: it lapses
    lease.start()
    db = Database(location, write=True)
    try:
        _queue_running_entry(db, lease.id)
        with db.transaction() as tx:
            lease.check(tx)  # holds: the fence lets the step's start be recorded

        def lapsed() -> bool:
            return bool(take_over(db, by="other").holders)

        _until(lapsed, "the lease to lapse and be taken over")
        [(state, note)] = db.read("SELECT state, note FROM alert_queue")
        assert state == "queued" and f"the server running it ({lease.id}) stopped" in note
        assert db.read("SELECT status, exit_code FROM runs") == [("interrupted", 130)]
        assert db.read("SELECT status FROM steps") == [("interrupted",)]
        with pytest.raises(LeaseLost, match="no longer holds its work"), db.transaction() as tx:
            lease.check(tx)
        assert lease.renew() is False  # a lapsed holder never comes back
        assert db.read("SELECT state FROM holders") == [(LAPSED,)]
    finally:
        lease.close()
        db.close()


def test_a_holder_whose_process_died_on_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    migrate.upgrade(path)
    script = textwrap.dedent(
        f"""
        import sys, time
        from engine.core.store.leases import Lease
        from engine.core.store.location import locate
        lease = Lease(locate({str(path)!r}), ttl=3600, heartbeat=3600)
        lease.start()
        print(lease.id, flush=True)
        time.sleep(3600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    holder = child.stdout.readline().strip()
    db = Database(path, write=True)
    try:
        assert take_over(db).holders == ()  # alive, with an hour of lease left
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert take_over(db).holders == (holder,)  # its lease has an hour left, its process is gone
    finally:
        db.close()


@pytest.mark.postgres
def test_the_fence_and_the_takeover_never_both_win(postgres_url: str) -> None:
    """Racing many times: either the step's start is recorded while the lease holds (and the takeover
    then interrupts it, so the resuming server sees it started), or the fence refuses it — what the
    fence answered is always what the store holds."""
    location = locate(postgres_url)
    migrate.upgrade(location)
    outcomes = [_race(location, attempt) for attempt in range(30)]
    assert set(outcomes) <= {"recorded", "fenced"}


def _race(location: Location, attempt: int) -> str:
    lease = Lease(location, ttl=0.05 + (attempt % 5) * 0.01, heartbeat=60, id=f"racer-{attempt}")
    lease.start()
    recorder, reaper = Database(location, write=True), Database(location, write=True)
    started = threading.Barrier(2)
    recorded: list[bool] = []

    def record() -> None:
        started.wait()
        try:
            with recorder.transaction() as tx:
                lease.check(tx)
                tx.execute(
                    "INSERT INTO store_probe (id, holder, at) VALUES (?, ?, 0)"
                    " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder",
                    (attempt + 10, lease.id),
                )
            recorded.append(True)
        except LeaseLost:
            recorded.append(False)

    thread = threading.Thread(target=record)
    thread.start()
    started.wait()
    try:
        _until(lambda: bool(take_over(reaper, by="reaper").holders), "the lease to lapse")
        thread.join()
        state = reaper.read("SELECT state FROM holders WHERE id = ?", (lease.id,))[0][0]
        wrote = reaper.read("SELECT count(*) FROM store_probe WHERE holder = ?", (lease.id,))[0][0]
    finally:
        for db in (recorder, reaper):
            db.close()
        lease.close()
    assert state == LAPSED
    assert bool(wrote) is recorded[0]
    return "recorded" if recorded[0] else "fenced"


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _no_stray_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CAIRN_JOURNAL", str(tmp_path / "never-used.db"))
    yield


@pytest.mark.postgres
def test_a_server_frozen_inside_a_transaction_does_not_hold_off_its_takeover(postgres_url: str) -> None:
    """Frozen between the fence's check (its lease's row locked FOR SHARE) and the commit: the server
    ends the idle transaction, so the takeover is not blocked for as long as the process stays frozen."""
    location = locate(postgres_url)
    migrate.upgrade(location)
    lease = Lease(location, ttl=0.5, heartbeat=3600)
    lease.start()
    frozen, reaper = Database(location, write=True), Database(location, write=True)
    open_transaction = frozen.transaction("a step's start")
    open_transaction.__enter__()
    lease.check(open_transaction)  # … and the process stops here, its transaction open

    def taken_over() -> bool:
        try:
            return take_over(reaper, by="reaper").holders == (lease.id,)
        except JournalError:  # blocked by the frozen transaction's lock until lock_timeout
            return False

    try:
        _until(taken_over, "the takeover despite the frozen transaction", timeout=20)
    finally:
        with contextlib.suppress(JournalError):
            open_transaction.__exit__(None, None, None)
        for db in (frozen, reaper):
            db.close()
        lease.close()


PREVIOUS_RELEASE = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    runbook_id TEXT NOT NULL,
    runbook_path TEXT NOT NULL,
    runbook_sha256 TEXT NOT NULL,
    runbook_text TEXT NOT NULL,
    hosts TEXT NOT NULL,
    inputs TEXT NOT NULL,
    started_by TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    last_phase TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    outcomes TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    finished_at REAL,
    artifacts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    host TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL DEFAULT '',
    rc INTEGER,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    out TEXT,
    started_at REAL,
    duration REAL,
    approval TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host, phase, step_id)
);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    host TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    command TEXT NOT NULL,
    approved INTEGER NOT NULL,
    decided_by TEXT NOT NULL,
    note TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS alert_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    target TEXT NOT NULL,
    alert TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT,
    note TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    approved_by TEXT
);
CREATE TABLE IF NOT EXISTS remediations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    automatic INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS remediations_host ON remediations (host, started_at);
CREATE INDEX IF NOT EXISTS remediations_open ON remediations (ended_at);
CREATE INDEX IF NOT EXISTS alert_queue_state ON alert_queue (state, id);
CREATE INDEX IF NOT EXISTS alert_queue_key ON alert_queue (runbook_id, target, state);
CREATE INDEX IF NOT EXISTS alert_queue_fingerprint ON alert_queue (fingerprint, state);
CREATE INDEX IF NOT EXISTS alert_queue_run ON alert_queue (run_id);
"""
"""The store exactly as the release before this one wrote it (journal user_version 2, the queue with
approvals and the remediation ledger), from that release's own schema strings."""


def test_a_journal_of_the_previous_release_is_migrated_in_place_and_read_by_every_command(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_RELEASE)
        db.execute("PRAGMA user_version=2")
        db.execute(
            "INSERT INTO runs (id, runbook_id, runbook_path, runbook_sha256, runbook_text, hosts, inputs,"
            " started_by, trigger, dry_run, last_phase, status, exit_code, outcomes, started_at, finished_at,"
            " artifacts) VALUES ('20261201-010203-abcdef', 'web', 'web.yaml', 's', 'id: web', '[\"web-1\"]',"
            " '{}', 'alertmanager', '{\"kind\": \"alert\"}', 0, 'diagnose', 'finished', 1,"
            ' \'{"web-1": {"outcome": "present", "reason": "still slow"}}\', 100.0, 110.0, \'/nowhere\')'
        )
        db.execute(
            "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, run_id, note,"
            " updated_at, approved_by) VALUES (100.0, 'f', 'web', 'web-1', '{}', 'escalated',"
            " '20261201-010203-abcdef', 'remediation waits for a human: policy', 110.0, NULL)"
        )
        db.execute(
            "INSERT INTO remediations (host, runbook_id, run_id, automatic, started_at, ended_at)"
            " VALUES ('web-1', 'web', 'r0', 1, 50.0, 60.0)"
        )
    before = path.read_bytes()
    read = cairn("history", "--alerts", "--json", "--journal", str(path))
    assert read.returncode == 0, read.stderr
    [run] = json.loads(read.stdout)
    assert run["outcomes"] == {"web-1": {"outcome": "present", "reason": "still slow"}}
    assert path.read_bytes() == before, "reading changed nothing"

    migrated = cairn("journal", "migrate", "--journal", str(path))
    assert migrated.returncode == 0, migrated.stderr
    assert "written by the first release" in migrated.stdout  # no schema version recorded before this one
    queue = cairn("queue", "--json", "--journal", str(path))
    assert queue.returncode == 0, queue.stderr
    [entry] = json.loads(queue.stdout)["entries"]
    assert (entry["state"], entry["run_id"]) == ("escalated", "20261201-010203-abcdef")
    shown = cairn("show-run", "20261201", "--json", "--journal", str(path))
    assert json.loads(shown.stdout)["outcomes"] == run["outcomes"]
    declined = cairn("decline", "20261201", "--journal", str(path), "--reason", "checked by hand")
    assert declined.returncode == 0, declined.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM remediations").fetchone() == (1,), "the ledger kept"
