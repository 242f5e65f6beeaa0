"""`cairn plan`, `run`, `history`, `show-run` through the real command, on this machine."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.store.migrate import HEAD
from tests.conftest import CairnRunner, RunbookDir, cairn_command
from tests.engine.test_journal import FIRST_RELEASE_RUN, first_release_journal

pytestmark = pytest.mark.cli

ECHO = """
id: echo-check
title: Echo check
severity: warning
summary: Checks that a marker file is absent, and removes it.
inputs:
  target: {type: string, default: world}
  marker: {type: string}
  token: {type: string, secret: true, description: an API token}
detect:
  - id: greet
    title: Greet the target
    run: printf '%s\\n' hello {{ inputs.target }}
    report: "{{ out }}"
  - id: marker_absent
    title: Marker file is absent
    run: test ! -e {{ inputs.marker }}
    exit_codes: [0, 1]
    expect: rc == 0
    report: "{{ 'marker present' if rc else 'no marker' }}"
remediate:
  - id: remove_marker
    title: Remove the marker
    run: "rm -f {{ inputs.marker }} && echo token={{ inputs.token }}"
"""

HANG = """
id: hang
title: A step that hangs
severity: info
summary: s
inputs:
  pidfile: {type: string}
detect:
  - id: wait
    title: wait forever
    run: "echo $$ > {{ inputs.pidfile }}; exec sleep 600"
    timeout: 10m
