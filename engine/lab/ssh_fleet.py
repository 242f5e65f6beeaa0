"""A fleet of real OpenSSH servers on loopback, for tests, benchmarks and the practice lab.

The SSH executor, Ansible and paramiko have to meet the real protocol: host keys,
strict checking, a host that dies mid-step, a host whose key changed. Mocks cannot
show those, so each "host" here is a real ``sshd`` listening on its own loopback
address (Linux routes all of 127.0.0.0/8 to ``lo``): ``host01`` on 127.0.0.2,
``host02`` on 127.0.0.3, ... all on one port picked at random.

Every host has its own ``sshd`` process, host key, config, pid file and log, so
killing one host leaves the others serving. Each ``sshd`` runs in the foreground
(``-D``) as our child: we hold its pid from the start and reap it ourselves.

For hundreds of hosts, ``hosts_per_sshd=16`` gives each ``sshd`` up to 16 listen sockets (OpenSSH's
``MAX_LISTEN_SOCKS``): 500 hosts are 32 processes. Hosts sharing an sshd share its host key, log
and fate (``kill_host`` kills them all); ``known_hosts`` still has one line per host. Past
127.0.0.254 the addresses go on at 127.0.1.1, 127.0.1.2, ... (never .0 or .255): every host keeps
its own address, as in a real fleet, and the one port stays the same for all.

Two options serve the bastion tests and benchmark: ``forwarding=True`` lets the hosts forward
TCP (a bastion opens ``direct-tcpip`` channels to the hosts behind it), and ``netns=NAME`` starts
each sshd inside that network namespace (``ip netns exec``), where only what shares the
namespace, or a relay into it, can reach it.

As root, logins go to a plain user ``cairn-lab`` (created on first use), never to
root, whose shell start-up is slow here. Otherwise the current user logs in.

    python -m engine.lab.ssh_fleet up DIR --count N [--group NAME] [--hosts-per-sshd K]
    python -m engine.lab.ssh_fleet down DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import PIPE
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself for every connection
LAB_USER = "cairn-lab"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
STATE_FILE = "fleet.json"
MAX_LISTEN_SOCKS = 16
"""OpenSSH's limit on ListenAddress sockets per sshd (sshd.c)."""
ADDRESSES = 256 * 254
"""127.0.0.1 .. 127.0.255.254, without the .0 and .255 of each /24."""
PROG = "python -m engine.lab.ssh_fleet"
_POLL = 0.005


