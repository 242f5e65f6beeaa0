"""The alert queue's human side: escalations, decisions under the approval policy, expiry, requests.

:class:`HumanSide` is the layer between :class:`~engine.core.queue_read.QueueReader` (reading)
and :class:`~engine.core.alert_queue.AlertQueue` (the servers' work): every change a person
causes or waits on. An entry **escalates** with its
:class:`~engine.core.approval_policy.Requirement` fixed on it and its notice added in the same
transaction; :meth:`HumanSide.decide` judges one person's approve or decline by that
requirement (:func:`~engine.core.approval_policy.judge`), journals the attempt whatever it came
to, changes the entry and adds the notice of the change, all in one synced transaction with
the entry's row locked, so concurrent deciders on any server are serialised;
:meth:`HumanSide.expire` ends requests nobody decided in time; :meth:`HumanSide.request` queues a
run a person asked for (they can never approve it).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from engine.core import notices
from engine.core.approval_policy import Action, Attempt, Judgement, Outcome, Progress, Requirement, judge
from engine.core.errors import JournalError
from engine.core.identity import Identity
from engine.core.journal_read import like_prefix
from engine.core.ledger import clock
from engine.core.notices import NoticeKind
from engine.core.queue_intake import active_entry, lock_entry_key, lock_keys
from engine.core.queue_read import (
    ATTEMPT_COLUMNS,
    COLUMNS,
    Entry,
    EntryState,
    QueueReader,
    attempt_of,
    entry_of,
)
from engine.core.store.database import Transaction

log = logging.getLogger(__name__)

HELD = "state = 'running' AND holder IS NOT DISTINCT FROM ?"
"""An entry this queue's holder holds (a queue with no holder — the CLI's — matches no holder)."""


class HumanSide(QueueReader):
    """The queue's changes that people cause or wait on (opened to write by :class:`AlertQueue`)."""

    holder: str | None
    _at: str

    def escalate(
        self,
        entry_id: int,
        *,
        run_id: str | None,
        note: str,
        requirement: Requirement,
        notice: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """A held entry's remediation now waits for people: record what its approval needs (and when
        the request expires) and, in the same transaction, the ``escalated`` notice (``notice``: its
        :func:`~engine.core.notices.payload`). False (nothing written) when no longer held."""
        with self.db.transaction("escalate an entry to a human", synced=True) as tx:
            changed = tx.execute(
                f"UPDATE alert_queue SET state = ?, run_id = COALESCE(?, run_id), note = ?, holder = NULL,"  # noqa: S608
                f" requirement = ?, requested_by = ?, expires_at = ?, updated_at = {self._at}"
                f" WHERE id = ? AND {HELD}",
                (
                    EntryState.ESCALATED.value,
                    run_id,
                    note,
                    json.dumps(requirement.as_data()),
                    json.dumps(requirement.requested_by.as_data()) if requirement.requested_by else None,
                    requirement.expires_at,
                    now,
                    entry_id,
                    self.holder,
                ),
            ).rowcount
            if changed == 1 and notice is not None:
                notices.add(
                    tx,
                    NoticeKind.ESCALATED,
                    notice,
                    entry_id=entry_id,
                    run_id=run_id,
                    now_sql=self.db.now,
                    now=now,
                )
        if changed != 1:
            log.warning("entry %s is no longer held by %s: did not escalate it", entry_id, self.holder)
        return changed == 1

    def decide(
        self,
        run_id: str,
        who: Identity,
        action: Action,
        *,
        reason: str = "",
        now: float | None = None,
    ) -> Decided:
        """One person's approve or decline on the entry ``run_id`` (or a unique start of it) waits in.

        Judged by the entry's :class:`~engine.core.approval_policy.Requirement` (who may, how many,
        never one's own request, not after it expired); every attempt is journaled with what it came
        to, refused ones too. The approval that meets the quorum queues the entry again (its next run
        checks the host, then remediates); a decline ends it. The notice of the outcome is added in
        the same transaction. Concurrent deciders (the CLI, the TUI, Slack, on any server) are
        serialised on the entry: the first decision wins, the later ones are told the entry is no
        longer waiting. :class:`JournalError` only when there is no such run."""
        if who.kind == "unix" and not who.role:
            who = who.with_role(self.db.role())
        with self.db.transaction("record a human's decision", synced=True) as tx:
            entry = self._find(tx, run_id)
            lock_entry_key(tx, entry.id)
            tx.execute(f"SELECT id FROM alert_queue WHERE id = ?{self.db.for_update}", (entry.id,))  # noqa: S608
            entry = self.entry_in(tx, entry.id)  # as it is now that no other decider can change it
            at = clock(tx, now)
            requirement = entry.requirement or Requirement.of(None)
            who = requirement.person_of(who)
            earlier = [
                attempt_of(row)
                for row in tx.execute(
                    f"SELECT {ATTEMPT_COLUMNS} FROM approval_attempts WHERE entry_id = ? ORDER BY id",  # noqa: S608
                    (entry.id,),
                ).fetchall()
            ]
            if entry.state is not EntryState.ESCALATED:
                judgement = Judgement(
                    Outcome.REFUSED, _not_waiting_text(entry), requirement.progress(earlier)
                )
            else:
                judgement = judge(requirement, who, action, earlier, at)
            attempt_id = self._journal_attempt(tx, entry, who, action, judgement, reason, at)
            self._apply(tx, entry, who, judgement, reason, attempt_id, at)
        return Decided(
            self.entry(entry.id), judgement.outcome, judgement.message, judgement.progress, attempt_id
        )

    def _journal_attempt(
        self,
        tx: Transaction,
        entry: Entry,
        who: Identity,
        action: Action,
        judgement: Judgement,
        reason: str,
        at: float,
    ) -> int:
        row = tx.execute(
            "INSERT INTO approval_attempts (entry_id, run_id, at, action, outcome, who_key, who, identity, reason,"
            " message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                entry.id,
                entry.run_id,
                at,
                action.value,
                judgement.outcome.value,
                who.key,
                who.label,
                json.dumps(who.as_data()),
                reason,
                judgement.message,
            ),
        ).fetchone()
        return int(row[0])

    def _apply(
        self,
        tx: Transaction,
        entry: Entry,
        who: Identity,
        judgement: Judgement,
        reason: str,
        attempt_id: int,
        at: float,
    ) -> None:
        """The entry's change and the notice of it, for what ``judgement`` came to."""
        outcome = judgement.outcome
        decision = {
            "by": who.label,
            "by_identity": who.as_data(),
            "reason": reason,
            "message": judgement.message,
            "progress": judgement.progress.describe(),
            "approved": list(judgement.progress.approved),
            "quorum": judgement.progress.quorum,
        }
        if outcome is Outcome.APPROVED:
            approvers = "; ".join([a.who.label for a in self._counted(tx, entry.id)] or [who.label])
            tx.execute(
                "UPDATE alert_queue SET state = ?, approved_by = ?, note = ?, holder = NULL, updated_at = ?"
                " WHERE id = ?",
                (
                    EntryState.QUEUED.value,
                    approvers,
                    f"approved by {', '.join(judgement.progress.approved)}: the next run checks again, then remediates",
                    at,
                    entry.id,
                ),
            )
            kind, key = NoticeKind.APPROVED, f"entry:{entry.id}:approved:{attempt_id}"
            summary = (
                f"{entry.runbook_id} on {entry.target}: approved by {', '.join(judgement.progress.approved)}"
            )
        elif outcome is Outcome.DECLINED:
            note = f"declined by {who.short}" + (f": {reason}" if reason else "")
            tx.execute(
                "UPDATE alert_queue SET state = ?, note = ?, holder = NULL, updated_at = ? WHERE id = ?",
                (EntryState.DECLINED.value, note, at, entry.id),
            )
            kind, key = NoticeKind.DECLINED, f"entry:{entry.id}:declined:{attempt_id}"
            summary = f"{entry.runbook_id} on {entry.target}: {note}; nothing was changed"
        elif outcome is Outcome.COUNTED:
            kind, key = NoticeKind.APPROVAL_COUNTED, f"entry:{entry.id}:counted:{attempt_id}"
            summary = (
                f"{entry.runbook_id} on {entry.target}: {who.short} approved; {judgement.progress.describe()}"
            )
        else:
            return
        body = notices.payload(
            kind,
            key=key,
            summary=summary,
            entry=notice_entry(self.entry_in(tx, entry.id)),
            runbook={"id": entry.runbook_id},
            host=entry.target,
            details={"decision": decision},
            at=at,
        )
        notices.add(tx, kind, body, entry_id=entry.id, run_id=entry.run_id, now_sql=self.db.now, now=at)

    def _counted(self, tx: Transaction, entry_id: int) -> list[Attempt]:
        """The attempts whose approval counts (one per person, first kept), including this one."""
        seen: set[str] = set()
        counted = []
        for row in tx.execute(
            f"SELECT {ATTEMPT_COLUMNS} FROM approval_attempts WHERE entry_id = ? AND action = 'approve'"  # noqa: S608
            " AND outcome IN ('counted', 'approved') ORDER BY id",
            (entry_id,),
        ).fetchall():
            attempt = attempt_of(row)
            if attempt.who.key not in seen:
                seen.add(attempt.who.key)
                counted.append(attempt)
        return counted

    def entry_in(self, tx: Transaction, entry_id: int) -> Entry:
        """An entry as ``tx`` sees it."""
        return entry_of(tx.execute(f"SELECT {COLUMNS} FROM alert_queue WHERE id = ?", (entry_id,)).fetchone())  # noqa: S608

    def expire(self, now: float | None = None) -> list[Entry]:
        """Escalated entries whose request lapsed become ``expired`` (nothing is changed on their
        host), each with its ``approval_expired`` notice; the ones expired now, oldest first."""
        due = self.db.read(  # a look first: most turns find nothing, and take no write lock for it
            f"SELECT 1 FROM alert_queue WHERE state = ? AND expires_at <= coalesce(?, {self.db.now}) LIMIT 1",  # noqa: S608
            (EntryState.ESCALATED.value, now),
        )
        if not due:
            return []
        expired = []
        with self.db.transaction("expire lapsed approval requests", synced=True) as tx:
            at = clock(tx, now)
            rows = tx.execute(
                f"SELECT {COLUMNS} FROM alert_queue WHERE state = ? AND expires_at IS NOT NULL"  # noqa: S608
                f" AND expires_at <= ? ORDER BY id{self.db.skip_locked}",
                (EntryState.ESCALATED.value, at),
            ).fetchall()
            for row in rows:
                entry = entry_of(row)
                lock_entry_key(tx, entry.id)
                requirement = entry.requirement or Requirement.of(None)
                progress = requirement.progress(self._counted(tx, entry.id))
                note = f"approval expired ({progress.describe()}): nothing was changed; the alert's next firing asks again"
                changed = tx.execute(
                    "UPDATE alert_queue SET state = ?, note = ?, updated_at = ? WHERE id = ? AND state = ?",
                    (EntryState.EXPIRED.value, note, at, entry.id, EntryState.ESCALATED.value),
                ).rowcount
                if changed != 1:
                    continue
                body = notices.payload(
                    NoticeKind.APPROVAL_EXPIRED,
                    key=f"entry:{entry.id}:expired",
                    summary=f"{entry.runbook_id} on {entry.target}: {note}",
                    entry=notice_entry(self.entry_in(tx, entry.id)),
                    runbook={"id": entry.runbook_id},
                    host=entry.target,
                    details={"progress": progress.describe(), "approved": list(progress.approved)},
                    at=at,
                )
                notices.add(
                    tx,
                    NoticeKind.APPROVAL_EXPIRED,
                    body,
                    entry_id=entry.id,
                    run_id=entry.run_id,
                    now_sql=self.db.now,
                    now=at,
                )
                expired.append(entry.id)
        return [self.entry(entry_id) for entry_id in expired]

    def request(
        self, runbook_id: str, target: str, who: Identity, reason: str = "", now: float | None = None
    ) -> Entry:
        """A human asks ``cairn serve`` to run ``runbook_id`` on ``target`` (``cairn request``): a queued
        entry that records who asked — they can never approve its remediation themselves.
        :class:`JournalError` when an entry for the same runbook and target is already active."""
        if who.kind == "unix" and not who.role:
            who = who.with_role(self.db.role())
        alert = {
            "status": "requested",
            "labels": {},
            "annotations": {"summary": reason} if reason else {},
            "requested_by": who.label,
        }
        with self.db.transaction("queue a requested run", synced=True) as tx:
            at = clock(tx, now)
            lock_keys(tx, {(runbook_id, target)})
            row = tx.execute(
                "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, updated_at,"
                " requested_by, note) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)"
                " ON CONFLICT (runbook_id, target) WHERE state IN ('queued', 'running', 'escalated') DO NOTHING"
                " RETURNING id",
                (
                    at,
                    f"request:{uuid.uuid4().hex}",
                    runbook_id,
                    target,
                    json.dumps(alert),
                    at,
                    json.dumps(who.as_data()),
                    f"requested by {who.short}" + (f": {reason}" if reason else ""),
                ),
            ).fetchone()
            if row is None:
                raise JournalError(
                    f"{runbook_id} on {target} already has an active entry: {active_entry(tx, runbook_id, target)}"
                    "; `cairn queue` shows it"
                )
        return self.entry(int(row[0]))

    def add_notice(
        self, kind: NoticeKind, body: dict[str, Any], *, entry_id: int | None, run_id: str | None
    ) -> None:
        """Add a notice on its own (a run's progress, its verdict); once per ``body["id"]``."""
        with self.db.transaction(f"add a {kind.value} notice") as tx:
            notices.add(tx, kind, body, entry_id=entry_id, run_id=run_id, now_sql=self.db.now)

    def _find(self, tx: Transaction, run_id: str) -> Entry:
        if not run_id.strip():
            raise JournalError(
                "give the run id (or its start) of the run waiting for a human: see `cairn queue`"
            )
        rows = [
            entry_of(row)
            for row in tx.execute(
                f"SELECT {COLUMNS} FROM alert_queue WHERE run_id LIKE ? ESCAPE '\\' ORDER BY id DESC",  # noqa: S608
                (like_prefix(run_id),),
            ).fetchall()
        ]
        if not rows:  # a run of an entry decided since: its next run has an id of its own
            rows = [
                entry_of(row)
                for row in tx.execute(
                    f"SELECT {COLUMNS} FROM alert_queue WHERE id IN (SELECT entry_id FROM approval_attempts"  # noqa: S608
                    " WHERE run_id LIKE ? ESCAPE '\\') ORDER BY id DESC",
                    (like_prefix(run_id),),
                ).fetchall()
            ]
        if not rows:
            raise JournalError(
                f"no alert-started run {run_id!r} in {self.where}; `cairn queue` lists the runs waiting for a human"
            )
        runs = {e.run_id for e in rows}
        if len(runs) > 1 and run_id not in runs:
            raise JournalError(
                f"run id {run_id!r} is ambiguous: {', '.join(sorted(r or '' for r in runs)[:5])}"
            )
        return next(e for e in rows if e.run_id == run_id) if run_id in runs else rows[0]


@dataclass(frozen=True, slots=True)
class Decided:
    """What one person's approve or decline came to (:meth:`AlertQueue.decide`)."""

    entry: Entry
    """The entry as it is after the attempt."""
    outcome: Outcome
    message: str
    """What every front end shows: why refused, the quorum's progress, what happens next."""
    progress: Progress
    attempt_id: int

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSED


def _not_waiting_text(entry: Entry) -> str:
    return (
        f"run {entry.run_id} is not waiting for a human: its queue entry {entry.id} is "
        f"{entry.state.value}" + (f" ({entry.note})" if entry.note else "")
    )


def notice_entry(entry: Entry) -> dict[str, Any]:
    """An entry as a notice carries it."""
    return {
        "id": entry.id,
        "runbook_id": entry.runbook_id,
        "target": entry.target,
        "state": entry.state.value,
        "run_id": entry.run_id,
        "note": entry.note,
        "expires_at": entry.expires_at,
    }
