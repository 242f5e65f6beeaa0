"""`cairn tui` in a real terminal (tmux): the library appears, typing filters, F3 opens the history, Ctrl+Q quits.

Also: without a terminal, `cairn tui` refuses and `cairn` alone prints its help, as in scripts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CairnRunner, cairn_command
from tests.tui.test_library import CERT, DISK, LOCKS

pytestmark = [pytest.mark.tui, pytest.mark.cli, pytest.mark.tmux]

TMUX_NEEDED = "the real-terminal test needs tmux (.ci/run installs it)"


class Terminal:
    """One tmux server (its own socket) running one command in an 80x24 window."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False, timeout=30
        )

    def start(self, command: list[str], env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        line = f"env {exports} {shlex.join(command)}; echo CAIRN-EXITED-$?; sleep 30"
        done = self.tmux("new-session", "-d", "-s", "S", "-x", "80", "-y", "24", line)
        assert done.returncode == 0, done.stderr

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "S").stdout

    def keys(self, *keys: str) -> None:
        done = self.tmux("send-keys", "-t", "S", *keys)
        assert done.returncode == 0, done.stderr

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        """Poll the pane until ``condition(screen)``; fail at the deadline with what it showed."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}; the terminal shows:\n{screen}")
            time.sleep(0.05)  # polling another process's terminal, with a deadline

    def kill(self) -> None:
        """End the server and remove its socket file (tmux leaves it behind)."""
        socket_path = self.tmux("display-message", "-p", "#{socket_path}").stdout.strip()
        self.tmux("kill-server")
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.fail(TMUX_NEEDED, pytrace=False)
    term = Terminal(f"cairn-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield term
    finally:
        term.kill()


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
