"""``cairn journal prune``: what the store no longer needs, removed in small transactions, and said.

Removed when older than the cut-off: runs that ended (finished or interrupted) — with their
steps, approvals, host outcomes and artifacts folder — queue entries that ended (done,
cancelled, declined, failed, expired) with their decision attempts and Slack message, notices
with their deliveries once none is still pending, ledger rows of remediations that ended, and
holders that stopped or lapsed. Never removed: a running run, an entry still queued, running or
waiting for a human, a notice still to be sent, a live holder, and ledger rows of the last hour
(the circuit breaker counts them), whatever the cut-off. Each batch is its own transaction, so servers keep working while a large store is pruned.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.store.database import Database
from engine.core.store.migrate import ensure_current

BATCH = 500
"""Runs removed per transaction."""
BREAKER_WINDOW = 3600.0
ENDED_ENTRIES = ("done", "cancelled", "declined", "failed", "expired")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def age(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s`` in seconds; ValueError naming the forms otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not an age: write it like 90d, 12h, 30m or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Pruned:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    before: float
    runs: int = 0
    steps: int = 0
    approvals: int = 0
    entries: int = 0
    attempts: int = 0
    """Approve and decline attempts of the entries removed."""
    notices: int = 0
    ledger_rows: int = 0
    holders: int = 0
    artifacts: int = 0
    """Artifacts folders removed."""
    kept_artifacts: list[str] = field(default_factory=list)
    """Folders of removed runs left in place: outside the store's artifacts folder, or not removable."""
    dry_run: bool = False


def prune(
    db: Database,
    older_than: float,
    *,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Remove what ended more than ``older_than`` seconds ago (see the module's docstring)."""
    ensure_current(db)
    at = time.time() if now is None else now
    cutoff = at - older_than
    pruned = Pruned(before=cutoff, dry_run=dry_run)
    root = db.location.artifacts_root.resolve()
    while True:
        batch = db.read(
            "SELECT id, artifacts FROM runs WHERE status != 'running' AND started_at < ?"
            " AND coalesce(finished_at, started_at) < ? ORDER BY started_at LIMIT ?",
            (cutoff, cutoff, BATCH if not dry_run else 1_000_000_000),
        )
        if not batch:
            break
        ids = [str(row[0]) for row in batch]
        marks = ", ".join("?" * len(ids))
        if dry_run:
            pruned.runs += len(ids)
            pruned.steps += _count(db, f"SELECT count(*) FROM steps WHERE run_id IN ({marks})", ids)
            pruned.approvals += _count(db, f"SELECT count(*) FROM approvals WHERE run_id IN ({marks})", ids)
            break
        with db.transaction("prune the journal") as tx:
            pruned.steps += tx.execute(f"DELETE FROM steps WHERE run_id IN ({marks})", ids).rowcount
            pruned.approvals += tx.execute(f"DELETE FROM approvals WHERE run_id IN ({marks})", ids).rowcount
            tx.execute(f"DELETE FROM host_outcomes WHERE run_id IN ({marks})", ids)
            pruned.runs += tx.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids).rowcount
        for _, folder in batch:
            _remove_folder(Path(str(folder)), root, pruned)
        if progress is not None:
            progress(pruned)
    states = ", ".join(f"'{state}'" for state in ENDED_ENTRIES)
    ledger_cutoff = min(cutoff, at - BREAKER_WINDOW)
    ended = f"SELECT id FROM alert_queue WHERE state IN ({states}) AND updated_at < ?"
    sent = "SELECT id FROM notices WHERE created_at < ? AND id NOT IN (SELECT notice_id FROM deliveries WHERE state = 'pending')"
    statements = (
        ("attempts", f"approval_attempts WHERE entry_id IN ({ended})", (cutoff,)),
        ("", f"slack_messages WHERE entry_id IN ({ended})", (cutoff,)),
        ("entries", f"alert_queue WHERE state IN ({states}) AND updated_at < ?", (cutoff,)),
        ("", f"deliveries WHERE notice_id IN ({sent})", (cutoff,)),
        ("notices", f"notices WHERE id IN ({sent})", (cutoff,)),
        ("ledger_rows", "remediations WHERE ended_at IS NOT NULL AND ended_at < ?", (ledger_cutoff,)),
        ("holders", "holders WHERE state != 'live' AND lease_until < ?", (cutoff,)),
    )
    for name, where, params in statements:  # "": removed with what the next row counts
        if dry_run:
            if name:
                setattr(pruned, name, _count(db, f"SELECT count(*) FROM {where}", params))
            continue
        with db.transaction("prune the journal") as tx:
            removed = tx.execute(f"DELETE FROM {where}", params).rowcount
        if name:
            setattr(pruned, name, removed)
    return pruned


def _count(db: Database, query: str, params: Sequence[object]) -> int:
    rows = db.read(query, tuple(params))
    return int(rows[0][0]) if rows else 0


def _remove_folder(folder: Path, root: Path, pruned: Pruned) -> None:
    """Remove a pruned run's artifacts folder — only inside the store's own artifacts folder."""
    if not str(folder) or not folder.exists():
        return
    try:
        resolved = folder.resolve()
    except OSError:
        pruned.kept_artifacts.append(str(folder))
        return
    if root not in resolved.parents:  # not ours to delete: another machine's path, a symlink out
        pruned.kept_artifacts.append(str(folder))
        return
    try:
        shutil.rmtree(resolved)
    except OSError:
        pruned.kept_artifacts.append(str(folder))
        return
    pruned.artifacts += 1
