"""Run commands on this machine: ``bash -c`` in its own process group.

On timeout or cancel the whole process group is killed (SIGTERM, then SIGKILL
after a grace period), not merely abandoned, and the output read so far is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path

from engine.core.executors import OutputCallback, Shell
from engine.core.executors.streams import OutputStream
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)

SHELL = "/bin/bash"
KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a timed-out process group."""
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


def _gather_more(proc: subprocess.Popen[bytes], cancel: threading.Event | None, deadline: float) -> None:
    """Wait :data:`GATHER` seconds (less at the deadline; a cancel or the command's exit ends it)
    before reading again.

    Fifty hosts printing a line every 10 ms were 5,000 reads and events a second,
    most of a core for the runner's threads; read every 50 ms they are about 1,000,
    and a line shows at most 50 ms later. Only small reads wait: a full read
    (64 KiB) goes on at once, so a fast writer is never held back. A command that
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


def kill_process_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """SIGTERM ``proc``'s process group, wait up to ``grace`` seconds, then SIGKILL what is left."""
    pgid = proc.pid  # start_new_session=True made the leader's pid the group id
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never looks empty
        if not group_alive(pgid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return once the group is really gone (bounded).
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        proc.poll()
        if not group_alive(pgid):
            return
        time.sleep(0.01)
    log.warning("process group %d still has live processes after SIGKILL", pgid)


class LocalExecutor:
    """Runs shell commands on this machine (an ``Executor[Shell]``)."""

    def __init__(self, shell: str = SHELL) -> None:
        self.shell = shell

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
        proc = subprocess.Popen(
            [self.shell, "-c", task.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        streams = {
            proc.stdout.fileno(): OutputStream("stdout", on_output),
            proc.stderr.fileno(): OutputStream("stderr", on_output),
        }
        timed_out = cancelled = False
        try:
            timed_out, cancelled = self._pump(proc, streams, started + timeout, cancel)
        except BaseException:
            # Ctrl-C or a failing subscriber: never leave the command running behind us.
            kill_process_group(proc)
            proc.wait()
            raise
        finally:
            for stream in streams.values():
                stream.feed(b"", final=True)
            proc.stdout.close()
            proc.stderr.close()
        if timed_out or cancelled:
            kill_process_group(proc)
        rc = proc.wait()
        out, err = streams[min(streams)], streams[max(streams)]
        return CommandResult(
            rc=None if timed_out or cancelled else rc,
            stdout=out.text,
            stderr=err.text,
            duration=time.monotonic() - started,
            timed_out=timed_out,
            cancelled=cancelled,
            truncated=out.truncated or err.truncated,
        )

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        streams: dict[int, OutputStream],
        deadline: float,
        cancel: threading.Event | None,
    ) -> tuple[bool, bool]:
        """Read both pipes until EOF, the deadline or a cancel; returns (timed_out, cancelled)."""
        exited_at: float | None = None
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
                    else:
                        selector.unregister(fd)
                if small:
                    _gather_more(proc, cancel, deadline)
        return False, False

    def close(self) -> None:
        """Nothing to release for local commands."""
