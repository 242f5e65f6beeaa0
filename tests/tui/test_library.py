"""The library screen driven by the pilot: filtering, the knowledge pane, invalid files, run setup, practice labs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from engine.lab.lifecycle import LabRoot
from tests.conftest import RUNBOOKS
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.library import LibraryScreen
from tui.widgets.knowledge import KnowledgePane
from tui.widgets.runbook_table import RunbookTable

pytestmark = pytest.mark.tui

DISK = """
id: disk-full
title: The disk is filling up
severity: warning
summary: Writes start failing once the data volume is full.
tags: [storage]
symptoms:
  - Writes fail with "No space left on device".
cause: Nothing rotates the application's debug dumps.
triggers:
  - matchers:
      - alertname = "NodeFilesystemAlmostOutOfSpace"
    target: "{{ alert.labels.instance }}"
detect:
  - id: usage
    title: Read the disk usage
    run: echo 93
    parse: number
    expect: out < 90
remediate:
  - id: prune
    title: Delete the debug dumps
    tradeoff: The dumps are gone for good; nobody has read one in a year.
    run: echo pruned
"""

LOCKS = """
id: stale-locks
title: Stale lock files block the deploy
severity: critical
summary: A crashed deploy leaves its lock files behind.
tags: [deploy]
symptoms:
  - The deploy hangs at "waiting for lock".
cause: The deployer removes its locks only when it exits cleanly.
triggers:
  - matchers:
      - alertname="DeployStuck"
    target: "{{ alert.labels.host }}"
detect:
  - id: locks
    title: Count the lock files
    run: echo 0
"""

CERT = """
id: cert-expiry
title: A certificate is about to expire
severity: info
summary: The ingress certificate expires within the week.
tags: [tls]
detect:
  - id: days
    title: Days left
    run: echo 30
