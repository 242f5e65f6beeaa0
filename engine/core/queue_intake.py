"""What webhooks do to the alert queue, in the intake's one transaction (:meth:`AlertQueue.accept_many`).

* a **firing** alert becomes an entry unless its (runbook, target) already has an active one —
  queued, running or waiting for a human (escalated). The database decides: the partial unique
  index ``alert_queue_one_active`` refuses a second active entry (``INSERT … ON CONFLICT DO
  NOTHING``), so servers given the same webhook at once queue it once, and the duplicate's
  reason names the entry that holds the key. So is one whose last entry on that key ended less
  than the cooldown ago (:class:`Cooling`, read before the insert): Alertmanager repeats firing
  alerts every ``repeat_interval``, and a group carries every alert again;
* a **resolved** alert cancels the entries of the same alert that have not started, and those
  waiting for a human (nothing was changed on the host); a running one goes on (its verify says
  whether the fix held).

On PostgreSQL the transaction first takes an advisory lock per (runbook, target) it touches, in
one order every server follows: two servers' batches holding the same alerts in different
orders would otherwise wait on each other's inserts in a circle (PostgreSQL breaks the deadlock
by failing one of them, a webhook answered 500). A worker ending an entry (done, failed) and a
human declining one take its key's lock too (:func:`lock_entry_key`): under ``READ COMMITTED``
an entry ending between the cooldown's read and the insert would let the alert in again.
SQLite's ``BEGIN IMMEDIATE`` lets one writer in at a time anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.core.alerts import AlertStatus, Route
from engine.core.ledger import clock
from engine.core.queue_read import ACTIVE, COOLING, EntryState
from engine.core.store.database import Transaction

INTAKE_LOCKS = 0x6361_6972
"""The first key of the (runbook, target) advisory locks an intake takes on PostgreSQL."""
_INSERT = (
    "INSERT INTO alert_queue (received_at, fingerprint, runbook_id, target, alert, state, updated_at)"
    " VALUES (?, ?, ?, ?, ?, 'queued', ?)"
    " ON CONFLICT (runbook_id, target) WHERE state IN ('queued', 'running', 'escalated') DO NOTHING"
    " RETURNING id"
)
"""A firing alert becomes an entry unless its (runbook, target) has an active one (the index says)."""


@dataclass
class Intake:
    """What one webhook did to the queue."""

    queued: list[int] = field(default_factory=list)
    """Ids of the new entries."""
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    """(runbook, target, why) of firing alerts not queued again."""
    cancelled: list[int] = field(default_factory=list)
    """Ids of entries a resolved alert cancelled."""


@dataclass(frozen=True, slots=True)
class Cooling:
    """When a firing alert whose last entry ended recently is a duplicate."""

    cooldown: float = 0.0
    """Seconds after an entry on the same (runbook, target) ended (done, declined); 0: never."""
    failed_forgotten_before: float = 0.0
    """A failed entry that ended before this time starts no cooldown (the server has read its
    inventory and runbooks since)."""


def take_in(
    tx: Transaction, webhooks: Sequence[Iterable[Route]], cooling: Cooling, now: float | None
) -> list[Intake]:
    """What each webhook did, in order, all inside ``tx`` (``now``: the database's clock if ``None``)."""
    batches = [[route for route in routes if not route.problem] for routes in webhooks]
    if tx.db.dialect == "postgresql":
        lock_keys(tx, {(route.runbook_id, route.target) for routes in batches for route in routes})
    at = clock(tx, now)
    return [_take(tx, routes, cooling, at) for routes in batches]


def _take(tx: Transaction, routes: list[Route], cooling: Cooling, at: float) -> Intake:
    intake = Intake()
    for route in routes:  # a route without a target is the server's to report: not here
        if route.alert.status is AlertStatus.RESOLVED:
            intake.cancelled += _cancel(tx, route, at)
            continue
        why = _cooling(tx, route, cooling, at)
        if not why:
            row = tx.execute(
                _INSERT,
                (
                    at,
                    route.alert.fingerprint,
                    route.runbook_id,
                    route.target,
                    json.dumps(route.alert.context()),
                    at,
                ),
            ).fetchone()
            if row is not None:
                intake.queued.append(int(row[0]))
                continue
            why = _active(tx, route)
        intake.duplicates.append((route.runbook_id, route.target, why))
    return intake


def _active(tx: Transaction, route: Route) -> str:
    """Which entry holds ``route``'s (runbook, target), for the duplicate's reason."""
    return active_entry(tx, route.runbook_id, route.target)


def active_entry(tx: Transaction, runbook_id: str, target: str) -> str:
    """Which entry is active for (runbook, target), in words."""
    row = tx.execute(
        "SELECT id, state FROM alert_queue WHERE runbook_id = ? AND target = ? AND state IN (?, ?, ?) LIMIT 1",
        (runbook_id, target, *ACTIVE),
    ).fetchone()
    if row is None:  # ended between the insert and this read (another server, on PostgreSQL)
        return "another entry was active for the same runbook and target"
    return f"entry {row[0]} is {row[1]} for the same runbook and target"


def _cooling(tx: Transaction, route: Route, cooling: Cooling, at: float) -> str:
    """Why ``route`` waits out the cooldown ("" when it does not)."""
    if cooling.cooldown <= 0:
        return ""
    row = tx.execute(
        "SELECT id, updated_at, state FROM alert_queue WHERE runbook_id = ? AND target = ?"
        " AND (state IN (?, ?) OR (state = ? AND updated_at > ?)) AND updated_at > ?"
        " ORDER BY updated_at DESC LIMIT 1",
        (
            route.runbook_id,
            route.target,
            *COOLING,
            EntryState.FAILED.value,
            cooling.failed_forgotten_before,
            at - cooling.cooldown,
        ),
    ).fetchone()
    if row is None:
        return ""
    return (
        f"cooling down: entry {row[0]} ended ({row[2]}) {at - float(row[1]):.0f} s ago"
        f" (cooldown {cooling.cooldown:g} s)"
    )


def _cancel(tx: Transaction, route: Route, at: float) -> list[int]:
    """The entries of a resolved alert that had not started (or waited for a human), cancelled."""
    rows = tx.execute(
        "SELECT id, state FROM alert_queue WHERE fingerprint = ? AND runbook_id = ? AND target = ?"
        " AND state IN (?, ?) ORDER BY id",
        (
            route.alert.fingerprint,
            route.runbook_id,
            route.target,
            EntryState.QUEUED.value,
            EntryState.ESCALATED.value,
        ),
    ).fetchall()
    for entry_id, state in rows:
        note = (
            "the alert resolved while its remediation waited for a human; nothing was changed"
            if state == EntryState.ESCALATED.value
            else "the alert resolved before its run started"
        )
        tx.execute(
            "UPDATE alert_queue SET state = ?, note = ?, holder = NULL, updated_at = ? WHERE id = ?",
            (EntryState.CANCELLED.value, note, at, entry_id),
        )
    return [int(row[0]) for row in rows]


def lock_entry_key(tx: Transaction, entry_id: int) -> None:
    """PostgreSQL: before an entry leaves the active states (its run ended, a human declined), lock
    its (runbook, target) as an intake does: an intake's cooldown read and its insert are two
    statements, and an entry ending between them would let the same alert in again."""
    if tx.db.dialect != "postgresql":
        return
    row = tx.execute("SELECT runbook_id, target FROM alert_queue WHERE id = ?", (entry_id,)).fetchone()
    if row is not None:
        lock_keys(tx, {(str(row[0]), str(row[1]))})


def lock_keys(tx: Transaction, keys: set[tuple[str, str]]) -> None:
    """PostgreSQL: this transaction's advisory lock on each (runbook, target), taken in one order
    that every server follows (so no two intakes wait on each other in a circle). SQLite: nothing
    (its ``BEGIN IMMEDIATE`` lets one writer in at a time)."""
    if not keys or tx.db.dialect != "postgresql":
        return
    hashes = sorted({_key_hash(runbook_id, target) for runbook_id, target in keys})
    tx.execute(
        "SELECT count(pg_advisory_xact_lock(CAST(? AS integer), k)) FROM unnest(CAST(? AS integer[])) AS k",
        (INTAKE_LOCKS, hashes),
    )


def _key_hash(runbook_id: str, target: str) -> int:
    """A (runbook, target) as a 32-bit lock key (two keys sharing one only wait for each other)."""
    digest = hashlib.sha256(f"{runbook_id}\0{target}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)
