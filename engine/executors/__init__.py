"""Executors: the one seam between the runner and the hosts.

Each kind of connection implements :class:`Executor`; the runner talks to that
Protocol only. ``local`` runs commands here with ``bash -c``; ``ssh`` and
``ansible`` come with remote execution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from engine.errors import ExecutorError
from engine.model import CommandResult, Host

OutputCallback = Callable[[str, str], None]
"""Called with (``"stdout"`` | ``"stderr"``, decoded text) as output arrives."""


class Executor(Protocol):
    """Runs shell commands on hosts."""

    def run(
        self,
        host: Host,
        command: str,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> CommandResult:
        """Run ``command`` on ``host``; on timeout or cancel, kill it there and keep partial output."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class ExecutorSet:
    """Picks the executor for a host by its connection, creating each kind once."""

    def __init__(self, factories: dict[str, Callable[[], Executor]] | None = None) -> None:
        if factories is None:
            from engine.executors.local import LocalExecutor  # noqa: PLC0415

            factories = {"local": LocalExecutor}
        self._factories = factories
        self._live: dict[str, Executor] = {}

    def for_host(self, host: Host) -> Executor:
        """The executor that reaches ``host``; :class:`ExecutorError` when none can."""
        kind = host.connection
        if kind not in self._live:
            factory = self._factories.get(kind)
            if factory is None:
                supported = ", ".join(sorted(self._factories))
                raise ExecutorError(
                    host.name,
                    f"ansible_connection={kind} is not supported by this version of Cairn "
                    f"(supported: {supported}); set ansible_connection=local to run it here",
                )
            self._live[kind] = factory()
        return self._live[kind]

    def close(self) -> None:
        """Close every executor that was created."""
        for executor in self._live.values():
            executor.close()
        self._live.clear()
