"""F2, F3 and F6 always show their screen; a run still in progress goes on behind them and F7 brings it back.

Real local runs (``echo``), driven by the pilot as a user would: keys, and what
the screen then shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.approval import ApprovalScreen
from tui.screens.history import HistoryScreen
from tui.screens.library import LibraryScreen
from tui.screens.queue import QueueScreen
from tui.screens.run import RunScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.setup import RunSetupScreen

pytestmark = pytest.mark.tui

PRUNE = """
id: cache-prune
title: The build cache fills the disk
severity: warning
summary: The build cache grows until the disk is full.
detect:
  - id: usage
    title: Read the disk usage
    run: echo 93
    parse: number
    expect: out < 90
    report: "{{ out }}% used"
remediate:
  - id: prune
    title: Prune the build cache
    why: The cache is rebuilt on demand.
    run: echo pruned
"""

CHECK = """
id: quick-check
title: A quick check that finds nothing
severity: info
summary: One step, always healthy.
detect:
  - id: look
    title: Look once
    run: echo fine
"""


@pytest.fixture
def app(runbook_dir: Callable[..., Path], journal_path: Path) -> CairnApp:
    folder = runbook_dir(PRUNE, CHECK)
    return make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path, user="oncall"))


async def library_ready(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await until(pilot, lambda: app.library is not None and not app.library_loading, "the library")


async def start_run(pilot: Pilot[Any], runbook_id: str) -> RunScreen:
    """From the library, as a user does: highlight the runbook, Enter, wait for the plan, Ctrl+S."""
    app = pilot.app
    assert isinstance(app, CairnApp)
    await library_ready(pilot)
    app.library_screen().show(runbook_id)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the setup")
    await until(pilot, lambda: f"Plan for {runbook_id}" in screen_text(app), "the plan")
    await pilot.press("ctrl+s")
    await until(
        pilot, lambda: isinstance(app.screen, RunScreen) and "waiting before" in screen_text(app), "the run"
    )
    screen = app.screen
    assert isinstance(screen, RunScreen)
    return screen


def in_any_stack(app: CairnApp, screen: object) -> bool:
    return any(
        screen in app.get_screen_stack(mode)
        for mode in ("runbooks", "history", "alerts")
        if mode_up(app, mode)
    )


def mode_up(app: CairnApp, mode: str) -> bool:
    try:
        app.get_screen_stack(mode)
    except KeyError:
        return False
    return True


async def test_f2_f3_f6_show_their_own_screen_whatever_was_left_open_on_them(app: CairnApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        run = await start_run(pilot, "quick-check")
        await pilot.press("c")
        await until(pilot, lambda: run.ended and "Verdict" in screen_text(app), "the verdict")

        await pilot.press("f6")  # the finished run stays on the runbooks' stack, under the alert queue
        await until(pilot, lambda: isinstance(app.screen, QueueScreen), "the alert queue")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library, not the finished run")
        assert "Verdict" not in screen_text(app)
        assert app.screen_stack == [app.library_screen()]
        await until(pilot, lambda: app.run_screen is None, "the finished run dropped: the history has it")
        assert not in_any_stack(app, run)

        await pilot.press("f3")
        await until(
            pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.shown, "the run listed"
        )
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run's details")
        await pilot.press("f6")
        await until(pilot, lambda: isinstance(app.screen, QueueScreen), "the alert queue")
        await pilot.press("f3")
        await until(
            pilot, lambda: isinstance(app.screen, HistoryScreen), "the history list, not the run's details"
        )
        assert "quick-check" in screen_text(app) and "Steps (" not in screen_text(app)

        await pilot.press("enter")  # F3 on the history itself also closes what is open over it
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run's details again")
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history list")


async def test_a_run_in_progress_goes_on_behind_f3_and_f2_and_f7_brings_it_back(app: CairnApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        run = await start_run(pilot, "cache-prune")

        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history")
        await until(pilot, lambda: "running" in screen_text(app), "the run listed as running")
        assert not run.cancel.is_set() and not run.ended, "leaving the run's screen does not cancel it"
        assert "f7 Back to run" in screen_text(app).splitlines()[-1]

        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
        await until(pilot, lambda: "F7: back to the run of cache-prune" in screen_text(app), "the banner")
        await pilot.press("enter")  # one run at a time: another is not set up meanwhile
        await pilot.pause()
        assert isinstance(app.screen, LibraryScreen)
        assert not run.cancel.is_set()

        await pilot.press("f7")
        await until(pilot, lambda: app.screen is run, "the same run, in front again")
        assert "waiting before detect · Read the disk usage" in screen_text(app)
        await pilot.press("n")  # it still takes its keys: it was never cancelled
        await until(
            pilot, lambda: re.search(r"Read the disk usage\s+finding", screen_text(app)), "the step ran"
        )
        await until(
            pilot, lambda: "waiting before remediate · Prune the build cache" in screen_text(app), "next"
        )

        await pilot.press("f2")  # from the run itself: it goes behind, the library shows
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
        assert app.run_screen is run and not run.cancel.is_set()
        await pilot.press("ctrl+p")  # the palette says it too
        await pilot.press(*"back to the run")
        await until(pilot, lambda: "Back to the run" in screen_text(app), "the palette's command")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is run, "the run again")
        await pilot.press("x")
        await until(pilot, lambda: run.ended, "the cancelled run to end")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
        await until(pilot, lambda: app.run_screen is None, "no run left to go back to")
        assert "F7: back" not in screen_text(app) and "f7 Back to run" not in screen_text(app)


async def test_an_approval_asked_while_the_run_is_behind_waits_for_it(app: CairnApp) -> None:
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        run = await start_run(pilot, "cache-prune")
        await pilot.press("n")
        await until(
            pilot, lambda: "waiting before remediate · Prune the build cache" in screen_text(app), "prune"
        )
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history")

        run.pacer.release_next()  # what `n` does on the run's screen: the remediation now asks its question
        await until(pilot, lambda: run.waits_for_approval, "the question, kept for the run's screen")
        assert isinstance(app.screen, HistoryScreen), (
            "no dialog over the history, where a key could answer it"
        )
        await until(pilot, lambda: "waits for your approval" in screen_text(app), "the notification")

        await pilot.press("f2")
        await until(
            pilot,
            lambda: "F7: back to the run of cache-prune, which waits for your approval" in screen_text(app),
            "the banner",
        )
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the question, asked now")
        assert "Approve remediate · Prune the build cache" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: "waiting before verify" in screen_text(app), "verify")
        await pilot.press("c")
        await until(pilot, lambda: run.ended, "the run to end")
        assert re.search(r"Prune the build cache\s+ok", screen_text(app)), screen_text(app)
