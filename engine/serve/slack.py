"""Slack, through the official ``slack_sdk``: Cairn's notices in a channel, and its buttons decided.

``cairn serve`` with a ``slack:`` config section makes one :class:`Slack`, which is two things:

* a **sink** of the notices outbox (:mod:`engine.serve.sinks`; :meth:`Slack.deliver` runs on the
  dispatcher's thread, with slack_sdk's synchronous :class:`~slack_sdk.WebClient`): an escalation
  is one Block Kit message in the channel (``chat.postMessage``; its ``channel``/``ts`` kept in the
  store, :meth:`Outbox.remember_slack_message`), redrawn (``chat.update``) at each decision,
  wherever it was made — Slack, ``cairn approve``, the TUI, another server — with a thread reply
  saying who did what; a run's progress and verify verdict are thread replies too
  (:mod:`engine.serve.slack_blocks` draws them);
* the **interactions** (:mod:`engine.serve.slack_actions`): ``POST /slack/actions`` when a signing
  secret is set, and :class:`SocketMode` (slack_sdk's Socket Mode client over aiohttp: Slack's
  websocket, opened with the app token; no inbound port) when an app token is.

What Slack answers decides what the outbox does with a delivery: ``ratelimited`` → again after its
``Retry-After``; a channel that does not exist or the bot is not in, a refused token, a missing
scope → abandoned at once, with what the operator must fix (only a person can); Slack not
answering, or answering 5xx → again later. The bot token is never in a message or the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.error import URLError
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, web
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from engine.core.alert_queue import AlertQueue
from engine.core.errors import JournalError
from engine.core.notices import Notice, NoticeKind
from engine.core.outbox import Delivery, Outbox
from engine.core.store.location import Location
from engine.serve.client_faults import Throttle
from engine.serve.notify_settings import SlackSettings
from engine.serve.sinks import DeliveryFailed
from engine.serve.slack_actions import Interactions
from engine.serve.slack_blocks import DECISIONS, decision_reply, escalation, run_opening, run_reply

if TYPE_CHECKING:
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest

log = logging.getLogger(__name__)

TIMEOUT = 10
"""Seconds one Web API call may take (a slow Slack delays only Slack's own notices)."""
RATELIMITED_WAIT = 30.0
"""When Slack says ``ratelimited`` without a ``Retry-After``."""
HANDSHAKE_TIMEOUT = 30.0
"""Seconds Socket Mode waits for Slack's websocket to open before it tries again."""

ONLY_A_PERSON_FIXES = {
    "channel_not_found": "the channel {channel} does not exist, or the bot cannot see it: fix slack.channel",
    "not_in_channel": "the bot is not in {channel}: invite the app to the channel (/invite @app)",
    "is_archived": "the channel {channel} is archived: unarchive it or fix slack.channel",
    "invalid_auth": "Slack refused the bot token (invalid_auth): check slack.bot_token_file",
    "not_authed": "no bot token was sent: check slack.bot_token_file",
    "account_inactive": "the bot token's app or user was deactivated (account_inactive)",
    "token_revoked": "the bot token was revoked: install the app again and give the new token",
    "token_expired": "the bot token expired: give a new one",
    "missing_scope": "the bot token lacks a scope Cairn needs (chat:write): add it in the app's settings",
    "invalid_blocks": "Slack refused the message's blocks (invalid_blocks): a bug in Cairn, please report it",
    "msg_too_long": "the message is too long for Slack (msg_too_long): a bug in Cairn, please report it",
    "restricted_action": "the workspace does not let the bot post in {channel} (restricted_action)",
}
"""Slack errors that trying again cannot help, and what the operator should do."""


class Slack:
    """The ``slack`` sink and Slack's interactions, for one ``cairn serve``."""

    name = "slack"

    def __init__(self, settings: SlackSettings, store: Location, *, say: Callable[[str], None]) -> None:
        self.settings = settings
        base = settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"
        self._where = urlsplit(base).netloc or base
        """Slack's API host, for messages (never the token)."""
        self._client = _client(settings.bot_token, base)
        self._queue = AlertQueue(store)
        """The CLI's kind of queue (no holder): a button decides exactly as ``cairn approve`` does."""
        try:
            self._outbox = Outbox(store, holder="slack")  # only its Slack bookkeeping is used
        except BaseException:
            self._queue.close()
            raise
        self._say = Throttle(say)
        self.interactions = Interactions(
            settings, self._queue, _client(settings.bot_token, base), say=self._say
        )
        self._socket: SocketMode | None = None

    # ------------------------------------------------------------------ the server's side

    def wants(self, kind: NoticeKind) -> bool:
        """Every notice: the channel follows each entry from its escalation to its verdict."""
        return True

    def routes(self) -> list[web.RouteDef]:
        """``POST /slack/actions`` when a signing secret is set, else none."""
        return self.interactions.routes()

    async def start(self) -> None:
        """Open Socket Mode when an app token is set (it connects in the background)."""
        if self.settings.app_token:
            self._socket = SocketMode(self.settings, self.interactions, self._say)
            await self._socket.connect()

    async def stop(self) -> None:
        """No more presses: Socket Mode closed, the ones being handled finished."""
        if self._socket is not None:
            await self._socket.close()
            self._socket = None
        await self.interactions.drain()

    def close(self) -> None:
        self.interactions.close()
        self._queue.close()
        self._outbox.close()

    # ------------------------------------------------------------------ delivering

    def deliver(self, delivery: Delivery) -> None:
        """Send one notice to Slack (:class:`DeliveryFailed` when Slack did not take it)."""
        notice = delivery.notice
        try:
            if notice.kind is NoticeKind.ESCALATED:
                self._escalated(notice)
            elif notice.kind in DECISIONS:
                self._decided(notice)
            else:
                self._progress(notice)
        except SlackApiError as exc:
            raise self._failure(exc) from None
        except (URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryFailed(f"{self._where} did not answer: {reason}", retry=True) from None
        except JournalError as exc:  # the message's place could not be read or kept: again later
            raise DeliveryFailed(f"the store: {exc}", retry=True) from None

    def _escalated(self, notice: Notice) -> None:
        text, blocks = escalation(notice.payload)
        known = self._message_of(notice.entry_id)
        if known is not None:  # sent before, not recorded as delivered (a crash): update, not twice
            self._client.chat_update(channel=known[0], ts=known[1], text=text, blocks=blocks)
            return
        self._post(notice.entry_id, text, blocks)

    def _decided(self, notice: Notice) -> None:
        """Redraw the entry's message with the decision, and say in its thread who did what."""
        escalated = self._outbox.notice(notice.entry_id, NoticeKind.ESCALATED) if notice.entry_id else None
        if escalated is not None:
            text, blocks = escalation(escalated.payload, notice)
        else:  # escalated before Slack was configured: the decision stands alone
            text, blocks = run_opening(notice)
        known = self._message_of(notice.entry_id)
        if known is None:
            known = self._post(notice.entry_id, text, blocks)
        else:
            self._client.chat_update(channel=known[0], ts=known[1], text=text, blocks=blocks)
        self._client.chat_postMessage(channel=known[0], thread_ts=known[1], text=decision_reply(notice))

    def _progress(self, notice: Notice) -> None:
        """A run's progress or verdict in its entry's thread (a message of its own first if none)."""
        known = self._message_of(notice.entry_id)
        if known is None:
            text, blocks = run_opening(notice)
            known = self._post(notice.entry_id, text, blocks)
            if notice.kind is NoticeKind.REMEDIATION_STARTED:
                return  # the opening message says it
        self._client.chat_postMessage(
            channel=known[0],
            thread_ts=known[1],
            text=run_reply(notice),
            reply_broadcast=notice.kind is NoticeKind.VERIFY_FAILED,  # the channel must see this one
        )

    def _post(self, entry_id: int | None, text: str, blocks: list[dict[str, Any]]) -> tuple[str, str]:
        """A top-level message in the channel, remembered for its entry at once."""
        answer = self._client.chat_postMessage(channel=self.settings.channel, text=text, blocks=blocks)
        channel, ts = str(answer["channel"]), str(answer["ts"])
        if entry_id is not None:
            self._outbox.remember_slack_message(entry_id, channel, ts)
        return channel, ts

    def _message_of(self, entry_id: int | None) -> tuple[str, str] | None:
        return self._outbox.slack_message(entry_id) if entry_id is not None else None

    def _failure(self, exc: SlackApiError) -> DeliveryFailed:
        """What Slack's refusal means for the delivery (the dispatcher says it, prefixed ``slack:``)."""
        answer = exc.response
        error = str(answer.get("error") or "")
        if error == "ratelimited" or answer.status_code == 429:
            after = _seconds(answer.headers.get("Retry-After") or answer.headers.get("retry-after"))
            return DeliveryFailed("ratelimited by Slack", retry=True, after=after or RATELIMITED_WAIT)
        fix = ONLY_A_PERSON_FIXES.get(error)
        if fix is not None:
            why = fix.format(channel=self.settings.channel)
            if error == "missing_scope" and answer.get("needed"):
                why += f" (needed: {answer.get('needed')})"
            return DeliveryFailed(why, retry=False)
        if answer.status_code != 200 or not error:
            return DeliveryFailed(f"{self._where} answered HTTP {answer.status_code}", retry=True)
        return DeliveryFailed(f"{self._where} answered {error[:200]}", retry=True)


def _client(token: str, base_url: str) -> WebClient:
    """A Web API client with no retries of its own: the outbox retries, with backoff."""
    return WebClient(token=token, base_url=base_url, timeout=TIMEOUT, retry_handlers=[])


def _seconds(value: object) -> float | None:
    try:
        return max(0.0, float(str(value)))
    except (TypeError, ValueError):
        return None


class SocketMode:
    """Slack's websocket: each envelope acknowledged at once, each interaction handed to
    :meth:`Interactions.take`. Lost (Slack down, the network cut), it connects again by itself."""

    def __init__(self, settings: SlackSettings, interactions: Interactions, say: Throttle) -> None:
        self.settings = settings
        self._interactions = interactions
        self._say = say
        self._client: SocketModeClient | None = None
        self._connecting: asyncio.Future[Any] | None = None

    async def connect(self) -> None:
        """Start connecting (in the background: a Slack that does not answer delays nothing)."""
        from slack_sdk.socket_mode.aiohttp import SocketModeClient  # noqa: PLC0415
        from slack_sdk.web.async_client import AsyncWebClient  # noqa: PLC0415

        web_client = AsyncWebClient(base_url=self.settings.api_url, timeout=TIMEOUT)
        client = SocketModeClient(
            app_token=self.settings.app_token, web_client=web_client, logger=_sdk_logger(self._say)
        )
        # Its own session would wait aiohttp's 5 minutes for a websocket handshake that hangs (a network
        # cut mid-way): the buttons dead that long. This bounds the handshake only, not an open websocket.
        untimed, client.aiohttp_client_session = (
            client.aiohttp_client_session,
            ClientSession(timeout=ClientTimeout(total=HANDSHAKE_TIMEOUT)),
        )
        await untimed.close()
        client.socket_mode_request_listeners.append(self._on_envelope)
        client.message_listeners.append(self._on_message)
        self._client = client
        self._connecting = asyncio.ensure_future(client.connect())  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
        if self._connecting is not None:
            self._connecting.cancel()

    async def _on_envelope(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse  # noqa: PLC0415

        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type == "interactive" and isinstance(request.payload, dict):
            self._interactions.take(request.payload)

    async def _on_message(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        if message.get("type") == "hello":
            self._say("slack-hello", "slack: Socket Mode connected: buttons arrive over Slack's websocket")


_TICKET = re.compile(r"(ticket=)[^&\s'\"]+")


class _OneLine(logging.Handler):
    """slack_sdk's Socket Mode log as one line per kind and minute, without tracebacks (the
    websocket URL's one-time ticket hidden)."""

    def __init__(self, say: Throttle) -> None:
        super().__init__(logging.WARNING)
        self._say = say

    def emit(self, record: logging.LogRecord) -> None:
        line = _TICKET.sub(r"\1***", record.getMessage().splitlines()[0])[:300]
        self._say(f"socket:{record.levelno}:{line[:40]}", f"slack: Socket Mode: {line}")


def _sdk_logger(say: Throttle) -> logging.Logger:
    logger = logging.getLogger("engine.serve.slack.socket_mode")
    logger.propagate = False  # a lost websocket is one line, never a traceback on the operator's screen
    for old in [h for h in logger.handlers if isinstance(h, _OneLine)]:
        logger.removeHandler(old)
    logger.addHandler(_OneLine(say))
    return logger
