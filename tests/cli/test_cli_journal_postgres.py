"""`cairn run`, `history`, `show-run` and `resume` with the journal on PostgreSQL (`--journal postgresql://…`).

A real PostgreSQL on loopback (tests/postgres.py), the real `cairn` command. What a user relies
on: the same commands work on PostgreSQL as on the file, a run's complete output stays on the
machine that ran it, a run killed with -9 reads as interrupted once its lease lapses and resumes
without repeating what finished, a password in the URL is never shown, and a database that does
not answer is one clear line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.cli.test_cli_run import wait_for
from tests.conftest import CairnRunner, RunbookDir, cairn_command
from tests.postgres import PgCluster
from tests.terminal import tmux_terminal

pytestmark = [pytest.mark.cli, pytest.mark.postgres]

ECHO = """
id: echo-check
title: Echo check
severity: warning
summary: Checks that a marker file is absent, and removes it.
inputs:
  marker: {type: string}
detect:
  - id: greet
    title: Greet
    run: echo hello
  - id: marker_absent
    title: Marker file is absent
    run: test ! -e {{ inputs.marker }}
    exit_codes: [0, 1]
    expect: rc == 0
remediate:
  - id: remove_marker
    title: Remove the marker
    run: rm -f {{ inputs.marker }}
"""

# `count` appends a line each time it runs (a repeat shows); `wait` hangs while the flag exists.
COUNT_THEN_WAIT = """
id: count-then-wait
title: Count, then wait
severity: info
summary: s
inputs:
  dir: {type: string}
detect:
  - id: count
    title: count
    run: echo once >> {{ inputs.dir }}/count
  - id: wait
    title: wait while the flag exists
    run: |
      echo $$ > {{ inputs.dir }}/pid
      while [ -e {{ inputs.dir }}/flag ]; do sleep 0.1; done
    timeout: 10m
