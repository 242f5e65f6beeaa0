"""Executors: the one seam between the runner and the hosts.

What an executor is asked to do is a :data:`Task`, a step's action rendered for one
host: :class:`Shell` (a ``run`` step's command) or :class:`AnsibleTask` (an
``ansible`` step's module or playbook, its arguments rendered). Manual steps never
get here: a human does them.

Each kind of executor implements :class:`Executor` for the tasks it can do, and
:class:`ExecutorSet` picks one by the task's kind and the host's connection; the
runner talks to those only. ``local`` runs shell commands here with ``bash -c``;
``ssh`` runs them over one pooled paramiko connection per host; ``ansible`` runs
Ansible modules and playbooks, and (with ``--via ansible``) shell commands too,
through ansible-runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine.core.become import Become
from engine.core.defaults import DEFAULT_VIA, OUTPUT_LIMIT, Via
from engine.core.errors import ExecutorError
from engine.core.model import AnsibleAction, CommandResult, Host, Phase

if TYPE_CHECKING:
    from engine.core.executors.ansible import AnsibleExecutor

OutputCallback = Callable[[str, str], None]
"""Called with (``"stdout"`` | ``"stderr"``, decoded text) as output arrives."""

Redact = Callable[[str], str]
"""The run's redactor: secrets out of a text."""


@dataclass(frozen=True, slots=True)
class Shell:
    """A ``run`` step rendered for a host: the bash command to run there."""

    command: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Variables set for this command's process only (never on a command line, never in a repr):
    the run's secret inputs, which the command refers to as ``"$CAIRN_SECRET_<NAME>"``."""
    become: Become | None = None
    """Run it as another user (``sudo``; :mod:`engine.core.become`); ``None``: as the login user."""


@dataclass(frozen=True, slots=True)
class AnsibleTask:
    """An ``ansible`` step rendered for a host: its module (arguments rendered) or playbook."""

    action: AnsibleAction
    args: Any
    """``action.args`` rendered for the host (ignored for a playbook)."""
    base_dir: Path
    """The runbook's folder: a playbook is found beside the runbook."""


Task = Shell | AnsibleTask
"""What an executor is asked to do."""

StepKey = tuple[Phase, str]
"""(phase, step id): which step of the runbook a task is."""

TaskT_contra = TypeVar("TaskT_contra", contravariant=True)