class FleetError(Exception):
    """The fleet could not be prepared, started or stopped; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FleetHost:
    """One host of the fleet: where to connect."""

    name: str
    address: str
    port: int


class SshFleet:
    """``sshd`` processes on loopback addresses sharing one port. Build it with :func:`make_fleet`.

    A *server* is one sshd, named after its first host; with ``hosts_per_sshd=1`` it is its host.
    """

    def __init__(
        self,
        root: Path,
        user: str,
        hosts: list[FleetHost],
        shared: Path,
        *,
        netns: str | None = None,
        forwarding: bool = False,
        hosts_per_sshd: int = 1,
    ) -> None:
        self.root = root
        self.user = user
        self.hosts = hosts
        self.hosts_per_sshd = hosts_per_sshd
        """How many hosts (listen sockets) one sshd serves."""
        self._servers = {
            group[0].name: group
            for group in (hosts[i : i + hosts_per_sshd] for i in range(0, len(hosts), hosts_per_sshd))
        }
        self._server_of = {h.name: server for server, group in self._servers.items() for h in group}
        self.netns = netns
        """The network namespace every sshd runs in (``None``: this process's own)."""
        self.forwarding = forwarding
        """Whether the hosts allow TCP forwarding (``direct-tcpip``): what a bastion needs."""
        self.user_key = root / "user_key"
        self.known_hosts = root / "known_hosts"
        # sshd reads authorized_keys as the login user, who cannot enter root/ (pytest's
        # tmp dirs are mode 700): it lives in this world-readable folder under /tmp.
        self._shared = shared
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pids: dict[str, int] = {}

    def _host(self, name: str) -> FleetHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise FleetError(f"no host {name!r} in this fleet ({self.hosts[0].name}..{self.hosts[-1].name})")

    def _server(self, name: str) -> str:
        """The server (sshd) that host ``name`` listens on."""
        return self._server_of[self._host(name).name]

    def _file(self, name: str, what: str) -> Path:
        return self.root / name / what

    def start(self) -> None:
        """Start every host's sshd (concurrently) and wait until each accepts connections."""
        began = time.monotonic()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation chroot
        self._write_authorized_keys()
        try:
            waiting = [server for server in self._servers if self._live_pid(server) is None]
            for server in waiting:
                self._launch(server)
            self._wait_ready(waiting)
        except BaseException:
            self.stop()
            raise
        log.info("ssh fleet: %d hosts up in %.2f s", len(self.hosts), time.monotonic() - began)

    def stop(self) -> None:
        """Kill every sshd of the fleet and all its session processes, reap them; idempotent."""
        self._kill(list(self._servers))
        shutil.rmtree(self._shared, ignore_errors=True)

    def kill_host(self, name: str) -> None:
        """SIGKILL that host's sshd and every live session under it: the host (and its sshd's others) dies."""
        self._kill([self._server(name)])

    def restart_host(self, name: str, *, new_host_key: bool = False) -> None:
        """Start that host's sshd again, optionally with a new host key; ``known_hosts`` is left as is."""
        server = self._server(name)
        self._kill([server])
        if new_host_key:
            _keygen([self._file(server, "host_key")])
        self._write_authorized_keys()
        try:
            self._launch(server)
            self._wait_ready([server])
        except BaseException:
            self._kill([server])
            raise

    def __enter__(self) -> SshFleet:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def host_public_key(self, name: str) -> str:
        """``ssh-ed25519 AAAA...`` of that host's current key (no comment)."""
        fields = self._file(self._server(name), "host_key.pub").read_text(encoding="utf-8").split()
        return " ".join(fields[:2])

    def accepted_logins(self, name: str | None = None) -> int:
        """Successful authentications seen by that host's sshd (all hosts if ``None``), restarts included."""
        if name is None:
            logs = [self._file(server, "sshd.log") for server in self._servers]
            return sum(_read(path).count("Accepted publickey for ") for path in logs)
        host = self._host(name)
        text = _read(self._file(self._server(name), "sshd.log"))
        return text.count("Accepted publickey for ") if self.hosts_per_sshd == 1 else _logins_on(text, host)

    def write_inventory(
        self, path: Path, *, group: str = "fleet", host_vars: dict[str, dict[str, Any]] | None = None
    ) -> Path:
        """Write an Ansible YAML inventory of the fleet (``all.children.<group>``); returns ``path``."""
        import yaml  # noqa: PLC0415 - only the inventory needs it; the module stays stdlib-only to import

        extra = host_vars or {}
        unknown = sorted(set(extra) - {h.name for h in self.hosts})
        if unknown:
            raise FleetError(f"host_vars names hosts not in the fleet: {', '.join(unknown)}")
        hosts: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            hosts[host.name] = {
                "ansible_host": host.address,
                "ansible_port": host.port,
                "ansible_user": self.user,
                "ansible_ssh_private_key_file": str(self.user_key.resolve()),
                "ansible_connection": "ssh",
                "ansible_python_interpreter": "/usr/bin/python3",
                **extra.get(host.name, {}),
            }
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"all": {"children": {group: {"hosts": hosts}}}}
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    def _write_authorized_keys(self) -> None:
        if not self._shared.is_dir():
            self._shared.mkdir(mode=0o755)  # fails if someone else made it: we never write into theirs
        self._shared.chmod(0o755)  # mkdtemp and the umask both say 700
        keys = self._shared / "authorized_keys"
        keys.write_text(self.user_key.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8")
        keys.chmod(0o644)

    def _config(self, server: str) -> str:
        settings = [
            *(f"ListenAddress {host.address}:{host.port}" for host in self._servers[server]),
            f"HostKey {self._file(server, 'host_key')}",
            f"PidFile {self._file(server, 'sshd.pid')}",
            f"AuthorizedKeysFile {self._shared / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "MaxStartups 200",  # benchmarks open many connections at once
            "MaxSessions 100",
            "UseDNS no",
            # INFO logs "Accepted publickey for ...": accepted_logins() counts them; VERBOSE adds the
            # address each connection came in on, which tells apart the hosts of one sshd.
            f"LogLevel {'INFO' if self.hosts_per_sshd == 1 else 'VERBOSE'}",
            f"AllowTcpForwarding {'yes' if self.forwarding else 'no'}",
            "X11Forwarding no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
        ]
        return "\n".join(settings) + "\n"

    def _launch(self, server: str) -> None:
        pid_file = self._file(server, "sshd.pid")
        pid_file.unlink(missing_ok=True)  # a stale one would look like readiness
        log_file = self._file(server, "sshd.log")
        argv = [SSHD, "-D", "-f", str(self._file(server, "sshd_config")), "-E", str(log_file)]
        if self.netns is not None:  # `ip netns exec` execs sshd: the pid stays the same
            argv = ["ip", "netns", "exec", self.netns, *argv]
        # stderr to the log too: whatever sshd says before -E takes effect is kept for the error.
        with log_file.open("ab") as sink:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
            )
        self._procs[server] = proc
        self._pids[server] = proc.pid
        log.debug("ssh fleet: %s sshd pid %d, %d host(s)", server, proc.pid, len(self._servers[server]))

    def _wait_ready(self, servers: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = [host for server in servers for host in self._servers[server]]
        while pending:
            for host in list(pending):
                server = self._server_of[host.name]
                proc = self._procs[server]
                if proc.poll() is not None:
                    self._fail(host, f"sshd exited with status {proc.returncode}")
                pid_file = self._file(server, "sshd.pid")
                if pid_file.exists() and self._accepts(host, proc.pid):
                    pending.remove(host)
            if pending and time.monotonic() > deadline:
                self._fail(pending[0], f"sshd not listening after {START_TIMEOUT:.0f} s")
            if pending:
                time.sleep(_POLL)

    def _accepts(self, host: FleetHost, pid: int) -> bool:
        if self.netns is None:
            return _connects(host.address, host.port)
        return _listening_in(pid, host.address, host.port)  # out of our reach: ask its namespace

    def _fail(self, host: FleetHost, why: str) -> None:
        log_file = self._file(self._server_of[host.name], "sshd.log")
        text = "\n".join(f"    {line}" for line in _read(log_file).splitlines()[-15:]) or "    (empty)"
        raise FleetError(f"{host.name} ({host.address}:{host.port}): {why}; end of {log_file}:\n{text}")

    def _live_pid(self, name: str) -> int | None:
        """The pid of that server's listening sshd if it still runs (checked against /proc, not trusted)."""
        pid = self._pids.get(name)
        if pid is None:
            try:
                pid = int(self._file(name, "sshd.pid").read_text(encoding="utf-8").strip())
            except (FileNotFoundError, ValueError):
                return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        config = str(self._file(name, "sshd_config")).encode()
        return pid if _alive(pid) and config in cmdline else None  # a recycled pid is not ours

    def _kill(self, names: list[str]) -> None:
        roots = {name: pid for name in names if (pid := self._live_pid(name)) is not None}
        victims = _kill_trees(roots.values())
        deadline = time.monotonic() + STOP_TIMEOUT
        for name in names:
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.kill()  # no-op if already dead; then reap it: it is our child
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            self._pids.pop(name, None)
            self._file(name, "sshd.pid").unlink(missing_ok=True)
        # Session processes were re-parented to init, which reaps them: wait until they are gone.
        while (left := [pid for pid in victims if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(_POLL)
        if left:
            raise FleetError(f"processes {left} of the fleet survived SIGKILL")


def _keygen(paths: list[Path]) -> None:
    """One ed25519 key (no passphrase) per path, generated concurrently."""
    jobs = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # ssh-keygen asks before overwriting
        path.with_suffix(".pub").unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)]
        jobs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=PIPE, stderr=subprocess.STDOUT))
    for job in jobs:
        output, _ = job.communicate()
        if job.returncode != 0:
            raise FleetError(f"ssh-keygen failed: {output.decode(errors='replace').strip()}")


