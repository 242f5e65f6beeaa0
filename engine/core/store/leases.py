"""Who holds which work: each holder's lease, renewed by heartbeat, the fence, and taking over a lapsed holder's work.

A process that holds work in a shared store — a ``cairn serve`` (its claimed queue entries and
their runs) — registers as a **holder**: a row in ``holders`` with a lease that ends
``ttl`` seconds after its last renewal, by the *database's* clock (servers' own clocks may
disagree; the database's is the one they share). A thread renews it every ``heartbeat`` seconds.

* **Lapsed**: a holder whose lease ran out (killed, machine gone, paused, cut off) is marked
  ``lapsed`` by the first live server that looks (:func:`take_over`, every ``heartbeat``): in
  the same transaction its running entries go back to the queue, its running runs are recorded
  interrupted (their in-flight steps too) and its open ledger rows are closed. Another server
  then claims each entry and resumes its run from the journal. A holder on *this* machine whose
  process is gone (same boot, pid gone or reused) lapses at once, without waiting for its lease.
* **Fence** (:meth:`Lease.check`): before a remediation step's start is recorded, the holder's
  row is read, locked (``FOR SHARE``), in the transaction that records it. A lapsed lease — or
  one past its end, not yet taken over — refuses (:class:`~engine.core.errors.LeaseLost`), so
  the step never starts. ``take_over`` locks the same row to mark it lapsed, so either the
  step's start is recorded first (and the server resuming the run sees it started: it is never
  run again) or the fence refuses it. A lapsed holder never comes back: its process, woken up,
  finds its renewal refused and stops starting work.
* **Released** (:meth:`Lease.release`): a server stopping (SIGTERM) hands its entries back
  itself and says so; nobody waits for its lease.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import JournalError, LeaseLost
from engine.core.store.database import Database, Transaction
from engine.core.store.location import Location

log = logging.getLogger(__name__)

LEASE = 3.0
"""Seconds a holder's work stays its own after its last renewal (failover takes about this long)."""
HEARTBEAT = 1.0
"""Seconds between renewals (and between looks for lapsed holders)."""
RUN_LEASE = 30.0
"""The lease of a run a human started on PostgreSQL (``cairn run``, ``resume``, the TUI): long enough
for a terminal suspended a while (Ctrl-Z) to go on; a killed run on another machine reads
``running`` that long (on the same machine, at once: its process is gone)."""
LIVE, RELEASED, LAPSED = "live", "released", "lapsed"
INTERRUPTED_STEP = "interrupted: the run stopped before this step finished"


