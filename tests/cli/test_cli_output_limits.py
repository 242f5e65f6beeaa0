"""`cairn run` on a step that prints far more than anyone can read: bounded in memory and on disk."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunbookDir, cairn_command

pytestmark = pytest.mark.cli

FLOOD = """
id: flood
title: A step that prints 50 MB on one line
severity: info
summary: s
detect:
  - id: flood
    title: one endless line
    run: head -c 50000000 /dev/zero | tr '\\0' x
    timeout: 5m
"""

MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
sys.exit(done.returncode)
"""
"""Runs the command given and prints its peak resident memory in KiB (the largest waited-for child)."""


def test_a_50_mb_line_is_cut_at_the_output_limit_with_a_marker_and_bounded_memory(
    runbook_dir: RunbookDir, journal_path: Path, tmp_path: Path
) -> None:
    folder = runbook_dir(FLOOD)

    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *cairn_command(), "run", "flood", "--runbooks", str(folder), "--json"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip()) / 1024
    marker = "[… stdout truncated: 8 MiB kept of 48 MiB; the rest was read and dropped"
    with sqlite3.connect(journal_path) as db:
        run_id, artifacts = db.execute("SELECT id, artifacts FROM runs").fetchone()
        (stdout,) = db.execute("SELECT stdout FROM steps WHERE step_id = 'flood'").fetchone()
    assert marker in stdout  # the journal's row says what happened
    kept = Path(artifacts) / "localhost" / "detect.flood.stdout"
    assert kept.stat().st_size < 9 * 1024 * 1024  # the artifacts file was 50 MB (200 MB for 200 MB)
    assert marker in kept.read_text(encoding="utf-8")[-1000:]
    # A bare `cairn run` here is ~60 MiB; holding the line whole took 150+ MiB (456 MiB for 200 MB).
    assert peak_mib < 120, f"cairn run peaked at {peak_mib:.0f} MiB"
    assert run_id


def test_the_output_limit_is_the_users_to_choose(
    runbook_dir: RunbookDir, journal_path: Path, tmp_path: Path
) -> None:
    folder = runbook_dir(FLOOD.replace("head -c 50000000", "head -c 300000"))
    done = subprocess.run(
        [*cairn_command(), "run", "flood", "--runbooks", str(folder), "--output-limit", "64K"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(journal_path) as db:
        (stdout,) = db.execute("SELECT stdout FROM steps WHERE step_id = 'flood'").fetchone()
    assert "[… stdout truncated: 64 KiB kept of 293 KiB; the rest was read and dropped" in stdout

    wrong = subprocess.run(
        [*cairn_command(), "run", "flood", "--runbooks", str(folder), "--output-limit", "lots"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "--output-limit: 'lots' is not a size (like 65536, 512K or 8M)" in wrong.stderr