def _logins_on(log_text: str, host: FleetHost) -> int:
    """Logins on ``host`` in a VERBOSE sshd log: each "Accepted ... from C port P" matched to the latest
    "Connection from C port P on ADDRESS port ..." of that client (concurrent sessions interleave)."""
    arrived_on: dict[tuple[str, str], str] = {}
    count = 0
    for line in log_text.splitlines():
        words = line.split()
        if "Connection from " in line and "on" in words:
            at = words.index("on")
            arrived_on[(words[at - 3], words[at - 1])] = words[at + 1]
        elif "Accepted publickey for " in line and "port" in words:
            at = words.index("port")
            count += arrived_on.get((words[at - 1], words[at + 1])) == host.address
    return count


def _address(number: int) -> str:
    """The ``number``-th usable loopback address: 1 is 127.0.0.1, 254 is 127.0.0.254, 255 is 127.0.1.1."""
    high, low = divmod(number - 1, 254)
    return f"127.0.{high}.{low + 1}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc/PID/stat, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]  # the command name may hold spaces and ')'
    return state, int(ppid)


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    return children


def _kill_trees(roots: Iterable[int]) -> list[int]:
    """SIGKILL each root and all its descendants; returns the pids killed.

    Everything is stopped (SIGSTOP) first, until a scan of /proc finds no new child:
    a stopped process cannot fork, and killing a parent first would re-parent its
    children to init, where a walk by ppid no longer finds them.
    """
    stopped: set[int] = set()
    todo = {pid for pid in roots if _alive(pid)}
    while todo:
        for pid in todo:
            _signal(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            (stat := _proc_stat(pid)) is not None and stat[0] not in ("T", "t", "Z", "X") for pid in todo
        ):
            time.sleep(_POLL / 5)
        stopped |= todo
        children = _children()
        todo = {child for pid in stopped for child in children.get(pid, ())} - stopped
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    return sorted(stopped)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listening_in(pid: int, address: str, port: int) -> bool:
    """Whether ``address:port`` listens (TCP, IPv4) in the network namespace of process ``pid``."""
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text(encoding="ascii")
    except OSError:
        return False
    # The kernel prints the address as the 32-bit value in host byte order, in hex.
    wanted = f"{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}:{port:04X}"
    listen = "0A"
    return any(
        fields[1] == wanted and fields[3] == listen
        for fields in (line.split() for line in table.splitlines()[1:])
        if len(fields) > 3
    )


