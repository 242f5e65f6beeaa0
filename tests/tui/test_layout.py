"""What a newcomer sees at 80x24 and 120x40: prose as paragraphs, readable step titles, whole footer keys.

Runbook prose is written as YAML block scalars with the author's line breaks;
every pane that shows it must show a paragraph as one line where it fits. The
step list keeps its titles and states readable beside the knowledge pane.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from engine.core.loader import load_library
from engine.core.model import Host, Runbook
from engine.core.spec import RunSpec
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.approval import ApprovalScreen
from tui.screens.library import LibraryScreen
from tui.screens.run import RunScreen
from tui.screens.setup import RunSetupScreen

pytestmark = pytest.mark.tui

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]

PROSE = """
id: cache-prune
title: The build cache fills the disk of the build host
severity: warning
summary: |
  Writes fail
  once it is full.
tags: [disk, ci]
inputs:
  dir:
    type: string
    default: /var/cache/build
    description: |
      The cache folder,
      on the build host.
detect:
  - id: usage
    title: Read the disk usage of the build host
    why: |
      A full disk stops every write,
      so the builds fail.
    run: echo 93
    parse: number
    expect: out < 90
  - id: cache_size
    title: Measure how much of the disk the build cache takes up now
    run: echo 40
remediate:
  - id: prune
    title: Prune the build cache entries older than a month
    why: |
      The cache is rebuilt on demand;
      nothing else lives there.
    tradeoff: |
      The next builds are slower
      while the cache warms up again.
    run: echo pruned
"""
TITLES = (
    "Read the disk usage of the build host",
    "Measure how much of the disk the build cache takes up now",
    "Prune the build cache entries older than a month",
)


@pytest.fixture
def folder(runbook_dir: Callable[..., Path]) -> Path:
    return runbook_dir(PROSE)


@pytest.fixture
def runbook(folder: Path) -> Runbook:
    return load_library([folder]).get("cache-prune")


def app_for(folder: Path) -> CairnApp:
    return make_app(CairnConfig(runbook_dirs=(folder,), user="oncall"))


def launch(runbook: Runbook) -> RunSpec:
    return RunSpec(runbook=runbook, hosts=(Host("localhost", connection="local"),), inputs={})


async def run_waiting(pilot: Pilot[Any], screen: RunScreen, step_id: str) -> None:
    pilot.app.push_screen(screen)
    await until(
        pilot,
        lambda: (
            (waiting := screen.pacer.next_step()) is not None
            and waiting[1] == step_id
            and "waiting before" in screen_text(pilot.app)
        ),
        f"the run waiting before {step_id}",
    )


def one_line(text: str) -> re.Pattern[str]:
    """``text`` on one line of the screen (a pane's border or padding may stand either side)."""
    return re.compile(r"(^|\W)" + re.escape(text) + r"(\W|$)", re.MULTILINE)


# ------------------------------------------------------------ prose reflowed


async def test_the_knowledge_pane_shows_a_paragraph_on_one_line(folder: Path) -> None:
    """The library renders the knowledge as Markdown, which already joins a paragraph's lines."""
    app = app_for(folder)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "Writes fail" in screen_text(app), "the knowledge")
        assert one_line("Writes fail once it is full.").search(screen_text(app)), screen_text(app)


async def test_the_setup_shows_an_input_description_as_a_paragraph(runbook: Runbook, folder: Path) -> None:
    app = app_for(folder)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(RunSetupScreen(runbook))
        await until(pilot, lambda: "The cache folder" in screen_text(app), "the input's description")
        assert one_line("The cache folder, on the build host. · default").search(screen_text(app)), (
            screen_text(app)
        )


async def test_the_step_detail_shows_why_as_one_line(runbook: Runbook, folder: Path) -> None:
    app = app_for(folder)
    async with app.run_test(size=(120, 40)) as pilot:
        await run_waiting(pilot, RunScreen(launch(runbook), app.config), "usage")
        assert one_line("Why: A full disk stops every write, so the builds fail.").search(screen_text(app))


async def test_the_approval_dialog_shows_why_and_the_trade_off_as_one_line_each(
    runbook: Runbook, folder: Path
) -> None:
    app = app_for(folder)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = RunScreen(launch(runbook), app.config)
        await run_waiting(pilot, screen, "usage")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the approval")
        shown = screen_text(app)
        assert one_line("Why: The cache is rebuilt on demand; nothing else lives there.").search(shown), shown
        assert one_line("Trade-off: The next builds are slower while the cache warms up again.").search(shown)
        await pilot.press("n")
        await until(pilot, lambda: screen.ended, "the run to end")


# ------------------------------------------------------------ the step list in practice mode


def state_columns(shown: str) -> list[tuple[str, str, int]]:
    """(title, state, where the state starts) for every step row on the screen."""
    rows = []
    for line in shown.splitlines():
        for title in TITLES:
            found = re.search(re.escape(title[:20]) + r"[^│]*?\s(finding|waiting|pending|ok)\b", line)
            if found:
                rows.append((title, found.group(1), found.start(1)))
    return rows


