"""``cairn serve``'s connections: a cap on how many, and timeouts for idle, slow and stalled clients.

aiohttp closes a keep-alive connection after its ``keepalive_timeout`` but has no read timeout
for a request's head or body and no cap on connections, so a client that connects and sends
nothing, or sends its request a byte at a time, holds a file descriptor as long as it likes.
Past the process's open-file limit ``accept()`` fails, a real alert waits behind them, and
asyncio logs every failed accept. :class:`ConnectionGuard` wraps each connection's aiohttp
protocol (:class:`GuardedProtocol`, served by :class:`GuardedSite`) and its request handler,
and keeps each connection in one :class:`Phase`:

* **idle** (between requests, or before the first): closed after ``idle_timeout``;
* **head** (the first bytes of a request came, not yet all of its head): answered 408 and
  closed ``header_timeout`` after its first byte, however the bytes trickle in;
* **body** (the head came, not yet all of the body): 408 and closed ``body_timeout`` after the head;
* **busy** (the whole request came; the handler works on it): never timed out here.

At the cap a new connection makes room: the connection idle the longest is closed (one whose
request already waits in the kernel's buffer is not idle), else the one whose request has been
arriving the longest (503 to it), else — every one busy — the newcomer. The cap in force is at
most half the open-file limit (:func:`connection_cap`): the rest is for the journal, the runs
and their SSH connections, and for the connections asyncio accepts in one go before any is
counted (:func:`accept_backlog`). If ``accept()`` runs out of file descriptors all the same
(something else holds them, or the limit came down), idle and slow connections are closed, the
cap comes down to half the current limit, and it is said once per interval
(:meth:`ConnectionGuard.on_loop_exception`), never once per failed accept.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import resource
import socket
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import web

ACCEPT_FAILED = "socket.accept() out of system resource"
"""The message asyncio's event loop reports a failed ``accept()`` with (``selector_events.py``)."""

LISTEN_QUEUE = 128
"""Connections the kernel holds for ``accept()`` (no file descriptor of ours until accepted)."""

Say = Callable[[str, str], None]
"""``say(kind, line)``: tell the operator, at most once per interval per kind (:class:`engine.serve.client_faults.Throttle`)."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Phase(Enum):
    """Where a connection is in its request, which says what it may be closed for."""

    IDLE = "idle"
    """Between requests, or before the first: closed after the idle timeout, or first to make room."""
    HEAD = "head"
    """A request's head is arriving: closed (408) if it has not all come within the header timeout."""
    BODY = "body"
    """The head came and the body is arriving: closed (408) if it has not all come within the body timeout."""
    BUSY = "busy"
    """The whole request came and the handler works on it: left alone."""
    CLOSED = "closed"
    """Closed by the guard or the peer: no longer counted."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The HTTP side's limits (``--max-connections``, ``--header-timeout``, ``--body-timeout``, ``--idle-timeout``)."""

    max_connections: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float


