"""Resume from the TUI: an interrupted run, opened from the history, goes on where it stopped."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.core.journal import Journal
from engine.core.model import RunStatus
from tests.cli.test_cli_run import wait_for
from tests.conftest import cairn_command
from tests.tui.conftest import screen_text, until
from tests.tui.test_history import open_history
from tui.app import make_app
from tui.config import CairnConfig
from tui.screens.run import RunScreen

pytestmark = [pytest.mark.tui]

# `count` appends a line each time it runs (a repeat would show); `wait` hangs while the flag exists.
TWO_STEPS = """
id: two-steps
title: Two remediation steps, the second one hangs
severity: warning
summary: s
inputs:
  dir: {type: string}
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
    timeout: 10m
"""


def interrupted(tmp_path: Path, journal_path: Path) -> tuple[Path, Path, str]:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "two-steps.yaml").write_text(textwrap.dedent(TWO_STEPS).lstrip(), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "flag").touch()
    proc = subprocess.Popen(
        [*cairn_command(), "run", "two-steps", "--runbooks", str(folder), "-e", f"dir={work}", "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"CAIRN_JOURNAL": str(journal_path)},
    )
    wait_for(lambda: (work / "pid").exists() and (work / "pid").read_text().strip() != "")
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    return folder, work, err.split("cairn resume ")[1].split()[0]


async def test_r_in_the_history_resumes_without_repeating_the_finished_remediation(
    tmp_path: Path, journal_path: Path
) -> None:
    folder, work, run_id = interrupted(tmp_path, journal_path)
    (work / "flag").unlink()  # what hung is fixed now
    app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path, user="oncall"))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_history(pilot, 1)
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen of the resumed run")
        await pilot.press("c")  # go on: the remaining remediation asks for approval
        await until(
            pilot,
            lambda: "waiting for your approval" in screen_text(app) or "Approve" in screen_text(app),
            "the approval",
        )
        await pilot.press("y")
        await until(pilot, lambda: "REMEDIATED" in screen_text(app), "verify's verdict")

    assert (work / "count").read_text() == "once\n"  # the finished remediation did not run again
    journal = Journal(journal_path)
    try:
        runs = {r.id: r for r in journal.list_runs()}
        (resumed,) = [r for r in runs.values() if r.id != run_id]
        assert runs[run_id].status is RunStatus.INTERRUPTED
        assert resumed.trigger["resumes"] == run_id
        steps = {(s.phase, s.step_id): s for s in journal.get_run(resumed.id).steps}
    finally:
        journal.close()
    assert steps[("remediate", "count")].message.startswith(f"from run {run_id}")
    assert steps[("remediate", "wait")].status == "ok"
    assert steps[("remediate", "wait")].approval == "tui:oncall"
    assert steps[("verify", "counted")].status == "ok"
