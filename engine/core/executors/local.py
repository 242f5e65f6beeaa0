"""Run commands on this machine: ``bash -c`` in its own process group, marked as the step's.

The command's environment is Cairn's, plus the step's secret inputs (never on its command
line) and the step's mark (:mod:`engine.core.executors.step_env`). On timeout or cancel every
process of the step is killed — its group and whatever carries the mark, so also what left
the group (SIGTERM, then SIGKILL after a grace period: :mod:`engine.core.executors.process_trees`)
— and the output read so far is kept; a process that could not be killed is named in stderr.

A step with ``become`` runs through ``sudo`` instead (:mod:`engine.core.executors.escalation`):
its variables and the password go on sudo's stdin, never into an environment, and the kill runs
through the same sudo, since the step's processes are another user's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import selectors
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine.core.executors import ExecutionOptions, OutputCallback, Redact, Shell
from engine.core.executors.escalation import (
    EscalatedStderr,
    Escalation,
    EscalationFailed,
    StreamSink,
    escalation_for,
)
from engine.core.executors.process_trees import KILL_GRACE, end_step, kill_script, survivors_note
from engine.core.executors.step_env import STEP_ENV, checked_env, new_token
from engine.core.executors.streams import OutputStream
from engine.core.lines import redacted_forms
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)

SHELL = "/bin/bash"
_EXIT_DRAIN = 1.0
"""After the command exits, seconds to wait for a background child to close the pipes."""
_POLL = 0.1
GATHER = 0.05
"""Seconds to let output gather after a small read, so that the next read takes several lines at once."""
_EXIT_CHECK = 0.005
"""While output gathers, how often to look whether the command has exited (or the run was cancelled)."""


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` is running (zombies waiting to be reaped do not count)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no /proc: fall back to asking the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


class _ReadRate:
    """Bytes read in the last two :data:`GATHER` windows: a writer that fills a pipe (64 KiB) within
    them is fast, and is read without the gathering wait.

    Waiting after every small read held a fast writer back: the pipe filled during the wait, the
    next read was full and the one after small again, so 100 MB on one line took 19 s in 385 waits
    (0.3 s without them).
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.now = 0
        self.before = 0

    def add(self, size: int) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed >= GATHER:
            self.before = self.now if elapsed < 2 * GATHER else 0
            self.now, self.started = 0, time.monotonic()
        self.now += size

    def fast(self) -> bool:
        return self.now + self.before >= 65536


def _gather_more(proc: subprocess.Popen[bytes], cancel: threading.Event | None, deadline: float) -> None:
    """Wait :data:`GATHER` seconds (less at the deadline; a cancel or the command's exit ends it)
    before reading again.

    Fifty hosts printing a line every 10 ms were 5,000 reads and events a second,
    most of a core for the runner's threads; read every 50 ms they are about 1,000,
    and a line shows at most 50 ms later. Only small reads from a slow writer wait: a
    full read (64 KiB) goes on at once, and so does any read while the writer is fast
    (:class:`_ReadRate`), so a fast writer is never held back. A command that
    exits ends the wait: what it wrote is in the pipes already, and every quick step
    (most checks, the preflight probe) would otherwise take 50 ms longer than it ran.
    """
    end = min(time.monotonic() + GATHER, deadline)
    while (left := end - time.monotonic()) > 0:
        try:
            proc.wait(timeout=min(left, _EXIT_CHECK))
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                return
            continue
        return


