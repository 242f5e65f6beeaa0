"""A timeout or cancel ends every process a step started, even those that left its process group.

`setsid`, `setpgid` and daemonising put a process outside the step's group, so killing the group
alone left them running while the step said "the command was killed". Locally, over SSH (the fleet's
hosts are this machine, so /proc shows their processes) and through ansible.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors import process_trees as trees
from engine.core.executors.ansible import AnsibleExecutor
from engine.core.executors.local import LocalExecutor
from engine.core.executors.ssh import SSHExecutor
from engine.core.inventory import load_inventory
from engine.core.model import LOCALHOST, CommandResult, Host
from engine.lab.ssh_fleet import SshFleet
from tests.conftest import CairnRunner, OwnFleet, RunbookDir
from tests.engine.test_ssh_executor import kill_sshd_only
from tests.procs import processes_with

ESCAPES = {
    "setsid": "setsid sleep {m} &",
    "setsid -f": "setsid -f sleep {m}",
    "own process group": "perl -e 'setpgrp(0, 0); exec @ARGV' sleep {m} &",
    "daemonised, output closed": "( setsid sh -c 'sleep {m}' </dev/null >/dev/null 2>&1 & ) &",
    "nohup in a new session": "nohup setsid bash -c 'exec sleep {m}' >/dev/null 2>&1 &",
}
"""Ways a command's child leaves the step's process group or session ({m}: the marker)."""


def gone(marker: str, within: float = 10.0) -> bool:
    """Poll until no process carries ``marker`` (True), or ``within`` seconds pass (False)."""
    deadline = time.monotonic() + within
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique ``sleep`` argument; whatever still carries it after the test is killed."""
    value = f"999.{uuid.uuid4().int % 10**9:09d}"
    yield value
    for pid in processes_with(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def escaping(how: str, marker: str) -> str:
    """A step that starts a process outside its group, says so, then runs on until it is killed."""
    return f"{ESCAPES[how].format(m=marker)}\necho started\nsleep 60"


def wait_for_start(marker: str) -> None:
    deadline = time.monotonic() + 10
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


# --------------------------------------------------------------------------- local


@pytest.mark.parametrize("how", sorted(ESCAPES))
def test_a_local_timeout_kills_processes_that_left_the_group(how: str, marker: str) -> None:
    result = LocalExecutor().execute(LOCALHOST, Shell(escaping(how, marker)), timeout=1.5)

    assert result.timed_out and result.rc is None
    assert "started" in result.stdout
    assert gone(marker), f"{how}: still running: {processes_with(marker)}"


def test_a_local_cancel_kills_processes_that_left_the_group(marker: str) -> None:
    cancel = threading.Event()

    def cancel_when_started(stream: str, text: str) -> None:
        if "started" in text:
            cancel.set()

    result = LocalExecutor().execute(
        LOCALHOST,
        Shell(escaping("setsid", marker)),
        timeout=60,
        on_output=cancel_when_started,
        cancel=cancel,
    )

    assert result.cancelled
    assert gone(marker), processes_with(marker)


def test_a_process_that_cannot_be_killed_is_named_in_the_result(
    marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process the user cannot signal (another user's, after sudo) is still running afterwards;
    # the step must say so with its pid instead of claiming it killed the command.
    real_kill = os.kill
    refused: list[int] = []

    def kill(pid: int, sig: int) -> None:
        if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            refused.append(pid)
            raise PermissionError(1, "Operation not permitted")
        real_kill(pid, sig)

    monkeypatch.setattr(trees, "send_signal", kill)
    monkeypatch.setattr(trees, "KILL_GRACE", 0.3)

    result = LocalExecutor().execute(LOCALHOST, Shell(escaping("setsid", marker)), timeout=1)

    assert result.timed_out
    pid = refused[0]
    assert f"could not kill process {pid} (sleep {marker})" in result.stderr
    assert processes_with(marker) == [pid]


def test_a_step_that_ends_on_its_own_keeps_its_daemons(marker: str) -> None:
    # Starting a service is a legitimate step: only a timeout or a cancel ends what a step left.
    result = LocalExecutor().execute(
        LOCALHOST, Shell(f"{ESCAPES['setsid'].format(m=marker)}\ntrue"), timeout=10
    )

    assert result.rc == 0
    wait_for_start(marker)
    assert processes_with(marker)


# --------------------------------------------------------------------------- ssh


def fleet_host(fleet: SshFleet, tmp_path: Path, index: int) -> Host:
    inventory = fleet.write_inventory(tmp_path / f"inv-{uuid.uuid4().hex[:6]}.yml")
    return load_inventory([str(inventory)]).hosts("fleet")[index]


@pytest.mark.ssh
@pytest.mark.inventory
@pytest.mark.parametrize("how", ["setsid", "own process group", "daemonised, output closed"])
def test_an_ssh_timeout_kills_processes_that_left_the_group(
    how: str, marker: str, ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    executor = SSHExecutor(ExecutionOptions(known_hosts=ssh_fleet.known_hosts))
    host = fleet_host(ssh_fleet, tmp_path, 5)
    try:
        result = executor.execute(host, Shell(escaping(how, marker)), timeout=1.5)
        assert result.timed_out and result.rc is None
        assert "started" in result.stdout
        assert gone(marker), f"{how}: still running on the host: {processes_with(marker)}"
        assert executor.execute(host, Shell("echo usable"), timeout=10).stdout == "usable\n"
    finally:
        executor.close()


@pytest.mark.ssh
@pytest.mark.inventory
def test_an_ssh_cancel_kills_processes_that_left_the_group(
    marker: str, ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    executor = SSHExecutor(ExecutionOptions(known_hosts=ssh_fleet.known_hosts))
    cancel = threading.Event()

    def cancel_when_started(stream: str, text: str) -> None:
        if "started" in text:
            cancel.set()

    try:
        result = executor.execute(
            fleet_host(ssh_fleet, tmp_path, 6),
            Shell(escaping("setsid", marker)),
            timeout=60,
            on_output=cancel_when_started,
            cancel=cancel,
        )
    finally:
        executor.close()

    assert result.cancelled
    assert gone(marker), processes_with(marker)


# --------------------------------------------------------------------------- --via ansible


def via_ansible(
    host: Host,
    command: str,
    options: ExecutionOptions,
    *,
    timeout: float,
    cancel: threading.Event | None = None,
) -> CommandResult:
    return AnsibleExecutor(options).execute(host, Shell(command), timeout=timeout, cancel=cancel)


@pytest.mark.ansible
def test_a_timeout_via_ansible_kills_processes_that_left_the_group_locally(marker: str) -> None:
    result = via_ansible(
        Host("localhost", "local"), escaping("setsid", marker), ExecutionOptions(), timeout=3
    )

    assert result.timed_out
    assert gone(marker), processes_with(marker)


@pytest.mark.ansible
@pytest.mark.ssh
def test_a_timeout_via_ansible_kills_processes_that_left_the_group_on_an_ssh_host(
    marker: str, ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    inventory = ssh_fleet.write_inventory(tmp_path / "inventory.yml")
    options = ExecutionOptions(inventory_sources=(str(inventory),), known_hosts=ssh_fleet.known_hosts)

    result = via_ansible(Host(ssh_fleet.hosts[7].name, "ssh"), escaping("setsid", marker), options, timeout=3)

    assert result.timed_out
    assert gone(marker), processes_with(marker)


@pytest.mark.ansible
@pytest.mark.ssh
def test_a_cancel_via_ansible_kills_processes_that_left_the_group_on_an_ssh_host(
    marker: str, ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    inventory = ssh_fleet.write_inventory(tmp_path / "inventory.yml")
    options = ExecutionOptions(inventory_sources=(str(inventory),), known_hosts=ssh_fleet.known_hosts)
    cancel = threading.Event()

    def cancel_once_started() -> None:
        wait_for_start(marker)
        cancel.set()

    watcher = threading.Thread(target=cancel_once_started, daemon=True)
    watcher.start()
    result = via_ansible(
        Host(ssh_fleet.hosts[8].name, "ssh"), escaping("setsid", marker), options, timeout=120, cancel=cancel
    )
    watcher.join()

    assert result.cancelled
    assert gone(marker, within=20), processes_with(marker)


# --------------------------------------------------------------------------- through `cairn run`

DAEMON = """
id: leaves-a-daemon
title: A step that leaves a daemon and hangs
severity: info
summary: s
targets: {targets}
detect:
  - id: spawn
    title: start a daemon, then hang
    run: "setsid sleep {marker} & echo started; sleep 60"
    timeout: 1s
"""


@pytest.mark.cli
def test_cairn_run_timeout_leaves_no_daemon_behind_locally(
    cairn: CairnRunner, runbook_dir: RunbookDir, marker: str
) -> None:
    folder = runbook_dir(DAEMON.format(targets="localhost", marker=marker))

    done = cairn("run", "leaves-a-daemon", "--runbooks", str(folder))

    assert "timed out after" in done.stdout, done.stdout + done.stderr
    assert gone(marker), f"the daemon survived `cairn run`: {processes_with(marker)}"


@pytest.mark.cli
@pytest.mark.ssh
@pytest.mark.inventory
def test_cairn_run_timeout_leaves_no_daemon_behind_over_ssh(
    cairn: CairnRunner, runbook_dir: RunbookDir, marker: str, ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    folder = runbook_dir(DAEMON.format(targets="fleet", marker=marker))
    inventory = ssh_fleet.write_inventory(tmp_path / "fleet.yml")

    done = cairn(
        "run", "leaves-a-daemon", "--runbooks", str(folder), "-i", str(inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "fleet[9:10]",
    )  # fmt: skip

    assert done.stdout.count("spawn") >= 2 and "timed out after" in done.stdout, done.stdout + done.stderr
    assert gone(marker), f"the daemons survived on the hosts: {processes_with(marker)}"


@pytest.mark.ssh
@pytest.mark.inventory
def test_after_a_lost_connection_the_guard_ends_what_left_the_group_at_the_deadline(
    marker: str, own_ssh_fleet: OwnFleet, tmp_path: Path
) -> None:
    fleet = own_ssh_fleet(1)
    host = fleet_host(fleet, tmp_path, 0)
    executor = SSHExecutor(ExecutionOptions(known_hosts=fleet.known_hosts))

    def drop_when_guarded(stream: str, text: str) -> None:
        if "still" in text:  # printed after GUARD_AFTER: the guard watches the command by now
            kill_sshd_only(fleet, host.name)

    command = f"{ESCAPES['setsid'].format(m=marker)}\necho started; sleep 2.5; echo still; sleep 60"
    try:
        with pytest.raises(ExecutorError, match="connection lost during the step"):
            executor.execute(host, Shell(command), timeout=6, on_output=drop_when_guarded)
    finally:
        executor.close()

    assert processes_with(marker)  # sshd is gone; the daemon runs on, for now
    assert gone(marker, within=15), processes_with(marker)  # the guard ended it too


def test_a_host_whose_grep_cannot_read_environments_says_only_the_group_was_killed(tmp_path: Path) -> None:
    # busybox builds without `grep -z` exist: a check that cannot look must say so, not pass as done.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "grep").write_text("#!/bin/sh\nexit 2\n")
    (fake / "grep").chmod(0o755)
    script = trees.kill_script(uuid.uuid4().hex, None)

    done = subprocess.run(
        ["/bin/sh", "-c", script],
        check=False,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0
    assert "cannot look for processes that left the step's group (its grep has no -z)" in done.stdout
