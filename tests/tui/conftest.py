"""Shared helpers for the TUI tests: the screen as the user sees it, and waiting on a condition.

Import them as ``from tests.tui.conftest import screen_text, until``. Waiting is
always on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot


def screen_text(app: App[Any]) -> str:
    """The terminal as the user sees it now, as plain text (what an SVG screenshot would show)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Outside an app (a thread, a process): wait until ``condition()`` holds; at the deadline fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


HUNG_RUNBOOK = """
id: hung-daemon
title: The daemon stops answering
severity: critical
summary: A call to the daemon never returns.
inputs:
  marker:
    type: string
detect:
  - id: ask
    title: Ask the daemon
    why: A daemon that does not answer is the symptom.
    run: exec -a {{ inputs.marker }} sleep 600
    timeout: 15m
"""
"""A step that hangs until it is killed; ``marker`` names its process (find it with ``pgrep -f``)."""


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Let the app work until ``condition()`` holds; at the deadline fail naming ``what``, with the screen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}; the screen shows:\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)
    await pilot.pause()
