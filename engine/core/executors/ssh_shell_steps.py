"""A step in the host's persistent shell, and each host's idle shells: the SSH executor's fast path.

:class:`ShellSteps` runs an unescalated step in the host's persistent shell
(:mod:`engine.core.executors.ssh_shell`) with every guarantee a session of its own gives — its
output streamed and bounded, its timeout or cancel ending it on the host (through the executor's
kill, lent as :class:`Lent`), the host's guard told about a long command — and keeps each host's
idle shells between steps. It answers ``None`` when the shell ended before it started the
command: the executor then runs that step in a session of its own, and every later step on that
host too when a new shell did so.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, OutputCallback
from engine.core.executors.process_trees import KILL_GRACE
from engine.core.executors.ssh_remote import EXIT_DRAIN, GUARD_AFTER, Guard, MarkedStderr
from engine.core.executors.ssh_shell import (
    Outcome,
    PersistentShell,
    await_group,
    can_run,
    drain,
    wait_for_step,
)
from engine.core.executors.streams import OutputStream
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lent:
    """What the SSH executor lends: its kill (group and mark, over a second channel), the host's
    guard, forgetting a dead connection, and whether a host is still connected."""

    kill: Callable[[Host, paramiko.SSHClient, int | None, str], str]
    guard: Callable[[Host, paramiko.SSHClient], Guard | None]
    forget: Callable[[Host], None]
    connected: Callable[[str], bool]


class ShellSteps:
    """Steps run in persistent shells, and the idle shells of every host."""

    def __init__(self, *, marker: str, options: ExecutionOptions, forms: tuple[str, ...], lend: Lent) -> None:
        self._marker = marker
        self._options = options
        self._forms = forms
        self._lend = lend
        self._idle: dict[str, list[PersistentShell]] = {}
        """Each host's idle persistent shells: one, unless steps ran at once."""
        self._no_shell: set[str] = set()
        """Hosts whose persistent shell could not run a command: every step there has a session."""
        self._lock = threading.Lock()

    def can_run(self, name: str, command: str, env: dict[str, str]) -> bool:
        """Whether this step may go to the host's persistent shell (its framing can carry it)."""
        return name not in self._no_shell and can_run(command, env)

    def execute(
        self,
        host: Host,
        client: paramiko.SSHClient,
        command: str,
        env: dict[str, str],
        token: str,
        started: float,
        timeout: float,
        on_output: OutputCallback | None,
        cancel: threading.Event | None,
    ) -> CommandResult | None:
        """Run the command in the host's persistent shell (:mod:`.ssh_shell`); ``None`` when that
        shell ended before it started the command (the caller runs it in a session of its own)."""
        shell = self._take(host, client)
        try:
            shell.start(token, env, command)
        except Exception as exc:
            shell.close()
            self._lend.forget(host)
            raise ExecutorError(host.name, f"cannot start the command: connection lost ({exc})") from None
        limit = self._options.output_limit
        out = OutputStream("stdout", on_output, limit=limit, forms=self._forms)
        err_stream = OutputStream("stderr", on_output, limit=limit, forms=self._forms)
        err = MarkedStderr(self._marker, err_stream)
        out_end, err_end = shell.streams(out, err)
        guarded: list[Guard] = []

        def guard_it() -> bool:  # the command runs long: make sure a lost connection cannot orphan it
            if err.pgid is None:
                return False
            guard = self._lend.guard(host, client)
            if guard is not None:
                guard.send(f"watch {err.pgid} {math.ceil(started + timeout - time.monotonic())} {token}")
                guarded.append(guard)
            return True

        try:
            outcome = wait_for_step(
                shell,
                out_end,
                err_end,
                deadline=started + timeout,
                cancel=cancel,
                guard_at=time.monotonic() + GUARD_AFTER,
                long_running=guard_it,
            )
        except BaseException:  # Ctrl-C: never leave the command running behind us
            with contextlib.suppress(Exception):
                await_group(shell, out_end, err_end, lambda: err.pgid is not None)
            self._lend.kill(host, client, err.pgid, token)
            shell.close()
            raise
        left = ""
        if outcome in (Outcome.TIMED_OUT, Outcome.CANCELLED):
            await_group(shell, out_end, err_end, lambda: err.pgid is not None)
            left = self._lend.kill(host, client, err.pgid, token)
            drain(shell, out_end, err_end, KILL_GRACE, to_end=True)
        elif outcome is Outcome.CONNECTION_LOST:
            shell.close()
            self._lend.forget(host)
            raise ExecutorError(
                host.name,
                "connection lost during the step (sshd went away or the network dropped); "
                "the host's guard ends the command at the step's deadline",
            )
        elif outcome is Outcome.SHELL_GONE:
            shell.close()
            if err.pgid is None:  # the driver never started the command: a session of its own will
                if shell.steps == 1:
                    log.warning("%s: no persistent shell (it ended at once); a session per step", host.name)
                    with self._lock:
                        self._no_shell.add(host.name)
                return None
            raise ExecutorError(
                host.name, "the host's shell session ended during the step; its result is unknown"
            )
        elif out_end.still_running or err_end.still_running:
            drain(shell, out_end, err_end, EXIT_DRAIN, to_end=False)  # what a session's step would get
        for guard in guarded:
            guard.send(f"done {err.pgid}")
        rc = err_end.rc if outcome is Outcome.ENDED else None
        if (
            outcome is Outcome.ENDED
            and rc is not None
            and rc == out_end.rc
            and not (out_end.still_running or err_end.still_running)
        ):
            self._give_back(host.name, shell)
        else:
            shell.close()
        if outcome is Outcome.ENDED and rc is None:
            raise ExecutorError(host.name, "the host's shell session answered what Cairn cannot read")
        out_end.flush()
        err_end.flush()
        out.feed(b"", final=True)
        err.finish()
        if left:
            err_stream.note(left, own_line=True)
        return CommandResult(
            rc=rc,
            stdout=out.text,
            stderr=err_stream.text,
            duration=time.monotonic() - started,
            timed_out=outcome is Outcome.TIMED_OUT,
            cancelled=outcome is Outcome.CANCELLED,
            truncated=out.truncated or err_stream.truncated,
        )

    def _take(self, host: Host, client: paramiko.SSHClient) -> PersistentShell:
        """An idle persistent shell of ``host``, or a new one."""
        with self._lock:
            idle = self._idle.get(host.name, [])
            while idle:
                shell = idle.pop()
                if not shell.gone:
                    return shell
                shell.close()
        try:
            transport = client.get_transport()
            assert transport is not None
            return PersistentShell.open(transport, self._marker, self._options.connect_timeout)
        except Exception as exc:  # the connection died between steps
            self._lend.forget(host)
            raise ExecutorError(host.name, f"cannot start the command: connection lost ({exc})") from None

    def _give_back(self, name: str, shell: PersistentShell) -> None:
        with self._lock:  # checked under this lock: drop() after a forget cannot miss this shell
            if self._lend.connected(name):
                self._idle.setdefault(name, []).append(shell)
                return
        shell.close()  # the host was forgotten meanwhile

    def drop(self, name: str) -> None:
        """Close the host's idle shells (its connection is gone, or is being replaced)."""
        with self._lock:
            shells = self._idle.pop(name, [])
        for shell in shells:
            shell.close()

    def close(self) -> None:
        """Close every idle shell (the run is over)."""
        with self._lock:
            shells = [shell for idle in self._idle.values() for shell in idle]
            self._idle.clear()
        for shell in shells:
            shell.close()
