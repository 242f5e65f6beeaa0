"""What runs on an SSH host beside a step's command, so that a timeout or a lost connection can end it.

* The wrapper's first line on stderr names the login shell's process group (the command's
  group); :class:`MarkedStderr` takes it out before the output is streamed.
* The host's *guard* (:data:`GUARD_SCRIPT`, one bash loop per connection, driven by
  :class:`Guard`) knows each long command's group, mark and deadline; when its stdin closes
  with commands still watched (the connection is gone), it ends them at their deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import paramiko

from engine.core.executors.step_env import STEP_ENV
from engine.core.executors.streams import OutputStream

log = logging.getLogger(__name__)

GUARD_SCRIPT = r"""
declare -A deadline mark
while read -r verb pgid seconds token; do
  case $verb in
    watch) printf -v now '%(%s)T' -1; deadline[$pgid]=$((now + seconds)); mark[$pgid]=$token;;
    done) unset "deadline[$pgid]" "mark[$pgid]";;
  esac
done
marked() { grep -lsxzF -- "@STEP_ENV@=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }
for pgid in "${!deadline[@]}"; do
  ( printf -v now '%(%s)T' -1; left=$(( ${deadline[$pgid]} - now )); token=${mark[$pgid]}
    if [ "$left" -gt 0 ]; then sleep "$left"; fi
    kill -TERM -- "-$pgid" $(marked "$token") 2>/dev/null; sleep 2
    kill -KILL -- "-$pgid" $(marked "$token") 2>/dev/null ) &
done
wait
""".replace("@STEP_ENV@", STEP_ENV)
"""Runs on each host for the life of its connection. Cairn tells it each command's process group,
timeout and mark; when its stdin closes while a command still runs (the connection was lost), it
ends that command's group and marked processes at the command's deadline, as Cairn would have."""
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
