"""The history and run-detail screens over runs really journaled by the `cairn` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, OptionList, Select, TabbedContent

from engine.core.journal import Journal
from engine.core.model import RunStatus
from tests.conftest import CairnRunner, cairn_command
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.history import HistoryScreen
from tui.screens.run_detail import RunDetailScreen

pytestmark = [pytest.mark.tui, pytest.mark.cli]

MARKER = """
id: marker-missing
title: The service's marker file is missing
severity: warning
summary: The service refuses to start without its marker file.
tags: [files]
inputs:
  marker:
    type: string
    description: Where the marker file lives.
detect:
  - id: look
    title: Look for the marker
    run: if test -f {{ inputs.marker }}; then echo present; else echo "no marker here" >&2; echo missing; fi
    expect: out == 'present'
    report: "marker {{ out }}"
remediate:
  - id: create
    title: Create the marker
    why: The service reads it when it starts.
    run: touch {{ inputs.marker }} && echo created
"""

HEALTHY = """
id: quiet-check
title: A check that finds nothing
severity: info
summary: Always healthy.
detect:
  - id: fine
    title: All is well
    run: echo all well
"""

SLOW = """
id: slow-probe
title: A probe that hangs
severity: critical
summary: The probe never answers.
detect:
  - id: probe
    title: Ask the probe
    run: sleep 120
    timeout: 10m
