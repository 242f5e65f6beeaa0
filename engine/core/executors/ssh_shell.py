"""A persistent shell per SSH host: a step runs as a child of it, not in an SSH session of its own.

A session per step costs the host a fork of sshd, a session's set-up and a login bash, and
Cairn a channel's requests and replies (~3 ms of the host's CPU and ~1.1 ms of Cairn's for
``true``, measured under load). Instead, the first unescalated step on a host opens one
session running :data:`DRIVER` (bash), and that step and every later one is written on the
session's stdin, framed by NUL bytes (no command, variable or token holds one): the step's mark,
its variables (the ``export`` script of :func:`~engine.core.executors.step_env.env_payload`) and
its command. For each step the driver forks a child in a process group of its own (``set -m``),
stdin from ``/dev/null``, which reports its group on stderr (the same line
:class:`~.ssh_remote.MarkedStderr` reads from a session's wrapper), sets the mark and the
variables (in the child only: they never reach the next step, nor a command line) and runs the
command there with ``eval`` — or with ``exec bash -c`` when it uses ``$$``, which must be its own
shell's pid. Its output goes straight to the session's two streams: it streams as it arrives.

The child is a fork, not an exec: its own ``/proc/PID/environ`` lacks the mark (the programs it
starts carry it), so a kill finds it by its group, which is why a kill first waits for the group
line (:func:`await_group`).

When the child ends, the driver writes an end line on **both** streams: a random per-session
marker (sent on stdin, never on a command line), the exit code, and whether a process of the
step still holds the output. :class:`StepEnd` finds the marker anywhere in a stream — no newline
precedes it, so the output before it is exactly the command's, last newline or not — and holds
back only a tail that may be the marker's beginning.

The session is dropped (its input closed: the driver exits) and the next step starts a new one
when a step timed out or was cancelled (it was killed as before: by group and mark, over a
second channel), when a process it started still holds the output (after the same drain a
session's step gets), and when the driver's output makes no sense. A driver that ends before it
reported the step's group never ran the command: the executor runs it in a session of its own
(and, when that driver was new, every later step on that host too). The exit code of a command
killed by a signal is the shell's ``128 + signal`` (a session of its own reports -1).
"""

from __future__ import annotations

import contextlib
import enum
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import paramiko

from engine.core.executors.ssh_remote import wait_readable
from engine.core.executors.step_env import STEP_ENV, env_payload

DRIVER = r"""
exec 3>&2 2>/dev/null
set -m
IFS= read -r -d '' cairn_p_ && IFS= read -r -d '' cairn_e_ || exit 0
while IFS= read -r -d '' cairn_t_ && IFS= read -r -d '' cairn_v_ && IFS= read -r -d '' cairn_c_; do
  (
    printf '%s %s\n' "$cairn_p_" "$BASHPID" >&2
    set +m
    @STEP_ENV@=$cairn_t_; export @STEP_ENV@
    eval "$cairn_v_"
    unset cairn_p_ cairn_e_ cairn_t_ cairn_v_ cairn_j_ cairn_r_ cairn_d_
    case $cairn_c_ in
      e*) cairn_c_=${cairn_c_#e}; eval "$cairn_c_";;
      *) exec bash -c "${cairn_c_#x}";;
    esac
  ) </dev/null 2>&3 3>&- &
  cairn_j_=$!
  wait "$cairn_j_"; cairn_r_=$?
  cairn_d_=0
  if kill -0 -- "-$cairn_j_"; then
    for cairn_f_ in /proc/[0-9]*/fd/[12]; do
      case $cairn_f_ in "/proc/$$/"*) continue;; esac
      if [ "$cairn_f_" -ef /dev/fd/1 ] || [ "$cairn_f_" -ef /dev/fd/3 ]; then cairn_d_=1; break; fi
    done
  fi
  printf '%s %s %s\n' "$cairn_e_" "$cairn_r_" "$cairn_d_"
  printf '%s %s %s\n' "$cairn_e_" "$cairn_r_" "$cairn_d_" >&3
done
""".replace("@STEP_ENV@", STEP_ENV)
"""Runs in the host's persistent session. After a step, when something of its group still runs,
the driver looks for a process still holding the session's output (a background child that
may still write): the end line says so, and that session is not used again. A command record starts with ``e`` (run it in the forked
child itself: no new bash, ~1.5 ms of the host's CPU less per step) or ``x`` (``exec bash -c``:
for a command that uses ``$$``, which names the persistent shell in the child). Its own stderr goes nowhere (bash's job notices, such as
``Killed``, must not land in a step's stderr); the steps' stderr is the session's, on fd 3."""

