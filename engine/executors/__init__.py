"""Executors: the one seam between the runner and the hosts.

Each kind of connection implements :class:`Executor`; the runner talks to that
Protocol only. ``local`` runs commands here with ``bash -c``; ``ssh`` runs them
over one pooled paramiko connection per host; ``ansible`` runs Ansible modules
and playbooks (and, with ``via="ansible"``, plain commands) through
ansible-runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine.errors import ExecutorError
from engine.model import CommandResult, Host

if TYPE_CHECKING:
    from engine.executors.ansible import AnsibleExecutor

OutputCallback = Callable[[str, str], None]
"""Called with (``"stdout"`` | ``"stderr"``, decoded text) as output arrives."""

VIA = ("native", "ansible")
"""How ``run`` steps reach hosts: natively (local/paramiko) or through ansible-runner."""


class Executor(Protocol):
    """Runs shell commands on hosts. Implementations are safe to call from many threads."""

    def connect(self, host: Host) -> None:
        """Make sure ``host`` can be reached (open and cache its connection); :class:`ExecutorError` if not."""
        ...

    def run(
        self,
        host: Host,
        command: str,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        """Run ``command`` on ``host``; on timeout or cancel, kill it there and keep partial output.

        ``artifacts`` is a folder this step may keep files in (used by the ansible executor).
        A host that cannot be reached raises :class:`ExecutorError`; a command that fails is a
        result.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutionOptions:
    """How a run reaches its hosts (the CLI's ``--via``, ``--known-hosts`` … options)."""

    via: str = "native"
    """``native``: local commands and paramiko SSH; ``ansible``: every step through ansible-runner."""
    inventory_sources: tuple[str, ...] = ()
    """The inventory the hosts came from (ansible-runner is pointed at the same one)."""
    known_hosts: Path | None = None
    """Host keys to verify against; ``None``: the user's ``~/.ssh/known_hosts`` (and ssh_config's)."""
    accept_new_host_keys: bool = False
    """Like OpenSSH's ``StrictHostKeyChecking=accept-new``: record unknown keys; changed keys still fail."""
    ssh_config: Path | None = None
    """OpenSSH client config to honour; ``None``: ``~/.ssh/config`` when it exists."""
    connect_timeout: float = 10.0
    """Seconds to wait for a host to accept the connection and finish the handshake."""


class ExecutorSet:
    """Picks the executor for a host by its connection, creating each kind once (thread-safe)."""

    def __init__(
        self,
        factories: dict[str, Callable[[], Executor]] | None = None,
        *,
        options: ExecutionOptions | None = None,
    ) -> None:
        self.options = options or ExecutionOptions()
        self._factories = factories if factories is not None else self._default_factories()
        self._live: dict[str, Executor] = {}
        self._ansible: AnsibleExecutor | None = None
        self._lock = threading.Lock()
        self.redact: Callable[[str], str] | None = None
        """Applied to what executors keep on disk (ansible-runner's artifacts); the runner sets it."""

    def _default_factories(self) -> dict[str, Callable[[], Executor]]:
        options = self.options
        if options.via == "ansible":
            # Every host, whatever its ansible_connection, is reached the Ansible way.
            return {"*": self.ansible}

        def local() -> Executor:
            from engine.executors.local import LocalExecutor  # noqa: PLC0415

            return LocalExecutor()

        def ssh() -> Executor:
            from engine.executors.ssh import SSHExecutor  # noqa: PLC0415

            return SSHExecutor(options)

        return {"local": local, "ssh": ssh}

    def for_host(self, host: Host) -> Executor:
        """The executor that reaches ``host``; :class:`ExecutorError` when none can."""
        kind = host.connection if host.connection in self._factories else "*"
        with self._lock:
            live = self._live.get(kind)
            if live is not None:
                return live
            factory = self._factories.get(kind)
            if factory is None:
                supported = ", ".join(sorted(self._factories))
                raise ExecutorError(
                    host.name,
                    f"ansible_connection={host.connection} is not supported natively (supported: "
                    f"{supported}); rerun with --via ansible to reach it through Ansible",
                )
        executor = factory()  # outside the lock: the ansible factory takes it itself
        with self._lock:
            return self._live.setdefault(kind, executor)

    def ansible(self) -> AnsibleExecutor:
        """The ansible-runner executor (for ``ansible`` steps, and every step with ``via=ansible``)."""
        with self._lock:
            if self._ansible is None:
                from engine.executors.ansible import AnsibleExecutor  # noqa: PLC0415

                self._ansible = AnsibleExecutor(self.options)
                self._ansible.redact = self.redact
            return self._ansible

    def close(self) -> None:
        """Close every executor that was created."""
        with self._lock:
            live = list(self._live.values())
            if self._ansible is not None and self._ansible not in live:
                live.append(self._ansible)
            self._live.clear()
            self._ansible = None
        for executor in live:
            executor.close()


def describe_reach(host: Host, options: ExecutionOptions) -> str:
    """How a run with ``options`` would reach ``host``, in words (``cairn inventory``)."""
    if options.via == "ansible":
        return f"ansible-runner (ansible_connection={host.connection})"
    if host.connection == "local":
        return "local: this machine"
    if host.connection != "ssh":
        return f"not natively (ansible_connection={host.connection}): use --via ansible"
    from engine.executors.ssh import SSHExecutor  # noqa: PLC0415

    try:
        ep = SSHExecutor(options).endpoint(host)
    except ExecutorError as exc:
        return f"ssh: cannot: {exc}"
    key = ", ".join(ep.key_files) if ep.key_files else "ssh-agent/default keys"
    via = f" via ProxyCommand {ep.proxy_command!r}" if ep.proxy_command else ""
    trust = "accept-new" if ep.accept_new else "strict"
    return f"ssh {ep}{via}, key {key}, host keys {ep.known_hosts} ({trust})"
