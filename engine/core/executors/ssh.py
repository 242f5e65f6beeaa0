"""Run commands over SSH with paramiko: one pooled connection per host, host keys verified.

* **One connection per host**, opened once (by :meth:`SSHExecutor.connect`, or the
  first step) and reused by every step of the run; each step is a new channel
  on it. The socket has ``TCP_NODELAY`` set: without it paramiko stalls on
  Nagle/delayed-ACK and a reused command costs ~48 ms instead of ~5 ms.
* **Where and as whom** follows ``ansible``: the inventory's ``ansible_host``,
  ``ansible_port``, ``ansible_user`` and ``ansible_ssh_private_key_file`` win;
  what they leave out comes from ``~/.ssh/config`` (HostName, Port, User,
  IdentityFile, ProxyCommand, ConnectTimeout, UserKnownHostsFile,
  StrictHostKeyChecking); keys from ssh-agent are offered too.
* **Host keys are verified** against known_hosts (the file given by the
  ``--known-hosts`` option, else ssh_config's UserKnownHostsFile, else
  ``~/.ssh/known_hosts``; ``/etc/ssh/ssh_known_hosts`` is read as well). An
  unknown host is refused with the fingerprint and how to trust it; with the
  ``accept-new`` opt-in its key is recorded; a changed key is always refused.
* **A timeout ends the command on the host.** The command runs in the login
  shell's process group (sshd starts every session with ``setsid``), whose id
  the wrapper reports on stderr before anything else. On timeout or cancel a
  second channel kills that whole group (TERM, then KILL); the output read so
  far is kept. For a lost connection, a *guard* session per host (one bash
  loop, started the first time a command runs longer than ``GUARD_AFTER``)
  knows every long command's group and deadline: when the connection goes, it
  ends them at their deadlines. Quick commands, most of them, never need it.
* A host that cannot be reached, refuses the key or drops the connection
  mid-step raises :class:`ExecutorError` naming the host and the cause; the
  runner turns it into that host's error while the others go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import math
import os
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paramiko

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, OutputCallback, Shell
from engine.core.executors.streams import OutputStream
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)

KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a timed-out remote process group."""
GUARD_SCRIPT = r"""
declare -A deadline
while read -r verb pgid seconds; do
  case $verb in
    watch) printf -v now '%(%s)T' -1; deadline[$pgid]=$((now + seconds));;
    done) unset "deadline[$pgid]";;
  esac
done
for pgid in "${!deadline[@]}"; do
  ( printf -v now '%(%s)T' -1; left=$(( ${deadline[$pgid]} - now ))
    if [ "$left" -gt 0 ]; then sleep "$left"; fi
    kill -TERM -- "-$pgid" 2>/dev/null && sleep 2 && kill -KILL -- "-$pgid" 2>/dev/null ) &
done
wait
"""
"""Runs on each host for the life of its connection. Cairn tells it each command's process group
and timeout; when its stdin closes while a command still runs (the connection was lost), it ends
that command's group at the command's deadline, as Cairn would have."""
GUARD_AFTER = 1.0
"""Seconds a command runs before the host's guard is told about it (and started, the first time)."""
_EXIT_DRAIN = 1.0
"""After the exit status arrives, seconds to wait for a background child to close the output."""
_POLL = 0.1
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how one host is reached, after inventory and ssh_config are combined."""

    host: str
    """The inventory name."""
    address: str
    port: int
    user: str
    key_files: tuple[str, ...]
    key_from_inventory: bool
    password: str | None
    proxy_command: str | None
    connect_timeout: float
    known_hosts: Path
    accept_new: bool

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: ``address``, or ``[address]:port`` off port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


class SSHExecutor:
    """Runs shell commands on SSH hosts over one paramiko connection each (an ``Executor[Shell]``)."""

    def __init__(self, options: ExecutionOptions | None = None) -> None:
        self.options = options or ExecutionOptions()
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._guards: dict[str, _Guard | None] = {}
        self._bash_login: dict[str, bool] = {}
        self._parsed: dict[Path, paramiko.HostKeys] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey] = {}
        self._ssh_config: paramiko.SSHConfig | None = None
        self._marker = f"CAIRN-PGID-{secrets.token_hex(4)}"

    # ------------------------------------------------------------ endpoints

    def endpoint(self, host: Host) -> Endpoint:
        """Combine the host's inventory variables with ``~/.ssh/config`` the way ``ansible`` does."""
        v = host.vars
        target = str(v.get("ansible_host") or v.get("ansible_ssh_host") or host.name)
        config = self._config_for(host.name, target)
        port = v.get("ansible_port") or v.get("ansible_ssh_port") or config.get("port") or 22
        user = v.get("ansible_user") or v.get("ansible_ssh_user") or config.get("user") or getpass.getuser()
        key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
        keys = (str(Path(key).expanduser()),) if key else tuple(config.get("identityfile", []))
        known = self.options.known_hosts or Path(
            str(config.get("userknownhostsfile", "")).split()[0]
            if config.get("userknownhostsfile")
            else DEFAULT_KNOWN_HOSTS
        )
        strict = str(config.get("stricthostkeychecking", "yes")).lower()
        if config.get("proxyjump"):
            raise ExecutorError(
                host.name,
                "ProxyJump in ssh_config is not supported by Cairn's SSH executor; "
                "use ProxyCommand, or rerun with --via ansible",
            )
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            raise ExecutorError(host.name, f"ansible_port {port!r} is not a port number") from None
        return Endpoint(
            host=host.name,
            address=str(config.get("hostname", target)) if target == host.name else target,
            port=port_number,
            user=str(user),
            key_files=keys,
            key_from_inventory=bool(key),
            password=v.get("ansible_password") or v.get("ansible_ssh_pass"),
            proxy_command=config.get("proxycommand"),
            connect_timeout=float(config.get("connecttimeout") or self.options.connect_timeout),
            known_hosts=known.expanduser(),
            accept_new=self.options.accept_new_host_keys or strict in ("accept-new", "no", "off"),
        )

    def describe(self, host: Host) -> str:
        """Where, as whom and with which keys ``host`` is reached, from its :meth:`endpoint` (never connects)."""
        try:
            ep = self.endpoint(host)
        except ExecutorError as exc:
            return f"ssh: cannot: {exc}"
        key = ", ".join(ep.key_files) if ep.key_files else "ssh-agent/default keys"
        via = f" via ProxyCommand {ep.proxy_command!r}" if ep.proxy_command else ""
        trust = "accept-new" if ep.accept_new else "strict"
        return f"ssh {ep}{via}, key {key}, host keys {ep.known_hosts} ({trust})"

    def _config_for(self, name: str, target: str) -> dict[str, Any]:
        path = self.options.ssh_config or Path("~/.ssh/config").expanduser()
        if not path.is_file():
            return {}
        with self._lock:
            if self._ssh_config is None:
                try:
                    self._ssh_config = paramiko.SSHConfig.from_path(str(path))
                except (OSError, paramiko.ConfigParseError) as exc:
                    raise ExecutorError(name, f"cannot read ssh config {path}: {exc}") from exc
            config = self._ssh_config
        try:
            return dict(config.lookup(target))
        except Exception as exc:  # Match exec and canonicalisation can fail in many ways
            raise ExecutorError(name, f"ssh config {path} lookup for {target!r} failed: {exc}") from exc

    # ------------------------------------------------------------ connections

    def connect(self, host: Host) -> None:
        """Open (or reuse) the connection to ``host``; :class:`ExecutorError` says why it failed."""
        self._client(host)

    def _client(self, host: Host) -> paramiko.SSHClient:
        with self._lock:
            lock = self._host_locks.setdefault(host.name, threading.Lock())
        with lock:  # one handshake per host, however many threads ask at once
            client = self._clients.get(host.name)
            transport = client.get_transport() if client else None
            if client and transport is not None and transport.is_active():
                return client
            if client:
                client.close()
            client = self._open(self.endpoint(host))
            self._guards.pop(host.name, None)
            self._bash_login.pop(host.name, None)
            self._clients[host.name] = client
            return client

    def _guard(self, host: Host, client: paramiko.SSHClient) -> _Guard | None:
        """The host's guard session, started the first time it is needed (``None``: it cannot run)."""
        with self._lock:
            if host.name in self._guards:
                return self._guards[host.name]
        guard = self._start_guard(host, client)
        with self._lock:
            return self._guards.setdefault(host.name, guard)

    def _start_guard(self, host: Host, client: paramiko.SSHClient) -> _Guard | None:
        try:
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.options.connect_timeout)
            channel.exec_command(f"exec bash -c {shlex.quote(GUARD_SCRIPT)}")
        except Exception as exc:  # the host still works without one; only lost connections are unguarded
            log.warning(
                "%s: no guard session (%s); a lost connection leaves its command running", host.name, exc
            )
            return None
        return _Guard(channel)

    def _open(self, ep: Endpoint) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for path in (SYSTEM_KNOWN_HOSTS, ep.known_hosts):
            entries: Any = self._known_hosts(ep, path).lookup(ep.known_hosts_name) or {}
            for keytype, key in entries.items():  # only this host's: parsing the file per host is O(N²)
                client.get_host_keys().add(ep.known_hosts_name, keytype, key)
        policy = (
            _AcceptNew(ep, self._known_hosts(ep, ep.known_hosts)) if ep.accept_new else _RefuseUnknown(ep)
        )
        client.set_missing_host_key_policy(policy)
        keys = self._keys_for(ep)
        sock = self._socket(ep)
        try:
            client.connect(
                ep.address,
                port=ep.port,
                username=ep.user,
                password=ep.password,
                pkey=keys[0] if len(keys) == 1 else None,
                key_filename=cast(Any, [str(Path(p).expanduser()) for p in ep.key_files])
                if len(keys) > 1
                else None,
                sock=sock,
                timeout=ep.connect_timeout,
                banner_timeout=ep.connect_timeout,
                auth_timeout=ep.connect_timeout,
                allow_agent=True,
                look_for_keys=not ep.key_files,
                transport_factory=_fast_transport,
            )
        except _HostKeyRefused as exc:
            _abandon(client, sock)
            raise ExecutorError(ep.host, str(exc)) from None
        except paramiko.BadHostKeyException as exc:
            _abandon(client, sock)
            raise ExecutorError(ep.host, _changed_key_message(ep, exc.key, exc.expected_key)) from None
        except paramiko.AuthenticationException as exc:
            _abandon(client, sock)
            what = f"key {', '.join(ep.key_files)}" if ep.key_files else "ssh-agent and default keys"
            raise ExecutorError(
                ep.host,
                f"authentication failed for {ep} with {what} ({exc}); check ansible_user and "
                "ansible_ssh_private_key_file, and that the key is in the host's authorized_keys",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            _abandon(client, sock)
            raise ExecutorError(
                ep.host, f"SSH handshake with {ep} failed: {exc or type(exc).__name__}"
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)  # notice a dead host during a long step
        log.debug("connected to %s as %s", ep.host, ep)
        return client

    def _socket(self, ep: Endpoint) -> Any:
        if ep.proxy_command:
            command = ep.proxy_command.replace("%h", ep.address).replace("%p", str(ep.port))
            return paramiko.ProxyCommand(command.replace("%r", ep.user))
        try:
            sock = socket.create_connection((ep.address, ep.port), timeout=ep.connect_timeout)
        except ConnectionRefusedError:
            raise ExecutorError(
                ep.host, f"connection refused by {ep.address}:{ep.port}: is sshd running there?"
            ) from None
        except TimeoutError:
            raise ExecutorError(
                ep.host, f"no answer from {ep.address}:{ep.port} within {ep.connect_timeout:g}s"
            ) from None
        except socket.gaierror as exc:
            raise ExecutorError(ep.host, f"cannot resolve {ep.address!r}: {exc.strerror}") from None
        except OSError as exc:
            raise ExecutorError(
                ep.host, f"cannot connect to {ep.address}:{ep.port}: {exc.strerror or exc}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _known_hosts(self, ep: Endpoint, path: Path) -> paramiko.HostKeys:
        """``path`` parsed once per executor (an empty set when it does not exist)."""
        with self._lock:
            known = self._parsed.get(path)
            if known is None:
                known = paramiko.HostKeys()
                if path.is_file():
                    try:
                        known.load(str(path))
                    except (OSError, paramiko.SSHException, ValueError) as exc:
                        raise ExecutorError(ep.host, f"cannot read known_hosts {path}: {exc}") from exc
                self._parsed[path] = known
            return known

    def _keys_for(self, ep: Endpoint) -> list[paramiko.PKey]:
        """The private keys to offer; a key the inventory names must exist, ssh_config's may not."""
        keys = []
        for path in ep.key_files:
            if Path(path).expanduser().is_file():
                keys.append(self._key(ep, path))
            elif ep.key_from_inventory:
                raise ExecutorError(
                    ep.host, f"ansible_ssh_private_key_file {path} does not exist or is not a file"
                )
        return keys

    def _key(self, ep: Endpoint, path: str) -> paramiko.PKey:
        full = str(Path(path).expanduser())
        with self._lock:
            if full in self._keys:
                return self._keys[full]
        try:
            key = paramiko.PKey.from_path(full)
        except paramiko.PasswordRequiredException:
            raise ExecutorError(
                ep.host, f"private key {full} is encrypted: load it into ssh-agent (ssh-add {full})"
            ) from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise ExecutorError(ep.host, f"cannot read private key {full}: {exc}") from None
        with self._lock:
            return self._keys.setdefault(full, key)

    # ------------------------------------------------------------ commands

    def execute(
        self,
        host: Host,
        task: Shell,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        """Run the task's command with bash on ``host``; see the module docstring for timeout semantics."""
        command = task.command
        started = time.monotonic()
        client = self._client(host)
        transport = client.get_transport()
        try:
            assert transport is not None
            channel = transport.open_session(timeout=self.options.connect_timeout)
            channel.exec_command(self._wrap(command, bash_login=self._bash_login.get(host.name, False)))
        except Exception as exc:  # the connection died between steps
            self._forget(host)
            raise ExecutorError(host.name, f"cannot start the command: connection lost ({exc})") from None
        out = OutputStream("stdout", on_output)
        err = _MarkedStderr(self._marker, OutputStream("stderr", on_output))
        guarded: list[_Guard] = []

        def guard_it() -> None:  # the command runs long: make sure a lost connection cannot orphan it
            guard = self._guard(host, client) if err.pgid is not None else None
            if guard is not None:
                guard.send(f"watch {err.pgid} {math.ceil(started + timeout - time.monotonic())}")
                guarded.append(guard)

        try:
            timed_out, cancelled = self._pump(channel, out, err, started + timeout, cancel, guard_it)
        except BaseException:
            self._kill(host, client, err.pgid)  # Ctrl-C: never leave the command running behind us
            channel.close()
            raise
        if timed_out or cancelled:
            self._kill(host, client, err.pgid)
            self._drain(channel, out, err)
            rc = None
        elif channel.exit_status_ready() and (channel.exit_status != -1 or _transport_alive(channel)):
            rc = channel.recv_exit_status()  # -1 with a live connection: killed by a signal there
        else:
            channel.close()
            self._forget(host)
            raise ExecutorError(
                host.name,
                "connection lost during the step (sshd went away or the network dropped); "
                "the host's guard ends the command at the step's deadline",
            )
        for guard in guarded:
            guard.send(f"done {err.pgid}")
        if err.bash_login is not None:
            self._bash_login[host.name] = err.bash_login
        channel.close()
        out.feed(b"", final=True)
        err.finish()
        return CommandResult(
            rc=rc,
            stdout=out.text,
            stderr=err.stream.text,
            duration=time.monotonic() - started,
            timed_out=timed_out,
            cancelled=cancelled,
            truncated=out.truncated or err.stream.truncated,
        )

    def _wrap(self, command: str, *, bash_login: bool) -> str:
        """The login shell reports its process group, then runs the command with bash.

        When the login shell is bash already, the command runs in it: one process fewer per step.
        """
        report = f'echo {self._marker} $$ "${{BASH_VERSION:-}}" >&2; '
        return report + (command if bash_login else f"exec bash -c {shlex.quote(command)}")

    def _pump(
        self,
        channel: paramiko.Channel,
        out: OutputStream,
        err: _MarkedStderr,
        deadline: float,
        cancel: threading.Event | None,
        long_running: Callable[[], None],
    ) -> tuple[bool, bool]:
        """Read both streams until the command ends, the deadline or a cancel: (timed_out, cancelled).

        ``long_running`` is called once, when the command has run for ``GUARD_AFTER`` seconds.
        """
        exited_at: float | None = None
        guard_at: float | None = time.monotonic() + GUARD_AFTER
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return False, True
            if now >= deadline:
                return True, False
            if guard_at is not None and now >= guard_at and err.pgid is not None:
                guard_at = None  # before reading: output seen after this is from a guarded command
                long_running()
            if channel.eof_received and not channel.exit_status_ready():
                # Only the exit status is missing. The channel's pipe stays readable after EOF,
                # so select() would spin (and starve the thread that delivers the status).
                channel.status_event.wait(min(_POLL, deadline - now))
            else:
                select.select([channel], [], [], min(_POLL, deadline - now))
            self._read_ready(channel, out, err)
            if not _transport_alive(channel):
                return False, False  # the connection dropped: the caller sees no exit status
            if channel.exit_status_ready():
                exited_at = exited_at or now
                if channel.eof_received or now - exited_at > _EXIT_DRAIN:
                    self._read_ready(channel, out, err)
                    return False, False

    @staticmethod
    def _read_ready(channel: paramiko.Channel, out: OutputStream, err: _MarkedStderr) -> None:
        # stderr first: the process-group line is written there before the command starts.
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(65536))
        while channel.recv_ready():
            out.feed(channel.recv(65536))

    def _drain(self, channel: paramiko.Channel, out: OutputStream, err: _MarkedStderr) -> None:
        """After a kill: collect what the command wrote before it died (bounded)."""
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline and not (channel.eof_received or channel.closed):
            select.select([channel], [], [], _POLL)
            self._read_ready(channel, out, err)
        self._read_ready(channel, out, err)

    def _kill(self, host: Host, client: paramiko.SSHClient, pgid: int | None) -> None:
        """End the command's whole process group on the host: TERM, then KILL after a grace period."""
        if pgid is None:
            log.warning("%s: the command never reported its process group; closing its channel", host.name)
            return
        steps = int(KILL_GRACE / 0.1)
        # Zombies whose parent is gone count for `kill -0`; only a live process is worth waiting for.
        alive = (
            "alive() { if command -v ps >/dev/null 2>&1; then "
            f"ps -A -o pgid=,stat= | awk -v g={pgid} '$1==g && $2 !~ /^Z/ {{f=1}} END {{exit !f}}'; "
            f"else kill -0 -- -{pgid} 2>/dev/null; fi; }}; "
        )
        script = (
            f"{alive}kill -TERM -- -{pgid} 2>/dev/null || exit 0; "
            f"for i in $(seq {steps}); do alive || exit 0; sleep 0.1; done; "
            f"kill -KILL -- -{pgid} 2>/dev/null; exit 0"
        )
        try:
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.options.connect_timeout)
            channel.settimeout(KILL_GRACE + 5)
            channel.exec_command(script)
            channel.recv_exit_status()
            channel.close()
        except Exception as exc:  # a dead connection: the host's guard ends it at its deadline
            log.warning("%s: could not kill process group %s: %s", host.name, pgid, exc)

    def _forget(self, host: Host) -> None:
        with self._lock:
            client = self._clients.pop(host.name, None)
            self._guards.pop(host.name, None)
        if client:
            client.close()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            clients = list(self._clients.values())
            guards = [g for g in self._guards.values() if g is not None]
            self._clients.clear()
            self._guards.clear()
        for guard in guards:
            guard.close()  # end of input: the guard exits (nothing is left to watch)
        for client in clients:
            client.close()


AEAD_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Preferred ciphers: with AES-GCM no HMAC is computed and compared byte by byte in Python, which
with the default aes-ctr + hmac-sha2 was the largest client CPU cost of a fan-out here (profiled)."""


def _fast_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in AEAD_FIRST if c in offered) + tuple(
        c for c in offered if c not in AEAD_FIRST
    )
    return transport


def _abandon(client: paramiko.SSHClient, sock: Any) -> None:
    client.close()
    with contextlib.suppress(OSError):
        sock.close()


def _transport_alive(channel: paramiko.Channel) -> bool:
    transport = channel.get_transport()
    return transport is not None and transport.is_active()


class _Guard:
    """The host's guard session (see :data:`GUARD_SCRIPT`): told about each long command."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        """Tell the guard ``watch PGID SECONDS`` or ``done PGID``; a dead guard is not an error."""
        try:
            with self._lock:
                self.channel.sendall(f"{line}\n".encode())
        except Exception as exc:  # the connection is going: the step itself will say so
            log.debug("guard: %s", exc)

    def close(self) -> None:
        """Close the guard's input, so that it exits."""
        with contextlib.suppress(Exception):
            self.channel.shutdown_write()
            self.channel.close()


class _MarkedStderr:
    """stderr with the wrapper's process-group line taken out (it comes before any command output)."""

    def __init__(self, marker: str, stream: OutputStream) -> None:
        self.marker = marker.encode()
        self.stream = stream
        self.pgid: int | None = None
        self.bash_login: bool | None = None
        """Whether the login shell is bash (it printed ``$BASH_VERSION`` on the marker line)."""
        self._head = b""

    def feed(self, data: bytes) -> None:
        if self.pgid is not None or (not data and not self._head):
            self.stream.feed(data)
            return
        self._head += data
        while b"\n" in self._head and self.pgid is None:
            line, self._head = self._head.split(b"\n", 1)
            if line.startswith(self.marker):
                words = line.split()
                with contextlib.suppress(ValueError, IndexError):
                    self.pgid = int(words[1])
                self.bash_login = len(words) > 2
            else:  # a login script wrote to stderr before the wrapper ran
                self.stream.feed(line + b"\n")
        if self.pgid is not None and self._head:
            head, self._head = self._head, b""
            self.stream.feed(head)

    def finish(self) -> None:
        if self._head:
            self.stream.feed(self._head)
            self._head = b""
        self.stream.feed(b"", final=True)


# ------------------------------------------------------------ host keys


class _HostKeyRefused(Exception):
    """An unknown host key under the strict policy (raised out of paramiko's connect)."""


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Strict checking: an unknown host is refused, with its fingerprint and how to trust it."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        ep = self.ep
        scan = f"ssh-keyscan -p {ep.port} {ep.address}" if ep.port != 22 else f"ssh-keyscan {ep.address}"
        raise _HostKeyRefused(
            f"host key of {hostname} is not in {ep.known_hosts} (it offers {_fingerprint(key)}). "
            f"Check that fingerprint with the host's owner, then trust it: `{scan} >> {ep.known_hosts}`, "
            "or rerun with --accept-new-host-keys to record keys of hosts not seen before"
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """OpenSSH's ``accept-new``: record a key for a host never seen; a changed key still fails."""

    _file_lock = threading.Lock()

    def __init__(self, ep: Endpoint, parsed: paramiko.HostKeys | None = None) -> None:
        self.ep = ep
        self.parsed = parsed

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        path = self.ep.known_hosts
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self._file_lock:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="ascii") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # other Cairn processes may append too
                handle.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.parsed is not None:
            self.parsed.add(hostname, key.get_name(), key)
        log.warning("recorded new host key for %s in %s: %s", hostname, path, _fingerprint(key))


def _changed_key_message(ep: Endpoint, got: paramiko.PKey, expected: paramiko.PKey | None) -> str:
    was = _fingerprint(expected) if expected is not None else "another key"
    name = ep.known_hosts_name
    return (
        f"HOST KEY CHANGED for {name}: known_hosts ({ep.known_hosts}) has {was}, the host offers "
        f"{_fingerprint(got)}. Someone may be intercepting the connection, or the host was "
        "reinstalled. Cairn will not connect. If the change is expected, remove the old key with "
        f"`ssh-keygen -R '{name}' -f {ep.known_hosts}` and trust the new one"
    )
