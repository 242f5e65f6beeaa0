"""Shared helpers for the TUI tests: the screen as the user sees it, and waiting on a condition.

Import them as ``from tests.tui.conftest import screen_text, until``. Waiting is
always on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

from rich.cells import cell_len
from textual.app import App
from textual.pilot import Pilot

SVG_TEXT = "{http://www.w3.org/2000/svg}text"
CHAR_WIDTH = 20 * 0.61
"""Rich's SVG export: a cell is 0.61 of the 20px font size wide (``Console.export_svg``'s defaults)."""
ROW = re.compile(r"-line-(\d+)\)$")
"""A run of text's row, from the clip path Rich gives it (``url(#terminal-…-line-3)``)."""


def screen_text(app: App[Any]) -> str:
    """The terminal as the user sees it now, as plain text: the text of the app's own SVG screenshot.

    ``App.export_screenshot`` draws the screen with whatever shows through from behind a modal, as
    the terminal shows it; each run of text of the SVG is put back at its row and column. One line
    per terminal row, each as wide as the terminal."""
    width, height = app.size
    rows: list[list[tuple[int, str]]] = [[] for _ in range(height)]
    for run in ElementTree.fromstring(app.export_screenshot()).iter(SVG_TEXT):
        row = ROW.search(run.get("clip-path", ""))
        if row is not None and int(row[1]) < height:  # the window title above has no row
            text = (run.text or "").replace("\N{NO-BREAK SPACE}", " ").replace("\n", "")  # a row's end
            rows[int(row[1])].append((round(float(run.get("x", "0")) / CHAR_WIDTH), text))
    lines = []
    for runs in rows:
        line = ""
        for column, text in sorted(runs):
            line += " " * (column - cell_len(line)) + text
        lines.append(line + " " * (width - cell_len(line)))
    return "\n".join(lines)


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