@pytest.mark.parametrize("size", SIZES)
async def test_practice_mode_keeps_step_titles_readable_and_states_in_a_column(
    runbook: Runbook, folder: Path, size: tuple[int, int]
) -> None:
    app = app_for(folder)
    async with app.run_test(size=size) as pilot:
        screen = RunScreen(launch(runbook), app.config, practice="cache-prune")
        await run_waiting(pilot, screen, "usage")
        await until(pilot, lambda: "Writes fail once it is full." in screen_text(app), "the knowledge")
        await pilot.press("n")
        await until(pilot, lambda: "waiting before detect · Measure" in screen_text(app), "the second step")
        await pilot.press("n")
        await until(pilot, lambda: "waiting before remediate · Prune" in screen_text(app), "the remediation")
        shown = screen_text(app)
        for title in TITLES:  # at least the first 20 characters of each title, then an ellipsis if cut
            assert title[:20] in shown, f"{title!r} is cut short:\n{shown}"
        rows = state_columns(shown)
        assert {state for _, state, _ in rows} == {"finding", "ok", "waiting", "pending"}, shown
        assert len({column for _, _, column in rows}) == 1, f"the states start in one column:\n{shown}"
        assert "… " in shown or all(title in shown for title in TITLES), "a cut title ends in an ellipsis"


async def test_at_80_columns_the_knowledge_takes_the_step_detail_place_and_k_switches(
    runbook: Runbook, folder: Path
) -> None:
    app = app_for(folder)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = RunScreen(launch(runbook), app.config, practice="cache-prune")
        await run_waiting(pilot, screen, "usage")
        await until(pilot, lambda: "Writes fail once it is full." in screen_text(app), "the knowledge")
        assert "Why: A full disk" not in screen_text(app), "no room for both beside the steps at 80 columns"
        assert "k: the step's detail and output" in screen_text(app), "the pane says how to switch"
        await pilot.press("k")
        await until(
            pilot, lambda: "Why: A full disk stops every write" in screen_text(app), "the step's detail"
        )
        assert "Writes fail once" not in screen_text(app)
        assert TITLES[0][:20] in screen_text(app)
        await pilot.press("k")
        await until(pilot, lambda: "Writes fail once" in screen_text(app), "the knowledge again")


async def test_at_120_columns_the_knowledge_sits_beside_the_step_detail(
    runbook: Runbook, folder: Path
) -> None:
    app = app_for(folder)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = RunScreen(launch(runbook), app.config, practice="cache-prune")
        await run_waiting(pilot, screen, "usage")
        await until(pilot, lambda: "Writes fail once" in screen_text(app), "the knowledge")
        assert "Why: A full disk stops every" in screen_text(app), "beside the knowledge, narrower"
        await pilot.press("k")
        await until(pilot, lambda: "Writes fail once" not in screen_text(app), "the knowledge hidden")
        assert "Why: A full disk stops every write, so the builds fail." in screen_text(app)


# ------------------------------------------------------------ the rest of the screens


@pytest.mark.parametrize("size", SIZES)
async def test_the_library_shows_each_runbook_title(folder: Path, size: tuple[int, int]) -> None:
    app = app_for(folder)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.library, "the library")
        await until(pilot, lambda: "cache-prune" in screen_text(app), "the runbook listed")
        row = next(
            line for line in screen_text(app).splitlines() if "cache-prune" in line and "warning" in line
        )
        assert "The build cache fills" in row, row


def footer(app: CairnApp) -> str:
    return screen_text(app).rstrip("\n").splitlines()[-1]


def cut_keys(line: str) -> list[str]:
    """Keys of the app's whose label is on the footer only in part."""
    labels = ("f2 Runbooks", "f3 History", "f6 Alerts", "f7 Back to run", "^q Quit")
    return [label for label in labels if label not in line and label.split()[0] + " " in line]


async def test_at_80_columns_footers_keep_a_screen_s_own_keys_and_cut_none_in_half(
    runbook: Runbook, folder: Path
) -> None:
    app = app_for(folder)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.library is not None, "the library")
        screen = RunScreen(launch(runbook), app.config)
        await run_waiting(pilot, screen, "usage")
        line = footer(app)
        for key in ("n Next", "p Phase", "c Continue", "s Skip", "r Re-run", "x Cancel", "k Knowledge"):
            assert key in line, line
        assert not cut_keys(line), line

        await pilot.press("f3")  # the run goes on behind: F7 comes back to it, and is listed whole
        await until(pilot, lambda: "f7 Back to run" in footer(app), "F7 in the history's footer")
        line = footer(app)
        assert "⏎ Open" in line and "R Resume" in line and not cut_keys(line), line
        await pilot.press("f6")
        await until(pilot, lambda: "y Approve" in footer(app), "the queue's footer")
        assert "f7 Back to run" in footer(app) and not cut_keys(footer(app)), footer(app)
        await pilot.press("f7")
        await until(pilot, lambda: app.screen is screen, "the run")
        await pilot.press("x")
        await until(pilot, lambda: screen.ended, "the run to end")


async def test_the_plan_wraps_a_long_command_under_its_text(runbook_dir: Callable[..., Path]) -> None:
    long = "echo " + " ".join(f"word{n:02d}" for n in range(30))
    folder = runbook_dir(f"""
        id: long-command
        title: A long command
        severity: info
        summary: s
        detect:
          - id: say
            title: Say many words
            run: {long}
        """)
    app = app_for(folder)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunSetupScreen(load_library([folder]).get("long-command")))
        await until(pilot, lambda: "$ echo word00" in screen_text(app), "the plan")
        lines = screen_text(app).splitlines()
        start = next(n for n, line in enumerate(lines) if "$ echo word00" in line)
        dollar = lines[start].index("$")
        following = lines[start + 1]
        assert following[dollar : dollar + 2] == "  " and following[dollar + 2 : dollar + 6] == "word", (
            following
        )
