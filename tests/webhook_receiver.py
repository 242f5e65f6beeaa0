"""A webhook receiver for the tests: a real aiohttp server on loopback that checks Cairn's signature.

It does what docs/notifications.md tells a receiver to do: recompute ``X-Cairn-Signature``
(HMAC-SHA256 with the shared secret over ``<X-Cairn-Timestamp>.<body>``) and compare it in
constant time; a missing or wrong signature is recorded as rejected and answered 401. An
accepted delivery is recorded under its idempotency key (``X-Cairn-Delivery``), so a test sees a
notice delivered twice. The test can make it answer 503 (with ``Retry-After``), or take it down
(nothing listens on its port: connections are refused) and bring it up again on the same port.

It runs its own event loop on a thread, so a synchronous test drives it directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from engine.lab.base import free_port

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """One POST as the receiver saw it."""

    key: str
    """``X-Cairn-Delivery``: the notice's idempotency key."""
    event: str
    """``X-Cairn-Event``: the notice's kind."""
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class WebhookReceiver:
    """``url`` takes Cairn's webhooks; ``secret`` is what it checks signatures with ("" checks none)."""

    secret: str
    port: int = field(default_factory=free_port)
    path: str = "/hooks/T0KEN-in-the-path"
    accepted: list[Received] = field(default_factory=list)
    rejected: list[Received] = field(default_factory=list)
    """Refused: a missing or wrong signature (401), or answered with the test's failing status."""
    status: int = 200
    """What it answers a correctly signed delivery."""
    retry_after: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # ------------------------------------------------------------------ life

    def start(self) -> WebhookReceiver:
        """Run its loop and listen."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        """Listen on its port (again)."""
        self._call(self._listen)

    def down(self) -> None:
        """Stop listening: connections to its port are refused until :meth:`up`."""
        self._call(self._unlisten)

    def close(self) -> None:
        if self._runner is not None:
            self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()

    def answer(self, status: int, retry_after: str | None = None) -> None:
        """Answer correctly signed deliveries with ``status`` (and ``Retry-After``) from now on."""
        with self._lock:
            self.status, self.retry_after = status, retry_after

    # ------------------------------------------------------------------ what it received

    def keys(self) -> Counter[str]:
        """How many times each notice (by idempotency key) was accepted."""
        with self._lock:
            return Counter(r.key for r in self.accepted)

    def of_kind(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.accepted if r.event == kind]

    def wait(self, condition: Callable[[WebhookReceiver], T], what: str, timeout: float = 60) -> T:
        """``condition(self)``'s first truthy value, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gave up waiting for {what}; accepted {[r.key for r in self.accepted]}, "
                    f"rejected {[(r.key, r.answered) for r in self.rejected]}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ the server

    def _call(self, make: Callable[[], Any]) -> None:
        done: Future[None] = asyncio.run_coroutine_threadsafe(make(), self._loop)
        done.result(10)

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _unlisten(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        key = headers.get("X-Cairn-Delivery", "")
        with self._lock:
            status, retry_after = self.status, self.retry_after
        if not self._signed(headers, body):
            status, retry_after = 401, None
        received = Received(key, headers.get("X-Cairn-Event", ""), headers, body, status)
        with self._lock:
            (self.accepted if status == 200 else self.rejected).append(received)
        if status == 401:
            return web.json_response({"error": "bad signature"}, status=401)
        extra = {"Retry-After": retry_after} if retry_after else {}
        return web.json_response({"ok": status == 200}, status=status, headers=extra)

    def _signed(self, headers: dict[str, str], body: bytes) -> bool:
        """What a receiver must check (docs/notifications.md): the HMAC, in constant time."""
        if not self.secret:
            return True
        timestamp = headers.get("X-Cairn-Timestamp", "")
        given = headers.get("X-Cairn-Signature", "")
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(given, "sha256=" + mac.hexdigest())