def machine_id() -> str:
    """This machine and boot: a pid means something only within one boot of one machine."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def process_start(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot), "" when there is no such process: a reused
    pid has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 and fields[0] not in "ZX" else ""


@dataclass
class Lease:
    """This process's lease in the store at ``location``; :meth:`start` registers it and keeps it renewed."""

    location: Location
    kind: str = "serve"
    ttl: float = LEASE
    heartbeat: float = HEARTBEAT
    on_lost: Callable[[str], None] | None = None
    """Called once, from the heartbeat thread, when the lease is found lapsed (why)."""
    id: str = field(default="")
    lost: str = ""
    """Why the lease is gone ("" while it holds)."""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.db = Database(self.location, write=True, what="the lease")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """Register (a live lease of ``ttl`` seconds) and renew it every ``heartbeat`` seconds."""
        pid = os.getpid()
        with self.db.transaction("register this server's lease") as tx:
            now = self.db.now
            tx.execute(
                "INSERT INTO holders (id, kind, machine, pid, pid_start, started_at, renewed_at, lease_until, state)"
                f" VALUES (?, ?, ?, ?, ?, {now}, {now}, {now} + ?, ?)",
                (self.id, self.kind, machine_id(), pid, process_start(pid), self.ttl, LIVE),
            )
        self._thread = threading.Thread(target=self._beat, name="cairn-lease", daemon=True)
        self._thread.start()

    def renew(self) -> bool:
        """Push the lease's end ``ttl`` seconds past now, if it still holds; False (and :attr:`lost`) if not."""
        now = self.db.now
        with self.db.transaction("renew this server's lease") as tx:
            row = tx.execute(
                f"UPDATE holders SET renewed_at = {now}, lease_until = {now} + ? "
                f"WHERE id = ? AND state = ? AND lease_until > {now} RETURNING id",
                (self.ttl, self.id, LIVE),
            ).fetchone()
        if row is None:
            self._lose("its lease lapsed: another server may have taken its work over")
        return row is not None

    def release(self, note: str = "stopped") -> None:
        """The server stops: its lease ends now (its work must already be handed back)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.heartbeat * 2)
        if self.lost:
            return
        try:
            with self.db.transaction("release this server's lease") as tx:
                tx.execute(
                    f"UPDATE holders SET state = ?, note = ?, lease_until = {self.db.now} WHERE id = ? AND state = ?",
                    (RELEASED, note, self.id, LIVE),
                )
        except JournalError as exc:  # it lapses by itself
            log.warning("could not release the lease %s: %s", self.id, exc)

    def close(self) -> None:
        self._stop.set()
        self.db.close()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.renew():
                    return
            except JournalError as exc:  # the store does not answer: the lease runs out meanwhile
                log.warning("could not renew the lease %s: %s", self.id, exc)

    def _lose(self, why: str) -> None:
        if self.lost:
            return
        self.lost = why
        log.error("lease %s lost: %s", self.id, why)
        if self.on_lost is not None:
            self.on_lost(why)

    # ------------------------------------------------------------------ the fence

    def check(self, tx: Transaction) -> None:
        """Inside ``tx`` (which records work about to start): :class:`LeaseLost` unless the lease holds."""
        db = tx.db
        row = tx.execute(
            f"SELECT state, lease_until > {db.now} FROM holders WHERE id = ?{db.for_share}",
            (self.id,),
        ).fetchone()
        if row is None or row[0] != LIVE or not row[1]:
            why = "its lease lapsed" if row is None or row[0] != RELEASED else "it was stopping"
            self._lose(f"{why}: another server may have taken its work over")
            raise LeaseLost(
                f"this server ({self.id}) no longer holds its work: {why}; another server may have taken it "
                "over, so nothing more starts here"
            )


@dataclass(frozen=True)
class Takeover:
    """What :func:`take_over` found and did."""

    holders: tuple[str, ...] = ()
    entries: tuple[int, ...] = ()
    runs: tuple[str, ...] = ()


def take_over(db: Database, by: str = "") -> Takeover:
    """Mark holders whose lease ran out (or whose process on this machine is gone) lapsed, and hand
    back every piece of work no live holder holds: entries queued again, runs interrupted (their
    in-flight steps too), ledger rows closed. One transaction.

    "No live holder" covers a holder lapsed a moment ago, one that lapsed earlier but still had
    work (it claimed in the instant before it was found out), and entries left ``running`` by no
    holder at all (a first-release server)."""
    here = machine_id()
    now = db.now
    candidates = db.read(
        f"SELECT id, machine, pid, pid_start, lease_until <= {now} FROM holders WHERE state = ?",
        (LIVE,),
    )
    gone = [
        str(holder)
        for holder, machine, pid, start, ended in candidates
        if ended or (machine == here and process_start(int(pid)) != start)
    ]
    if not gone and not db.read(f"SELECT 1 FROM alert_queue WHERE state = 'running' AND {_UNHELD} LIMIT 1"):
        return Takeover()  # nothing to write: no write lock taken
    with db.transaction("take over a stopped server's work") as tx:
        lapsed: list[str] = []
        if gone:
            marks = ", ".join("?" * len(gone))
            lapsed = [
                str(row[0])
                for row in tx.execute(
                    f"UPDATE holders SET state = ?, note = ? WHERE id IN ({marks}) AND state = ?"
                    f" AND (lease_until <= {now} OR machine = ?) RETURNING id",
                    (LAPSED, f"taken over by {by or 'another server'}", *gone, LIVE, here),
                ).fetchall()
            ]
        entries = [
            int(row[0])
            for row in tx.execute(
                f"UPDATE alert_queue SET state = 'queued', holder = NULL, updated_at = {now}, note = "
                "'queued again: the server running it (' || coalesce(holder, 'an earlier cairn serve') || ') "
                f"stopped; its run resumes' WHERE state = 'running' AND {_UNHELD} RETURNING id"
            ).fetchall()
        ]
        runs = [
            str(row[0])
            for row in tx.execute(
                "UPDATE runs SET status = 'interrupted', exit_code = 130 WHERE status = 'running'"
                f" AND holder IS NOT NULL AND {_UNHELD} RETURNING id"
            ).fetchall()
        ]
        tx.execute(
            f"UPDATE remediations SET ended_at = {now} WHERE ended_at IS NULL AND holder IS NOT NULL AND {_UNHELD}"
        )
        if runs:
            run_marks = ", ".join("?" * len(runs))
            tx.execute(
                f"UPDATE steps SET status = 'interrupted', message = ? WHERE status = 'running' AND run_id IN ({run_marks})",
                (INTERRUPTED_STEP, *runs),
            )
    if lapsed or entries or runs:
        log.warning("took over from %s: entries %s, runs %s", ", ".join(lapsed) or "nobody", entries, runs)
    return Takeover(tuple(lapsed), tuple(entries), tuple(runs))


_UNHELD = "(holder IS NULL OR holder NOT IN (SELECT id FROM holders WHERE state = 'live'))"
"""SQL: the row's holder is none, or not a live one."""


def holders(db: Database) -> list[dict[str, object]]:
    """Every holder, live first (``cairn queue``, ``/healthz``): id, kind, state, seconds left on its lease."""
    return db.read_dicts(
        f"SELECT id, kind, machine, pid, state, note, started_at, lease_until - {db.now} AS left "
        "FROM holders ORDER BY state = 'live' DESC, started_at DESC"
    )
