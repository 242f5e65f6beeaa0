"""Notices: what Cairn tells people (Slack, webhooks), written to the store's outbox with the change itself.

A notice is added **in the transaction that makes the change it tells of** (an entry escalating,
an approval counted, a decline …), so a change is never committed without its notice, nor a
notice without its change, whatever crashes when. ``cairn serve``'s dispatcher
(:mod:`engine.core.outbox`, :mod:`engine.serve.dispatch`) then delivers each notice to every
sink, at least once: each carries its idempotency :attr:`Notice.key`, the same on every retry.

The payload is documented in ``docs/notifications.md`` (``version`` 1). Whoever builds one
passes only text already redacted (the run's outputs are journaled redacted; the escalation's
commands are rendered by :func:`engine.core.plan.plan_run`, which redacts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.core.store.database import Transaction

PAYLOAD_VERSION = 1


class NoticeKind(Enum):
    """What a notice tells of."""

    ESCALATED = "escalated"
    """An entry's remediation waits for people: the findings, the exact commands, who may approve."""
    APPROVAL_COUNTED = "approval_counted"
    """An approval counted toward the quorum; more are needed."""
    APPROVED = "approved"
    """The quorum is met: the next run checks the host again, then remediates."""
    DECLINED = "declined"
    """Someone declined: nothing is changed."""
    APPROVAL_EXPIRED = "approval_expired"
    """Nobody decided in time: nothing is changed; the alert's next firing asks again."""
    REMEDIATION_STARTED = "remediation_started"
    """A remediation began on a host (``details.automatic``: without a human, as the policy allows)."""
    STEP = "step"
    """A remediation or verify step finished (Slack shows these in the entry's thread)."""
    REMEDIATED = "remediated"
    """The remediation ran and verify passed."""
    VERIFY_FAILED = "verify_failed"
    """The remediation ran and verify says the pitfall is still there (or could not look)."""


WEBHOOK_KINDS = (
    NoticeKind.ESCALATED,
    NoticeKind.APPROVED,
    NoticeKind.DECLINED,
    NoticeKind.APPROVAL_EXPIRED,
    NoticeKind.REMEDIATION_STARTED,
    NoticeKind.REMEDIATED,
    NoticeKind.VERIFY_FAILED,
)
"""What a webhook receives unless its ``events:`` says otherwise (a pager wants no per-step chatter)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice as the outbox holds it."""

    id: int
    key: str
    kind: NoticeKind
    entry_id: int | None
    run_id: str | None
    created_at: float
    payload: dict[str, Any]


def payload(
    kind: NoticeKind,
    *,
    key: str,
    summary: str,
    entry: dict[str, Any] | None = None,
    runbook: dict[str, Any] | None = None,
    host: str = "",
    details: dict[str, Any] | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """The documented JSON body of a notice (version :data:`PAYLOAD_VERSION`)."""
    when = time.time() if at is None else at
    return {
        "version": PAYLOAD_VERSION,
        "id": key,
        "kind": kind.value,
        "at": datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "summary": summary,
        "entry": entry or {},
        "runbook": runbook or {},
        "host": host,
        "details": details or {},
    }


def add(
    tx: Transaction,
    kind: NoticeKind,
    body: dict[str, Any],
    *,
    entry_id: int | None,
    run_id: str | None,
    now_sql: str,
    now: float | None = None,
) -> None:
    """Add a notice in ``tx`` (the transaction of the change it tells of); one per ``body["id"]``:
    adding the same key again (a retried transaction, a second server) adds nothing."""
    tx.execute(
        "INSERT INTO notices (key, kind, entry_id, run_id, created_at, payload, expanded)"  # noqa: S608
        f" VALUES (?, ?, ?, ?, coalesce(?, {now_sql}), ?, 0) ON CONFLICT (key) DO NOTHING",
        (body["id"], kind.value, entry_id, run_id, now, json.dumps(body, sort_keys=True)),
    )


def notice_of(row: tuple[Any, ...]) -> Notice:
    """A notice from ``id, key, kind, entry_id, run_id, created_at, payload``."""
    return Notice(
        id=int(row[0]),
        key=str(row[1]),
        kind=NoticeKind(row[2]),
        entry_id=None if row[3] is None else int(row[3]),
        run_id=row[4],
        created_at=float(row[5]),
        payload=json.loads(row[6]),
    )


NOTICE_COLUMNS = "id, key, kind, entry_id, run_id, created_at, payload"
