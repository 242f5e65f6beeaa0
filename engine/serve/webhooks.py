"""Outgoing webhooks: each notice POSTed as JSON to a configured URL, signed so the receiver can check it.

A :class:`Webhook` is one sink of ``cairn serve``'s dispatcher (:mod:`engine.serve.dispatch`),
named ``webhook:<name>``. Each delivery is one ``POST`` with

* ``Content-Type: application/json`` and the notice's payload (:func:`engine.core.outbox.payload_text`:
  sorted, compact JSON; ``format: slack-compatible`` sends ``{"text": …}`` instead, which
  Mattermost's and Microsoft Teams' incoming webhooks take);
* ``X-Cairn-Event`` (the notice's kind), ``X-Cairn-Delivery`` (its idempotency key, also ``id`` in
  the body: the same on every retry, so a receiver drops what it already has),
  ``X-Cairn-Timestamp`` (Unix seconds) and, with a secret, ``X-Cairn-Signature:
  sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.

What the answer means: 2xx delivered; 408, 429, 5xx, a timeout or a connection that fails: tried
again later (``Retry-After`` honoured); a redirect or any other 4xx: given up, with the status and
the start of the answer. The URL is a secret too (Mattermost's and Teams' carry their token in
it): no message, log line or error names it — only ``webhook:<name>``. The HTTP client is
aiohttp (already Cairn's), in a private event loop on the dispatcher's thread, with a total
timeout per delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from engine import __version__
from engine.core.notices import Notice, NoticeKind
from engine.core.outbox import Delivery, payload_text
from engine.core.visible import visible
from engine.serve.notify_settings import WebhookSettings
from engine.serve.sinks import DeliveryFailed

ANSWER_SHOWN = 200
"""Bytes of a refusing receiver's answer kept in the error (enough for its reason)."""

LONGEST_DELIVERY = 30.0
"""Seconds one delivery may take at most, whatever a sink's ``timeout:`` says: the dispatcher claims a
delivery for twice this (:mod:`engine.serve.dispatch`), so a claim never lapses under a delivery."""

RETRIED_STATUSES = frozenset({408, 429})
"""Client errors that mean "later", not "never" (every 5xx does too)."""


class Webhook:
    """One ``webhooks:`` entry as a sink: signs and POSTs each delivery."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return f"webhook:{self.settings.name}"

    @property
    def timeout(self) -> float:
        """Seconds a delivery may take in all (connect, send, answer)."""
        return min(self.settings.timeout, LONGEST_DELIVERY)

    def wants(self, kind: NoticeKind) -> bool:
        return kind in self.settings.kinds

    def deliver(self, delivery: Delivery) -> None:
        """POST the delivery; :class:`DeliveryFailed` when the receiver did not take it."""
        body, headers = self.request(delivery.notice, time.time())
        asyncio.run(self._post(body, headers))

    def close(self) -> None:
        """Nothing is kept open between deliveries."""

    def request(self, notice: Notice, now: float) -> tuple[bytes, dict[str, str]]:
        """The body and headers of ``notice``'s POST at ``now`` (signed when a secret is set)."""
        if self.settings.format == "slack-compatible":
            text = json.dumps({"text": chat_text(notice.payload)}, sort_keys=True, separators=(",", ":"))
        else:
            text = payload_text(notice)
        timestamp = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"cairn/{__version__}",
            "X-Cairn-Event": notice.kind.value,
            "X-Cairn-Delivery": notice.key,
            "X-Cairn-Timestamp": timestamp,
        }
        if self.settings.secret:
            headers["X-Cairn-Signature"] = signature(self.settings.secret, timestamp, text.encode())
        return text.encode(), headers

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
                session.post(self.settings.url, data=body, headers=headers, allow_redirects=False) as answer,
            ):
                if 200 <= answer.status < 300:
                    return
                start = (await answer.content.read(ANSWER_SHOWN)).decode("utf-8", "replace")
                raise _refused(answer.status, start, answer.headers.get("Retry-After"))
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DeliveryFailed(
                f"its TLS certificate was refused: {_reason(exc.certificate_error)}"
            ) from None
        except aiohttp.ClientConnectorError as exc:  # its str() names the host: say the reason alone
            raise DeliveryFailed(f"could not connect: {_reason(exc.os_error)}") from None
        except aiohttp.InvalidURL:
            raise DeliveryFailed(
                "the URL is not valid (check webhooks: in the config)", retry=False
            ) from None
        except (aiohttp.ClientError, OSError) as exc:  # the connection broke: a later try may go through
            raise DeliveryFailed(f"the connection failed: {type(exc).__name__}") from None