"""

BAD_SEVERITY = RUNBOOKS.parent / "tests" / "fixtures" / "runbooks" / "invalid" / "06_bad_severity.yaml"
BUNDLED = {p.stem for p in RUNBOOKS.glob("*.yaml")}


@pytest.fixture
def library_dir(runbook_dir: Callable[..., Path]) -> Path:
    """Three fixture runbooks and one invalid file (bad severity)."""
    folder = runbook_dir(DISK, LOCKS, CERT, name="library")
    (folder / "bad-severity.yaml").write_text(BAD_SEVERITY.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def table(app: CairnApp) -> RunbookTable:
    return app.screen.query_one("#runbooks", RunbookTable)


def shown_ids(app: CairnApp) -> set[str]:
    return {e.key for e in table(app).shown}


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await until(pilot, lambda: app.library is not None and not app.library_loading, "the library to load")


async def type_filter(pilot: Pilot[None], text: str) -> None:
    await pilot.press("escape")  # clears the filter
    await pilot.press(*text)
    await pilot.pause()


async def test_filter_by_title_tag_symptom_and_alert_name(library_dir: Path) -> None:
    app = make_app(CairnConfig(runbook_dirs=(library_dir, RUNBOOKS)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        every = {
            "disk-full",
            "stale-locks",
            "cert-expiry",
            "invalid:" + str(library_dir / "bad-severity.yaml"),
        }
        assert shown_ids(app) == every | BUNDLED
        text = screen_text(app)
        for runbook_id in ("cert-expiry", "disk-full", "stale-locks", "branch-cleanup"):
            assert runbook_id in text
        assert "9 runbooks · 1 invalid" in text

        await type_filter(pilot, "filling up")  # title
        assert shown_ids(app) == {"disk-full"}
        assert "disk-full" in screen_text(app) and "stale-locks" not in screen_text(app)

        await type_filter(pilot, "tls")  # tag
        assert shown_ids(app) == {"cert-expiry"}
        await type_filter(pilot, "containerd")  # a bundled runbook's tag
        assert shown_ids(app) == {"node-notready-zombie-shim"}

        await type_filter(pilot, "waiting for lock")  # symptom text
        assert shown_ids(app) == {"stale-locks"}

        await type_filter(pilot, "NodeFilesystemAlmostOutOfSpace")  # alert name
        assert shown_ids(app) == {"disk-full"}
        await type_filter(pilot, "alertname=deploystuck")  # matcher, written without spaces or quotes
        assert shown_ids(app) == {"stale-locks"}
        assert "1 match" in screen_text(app)

        await type_filter(pilot, "no such runbook anywhere")
        assert shown_ids(app) == set()
        await until(pilot, lambda: "No runbook matches" in screen_text(app), "the no-match message")

        await pilot.press("escape")
        assert shown_ids(app) == every | BUNDLED


async def test_the_knowledge_pane_follows_the_highlighted_runbook(library_dir: Path) -> None:
    app = make_app(CairnConfig(runbook_dirs=(library_dir,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        knowledge = app.screen.query_one("#knowledge", KnowledgePane)
        # Sorted by id: cert-expiry first, then disk-full, then stale-locks.
        await until(pilot, lambda: knowledge.shown_key == "cert-expiry", "cert-expiry's knowledge")
        await until(pilot, lambda: "expires within the week" in screen_text(app), "its summary on screen")

        await pilot.press("down")  # the arrow keys move through the list while the filter has the focus
        await until(pilot, lambda: knowledge.shown_key == "disk-full", "disk-full's knowledge")
        await until(pilot, lambda: "debug dumps" in screen_text(app), "its cause")
        assert "Writes fail with" in screen_text(app)  # the symptom
        assert "nobody has read one in a year" in knowledge.markdown  # the fix's trade-off
        assert "NodeFilesystemAlmostOutOfSpace" in knowledge.markdown  # the alert that starts it

        await type_filter(pilot, "deploy")
        await until(pilot, lambda: knowledge.shown_key == "stale-locks", "the only match's knowledge")
        await until(pilot, lambda: "removes its locks" in screen_text(app), "its cause")


async def test_an_invalid_runbook_is_listed_with_its_problem(library_dir: Path) -> None:
    app = make_app(CairnConfig(runbook_dirs=(library_dir,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        text = screen_text(app)
        assert "bad-severity" in text and "INVALID" in text and "1 problem" in text
        assert "3 runbooks · 1 invalid" in text

        await type_filter(pilot, "bad-severity")
        knowledge = app.screen.query_one("#knowledge", KnowledgePane)
        path = str(library_dir / "bad-severity.yaml")
        await until(pilot, lambda: knowledge.shown_key == "invalid:" + path, "the invalid file's problems")
        assert f"{path}:6:11" in knowledge.markdown
        await until(pilot, lambda: "not 'critcal'" in screen_text(app), "the problem")

        await pilot.press("enter")  # an invalid file cannot be run: it says so, and stays on the library
        await until(pilot, lambda: "is invalid: it cannot run" in screen_text(app), "the refusal")
        assert isinstance(app.screen, LibraryScreen)


async def test_duplicate_ids_are_problems_of_the_later_file(runbook_dir: Callable[..., Path]) -> None:
    folder = runbook_dir(CERT, name="dupes")
    (folder / "zz-copy.yaml").write_text(CERT.lstrip(), encoding="utf-8")
    app = make_app(CairnConfig(runbook_dirs=(folder,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        assert shown_ids(app) == {"cert-expiry", "invalid:" + str(folder / "zz-copy.yaml")}
        await pilot.press("down")
        knowledge = app.screen.query_one("#knowledge", KnowledgePane)
        await until(pilot, lambda: "already used by" in knowledge.markdown, "the duplicate id problem")
        assert "Invalid runbook file" in screen_text(app)


async def test_many_runbooks_arrive_in_batches_and_all_are_listed(runbook_dir: Callable[..., Path]) -> None:
    texts = [CERT.replace("cert-expiry", f"cert-expiry-{n:02d}") for n in range(40)]
    folder = runbook_dir(*texts, name="many")
    app = make_app(CairnConfig(runbook_dirs=(folder,)))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert len(shown_ids(app)) == 40
        assert "40 runbooks" in screen_text(app)


async def test_enter_sets_up_a_run_and_escape_comes_back(library_dir: Path) -> None:
    from tui.screens.setup import RunSetupScreen

    app = make_app(CairnConfig(runbook_dirs=(library_dir,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await type_filter(pilot, "stale")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the run setup")
        setup = app.screen
        assert isinstance(setup, RunSetupScreen)
        assert setup.runbook.id == "stale-locks" and setup.practice is None
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library again")


async def test_the_command_palette_opens_history_and_runbooks(library_dir: Path) -> None:
    app = make_app(CairnConfig(runbook_dirs=(library_dir,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"history")
        await until(pilot, lambda: "Past runs from the journal" in screen_text(app), "the History command")
        await pilot.press("enter")
        await until(pilot, lambda: app.current_mode == "history", "the history")

        await pilot.press("ctrl+p")
        await pilot.press(*"open runbook: stale")
        await until(
            pilot, lambda: "Open runbook: Stale lock files" in screen_text(app), "the runbook command"
        )
        await pilot.press("enter")
        await until(pilot, lambda: app.current_mode == "runbooks", "the library")
        knowledge = app.screen.query_one("#knowledge", KnowledgePane)
        await until(pilot, lambda: knowledge.shown_key == "stale-locks", "the runbook chosen in the palette")


async def test_practice_on_a_runbook_without_a_lab_says_so(library_dir: Path) -> None:
    app = make_app(CairnConfig(runbook_dirs=(library_dir,)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await type_filter(pilot, "disk-full")
        await pilot.press("f4")
        await until(pilot, lambda: "disk-full has no practice lab" in screen_text(app), "the notification")
        assert isinstance(app.screen, LibraryScreen)


async def test_a_lab_that_cannot_start_says_why(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "labs"
    not_a_folder.write_text("a file where the lab folder should be\n", encoding="utf-8")
    app = make_app(CairnConfig(runbook_dirs=(RUNBOOKS,), lab_root=not_a_folder))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await type_filter(pilot, "branch-cleanup")
        await pilot.press("f4")
        await until(pilot, lambda: "did not start" in screen_text(app), "the lab's failure")
        status = app.screen.query_one("#lab-status")
        assert status.display and "lab branch-cleanup did not start" in str(status.render())
        assert isinstance(app.screen, LibraryScreen)
        await pilot.press("ctrl+p")
        await pilot.press(*"stop practice labs")
        await until(pilot, lambda: "Stop every lab started" in screen_text(app), "the Stop labs command")
        await pilot.press("enter")
        await until(pilot, lambda: "could not stop the labs" in screen_text(app), "the failure to stop")


@pytest.fixture
def lab_root(tmp_path: Path) -> Iterator[Path]:
    """A lab folder for this test; every lab left in it is stopped afterwards."""
    root = tmp_path / "labs"
    yield root
    LabRoot(root).down()


@pytest.mark.lab
@pytest.mark.git
async def test_practice_starts_the_lab_then_sets_up_a_run_against_it(lab_root: Path) -> None:
    from tui.screens.setup import RunSetupScreen

    app = make_app(CairnConfig(runbook_dirs=(RUNBOOKS,), lab_root=lab_root))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await type_filter(pilot, "branch-cleanup")
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the lab and the run setup", 120)
        setup = app.screen
        assert isinstance(setup, RunSetupScreen)
        info = LabRoot(lab_root).get("branch-cleanup")
        assert info is not None and all(info.running().values())
        assert setup.runbook.id == "branch-cleanup" and setup.practice == "branch-cleanup"
        assert setup.inventory == (str(info.inventory),)
        assert setup.given_inputs and str(info.directory) in str(setup.given_inputs)

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library again")
        await pilot.press("f4")  # the lab is up: it is reused, not built again
        await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the run setup again", 60)
        assert "practice lab branch-cleanup is already up" in screen_text(app)
        again = LabRoot(lab_root).get("branch-cleanup")
        assert again is not None and again.started_at == info.started_at

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library again")
        await pilot.press("ctrl+p")
        await pilot.press(*"stop practice labs")
        await until(pilot, lambda: "Stop every lab started" in screen_text(app), "the Stop labs command")
        await pilot.press("enter")
        await until(pilot, lambda: "stopped: branch-cleanup" in screen_text(app), "the labs stopped", 60)
        assert LabRoot(lab_root).status() == []
