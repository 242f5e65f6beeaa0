"""Run commands over SSH with paramiko: one pooled connection per host, host keys verified.

* **One connection per host**, opened once (by :meth:`SSHExecutor.connect`, or the
  first step) and reused by every step of the run; **one shell session per host** runs
  its steps one after another (:mod:`engine.core.executors.ssh_shell`: no new session, no
  new bash per step). An escalated step, or one that shell cannot carry, gets a channel
  of its own, as every step did before. The socket has ``TCP_NODELAY`` set: without it paramiko stalls on
  Nagle/delayed-ACK and a reused command costs ~48 ms instead of ~5 ms.
* **Where and as whom** follows ``ansible``: the inventory's ``ansible_host``,
  ``ansible_port``, ``ansible_user`` and ``ansible_ssh_private_key_file`` win;
  what they leave out comes from ``~/.ssh/config`` (HostName, Port, User,
  IdentityFile, ProxyCommand, ConnectTimeout, UserKnownHostsFile,
  StrictHostKeyChecking); keys from ssh-agent are offered too.
* **Bastions** (ProxyJump, from the inventory's ``ansible_ssh_common_args``/``_extra_args``
  or ssh_config; :mod:`engine.core.executors.ssh_jumps`): each hop is opened like a host, host
  key checked, and the next one is reached over a ``direct-tcpip`` channel of it. One connection
  per chain of bastions is shared by every host behind it for the whole run; a bastion that
  fails is remembered, and every host behind it fails naming it.
* **Host keys are verified** against known_hosts (the file given by the
  ``--known-hosts`` option, else ssh_config's UserKnownHostsFile, else
  ``~/.ssh/known_hosts``; ``/etc/ssh/ssh_known_hosts`` is read as well). An
  unknown host is refused with the fingerprint and how to trust it; with the
  ``accept-new`` opt-in its key is recorded; a changed key is always refused.
* **Secrets stay off command lines.** The step's variables (:attr:`Shell.env`) are sent on
  the channel's stdin and read by bash before the command runs; then stdin ends, so a
  command reading it sees end-of-file (:mod:`engine.core.executors.step_env`).
* **A timeout ends the command on the host, and all it started.** The command runs in the
  login shell's process group (sshd starts every session with ``setsid``), whose id the
  wrapper reports on stderr before anything else, and with the step's mark
  (``CAIRN_STEP``) in its environment. On timeout or cancel a second channel ends that
  group and every process carrying the mark (TERM, then KILL:
  :func:`~engine.core.executors.process_trees.kill_script`); what it could not end is named
  in the step's stderr, and the output read so far is kept. For a lost connection, a
  *guard* session per host (one bash loop, started the first time a command runs longer
  than ``GUARD_AFTER``) knows every long command's group, mark and deadline: when the
  connection goes, it ends them at their deadlines. Quick commands, most of them, never
  need it.
* A host that cannot be reached, does not speak SSH (no banner, closes at once, answers
  something else), refuses the key or drops the connection mid-step raises
  :class:`ExecutorError` naming the host and the cause in one line; the runner turns it
  into that host's error while the others go on. paramiko's own logging (tracebacks from
  its transport thread) never reaches stderr unless the CLI's -vv asked for debug logs.
"""

from __future__ import annotations

import logging
import math
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import paramiko

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, OutputCallback, Redact, Shell
from engine.core.executors.escalation import Escalation, EscalationFailed, escalation_for
from engine.core.executors.process_trees import KILL_GRACE, kill_script
from engine.core.executors.ssh_hosts import (
    AcceptNew,
    Endpoint,
    HostKeyRefused,
    RefuseUnknown,
    abandon,
    changed_key_message,
    fast_transport,
    first_bytes,
    first_line,
)
from engine.core.executors.ssh_jumps import (
    BastionFailed,
    JumpChains,
    ProxyCommandSocket,
    describe_ignored,
    describe_jumps,
    inventory_ssh_args,
    resolve_endpoint,
)
from engine.core.executors.ssh_remote import (
    EXIT_DRAIN,
    GUARD_AFTER,
    GUARD_SCRIPT,
    Guard,
    MarkedStderr,
    escalated_stderr,
    send_input,
    wait_readable,
)
from engine.core.executors.ssh_shell_steps import Lent, ShellSteps
from engine.core.executors.step_env import ENV_READER, checked_env, mark, new_token
from engine.core.executors.streams import OutputStream
from engine.core.lines import redacted_forms
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)
# paramiko logs a failed handshake with a traceback (ERROR, from its transport thread). With no
# handler anywhere, logging's last resort printed those on stderr between Cairn's own lines; a
# handler here keeps them out, and the CLI's -vv (a root handler) still shows them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_POLL = 0.1
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


