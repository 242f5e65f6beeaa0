"""The outbox's sending side: each notice, to each sink, at least once, in order per entry, retried.

Notices are added by the changes they tell of (:mod:`engine.core.notices`). A ``cairn serve``
that has sinks (webhooks, Slack) sends them through an :class:`Outbox`:

* :meth:`Outbox.expand` gives every new notice one **delivery** per sink that wants its kind
  (servers on one store share one set of sinks: whoever expands a notice first decides);
* :meth:`Outbox.claim` takes deliveries that are due, for ``hold`` seconds, as this server
  (PostgreSQL: ``SKIP LOCKED``, so servers never claim the same one; a claim of a server that died
  lapses and another sends it). A delivery waits while an earlier notice of the same entry is
  still pending for the same sink: a thread reply never comes before the message it answers;
* :meth:`Outbox.delivered`, :meth:`Outbox.failed` (again at ``retry_at``) and abandon (no
  ``retry_at``: the last attempt failed; said in ``/healthz`` and the log, never silently).

A crash between a sink accepting a notice and :meth:`delivered` sends it again after the claim
lapses: at least once, and each notice carries its idempotency key for the receiver to see.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.core.ledger import clock
from engine.core.notices import NOTICE_COLUMNS, Notice, NoticeKind, notice_of
from engine.core.store import migrate
from engine.core.store.database import Database
from engine.core.store.location import Location, locate

Wants = Callable[[str, NoticeKind], bool]
"""Whether a sink (by name) is sent notices of a kind."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice to send to one sink."""

    id: int
    sink: str
    attempts: int
    """Attempts made before this one."""
    notice: Notice


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits to be sent (``/healthz`` and ``/metrics`` show it)."""

    pending: int
    abandoned: int
    oldest_pending_age: float
    """Seconds the oldest pending delivery has waited (0 when none)."""
    last_error: str


class Outbox:
    """The store's outbox, as one server sends it (thread-safe: the connection's calls are serialised)."""

    def __init__(self, location: Location | Path | str | None, holder: str) -> None:
        self.db = Database(locate(location), write=True, what="the notices outbox")
        try:
            migrate.ensure_current(self.db)
        except BaseException:
            self.db.close()
            raise
        self.holder = holder

    def close(self) -> None:
        self.db.close()

    def expand(self, sinks: list[str], wants: Wants, limit: int = 200, now: float | None = None) -> int:
        """Give each new notice its deliveries (one per sink in ``sinks`` that wants its kind); how many
        notices were expanded."""
        with self.db.transaction("plan the notices' deliveries") as tx:
            at = clock(tx, now)
            rows = tx.execute(
                f"SELECT {NOTICE_COLUMNS} FROM notices WHERE expanded = 0 ORDER BY id LIMIT ?{self.db.skip_locked}",  # noqa: S608
                (limit,),
            ).fetchall()
            for row in rows:
                notice = notice_of(row)
                for sink in sinks:
                    if wants(sink, notice.kind):
                        tx.execute(
                            "INSERT INTO deliveries (notice_id, entry_id, sink, state, attempts, next_at)"
                            " VALUES (?, ?, ?, 'pending', 0, ?) ON CONFLICT (notice_id, sink) DO NOTHING",
                            (notice.id, notice.entry_id, sink, at),
                        )
                tx.execute("UPDATE notices SET expanded = 1 WHERE id = ?", (notice.id,))
        return len(rows)

    def claim(self, limit: int = 20, hold: float = 30.0, now: float | None = None) -> list[Delivery]:
        """Due deliveries nobody holds, oldest first, claimed by this server for ``hold`` seconds;
        one waits while an earlier notice of its entry is pending for its sink."""
        with self.db.transaction("claim notices to send") as tx:
            at = clock(tx, now)
            rows = tx.execute(
                "SELECT d.id, d.sink, d.attempts FROM deliveries d"  # noqa: S608
                " WHERE d.state = 'pending' AND d.next_at <= ? AND (d.claimed_until IS NULL OR d.claimed_until < ?)"
                " AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.state = 'pending' AND e.sink = d.sink"
                " AND e.entry_id = d.entry_id AND e.notice_id < d.notice_id)"
                f" ORDER BY d.notice_id LIMIT ?{self.db.skip_locked}",
                (at, at, limit),
            ).fetchall()
            claimed = []
            for delivery_id, sink, attempts in rows:
                tx.execute(
                    "UPDATE deliveries SET holder = ?, claimed_until = ? WHERE id = ?",
                    (self.holder, at + hold, delivery_id),
                )
                notice_row = tx.execute(
                    f"SELECT {', '.join('n.' + c for c in NOTICE_COLUMNS.split(', '))} FROM notices n"  # noqa: S608
                    " JOIN deliveries d ON d.notice_id = n.id WHERE d.id = ?",
                    (delivery_id,),
                ).fetchone()
                claimed.append(Delivery(int(delivery_id), str(sink), int(attempts), notice_of(notice_row)))
        return claimed

    def delivered(self, delivery_id: int, now: float | None = None) -> None:
        """The sink took it."""
        self.db.write_one(
            f"UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = {self._at},"  # noqa: S608
            " holder = NULL, claimed_until = NULL, last_error = '' WHERE id = ?",
            (now, delivery_id),
            "record a notice delivered",
        )

    def failed(self, delivery_id: int, error: str, retry_at: float | None, now: float | None = None) -> None:
        """The sink refused it or could not be reached: again at ``retry_at``; ``None``: abandoned."""
        if retry_at is None:
            self.db.write_one(
                "UPDATE deliveries SET state = 'abandoned', attempts = attempts + 1, holder = NULL,"
                " claimed_until = NULL, last_error = ? WHERE id = ?",
                (error[:2000], delivery_id),
                "record a notice abandoned",
            )
            return
        self.db.write_one(
            "UPDATE deliveries SET attempts = attempts + 1, next_at = ?, holder = NULL, claimed_until = NULL,"
            " last_error = ? WHERE id = ?",
            (retry_at, error[:2000], delivery_id),
            "record a failed delivery",
        )

    def backlog(self, now: float | None = None) -> Backlog:
        """Pending and abandoned deliveries, and the oldest pending one's wait."""
        rows = self.db.read(
            "SELECT state, count(*), min(n.created_at) FROM deliveries d JOIN notices n ON n.id = d.notice_id"
            " WHERE d.state IN ('pending', 'abandoned') GROUP BY state"
        )
        counts = {str(state): (int(count), first) for state, count, first in rows}
        error_rows = self.db.read(
            "SELECT last_error FROM deliveries WHERE last_error <> '' AND state <> 'delivered' ORDER BY id DESC LIMIT 1"
        )
        at = float(self.db.read(f"SELECT {self.db.now}")[0][0]) if now is None else now
        pending, first = counts.get("pending", (0, None))
        return Backlog(
            pending=pending,
            abandoned=counts.get("abandoned", (0, None))[0],
            oldest_pending_age=max(0.0, at - float(first)) if first is not None else 0.0,
            last_error=str(error_rows[0][0]) if error_rows else "",
        )

    # ------------------------------------------------------------------ what Slack keeps

    def notice(self, entry_id: int, kind: NoticeKind) -> Notice | None:
        """The latest notice of ``kind`` about an entry (Slack draws an entry's message from its
        ``escalated`` notice)."""
        rows = self.db.read(
            f"SELECT {NOTICE_COLUMNS} FROM notices WHERE entry_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",  # noqa: S608
            (entry_id, kind.value),
        )
        return notice_of(rows[0]) if rows else None

    def slack_message(self, entry_id: int) -> tuple[str, str] | None:
        """The channel and ``ts`` of an entry's Slack message, if it was posted."""
        rows = self.db.read("SELECT channel, ts FROM slack_messages WHERE entry_id = ?", (entry_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def remember_slack_message(self, entry_id: int, channel: str, ts: str, now: float | None = None) -> None:
        """Keep an entry's Slack message (its first post wins)."""
        self.db.write_one(
            f"INSERT INTO slack_messages (entry_id, channel, ts, posted_at) VALUES (?, ?, ?, {self._at})"  # noqa: S608
            " ON CONFLICT (entry_id) DO NOTHING",
            (entry_id, channel, ts, now),
            "remember a Slack message",
        )

    @property
    def _at(self) -> str:
        return f"coalesce(?, {self.db.now})"


def payload_text(notice: Notice) -> str:
    """A notice's payload as sent: JSON, keys sorted (what a webhook's signature covers)."""
    return json.dumps(notice.payload, sort_keys=True, separators=(",", ":"))