def _free_port(addresses: list[str]) -> int:
    """A port free on every address (one port serves the whole fleet)."""
    for _ in range(100):
        port = 20000 + secrets.randbelow(40000)
        try:
            for address in addresses:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise FleetError(f"no port free on all of {addresses[0]}..{addresses[-1]} after 100 tries")


def _login_user() -> str:
    """As root: the plain ``cairn-lab`` user (created if missing). Otherwise: the current user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    if shutil.which("useradd") is None:
        raise FleetError(f"useradd not found: create a user {LAB_USER!r} or pass user=")
    try:
        pwd.getpwnam(LAB_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", LAB_USER], capture_output=True, check=False
        )
        try:
            pwd.getpwnam(LAB_USER)  # a concurrent run may have created it: that is fine too
        except KeyError:
            raise FleetError(f"cannot create user {LAB_USER}: {made.stderr.decode().strip()}") from None
    # useradd leaves the account locked ("!"), and sshd with UsePAM no refuses locked accounts.
    shadow = Path("/etc/shadow").read_text(encoding="utf-8").splitlines()
    if any(line.startswith(f"{LAB_USER}:!") for line in shadow):
        subprocess.run(["usermod", "-p", "*", LAB_USER], check=True, capture_output=True)
    return LAB_USER


def make_fleet(
    root: Path,
    count: int,
    *,
    first_address: int = 2,
    user: str | None = None,
    netns: str | None = None,
    forwarding: bool = False,
    hosts_per_sshd: int = 1,
) -> SshFleet:
    """Prepare (keys, configs, known_hosts) a fleet of ``count`` hosts from 127.0.0.<first_address>; not started.

    ``netns``: the sshds will run in that (existing) network namespace; ``forwarding``: they allow
    TCP forwarding, as a bastion must. The port is picked free in this process's namespace, so a
    relay can listen on the same address and port here. ``hosts_per_sshd`` (1-16): hosts served by
    one sshd; ``first_address + count`` past 254 goes on at 127.0.1.1.
    """
    if count < 1 or first_address < 1 or first_address + count - 1 > ADDRESSES:
        raise FleetError(
            f"{count} hosts from 127.0.0.{first_address} do not fit in 127.0.0.1-{_address(ADDRESSES)}"
        )
    if not 1 <= hosts_per_sshd <= MAX_LISTEN_SOCKS:
        raise FleetError(
            f"hosts_per_sshd={hosts_per_sshd}: give 1 to 16 hosts per sshd (OpenSSH's MAX_LISTEN_SOCKS)"
        )
    if not Path(SSHD).is_file():
        raise FleetError(f"{SSHD} not found: install it with `apt-get install openssh-server`")
    if shutil.which("ssh-keygen") is None:
        raise FleetError("ssh-keygen not found: install it with `apt-get install openssh-client`")
    root = root.resolve()
    if any(c.isspace() for c in str(root)):
        raise FleetError(f"{root}: sshd_config paths cannot hold whitespace; pick another folder")
    login = user or _login_user()
    addresses = [_address(first_address + i) for i in range(count)]
    port = _free_port(addresses)
    hosts = [FleetHost(f"host{i + 1:02d}", address, port) for i, address in enumerate(addresses)]
    # Under /tmp itself, never $TMPDIR: every parent must be traversable by the login user.
    shared = Path(tempfile.mkdtemp(prefix="cairn-fleet-", dir="/tmp"))
    fleet = SshFleet(
        root, login, hosts, shared, netns=netns, forwarding=forwarding, hosts_per_sshd=hosts_per_sshd
    )
    try:
        _keygen([fleet.user_key] + [fleet._file(server, "host_key") for server in fleet._servers])
        fleet._write_authorized_keys()
        for server in fleet._servers:
            fleet._file(server, "sshd_config").write_text(fleet._config(server), encoding="utf-8")
        # Exact "[address]:port type key" lines, as ssh-keyscan -p writes them: paramiko needs them so.
        lines = [f"[{h.address}]:{h.port} {fleet.host_public_key(h.name)}\n" for h in hosts]
        fleet.known_hosts.write_text("".join(lines), encoding="utf-8")
    except BaseException:
        shutil.rmtree(shared, ignore_errors=True)
        raise
    return fleet


# -- command line ----------------------------------------------------------------------------


def _save(fleet: SshFleet) -> None:
    state = {
        "user": fleet.user,
        "shared": str(fleet._shared),
        "hosts": [asdict(h) for h in fleet.hosts],
        "hosts_per_sshd": fleet.hosts_per_sshd,
        "pids": fleet._pids,
    }
    (fleet.root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _load(root: Path) -> SshFleet:
    try:
        state = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"no fleet in {root} (no {STATE_FILE})") from None
    hosts = [FleetHost(**h) for h in state["hosts"]]
    per_sshd = int(state.get("hosts_per_sshd", 1))  # absent in the state of an older fleet
    fleet = SshFleet(root, state["user"], hosts, Path(state["shared"]), hosts_per_sshd=per_sshd)
    fleet._pids = {str(name): int(pid) for name, pid in state["pids"].items()}
    return fleet


def _up(root: Path, count: int, group: str, first_address: int, user: str | None, per_sshd: int) -> None:
    if (root / STATE_FILE).exists():
        old = _load(root)
        if any(old._live_pid(h.name) for h in old.hosts):
            raise FleetError(f"a fleet is already up in {root}: run `{PROG} down {root}` first")
        old.stop()  # leftovers of a dead fleet (its /tmp folder)
    fleet = make_fleet(root, count, first_address=first_address, user=user, hosts_per_sshd=per_sshd)
    fleet.start()
    inventory = fleet.write_inventory(root / "inventory.yml", group=group)
    _save(fleet)
    first = fleet.hosts[0]
    processes = len(fleet._servers)
    print(
        f"{count} sshd hosts up ({processes} sshd processes), user {fleet.user}, port {first.port}, "
        f"state in {root / STATE_FILE}:"
    )
    for host in fleet.hosts:
        print(f"  {host.name}  {host.address}:{host.port}")
    checking = f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes"
    print(f"\nlog in:   ssh -i {fleet.user_key} {checking} -p {first.port} {fleet.user}@{first.address}")
    print(f"ansible:  ansible -i {inventory} {group} -m ping --ssh-common-args='{checking}'")
    print(f"stop:     {PROG} down {root}")


def main(argv: list[str] | None = None) -> int:
    """``up DIR --count N`` starts a fleet and leaves it running; ``down DIR`` stops it."""
    parser = argparse.ArgumentParser(prog=PROG, description="A fleet of real sshd hosts on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a fleet in DIR and leave it running")
    up.add_argument("dir", type=Path)
    up.add_argument("--count", type=int, default=3)
    up.add_argument("--group", default="fleet", help="inventory group (default: fleet)")
    up.add_argument("--first-address", type=int, default=2, help="last byte of host01's 127.0.0.x")
    up.add_argument("--user", help=f"login user (default: {LAB_USER} as root, else you)")
    up.add_argument(
        "--hosts-per-sshd", type=int, default=1, help="hosts (listen sockets) per sshd, 1-16 (default: 1)"
    )
    down = commands.add_parser("down", help="stop the fleet in DIR")
    down.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root: Path = args.dir.resolve()
    try:
        if args.command == "up":
            _up(root, args.count, args.group, args.first_address, args.user, args.hosts_per_sshd)
        else:
            _load(root).stop()
            (root / STATE_FILE).unlink()
            print(f"fleet in {root} stopped")
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