class Executor(Protocol[TaskT_contra]):
    """Does one kind of task on hosts. Implementations are safe to call from many threads.

    ``Executor[Shell]`` runs shell commands (local, ssh): an ansible task cannot be handed to
    it. ``Executor[Task]`` does every task (ansible), so it can stand wherever an
    ``Executor[Shell]`` is asked for (``--via ansible``).
    """

    def connect(self, host: Host) -> None:
        """Make sure ``host`` can be reached (open and cache its connection); :class:`ExecutorError` if not."""
        ...

    def execute(
        self,
        host: Host,
        task: TaskT_contra,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        """Do ``task`` on ``host``; on timeout or cancel, kill it there and keep partial output.

        ``artifacts`` is a folder this step may keep files in (used by the ansible executor).
        A host that cannot be reached raises :class:`ExecutorError`; a command that fails is a
        result.
        """
        ...

    def describe(self, host: Host) -> str:
        """How this executor reaches ``host``, in words (``cairn inventory``); never connects."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutionOptions:
    """How a run reaches its hosts (the CLI's ``--via``, ``--known-hosts`` … options)."""

    via: Via = DEFAULT_VIA
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
    output_limit: int = OUTPUT_LIMIT
    """Bytes of each output stream (stdout, stderr) of a step that are streamed and kept; the rest is
    read and dropped, and a marker line says how much was kept of how much."""


class ExecutorSet:
    """Picks the executor for a task on a host, creating each kind once (thread-safe).

    ``factories`` make the shell executors by ``ansible_connection`` (default: ``local`` and
    ``ssh``); ansible tasks, and every shell command with ``via="ansible"``, go to the one
    ansible-runner executor. ``redact`` is handed to the executors it creates: the ansible
    executor applies it to what it keeps on disk, and every executor keeps a secret whole where
    it cuts output at the limit.
    """

    def __init__(
        self,
        factories: Mapping[str, Callable[[], Executor[Shell]]] | None = None,
        *,
        options: ExecutionOptions | None = None,
        redact: Redact | None = None,
    ) -> None:
        self.options = options or ExecutionOptions()
        self._redact = redact
        self._factories = (
            dict(factories) if factories is not None else _native_factories(self.options, redact)
        )
        self._live: dict[str, Executor[Shell]] = {}
        self._ansible: AnsibleExecutor | None = None
        self._lock = threading.Lock()

    def execute(
        self,
        host: Host,
        task: Task,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
        step: StepKey | None = None,
    ) -> CommandResult:
        """Do ``task`` on ``host`` with the executor for the task's kind (see :meth:`Executor.execute`).

        ``step`` says which step the task is; hosts do not need it (an executor set that answers from
        a recording, :mod:`engine.core.replay`, looks the answer up by it)."""
        del step
        match task:
            case AnsibleTask():
                return self.ansible().execute(
                    host, task, timeout=timeout, on_output=on_output, cancel=cancel, artifacts=artifacts
                )
            case Shell():
                return self.for_host(host).execute(
                    host, task, timeout=timeout, on_output=on_output, cancel=cancel, artifacts=artifacts
                )

    def for_host(self, host: Host) -> Executor[Shell]:
        """The executor that runs shell commands on ``host``; :class:`ExecutorError` when none can."""
        if self.options.via == "ansible":
            # Every host, whatever its ansible_connection, is reached the Ansible way.
            return self.ansible()
        kind = host.connection
        with self._lock:
            live = self._live.get(kind)
            if live is not None:
                return live
            factory = self._factories.get(kind)
        if factory is None:
            supported = ", ".join(sorted(self._factories))
            raise ExecutorError(
                host.name,
                f"ansible_connection={kind} is not supported natively (supported: {supported}); "
                "rerun with --via ansible to reach it through Ansible",
            )
        executor = factory()
        with self._lock:
            return self._live.setdefault(kind, executor)

    def ansible(self) -> AnsibleExecutor:
        """The ansible-runner executor (for ``ansible`` steps, and every step with ``via=ansible``)."""
        with self._lock:
            if self._ansible is None:
                from engine.core.executors.ansible import AnsibleExecutor  # noqa: PLC0415

                self._ansible = AnsibleExecutor(self.options, redact=self._redact)
            return self._ansible

    def describe(self, host: Host) -> str:
        """How ``host``'s shell commands would be run, in words (``cairn inventory``)."""
        if self.options.via != "ansible" and host.connection not in self._factories:
            return f"not natively (ansible_connection={host.connection}): use --via ansible"
        return self.for_host(host).describe(host)

    def close(self) -> None:
        """Close every executor that was created."""
        with self._lock:
            live: list[Executor[Any]] = list(self._live.values())
            if self._ansible is not None:
                live.append(self._ansible)
            self._live.clear()
            self._ansible = None
        for executor in live:
            executor.close()


def _native_factories(
    options: ExecutionOptions, redact: Redact | None
) -> dict[str, Callable[[], Executor[Shell]]]:
    """The executors ``via="native"`` reaches hosts with, by ``ansible_connection`` (imported when used)."""

    def local() -> Executor[Shell]:
        from engine.core.executors.local import LocalExecutor  # noqa: PLC0415

        return LocalExecutor(options, redact=redact)

    def ssh() -> Executor[Shell]:
        from engine.core.lazy_import import defer  # noqa: PLC0415

        defer("invoke")  # paramiko's import of it is most of paramiko's start-up: engine.core.lazy_import
        from engine.core.executors.ssh import SSHExecutor  # noqa: PLC0415

        return SSHExecutor(options, redact=redact)

    return {"local": local, "ssh": ssh}


def describe_reach(host: Host, options: ExecutionOptions) -> str:
    """How a run with ``options`` would reach ``host``, in words (``cairn inventory``)."""
    executors = ExecutorSet(options=options)
    try:
        return executors.describe(host)
    finally:
        executors.close()