def connection_cap(wanted: int, open_files: int | None = None) -> int:
    """The cap in force: ``wanted``, but at most half of ``open_files`` (default: this process's soft limit)."""
    open_files = _open_files_limit() if open_files is None else open_files
    return max(1, min(wanted, open_files // 2))


def accept_backlog(open_files: int | None = None) -> int:
    """How many connections asyncio accepts in one go, before the guard has counted any: a
    sixteenth of the open-file limit, between 8 and 128, so the cap plus one burst stays under it."""
    open_files = _open_files_limit() if open_files is None else open_files
    return max(8, min(128, open_files // 16))


def _open_files_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class Connection:
    """One client connection as the guard sees it."""

    __slots__ = ("phase", "request", "since", "timer", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.CLOSED
        self.since = 0.0
        """When it entered its phase (the loop's clock)."""
        self.timer: asyncio.TimerHandle | None = None
        self.request: web.BaseRequest | None = None


class ConnectionGuard:
    """Counts the live connections, times each phase out, and makes room at the cap."""

    def __init__(self, limits: ConnectionLimits, say: Say, *, cap: int | None = None) -> None:
        self.limits = limits
        self.cap = cap if cap is not None else connection_cap(limits.max_connections)
        self._say = say
        self._phases: dict[Phase, dict[Connection, None]] = {
            phase: {} for phase in Phase if phase is not Phase.CLOSED
        }
        """The live connections by phase, each in the order it entered it (oldest first)."""
        self._by_transport: dict[asyncio.BaseTransport, Connection] = {}
        self._timeouts = {
            Phase.IDLE: limits.idle_timeout,
            Phase.HEAD: limits.header_timeout,
            Phase.BODY: limits.body_timeout,
        }

    def __len__(self) -> int:
        return sum(len(members) for members in self._phases.values())

    # ------------------------------------------------------------------ wiring

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls: aiohttp's protocol, wrapped."""
        return lambda: GuardedProtocol(self, make())

    def guard_handler(self, handler: Handler) -> Handler:
        """aiohttp's request handler, telling the guard when a request's head came and when it is answered."""

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            connection = self._by_transport.get(request.transport) if request.transport else None
            if connection is not None:
                self._started(connection, request)
            try:
                return await handler(request)
            finally:
                if connection is not None:
                    self._finished(connection)

        return guarded

    def stop(self) -> None:
        """At shutdown, before aiohttp's own: close what waits for a request or for its bytes (503 to
        a request still arriving: nobody will answer it), so a stalled client cannot hold the stop
        up for its whole timeout; a busy request finishes."""
        for phase in (Phase.IDLE, Phase.HEAD, Phase.BODY):
            for connection in list(self._phases[phase]):
                if phase is Phase.IDLE:
                    self._shut(connection)
                else:
                    self._shut(connection, 503, "cairn serve is stopping: send it again")

    # ------------------------------------------------------------------ what the protocol reports

    def opened(self, connection: Connection, transport: asyncio.Transport) -> None:
        connection.transport = transport
        self._by_transport[transport] = connection
        self._enter(connection, Phase.IDLE)
        if len(self) > self.cap:
            self._make_room(connection)

    def receiving(self, connection: Connection) -> None:
        """Bytes came (before aiohttp reads them): on an idle connection, a request's head begins."""
        if connection.phase is Phase.IDLE:
            self._enter(connection, Phase.HEAD)

    def received(self, connection: Connection) -> None:
        """aiohttp has read the bytes: the body may be complete now."""
        request = connection.request
        if connection.phase is Phase.BODY and request is not None and request.content.is_eof():
            self._enter(connection, Phase.BUSY)

    def lost(self, connection: Connection) -> None:
        self._leave(connection)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)
        connection.request = None

    def _started(self, connection: Connection, request: web.BaseRequest) -> None:
        if connection.phase is Phase.CLOSED:
            return
        connection.request = request
        self._enter(connection, Phase.BUSY if request.content.is_eof() else Phase.BODY)

    def _finished(self, connection: Connection) -> None:
        connection.request = None
        if connection.phase is not Phase.CLOSED:
            self._enter(connection, Phase.IDLE)

    # ------------------------------------------------------------------ phases and timers

    def _enter(self, connection: Connection, phase: Phase) -> None:
        self._leave(connection)
        loop = asyncio.get_running_loop()
        connection.phase, connection.since = phase, loop.time()
        self._phases[phase][connection] = None
        timeout = self._timeouts.get(phase)
        if timeout is not None:
            connection.timer = loop.call_at(connection.since + timeout, self._expire, connection)

    def _leave(self, connection: Connection) -> None:
        if connection.phase is not Phase.CLOSED:
            del self._phases[connection.phase][connection]
        connection.phase = Phase.CLOSED
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def _expire(self, connection: Connection) -> None:
        connection.timer = None
        match connection.phase:
            case Phase.HEAD:
                self._shut(
                    connection,
                    408,
                    f"the request head did not all arrive within {self.limits.header_timeout:g} s",
                )
            case Phase.BODY:
                self._shut(
                    connection,
                    408,
                    f"the request body did not all arrive within {self.limits.body_timeout:g} s",
                )
            case _:
                self._shut(connection)

    def _shut(self, connection: Connection, status: int | None = None, why: str = "") -> None:
        """Close ``connection`` (with a short plain answer first, if ``status``); it stops counting at once."""
        transport = connection.transport
        self._leave(connection)
        if transport is None or transport.is_closing():
            return
        if status is not None:
            transport.write(_plain_answer(status, why))
        transport.close()
        # A client that does not read keeps close() waiting on the unsent answer: abort it then.
        asyncio.get_running_loop().call_later(1.0, transport.abort)

    # ------------------------------------------------------------------ making room

    def _next_victim(self, spare: Connection | None = None) -> Connection | None:
        """Who goes first to make room (never ``spare``): the connection idle the longest, else the
        request (head or body) that has been arriving the longest; busy ones never."""
        idle = self._oldest(Phase.IDLE, spare)
        if idle is not None:
            return idle
        arriving = [c for c in (self._oldest(Phase.HEAD, spare), self._oldest(Phase.BODY, spare)) if c]
        return min(arriving, key=lambda c: c.since, default=None)

    def _oldest(self, phase: Phase, spare: Connection | None) -> Connection | None:
        """The connection longest in ``phase`` (each phase keeps its members oldest first)."""
        found, spoke = None, []
        for connection in self._phases[phase]:
            if connection is spare:
                continue
            if phase is Phase.IDLE and _unread(connection.transport):
                # Its request came but is not read yet (a burst of accepts runs before any read):
                # not idle. It counts as the newest request arriving.
                spoke.append(connection)
                continue
            found = connection
            break
        for connection in spoke:
            self._enter(connection, Phase.HEAD)
        return found

    def _make_room(self, newcomer: Connection) -> None:
        self._evict(self._next_victim(spare=newcomer) or newcomer)
        self._say(
            "cap",
            f"{self.cap} connections open (the cap; --max-connections): closing the longest idle "
            "or slowest ones to make room for new ones",
        )

    def _evict(self, connection: Connection) -> None:
        if connection.phase in (Phase.HEAD, Phase.BODY):
            self._shut(connection, 503, "too many connections: the slowest request was closed to make room")
        else:
            self._shut(connection)

    def on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: a failed ``accept()`` for want of file descriptors makes
        room and brings the cap down to half the current limit, said once per interval; anything else
        goes to asyncio's."""
        failure = context.get("exception")
        if context.get("message") != ACCEPT_FAILED or not isinstance(failure, OSError):
            loop.default_exception_handler(context)
            return
        live = len(self)
        if failure.errno in (errno.EMFILE, errno.ENFILE):  # the limit may have come down since the start
            self.cap = min(self.cap, connection_cap(self.limits.max_connections))
        closed = 0
        while (len(self) > self.cap or not closed) and (victim := self._next_victim()) is not None:
            self._evict(victim)
            closed += 1
        self._say(
            "accept",
            f"cannot accept connections: {failure.strerror} (open-file limit "
            f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}, {live} connections open); closed {closed} "
            f"idle or slow ones, at most {self.cap} from now on; accepting again in a second",
        )


def _unread(transport: asyncio.Transport | None) -> int:
    """Bytes the client sent that are still in the kernel's buffer, not yet read (0 if unknown)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        waiting: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0
    return waiting


def _plain_answer(status: int, why: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer with ``why`` as its text."""
    reason = {408: "Request Timeout", 503: "Service Unavailable"}[status]
    body = (why + "\n").encode()
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{retry}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told of what happens on it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._connection = Connection()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._inner.connection_made(transport)
        self._guard.opened(self._connection, transport)

    def data_received(self, data: bytes) -> None:
        self._guard.receiving(self._connection)
        self._inner.data_received(data)
        self._guard.received(self._connection)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.lost(self._connection)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard` (aiohttp's ``TCPSite`` otherwise)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=accept_backlog())
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog
        )
        # asyncio uses the backlog twice: as listen()'s queue and as how many it accepts in one go.
        # Accepted-but-uncounted connections hold file descriptors, so the batch stays small; the
        # kernel's queue costs none, so a second listen() deepens it: a flood waits there instead
        # of having its SYNs (and a real alert's) dropped and retried seconds later.
        for listening in self._server.sockets:
            with socket.socket(fileno=os.dup(listening.fileno())) as same:
                same.listen(LISTEN_QUEUE)
