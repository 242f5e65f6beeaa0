"""``cairn journal migrate|prune``: the store's schema brought up to date, and what it no longer needs removed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.common import EXIT_OK, emit_json, usage
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    journal = commands.add(
        "journal",
        cmd_journal,
        "the journal's store (SQLite file or PostgreSQL): migrate its schema, prune old runs",
        [],
    )
    actions = journal.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    actions.add_parser(
        "migrate",
        parents=[commands.journal, commands.as_json],
        help="upgrade the store's schema in place (a journal of an earlier release too); safe to run again",
        description="Upgrade the store (--journal: a SQLite file or a postgresql:// URL) to the schema this "
        "Cairn needs, in one transaction: a failed upgrade changes nothing. A journal written by an earlier "
        "release is taken over as it is. On PostgreSQL, run it once when you upgrade Cairn, before starting "
        "the new servers; servers of the older release must be stopped first. Exit 0 done (or nothing to "
        "do), 2 it could not.",
    )
    prune = actions.add_parser(
        "prune",
        parents=[commands.journal, commands.as_json],
        help="remove runs, queue entries, ledger rows and artifacts older than an age, and say what went",
        description="Remove what ended more than --older-than ago: runs (with their steps, approvals and "
        "artifacts folder), queue entries that ended, ledger rows of ended remediations, stopped servers. "
        "Never a running run, an entry still queued, running or waiting for a human, or the last hour of "
        "the ledger (the circuit breaker counts it). In batches: servers keep working meanwhile.",
    )
    prune.add_argument(
        "--older-than", required=True, metavar="AGE", help="an age: 90d, 12h, 30m, 2w (days, hours, …)"
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")


def cmd_journal(args: argparse.Namespace) -> int:
    from engine.core.errors import JournalError  # noqa: PLC0415

    try:
        if args.journal_command == "migrate":
            return _migrate(args)
        return _prune(args)
    except JournalError as exc:
        return usage(str(exc))


def _migrate(args: argparse.Namespace) -> int:
    from engine.core.store.migrate import upgrade  # noqa: PLC0415

    done = upgrade(args.journal)
    if args.json:
        emit_json(
            {"journal": done.where, "before": done.before, "after": done.after, "changed": done.changed}
            | {"legacy": done.legacy}
        )
        return EXIT_OK
    if not done.changed:
        print(f"the journal at {done.where} is up to date (schema {done.after}); nothing to do")
    elif done.legacy:
        print(f"took over the journal at {done.where}, written by the first release: now schema {done.after}")
    elif done.before is None:
        print(f"created the journal's schema {done.after} at {done.where}")
    else:
        print(f"migrated the journal at {done.where} from schema {done.before} to {done.after}")
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    from engine.core.store.database import Database  # noqa: PLC0415
    from engine.core.store.location import locate  # noqa: PLC0415
    from engine.core.store.prune import age, prune  # noqa: PLC0415

    try:
        older_than = age(args.older_than)
    except ValueError as exc:
        return usage(f"--older-than: {exc}")
    location = locate(args.journal)
    if location.path is not None and not location.path.exists():
        return usage(f"no journal at {location.shown}: nothing to prune")
    db = Database(location, write=True, what="the journal")
    try:
        pruned = prune(db, older_than, dry_run=args.dry_run, progress=None if args.json else _progress)
    finally:
        db.close()
    counts: dict[str, Any] = {
        "runs": pruned.runs,
        "steps": pruned.steps,
        "approvals": pruned.approvals,
        "queue_entries": pruned.entries,
        "decision_attempts": pruned.attempts,
        "notices": pruned.notices,
        "ledger_rows": pruned.ledger_rows,
        "servers": pruned.holders,
        "artifacts_folders": pruned.artifacts,
    }
    if args.json:
        emit_json(
            {"journal": location.shown, "dry_run": pruned.dry_run, "before": pruned.before}
            | counts
            | {"kept_artifacts": pruned.kept_artifacts}
        )
        return EXIT_OK
    verb = "would remove" if pruned.dry_run else "removed"
    said = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items() if n) or "nothing"
    print(f"{verb} from {location.shown} (ended before the cut-off): {said}")
    for folder in pruned.kept_artifacts:
        print(f"  kept {folder}: not inside the journal's artifacts folder, or it could not be removed")
    return EXIT_OK


def _progress(pruned: Any) -> None:
    if pruned.runs and pruned.runs % 5000 == 0:
        print(f"  … {pruned.runs} runs removed so far", file=sys.stderr, flush=True)