_DRIVER_VARIABLE = "cairn_"
"""The driver's own variables start so: a step's variable of that name would overwrite one."""
_LINE_END = b"\n"


class Sink(Protocol):
    """Where a stream's bytes go (an :class:`~.streams.OutputStream`, a :class:`~.ssh_remote.MarkedStderr`)."""

    def feed(self, data: bytes) -> None: ...


def own_bash(command: str) -> bool:
    """Whether the command needs a bash of its own: ``$$`` must be its shell's pid, never the driver's."""
    return "$$" in command or "${$}" in command


def can_run(command: str, env: Mapping[str, str]) -> bool:
    """Whether the step can run in the persistent shell (else in a session of its own)."""
    return "\x00" not in command and not any(name.startswith(_DRIVER_VARIABLE) for name in env)


class StepEnd:
    """One stream of the persistent shell during a step: passes the command's bytes on, exactly, and
    finds the driver's end line (``MARKER RC STILL_RUNNING``)."""

    def __init__(self, marker: bytes, sink: Sink) -> None:
        self.marker = marker + b" "
        self.sink = sink
        self.rc: int | None = None
        self.still_running = False
        """Something the step started still runs and holds the output, or wrote after the end line."""
        self.garbled = False
        """The end line did not parse: the session cannot be trusted with another step."""
        self._held = b""

    @property
    def ended(self) -> bool:
        return self.rc is not None or self.garbled

    def feed(self, data: bytes) -> None:
        if self.ended:  # after the end line: a background child of the step, still writing
            if data:
                self.still_running = True
                self.sink.feed(data)
            return
        buffer = self._held + data
        at = buffer.find(self.marker)
        if at < 0:
            keep = _marker_start(buffer, self.marker)
            self._held = buffer[len(buffer) - keep :] if keep else b""
            self.sink.feed(buffer[: len(buffer) - keep])
            return
        self.sink.feed(buffer[:at])
        rest = buffer[at + len(self.marker) :]
        if _LINE_END not in rest:
            self._held = buffer[at:]  # the end line comes in two pieces
            return
        self._held = b""
        line, after = rest.split(_LINE_END, 1)
        self._end(line)
        self.feed(after)

    def _end(self, line: bytes) -> None:
        words = line.split()
        if len(words) != 2 or not words[0].isdigit() or words[1] not in (b"0", b"1"):
            self.garbled = True
            return
        self.rc = int(words[0])
        self.still_running = self.still_running or words[1] == b"1"

    def flush(self) -> None:
        """The stream ended without its end line: what was held back is output too."""
        if self._held:
            held, self._held = self._held, b""
            self.sink.feed(held)


def _marker_start(buffer: bytes, marker: bytes) -> int:
    """Length of the longest end of ``buffer`` that begins ``marker`` (held back: it may be the marker)."""
    first = marker[:1]  # a control character: rare in output, so this is almost always one rfind
    at = buffer.rfind(first, max(0, len(buffer) - len(marker) + 1))
    while at >= 0:
        if marker.startswith(buffer[at:]):
            return len(buffer) - at
        at = buffer.rfind(first, max(0, len(buffer) - len(marker) + 1), at)
    return 0