"""


def wait_for(condition: Callable[[], bool], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def test_injection_through_extra_vars_is_an_argument(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    folder = runbook_dir(ECHO)
    owned = tmp_path / "owned"
    hostile = f"x; touch {owned}"
    done = cairn(
        "run",
        "echo-check",
        "--runbooks",
        str(folder),
        "-e",
        f"target={hostile}",
        "-e",
        f"marker={tmp_path / 'marker'}",
        "-e",
        "token=t0k3n-abc",
        "--phase",
        "detect",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not owned.exists()
    assert "greet                    ok" in done.stdout
    plan = cairn(
        "plan",
        "echo-check",
        "--runbooks",
        str(folder),
        "-e",
        f"target={hostile}",
        "-e",
        "marker=m",
        "-e",
        "token=t0k3n-abc",
    )
    assert f"$ printf '%s\\n' hello 'x; touch {owned}'" in plan.stdout
    assert not owned.exists()


def test_run_outcomes_exit_codes_and_journal(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path, journal_path: Path
) -> None:
    folder = runbook_dir(ECHO)
    marker = tmp_path / "marker"
    secret = "t0k3n-5ecret-value"
    common = ["--runbooks", str(folder), "-e", f"marker={marker}", "-e", f"token={secret}"]

    healthy = cairn("run", "echo-check", *common)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy" in healthy.stdout

    marker.write_text("x")
    unasked = cairn("run", "echo-check", *common)  # stdin is not a terminal: nobody can be asked
    assert unasked.returncode == 1
    assert "not asked" in unasked.stdout and "declined" not in unasked.stdout
    assert "rerun on a terminal, or with --yes" in unasked.stdout
    assert marker.exists()

    fixed = cairn("run", "echo-check", *common, "--yes", "--json")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["exit_code"] == 0
    assert report["hosts"][0]["outcome"] == "remediated"
    assert not marker.exists()
    assert secret not in fixed.stdout + fixed.stderr

    history = json.loads(cairn("history", "--json").stdout)
    assert history[0]["id"] == report["run_id"]
    assert [r["status"] for r in history] == ["finished"] * 3
    assert history[0]["inputs"]["token"] == "***"
    assert history[0]["started_by"].startswith(os.environ.get("USER", "") or "")

    others = [r["id"] for r in history[1:]]
    prefix = next(
        report["run_id"][:n]
        for n in range(8, 30)
        if not any(o.startswith(report["run_id"][:n]) for o in others)
    )
    shown = cairn("show-run", prefix)
    assert shown.returncode == 0
    assert "remove_marker" in shown.stdout and "approval: --yes" in shown.stdout
    assert "token=***" in shown.stdout

    # The secret is nowhere on disk: not in the database, not in the artifacts.
    for path in [journal_path, *journal_path.parent.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    with sqlite3.connect(journal_path) as db:
        steps = db.execute(
            "SELECT step_id, status FROM steps WHERE run_id = ? ORDER BY seq", (report["run_id"],)
        )
        assert steps.fetchall() == [
            ("greet", "ok"),
            ("marker_absent", "finding"),
            ("remove_marker", "ok"),
            ("greet", "ok"),
            ("marker_absent", "ok"),
        ]


def test_dry_run_shows_remediation_without_running_it(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    marker.write_text("x")
    done = cairn(
        "run",
        "echo-check",
        "--runbooks",
        str(runbook_dir(ECHO)),
        "-e",
        f"marker={marker}",
        "-e",
        "token=t0k3n-abc",
        "--dry-run",
        "--yes",
    )
    assert done.returncode == 1
    assert f'would run $ rm -f {marker} && echo token="$CAIRN_SECRET_TOKEN"' in done.stdout
    assert marker.exists()


def test_input_errors_are_usage_errors(cairn: CairnRunner, runbook_dir: RunbookDir) -> None:
    folder = str(runbook_dir(ECHO))
    unknown = cairn(
        "run",
        "echo-check",
        "--runbooks",
        folder,
        "-e",
        "colour=red",
        "-e",
        "marker=m",
        "-e",
        "token=t0k3n-abc",
    )
    assert unknown.returncode == 2
    assert "has no input 'colour'" in unknown.stderr
    missing = cairn("run", "echo-check", "--runbooks", folder)
    assert missing.returncode == 2
    assert "-e marker=VALUE" in missing.stderr
    malformed = cairn("run", "echo-check", "--runbooks", folder, "-e", "marker")
    assert malformed.returncode == 2
    assert "expected key=value" in malformed.stderr
    nothing = cairn("run", "nope", "--runbooks", folder)
    assert nothing.returncode == 2
    for done in (unknown, missing, malformed, nothing):
        assert "Traceback" not in done.stderr


def test_failed_run_exits_2(cairn: CairnRunner, runbook_dir: RunbookDir) -> None:
    folder = runbook_dir(
        """
        id: broken-check
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: "echo oops >&2; exit 3"}
        """
    )
    done = cairn("run", "broken-check", "--runbooks", str(folder))
    assert done.returncode == 2
    assert "exit code 3: oops" in done.stdout


def start_hanging_run(runbook_dir: RunbookDir, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """`cairn run hang` in the background; returns it and the pid of its hanging command."""
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [*cairn_command(), "run", "hang", "--runbooks", str(runbook_dir(HANG)), "-e", f"pidfile={pidfile}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    return proc, int(pidfile.read_text())


def test_sigkill_leaves_an_interrupted_run(runbook_dir: RunbookDir, tmp_path: Path) -> None:
    proc, command_pid = start_hanging_run(runbook_dir, tmp_path)
    try:
        proc.kill()
        proc.communicate()
    finally:  # kill -9 cannot clean up: the command lives on, as it would in real life
        os.kill(command_pid, signal.SIGKILL)
    done = subprocess.run([*cairn_command(), "history", "--json"], capture_output=True, text=True, check=True)
    (run,) = json.loads(done.stdout)
    assert run["status"] == "interrupted"
    shown = subprocess.run(
        [*cairn_command(), "show-run", run["id"]], capture_output=True, text=True, check=True
    )
    assert "interrupted: the run stopped before this step finished" in shown.stdout


def test_sigterm_kills_the_command_and_records_the_interruption(
    runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    proc, command_pid = start_hanging_run(runbook_dir, tmp_path)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err
    assert (
        not Path(f"/proc/{command_pid}").exists()
        or "Z" in Path(f"/proc/{command_pid}/stat").read_text().split()[2]
    )
    done = subprocess.run([*cairn_command(), "history", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)[0]["status"] == "interrupted"


LONG_IDS = """
id: long-ids
title: Steps with long and short ids
severity: info
summary: s
detect:
  - {id: a, title: short, run: "true", report: first}
  - {id: the_number_of_release_branches_superseded_by_newer_ones, title: long, run: "true", report: second}
  - {id: b, title: short again, run: "false", exit_codes: [0, 1], expect: rc == 0, report: third}