"""

UNREACHABLE = "postgresql://127.0.0.1:1/nowhere"


def start_waiting_run(runbook_dir: RunbookDir, work: Path, journal: str) -> subprocess.Popen[str]:
    """`cairn run count-then-wait` on ``journal``, returned once its first step is running (it waits
    in its second step while ``work/flag`` exists)."""
    work.mkdir()
    (work / "flag").touch()
    folder = runbook_dir(COUNT_THEN_WAIT)
    proc = subprocess.Popen(
        [*cairn_command(), "run", "count-then-wait", "--runbooks", str(folder), "-e", f"dir={work}",
         "--journal", journal],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (work / "pid").exists() and (work / "pid").read_text().strip() != "")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc


def test_run_history_and_show_run_on_postgresql(
    cairn: CairnRunner, runbook_dir: RunbookDir, postgres_url: str, tmp_path: Path, isolated_state: Path
) -> None:
    folder = runbook_dir(ECHO)
    marker = tmp_path / "marker"
    marker.touch()

    done = cairn(
        "run", "echo-check", "--runbooks", str(folder), "-e", f"marker={marker}", "--yes", "--json",
        "--journal", postgres_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert not marker.exists()

    listed = cairn("history", "--journal", postgres_url)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "remediated" in listed.stdout
    [row] = json.loads(cairn("history", "--json", CAIRN_JOURNAL=postgres_url).stdout)  # the variable too
    assert (row["id"], row["status"], row["exit_code"]) == (run_id, "finished", 0)
    assert row["outcomes"] == {
        "localhost": {"outcome": "remediated", "reason": "remediated; verify is clean"}
    }
    assert json.loads(cairn("history", "--alerts", "--json", "--journal", postgres_url).stdout) == []

    shown = cairn("show-run", run_id[:-2], "--journal", postgres_url)
    assert shown.returncode == 0, shown.stderr
    assert "remove_marker" in shown.stdout and "approval: --yes" in shown.stdout
    steps = json.loads(cairn("show-run", "last", "--json", "--journal", postgres_url).stdout)["steps"]
    assert [(s["phase"], s["step_id"], s["status"]) for s in steps] == [
        ("detect", "greet", "ok"),
        ("detect", "marker_absent", "finding"),
        ("remediate", "remove_marker", "ok"),
        ("verify", "greet", "ok"),
        ("verify", "marker_absent", "ok"),
    ]

    artifacts = isolated_state / "cairn" / "runs" / run_id  # this machine's state folder
    assert row["artifacts"] == str(artifacts)
    assert (artifacts / "localhost" / "detect.greet.stdout").read_text(encoding="utf-8") == "hello\n"
    assert not (isolated_state / "cairn" / "journal.db").exists(), "nothing went to the default file"


def test_a_run_killed_on_postgresql_reads_interrupted_once_its_lease_lapses_and_resumes(
    cairn: CairnRunner, runbook_dir: RunbookDir, postgres_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    proc = start_waiting_run(runbook_dir, work, postgres_url)
    try:
        [running] = json.loads(cairn("history", "--json", "--journal", postgres_url).stdout)
        assert running["status"] == "running", "its process holds its lease"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run_id = running["id"]

    def status() -> str:
        shown = cairn("show-run", run_id, "--json", "--journal", postgres_url)
        assert shown.returncode == 0, shown.stderr
        return str(json.loads(shown.stdout)["status"])

    wait_for(
        lambda: status() == "interrupted", deadline=30
    )  # once its lease ran out, by the database's clock
    (work / "flag").unlink()

    done = cairn("resume", run_id, "--json", "--journal", postgres_url)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    results = {r["step_id"]: r for r in report["hosts"][0]["results"]}
    assert results["count"]["message"].startswith(f"from run {run_id}")
    assert results["wait"]["status"] == "ok"
    assert (work / "count").read_text() == "once\n", "the finished step did not run again"
    history = {r["id"]: r for r in json.loads(cairn("history", "--json", "--journal", postgres_url).stdout)}
    assert history[report["run_id"]]["trigger"]["resumes"] == run_id
    assert history[run_id]["status"] == "interrupted"


def test_a_password_in_the_url_is_in_no_output_log_or_file(
    cairn: CairnRunner,
    runbook_dir: RunbookDir,
    pg_cluster: PgCluster,
    postgres_url: str,
    tmp_path: Path,
    isolated_state: Path,
) -> None:
    password = "pg-Pa55-w0rd!"
    database = postgres_url.rsplit("/", 1)[1]
    url = pg_cluster.create_role("cairn_writer", password, database)
    forms = (password, quote(password, safe=""))
    folder = runbook_dir(ECHO)
    marker = tmp_path / "marker"
    marker.touch()
    said: list[str] = []

    def said_by(*args: str) -> subprocess.CompletedProcess[str]:
        done = cairn(*args, CAIRN_JOURNAL=url)  # kept off the command line, as a user should
        said.extend([done.stdout, done.stderr])
        return done

    ran = said_by("run", "echo-check", "--runbooks", str(folder), "-e", f"marker={marker}", "--yes", "-vv")
    assert ran.returncode == 0, ran.stderr
    said_by("run", "echo-check", "--runbooks", str(folder), "-e", f"marker={marker}", "--yes", "--json")
    said_by("history")
    said_by("history", "--json")
    said_by("show-run", "last", "--output")
    said_by("show-run", "last", "--json")
    missing = said_by("show-run", "nosuchrun")
    assert missing.returncode == 2
    assert f"postgresql://cairn_writer:***@127.0.0.1:{pg_cluster.port}/{database}" in missing.stderr
    refused = cairn("history", CAIRN_JOURNAL=url.replace(f":{pg_cluster.port}/", ":1/"))
    said.extend([refused.stdout, refused.stderr])
    assert refused.returncode == 2 and "cairn_writer:***@127.0.0.1:1/" in refused.stderr

    for text in said:
        assert not any(form in text for form in forms), text
    assert not any(form in pg_cluster.log.read_text(encoding="utf-8", errors="replace") for form in forms)
    for path in isolated_state.rglob("*"):
        if path.is_file():
            assert not any(form.encode() in path.read_bytes() for form in forms), path
    stored = pg_cluster.psql("SELECT row_to_json(r)::text FROM runs r", database=database)
    assert stored.count('"status":"finished"') == 2
    assert not any(form in stored for form in forms)


@pytest.mark.parametrize(
    "command",
    [
        ("history",),
        ("show-run", "last"),
        ("run", "echo-check", "-e", "marker=/nonexistent"),
        ("resume", "20260101-000000-aaaaaa"),
    ],
    ids=["history", "show-run", "run", "resume"],
)
def test_a_postgresql_that_does_not_answer_is_one_clear_line(
    cairn: CairnRunner, runbook_dir: RunbookDir, command: tuple[str, ...]
) -> None:
    extra = ("--runbooks", str(runbook_dir(ECHO))) if command[0] == "run" else ()
    done = cairn(*command, *extra, "--journal", UNREACHABLE)

    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"cairn: error: the journal's database does not answer ({UNREACHABLE}: "), line
    if command[0] == "run":
        assert line.endswith("the run did not start: nothing of it was recorded and nothing ran"), line


def test_a_run_whose_postgresql_stops_says_what_the_journal_holds_and_resumes_once_it_is_back(
    cairn: CairnRunner, runbook_dir: RunbookDir, own_pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = own_pg_cluster.create_database("journal")
    work = tmp_path / "work"
    proc = start_waiting_run(runbook_dir, work, url)
    try:
        own_pg_cluster.stop()
        (work / "flag").unlink()  # the step ends while the database is down: its end cannot be recorded
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    own_pg_cluster.start()

    assert proc.returncode == 2, err
    [line] = err.splitlines()  # one line, no traceback
    run_id = line.rsplit("cairn resume ", 1)[1]
    assert line.startswith(f"cairn: error: the journal's database does not answer ({url}: "), line
    assert (
        f"run {run_id} stopped: the journal holds it up to detect/count on localhost (1 step recorded); "
        "commands already started on hosts may have finished; once the database answers again: cairn resume"
    ) in line, line

    def status() -> str:
        return str(json.loads(cairn("show-run", run_id, "--json", "--journal", url).stdout)["status"])

    wait_for(lambda: status() == "interrupted", deadline=30)
    done = cairn("resume", run_id, "--json", "--journal", url)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["step_id"]: r for r in json.loads(done.stdout)["hosts"][0]["results"]}
    assert results["count"]["message"].startswith(f"from run {run_id}")
    assert results["wait"]["status"] == "ok"
    assert (work / "count").read_text() == "once\n"


@pytest.mark.tui
@pytest.mark.tmux
def test_cairn_tui_reads_its_history_from_postgresql(
    cairn: CairnRunner, runbook_dir: RunbookDir, postgres_url: str, tmp_path: Path
) -> None:
    folder = runbook_dir(ECHO)
    ran = cairn(
        "run", "echo-check", "--runbooks", str(folder), "-e", f"marker={tmp_path / 'none'}", "--json",
        "--journal", postgres_url,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]

    with tmux_terminal() as terminal:
        command = [*cairn_command(), "tui", "--runbooks", str(folder), "--journal", postgres_url]
        terminal.start(command, {"TERM": "xterm-256color", "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
        terminal.wait_for(lambda s: "echo-check" in s and "1 runbook" in s, "the library")
        terminal.keys("F3")
        terminal.wait_for(
            lambda s: "1 run" in s and "finished" in s, "the run from PostgreSQL in the history"
        )
        terminal.keys("Enter")
        terminal.wait_for(lambda s: run_id in s, "the run, opened")
        terminal.keys("C-q")
        terminal.wait_for(lambda s: "CAIRN-EXITED-0" in s, "cairn tui to exit 0 on Ctrl+Q")


SUSPENDED = """
id: suspended-fix
title: A fix run from a terminal that is suspended a while
severity: info
summary: s
inputs:
  dir: {type: string}
