"""What runs on an SSH host beside a step's command, so that a timeout or a lost connection can end it.

* The wrapper's first line on stderr names the login shell's process group (the command's
  group); :class:`MarkedStderr` takes it out before the output is streamed.
* The host's *guard* (:data:`GUARD_SCRIPT`, one bash loop per connection, driven by
  :class:`Guard`) knows each long command's group, mark and deadline; when its stdin closes
  with commands still watched (the connection is gone), it ends them at their deadlines. A
  command that runs as another user (``become``) is ended through the same ``sudo`` it ran
  with (the password, when there is one, is on the guard's stdin too, never a command line).
* What a command's stdin gets first (:func:`send_input`): its variables, or for an escalated
  command what :class:`~engine.core.executors.escalation.Escalation` says.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shlex
import threading
from collections.abc import Mapping

import paramiko

from engine.core.executors.escalation import EscalatedStderr, Escalation, StreamSink
from engine.core.executors.process_trees import kill_body
from engine.core.executors.step_env import STEP_ENV, env_payload

log = logging.getLogger(__name__)

GUARD_AFTER = 1.0
"""Seconds a command runs before the host's guard is told about it (and started, the first time)."""
EXIT_DRAIN = 1.0
"""After a command ends, seconds to wait for a background child of it to close the output."""


def wait_readable(channel: paramiko.Channel, timeout: float) -> None:
    """Wait until ``channel`` has something to read (or its end), at most ``timeout`` seconds.

    poll(2), never select(2): a run on hundreds of hosts holds more than 1,024 descriptors, and
    select cannot watch one numbered past that ("filedescriptor out of range in select()")."""
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    poller.poll(max(0.0, timeout) * 1000)


GUARD_SCRIPT = r"""
declare -A deadline mark group how secret
kill_body=@KILL_BODY@
while read -r verb pgid rest; do
  case $verb in
    watch) read -r seconds token <<< "$rest"; printf -v now '%(%s)T' -1
      deadline[$pgid]=$((now + seconds)); mark[$pgid]=$token;;
    escalated) read -r g h <<< "$rest"; [ "$g" = - ] && g=; group[$pgid]=$g; how[$pgid]=$h;;
    password) IFS= read -r p; secret[$pgid]=$p; unset p;;
    done) unset "deadline[$pgid]" "mark[$pgid]" "group[$pgid]" "how[$pgid]" "secret[$pgid]";;
  esac
done
marked() { grep -lsxzF -- "@STEP_ENV@=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }
for pgid in "${!deadline[@]}"; do
  ( printf -v now '%(%s)T' -1; left=$(( ${deadline[$pgid]} - now )); token=${mark[$pgid]}
    if [ "$left" -gt 0 ]; then sleep "$left"; fi
    if [ -n "${how[$pgid]}" ]; then
      eval "sudo_=(${how[$pgid]})"
      script="exec </dev/null; m='@STEP_ENV@=$token'; g='$pgid ${group[$pgid]}'
$kill_body"
      if [ -n "${secret[$pgid]+set}" ]; then
        printf '%s\n' "${secret[$pgid]}" | "${sudo_[@]}" sh -c "$script" >/dev/null 2>&1
      else
        "${sudo_[@]}" sh -c "$script" </dev/null >/dev/null 2>&1
      fi
    else
      kill -TERM -- "-$pgid" $(marked "$token") 2>/dev/null; sleep 2
      kill -KILL -- "-$pgid" $(marked "$token") 2>/dev/null
    fi ) &
done
wait
""".replace("@STEP_ENV@", STEP_ENV).replace("@KILL_BODY@", shlex.quote(kill_body()))
"""Runs on each host for the life of its connection. Cairn tells it each command's process group,
timeout and mark (and, for a command run as another user, that command's own group and the sudo
to end it with: ``escalated PGID GROUP SUDO…``, then ``password PGID`` and the password on the next
line when there is one); when its stdin closes while a command still runs (the connection was
lost), it ends that command's group and marked processes at the command's deadline, as Cairn
would have."""
HEAD_LIMIT = 64 * 1024
"""Bytes of stderr held while waiting for the wrapper's process-group line."""


class Guard:
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


class MarkedStderr:
    """stderr with the wrapper's process-group line taken out (it comes before any command output)."""

    def __init__(self, marker: str, stream: StreamSink) -> None:
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
        if len(self._head) > HEAD_LIMIT and b"\n" not in self._head:  # no marker line coming: a login
            head, self._head = self._head, b""  # script's endless line, passed on as output
            self.stream.feed(head)
            return
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


def send_input(channel: paramiko.Channel, env: Mapping[str, str], escalation: Escalation | None) -> None:
    """Start the command's stdin: its variables (on stdin, never in the exec request: that is a
    command line on the host), or what an escalated command gets first. Then stdin ends, unless
    the escalated command's variables wait for its first line (:func:`escalated_stderr`)."""
    if escalation is not None:
        channel.sendall(escalation.opening())
        if escalation.handshake:
            return
    elif env:
        channel.sendall(env_payload(env))
    channel.shutdown_write()  # the command's stdin ends here, as a local command's does


def escalated_stderr(
    channel: paramiko.Channel, escalation: Escalation | None, stream: StreamSink
) -> EscalatedStderr | None:
    """The filter of an escalated command's stderr (``None`` for a plain one), which sends the
    variables on the channel when the wrapper says it runs, and ends the channel's input."""
    if escalation is None:
        return None

    def send(data: bytes) -> None:
        with contextlib.suppress(Exception):  # the command ended: it reads nothing more
            channel.sendall(data)

    def close() -> None:
        with contextlib.suppress(Exception):
            channel.shutdown_write()

    return escalation.stderr(stream, send=send, close=close)