"""


def test_result_columns_stay_in_line_with_long_step_ids(
    cairn: CairnRunner, runbook_dir: Callable[..., Path]
) -> None:
    folder = runbook_dir(LONG_IDS)
    done = cairn("run", "long-ids", "--runbooks", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.rstrip().endswith(("first", "second", "third"))]
    assert len(rows) == 3, done.stdout
    # the status column starts at the same place on every row, after the longest id
    starts = {row.index(status) for row, status in zip(rows, ("ok", "ok", "FINDING"), strict=True)}
    assert len(starts) == 1, rows
    assert starts.pop() > len("   the_number_of_release_branches_superseded_by_newer_ones")
    shown = cairn("show-run", "last")
    assert shown.returncode == 0, shown.stderr
    lines = [
        line for line in shown.stdout.splitlines() if line.strip().startswith(("a ", "the_number", "b "))
    ]
    assert len({line.index(mark) for line, mark in zip(lines, ("ok", "ok", "FINDING"), strict=True)}) == 1


def test_plan_never_shows_a_secret_in_a_template_error(
    cairn: CairnRunner, runbook_dir: Callable[..., Path]
) -> None:
    folder = runbook_dir(
        """
        id: secret-in-error
        title: t
        severity: info
        summary: s
        inputs:
          token: {type: string, secret: true}
        detect:
          - id: lookup
            title: a lookup keyed by the secret
            when: vars[inputs.token] is defined or vars[inputs.token] == 1
            run: echo {{ vars[inputs.token] }}
          - id: render
            title: a command that reads a key named by the secret
            run: echo {{ vars[inputs.token] }}
        """
    )
    secret = "hunter2-secret-value"
    done = cairn("plan", "secret-in-error", "--runbooks", str(folder), "-e", f"token={secret}")
    assert done.returncode == 0, done.stderr
    assert "cannot render" in done.stdout and "***" in done.stdout
    assert secret not in done.stdout + done.stderr


HALF_DONE = """
id: half-done
title: A remediation that fixes the symptom, then fails
severity: warning
summary: s
inputs:
  marker: {type: string}
detect:
  - id: marker_absent
    title: the marker is absent
    run: test ! -e {{ inputs.marker }}
    exit_codes: [0, 1]
    expect: rc == 0
remediate:
  - id: remove_marker
    title: remove it
    run: rm -f {{ inputs.marker }}
    confirm: false
  - id: restart_service
    title: restart what used it
    run: echo "service did not come back" >&2; exit 3
    confirm: false
"""


def test_a_failed_remediation_says_in_a_sentence_what_a_clean_verify_means(
    cairn: CairnRunner, runbook_dir: Callable[..., Path], tmp_path: Path
) -> None:
    folder = runbook_dir(HALF_DONE)
    marker = tmp_path / "marker"
    marker.write_text("x", encoding="utf-8")
    done = cairn("run", "half-done", "--runbooks", str(folder), "-e", f"marker={marker}", "--json")
    report = json.loads(done.stdout)
    assert report["exit_code"] == 2
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"] == (
        "remediation failed: restart_service: exit code 3: service did not come back; yet verify is clean: "
        "the pitfall is not present now, but restart_service did not finish, so the host may be "
        f"half-changed — read its output (cairn show-run {report['run_id']}) before you trust it"
    )


def test_history_reads_a_first_release_journal_as_it_is_and_a_run_upgrades_it(
    cairn: CairnRunner, runbook_dir: RunbookDir, journal_path: Path, tmp_path: Path
) -> None:
    first_release_journal(journal_path, user_version=1)
    before = {path: path.read_bytes() for path in journal_path.parent.rglob("*") if path.is_file()}

    listed = cairn("history", "--json")
    shown = cairn("show-run", FIRST_RELEASE_RUN, "--json")
    alerts = cairn("history", "--alerts")

    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], r["status"]) for r in json.loads(listed.stdout)] == [(FIRST_RELEASE_RUN, "interrupted")]
    steps = json.loads(shown.stdout)["steps"]
    assert {s["step_id"]: s["status"] for s in steps} == {
        "killed": "interrupted",
        "later": "not_run",
        "fine": "error",
    }
    assert json.loads(shown.stdout)["outcomes"] == {"web1": {"outcome": "present", "reason": "still full"}}
    assert FIRST_RELEASE_RUN in alerts.stdout
    after = {path: path.read_bytes() for path in journal_path.parent.rglob("*") if path.is_file()}
    assert after == before, "reading changed no byte and created no file"

    folder = runbook_dir(ECHO)
    ran = cairn(
        "run", "echo-check", "--runbooks", str(folder), "-e", f"marker={tmp_path / 'none'}", "-e", "token=t",
        "--phase", "detect", "--json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    history = json.loads(cairn("history", "--json").stdout)
    assert [r["id"] for r in history] == [json.loads(ran.stdout)["run_id"], FIRST_RELEASE_RUN]
    with sqlite3.connect(journal_path) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        statuses = dict(
            db.execute("SELECT step_id, status FROM steps WHERE run_id = ?", (FIRST_RELEASE_RUN,))
        )
    db.close()
    assert revision == HEAD
    assert statuses == {"killed": "interrupted", "later": "not_run", "fine": "error"}, (
        "upgraded by the writer"
    )
