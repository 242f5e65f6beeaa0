"""`cairn run` on many hosts under a low open-file limit: it makes room itself, or says how, before anything runs.

A run keeps each host's connection open to its end, so its open files grow with the hosts. The
tests start `cairn run` on the session's 20 real sshd hosts under limits set for that process
alone (``setrlimit`` in the child), small enough that 20 connections do not fit.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.lab.ssh_fleet import SshFleet
from tests.conftest import RunbookDir, cairn_command

pytestmark = [pytest.mark.cli, pytest.mark.ssh]

KERNEL = """
id: kernel
title: Kernel release
severity: info
summary: s
targets: fleet
detect:
  - id: kernel
    title: kernel
    run: uname -r
    expect: rc == 0
"""


def limited(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def run_limited(
    ssh_fleet: SshFleet, runbook_dir: RunbookDir, tmp_path: Path, soft: int, hard: int
) -> subprocess.CompletedProcess[str]:
    inventory = ssh_fleet.write_inventory(tmp_path / "fleet.yml")
    argv = [
        *cairn_command(), "run", "kernel", "--runbooks", str(runbook_dir(KERNEL)), "-i", str(inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-f", "20", "--json",
    ]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, preexec_fn=limited(soft, hard), check=False
    )


def test_a_low_soft_limit_is_raised_and_every_host_answers(
    ssh_fleet: SshFleet, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    result = run_limited(ssh_fleet, runbook_dir, tmp_path, soft=40, hard=4096)
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)["hosts"]
    assert len(hosts) == 20
    assert {h["outcome"] for h in hosts} == {"healthy"}


def test_a_hard_limit_too_low_is_said_with_the_fix_before_anything_runs(
    ssh_fleet: SshFleet, runbook_dir: RunbookDir, tmp_path: Path, journal_path: Path
) -> None:
    logins = ssh_fleet.accepted_logins()
    result = run_limited(ssh_fleet, runbook_dir, tmp_path, soft=100, hard=100)
    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("cairn: error: a run on 20 hosts keeps about ")
    assert "hard limit of 100 open files (`ulimit -Hn`)" in message
    assert "`ulimit -n 256`" in message and "--limit" in message and "nothing was run" in message
    assert "Traceback" not in result.stderr and len(message.splitlines()) == 1
    assert ssh_fleet.accepted_logins() == logins  # no host was contacted
    if journal_path.exists():  # nothing was journaled either
        with sqlite3.connect(journal_path) as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