def _reason(error: BaseException) -> str:
    """Why a connection failed, without the address (``Connection refused``)."""
    if verified := getattr(error, "verify_message", None):
        return str(verified)
    number = getattr(error, "errno", None)
    return os.strerror(number) if isinstance(number, int) else type(error).__name__


def _refused(status: int, answer: str, retry_after: str | None) -> DeliveryFailed:
    said = f"answered {status}" + (f": {visible(answer.strip())}" if answer.strip() else "")
    if status in RETRIED_STATUSES or status >= 500:
        return DeliveryFailed(said, after=retry_after_seconds(retry_after))
    if 300 <= status < 400:
        return DeliveryFailed(
            f"answered {status} (a redirect, not followed: give the final URL in webhooks:)", retry=False
        )
    return DeliveryFailed(said, retry=False)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (seconds, or an HTTP date) as seconds from now; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------- slack-compatible text


def chat_text(payload: dict[str, Any]) -> str:
    """A notice as one Markdown message (Mattermost, Microsoft Teams): its summary, then what its
    details say (docs/notifications.md lists them per kind)."""
    details = payload.get("details") or {}
    lines = [f"**{payload.get('summary', '')}**"]
    if reason := details.get("reason"):
        lines.append(f"Why: {reason}")
    for finding in details.get("findings") or ():
        lines.append(f"- {finding.get('host', '')} {finding.get('step', '')}: {finding.get('report', '')}")
    for step in details.get("remediation") or ():
        lines += _remediation_lines(step)
    lines += _decision_lines(details)
    if (status := details.get("status")) and details.get("step"):
        said = f"{details.get('phase', '')} {details['step']}: {status}".strip()
        lines.append(said + (f" — {details['report']}" if details.get("report") else ""))
    for check in details.get("verify") or ():
        lines.append(
            f"- verify {check.get('step', '')}: {check.get('status', '')} {check.get('report', '')}".rstrip()
        )
    decide = details.get("decide")
    if isinstance(decide, dict) and decide.get("approve"):
        lines.append(f"Decide: `{decide['approve']}` or `{decide.get('decline', '')}`")
    return "\n".join(line for line in lines if line)


def _remediation_lines(step: dict[str, Any]) -> list[str]:
    title = step.get("title") or step.get("step", "")
    lines = [f"Would run — {title}:", _fenced(str(step.get("command", "")))]
    for key, said in (("deferred", ""), ("error", ""), ("why", "Why: "), ("tradeoff", "Trade-off: ")):
        if step.get(key):
            lines.append(f"{said}{step[key]}")
    return lines


def _decision_lines(details: dict[str, Any]) -> list[str]:
    lines = []
    requirement = details.get("requirement")
    if isinstance(requirement, dict) and requirement.get("description"):
        lines.append(f"Approval: {requirement['description']}")
    if expires := details.get("expires_at"):
        lines.append(f"Expires: {_when(expires)}")
    decision = details.get("decision") or {}
    if decision.get("reason"):
        lines.append(f"Reason: {decision['reason']}")
    if progress := decision.get("progress") or details.get("progress"):
        lines.append(f"Approvals: {progress}")
    return lines


def _fenced(command: str) -> str:
    """A command as a code block (a ``` inside it cannot close the block)."""
    return "```\n" + command.replace("```", "`\u200b``") + "\n```"


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)