detect:
  - id: wait
    title: wait while the flag exists, then find the pitfall
    run: |
      echo $$ > {{ inputs.dir }}/pid
      while [ -e {{ inputs.dir }}/flag ]; do sleep 0.1; done
      test -e {{ inputs.dir }}/fixed && echo fixed || echo broken
    expect: out == 'fixed'
    timeout: 10m
remediate:
  - id: fix
    title: fix
    run: touch {{ inputs.dir }}/fixed
"""


def test_a_run_whose_terminal_was_suspended_longer_than_a_servers_lease_goes_on(
    runbook_dir: RunbookDir, postgres_url: str, tmp_path: Path
) -> None:
    """Ctrl-Z for a while: a human's run holds a lease long enough that its remediation (fenced by
    that lease) still starts when the terminal comes back."""
    from engine.core.store.database import Database

    work = tmp_path / "work"
    work.mkdir()
    (work / "flag").touch()
    proc = subprocess.Popen(
        [*cairn_command(), "run", "suspended-fix", "--runbooks", str(runbook_dir(SUSPENDED)), "-e",
         f"dir={work}", "--journal", postgres_url, "--yes"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    db = Database(postgres_url, write=False)
    try:
        wait_for(lambda: (work / "pid").exists() and (work / "pid").read_text().strip() != "")
        proc.send_signal(signal.SIGSTOP)  # the terminal's Ctrl-Z

        def renewal_age() -> float:
            rows = db.read(f"SELECT {db.now} - max(renewed_at) FROM holders WHERE kind = 'run'")
            return float(rows[0][0]) if rows and rows[0][0] is not None else 0.0

        wait_for(lambda: renewal_age() > 5.0, 30.0)  # longer than a server's lease, without a renewal
        proc.send_signal(signal.SIGCONT)
        (work / "flag").unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        db.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert (work / "fixed").exists(), "the remediation started after the terminal came back"
