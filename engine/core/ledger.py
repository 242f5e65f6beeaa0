"""The remediation ledger: the guardrails every runbook shares, held across every server on the store.

One row in ``remediations`` per host being (or having been) remediated by a run: its holder
(the server running it), when it started and ended. Two guardrails read it:

* the **circuit breaker** — at most ``breaker`` *automatic* remediations per host per hour;
* the **fleet budget** — at most ``budget`` hosts being remediated at once, across the fleet.

Both are checked and the new row recorded in **one transaction** that no other server's check
can interleave with: SQLite's ``BEGIN IMMEDIATE`` lets one writer in at a time; on PostgreSQL
(``READ COMMITTED``: two servers would both see the last slot free and both take it) the
transaction first takes a transaction-level advisory lock, :data:`LEDGER_LOCK`, which every
server's check takes too and the commit releases. Times are the database's clock unless the
caller gives one (tests), so servers whose clocks disagree count one hour the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.store.database import Database, Transaction

HOUR = 3600.0
LEDGER_LOCK = 0x6361_6972_6E_01
"""The advisory lock key that serialises guardrail checks on PostgreSQL (beside migrate's own key)."""


@dataclass(frozen=True)
class Guard:
    """What :func:`begin` decided."""

    ledger_id: int | None
    """The ledger row to end when the remediation is over; ``None`` when refused."""
    tripped: str = ""
    """``breaker`` or ``budget`` when refused."""
    reason: str = ""
    """Why it was refused, for the human it escalates to."""


def clock(tx: Transaction, now: float | None) -> float:
    """``now`` if given, else the database's clock (the one every server shares), read in ``tx``."""
    if now is not None:
        return now
    return float(tx.execute(f"SELECT {tx.db.now}").fetchone()[0])


def begin(
    db: Database,
    host: str,
    runbook_id: str,
    run_id: str,
    *,
    automatic: bool,
    breaker: int,
    budget: int,
    holder: str | None,
    now: float | None = None,
) -> Guard:
    """Record that ``host`` is being remediated (by ``holder``), or refuse an automatic remediation.

    Refused when ``host`` had ``breaker`` automatic remediations in the last hour, or ``budget``
    other hosts are being remediated now. A human's approval is never refused (the human is who
    guardrails escalate to) but counts toward the budget. Synced: the breaker must count it.
    """
    with db.transaction("record a remediation in the ledger", synced=True) as tx:
        if db.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(CAST(? AS bigint))", (LEDGER_LOCK,))
        at = clock(tx, now)
        if automatic:
            refused = _refusal(tx, host, at, breaker, budget)
            if refused is not None:
                return refused
        # Started when recorded (the clock read again): after the end of any remediation the
        # budget check just saw ended, whose end time was taken before it committed.
        row = tx.execute(
            "INSERT INTO remediations (host, runbook_id, run_id, automatic, started_at, holder)"  # noqa: S608
            f" VALUES (?, ?, ?, ?, coalesce(?, {db.now}), ?) RETURNING id",
            (host, runbook_id, run_id, int(automatic), now, holder),
        ).fetchone()
        return Guard(int(row[0]))


def _refusal(tx: Transaction, host: str, at: float, breaker: int, budget: int) -> Guard | None:
    """Why an automatic remediation of ``host`` may not start now (``None``: it may)."""
    recent = tx.execute(
        "SELECT count(*), min(started_at) FROM remediations WHERE host = ? AND automatic = 1 AND started_at > ?",
        (host, at - HOUR),
    ).fetchone()
    if recent[0] >= breaker:
        again = float(recent[1]) + HOUR - at
        return Guard(
            None,
            "breaker",
            f"circuit breaker: {recent[0]} automatic remediations on {host} in the last hour "
            f"(at most {breaker}); the next is allowed in {again / 60:.0f} min",
        )
    busy = [
        str(row[0])
        for row in tx.execute(
            "SELECT DISTINCT host FROM remediations WHERE ended_at IS NULL AND host != ? ORDER BY host",
            (host,),
        ).fetchall()
    ]
    if len(busy) >= budget:
        return Guard(
            None,
            "budget",
            f"fleet budget: {len(busy)} hosts are being remediated now (at most {budget}): "
            + ", ".join(busy[:5]),
        )
    return None


def end(db: Database, ledger_id: int, now: float | None = None) -> None:
    """The remediation is over (its host no longer counts toward the budget)."""
    with db.transaction("end a remediation in the ledger") as tx:
        tx.execute("UPDATE remediations SET ended_at = ? WHERE id = ?", (clock(tx, now), ledger_id))