class PersistentShell:
    """One host's persistent shell session (see the module docstring); used by one step at a time."""

    def __init__(self, channel: paramiko.Channel, pgid_marker: str) -> None:
        self.channel = channel
        self.end_marker = f"\x1ecairn-end-{secrets.token_hex(8)}"
        self.steps = 0
        channel.sendall(f"{pgid_marker}\0{self.end_marker}\0".encode())

    @classmethod
    def open(cls, transport: paramiko.Transport, pgid_marker: str, timeout: float) -> PersistentShell:
        """Start the driver in a new session of ``transport`` (raises what paramiko raises)."""
        channel = transport.open_session(timeout=timeout)
        channel.exec_command(f"exec bash -c {shlex.quote(DRIVER)}")
        return cls(channel, pgid_marker)

    def start(self, token: str, env: Mapping[str, str], command: str) -> None:
        """Hand the driver a step: its mark, its variables and its command."""
        self.steps += 1
        how = b"x" if own_bash(command) else b"e"
        record = token.encode() + b"\0" + env_payload(env) + b"\0" + how + command.encode() + b"\0"
        self.channel.sendall(record)

    def streams(self, out: Sink, err: Sink) -> tuple[StepEnd, StepEnd]:
        """The filters of this step's stdout and stderr."""
        marker = self.end_marker.encode()
        return StepEnd(marker, out), StepEnd(marker, err)

    @property
    def gone(self) -> bool:
        """The driver ended (its session's output closed or its exit status came)."""
        return bool(self.channel.eof_received or self.channel.exit_status_ready() or self.channel.closed)

    def close(self) -> None:
        """End the driver: its input closes and its loop ends."""
        with contextlib.suppress(Exception):
            self.channel.shutdown_write()
            self.channel.close()


class Outcome(enum.Enum):
    """How waiting for a step in the persistent shell ended."""

    ENDED = "ended"
    """The driver wrote the end line on both streams."""
    TIMED_OUT = "timed out"
    """The step's deadline passed first."""
    CANCELLED = "cancelled"
    """The run's cancel was set first."""
    SHELL_GONE = "shell gone"
    """The driver's session ended before the step did."""
    CONNECTION_LOST = "connection lost"
    """The SSH connection dropped."""


_POLL = 0.1
_GROUP_WAIT = 1.0
"""Seconds a kill waits for the step's group line (written the moment the child starts)."""


def wait_for_step(
    shell: PersistentShell,
    out: StepEnd,
    err: StepEnd,
    *,
    deadline: float,
    cancel: threading.Event | None,
    guard_at: float,
    long_running: Callable[[], bool],
) -> Outcome:
    """Read both streams until the step's end line is on both, the deadline, a cancel, or the end of
    the session. ``long_running`` is called from ``guard_at`` on until it returns true (it needs the
    step's group, which arrives on stderr)."""
    channel = shell.channel
    guarded = False
    while True:
        now = time.monotonic()
        if cancel is not None and cancel.is_set():
            return Outcome.CANCELLED
        if now >= deadline:
            return Outcome.TIMED_OUT
        if not guarded and now >= guard_at:
            guarded = long_running()
        wait_readable(channel, min(_POLL, deadline - now))
        read_ready(channel, out, err)
        if out.ended and err.ended:
            return Outcome.ENDED
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            return Outcome.CONNECTION_LOST
        if shell.gone:
            read_ready(channel, out, err)
            return Outcome.ENDED if out.ended and err.ended else Outcome.SHELL_GONE


def read_ready(channel: paramiko.Channel, out: StepEnd, err: StepEnd) -> None:
    """Pass on what has arrived: stderr first (the step's group is reported there before it runs)."""
    while channel.recv_stderr_ready():
        err.feed(channel.recv_stderr(65536))
    while channel.recv_ready():
        out.feed(channel.recv(65536))


def await_group(shell: PersistentShell, out: StepEnd, err: StepEnd, known: Callable[[], bool]) -> None:
    """Before a kill: read until the step's group is known. The child writes it before it runs the
    command, and the command, forked from the driver, carries the mark in its shell variables only,
    not in the environment a kill looks for: the group is how the kill finds it."""
    deadline = time.monotonic() + _GROUP_WAIT
    read_ready(shell.channel, out, err)
    while not known() and time.monotonic() < deadline and not shell.gone:
        wait_readable(shell.channel, _POLL)
        read_ready(shell.channel, out, err)


def drain(shell: PersistentShell, out: StepEnd, err: StepEnd, seconds: float, *, to_end: bool) -> None:
    """Keep reading for up to ``seconds``: until both end lines came (``to_end``: after a kill), or
    until the session's output closes (what a still-running child of the step writes meanwhile)."""
    channel = shell.channel
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not shell.gone:
        if to_end and out.ended and err.ended:
            return
        wait_readable(channel, _POLL)
        read_ready(channel, out, err)
    read_ready(channel, out, err)
