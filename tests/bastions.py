"""Hosts reachable only through bastions, for the bastion tests: network namespaces, sshds, relays.

The site a test gets (:func:`bastion_site`)::

    this namespace (the test, Cairn)
      └─ relay 127.0.0.241:P1 ──▶ namespace A
                                   ├─ bastion jump-1  sshd 127.0.0.241:P1 (forwarding)
                                   ├─ behind-1..3     sshd 127.0.0.242-244
                                   └─ relay 127.0.0.245:P2 ──▶ namespace B
                                                                ├─ bastion jump-2  sshd 127.0.0.245:P2
                                                                └─ deep-1..2       sshd 127.0.0.246-247

Each relay pair (tests/netrelay.py) listens on the bastion's own address and port on the near
side, so the fleets' ``known_hosts`` lines are right from everywhere. From this namespace nothing
listens on a target's address and port: a direct connection is refused. jump-2 is reachable only
from namespace A, so only through jump-1.

The bastions log in with their own fleet's key (named in ``ssh_config`` under ``Host jump-1`` and
``Host jump-2``), the targets with theirs (``ansible_ssh_private_key_file``): as in real life,
the target's key is not the bastion's.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.lab.ssh_fleet import FleetError, FleetHost, SshFleet, make_fleet

RELAY = Path(__file__).resolve().parent / "netrelay.py"
READY_TIMEOUT = 15.0
SOCKET_PATH_MAX = 100
"""Unix socket paths are limited to 108 bytes; keep a margin."""


class Namespaces:
    """Network namespaces made for one test (``cairn-t-<hex>-<name>``), loopback up; deleted by :meth:`close`."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._tag = secrets.token_hex(3)

    def make(self, name: str) -> str:
        if shutil.which("ip") is None:
            pytest.fail("the bastion tests need `ip` (apt-get install iproute2)", pytrace=False)
        full = f"cairn-t-{self._tag}-{name}"
        made = subprocess.run(["ip", "netns", "add", full], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            pytest.fail(f"cannot create network namespace {full} (root needed): {made.stderr.strip()}")
        self.names.append(full)
        subprocess.run(["ip", "netns", "exec", full, "ip", "link", "set", "lo", "up"], check=True)
        return full

    def close(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        self.names.clear()


class Relays:
    """Relay processes (tests/netrelay.py), each started and waited for; killed by :meth:`close`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def bridge(self, host: FleetHost, *, near: str | None, far: str) -> None:
        """Make ``host`` (an sshd inside namespace ``far``) reachable at its own address and port in
        namespace ``near`` (``None``: the test's own)."""
        where = f"{host.address}:{host.port}"
        path = self.folder / f"relay-{host.address}-{host.port}.sock"
        if len(str(path)) > SOCKET_PATH_MAX:
            pytest.fail(f"{path} is too long for a Unix socket path", pytrace=False)
        self._start(f"{where} far", far, ["unix-to-tcp", str(path), host.address, str(host.port)])
        self._start(f"{where} near", near, ["tcp-to-unix", host.address, str(host.port), str(path)])

    def stop(self, name: str) -> None:
        """Kill one relay (``ADDRESS:PORT near`` or ``ADDRESS:PORT far``) and reap it."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes

    def _start(self, name: str, netns: str | None, args: list[str]) -> None:
        argv = [sys.executable, str(RELAY), *args]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"relay {name} did not start: {line!r} {err[-500:]}", pytrace=False)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@dataclass
class BastionSite:
    """The two namespaces, their fleets and relays, and the files a test hands to Cairn."""

    work: Path
    jump1: SshFleet
    behind: SshFleet
    jump2: SshFleet
    deep: SshFleet
    relays: Relays
    known_hosts: Path
    ssh_config: Path
    fleets: list[SshFleet] = field(default_factory=list)

    @property
    def jump1_host(self) -> FleetHost:
        return self.jump1.hosts[0]

    @property
    def jump2_host(self) -> FleetHost:
        return self.jump2.hosts[0]

    def spec(self, which: SshFleet) -> str:
        """``user@address:port`` of a bastion, as a ProxyJump spec names it without ssh_config."""
        host = which.hosts[0]
        return f"{which.user}@{host.address}:{host.port}"

    def inventory(self, name: str, hosts: dict[str, dict[str, Any]]) -> Path:
        """An Ansible YAML inventory (``all.children.sites``) of these hosts and their variables."""
        path = self.work / f"{name}.yml"
        path.write_text(yaml.safe_dump({"all": {"children": {"sites": {"hosts": hosts}}}}, sort_keys=False))
        return path

    def target_vars(self, fleet: SshFleet, index: int, **extra: Any) -> dict[str, Any]:
        """The inventory variables of one target: its address, port, user and key (no jump)."""
        host = fleet.hosts[index]
        return {
            "ansible_host": host.address,
            "ansible_port": host.port,
            "ansible_user": fleet.user,
            "ansible_ssh_private_key_file": str(fleet.user_key),
            **extra,
        }

    def write_known_hosts(self, *fleets: SshFleet) -> Path:
        """A known_hosts file holding only these fleets' host keys."""
        path = self.work / f"known_hosts-{secrets.token_hex(3)}"
        path.write_text("".join(f.known_hosts.read_text() for f in fleets))
        return path


def _fleet(work: Path, name: str, count: int, first: int, netns: str, *, forwarding: bool) -> SshFleet:
    try:
        fleet = make_fleet(work / name, count, first_address=first, netns=netns, forwarding=forwarding)
        fleet.start()
    except FleetError as exc:
        pytest.fail(f"{exc}\nthe bastion tests need a real sshd (.ci/run installs openssh-server)")
    return fleet


@contextlib.contextmanager
def bastion_site(work: Path) -> Iterator[BastionSite]:
    """Build the site of the module docstring under ``work``; everything is stopped and deleted after."""
    namespaces, relays, fleets = Namespaces(), Relays(work), []
    try:
        ns_a, ns_b = namespaces.make("a"), namespaces.make("b")
        jump1 = _fleet(work, "jump1", 1, 241, ns_a, forwarding=True)
        fleets.append(jump1)
        behind = _fleet(work, "behind", 3, 242, ns_a, forwarding=False)
        fleets.append(behind)
        jump2 = _fleet(work, "jump2", 1, 245, ns_b, forwarding=True)
        fleets.append(jump2)
        deep = _fleet(work, "deep", 2, 246, ns_b, forwarding=False)
        fleets.append(deep)
        relays.bridge(jump1.hosts[0], near=None, far=ns_a)
        relays.bridge(jump2.hosts[0], near=ns_a, far=ns_b)
        known_hosts = work / "known_hosts"
        known_hosts.write_text("".join(f.known_hosts.read_text() for f in fleets))
        ssh_config = work / "ssh_config"
        j1, j2 = jump1.hosts[0], jump2.hosts[0]
        ssh_config.write_text(
            f"Host jump-1\n  HostName {j1.address}\n  Port {j1.port}\n  User {jump1.user}\n"
            f"  IdentityFile {jump1.user_key}\n"
            f"Host jump-2\n  HostName {j2.address}\n  Port {j2.port}\n  User {jump2.user}\n"
            f"  IdentityFile {jump2.user_key}\n"
            # The bastions named by address (a ProxyJump spec user@address:port) log in with their key too.
            f"Host {j1.address}\n  IdentityFile {jump1.user_key}\n"
            f"Host {j2.address}\n  IdentityFile {jump2.user_key}\n"
        )
        yield BastionSite(work, jump1, behind, jump2, deep, relays, known_hosts, ssh_config, fleets)
    finally:
        relays.close()
        for fleet in reversed(fleets):
            fleet.stop()
        namespaces.close()


def established_to(port: int) -> int:
    """TCP connections established to ``port`` in this namespace (``ss``), as the client side sees them."""
    if shutil.which("ss") is None:
        pytest.fail("the bastion tests need `ss` (apt-get install iproute2)", pytrace=False)
    done = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(done.stdout.splitlines())
