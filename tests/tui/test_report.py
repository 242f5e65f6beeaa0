"""The run detail screen's report: p writes the run's incident report as Markdown and HTML into the
current folder and says where; a folder it cannot write into is an error notification.

The run is journaled by the real `cairn` CLI; the files are read back as a user would open them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.pilot import Pilot

from tests.conftest import CairnRunner, RunbookDir
from tests.disks import SmallDisk
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
inputs:
  marker:
    type: string
detect:
  - id: look
    title: Look for the marker
    run: if test -f {{ inputs.marker }}; then echo present; else echo '<b>no marker</b>' >&2; echo missing; fi
    expect: out == 'present'
    report: "marker {{ out }}"
remediate:
  - id: create
    title: Create the marker
    run: touch {{ inputs.marker }} && echo created
"""


@pytest.fixture
def journaled(cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path) -> tuple[Path, str]:
    folder = runbook_dir(MARKER)
    done = cairn(
        "run", "marker-missing", "--runbooks", str(folder), "-e", f"marker={tmp_path / 'm'}", "--yes", "--json"
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, json.loads(done.stdout)["run_id"]


def toast_text(app: CairnApp) -> str:
    """The notifications' text as shown: what is right of each toast's edge (▌), rows joined with a
    space (a long path wraps across rows)."""
    rows = [line.rpartition("▌")[2].strip() for line in screen_text(app).splitlines() if "▌" in line]
    return " ".join(row for row in rows if row)


async def open_run(pilot: Pilot[None]) -> RunDetailScreen:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await pilot.press("f3")
    await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.runs) == 1, "the run")
    await pilot.press("enter")
    await until(
        pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run, "the run's details"
    )
    detail = app.screen
    assert isinstance(detail, RunDetailScreen)
    return detail


async def test_p_writes_the_report_beside_the_tui_and_says_where(
    journaled: tuple[Path, str], journal_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, run_id = journaled
    here = tmp_path / "incidents"
    here.mkdir()
    monkeypatch.chdir(here)
    app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        await open_run(pilot)
        assert "Report" in screen_text(app)  # the footer offers it
        await pilot.press("p")
        markdown, page = here / f"cairn-report-{run_id}.md", here / f"cairn-report-{run_id}.html"
        await until(pilot, lambda: "report written" in screen_text(app), "the notification")
        shown = toast_text(app)
        assert shown.startswith("Report report written: "), shown
        assert str(markdown) in shown.replace(" ", "") and str(page) in shown.replace(" ", "")
    text = markdown.read_text()
    assert text.startswith(f"# Incident report: marker-missing, run {run_id}\n")
    assert "| localhost | remediated | clean |" in text
    assert "| localhost remediate/create | approved | --yes |" in text
    html = page.read_text()
    assert "<title>Incident report: marker-missing, run " in html
    assert "&lt;b&gt;no marker&lt;/b&gt;" in html and "<b>no marker" not in html
    assert markdown.stat().st_mode & 0o777 == 0o600


async def test_a_folder_the_report_cannot_be_written_into_is_an_error_notification(
    journaled: tuple[Path, str],
    journal_path: Path,
    disk: SmallDisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, run_id = journaled
    read_only = disk.read_only_view()
    monkeypatch.chdir(read_only)
    app = make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path))
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        await open_run(pilot)
        await pilot.press("p")
        await until(pilot, lambda: "report not written" in screen_text(app), "the error")
        said = toast_text(app).replace(" ", "")
        assert f"cannotwrite{read_only}/cairn-report-{run_id}.md:thefilesystemisread-only" in said, said
    assert list(read_only.iterdir()) == []
