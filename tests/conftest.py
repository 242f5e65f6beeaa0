"""Shared fixtures: an isolated journal per test, and the real `cairn` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "runbooks"
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own journal; nothing touches ~/.local/state."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("CAIRN_JOURNAL", str(state / "cairn" / "journal.db"))
    monkeypatch.delenv("CAIRN_RUNBOOKS", raising=False)
    return state


@pytest.fixture
def journal_path(isolated_state: Path) -> Path:
    """Where this test's journal lives."""
    return isolated_state / "cairn" / "journal.db"


def cairn_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m engine.cli`."""
    script = Path(sys.executable).parent / "cairn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


CairnRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cairn(tmp_path: Path) -> CairnRunner:
    """Run the real `cairn` command in a subprocess (stdin is not a terminal)."""

    def run(
        *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cairn_command(), *args],
            cwd=cwd or tmp_path,
            env=os.environ | env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def runbook_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write runbooks (dedented YAML text) into a fresh folder; returns the folder."""

    def write(*texts: str, name: str = "rb") -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        for text in texts:
            body = textwrap.dedent(text).lstrip()
            rid = next(line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("id:"))
            (folder / f"{rid}.yaml").write_text(body, encoding="utf-8")
        return folder

    return write
