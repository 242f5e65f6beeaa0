"""SSHExecutor through bastions (ProxyJump) to real sshd hosts that refuse direct connections.

The hosts live in network namespaces (tests/bastions.py): from here, only the first bastion is
reachable; a second bastion is reachable only from the first. Every host key is checked.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors.ssh import SSHExecutor
from engine.core.model import Host
from engine.lab.ssh_fleet import SshFleet
from tests.bastions import BastionSite, bastion_site, established_to
from tests.procs import processes_with, wait_until

pytestmark = [pytest.mark.ssh]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[BastionSite]:
    with bastion_site(tmp_path) as built:
        yield built


@pytest.fixture
def executors() -> Iterator[list[SSHExecutor]]:
    made: list[SSHExecutor] = []
    yield made
    for one in made:
        one.close()


def executor(
    made: list[SSHExecutor], known_hosts: Path, ssh_config: Path | None, **options: Any
) -> SSHExecutor:
    ex = SSHExecutor(ExecutionOptions(known_hosts=known_hosts, ssh_config=ssh_config, **options))
    made.append(ex)
    return ex


def target(site: BastionSite, fleet: SshFleet, index: int, name: str, **extra: Any) -> Host:
    return Host(name, "ssh", site.target_vars(fleet, index, **extra))


def where(result_stdout: str) -> list[str]:
    """``$SSH_CONNECTION``'s server address and port: the host the command ran on."""
    return result_stdout.split()[2:]