class LocalExecutor:
    """Runs shell commands on this machine (an ``Executor[Shell]``)."""

    def __init__(
        self, options: ExecutionOptions | None = None, *, redact: Redact | None = None, shell: str = SHELL
    ) -> None:
        self.options = options or ExecutionOptions()
        self.shell = shell
        self._forms = redacted_forms(redact)

    def connect(self, host: Host) -> None:
        """Nothing to connect to: the commands run here."""

    def describe(self, host: Host) -> str:
        """Where ``host``'s commands run: here."""
        return "local: this machine"

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
        """Run the task's command with bash; see the module docstring for timeout semantics."""
        started = time.monotonic()
        token = new_token()
        env = checked_env(host.name, task.env)
        escalation = None
        if task.become is not None:
            escalation = escalation_for(host.name, task.become, login=_login(), token=token, env=env)
        proc = self._start(host, task.command, token, env, escalation)
        assert proc.stdout is not None and proc.stderr is not None
        limit = self.options.output_limit
        out = OutputStream("stdout", on_output, limit=limit, forms=self._forms)
        err = OutputStream("stderr", on_output, limit=limit, forms=self._forms)
        said = None if escalation is None else escalation.stderr(err, send=_writer(proc), close=_closer(proc))
        err_in: StreamSink = err if said is None else said
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err_in}
        timed_out = cancelled = False
        try:
            timed_out, cancelled = self._pump(proc, streams, started + timeout, cancel)
        except BaseException:
            # Ctrl-C or a failing subscriber: never leave the command running behind us.
            self._end(proc, token, escalation, said)
            proc.wait()
            raise
        finally:
            for stream in streams.values():
                stream.feed(b"", final=True)
            proc.stdout.close()
            proc.stderr.close()
            _closer(proc)()
        if timed_out or cancelled:
            left = self._end(proc, token, escalation, said)
            if left:
                log.warning("%s: processes of a killed step are still running: %s", host.name, left.strip())
                err.note(left, own_line=True)
        rc = proc.wait()
        if escalation is not None and said is not None and not said.ready and not (timed_out or cancelled):
            raise EscalationFailed(host.name, escalation.failure(rc, said))
        return CommandResult(
            rc=None if timed_out or cancelled else rc,
            stdout=out.text,
            stderr=err.text,
            duration=time.monotonic() - started,
            timed_out=timed_out,
            cancelled=cancelled,
            truncated=out.truncated or err.truncated,
        )

    def _start(
        self, host: Host, command: str, token: str, env: dict[str, str], escalation: Escalation | None
    ) -> subprocess.Popen[bytes]:
        """The command's process: bash with the step's variables in its environment, or (escalated)
        sudo, whose environment holds only the mark; the variables go on its stdin."""
        if escalation is None:
            return subprocess.Popen(
                [self.shell, "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, **env, STEP_ENV: token},
            )
        try:
            proc = subprocess.Popen(
                escalation.argv(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, STEP_ENV: token},  # sudo itself carries the mark too
            )
        except FileNotFoundError:
            raise EscalationFailed(host.name, escalation.not_installed()) from None
        _writer(proc)(escalation.opening())
        if not escalation.handshake:
            _closer(proc)()
        return proc

    def _end(
        self,
        proc: subprocess.Popen[bytes],
        token: str,
        escalation: Escalation | None,
        said: EscalatedStderr | None,
    ) -> str:
        """Kill every process of the step; returns what the step's stderr says about survivors ("" none)."""
        if escalation is None:
            return survivors_note(end_step(token, proc.pid, reap=proc.poll))
        # The command runs as another user: only that user may read and signal its processes.
        groups = [proc.pid] + ([said.pgid] if said is not None and said.pgid else [])
        try:
            done = subprocess.run(
                escalation.kill_argv(kill_script(token, groups)),
                input=escalation.kill_input(),
                capture_output=True,
                timeout=2 * KILL_GRACE + 10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cairn: could not end the step's processes as {escalation.become.user} ({exc})\n"
        finally:
            proc.poll()
        output = (done.stdout + done.stderr).decode(errors="replace")
        return escalation.kill_note(done.returncode, output)

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        streams: dict[int, StreamSink],
        deadline: float,
        cancel: threading.Event | None,
    ) -> tuple[bool, bool]:
        """Read both pipes until EOF, the deadline or a cancel; returns (timed_out, cancelled)."""
        exited_at: float | None = None
        rate = _ReadRate()
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    return False, True
                if now >= deadline:
                    return True, False
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > _EXIT_DRAIN:
                    log.debug("pid %d exited; a background child still holds its output open", proc.pid)
                    return False, False
                small = False
                for key, _ in selector.select(timeout=min(_POLL, deadline - now)):
                    fd = int(key.fd)
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if data:
                        streams[fd].feed(data)
                        small = small or len(data) < 65536
                        rate.add(len(data))
                    else:
                        selector.unregister(fd)
                if small and not rate.fast():
                    _gather_more(proc, cancel, deadline)
        return False, False

    def close(self) -> None:
        """Nothing to release for local commands."""


def _login() -> str:
    """Who this process runs as (named when sudo refuses it)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _writer(proc: subprocess.Popen[bytes]) -> Callable[[bytes], None]:
    """Writes to the command's stdin; a command that ended (or closed it) reads nothing more."""

    def write(data: bytes) -> None:
        if proc.stdin is None or proc.stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(data)
            proc.stdin.flush()

    return write


def _closer(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Ends the command's stdin (once; later calls do nothing)."""

    def close() -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()

    return close
