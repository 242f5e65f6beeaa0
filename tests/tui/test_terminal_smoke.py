"""`cairn tui` in a real terminal (tmux): the library appears, typing filters, F3 opens the history, Ctrl+Q quits.

Also: without a terminal, `cairn tui` refuses and `cairn` alone prints its help, as in scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CairnRunner, cairn_command
from tests.terminal import Terminal, tmux_terminal
from tests.tui.test_library import CERT, DISK, LOCKS

pytestmark = [pytest.mark.tui, pytest.mark.cli, pytest.mark.tmux]


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    with tmux_terminal() as term:
        yield term


def test_cairn_tui_in_a_real_terminal(
    terminal: Terminal, runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    folder = runbook_dir(DISK, LOCKS, CERT, name="smoke")
    command = [*cairn_command(), "tui", "--runbooks", str(folder), "--journal", str(journal_path)]
    terminal.start(command, {"TERM": "xterm-256color", "CAIRN_JOURNAL": str(journal_path)})

    screen = terminal.wait_for(lambda s: "stale-locks" in s and "3 runbooks" in s, "the library")
    assert "disk-full" in screen and "cert-expiry" in screen
    assert "Run" in screen.splitlines()[-1] and "History" in screen.splitlines()[-1]  # the footer's keys

    terminal.keys("-l", "deploy")  # typed into the filter
    screen = terminal.wait_for(lambda s: "1 match" in s, "the filter to apply")
    listed = screen.split("Knowledge")[0]
    assert "stale-locks" in listed and "disk-full" not in listed and "cert-expiry" not in listed

    terminal.keys("F3")
    screen = terminal.wait_for(lambda s: "no runs in the journal yet" in s, "the history")
    assert "any status" in screen

    terminal.keys("C-q")
    terminal.wait_for(lambda s: "CAIRN-EXITED-0" in s, "cairn tui to exit 0 on Ctrl+Q")


def test_cairn_alone_in_a_terminal_opens_the_tui(
    terminal: Terminal, runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    folder = runbook_dir(DISK, LOCKS, CERT, name="alone")
    env = {"TERM": "xterm-256color", "CAIRN_JOURNAL": str(journal_path), "CAIRN_RUNBOOKS": str(folder)}
    terminal.start(cairn_command(), env)
    terminal.wait_for(lambda s: "stale-locks" in s and "3 runbooks" in s, "the library")
    terminal.keys("C-q")
    terminal.wait_for(lambda s: "CAIRN-EXITED-0" in s, "cairn to exit 0 on Ctrl+Q")


def test_without_a_terminal_cairn_tui_refuses_and_cairn_alone_prints_help(cairn: CairnRunner) -> None:
    done = cairn("tui")
    assert done.returncode == 2
    assert "cairn tui needs a terminal" in done.stderr
    assert done.stdout == ""

    alone = cairn()
    assert alone.returncode == 2
    assert "usage: cairn" in alone.stdout and "tui" in alone.stdout
