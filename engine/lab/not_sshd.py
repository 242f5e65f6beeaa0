"""Listeners on loopback that accept TCP on an "SSH" port but do not speak SSH.

A fleet meets them in real life: a host whose sshd hangs before its banner (overloaded, a
stuck PAM or DNS lookup), a firewall or tcpwrappers that closes the connection at once,
another service on port 22. Cairn must fail such a host with one clear line and go on with
the others. Each :class:`NotSshd` is a thread accepting connections on its own port and
treating them as told; it stops (closing every connection) on :meth:`NotSshd.close`.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import threading
from types import TracebackType


class Behaviour(enum.Enum):
    """What a :class:`NotSshd` does with a connection it accepts."""

    SILENT = "silent"
    """Keeps it open and never sends a byte (no banner)."""
    CLOSE = "close"
    """Closes it at once."""
    GARBAGE = "garbage"
    """Sends something that is not an SSH banner (an HTTP answer, then binary bytes) and waits."""


GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + bytes(range(256)) * 4


class NotSshd:
    """A listening socket on ``address`` (a free port) that accepts and misbehaves as ``behaviour`` says."""

    def __init__(self, behaviour: Behaviour, address: str = "127.0.0.1") -> None:
        self.behaviour = behaviour
        self._listener = socket.create_server((address, 0))
        self.address, self.port = self._listener.getsockname()[:2]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"not-sshd {behaviour.value}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            if self.behaviour is Behaviour.CLOSE:
                conn.close()
                continue
            if self.behaviour is Behaviour.GARBAGE:
                with contextlib.suppress(OSError):
                    conn.sendall(GARBAGE)
            with self._lock:
                self._open.append(conn)

    def close(self) -> None:
        """Stop accepting and close every connection held."""
        # shutdown() wakes the accept() blocked in the thread; close() alone may not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def __enter__(self) -> NotSshd:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
