"""The README's set-up commands themselves: ./scripts/try as a newcomer runs it.

CI runs the suite through ./scripts/test on a fresh machine, so the install half of both scripts is
exercised there for real; these tests check what happens next (exit 1 without a terminal, 0 with
--yes) and what a user without root sees when a package is missing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.core import doctor
from tests.conftest import REPO

pytestmark = [pytest.mark.cli, pytest.mark.lab, pytest.mark.kubectl, pytest.mark.cron]


def try_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "try"), *args],
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_try_without_a_terminal_finds_the_pitfall_and_with_yes_fixes_it() -> None:
    present = try_script()
    assert present.returncode == 1, present.stdout + present.stderr
    out = present.stdout
    assert "starting the practice lab for node-notready-zombie-shim" in present.stderr
    assert "Node NotReady" in out and "Symptoms" in out and "**" not in out  # plain text, not Markdown
    assert "not asked" in out and "declined" not in out
    assert "cairn run exited 1 (the pitfall is present and was not remediated; without a terminal" in out

    fixed = try_script("--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "remediated" in fixed.stdout
    assert "cairn run exited 0 (healthy or remediated); the lab is stopped now." in fixed.stdout


def test_without_root_a_missing_package_is_named_with_the_exact_command_and_nothing_changes(
    tmp_path: Path,
) -> None:
    """A machine without Debian's cron, seen by a user without root.

    The PATH holds every program of this machine but crontab, and an ``id`` that answers 1000 for
    ``-u``: the script's own test for root (CI runs as root, so a real non-root user may not even
    be able to read the checkout). Nothing may be installed, created or started.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for program in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if program.name not in ("crontab", "id") and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    fake_id = bin_dir / "id"
    fake_id.write_text('#!/bin/sh\n[ "$1" = -u ] && echo 1000 && exit 0\nexec /usr/bin/id "$@"\n')
    fake_id.chmod(0o755)
    python = doctor.locate("python3")
    assert python
    (bin_dir / "python3").unlink(missing_ok=True)
    (bin_dir / "python3").symlink_to(python)
    env = dict(os.environ) | {"PATH": str(bin_dir)}
    before = sorted(p.name for p in REPO.iterdir())

    done = try_script(env=env)

    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "Cairn needs these Debian packages for ./scripts/try, and they are not installed: cron" in done.stderr
    )
    assert "    sudo apt-get update && sudo apt-get install -y --no-install-recommends cron\n" in done.stderr
    assert "Nothing was changed." in done.stderr
    assert "==>" not in done.stderr  # no stage started: no install, no lab, no run
    assert sorted(p.name for p in REPO.iterdir()) == before
