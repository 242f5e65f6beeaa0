"""A secret input never reaches a command line: the command refers to ``"$CAIRN_SECRET_<NAME>"``.

Through the real `cairn plan` and `cairn run` (the value given with ``-e @file``): the plan shows
the reference, which is what runs; while the command runs, no process's ``/proc/PID/cmdline``
holds the value, and the command still gets it (from its own environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.lab.ssh_fleet import SshFleet
from tests.cli.conftest import wait_for
from tests.conftest import CairnRunner, RunbookDir, cairn_command

SECRET = "s3cr3t-" + "9c1f4e2a7b"
RUNBOOK = """
id: secret-call
title: Calls an API with a token
severity: info
summary: The token goes to the command through its environment, never its command line.
inputs:
  token: {type: string, secret: true}
  folder: {type: string}
detect:
  - id: call
    title: Use the token while the test looks at every process
    run: >-
      touch {{ inputs.folder }}/started;
      bash -c 'while [ ! -e "$1" ]; do sleep 0.05; done' waiting-for-CAIRN_SECRET_TOKEN {{ inputs.folder }}/release;
      printf '%s\\n' {{ inputs.token }} {{ 'Bearer ' ~ inputs.token }}
  - id: leak
    title: A template that would put the value on the command line
    run: "echo {{ {'token': inputs.token} }}"
"""


def vars_file(tmp_path: Path, folder: Path | None = None) -> Path:
    """The inputs, given as ``-e @file``: the token, and the folder the first step waits in."""
    path = tmp_path / "vars.yaml"
    path.write_text(json.dumps({"token": SECRET, "folder": str(folder or tmp_path)}), encoding="utf-8")
    return path


def command_lines() -> dict[int, str]:
    """Every process's command line, as anyone on the host can read it."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue  # gone meanwhile
    return found


@pytest.mark.cli
def test_plan_shows_the_reference_that_runs_never_the_value(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    folder = runbook_dir(RUNBOOK)
    done = cairn("plan", "secret-call", "--runbooks", str(folder), "-e", f"@{vars_file(tmp_path)}")
    assert done.returncode == 0, done.stderr
    assert "printf '%s\\n' \"$CAIRN_SECRET_TOKEN\" 'Bearer '\"$CAIRN_SECRET_TOKEN\"" in done.stdout
    assert "a dict written out whole is given the secret input 'token'" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def run_while_scanning(args: list[str], folder: Path) -> tuple[dict[int, str], dict[str, Any]]:
    """`cairn run ARGS --json`, whose first step waits in ``folder``: every command line seen while
    it waits, then the run's results by step id."""
    with subprocess.Popen(
        [*cairn_command(), "run", *args, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    ) as proc:
        try:
            wait_for(lambda: (folder / "started").exists() or proc.poll() is not None, "the step to start")
            assert proc.poll() is None, proc.communicate()
            lines = command_lines()
        finally:
            (folder / "release").touch()
        out, err = proc.communicate(timeout=120)
    assert SECRET not in out + err
    return lines, {r["step_id"]: r for r in json.loads(out)["hosts"][0]["results"]}


def assert_never_on_a_command_line(lines: dict[int, str], results: dict[str, Any]) -> None:
    running = [line for line in lines.values() if "CAIRN_SECRET_TOKEN" in line]
    assert running, "the scan saw the step's waiting command (its first word names the variable)"
    assert [line for line in lines.values() if SECRET in line] == []
    # The command got the value through its environment: printed, then redacted in what Cairn keeps.
    assert results["call"]["stdout"] == "***\nBearer ***\n", results["call"]
    assert results["leak"]["status"] == "error"
    assert "a dict written out whole is given the secret input 'token'" in results["leak"]["message"]


@pytest.mark.cli
def test_no_process_shows_the_secret_on_its_command_line_while_the_step_runs(
    runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    args = ["secret-call", "--runbooks", str(runbook_dir(RUNBOOK)), "-e", f"@{vars_file(tmp_path)}"]
    assert_never_on_a_command_line(*run_while_scanning(args, tmp_path))


@pytest.mark.ssh
@pytest.mark.cli
def test_over_ssh_no_process_shows_the_secret_either(
    runbook_dir: RunbookDir, tmp_path: Path, ssh_fleet: SshFleet
) -> None:
    # The fleet's hosts are sshd servers on this machine: the remote shell is in /proc too.
    shared = Path(f"/tmp/cairn-secret-{uuid.uuid4().hex}")
    shared.mkdir()
    shared.chmod(0o777)  # the fleet's login user writes `started` there
    try:
        inventory = ssh_fleet.write_inventory(tmp_path / "fleet.yml")
        args = [
            "secret-call", "--runbooks", str(runbook_dir(RUNBOOK)), "-e", f"@{vars_file(tmp_path, shared)}",
            "-i", str(inventory), "--known-hosts", str(ssh_fleet.known_hosts), "-l", ssh_fleet.hosts[0].name,
        ]  # fmt: skip
        assert_never_on_a_command_line(*run_while_scanning(args, shared))
    finally:
        shutil.rmtree(shared, ignore_errors=True)