def refused_directly(fleet: SshFleet, index: int) -> bool:
    host = fleet.hosts[index]
    try:
        socket.create_connection((host.address, host.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


# --------------------------------------------------------------------------- reading the jump


def test_jump_specs_are_read_as_openssh_and_ansible_write_them(
    tmp_path: Path, executors: list[SSHExecutor]
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host bastion\n  HostName 192.0.2.7\n  Port 2222\n  User bob\n  IdentityFile /keys/bastion\n"
    )
    ex = executor(executors, tmp_path / "known_hosts", config)
    forms = {
        "-o ProxyJump=bastion": "bob@192.0.2.7:2222",
        "-oProxyJump=bastion": "bob@192.0.2.7:2222",
        "-o 'ProxyJump bastion'": "bob@192.0.2.7:2222",
        "-J bastion": "bob@192.0.2.7:2222",
        "-Jbastion": "bob@192.0.2.7:2222",
        "-J carol@bastion": "carol@192.0.2.7:2222",  # the spec's user and port win over ssh_config's
        "-J ssh://carol@bastion:2200": "carol@192.0.2.7:2200",
        "-J dave@198.51.100.1:22": "dave@198.51.100.1:22",
    }
    for args, first in forms.items():
        host = Host(
            "web-1",
            "ssh",
            {"ansible_host": "10.0.0.5", "ansible_user": "alice", "ansible_ssh_common_args": args},
        )
        ep = ex.endpoint(host)
        assert [str(h) for h in ep.jumps] == [first], args
        assert (ep.address, ep.port, ep.user) == ("10.0.0.5", 22, "alice")
    described = ex.describe(
        Host(
            "web-1",
            "ssh",
            {"ansible_host": "10.0.0.5", "ansible_user": "alice", "ansible_ssh_common_args": "-J bastion"},
        )
    )
    assert described.startswith("ssh alice@10.0.0.5:22 via ProxyJump bastion (bob@192.0.2.7:2222), key ")
    by_address = Host(
        "web-1",
        "ssh",
        {
            "ansible_host": "10.0.0.5",
            "ansible_user": "alice",
            "ansible_ssh_extra_args": "-J bob@bastion.example.com:2222",
        },
    )
    assert ex.describe(by_address).startswith(
        "ssh alice@10.0.0.5:22 via ProxyJump bob@bastion.example.com:2222, key "
    )
    hop = ex.endpoint(Host("web-1", "ssh", {"ansible_ssh_common_args": "-J bastion"})).jumps[0]
    assert hop.key_files == ("/keys/bastion",)  # the hop's own ssh_config block


def test_several_hops_are_taken_first_hop_first(tmp_path: Path, executors: list[SSHExecutor]) -> None:
    ex = executor(executors, tmp_path / "known_hosts", None)
    host = Host(
        "db",
        "ssh",
        {"ansible_user": "alice", "ansible_ssh_common_args": "-J a@one:2201,ssh://b@two,c@three:2203"},
    )

    ep = ex.endpoint(host)

    assert [str(h) for h in ep.jumps] == ["a@one:2201", "b@two:22", "c@three:2203"]
    assert [len(h.jumps) for h in ep.jumps] == [0, 1, 2]  # each hop is reached through the ones before it
    assert "via ProxyJump a@one:2201, b@two:22, c@three:2203" in ex.describe(host)


def test_the_inventory_wins_over_ssh_config_and_none_means_no_jump(
    tmp_path: Path, executors: list[SSHExecutor]
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host web-*\n  ProxyJump cfg@config-bastion\nHost db\n  ProxyJump none\n")
    ex = executor(executors, tmp_path / "known_hosts", config)

    assert [str(h) for h in ex.endpoint(Host("web-1", "ssh", {"ansible_user": "u"})).jumps] == [
        "cfg@config-bastion:22"
    ]
    overridden = Host("web-1", "ssh", {"ansible_ssh_common_args": "-o ProxyJump=inv@inventory-bastion"})
    assert [str(h) for h in ex.endpoint(overridden).jumps] == ["inv@inventory-bastion:22"]
    assert ex.endpoint(Host("web-1", "ssh", {"ansible_ssh_common_args": "-o ProxyJump=none"})).jumps == ()
    assert ex.endpoint(Host("db", "ssh", {})).jumps == ()
    proxied = ex.endpoint(Host("web-1", "ssh", {"ansible_ssh_extra_args": "-o 'ProxyCommand=nc %h %p'"}))
    assert proxied.jumps == () and proxied.proxy_command == "nc %h %p"


def test_other_ssh_args_are_ignored_and_said_so(tmp_path: Path, executors: list[SSHExecutor]) -> None:
    ex = executor(executors, tmp_path / "known_hosts", None)
    host = Host(
        "web-1",
        "ssh",
        {
            "ansible_user": "alice",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -J bob@bastion -C",
            "ansible_ssh_extra_args": "-o ServerAliveInterval=5",
        },
    )

    described = ex.describe(host)

    assert "via ProxyJump bob@bastion:22" in described
    assert (
        "ignored (Cairn reads only ProxyJump, -J and ProxyCommand there): "
        "ansible_ssh_common_args -o StrictHostKeyChecking=no, -C; ansible_ssh_extra_args -o ServerAliveInterval=5"
    ) in described
    assert "(strict)" in described  # StrictHostKeyChecking=no there does not turn checking off


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ("-J 'bob@bastion", "ansible_ssh_common_args cannot be read as ssh arguments (No closing quotation)"),
        ("-J", "ansible_ssh_common_args: -J needs a value"),
        ("-o ProxyJump=", "ProxyJump '' in ansible_ssh_common_args: an empty hop"),
        (
            "-J bob@bastion:http",
            "ProxyJump 'bob@bastion:http' in ansible_ssh_common_args: 'http' is not a port number",
        ),
        ("-J a,,b", "ProxyJump 'a,,b' in ansible_ssh_common_args: an empty hop"),
    ],
)
def test_a_jump_that_cannot_be_read_is_one_line_naming_it(
    tmp_path: Path, executors: list[SSHExecutor], args: str, said: str
) -> None:
    ex = executor(executors, tmp_path / "known_hosts", None)
    host = Host("web-1", "ssh", {"ansible_ssh_common_args": args})

    with pytest.raises(ExecutorError) as caught:
        ex.endpoint(host)

    assert str(caught.value) == f"web-1: {said}"
    assert ex.describe(host) == f"ssh: cannot: web-1: {said}"


# --------------------------------------------------------------------------- through real bastions


def test_ssh_config_proxy_jump_reaches_a_host_that_refuses_direct_connections(
    site: BastionSite, tmp_path: Path, executors: list[SSHExecutor]
) -> None:
    behind = site.behind.hosts[0]
    config = tmp_path / "ssh_config-web"
    config.write_text(
        f"Host web-1\n  HostName {behind.address}\n  Port {behind.port}\n"
        f"Host web-*\n  ProxyJump jump-1\n" + site.ssh_config.read_text()
    )
    ex = executor(executors, site.known_hosts, config)
    host = Host(
        "web-1",
        "ssh",
        {"ansible_user": site.behind.user, "ansible_ssh_private_key_file": str(site.behind.user_key)},
    )

    assert refused_directly(site.behind, 0)
    result = ex.execute(host, Shell("echo $SSH_CONNECTION"), timeout=20)

    assert result.rc == 0, result.stderr
    assert where(result.stdout) == [behind.address, str(behind.port)]
    assert site.jump1.accepted_logins() == 1


@pytest.mark.parametrize("args", ["-o ProxyJump={spec}", "-J {spec}", "-J jump-1"])
def test_inventory_ssh_common_args_jump_through_the_bastion(
    site: BastionSite, executors: list[SSHExecutor], args: str
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    host = target(
        site, site.behind, 1, "web-2", ansible_ssh_common_args=args.format(spec=site.spec(site.jump1))
    )

    assert refused_directly(site.behind, 1)
    result = ex.execute(host, Shell("echo $SSH_CONNECTION"), timeout=20)

    assert result.rc == 0, result.stderr
    assert where(result.stdout) == [site.behind.hosts[1].address, str(site.behind.hosts[1].port)]


def test_inventory_proxy_command_reaches_the_host_through_it(
    site: BastionSite, tmp_path: Path, executors: list[SSHExecutor]
) -> None:
    config = tmp_path / "ssh_config-openssh"  # for OpenSSH's own ssh, run as the ProxyCommand
    config.write_text(
        site.ssh_config.read_text()
        + f"Host *\n  UserKnownHostsFile {site.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
    )
    ex = executor(executors, site.known_hosts, site.ssh_config)
    command = f"ssh -F {config} -W %h:%p jump-1"
    host = target(site, site.behind, 0, "web-1", ansible_ssh_common_args=f"-o 'ProxyCommand={command}'")

    assert ex.describe(host).startswith(f"ssh {site.behind.user}@{site.behind.hosts[0].address}:")
    assert f" via ProxyCommand {command!r}, key " in ex.describe(host)
    result = ex.execute(host, Shell("echo $SSH_CONNECTION"), timeout=20)

    assert result.rc == 0, result.stderr
    assert where(result.stdout) == [site.behind.hosts[0].address, str(site.behind.hosts[0].port)]


def test_two_hops_reach_a_host_only_the_second_bastion_can_reach(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    host = target(site, site.deep, 0, "deep-1", ansible_ssh_common_args="-J jump-1,jump-2")
    alone = target(site, site.jump2, 0, "jump-2-direct")  # the second bastion itself, from here

    with pytest.raises(ExecutorError, match="connection refused"):
        ex.connect(alone)
    result = ex.execute(host, Shell("echo $SSH_CONNECTION"), timeout=20)

    assert result.rc == 0, result.stderr
    assert where(result.stdout) == [site.deep.hosts[0].address, str(site.deep.hosts[0].port)]
    assert (site.jump1.accepted_logins(), site.jump2.accepted_logins()) == (1, 1)


def test_one_connection_to_the_bastion_is_shared_by_every_host_behind_it(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    hosts = [
        target(site, site.behind, i, f"web-{i + 1}", ansible_ssh_common_args="-J jump-1") for i in range(3)
    ]
    results: dict[str, str] = {}

    def run(host: Host) -> None:
        try:
            for _ in range(2):
                results[host.name] = ex.execute(host, Shell("echo ok"), timeout=20).stdout
        except ExecutorError as exc:
            results[host.name] = str(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == {h.name: "ok\n" for h in hosts}
    assert site.jump1.accepted_logins() == 1  # one login on the bastion for three hosts
    assert site.behind.accepted_logins() == 3
    assert established_to(site.jump1_host.port) == 1  # and one TCP connection to it from here
    ex.close()
    assert wait_until(lambda: established_to(site.jump1_host.port) == 0)


def test_a_step_through_the_bastion_that_times_out_is_killed_on_the_host(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    host = target(site, site.behind, 2, "web-3", ansible_ssh_common_args="-J jump-1")
    marker = f"603.{uuid.uuid4().int % 10**9}"

    result = ex.execute(host, Shell(f"echo started; sleep {marker} & sleep {marker}; echo never"), timeout=2)

    assert result.timed_out and result.rc is None
    assert result.stdout == "started\n"
    assert wait_until(lambda: not processes_with(f"sleep {marker}"), timeout=5), processes_with(
        f"sleep {marker}"
    )
    assert ex.execute(host, Shell("echo still usable"), timeout=10).stdout == "still usable\n"


# --------------------------------------------------------------------------- when a bastion fails


def test_an_unknown_bastion_key_is_refused_naming_the_bastion(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    known = site.write_known_hosts(site.behind)  # the targets' keys, not the bastion's
    ex = executor(executors, known, site.ssh_config)
    host = target(site, site.behind, 0, "web-1", ansible_ssh_common_args="-J jump-1")
    j1 = site.jump1_host

    with pytest.raises(ExecutorError) as caught:
        ex.connect(host)

    message = str(caught.value)
    assert message.startswith(
        f"web-1: cannot reach web-1 through bastion jump-1 ({site.jump1.user}@{j1.address}:{j1.port}): "
        f"host key of [{j1.address}]:{j1.port} is not in {known} (it offers ssh-ed25519 SHA256:"
    ), message
    assert f"`ssh-keyscan -p {j1.port} {j1.address} >> {known}`" in message
    assert known.read_text() == site.behind.known_hosts.read_text()  # nothing recorded
    assert site.behind.accepted_logins() == 0


def test_a_changed_bastion_key_is_refused_and_nothing_runs_behind_it(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    site.jump1.restart_host(site.jump1_host.name, new_host_key=True)
    j1 = site.jump1_host
    hosts = [
        target(site, site.behind, i, f"web-{i + 1}", ansible_ssh_common_args="-J jump-1") for i in range(2)
    ]

    for accept_new in (False, True):
        ex = executor(executors, site.known_hosts, site.ssh_config, accept_new_host_keys=accept_new)
        for host in hosts:
            with pytest.raises(ExecutorError) as caught:
                ex.execute(host, Shell("touch /tmp/should-not-exist"), timeout=10)
            message = str(caught.value)
            assert message.startswith(
                f"{host.name}: cannot reach {host.name} through bastion jump-1 "
                f"({site.jump1.user}@{j1.address}:{j1.port}): HOST KEY CHANGED for [{j1.address}]:{j1.port}"
            ), message
            assert "will not connect" in message
    assert site.behind.accepted_logins() == 0
    assert site.jump1.accepted_logins() == 0


def test_an_unknown_target_key_behind_a_bastion_says_how_to_scan_it_through_the_bastion(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    known = site.write_known_hosts(site.jump1)
    ex = executor(executors, known, site.ssh_config)
    host = target(site, site.behind, 0, "web-1", ansible_ssh_common_args="-J jump-1")
    b, j1 = site.behind.hosts[0], site.jump1_host

    with pytest.raises(ExecutorError) as caught:
        ex.connect(host)

    message = str(caught.value)
    assert message.startswith(f"web-1: host key of [{b.address}]:{b.port} is not in {known}"), message
    # ssh-keyscan cannot go through a bastion: the line runs it on the bastion.
    assert (
        f"`ssh -p {j1.port} {site.jump1.user}@jump-1 ssh-keyscan -p {b.port} {b.address} >> {known}`"
        in message
    )


def test_a_key_the_bastion_refuses_is_an_authentication_error_naming_the_bastion(
    site: BastionSite, tmp_path: Path, executors: list[SSHExecutor]
) -> None:
    j1 = site.jump1_host
    config = tmp_path / "ssh_config-wrong-key"
    config.write_text(  # the targets' key, which the bastion does not accept
        f"Host jump-1\n  HostName {j1.address}\n  Port {j1.port}\n  User {site.jump1.user}\n"
        f"  IdentityFile {site.behind.user_key}\n"
    )
    ex = executor(executors, site.known_hosts, config)
    host = target(site, site.behind, 0, "web-1", ansible_ssh_common_args="-J jump-1")

    with pytest.raises(ExecutorError) as caught:
        ex.connect(host)

    message = str(caught.value)
    assert message.startswith(
        f"web-1: cannot reach web-1 through bastion jump-1 ({site.jump1.user}@{j1.address}:{j1.port}): "
        f"authentication failed for {site.jump1.user}@{j1.address}:{j1.port} with key {site.behind.user_key}"
    ), message
    assert site.behind.accepted_logins() == 0


def test_a_bastion_that_is_down_fails_every_host_behind_it_naming_the_bastion_once_per_run(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    j1 = site.jump1_host
    site.relays.stop(f"{j1.address}:{j1.port} near")  # nothing listens on the bastion's address here now
    ex = executor(executors, site.known_hosts, site.ssh_config)
    hosts = [
        target(site, site.behind, i, f"web-{i + 1}", ansible_ssh_common_args="-J jump-1") for i in range(3)
    ]

    for host in hosts:
        with pytest.raises(ExecutorError) as caught:
            ex.execute(host, Shell("true"), timeout=10)
        assert str(caught.value) == (
            f"{host.name}: cannot reach {host.name} through bastion jump-1 ({site.jump1.user}@{j1.address}:{j1.port}): "
            f"connection refused by {j1.address}:{j1.port}: is sshd running there?"
        )

    site.relays.stop(f"{j1.address}:{j1.port} far")
    assert site.jump1.netns is not None
    site.relays.bridge(j1, near=None, far=site.jump1.netns)  # the bastion is back
    with pytest.raises(ExecutorError, match=r"through bastion jump-1 .*connection refused"):
        ex.connect(hosts[0])  # remembered for the run: the bastion is not tried again
    fresh = executor(executors, site.known_hosts, site.ssh_config)  # the next run tries it again
    assert fresh.execute(hosts[0], Shell("echo back"), timeout=20).stdout == "back\n"


def test_a_bastion_that_cannot_reach_the_target_says_so(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    nowhere = Host(
        "ghost",
        "ssh",
        site.target_vars(site.behind, 0, ansible_host="127.0.0.250", ansible_ssh_common_args="-J jump-1"),
    )
    port = site.behind.hosts[0].port

    with pytest.raises(ExecutorError) as caught:
        ex.connect(nowhere)

    assert str(caught.value) == (
        f"ghost: bastion jump-1 could not open a connection to 127.0.0.250:{port} "
        "(ChannelException 2: Connect failed)"
    )


def test_a_dropped_bastion_drops_the_step_and_the_next_step_reconnects_through_it(
    site: BastionSite, executors: list[SSHExecutor]
) -> None:
    ex = executor(executors, site.known_hosts, site.ssh_config)
    host = target(site, site.behind, 0, "web-1", ansible_ssh_common_args="-J jump-1")

    def kill_bastion_when_started(stream: str, text: str) -> None:
        if "started" in text:
            site.jump1.kill_host(site.jump1_host.name)

    with pytest.raises(ExecutorError, match="connection lost during the step"):
        ex.execute(host, Shell("echo started; sleep 30"), timeout=60, on_output=kill_bastion_when_started)
    site.jump1.restart_host(site.jump1_host.name)

    assert ex.execute(host, Shell("echo again"), timeout=20).stdout == "again\n"
    assert site.jump1.accepted_logins() == 2  # through the bastion again, on a new connection
