"""`cairn resume RUN_ID`: an interrupted run goes on where it stopped; finished remediation is not repeated."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli_run import wait_for
from tests.conftest import CairnRunner, RunbookDir, cairn_command

pytestmark = [pytest.mark.cli]

# Remediation: `count` appends a line each time it runs (so a repeat shows), `wait` hangs while the
# flag file exists, writing its pid first. Verify passes once `count` has run.
TWO_STEPS = """
id: two-steps
title: Two remediation steps, the second one hangs
severity: warning
summary: s
inputs:
  dir: {type: string}
  token: {type: string, secret: true, description: a secret}
detect:
  - id: counted
    title: counted at least once
    run: test -s {{ inputs.dir }}/count
    exit_codes: [0, 1]
    expect: rc == 0
remediate:
  - id: count
    title: count
    run: echo once >> {{ inputs.dir }}/count
  - id: wait
    title: wait while the flag exists
    run: |
      echo $$ > {{ inputs.dir }}/pid
      while [ -e {{ inputs.dir }}/flag ]; do sleep 0.1; done
      echo token is {{ inputs.token }}
    timeout: 10m
"""


def interrupted_run(
    runbook_dir: RunbookDir, tmp_path: Path, *extra: str, stop: signal.Signals = signal.SIGTERM
) -> tuple[str, Path]:
    """Start `cairn run two-steps --yes`, wait until `wait` hangs, stop it (SIGTERM, or SIGINT as Ctrl-C
    sends it): the interrupted run's id."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "flag").touch()
    folder = runbook_dir(TWO_STEPS)
    proc = subprocess.Popen(
        [
            *cairn_command(),
            "run",
            "two-steps",
            "--runbooks",
            str(folder),
            "-e",
            f"dir={work}",
            "--yes",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (work / "pid").exists() and (work / "pid").read_text().strip() != "")
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    run_id = err.split("cairn resume ")[1].split()[0]
    return run_id, work


def test_resume_reuses_finished_steps_and_runs_only_the_rest(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    run_id, work = interrupted_run(runbook_dir, tmp_path, "-e", "token=s3cr3t-value")
    assert (work / "count").read_text() == "once\n"
    (work / "flag").unlink()  # whatever hung is fixed now

    done = cairn("resume", run_id, "--yes", "-e", "token=s3cr3t-value", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    results = {(r["phase"], r["step_id"]): r for r in report["hosts"][0]["results"]}
    assert results[("detect", "counted")]["status"] == "finding"
    assert results[("detect", "counted")]["message"].startswith(f"from run {run_id}")
    assert results[("remediate", "count")]["status"] == "ok"
    assert results[("remediate", "count")]["message"].startswith(f"from run {run_id}")
    assert results[("remediate", "wait")]["status"] == "ok"
    assert results[("remediate", "wait")]["stdout"] == "token is ***\n"
    assert report["hosts"][0]["outcome"] == "remediated"
    assert (work / "count").read_text() == "once\n"  # the finished remediation did not run again

    history = json.loads(cairn("history", "--json").stdout)
    by_id = {r["id"]: r for r in history}
    assert by_id[run_id]["status"] == "interrupted"
    assert by_id[report["run_id"]]["trigger"]["resumes"] == run_id


def test_ctrl_c_in_a_step_records_it_unfinished_and_resume_runs_it_again(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    """Ctrl-C while `wait` runs: the journal records the step's state as data (not its wording), and
    resume runs exactly the unfinished step again."""
    run_id, work = interrupted_run(runbook_dir, tmp_path, "-e", "token=t", stop=signal.SIGINT)
    shown = json.loads(cairn("show-run", run_id, "--json").stdout)
    states = {(s["phase"], s["step_id"]): s["status"] for s in shown["steps"]}
    assert states == {
        ("detect", "counted"): "finding",
        ("remediate", "count"): "ok",
        ("remediate", "wait"): "cancelled",
        ("verify", "counted"): "not_run",
    }
    (work / "flag").unlink()

    done = cairn("resume", run_id, "--yes", "-e", "token=t", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    rerun = [r["step_id"] for r in report["hosts"][0]["results"] if not r["message"].startswith("from run")]
    assert rerun == ["wait", "counted"], "only the cancelled step, then verify, ran again"
    assert report["hosts"][0]["outcome"] == "remediated"
    assert (work / "count").read_text() == "once\n"


def test_a_secret_is_never_journaled_so_resume_asks_for_it_again(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    run_id, work = interrupted_run(runbook_dir, tmp_path, "-e", "token=s3cr3t-value")
    (work / "flag").unlink()
    done = cairn("resume", run_id, "--yes")
    assert done.returncode == 2
    assert "-e token=VALUE" in done.stderr
    assert (work / "count").read_text() == "once\n"


def test_only_an_interrupted_run_can_be_resumed(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    folder = runbook_dir(TWO_STEPS)
    work = tmp_path / "w"
    work.mkdir()
    first = cairn(
        "run", "two-steps", "--runbooks", str(folder), "-e", f"dir={work}", "-e", "token=x", "--yes", "--json"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    done = cairn("resume", run_id, "--yes")
    assert done.returncode == 2
    assert f"run {run_id} is finished: only an interrupted run can be resumed" in done.stderr
    assert "Traceback" not in done.stderr
