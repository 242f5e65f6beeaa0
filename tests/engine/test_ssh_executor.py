"""SSHExecutor against real OpenSSH sshd hosts on loopback: commands, host keys, failures, kills."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import paramiko
import pytest

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors.ssh import SSHExecutor
from engine.core.inventory import load_inventory
from engine.core.model import Host
from engine.lab.not_sshd import Behaviour, NotSshd
from engine.lab.ssh_fleet import SshFleet
from tests.conftest import OwnFleet
from tests.procs import wait_until

pytestmark = [pytest.mark.ssh, pytest.mark.inventory]


def fleet_hosts(fleet: SshFleet, tmp_path: Path, **host_vars: dict[str, object]) -> list[Host]:
    inventory = fleet.write_inventory(tmp_path / f"inv-{uuid.uuid4().hex[:6]}.yml", host_vars=host_vars)
    return load_inventory([str(inventory)]).hosts("fleet")


class ExecutorFor(Protocol):
    """The ``executor_for`` fixture's value: an SSHExecutor checking ``known_hosts``, closed after the test."""

    def __call__(
        self, known_hosts: Path, *, ssh_config: Path | None = None, accept_new_host_keys: bool = False
    ) -> SSHExecutor: ...


@pytest.fixture
def executor_for() -> Iterator[ExecutorFor]:
    made: list[SSHExecutor] = []

    def make(
        known_hosts: Path, *, ssh_config: Path | None = None, accept_new_host_keys: bool = False
    ) -> SSHExecutor:
        options = ExecutionOptions(
            known_hosts=known_hosts, ssh_config=ssh_config, accept_new_host_keys=accept_new_host_keys
        )
        executor = SSHExecutor(options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


def live_processes(needle: str) -> list[str]:
    """Command lines of running (not zombie) processes containing ``needle`` — the hosts are this machine."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state not in ("Z", "X") and "pytest" not in cmdline:
            found.append(cmdline)
    return found


# --------------------------------------------------------------------------- commands


def test_a_command_gives_its_exit_code_and_both_streams(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[0]
    executor = executor_for(ssh_fleet.known_hosts)

    result = executor.execute(host, Shell("echo out; echo err >&2; whoami; exit 3"), timeout=10)

    assert result.rc == 3
    assert result.stdout == f"out\n{ssh_fleet.user}\n"
    assert result.stderr == "err\n"  # the wrapper's process-group line is not part of it
    assert not result.timed_out


def test_values_with_shell_characters_arrive_as_written(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[0]
    executor = executor_for(ssh_fleet.known_hosts)

    result = executor.execute(host, Shell("printf '%s\\n' \"$0\" 'a b' '$HOME' \"it's\""), timeout=10)

    assert result.stdout.splitlines()[1:] == ["a b", "$HOME", "it's"]


def test_output_streams_while_the_command_runs(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[0]
    executor = executor_for(ssh_fleet.known_hosts)
    shared = Path(f"/tmp/cairn-test-{uuid.uuid4().hex}")  # the login user must see it: not under tmp_path
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    go = shared / "go"
    seen: list[str] = []

    def on_output(stream: str, text: str) -> None:
        seen.append(text)
        if "first" in text:
            go.touch()  # the command can only finish after we saw its first line

    try:
        result = executor.execute(
            host,
            Shell(f"echo first; while [ ! -e {go} ]; do sleep 0.02; done; echo second"),
            timeout=20,
            on_output=on_output,
        )
    finally:
        go.unlink(missing_ok=True)
        shared.rmdir()

    assert result.rc == 0
    assert "".join(seen) == "first\nsecond\n"


def test_every_step_reuses_the_one_connection_per_host(
    own_ssh_fleet: OwnFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    fleet = own_ssh_fleet(3)
    hosts = fleet_hosts(fleet, tmp_path)
    executor = executor_for(fleet.known_hosts)

    for host in hosts:
        executor.connect(host)
        for _ in range(4):
            assert executor.execute(host, Shell("true"), timeout=10).rc == 0

    assert fleet.accepted_logins() == 3  # one SSH handshake per host, not per step


def test_inventory_and_ssh_config_decide_where_and_as_whom(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    first = ssh_fleet.hosts[0]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host db-primary\n  HostName {first.address}\n  Port {first.port}\n  User {ssh_fleet.user}\n"
        f"  IdentityFile {ssh_fleet.user_key}\n"
    )
    executor = executor_for(ssh_fleet.known_hosts, ssh_config=config)

    result = executor.execute(Host("db-primary", "ssh", {}), Shell("echo $SSH_CONNECTION"), timeout=10)

    assert result.rc == 0
    assert result.stdout.split()[2:] == [first.address, str(first.port)]


# --------------------------------------------------------------------------- host keys


def test_an_unknown_host_is_refused_with_its_fingerprint_and_how_to_trust_it(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fh = ssh_fleet.hosts[0]

    with pytest.raises(ExecutorError) as caught:
        executor_for(empty).connect(host)

    message = str(caught.value)
    assert message.startswith(f"{host.name}: host key of [{fh.address}]:{fh.port} is not in {empty}")
    assert "ssh-ed25519 SHA256:" in message
    assert f"ssh-keyscan -p {fh.port} {fh.address} >> {empty}" in message
    assert "--accept-new-host-keys" in message
    assert empty.read_text() == ""  # nothing was recorded


def test_accept_new_records_the_key_and_later_connections_check_it(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[1]
    fh = ssh_fleet.hosts[1]
    recorded = tmp_path / "ssh" / "known_hosts"  # the folder does not exist yet either

    executor_for(recorded, accept_new_host_keys=True).connect(host)

    assert recorded.read_text() == f"[{fh.address}]:{fh.port} {ssh_fleet.host_public_key(fh.name)}\n"
    assert (
        executor_for(recorded).execute(host, Shell("true"), timeout=10).rc == 0
    )  # strict, with the recorded key


def test_a_changed_host_key_is_refused_loudly_even_with_accept_new(
    own_ssh_fleet: OwnFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    fleet = own_ssh_fleet(1)
    host = fleet_hosts(fleet, tmp_path)[0]
    fh = fleet.hosts[0]
    fleet.restart_host(fh.name, new_host_key=True)
    before = fleet.known_hosts.read_text()

    for accept_new in (False, True):
        with pytest.raises(ExecutorError) as caught:
            executor_for(fleet.known_hosts, accept_new_host_keys=accept_new).connect(host)
        message = str(caught.value)
        assert f"HOST KEY CHANGED for [{fh.address}]:{fh.port}" in message
        assert "will not connect" in message
        assert f"ssh-keygen -R '[{fh.address}]:{fh.port}' -f {fleet.known_hosts}" in message
    assert fleet.known_hosts.read_text() == before
    assert fleet.accepted_logins() == 0


# --------------------------------------------------------------------------- per-host failures


def test_a_key_the_host_does_not_accept_is_an_authentication_error(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    host = fleet_hosts(ssh_fleet, tmp_path, host01={"ansible_ssh_private_key_file": str(stranger)})[0]

    with pytest.raises(ExecutorError) as caught:
        executor_for(ssh_fleet.known_hosts).connect(host)

    message = str(caught.value)
    assert message.startswith(f"host01: authentication failed for {ssh_fleet.user}@")
    assert str(stranger) in message
    assert "authorized_keys" in message


def test_a_missing_key_file_is_named(ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path, host01={"ansible_ssh_private_key_file": "/nonexistent/key"})[0]

    with pytest.raises(ExecutorError, match="ansible_ssh_private_key_file /nonexistent/key does not exist"):
        executor_for(ssh_fleet.known_hosts).connect(host)


def test_a_host_that_is_down_is_connection_refused(
    own_ssh_fleet: OwnFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    fleet = own_ssh_fleet(1)
    host = fleet_hosts(fleet, tmp_path)[0]
    fleet.kill_host(host.name)
    fh = fleet.hosts[0]

    with pytest.raises(ExecutorError) as caught:
        executor_for(fleet.known_hosts).execute(host, Shell("true"), timeout=5)

    assert (
        str(caught.value)
        == f"{host.name}: connection refused by {fh.address}:{fh.port}: is sshd running there?"
    )


def test_sshd_killed_mid_step_is_a_connection_lost_error(
    own_ssh_fleet: OwnFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    fleet = own_ssh_fleet(1)
    host = fleet_hosts(fleet, tmp_path)[0]
    executor = executor_for(fleet.known_hosts)

    def kill_when_started(stream: str, text: str) -> None:
        if "started" in text:
            fleet.kill_host(host.name)

    with pytest.raises(ExecutorError) as caught:
        executor.execute(host, Shell("echo started; sleep 30"), timeout=60, on_output=kill_when_started)

    assert "connection lost during the step" in str(caught.value)
    with pytest.raises(
        ExecutorError, match="connection refused"
    ):  # the next step reconnects, and says why not
        executor.execute(host, Shell("true"), timeout=5)


# --------------------------------------------------------------------------- timeouts and cancel


def test_a_timeout_kills_the_whole_process_group_on_the_host(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[2]
    executor = executor_for(ssh_fleet.known_hosts)
    marker = f"600.{uuid.uuid4().int % 10**9}"

    result = executor.execute(
        host, Shell(f"echo started; sleep {marker} & sleep {marker}; echo never"), timeout=1
    )

    assert result.timed_out and result.rc is None
    assert result.stdout == "started\n"  # the partial output is kept
    assert wait_until(lambda: not live_processes(f"sleep {marker}"), timeout=3), live_processes(
        f"sleep {marker}"
    )
    assert executor.execute(host, Shell("echo still usable"), timeout=5).stdout == "still usable\n"


def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[2]
    marker = f"601.{uuid.uuid4().int % 10**9}"

    result = executor_for(ssh_fleet.known_hosts).execute(
        host, Shell(f"trap '' TERM; echo started; sleep {marker}"), timeout=1
    )

    assert result.timed_out
    assert wait_until(lambda: not live_processes(f"sleep {marker}"), timeout=3), live_processes(
        f"sleep {marker}"
    )


def test_cancel_kills_the_command_on_the_host(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[3]
    marker = f"602.{uuid.uuid4().int % 10**9}"
    cancel = threading.Event()

    def cancel_when_started(stream: str, text: str) -> None:
        if "started" in text:
            cancel.set()

    result = executor_for(ssh_fleet.known_hosts).execute(
        host, Shell(f"echo started; sleep {marker}"), timeout=60, on_output=cancel_when_started, cancel=cancel
    )

    assert result.cancelled and result.rc is None
    assert result.stdout == "started\n"
    assert wait_until(lambda: not live_processes(f"sleep {marker}"), timeout=3)


def test_keys_held_by_ssh_agent_log_in(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        assert wait_until(socket_path.exists)
        env = os.environ | {"SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(ssh_fleet.user_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on: only the agent
        fh = ssh_fleet.hosts[4]
        host = Host(
            fh.name,
            "ssh",
            {"ansible_host": fh.address, "ansible_port": fh.port, "ansible_user": ssh_fleet.user},
        )

        result = executor_for(ssh_fleet.known_hosts).execute(host, Shell("echo via agent"), timeout=10)
    finally:
        agent.terminate()
        agent.wait()

    assert result.stdout == "via agent\n"


def kill_sshd_only(fleet: SshFleet, name: str) -> None:
    """Kill the host's sshd processes but not the sessions' commands: a connection lost, not a host."""
    master = fleet._live_pid(name)
    assert master is not None
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    tree, changed = {master}, True
    while changed:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        changed, tree = grown != tree, grown
    for pid in tree:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(pid, signal.SIGKILL)


def test_a_command_outlives_a_lost_connection_only_until_its_deadline(
    own_ssh_fleet: OwnFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    fleet = own_ssh_fleet(1)
    host = fleet_hosts(fleet, tmp_path)[0]
    marker = f"603.{uuid.uuid4().int % 10**9}"
    executor = executor_for(fleet.known_hosts)

    def drop_when_long_running(stream: str, text: str) -> None:
        if "still" in text:  # printed after GUARD_AFTER: by now the host's guard watches the command
            kill_sshd_only(fleet, host.name)

    with pytest.raises(ExecutorError, match="connection lost during the step"):
        executor.execute(
            host,
            Shell(f"echo started; sleep 2.5; echo still; sleep {marker}"),
            timeout=6,
            on_output=drop_when_long_running,
        )

    assert live_processes(f"sleep {marker}")  # sshd is gone; the command runs on, for now
    assert wait_until(lambda: not live_processes(f"sleep {marker}"), timeout=15)  # the guard ended it


# --------------------------------------------------------------------------- hosts that do not speak SSH


def not_ssh_host(server: NotSshd) -> Host:
    return Host(
        "odd", "ssh", {"ansible_host": server.address, "ansible_port": server.port, "ansible_user": "x"}
    )


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (Behaviour.SILENT, "odd: no SSH banner from 127.0.0.1:{port} within 2s: something accepts connections there but does not answer as an SSH server"),
        (Behaviour.CLOSE, "odd: 127.0.0.1:{port} closed the connection before the SSH banner: sshd refused it (MaxStartups, tcpwrappers, a firewall) or it is not sshd"),
        (Behaviour.GARBAGE, "odd: 127.0.0.1:{port} is not an SSH server: it answered 'HTTP/1.1 400 Bad Request' instead of an SSH banner"),
    ],
)  # fmt: skip
def test_a_host_that_does_not_speak_ssh_fails_with_one_clear_line_and_nothing_on_stderr(
    behaviour: Behaviour, expected: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    executor = SSHExecutor(ExecutionOptions(known_hosts=tmp_path / "known_hosts", connect_timeout=2))
    with NotSshd(behaviour) as server:
        with pytest.raises(ExecutorError) as caught:
            executor.connect(not_ssh_host(server))
        executor.close()

    assert str(caught.value) == expected.format(port=server.port)
    # paramiko's reader thread may log after connect() gave up: wait for it to end first
    assert wait_until(lambda: not [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)])
    captured = capfd.readouterr()
    assert captured.err == ""  # paramiko logged tracebacks here (logging's last-resort handler)


# --------------------------------------------------------------------------- secrets and stdin

SECRET_VALUE = 'p@ss w\'rd $(touch /tmp/cairn-owned) "quoted"\nsecond line'


def cmdlines_with(value: str) -> list[str]:
    """Every command line on this machine (the hosts are this machine) containing ``value`` or its first line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if value.encode() in cmdline or value.split("\n", maxsplit=1)[0].encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.parametrize("steps_before", [0, 1])  # the first step runs `exec bash -c`, later ones not
def test_a_secret_reaches_the_command_as_a_variable_and_no_command_line(
    steps_before: int, ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[11]
    executor = executor_for(ssh_fleet.known_hosts)
    for _ in range(steps_before):
        executor.execute(host, Shell("true"), timeout=10)
    sleeper = f"2.{uuid.uuid4().int % 10**9:09d}"
    seen: list[list[str]] = []

    def scan_when_running() -> None:
        assert wait_until(lambda: bool(live_processes(f"sleep {sleeper}")), timeout=20)
        seen.append(cmdlines_with(SECRET_VALUE))

    scanner = threading.Thread(target=scan_when_running)
    scanner.start()
    result = executor.execute(
        host,
        Shell(
            f'printf "%s" "$CAIRN_SECRET_TOKEN"; sleep {sleeper}', env={"CAIRN_SECRET_TOKEN": SECRET_VALUE}
        ),
        timeout=30,
    )
    scanner.join()

    assert result.rc == 0, result.stderr
    assert result.stdout == SECRET_VALUE
    assert seen == [[]]
    assert not Path("/tmp/cairn-owned").exists()


def test_stdin_is_at_end_of_file_as_locally(
    ssh_fleet: SshFleet, tmp_path: Path, executor_for: ExecutorFor
) -> None:
    # A command that reads stdin must not wait for input that never comes (it hung until its timeout).
    host = fleet_hosts(ssh_fleet, tmp_path)[11]
    executor = executor_for(ssh_fleet.known_hosts)

    for env in ({}, {"CAIRN_SECRET_TOKEN": "x"}):
        result = executor.execute(
            host, Shell("if read -r line; then echo got; else echo eof; fi", env=env), timeout=10
        )
        assert (result.rc, result.stdout, result.timed_out) == (0, "eof\n", False)


def test_output_beyond_the_limit_is_cut_with_a_marker(ssh_fleet: SshFleet, tmp_path: Path) -> None:
    host = fleet_hosts(ssh_fleet, tmp_path)[11]
    executor = SSHExecutor(ExecutionOptions(known_hosts=ssh_fleet.known_hosts, output_limit=1000))
    try:
        result = executor.execute(
            host, Shell("head -c 300000 /dev/zero | tr '\\0' x; echo done >&2"), timeout=30
        )
    finally:
        executor.close()

    assert (result.rc, result.stderr, result.truncated) == (0, "done\n", True)
    assert result.stdout.startswith("x" * 1000 + "\n[… stdout truncated: 1,000 bytes kept of 293 KiB")