class SSHExecutor:
    """Runs shell commands on SSH hosts over one paramiko connection each (an ``Executor[Shell]``)."""

    def __init__(self, options: ExecutionOptions | None = None, *, redact: Redact | None = None) -> None:
        self.options = options or ExecutionOptions()
        self._forms = redacted_forms(redact)
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._guards: dict[str, Guard | None] = {}
        self._bash_login: dict[str, bool] = {}
        self._parsed: dict[Path, paramiko.HostKeys] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey] = {}
        self._ssh_config: paramiko.SSHConfig | None = None
        self._marker = f"CAIRN-PGID-{secrets.token_hex(4)}"
        self._jumps = JumpChains(self._open)  # the bastions, shared by the hosts behind each
        self._shells = ShellSteps(
            marker=self._marker,
            options=self.options,
            forms=self._forms,
            lend=Lent(kill=self._kill, guard=self._guard, forget=self._forget, connected=self._connected),
        )

    # ------------------------------------------------------------ endpoints

    def endpoint(self, host: Host) -> Endpoint:
        """Combine the host's inventory variables with ``~/.ssh/config`` the way ``ansible`` does,
        bastions included (:func:`~engine.core.executors.ssh_jumps.resolve_endpoint`)."""
        return resolve_endpoint(host, lambda name: self._config_for(host.name, name), self.options)

    def describe(self, host: Host) -> str:
        """Where, as whom and with which keys ``host`` is reached, from its :meth:`endpoint` (never connects)."""
        try:
            ep = self.endpoint(host)
            ignored = describe_ignored(inventory_ssh_args(host.name, host.vars))
        except ExecutorError as exc:
            return f"ssh: cannot: {exc}"
        key = ", ".join(ep.key_files) if ep.key_files else "ssh-agent/default keys"
        trust = "accept-new" if ep.accept_new else "strict"
        return f"ssh {ep}{describe_jumps(ep)}, key {key}, host keys {ep.known_hosts} ({trust}){ignored}"

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
            try:
                client = self._open(self.endpoint(host))
            except BastionFailed as exc:  # a bastion before it: say so in the host's own error
                raise exc.for_host(host.name) from None
            self._guards.pop(host.name, None)
            self._bash_login.pop(host.name, None)
            self._shells.drop(host.name)
            self._clients[host.name] = client
            return client

    def _guard(self, host: Host, client: paramiko.SSHClient) -> Guard | None:
        """The host's guard session, started the first time it is needed (``None``: it cannot run)."""
        with self._lock:
            if host.name in self._guards:
                return self._guards[host.name]
        guard = self._start_guard(host, client)
        with self._lock:
            return self._guards.setdefault(host.name, guard)

    def _start_guard(self, host: Host, client: paramiko.SSHClient) -> Guard | None:
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
        return Guard(channel)

    def _open(self, ep: Endpoint) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for path in (SYSTEM_KNOWN_HOSTS, ep.known_hosts):
            entries: Any = self._known_hosts(ep, path).lookup(ep.known_hosts_name) or {}
            for keytype, key in entries.items():  # only this host's: parsing the file per host is O(N²)
                client.get_host_keys().add(ep.known_hosts_name, keytype, key)
        policy = AcceptNew(ep, self._known_hosts(ep, ep.known_hosts)) if ep.accept_new else RefuseUnknown(ep)
        client.set_missing_host_key_policy(policy)
        keys = self._keys_for(ep)
        sock = self._socket(ep)
        greeting = first_bytes(ep, sock) if isinstance(sock, socket.socket) else b"SSH-"
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
                transport_factory=fast_transport,
            )
        except HostKeyRefused as exc:
            abandon(client, sock)
            raise ExecutorError(ep.host, str(exc)) from None
        except paramiko.BadHostKeyException as exc:
            abandon(client, sock)
            raise ExecutorError(ep.host, changed_key_message(ep, exc.key, exc.expected_key)) from None
        except paramiko.AuthenticationException as exc:
            abandon(client, sock)
            what = f"key {', '.join(ep.key_files)}" if ep.key_files else "ssh-agent and default keys"
            raise ExecutorError(
                ep.host,
                f"authentication failed for {ep} with {what} ({exc}); check ansible_user and "
                "ansible_ssh_private_key_file, and that the key is in the host's authorized_keys",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            abandon(client, sock)
            if not greeting.startswith(b"SSH-"):  # what it sent first was not an SSH banner
                raise ExecutorError(
                    ep.host,
                    f"{ep.address}:{ep.port} is not an SSH server: it answered "
                    f"'{first_line(greeting)}' instead of an SSH banner",
                ) from None
            raise ExecutorError(
                ep.host, f"SSH handshake with {ep} failed: {exc or type(exc).__name__}"
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)  # notice a dead host during a long step
        log.debug("connected to %s as %s", ep.host, ep)
        return client

    def _socket(self, ep: Endpoint) -> Any:
        """What ``ep``'s SSH connection goes over: a channel through its bastions, its ProxyCommand,
        or a TCP socket. Raises :class:`BastionFailed` when a bastion cannot be reached."""
        if ep.jumps:
            return self._jumps.channel_to(ep)
        if ep.proxy_command:
            command = ep.proxy_command.replace("%h", ep.address).replace("%p", str(ep.port))
            return ProxyCommandSocket(command.replace("%r", ep.user))
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
        env = checked_env(host.name, task.env)
        started = time.monotonic()
        client = self._client(host)
        transport = client.get_transport()
        token = new_token()
        escalation = None
        if task.become is not None:  # as the login user it would run unescalated: never
            login = self.endpoint(host).user
            escalation = escalation_for(host.name, task.become, login=login, token=token, env=env)
        elif self._shells.can_run(host.name, task.command, env):
            result = self._shells.execute(
                host, client, task.command, env, token, started, timeout, on_output, cancel
            )
            if result is not None:
                return result
        try:
            assert transport is not None
            channel = transport.open_session(timeout=self.options.connect_timeout)
            bash_login = self._bash_login.get(host.name, False)
            wrapped = self._wrap(task.command, token, bool(env), bash_login=bash_login, escalation=escalation)
            channel.exec_command(wrapped)
            send_input(channel, env, escalation)
        except Exception as exc:  # the connection died between steps
            self._forget(host)
            raise ExecutorError(host.name, f"cannot start the command: connection lost ({exc})") from None
        limit = self.options.output_limit
        out = OutputStream("stdout", on_output, limit=limit, forms=self._forms)
        err_stream = OutputStream("stderr", on_output, limit=limit, forms=self._forms)
        said = escalated_stderr(channel, escalation, err_stream)
        err = MarkedStderr(self._marker, said or err_stream)
        guarded: list[Guard] = []

        def guard_it() -> None:  # the command runs long: make sure a lost connection cannot orphan it
            guard = self._guard(host, client) if err.pgid is not None else None
            if guard is not None:
                guard.send(f"watch {err.pgid} {math.ceil(started + timeout - time.monotonic())} {token}")
                if escalation is not None and err.pgid is not None and said is not None:
                    guard.send(escalation.guard_lines(err.pgid, said.pgid).rstrip("\n"))
                guarded.append(guard)

        def kill() -> str:
            group = said.pgid if said is not None else None
            return self._kill(host, client, err.pgid, token, escalation=escalation, group=group)

        left = ""
        try:
            timed_out, cancelled = self._pump(channel, out, err, started + timeout, cancel, guard_it)
        except BaseException:
            kill()  # Ctrl-C: never leave the command running behind us
            channel.close()
            raise
        if timed_out or cancelled:
            left = kill()
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
        if escalation is not None and said is not None and not said.ready and rc is not None:
            raise EscalationFailed(host.name, escalation.failure(rc, said))  # sudo never ran it
        if left:
            err_stream.note(left, own_line=True)
        return CommandResult(
            rc=rc,
            stdout=out.text,
            stderr=err_stream.text,
            duration=time.monotonic() - started,
            timed_out=timed_out,
            cancelled=cancelled,
            truncated=out.truncated or err_stream.truncated,
        )

    def _wrap(
        self,
        command: str,
        token: str,
        with_env: bool,
        *,
        bash_login: bool,
        escalation: Escalation | None = None,
    ) -> str:
        """The login shell reports its process group and marks the step, bash reads the step's
        variables from stdin (when it has any), then runs the command; or (``escalation``) the login
        shell runs sudo, which runs the command as another user (:mod:`.escalation`).

        When the login shell is bash already, the command runs in it: one process fewer per step.
        """
        report = f'echo {self._marker} $$ "${{BASH_VERSION:-}}" >&2; {mark(token)}'
        if escalation is not None:
            return report + escalation.shell_command(command)
        body = (ENV_READER if with_env else "") + command
        return report + (body if bash_login else f"exec bash -c {shlex.quote(body)}")

    def _pump(
        self,
        channel: paramiko.Channel,
        out: OutputStream,
        err: MarkedStderr,
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
                wait_readable(channel, min(_POLL, deadline - now))
            self._read_ready(channel, out, err)
            if not _transport_alive(channel):
                return False, False  # the connection dropped: the caller sees no exit status
            if channel.exit_status_ready():
                exited_at = exited_at or now
                if channel.eof_received or now - exited_at > EXIT_DRAIN:
                    self._read_ready(channel, out, err)
                    return False, False

    @staticmethod
    def _read_ready(channel: paramiko.Channel, out: OutputStream, err: MarkedStderr) -> None:
        # stderr first: the process-group line is written there before the command starts.
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(65536))
        while channel.recv_ready():
            out.feed(channel.recv(65536))

    def _drain(self, channel: paramiko.Channel, out: OutputStream, err: MarkedStderr) -> None:
        """After a kill: collect what the command wrote before it died (bounded)."""
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline and not (channel.eof_received or channel.closed):
            wait_readable(channel, _POLL)
            self._read_ready(channel, out, err)
        self._read_ready(channel, out, err)

    def _kill(
        self,
        host: Host,
        client: paramiko.SSHClient,
        pgid: int | None,
        token: str,
        *,
        escalation: Escalation | None = None,
        group: int | None = None,
    ) -> str:
        """End every process of the step on the host — its group and whatever carries its mark:
        TERM, then KILL after a grace period. Returns what the host said could not be ended.

        An escalated step is ended through the same sudo (its processes are another user's), its
        own process group (``group``) too."""
        if pgid is None:
            log.warning(
                "%s: the command never reported its process group; ending its marked processes", host.name
            )
        try:
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.options.connect_timeout)
            channel.settimeout(2 * KILL_GRACE + 10)
            if escalation is None:
                channel.exec_command(kill_script(token, pgid))  # a session of its own: not marked
            else:
                groups = [g for g in (pgid, group) if g is not None]
                channel.set_combine_stderr(True)  # what sudo says, if it refuses this time
                channel.exec_command(escalation.kill_shell(kill_script(token, groups)))
                channel.sendall(escalation.kill_input())
                channel.shutdown_write()
            said = channel.makefile("rb").read().decode(errors="replace")
            rc = channel.recv_exit_status()
            channel.close()
        except Exception as exc:  # a dead connection: the host's guard ends it at its deadline
            log.warning("%s: could not kill the step's processes (group %s): %s", host.name, pgid, exc)
            return f"cairn: could not reach {host.name} to kill the step's processes ({exc})\n"
        return said if escalation is None else escalation.kill_note(rc, said)

    def _connected(self, name: str) -> bool:
        return self._clients.get(name) is not None

    def _forget(self, host: Host) -> None:
        with self._lock:
            client = self._clients.pop(host.name, None)
            self._guards.pop(host.name, None)
        self._shells.drop(host.name)
        if client:
            client.close()

    def close(self) -> None:
        """Close every connection: the hosts', then the bastions' they went through."""
        with self._lock:
            clients = list(self._clients.values())
            guards = [g for g in self._guards.values() if g is not None]
            self._clients.clear()
            self._guards.clear()
        self._shells.close()
        for guard in guards:
            guard.close()  # end of input: the guard exits (nothing is left to watch)
        for client in clients:
            client.close()
        self._jumps.close()


def _transport_alive(channel: paramiko.Channel) -> bool:
    transport = channel.get_transport()
    return transport is not None and transport.is_active()
