"""A stand-in of Slack for the tests: Slack's Web API and Socket Mode, served on loopback.

This is **not Slack**: it is a small aiohttp server on 127.0.0.1 that the real ``slack_sdk``
(``WebClient``, ``SocketModeClient``) talks to when ``cairn serve``'s ``slack.api_url`` points at
it. It answers with the shapes Slack answers (recorded in ``tests/fixtures/slack/``, each file's
source in its README), checks the tokens the way Slack does (``Authorization: Bearer``; a wrong
bot token is ``invalid_auth``), and records every call (method and arguments) for the tests to
assert on. What it serves:

* the Web API methods Cairn uses: ``chat.postMessage`` (``channel_not_found`` for a channel it does
  not know, ``not_in_channel`` for one the bot is not in), ``chat.update``, ``chat.postEphemeral``,
  ``views.open`` (only with a ``trigger_id`` it issued), ``usergroups.list``,
  ``usergroups.users.list``, ``apps.connections.open`` (the app token only);
* Socket Mode: the websocket ``apps.connections.open`` names (``ws://127.0.0.1:PORT/link/?ticket=…``),
  which says ``hello``, then sends the ``interactive`` envelopes a test asks for and records acks;
* outages a test asks for: a method that answers an error once (``ratelimited`` with HTTP 429 and
  ``Retry-After``), every method answering HTTP 500, or the server stopped and started again.

It also builds what Slack would send a ``POST /slack/actions`` (:func:`signed`: Slack's real
``v0`` HMAC-SHA256 signature over the form-encoded payload).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import WSMsgType, web

from engine.lab.base import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
TEAM = "T0CAIRN01"
APP = "A0CAIRN01"
BOT_USER = "U0CAIRNBOT"
BOT_ID = "B0CAIRN01"
CHANNEL = "C0CAIRN01"
CHANNEL_NAME = "cairn-alerts"
BOT_TOKEN = "xoxb-0000-standin-bot-token"
APP_TOKEN = "xapp-1-A0CAIRN01-0000-standin-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def fixture(name: str) -> dict[str, Any]:
    """A recorded payload of ``tests/fixtures/slack/`` (a fresh copy each time)."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class SlackUser:
    id: str
    name: str


@dataclass(frozen=True)
class Call:
    """One Web API call as the stand-in received it."""

    method: str
    args: dict[str, Any]
    token: str


