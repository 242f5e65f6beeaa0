"""The test-suite's own hygiene: a process a test left behind does not outlive it (tests/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import alive

LEFT_BEHIND: list[subprocess.Popen[bytes]] = []


def test_a_test_that_leaves_a_waiting_process_behind(tmp_path: Path) -> None:
    """As a failing test would: a step waiting for a file nobody will write, in its own session."""
    waiting = subprocess.Popen(
        ["bash", "-c", f"while [ ! -e {tmp_path}/go ]; do sleep 0.05; done"], start_new_session=True
    )
    LEFT_BEHIND.append(waiting)
    assert alive(waiting.pid)


def test_the_process_it_left_behind_was_ended_after_it() -> None:
    """Runs after the test above (pytest keeps a module's order)."""
    assert LEFT_BEHIND, "the test above ran first"
    [waiting] = LEFT_BEHIND
    assert not alive(waiting.pid)  # killed: a zombie until reaped, which alive() counts as gone
    assert waiting.wait(timeout=10) == -9
