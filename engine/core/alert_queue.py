"""The alert queue: routed alerts, persisted before the webhook is answered, shared by every server on the store.

The queue lives in the store (:mod:`engine.core.store`) beside the journal: a SQLite file for one
``cairn serve``, or a PostgreSQL database that several servers share, all active. ``cairn serve``
answers Alertmanager only after :meth:`AlertQueue.accept` has committed, and that commit is
durable (SQLite: synced, ``synchronous=FULL``; PostgreSQL: every commit), so an accepted alert
survives ``kill -9`` and a power loss. So are a human's decision (:meth:`AlertQueue.decide`)
and a remediation taken in the ledger (:mod:`engine.core.ledger`).
A write the store refuses (disk full, read-only, server gone) is one error
(:class:`~engine.core.errors.JournalUnwritable`, :class:`~engine.core.errors.JournalUnreachable`)
with nothing half written; :meth:`AlertQueue.probe` asks when it can write again. Reading is
:class:`~engine.core.queue_read.QueueReader`'s.

One row per (alert, runbook, target) that was queued. What a webhook does to it — a firing
alert queued once across every server (the database's unique index decides), a duplicate or one
cooling down said why, a resolved one cancelling what has not started — is
:mod:`engine.core.queue_intake`'s, in :meth:`AlertQueue.accept_many`'s one transaction.

Servers share the work through **holders** (:mod:`engine.core.store.leases`): a queue opened with
``holder=`` (the server's lease id) :meth:`claim`\\ s the oldest queued entry as that holder
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so racing servers never take the same entry and never
wait on each other), and :meth:`started`, :meth:`finish` and :meth:`requeue` change an entry only
while that holder still holds it — they say ``False`` and write nothing when another server took
it over meanwhile (:meth:`take_over`, called by every live server at its heartbeat).
:meth:`hand_back` gives a stopping server's entries back at once. An entry whose remediation
needs a human is **escalated**; what people do to it — :meth:`decide` under the approval
policy, :meth:`expire`, :meth:`request` — is :class:`~engine.core.queue_humans.HumanSide`'s.
Times are the database's clock unless a caller gives ``now`` (tests): servers whose clocks
disagree see one cooldown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.core import ledger
from engine.core.alerts import Route
from engine.core.approval_policy import Action, Outcome
from engine.core.ledger import Guard
from engine.core.queue_humans import HELD, Decided, HumanSide, notice_entry
from engine.core.queue_intake import Cooling, Intake, lock_entry_key, take_in
from engine.core.queue_read import ACTIVE, COLUMNS, COOLING, Entry, EntryState, entry_of
from engine.core.store import leases, migrate
from engine.core.store.database import Database
from engine.core.store.leases import Takeover
from engine.core.store.location import Location

__all__ = [
    "ACTIVE",
    "COOLING",
    "WAITS_FOR_A_HUMAN",
    "Action",
    "AlertQueue",
    "Decided",
    "Entry",
    "EntryState",
    "Guard",
    "Intake",
    "Outcome",
    "Takeover",
    "notice_entry",
]

log = logging.getLogger(__name__)

WAITS_FOR_A_HUMAN = "remediation waits for a human: "
"""How an escalated entry's note starts (then why: the policy, a guardrail, a failed fix)."""


