"""The SSH executor's persistent shell: a host's later steps run in one shell session, not a new one each.

Against real OpenSSH sshd hosts on loopback. What a user relies on: every step still gets exactly
its own output, exit code, environment and end of stdin, whatever the step before it did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors.ssh import SSHExecutor
from engine.core.inventory import load_inventory
from engine.core.model import Host
from engine.lab.ssh_fleet import SshFleet
from tests.procs import wait_until

pytestmark = [pytest.mark.ssh, pytest.mark.inventory]


@pytest.fixture
def executor(ssh_fleet: SshFleet) -> Iterator[SSHExecutor]:
    made = SSHExecutor(ExecutionOptions(known_hosts=ssh_fleet.known_hosts))
    yield made
    made.close()


def host_of(fleet: SshFleet, tmp_path: Path, index: int) -> Host:
    inventory = fleet.write_inventory(tmp_path / f"inv-{uuid.uuid4().hex[:6]}.yml")
    return load_inventory([str(inventory)]).hosts("fleet")[index]


def shell_pid(executor: SSHExecutor, host: Host) -> str:
    """The pid of the process that started this step's shell (its parent), which must be a shell.

    Each SSH session's command is a child of the connection's sshd process, so "the same parent"
    alone would not tell one session from four: a persistent shell is a parent that is a shell.
    """
    result = executor.execute(
        host, Shell('read -r _ _ _ p _ < "/proc/$BASHPID/stat"; echo "$p"; cat "/proc/$p/comm"'), timeout=10
    )
    assert result.rc == 0, result.stderr
    pid, parent = result.stdout.split()
    assert parent == "bash", f"the step's parent is {parent}: it ran in a session of its own"
    return pid


def test_a_hosts_steps_run_in_one_shell_session(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 12)

    parents = {shell_pid(executor, host) for _ in range(4)}

    assert len(parents) == 1  # one session's shell started all four (a session each: four sshd parents)


def test_exit_and_exec_in_a_step_leave_the_next_step_working_in_the_same_shell(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 12)
    before = shell_pid(executor, host)

    assert executor.execute(host, Shell("echo bye; exit 7"), timeout=10).rc == 7
    assert executor.execute(host, Shell("exec echo replaced"), timeout=10).stdout == "replaced\n"
    assert executor.execute(host, Shell("kill -TERM $$"), timeout=10).rc not in (0, None)
    assert executor.execute(host, Shell("kill -TERM $BASHPID"), timeout=10).rc not in (0, None)
    assert executor.execute(host, Shell("if"), timeout=10).rc == 2  # a syntax error

    assert shell_pid(executor, host) == before


def test_a_steps_variables_do_not_reach_the_next_step(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 12)

    first = executor.execute(
        host,
        Shell('export LEFT=over; cd /; echo "$CAIRN_SECRET_A"', env={"CAIRN_SECRET_A": "s3"}),
        timeout=10,
    )
    second = executor.execute(host, Shell('echo "${CAIRN_SECRET_A-unset} ${LEFT-unset}"; pwd'), timeout=10)

    assert first.stdout == "s3\n"
    assert second.stdout.splitlines() == ["unset unset", f"/home/{ssh_fleet.user}"]


@pytest.mark.parametrize(
    "command",
    ["printf abc", "printf 'abc\\n'", "printf 'abc\\n\\n'", "printf '\\n'", "true", "printf 'x\\036'"],
)
def test_output_is_exactly_the_commands_with_or_without_a_last_newline(
    command: str, ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 13)
    executor.execute(host, Shell("true"), timeout=10)  # later steps: in the persistent shell
    expected = executor_free_output(command)

    result = executor.execute(host, Shell(f"{command}; {command} >&2"), timeout=10)

    assert (result.rc, result.stdout, result.stderr) == (0, expected, expected)


def executor_free_output(command: str) -> str:
    import subprocess

    return subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout.decode()


def test_binary_output_arrives_exactly(ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor) -> None:
    host = host_of(ssh_fleet, tmp_path, 13)
    executor.execute(host, Shell("true"), timeout=10)
    every_byte = "".join(f"\\{b:03o}" for b in range(1, 256))

    result = executor.execute(host, Shell(f"for i in 1 2 3; do printf '{every_byte}'; done"), timeout=10)

    assert result.stdout == (bytes(range(1, 256)) * 3).decode(errors="replace")


def test_a_timed_out_step_is_killed_and_the_next_step_works(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 14)
    executor.execute(host, Shell("true"), timeout=10)
    marker = f"604.{uuid.uuid4().int % 10**9}"

    result = executor.execute(host, Shell(f"echo started; sleep {marker}"), timeout=1)
    after = executor.execute(host, Shell("echo next; echo err >&2; exit 4"), timeout=10)

    assert (result.timed_out, result.rc, result.stdout) == (True, None, "started\n")
    assert (after.rc, after.stdout, after.stderr) == (4, "next\n", "err\n")


def test_a_background_child_holding_the_output_does_not_write_into_the_next_step(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 14)
    executor.execute(host, Shell("true"), timeout=10)

    first = executor.execute(host, Shell("(sleep 1.5; echo late; echo late >&2) & echo now"), timeout=10)
    second = executor.execute(host, Shell("sleep 2.5; echo second"), timeout=10)

    assert (first.rc, first.stdout) == (0, "now\n")
    assert (second.rc, second.stdout, second.stderr) == (0, "second\n", "")
    assert "late" not in executor.execute(host, Shell("sleep 0.5; echo third"), timeout=10).stdout


def test_dollar_dollar_is_the_steps_own_shell(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 15)
    executor.execute(host, Shell("true"), timeout=10)

    result = executor.execute(host, Shell('echo "$$ $BASHPID"; echo $$ >&2'), timeout=10)

    pid, bashpid = result.stdout.split()
    assert pid == bashpid == result.stderr.strip()


def test_a_background_child_that_let_go_of_the_output_leaves_the_shell_in_use(
    ssh_fleet: SshFleet, tmp_path: Path, executor: SSHExecutor
) -> None:
    host = host_of(ssh_fleet, tmp_path, 15)
    before = shell_pid(executor, host)
    marker = f"605.{uuid.uuid4().int % 10**9}"

    started = executor.execute(host, Shell(f"sleep {marker} >/dev/null 2>&1 & echo started"), timeout=10)

    assert (started.rc, started.stdout) == (0, "started\n")
    assert shell_pid(executor, host) == before  # nothing can write into the next steps: kept
    executor.execute(host, Shell(f"pkill -f 'sleep {marker}'"), timeout=10)


def test_the_shell_ends_when_the_executor_closes(ssh_fleet: SshFleet, tmp_path: Path) -> None:
    host = host_of(ssh_fleet, tmp_path, 15)
    executor = SSHExecutor(ExecutionOptions(known_hosts=ssh_fleet.known_hosts))
    pid = int(shell_pid(executor, host))
    shell_pid(executor, host)

    executor.close()

    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5)
