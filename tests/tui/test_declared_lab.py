"""Practice mode for a runbook of the user's whose lab is declared beside it (ID.lab.yaml): F4 and the palette."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from engine.lab.lifecycle import LabRoot
from tests.conftest import REPO
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.library import LibraryScreen

pytestmark = [pytest.mark.tui, pytest.mark.lab]

EXAMPLE = "stale-lock-files"


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    """A runbook folder of the user's: docs/examples' runbook with its lab file, and one without a lab."""
    folder = tmp_path / "my-runbooks"
    folder.mkdir()
    for name in (f"{EXAMPLE}.yaml", f"{EXAMPLE}.lab.yaml"):
        shutil.copy(REPO / "docs" / "examples" / name, folder / name)
    (folder / "no-lab.yaml").write_text(
        "id: no-lab\ntitle: Nothing to practise on\nseverity: info\nsummary: s\n"
        "detect:\n  - id: look\n    title: Look\n    run: 'true'\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture
def lab_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "labs"
    yield root
    LabRoot(root).down()


async def loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await until(pilot, lambda: app.library is not None and not app.library_loading, "the library to load")


async def highlight(pilot: Pilot[None], text: str) -> None:
    await pilot.press("escape")  # clears the filter
    await pilot.press(*text)
    await pilot.pause()


async def test_f4_starts_the_declared_lab_and_sets_up_a_run_against_it(
    runbooks: Path, lab_root: Path
) -> None:
    from tui.screens.setup import RunSetupScreen

    app = make_app(CairnConfig(runbook_dirs=(runbooks,), lab_root=lab_root))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await loaded(pilot)
        await highlight(pilot, "no-lab")
        await pilot.press("f4")
        await until(pilot, lambda: "no-lab has no practice lab" in screen_text(app), "the refusal")
        assert isinstance(app.screen, LibraryScreen)

        await highlight(pilot, "stale lock")
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the lab and the run setup", 60)
        setup = app.screen
        assert isinstance(setup, RunSetupScreen)
        info = LabRoot(lab_root).get(EXAMPLE)
        assert info is not None and info.source == str((runbooks / f"{EXAMPLE}.lab.yaml").resolve())
        assert info.running() == {"worker": True}
        assert (info.directory / "locks" / "nightly-export.lock").exists()  # the pitfall is there
        assert setup.runbook.id == EXAMPLE and setup.practice == EXAMPLE
        assert setup.inventory == (str(info.inventory),)
        assert setup.given_inputs == {"lock_dir": str(info.directory / "locks")}

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library again")
        await pilot.press("ctrl+p")
        await pilot.press(*"practice: stale")
        await until(
            pilot, lambda: f"start the lab {EXAMPLE}" in screen_text(app), "the palette's Practice command"
        )
        await pilot.press("enter")  # the lab is up: it is reused, not built again
        await until(pilot, lambda: isinstance(app.screen, RunSetupScreen), "the run setup again", 60)
        assert f"practice lab {EXAMPLE} is already up" in screen_text(app)
        again = LabRoot(lab_root).get(EXAMPLE)
        assert again is not None and again.started_at == info.started_at