"""


class ResumingApp(CairnApp):
    """The app with a ``resume_run`` (the lead wires the real one): records what it was asked to resume."""

    def __init__(self, config: CairnConfig) -> None:
        super().__init__(config)
        self.resumed: list[str] = []

    def resume_run(self, run_id: str) -> None:
        self.resumed.append(run_id)


def interrupted_run(runbooks: Path, journal_path: Path) -> str:
    """Start `cairn run slow-probe`, wait until its step runs, stop it with SIGTERM: an interrupted run."""
    process, run_id = running_probe(runbooks, journal_path)
    stop(process)
    return run_id


def running_probe(runbooks: Path, journal_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`cairn run slow-probe` in the background, once its hanging step has started."""
    process = subprocess.Popen(
        [*cairn_command(), "run", "slow-probe", "--runbooks", str(runbooks), "--journal", str(journal_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            if journal_path.exists():
                journal = Journal(journal_path)
                try:
                    runs = [r for r in journal.list_runs() if r.runbook_id == "slow-probe"]
                    steps = journal.get_run(runs[0].id).steps if runs else ()
                finally:
                    journal.close()
                if any(s.status == "running" for s in steps):
                    break
            assert time.monotonic() < deadline, "the slow probe never started"
            time.sleep(0.05)  # polling a subprocess's journal, not synchronising the app
    except BaseException:
        stop(process)
        raise
    return process, runs[0].id


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM: the CLI ends the run as interrupted (exit 130); SIGKILL if it does not."""
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr:
            process.stderr.close()


@pytest.fixture
def journaled(
    cairn: CairnRunner, runbook_dir: Callable[..., Path], journal_path: Path, tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """Four runs by the real CLI: remediated (--yes), declined (no terminal), healthy, interrupted."""
    folder = runbook_dir(MARKER, HEALTHY, SLOW, name="history")
    runs: dict[str, str] = {}
    for name, extra in (
        ("remediated", ["marker-missing", "-e", f"marker={tmp_path / 'a.marker'}", "--yes"]),
        ("declined", ["marker-missing", "-e", f"marker={tmp_path / 'b.marker'}"]),
        ("healthy", ["quiet-check"]),
    ):
        done = cairn("run", *extra, "--runbooks", str(folder), "--json")
        assert done.returncode in (0, 1), done.stderr
        runs[name] = json.loads(done.stdout)["run_id"]
    runs["interrupted"] = interrupted_run(folder, journal_path)
    return folder, runs


def runs_table(app: CairnApp) -> DataTable[object]:
    return app.screen.query_one("#runs", DataTable)


def shown_run_ids(app: CairnApp) -> list[str]:
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    return [r.id for r in screen.shown]


async def open_history(pilot: Pilot[None], count: int) -> None:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await pilot.press("f3")
    await until(
        pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.runs) == count, "the runs"
    )


async def choose(pilot: Pilot[None], select_id: str, label: str) -> None:
    """Pick ``label`` in a Select with the keyboard, as a user would: Enter, arrows, Enter."""
    select = pilot.app.screen.query_one(select_id, Select)
    select.focus()
    await pilot.press("enter")
    await until(pilot, lambda: select.expanded, f"{select_id}'s list")
    overlay = select.query_one(OptionList)  # the list a Select opens (an OptionList)

    def highlighted() -> str:
        index = overlay.highlighted
        return "" if index is None else str(overlay.get_option_at_index(index).prompt)

    for _ in range(overlay.option_count):
        if highlighted() == label:
            break
        await pilot.press("down")
    await pilot.press("enter")
    await until(pilot, lambda: select.value == label, f"{label} chosen in {select_id}")


async def test_history_lists_the_journaled_runs_and_filters_them(
    journaled: tuple[Path, dict[str, str]], journal_path: Path
) -> None:
    folder, runs = journaled
    app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_history(pilot, 4)
        assert shown_run_ids(app)[0] == runs["interrupted"]  # most recent first
        assert set(shown_run_ids(app)) == set(runs.values())
        expected = ("marker-missing", "quiet-check", "slow-probe", "remediated", "present", "healthy")
        await until(pilot, lambda: all(seen in screen_text(app) for seen in expected), "the runs drawn")
        text = screen_text(app)
        assert "interrupted" in text and "finished" in text
        assert "4 runs · 1 interrupted (R resumes)" in text

        await pilot.press("slash")  # the text filter: outcomes, runbooks, hosts, who started it
        await pilot.press(*"remediated")
        await until(pilot, lambda: shown_run_ids(app) == [runs["remediated"]], "the remediated run alone")
        assert "1 shown" in screen_text(app)
        await pilot.press("escape")  # clears the filter
        await until(pilot, lambda: len(shown_run_ids(app)) == 4, "every run again")

        await choose(pilot, "#history-status", "interrupted")
        await until(pilot, lambda: shown_run_ids(app) == [runs["interrupted"]], "the interrupted run alone")
        await choose(pilot, "#history-status", "finished")
        await until(pilot, lambda: len(shown_run_ids(app)) == 3, "the three finished runs")
        await choose(pilot, "#history-runbook", "marker-missing")
        await until(
            pilot,
            lambda: set(shown_run_ids(app)) == {runs["remediated"], runs["declined"]},
            "the finished marker-missing runs",
        )


async def test_a_run_shows_every_step_its_output_and_approvals(
    journaled: tuple[Path, dict[str, str]], journal_path: Path, tmp_path: Path
) -> None:
    folder, runs = journaled
    app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_history(pilot, 4)
        runs_table(app).move_cursor(row=shown_run_ids(app).index(runs["remediated"]))
        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run, "the run's details"
        )
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.run is not None
        text = screen_text(app)
        assert runs["remediated"] in text and "remediated" in text and "finished, exit 0" in text
        steps = detail.query_one("#run-steps", DataTable)
        assert [
            str(steps.get_row_at(i)[1]) + "/" + str(steps.get_row_at(i)[2]) for i in range(steps.row_count)
        ] == [
            "detect/look",
            "remediate/create",
            "verify/look",
        ]
        assert "no marker here" in text  # the first step's stderr, shown as the detail opens
        await pilot.press("down")
        await until(pilot, lambda: "created" in screen_text(app), "the remediation's output")
        text = screen_text(app)
        assert f"touch {tmp_path / 'a.marker'}" in text  # the exact command that ran
        assert "approved by --yes" in text

        await pilot.press("a")  # the approvals tab
        await until(
            pilot,
            lambda: detail.query_one("#run-tabs", TabbedContent).active == "approvals",
            "the approvals tab",
        )
        assert "Approvals (1)" in screen_text(app)
        assert "approved" in screen_text(app) and "--yes" in screen_text(app)

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history again")
        runs_table(app).move_cursor(row=shown_run_ids(app).index(runs["declined"]))
        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run, "the declined run"
        )
        declined = app.screen
        assert isinstance(declined, RunDetailScreen)
        assert "present" in screen_text(app) and "exit 1" in screen_text(app)
        await pilot.press("down")
        await until(
            pilot, lambda: "not asked: no terminal to ask on" in screen_text(app), "why nobody was asked"
        )
        assert "declined" not in screen_text(app)  # nobody refused: there was no one to ask
        await pilot.press("a")
        await until(pilot, lambda: "Approvals (0)" in screen_text(app), "the approvals tab: nobody decided")


async def test_an_interrupted_run_is_marked_and_r_asks_the_app_to_resume_it(
    journaled: tuple[Path, dict[str, str]], journal_path: Path
) -> None:
    folder, runs = journaled
    app = ResumingApp(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_history(pilot, 4)
        runs_table(app).move_cursor(row=shown_run_ids(app).index(runs["healthy"]))
        await pilot.press("R")
        await until(pilot, lambda: "can be resumed" in screen_text(app), "the refusal")
        assert app.resumed == []

        runs_table(app).move_cursor(row=shown_run_ids(app).index(runs["interrupted"]))
        await pilot.press("R")
        await until(pilot, lambda: app.resumed == [runs["interrupted"]], "the resume request")

        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run, "the run's details"
        )
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.run is not None
        assert detail.run.status is RunStatus.INTERRUPTED
        assert "R resumes it from where it stopped" in screen_text(app)
        await pilot.press("R")
        await until(
            pilot, lambda: app.resumed == [runs["interrupted"]] * 2, "the resume request from the details"
        )


async def test_a_running_run_is_followed_until_it_ends(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    folder = runbook_dir(SLOW, name="live")
    process, run_id = running_probe(folder, journal_path)
    try:
        app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await open_history(pilot, 1)
            assert "running" in screen_text(app)
            stop(process)
            # Nothing is pressed: the history reads the journal again while a listed run is running.
            await until(pilot, lambda: "interrupted" in screen_text(app), "the run to show as interrupted")
            history = app.screen
            assert isinstance(history, HistoryScreen)
            assert [r.status for r in history.runs] == [RunStatus.INTERRUPTED]
            assert history.runs[0].id == run_id
    finally:
        if process.poll() is None:
            stop(process)