@dataclass
class Message:
    """A message the bot posted, as the stand-in keeps it (``chat.update`` changes it)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str = ""
    updates: int = 0


@dataclass
class _Script:
    """Errors to answer instead of the real thing: per method, in order."""

    once: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = field(default_factory=dict)
    every: int | None = None
    """An HTTP status every Web API call answers (Slack "down"), with a body that is not JSON."""


def signed(
    payload: Mapping[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """What Slack sends to an Interactivity Request URL: the form-encoded ``payload=`` and its
    signature headers (``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>`` with ``secret``)."""
    body = ("payload=" + quote(json.dumps(payload), safe="")).encode()
    at = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + at.encode() + b":" + body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": at,
        "X-Slack-Signature": f"v0={digest}",
    }


class SlackStandIn:
    """The stand-in of Slack's Web API and Socket Mode (see the module's docstring)."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        channels: Mapping[str, str] | None = None,
        joined: tuple[str, ...] | None = None,
        usergroups: Mapping[str, tuple[str, list[str]]] | None = None,
    ) -> None:
        """``channels``: id → name; ``joined``: the ones the bot is in (default all);
        ``usergroups``: id → (handle, member user ids)."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.channels = dict(channels or {CHANNEL: CHANNEL_NAME})
        self.joined = set(self.channels if joined is None else joined)
        self.usergroups = dict(usergroups or {})
        self.port = free_port()
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.views: dict[str, dict[str, Any]] = {}
        """Views opened, by the trigger that opened them."""
        self.acks: list[dict[str, Any]] = []
        self.connections = 0
        self._triggers: set[str] = set()
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._script = _Script()
        self._lock = threading.Lock()
        self._counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        """What ``slack.api_url`` is set to."""
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ life

    def start(self) -> SlackStandIn:
        """Serve (again, on the same port after :meth:`stop`)."""
        started = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(self._app())
                loop.run_until_complete(self._runner.setup())
                self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                loop.run_until_complete(self._site.start())
            except BaseException as exc:
                failed.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="slack-standin", daemon=True)
        self._thread.start()
        started.wait(10)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        """Stop answering (connections refused), websockets closed."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close_sockets() -> None:
            if self._site is not None:
                await self._site.stop()  # first take no more connections, as a Slack gone does
            for socket in list(self._sockets):
                await socket.close()

        asyncio.run_coroutine_threadsafe(close_sockets(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    # ------------------------------------------------------------------ outages

    def fail_once(
        self, method: str, error: str, *, status: int = 200, retry_after: int | None = None
    ) -> None:
        """The next call of ``method`` answers ``{"ok": false, "error": error}`` (``ratelimited``:
        HTTP 429 with ``Retry-After``)."""
        body = fixture("error") | {"error": error}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._script.once.setdefault(method, []).append((status, body, headers))

    def answer_every_call(self, status: int | None) -> None:
        """Every Web API call answers HTTP ``status`` with a body that is not JSON (``None``: normal)."""
        with self._lock:
            self._script.every = status

    # ------------------------------------------------------------------ what happened

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                with self._lock:
                    said = [f"{c.method} {json.dumps(c.args)[:300]}" for c in self.calls]
                raise AssertionError(
                    f"the stand-in of Slack gave up waiting for {what}; calls:\n" + "\n".join(said)
                )
            time.sleep(0.05)

    def top_level(self) -> list[Message]:
        """The bot's messages in channels (not thread replies), oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if not m.thread_ts]

    def thread(self, ts: str) -> list[Message]:
        """The replies under the message ``ts``, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts == ts]

    # ------------------------------------------------------------------ what Slack would send

    def click(self, message: Message, action_id: str, user: SlackUser) -> dict[str, Any]:
        """The ``block_actions`` payload of ``user`` clicking the button ``action_id`` of ``message``."""
        button = next(
            element
            for block in message.blocks
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        )
        payload = fixture("block_actions")
        trigger = self._trigger()
        payload["user"] = {"id": user.id, "username": user.name, "name": user.name, "team_id": TEAM}
        payload["container"].update(message_ts=message.ts, channel_id=message.channel)
        payload["trigger_id"] = trigger
        payload["channel"] = {"id": message.channel, "name": self.channels.get(message.channel, "")}
        payload["message"].update(ts=message.ts, text=message.text, blocks=copy.deepcopy(message.blocks))
        payload["response_url"] = (
            f"http://127.0.0.1:{self.port}/actions/{TEAM}/{uuid.uuid4().int % 10**13}/{uuid.uuid4().hex[:24]}"
        )
        payload["actions"] = [
            {
                "action_id": action_id,
                "block_id": next(
                    b.get("block_id", "") for b in message.blocks if button in b.get("elements", [])
                ),
                "text": button["text"] | {"emoji": True},
                "value": button.get("value", ""),
                **({"style": button["style"]} if "style" in button else {}),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ]
        return payload

    def submit(
        self, trigger_id: str, user: SlackUser, values: Mapping[str, Mapping[str, str]]
    ) -> dict[str, Any]:
        """The ``view_submission`` of the view opened with ``trigger_id``, with plain-text ``values``
        (block id → action id → text)."""
        with self._lock:
            view = copy.deepcopy(self.views[trigger_id])
        view["state"] = {
            "values": {
                block: {
                    action: {"type": "plain_text_input", "value": text} for action, text in actions.items()
                }
                for block, actions in values.items()
            }
        }
        payload = fixture("view_submission")
        payload["user"] = {"id": user.id, "username": user.name, "name": user.name, "team_id": TEAM}
        payload["trigger_id"] = self._trigger()
        payload["view"] = view
        return payload

    def send_envelope(self, payload: Mapping[str, Any]) -> str:
        """Send ``payload`` over the open Socket Mode websocket as Slack does; its ``envelope_id``."""
        envelope = fixture("socket_interactive")
        envelope["envelope_id"] = str(uuid.uuid4())
        envelope["payload"] = payload
        envelope["accepts_response_payload"] = payload.get("type") == "view_submission"
        loop = self._loop
        assert loop is not None, "the stand-in is stopped"

        async def send() -> None:
            live = [s for s in self._sockets if not s.closed]
            assert live, "no Socket Mode connection is open"
            await live[-1].send_str(json.dumps(envelope))

        asyncio.run_coroutine_threadsafe(send(), loop).result(10)
        return str(envelope["envelope_id"])

    def acked(self, envelope_id: str) -> bool:
        with self._lock:
            return any(a.get("envelope_id") == envelope_id for a in self.acks)

    def connected(self) -> bool:
        return any(not s.closed for s in self._sockets)

    # ------------------------------------------------------------------ the server

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        app.router.add_post("/actions/{rest:.*}", self._response_url)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _arguments(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or str(
            args.pop("token", "")
        )
        with self._lock:
            self.calls.append(
                Call(
                    method,
                    args,
                    "<bot>" if token == self.bot_token else "<app>" if token == self.app_token else "<other>",
                )
            )
            every = self._script.every
            scripted = self._script.once.get(method, [])
            answer = scripted.pop(0) if scripted else None
        if every is not None:
            return web.Response(
                status=every, text="<html><body>upstream unavailable</body></html>", content_type="text/html"
            )
        if answer is not None:
            status, body, headers = answer
            return web.json_response(body, status=status, headers=headers)
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return _error("not_authed")
        if not hmac.compare_digest(token, wanted):
            return _error("invalid_auth")
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return _error("unknown_method")
        return web.json_response(handler(args))

    def _channel(self, given: object) -> str | None:
        name = str(given or "").lstrip("#")
        if name in self.channels:
            return name
        return next((cid for cid, cname in self.channels.items() if cname == name), None)

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        if channel is None:
            return fixture("error") | {"error": "channel_not_found"}
        if channel not in self.joined:
            return fixture("error") | {"error": "not_in_channel"}
        thread = str(args.get("thread_ts") or "")
        if thread and (channel, thread) not in self.messages:
            return fixture("error") | {"error": "thread_not_found"}
        ts = self._ts()
        message = Message(channel, ts, str(args.get("text") or ""), list(args.get("blocks") or []), thread)
        with self._lock:
            self.messages[(channel, ts)] = message
        answer = fixture("chat_postMessage")
        answer.update(channel=channel, ts=ts)
        answer["message"].update(ts=ts, text=message.text)
        if message.blocks:
            answer["message"]["blocks"] = message.blocks
        if thread:
            answer["message"]["thread_ts"] = thread
        return dict(answer)

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if channel not in self.channels:
            return fixture("error") | {"error": "channel_not_found"}
        with self._lock:
            message = self.messages.get((channel, ts))
            if message is None:
                return fixture("error") | {"error": "message_not_found"}
            message.text = str(args.get("text") or "")
            message.blocks = list(args.get("blocks") or [])
            message.updates += 1
        answer = fixture("chat_update")
        answer.update(channel=channel, ts=ts, text=message.text)
        answer["message"].update(text=message.text, blocks=message.blocks)
        return dict(answer)

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._channel(args.get("channel")) is None:
            return fixture("error") | {"error": "channel_not_found"}
        if not args.get("user"):
            return fixture("error") | {"error": "user_not_found"}
        return dict(fixture("chat_postEphemeral") | {"message_ts": self._ts()})

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id") or "")
        with self._lock:
            known = trigger in self._triggers
            self._triggers.discard(trigger)  # a trigger opens one view
        if not known:
            return fixture("error") | {"error": "invalid_trigger_id"}
        given = args.get("view")
        given = json.loads(given) if isinstance(given, str) else dict(given or {})
        answer = fixture("views_open")
        view = answer["view"]
        for key in ("blocks", "private_metadata", "callback_id", "title", "close", "submit"):
            if key in given:
                view[key] = given[key]
        view["id"] = view["root_view_id"] = "V" + uuid.uuid4().hex[:10].upper()
        with self._lock:
            self.views[trigger] = copy.deepcopy(view)
        return dict(answer)

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = fixture("usergroups_list")
        template = answer["usergroups"][0]
        answer["usergroups"] = [
            template | {"id": gid, "handle": handle, "name": handle, "user_count": len(users)}
            for gid, (handle, users) in self.usergroups.items()
        ]
        return dict(answer)

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(args.get("usergroup") or ""))
        if group is None:
            return fixture("error") | {"error": "no_such_subteam"}
        return dict(fixture("usergroups_users_list") | {"users": list(group[1])})

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        with self._lock:
            self._tickets.add(ticket)
        return dict(
            fixture("apps_connections_open")
            | {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP}"}
        )

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            known = ticket in self._tickets
            self._tickets.discard(ticket)  # a URL is good for one connection
        if not known:
            return web.Response(status=401, text="invalid ticket")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        with self._lock:
            self._sockets.append(socket)
            self.connections += 1
        await socket.send_str(json.dumps(fixture("socket_hello")))
        async for frame in socket:
            if frame.type is WSMsgType.TEXT:
                with self._lock:
                    self.acks.append(json.loads(frame.data))
        return socket

    async def _response_url(self, request: web.Request) -> web.Response:
        with self._lock:
            self.calls.append(Call("response_url", await request.json(), ""))
        return web.Response(text="ok")

    def _ts(self) -> str:
        with self._lock:
            self._counter += 1
            return f"{int(time.time())}.{self._counter:06d}"

    def _trigger(self) -> str:
        trigger = f"{int(time.time() * 1000)}.{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex}"
        with self._lock:
            self._triggers.add(trigger)
        return trigger


async def _arguments(request: web.Request) -> dict[str, Any]:
    """A Web API call's arguments, however slack_sdk sent them (JSON, a form, the query)."""
    args: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if request.content_type == "application/json" and raw:
        args.update(json.loads(raw))
    elif raw:
        args.update(parse_qsl(raw.decode()))
    return args


def _error(error: str) -> web.Response:
    return web.json_response(fixture("error") | {"error": error})
