"""The loopback SSH fleet, checked with the real OpenSSH client, paramiko and ansible-core."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.lab import ssh_fleet as lab
from engine.lab.ssh_fleet import FleetError, FleetHost, SshFleet, make_fleet
from tests.conftest import OwnFleet, alive

pytestmark = pytest.mark.ssh

PROBE = "echo $USER $SSH_CONNECTION; hostname -I 2>/dev/null || true"


def ssh_argv(fleet: SshFleet, host: FleetHost, command: str, *, key: Path | None = None) -> list[str]:
    return [
        "/usr/bin/ssh",
        "-i",
        str(key or fleet.user_key),
        "-o",
        f"UserKnownHostsFile={fleet.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        # The default sntrup761 key exchange costs ~0.1 s of client CPU here; the fleet is not what is slow.
        "-o",
        "KexAlgorithms=curve25519-sha256",
        "-F",
        "/dev/null",
        "-p",
        str(host.port),
        f"{fleet.user}@{host.address}",
        command,
    ]


def ssh(
    fleet: SshFleet, name: str, command: str = PROBE, *, key: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = ssh_argv(fleet, fleet._host(name), command, key=key)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
    )


def answers_as(
    fleet: SshFleet, host: FleetHost, done: subprocess.CompletedProcess[str] | tuple[int, str]
) -> None:
    rc, out = (done.returncode, done.stdout) if isinstance(done, subprocess.CompletedProcess) else done
    assert rc == 0, out
    user, _client, _client_port, server, server_port = out.splitlines()[0].split()
    assert (user, server, int(server_port)) == (fleet.user, host.address, host.port)


def process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree = {root}
    while grown := {pid for pid, ppid in parents.items() if ppid in tree} - tree:
        tree |= grown
    return tree


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout} s: {what}")
        time.sleep(0.01)


def open_session(fleet: SshFleet, name: str) -> tuple[subprocess.Popen[str], int]:
    """A live session on that host; returns the client and the pid of the remote command (a sleep)."""
    argv = ssh_argv(fleet, fleet._host(name), "echo $$; exec sleep 3600")
    client = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert client.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(client.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=20):
            client.kill()
            pytest.fail(f"no session on {name} after 20 s")
    return client, int(client.stdout.readline())


def listener_pid(fleet: SshFleet, name: str) -> int:
    return int((fleet.root / name / "sshd.pid").read_text())


def refuses(host: FleetHost) -> bool:
    try:
        socket.create_connection((host.address, host.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_every_host_answers_with_strict_host_key_checking(ssh_fleet: SshFleet) -> None:
    assert [(h.name, h.address) for h in ssh_fleet.hosts][:2] == [
        ("host01", "127.0.0.2"),
        ("host02", "127.0.0.3"),
    ]
    assert ssh_fleet.hosts[-1] == FleetHost("host20", "127.0.0.21", ssh_fleet.hosts[0].port)
    clients = [
        subprocess.Popen(
            ssh_argv(ssh_fleet, host, PROBE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for host in ssh_fleet.hosts
    ]
    for host, client in zip(ssh_fleet.hosts, clients, strict=True):
        out, _ = client.communicate(timeout=60)
        answers_as(ssh_fleet, host, (client.returncode, out))


def test_known_hosts_holds_what_ssh_keyscan_sees(ssh_fleet: SshFleet) -> None:
    lines = ssh_fleet.known_hosts.read_text().splitlines()
    assert lines == [f"[{h.address}]:{h.port} {ssh_fleet.host_public_key(h.name)}" for h in ssh_fleet.hosts]
    for host in (ssh_fleet.hosts[0], ssh_fleet.hosts[-1]):
        scan = subprocess.run(
            ["ssh-keyscan", "-t", "ed25519", "-p", str(host.port), host.address],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert scan.stdout.strip() in lines


def test_accepted_logins_counts_successful_logins_only(ssh_fleet: SshFleet, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    before, total = ssh_fleet.accepted_logins("host05"), ssh_fleet.accepted_logins()
    answers_as(ssh_fleet, ssh_fleet.hosts[4], ssh(ssh_fleet, "host05"))
    answers_as(ssh_fleet, ssh_fleet.hosts[4], ssh(ssh_fleet, "host05"))
    refused = ssh(ssh_fleet, "host05", key=stranger)
    assert refused.returncode == 255
    assert "Permission denied (publickey)" in refused.stderr
    assert ssh_fleet.accepted_logins("host05") == before + 2
    assert ssh_fleet.accepted_logins() == total + 2


def test_paramiko_connects_with_the_fleet_known_hosts(ssh_fleet: SshFleet) -> None:
    import paramiko

    host = ssh_fleet.hosts[2]
    client = paramiko.SSHClient()
    client.load_host_keys(str(ssh_fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=host.port,
            username=ssh_fleet.user,
            key_filename=str(ssh_fleet.user_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=20,
        )
        _stdin, stdout, _stderr = client.exec_command("echo $USER")
        assert stdout.read().decode().strip() == ssh_fleet.user
    finally:
        client.close()


@pytest.mark.inventory
def test_write_inventory_is_read_by_ansible(ssh_fleet: SshFleet, tmp_path: Path) -> None:
    from engine.core.inventory import load_inventory

    path = ssh_fleet.write_inventory(
        tmp_path / "inv" / "fleet.yml",
        group="web",
        host_vars={"host03": {"role": "db", "ansible_port": 2200}},
    )
    hosts = load_inventory([str(path)]).hosts("web")
    assert [h.name for h in hosts] == [h.name for h in ssh_fleet.hosts]
    for host, target in zip(hosts, ssh_fleet.hosts, strict=True):
        assert host.connection == "ssh"
        assert host.vars["ansible_host"] == target.address
        assert host.vars["ansible_port"] == (2200 if target.name == "host03" else target.port)
        assert host.vars["ansible_user"] == ssh_fleet.user
        key = Path(host.vars["ansible_ssh_private_key_file"])
        assert key.is_absolute()
        assert key.read_text() == ssh_fleet.user_key.read_text()
        assert host.vars["ansible_python_interpreter"] == "/usr/bin/python3"
        assert host.vars.get("role") == ("db" if target.name == "host03" else None)
    with pytest.raises(FleetError, match="host99"):
        ssh_fleet.write_inventory(tmp_path / "bad.yml", host_vars={"host99": {}})


def test_kill_host_ends_its_sessions_and_leaves_the_others_up(own_ssh_fleet: OwnFleet) -> None:
    fleet = own_ssh_fleet(3)
    client, remote = open_session(fleet, "host02")
    assert alive(remote)
    fleet.kill_host("host02")
    client.communicate(timeout=10)
    assert client.returncode == 255  # the session died with its host
    wait_until(lambda: not alive(remote), "the session's command is killed")
    host02 = fleet.hosts[1]
    assert refuses(host02)
    down = ssh(fleet, "host02")
    assert down.returncode == 255
    assert "Connection refused" in down.stderr
    answers_as(fleet, fleet.hosts[0], ssh(fleet, "host01"))
    answers_as(fleet, fleet.hosts[2], ssh(fleet, "host03"))
    fleet.kill_host("host02")  # already dead: nothing to do
    fleet.restart_host("host02")
    answers_as(fleet, host02, ssh(fleet, "host02"))  # same host key: strict checking still passes


def test_restart_with_a_new_host_key_is_refused_by_strict_ssh(own_ssh_fleet: OwnFleet) -> None:
    fleet = own_ssh_fleet(2)
    old_key, known = fleet.host_public_key("host01"), fleet.known_hosts.read_text()
    fleet.restart_host("host01", new_host_key=True)
    assert fleet.host_public_key("host01") != old_key
    assert fleet.host_public_key("host01").startswith("ssh-ed25519 AAAA")
    assert fleet.known_hosts.read_text() == known
    changed = ssh(fleet, "host01")
    assert changed.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr
    answers_as(fleet, fleet.hosts[1], ssh(fleet, "host02"))


def test_stop_leaves_no_process_of_the_fleet(own_ssh_fleet: OwnFleet) -> None:
    fleet = own_ssh_fleet(2)
    client, remote = open_session(fleet, "host01")
    processes = set().union(*(process_tree(listener_pid(fleet, h.name)) for h in fleet.hosts))
    assert remote in processes
    assert len(processes) >= 5  # 2 listeners, the session's monitor, its unprivileged child, the command
    shared = Path(
        next(
            line.split(None, 1)[1]
            for line in (fleet.root / "host01" / "sshd_config").read_text().splitlines()
            if line.startswith("AuthorizedKeysFile")
        )
    ).parent
    assert shared.is_dir()
    fleet.stop()
    client.communicate(timeout=10)
    assert client.returncode == 255
    wait_until(lambda: not any(alive(pid) for pid in processes), "every process of the fleet is gone")
    assert not any(
        str(fleet.root).encode() in cmdline.read_bytes()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline")
        if cmdline.exists() and alive(int(cmdline.parent.name))
    )
    assert not shared.exists()
    assert all(refuses(host) for host in fleet.hosts)
    fleet.stop()  # idempotent


def test_start_fails_with_the_sshd_log_when_the_port_is_taken(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet", 2, first_address=120)
    squatter = socket.create_server((fleet.hosts[1].address, fleet.hosts[1].port))
    try:
        with pytest.raises(FleetError, match="host02") as failure:
            fleet.start()
        assert "Address already in use" in str(failure.value)
        assert refuses(fleet.hosts[0])  # the host that did start was stopped again
    finally:
        squatter.close()
        fleet.stop()


def test_missing_sshd_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "SSHD", str(tmp_path / "no-sshd"))
    with pytest.raises(FleetError, match="apt-get install openssh-server"):
        make_fleet(tmp_path / "fleet", 1)


def test_command_line_up_and_down(tmp_path: Path) -> None:
    folder = tmp_path / "lab"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "engine.lab.ssh_fleet", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    up = cli("up", str(folder), "--count", "2", "--first-address", "130", "--group", "lab")
    assert up.returncode == 0, up.stderr
    state = json.loads((folder / "fleet.json").read_text())
    fleet = lab._load(folder)
    try:
        assert (folder / "inventory.yml").is_file()
        assert f"-p {fleet.hosts[0].port} {fleet.user}@127.0.0.130" in up.stdout
        assert f"UserKnownHostsFile={folder / 'known_hosts'}" in up.stdout
        answers_as(fleet, fleet.hosts[1], ssh(fleet, "host02"))
        again = cli("up", str(folder), "--count", "2", "--first-address", "130")
        assert again.returncode == 1
        assert "already up" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        down = cli("down", str(folder))
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not any(alive(pid) for pid in state["pids"].values()), "the CLI's sshds are gone")
    assert all(refuses(host) for host in fleet.hosts)
    gone = cli("down", str(folder))
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: no fleet in")