class AlertQueue(HumanSide):
    """The queue in the store, to write; safe to share between threads (calls are serialised).

    ``holder``: the lease id of the server this queue works for (``None``: the CLI's, which
    claims nothing). ``cooldown``: seconds after a run on a (runbook, target) during which the
    same firing alert is a duplicate."""

    def __init__(
        self,
        location: Location | Path | str | None = None,
        *,
        cooldown: float = 0.0,
        holder: str | None = None,
    ) -> None:
        self.cooldown = cooldown
        self.holder = holder
        self.failed_forgotten_before = 0.0
        """Failed entries that ended before this time start no cooldown: the server has read its
        inventory and runbooks since (at start, at SIGHUP), so the alert's next firing may run."""
        super().__init__(location)
        self._at = f"coalesce(?, {self.db.now})"
        """SQL for "now": the caller's time if given, else the database's clock."""

    def _open(self, location: Location) -> Database:
        db = Database(location, write=True, what="the alert queue")
        try:
            migrate.ensure_current(db)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this connection (never, between calls)."""
        return self.db.in_transaction()

    # ------------------------------------------------------------------ intake

    def accept(self, routes: Iterable[Route], now: float | None = None) -> Intake:
        """Queue the firing routes that are new, cancel what resolved ones end; one transaction."""
        return self.accept_many([routes], now)[0]

    def accept_many(self, webhooks: Sequence[Iterable[Route]], now: float | None = None) -> list[Intake]:
        """:meth:`accept` for several webhooks, in order, in **one** durable transaction (group
        commit: the server gathers the webhooks that arrive while the previous commit runs)."""
        cooling = Cooling(self.cooldown, self.failed_forgotten_before)
        with self.db.transaction("queue alerts", synced=True) as tx:
            return take_in(tx, webhooks, cooling, now)

    # ------------------------------------------------------------------ work

    def claim(self, now: float | None = None) -> Entry | None:
        """Take the oldest queued entry as this queue's holder (it becomes running), or ``None``.

        One statement; on PostgreSQL rows other servers are claiming are skipped, not waited for."""
        row = self.db.write_returning(  # one statement commits alone: one round trip, no BEGIN/COMMIT
            f"UPDATE alert_queue SET state = 'running', holder = ?, updated_at = {self._at}"  # noqa: S608
            " WHERE state = 'queued' AND id = (SELECT id FROM alert_queue WHERE state = 'queued'"
            f" ORDER BY id LIMIT 1{self.db.skip_locked}) RETURNING {COLUMNS}",
            (self.holder, now),
            "claim a queued alert",
        )
        return entry_of(row) if row else None

    def started(self, entry_id: int, run_id: str, now: float | None = None) -> bool:
        """Record the run working on a claimed entry (before it runs: whoever resumes it knows the run).

        False (nothing written) when this holder no longer holds the entry."""
        return self._change_held(
            entry_id, "run_id = ?", (run_id,), now, f"record that run {run_id} works on it"
        )

    def finish(
        self,
        entry_id: int,
        state: EntryState,
        *,
        run_id: str | None = None,
        note: str = "",
        now: float | None = None,
    ) -> bool:
        """Record how a held entry ended (or that it was escalated), with its run; no holder after.

        False (nothing written) when this holder no longer holds the entry."""
        return self._change_held(
            entry_id,
            "state = ?, run_id = COALESCE(?, run_id), note = ?, holder = NULL",
            (state.value, run_id, note),
            now,
            f"record it {state.value}",
            ends=state.value not in ACTIVE,
        )

    def requeue(self, entry_id: int, note: str, now: float | None = None) -> bool:
        """Put a held running entry back in the queue (its run was checkpointed at shutdown).

        False (nothing written) when this holder no longer holds the entry."""
        return self._change_held(
            entry_id,
            "state = ?, note = ?, holder = NULL",
            (EntryState.QUEUED.value, note),
            now,
            "queue it again",
        )

    def _change_held(
        self,
        entry_id: int,
        assignments: str,
        values: tuple[object, ...],
        now: float | None,
        doing: str,
        *,
        ends: bool = False,
    ) -> bool:
        """``ends``: the entry leaves the active states (an intake of its alert must not interleave)."""
        statement = f"UPDATE alert_queue SET {assignments}, updated_at = {self._at} WHERE id = ? AND {HELD}"  # noqa: S608
        params = (*values, now, entry_id, self.holder)
        if not ends:  # one statement commits alone: one round trip
            changed = self.db.write_one(statement, params, "write the alert queue")
        else:
            with self.db.transaction("write the alert queue") as tx:
                lock_entry_key(tx, entry_id)
                changed = tx.execute(statement, params).rowcount
        if changed != 1:
            log.warning(
                "entry %s is no longer held by %s (another server took it over): did not %s",
                entry_id,
                self.holder or "this process",
                doing,
            )
        return changed == 1

    def take_over(self) -> Takeover:
        """Hand back the work of servers whose lease lapsed (their entries queued again, their runs
        interrupted, their ledger rows closed), and entries a first-release server left running."""
        return leases.take_over(self.db, by=self.holder or "")

    def hand_back(self, note: str, now: float | None = None) -> list[int]:
        """A stopping server (SIGTERM): every running entry it holds goes back to the queue with
        ``note``, no holder; its open ledger rows are closed (no lease is left to fence its runs).
        The ids handed back, oldest first."""
        with self.db.transaction("hand this server's work back") as tx:
            ids = [
                int(row[0])
                for row in tx.execute(
                    f"UPDATE alert_queue SET state = ?, note = ?, holder = NULL, updated_at = {self._at}"  # noqa: S608
                    f" WHERE {HELD} RETURNING id",
                    (EntryState.QUEUED.value, note, now, self.holder),
                ).fetchall()
            ]
            tx.execute(
                f"UPDATE remediations SET ended_at = {self._at}"  # noqa: S608
                " WHERE ended_at IS NULL AND holder IS NOT DISTINCT FROM ?",
                (now, self.holder),
            )
        return sorted(ids)

    # ------------------------------------------------------------------ guardrails

    def begin_remediation(
        self,
        host: str,
        runbook_id: str,
        run_id: str,
        *,
        automatic: bool,
        breaker: int,
        budget: int,
        now: float | None = None,
    ) -> Guard:
        """Record that ``host`` is being remediated by this queue's holder, or refuse an automatic
        remediation (:func:`engine.core.ledger.begin`: breaker and budget, across every server)."""
        return ledger.begin(
            self.db,
            host,
            runbook_id,
            run_id,
            automatic=automatic,
            breaker=breaker,
            budget=budget,
            holder=self.holder,
            now=now,
        )

    def end_remediation(self, ledger_id: int, now: float | None = None) -> None:
        """The remediation is over (its host no longer counts toward the budget)."""
        ledger.end(self.db, ledger_id, now)

    # ------------------------------------------------------------------ the store

    def probe(self, now: float | None = None) -> None:
        """Write one small row: :class:`~engine.core.errors.JournalUnwritable` (or
        :class:`~engine.core.errors.JournalUnreachable`) while the store refuses it.

        ``cairn serve`` asks while its store cannot be written, to see when it can again."""
        with self.db.transaction("write a probe to the store") as tx:
            tx.execute(
                f"INSERT INTO store_probe (id, holder, at) VALUES (1, ?, {self._at})"  # noqa: S608 (only ?s)
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, at = excluded.at",
                (self.holder or "", now),
            )
