"""Slack's button presses and dialogs, taken through one path from either transport Slack offers.

* **HTTP**: ``POST /slack/actions`` on ``cairn serve`` (Slack's "Interactivity Request URL"). A
  request is taken only with a valid ``X-Slack-Signature`` (``v0=`` HMAC-SHA256 with the app's
  signing secret over ``v0:<timestamp>:<raw body>``), a ``X-Slack-Request-Timestamp`` within 5
  minutes of this server's clock, and a signature not already seen within those 5 minutes (a
  replay); anything else is a **401** with a one-line reason and decides nothing.
* **Socket Mode** (:class:`engine.serve.slack.SocketMode`): Slack's websocket, opened with the
  app-level token (no inbound port), hands each press to :meth:`Interactions.take`.

Both are acknowledged at once (Slack wants an answer within 3 seconds); the work runs on this
module's threads. **Approve** → :meth:`AlertQueue.decide` as the Slack user the payload names
(with the Slack user groups they are in, asked of Slack when the entry's policy names any):
exactly what ``cairn approve`` does — the policy, the quorum, every attempt journaled, the host
checked again before anything runs. **Decline** opens a dialog asking why; its submission
declines with that reason. A refused decision is told to the one who clicked, and only to them
(``chat.postEphemeral``); what was decided reaches the channel through the outbox
(:mod:`engine.serve.slack`), as a decision made anywhere else does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from engine.core.alert_queue import Action, AlertQueue
from engine.core.errors import JournalError
from engine.core.identity import Identity, slack_identity
from engine.core.queue_read import Entry
from engine.serve.client_faults import Throttle
from engine.serve.slack_blocks import (
    APPROVE,
    DECLINE,
    DECLINE_VIEW,
    REASON_ACTION,
    REASON_BLOCK,
    decline_view,
    refusal,
)

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from engine.serve.notify_settings import SlackSettings

log = logging.getLogger(__name__)

WINDOW = 300.0
"""How far a request's timestamp may be from this server's clock, and how long a signature is
remembered to refuse its replay (Slack's own 5 minutes)."""
GROUPS_TTL = 60.0
"""How long the members of a Slack user group are taken as known."""
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


class SignatureCheck:
    """Slack's request signing (v0): who signed, how fresh, and never twice."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._signer = SignatureVerifier(secret)
        self._clock = clock
        self._seen: dict[str, float] = {}
        """Signatures taken within the window, with when they were signed."""

    def refusal(self, timestamp: str | None, signature: str | None, body: bytes) -> str | None:
        """Why a request must be refused (``None``: it is Slack's, fresh, and new)."""
        if not timestamp or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature: not a request signed by Slack"
        try:
            signed_at = int(timestamp)
        except ValueError:
            return "X-Slack-Request-Timestamp is not a Unix time"
        now = self._clock()
        if abs(now - signed_at) > WINDOW:
            return "stale request: X-Slack-Request-Timestamp is more than 5 minutes from this server's clock"
        expected = self._signer.generate_signature(timestamp=timestamp, body=body) or ""
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
            return "bad X-Slack-Signature: not signed with this app's signing secret"
        self._seen = {s: at for s, at in self._seen.items() if now - at <= WINDOW}
        if signature in self._seen:
            return "replayed request: this signature was already used"
        self._seen[signature] = signed_at
        return None


class SlackGroups:
    """Which of the policy's Slack user groups a user is in, asked of Slack (``usergroups:read``)
    and kept :data:`GROUPS_TTL` seconds."""

    def __init__(self, client: WebClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._handles: tuple[float, dict[str, str]] | None = None

    def of(self, user_id: str, wanted: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        """The groups of ``wanted`` (ids ``S…`` or handles) ``user_id`` is in, each by the name the
        policy gives and its id; and what could not be asked (``""``: nothing)."""
        found: list[str] = []
        problems: list[str] = []
        for group in wanted:
            try:
                group_id = self._id_of(group)
                if group_id is None:
                    problems.append(f"no Slack user group {group!r}")
                elif user_id in self._users_of(group_id):
                    found += [group, group_id]
            except SlackApiError as exc:
                problems.append(f"{group}: {exc.response.get('error', 'refused')}")
            except OSError as exc:
                problems.append(f"{group}: Slack could not be reached ({type(exc).__name__})")
        return tuple(dict.fromkeys(found)), "; ".join(problems)

    def _id_of(self, group: str) -> str | None:
        if USERGROUP_ID.fullmatch(group):
            return group
        handle = group.lstrip("@")
        with self._lock:
            cached = self._handles
        if cached is None or self._clock() - cached[0] > GROUPS_TTL:
            listed = self._client.usergroups_list()
            handles = {str(g.get("handle")): str(g.get("id")) for g in listed.get("usergroups") or ()}
            cached = (self._clock(), handles)
            with self._lock:
                self._handles = cached
        return cached[1].get(handle)

    def _users_of(self, group_id: str) -> frozenset[str]:
        with self._lock:
            cached = self._members.get(group_id)
        if cached is not None and self._clock() - cached[0] <= GROUPS_TTL:
            return cached[1]
        users = frozenset(
            str(u) for u in self._client.usergroups_users_list(usergroup=group_id).get("users") or ()
        )
        with self._lock:
            self._members[group_id] = (self._clock(), users)
        return users


class Interactions:
    """Button presses and dialog submissions, from ``POST /slack/actions`` or Socket Mode."""

    def __init__(
        self,
        settings: SlackSettings,
        queue: AlertQueue,
        client: WebClient,
        *,
        say: Throttle,
    ) -> None:
        self.settings = settings
        self._queue = queue
        self._client = client
        self._groups = SlackGroups(client)
        self._say = say
        self._check = SignatureCheck(settings.signing_secret) if settings.signing_secret else None
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="cairn-slack")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        """Presses are added on the event loop and taken off on this module's threads."""

    # ------------------------------------------------------------------ HTTP

    def routes(self) -> list[web.RouteDef]:
        """``POST /slack/actions`` when a signing secret is set (else none: nothing could be trusted)."""
        return [web.post("/slack/actions", self.http_action)] if self._check is not None else []

    async def http_action(self, request: web.Request) -> web.Response:
        """Slack's interactivity request: verified, acknowledged at once, handled on a thread."""
        assert self._check is not None
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return self._refuse(self._check.refusal(timestamp, signature, b"") or "unsigned")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "the body is too large for a Slack interaction"}, status=413)
        why = self._check.refusal(timestamp, signature, body)
        if why is not None:
            return self._refuse(why)
        try:
            payload = interaction_of(body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.take(payload)
        return web.Response(status=200)

    def _refuse(self, why: str) -> web.Response:
        self._say("slack-refused", f"slack: refused a POST /slack/actions: {why}")
        return web.json_response({"error": why}, status=401)

    async def drain(self) -> None:
        """Let the presses being handled finish (at most 10 s): no new ones come once the HTTP side and
        Socket Mode are closed."""
        with self._pending_lock:
            pending = [asyncio.wrap_future(f) for f in self._pending]
        if pending:
            await asyncio.wait(pending, timeout=10)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ one path

    def take(self, payload: Mapping[str, Any]) -> None:
        """Handle an interaction on this module's threads (the caller acknowledges it meanwhile)."""
        future = self._pool.submit(self._handle, payload)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._handled)

    def _handled(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def _handle(self, payload: Mapping[str, Any]) -> None:
        try:
            kind = payload.get("type")
            if kind == "block_actions":
                for action in payload.get("actions") or ():
                    if action.get("action_id") == APPROVE:
                        self._approve(payload, action)
                    elif action.get("action_id") == DECLINE:
                        self._ask_why(payload, action)
            elif kind == "view_submission" and (payload.get("view") or {}).get("callback_id") == DECLINE_VIEW:
                self._decline(payload)
        except Exception as exc:  # one press must not take the others down; said, never a traceback
            log.debug("a Slack interaction failed", exc_info=True)
            self._say(
                f"slack-fault:{type(exc).__name__}",
                f"slack: could not handle a button press: {type(exc).__name__}: {exc}",
            )

    def _approve(self, payload: Mapping[str, Any], action: Mapping[str, Any]) -> None:
        channel = _channel_of(payload)
        user = payload.get("user") or {}
        entry = self._entry(action.get("value"), channel, user)
        if entry is None:
            return
        who, unknown = self._identity(user, entry)
        self._decide(entry, who, Action.APPROVE, "", channel, unknown)

    def _ask_why(self, payload: Mapping[str, Any], action: Mapping[str, Any]) -> None:
        channel = _channel_of(payload)
        user = payload.get("user") or {}
        entry = self._entry(action.get("value"), channel, user)
        if entry is None:
            return
        ts = str((payload.get("container") or {}).get("message_ts") or "")
        view = decline_view(entry.id, f"{entry.runbook_id} on {entry.target}", channel=channel, ts=ts)
        try:
            self._client.views_open(trigger_id=str(payload.get("trigger_id") or ""), view=view)
        except (SlackApiError, OSError) as exc:
            self._tell(
                channel,
                user,
                f"Cairn could not open the decline dialog ({_why(exc)}): try again, or `cairn decline {entry.run_id} --reason …`",
            )

    def _decline(self, payload: Mapping[str, Any]) -> None:
        view = payload.get("view") or {}
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except json.JSONDecodeError:
            meta = {}
        values = ((view.get("state") or {}).get("values") or {}).get(REASON_BLOCK) or {}
        reason = str((values.get(REASON_ACTION) or {}).get("value") or "").strip()
        channel = str(meta.get("channel") or self.settings.channel)
        user = payload.get("user") or {}
        entry = self._entry(meta.get("entry"), channel, user)
        if entry is None:
            return
        who, unknown = self._identity(user, entry)
        self._decide(entry, who, Action.DECLINE, reason, channel, unknown)

    def _entry(self, value: object, channel: str, user: Mapping[str, Any]) -> Entry | None:
        try:
            entry = self._queue.entry(int(str(value)))
        except (ValueError, JournalError) as exc:
            self._tell(channel, user, f"Cairn does not know this request ({exc})")
            return None
        if not entry.run_id:
            self._tell(
                channel,
                user,
                f"{entry.runbook_id} on {entry.target} is not waiting for a human ({entry.state.value})",
            )
            return None
        return entry

    def _identity(self, user: Mapping[str, Any], entry: Entry) -> tuple[Identity, str]:
        """The Slack user who clicked, with the policy's Slack user groups they are in."""
        user_id = str(user.get("id") or "")
        name = str(user.get("username") or user.get("name") or user_id)
        wanted = entry.requirement.approvers.slack_usergroups if entry.requirement else ()
        groups, unknown = self._groups.of(user_id, wanted) if wanted else ((), "")
        return slack_identity(user_id, name, groups), unknown

    def _decide(
        self, entry: Entry, who: Identity, action: Action, reason: str, channel: str, unknown: str
    ) -> None:
        assert entry.run_id is not None
        try:
            decided = self._queue.decide(entry.run_id, who, action, reason=reason)
        except JournalError as exc:
            self._tell(channel, {"id": who.id}, f"Cairn could not record your decision: {exc}")
            return
        if decided.refused:
            self._tell(channel, {"id": who.id}, refusal(decided.message, groups_unknown=unknown))

    def _tell(self, channel: str, user: Mapping[str, Any], text: str) -> None:
        """A message only ``user`` sees, in ``channel``."""
        try:
            self._client.chat_postEphemeral(channel=channel, user=str(user.get("id") or ""), text=text)
        except (SlackApiError, OSError) as exc:
            self._say(
                "slack-ephemeral", f"slack: could not tell a user their decision was refused: {_why(exc)}"
            )


def interaction_of(body: bytes) -> dict[str, Any]:
    """The JSON of an interaction request's ``payload=`` form field."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(
            f"not a Slack interaction: the form's payload field is missing or not JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict):
        raise ValueError("not a Slack interaction: the payload is not a JSON object")
    return payload


def _channel_of(payload: Mapping[str, Any]) -> str:
    container = payload.get("container") or {}
    return str(container.get("channel_id") or (payload.get("channel") or {}).get("id") or "")


def _why(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "refused"))
    return f"Slack could not be reached: {type(exc).__name__}"
