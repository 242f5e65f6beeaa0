"""A real terminal for tests: one tmux server (its own socket) running one command.

Shared by the tests that need a terminal: `cairn tui` (tests/tui/test_terminal_smoke.py) and
`cairn run --step` (tests/cli/test_cli_step.py). Each test module makes its fixture with
``with tmux_terminal() as term: yield term``. Waiting is on what the pane shows, with a deadline,
never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TMUX_NEEDED = "the real-terminal test needs tmux (.ci/run installs it)"
EXITED = "CAIRN-EXITED-"
"""Printed after the command, then its exit code (``CAIRN-EXITED-0``)."""


class Terminal:
    """One tmux server (its own socket) running one command in a window (80x24 unless told)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False, timeout=30
        )

    def start(
        self,
        command: list[str],
        env: dict[str, str],
        *,
        width: int = 80,
        height: int = 24,
        after: str = "",
    ) -> None:
        """Run ``command``; then ``after`` (a shell line: what the terminal is left like), then the exit
        code is printed (:data:`EXITED`) and the window stays open for a while to be read."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        then = f"; {after}" if after else ""
        line = f"env {exports} {shlex.join(command)}; code=$?{then}; echo {EXITED}$code; sleep 30"
        done = self.tmux("new-session", "-d", "-s", "S", "-x", str(width), "-y", str(height), line)
        assert done.returncode == 0, done.stderr

    def screen(self, *, history: bool = False) -> str:
        """What the pane shows; ``history``: everything since the start, long lines joined back whole."""
        extra = ["-J", "-S", "-"] if history else []
        return self.tmux("capture-pane", "-p", *extra, "-t", "S").stdout

    def keys(self, *keys: str) -> None:
        done = self.tmux("send-keys", "-t", "S", *keys)
        assert done.returncode == 0, done.stderr

    def wait_for(
        self, condition: Callable[[str], bool], what: str, timeout: float = 30, *, history: bool = False
    ) -> str:
        """Poll the pane until ``condition(screen)``; fail at the deadline with what it showed."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(history=history)
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


@contextlib.contextmanager
def tmux_terminal() -> Iterator[Terminal]:
    """A :class:`Terminal` of its own, ended afterwards; fails the test at once without tmux."""
    if shutil.which("tmux") is None:
        pytest.fail(TMUX_NEEDED, pytrace=False)
    term = Terminal(f"cairn-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield term
    finally:
        term.kill()
