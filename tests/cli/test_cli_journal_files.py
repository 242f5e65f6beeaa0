"""The journal Cairn creates is its owner's only: it holds every command, output and decision."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import CairnRunner, RunbookDir

pytestmark = pytest.mark.cli

LOOK = """
id: look
title: Look
severity: info
summary: Prints a line.
detect:
  - id: say
    title: say something
    run: echo looked
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_journal_is_readable_by_its_owner_only(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    journal = tmp_path / "state" / "cairn" / "journal.db"
    done = cairn("run", "look", "--runbooks", str(runbook_dir(LOOK)), "--journal", str(journal))
    assert done.returncode == 0, done.stderr
    assert _mode(journal.parent) == 0o700  # the folder holds the artifacts too: runs/<id>/…
    assert _mode(journal) == 0o600
    for extra in journal.parent.glob("journal.db-*"):  # SQLite's -wal/-shm, if left behind
        assert _mode(extra) == 0o600, extra
    assert any(journal.parent.glob("runs/*/*/detect.say.stdout"))


def test_a_folder_made_by_hand_keeps_its_mode(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    shared = tmp_path / "team"
    shared.mkdir(mode=0o750)
    shared.chmod(0o2770)  # a team's setgid folder: the owner chose who reads it
    done = cairn("run", "look", "--runbooks", str(runbook_dir(LOOK)), "--journal", str(shared / "j.db"))
    assert done.returncode == 0, done.stderr
    assert _mode(shared) == 0o2770
