"""Snapshots of the run flow's screens at 80x24 and 120x40: setup, the run waiting for a key, approval.

The content is deterministic: the run id is fixed, nothing is running (no
elapsed times), the plan and commands name no temporary paths.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot

from engine.core.loader import Library
from engine.core.model import Phase
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.models.progress import HostStep, StepState
from tui.screens.approval import ApprovalScreen
from tui.screens.run import RunScreen
from tui.screens.setup import RunSetupScreen
from tui.widgets.step_detail import StepDetail

pytestmark = pytest.mark.tui

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]

RUNBOOK = """
id: cache-full
title: The build cache fills the disk
severity: warning
summary: The build cache grows without bound until the disk is full.
tags: [disk, ci]
symptoms:
  - Builds fail with "No space left on device".
cause: Nothing prunes the cache.
inputs:
  threshold:
    type: integer
    default: 90
    description: Percent used that counts as full.
  token:
    type: string
    secret: true
    description: Token for the usage API.
detect:
  - id: usage
    title: Read the disk usage
    why: A full disk stops every write on the host.
    run: echo "asked with {{ inputs.token }}" >&2; echo 93
    parse: number
    expect: out < inputs.threshold
    report: "{{ out }}% used"
remediate:
  - id: prune
    title: Prune the build cache
    why: The cache is rebuilt on demand; nothing else lives there.
    tradeoff: The next builds are slower while the cache warms up.
    run: echo pruned
"""


@pytest.fixture
def app(runbook_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> CairnApp:
    monkeypatch.setattr("engine.core.spec.new_run_id", lambda: "20250101-000000-abcdef")
    folder = runbook_dir(RUNBOOK)
    return make_app(CairnConfig(runbook_dirs=(folder,), user="oncall"))


async def loaded_library(pilot: Pilot[Any]) -> Library:
    """The app's library, once it has loaded."""
    app = pilot.app
    assert isinstance(app, CairnApp)
    await until(pilot, lambda: app.library is not None and not app.library_loading, "the library")
    assert app.library is not None
    return app.library


async def set_up(pilot: Pilot[Any]) -> None:
    """Open the setup screen for the runbook (the library's run key does the same) and wait for its plan."""
    runbook = (await loaded_library(pilot)).get("cache-full")
    pilot.app.push_screen(RunSetupScreen(runbook, inputs={"token": "s3cret"}))
    await until(pilot, plan_shown(pilot), "the plan")


def plan_shown(pilot: Pilot[Any]) -> Callable[[], bool]:
    def check() -> bool:
        screen = pilot.app.screen
        if not isinstance(screen, RunSetupScreen):
            return False
        plan = screen.query("#plan")
        return bool(plan) and "Plan for cache-full" in str(plan.first().render())

    return check


def cell(pilot: Pilot[Any], phase: Phase, step_id: str) -> HostStep | None:
    """What the run screen shows for a step on localhost (``None`` before the run screen is up)."""
    screen = next((s for s in pilot.app.screen_stack if isinstance(s, RunScreen)), None)
    return screen.progress.steps[(phase, step_id)]["localhost"] if screen is not None else None


def detail_shows(pilot: Pilot[Any], key: tuple[Phase, str]) -> bool:
    """The run screen's detail pane shows ``key`` (it follows the step that asks, a moment after)."""
    screen = next((s for s in pilot.app.screen_stack if isinstance(s, RunScreen)), None)
    return screen is not None and screen.query_one(StepDetail).key == key


def waiting(pilot: Pilot[Any]) -> bool:
    """The screen has drawn the first step as waiting, with its exact command."""
    first = cell(pilot, Phase.DETECT, "usage")
    return first is not None and first.state is StepState.WAITING and first.command != ""


@pytest.mark.parametrize("size", SIZES)
def test_setup_screen(snap_compare: Any, app: App[Any], size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await set_up(pilot)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_waiting_for_a_key(snap_compare: Any, app: App[Any], size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await set_up(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: waiting(pilot), "the run to wait before its first step")

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_approval_modal(snap_compare: Any, app: App[Any], size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await set_up(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: waiting(pilot), "the run to wait before its first step")
        await pilot.press("c")
        await until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, ApprovalScreen)
                and getattr(cell(pilot, Phase.REMEDIATE, "prune"), "state", None) is StepState.APPROVAL
                and detail_shows(pilot, (Phase.REMEDIATE, "prune"))
            ),
            "the approval modal over the step asking for it, shown behind it",
        )

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_practice_mode_waiting_for_a_key(snap_compare: Any, app: App[Any], size: tuple[int, int]) -> None:
    """The knowledge beside the steps (at 80 columns, in the step detail's place): titles and states readable."""

    async def ready(pilot: Pilot[Any]) -> None:
        runbook = (await loaded_library(pilot)).get("cache-full")
        pilot.app.push_screen(RunSetupScreen(runbook, inputs={"token": "s3cret"}, practice="cache-full"))
        await until(pilot, plan_shown(pilot), "the plan")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: waiting(pilot), "the run to wait before its first step")
        await until(pilot, lambda: "Symptoms" in screen_text(pilot.app), "the knowledge")

    assert snap_compare(app, terminal_size=size, run_before=ready)
