"""`become` in the TUI: the plan, the approval dialog and the step detail say ``(as root via sudo)``
where a step escalates on a host, and nothing where the host's inventory says ``ansible_become: false``.

The pilot drives a real run on this machine (two inventory names, both local) through the setup
screen and the run screen; every remediation step is declined, so nothing runs as root. The become
password of the inventory is never on the screen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot

from engine.core.loader import load_library
from engine.core.model import Phase
from tests.tui.conftest import screen_text, until
from tui.app import make_app
from tui.config import CairnConfig
from tui.screens.approval import ApprovalScreen
from tui.screens.run import RunScreen
from tui.screens.setup import RunSetupScreen
from tui.widgets.step_detail import StepDetail

pytestmark = pytest.mark.tui

PASSWORD = "Pw-4-sudo-tui-7"
LABEL = "(as root via sudo)"

ROOTY = """
id: rooty
title: A cache that only root may drop
severity: warning
summary: The cache is full; dropping it needs root.
inputs:
  target: {type: string}
detect:
  - id: fill
    title: How full the cache is
    run: echo 97
    parse: number
    expect: out < 90
remediate:
  - id: drop
    title: Drop the cache
    become: true
    run: echo 3 > {{ inputs.target }}
  - id: note
    title: Write down that it was dropped
    run: echo dropped >> {{ inputs.target }}.log
"""

INVENTORY = f"""
all:
  hosts:
    node1:
      ansible_connection: local
      ansible_become_password: {PASSWORD}
    node2:
      ansible_connection: local
      ansible_become: false
"""


def run_screen(pilot: Pilot[Any]) -> RunScreen:
    return next(s for s in pilot.app.screen_stack if isinstance(s, RunScreen))


def answered(app: App[Any], dialog: ApprovalScreen) -> Callable[[], bool]:
    """True once ``dialog`` is no longer on top (the next question may already be)."""
    return lambda: app.screen is not dialog


async def decline_every_step(pilot: Pilot[Any]) -> dict[tuple[str, str], str]:
    """Answer no to every approval until the run ends; what each dialog showed, by (step, host)."""
    app = pilot.app
    dialogs: dict[tuple[str, str], str] = {}
    while True:
        await until(
            pilot,
            lambda: isinstance(app.screen, ApprovalScreen) or run_screen(pilot).progress.finished,
            f"approval {len(dialogs) + 1} or the end of the run",
        )
        dialog = app.screen
        if not isinstance(dialog, ApprovalScreen):
            return dialogs
        dialogs[(dialog.request.step.id, dialog.request.host)] = screen_text(app)
        await pilot.press("n")
        await until(pilot, answered(app, dialog), "the answer taken")


async def test_the_plan_the_approval_dialog_and_the_step_detail_show_the_escalation(
    runbook_dir: Callable[..., Path], tmp_path: Path
) -> None:
    folder = runbook_dir(ROOTY)
    [runbook] = load_library([folder]).runbooks
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    target = tmp_path / "drop_caches"
    app = make_app(CairnConfig(runbook_dirs=(folder,), user="oncall"))
    seen: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(RunSetupScreen(runbook, inventory=(str(inventory),), inputs={"target": str(target)}))
        await until(pilot, lambda: f"drop: Drop the cache {LABEL}" in screen_text(app), "the plan")
        plan = screen_text(app)
        seen.append(plan)
        assert plan.count(LABEL) == 1, "node1 only: node2's inventory turns become off"

        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        await pilot.press("c")  # no stepping; remediation still asks
        dialogs = await decline_every_step(pilot)
        assert sorted(dialogs) == [("drop", "node1"), ("drop", "node2"), ("note", "node1"), ("note", "node2")]
        assert "Exact command (as root via sudo):" in dialogs[("drop", "node1")], dialogs[("drop", "node1")]
        # (Behind the dialog the step detail may list node1's escalation: the dialog's own label says none.)
        assert "Exact command:" in dialogs[("drop", "node2")], "ansible_become: false removes it"
        assert "Exact command:" in dialogs[("note", "node1")], "only the step that says become"
        seen += dialogs.values()

        detail = app.screen.query_one(StepDetail)
        rendered = str(detail.render_step((Phase.REMEDIATE, "drop")))
        lines = {line.split()[0]: line for line in rendered.splitlines() if line.startswith("node")}
        assert LABEL in lines["node1"] and "as root" not in lines["node2"], rendered
        seen.append(screen_text(app))

    assert not target.exists(), "declined: nothing ran"
    assert not any(PASSWORD in text for text in seen)


async def test_one_host_the_step_detail_shows_the_escalation_with_the_command(
    runbook_dir: Callable[..., Path], tmp_path: Path
) -> None:
    """On this machine (no inventory) the runbook decides: the step detail heads the command with it."""
    folder = runbook_dir(ROOTY)
    [runbook] = load_library([folder]).runbooks
    target = tmp_path / "drop_caches"
    app = make_app(CairnConfig(runbook_dirs=(folder,), user="oncall"))
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(RunSetupScreen(runbook, inputs={"target": str(target)}))
        await until(pilot, lambda: f"drop: Drop the cache {LABEL}" in screen_text(app), "the plan")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        await pilot.press("c")
        dialogs = await decline_every_step(pilot)
        assert "Exact command (as root via sudo):" in dialogs[("drop", "localhost")]
        rendered = str(app.screen.query_one(StepDetail).render_step((Phase.REMEDIATE, "drop")))
        assert f"Command {LABEL}:" in rendered, rendered
    assert not target.exists()
