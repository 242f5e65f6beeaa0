"""./scripts/try on a runbook of the user's with its lab declared beside it, named the two ways the README says.

Both are given relative to where the user is, not to the repository (the script changes into it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.cli, pytest.mark.lab]

EXAMPLE = "stale-lock-files"


def try_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "try"), *args],
        cwd=cwd,
        env=dict(os.environ) | env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def my_runbooks(tmp_path: Path) -> Path:
    folder = tmp_path / "my-runbooks"
    folder.mkdir()
    for name in (f"{EXAMPLE}.yaml", f"{EXAMPLE}.lab.yaml"):
        shutil.copy(REPO / "docs" / "examples" / name, folder / name)
    return folder


def test_try_a_runbook_file_with_its_declared_lab(my_runbooks: Path) -> None:
    done = try_script(f"my-runbooks/{EXAMPLE}.yaml", "--yes", cwd=my_runbooks.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"starting the practice lab for {EXAMPLE}" in done.stderr
    assert "3 stale lock file(s)" in done.stdout
    assert "remediated; verify is clean" in done.stdout
    assert "cairn run exited 0 (healthy or remediated); the lab is stopped now." in done.stdout


def test_try_an_id_from_the_runbook_folders_in_cairn_runbooks(my_runbooks: Path) -> None:
    done = try_script(EXAMPLE, cwd=my_runbooks.parent, CAIRN_RUNBOOKS="my-runbooks")
    assert done.returncode == 1, done.stdout + done.stderr  # found, not remediated without --yes
    assert "3 stale lock file(s)" in done.stdout
    assert "cairn run exited 1 (the pitfall is present and was not remediated" in done.stdout
