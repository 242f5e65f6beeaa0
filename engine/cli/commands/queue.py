"""``cairn queue``, ``cairn approve``, ``cairn decline``, ``cairn request``: the alert-started work
``cairn serve`` keeps, and the people who decide on it.

Each takes ``--journal`` (or ``$CAIRN_JOURNAL``): a SQLite file, or a ``postgresql://`` URL that
several ``cairn serve`` share — ``cairn queue`` then says which server holds each running entry
and which servers are live. Who approves, declines or requests is the account of this process's
uid (with the database role on PostgreSQL), never a name anyone can type.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from engine.cli.common import EXIT_FOUND, EXIT_OK, emit_json, usage
from engine.cli.options import Commands

IDENTITY_HELP = (
    "Who decides is the Unix account this command runs as, read from its uid (never $USER or "
    "$LOGNAME), with its Unix groups, the machine, and on PostgreSQL the database role the server "
    "authenticated: that is what the journal records and what the approval policy (who may approve, "
    "how many, never one's own request, until when) judges. Exit 0: counted, approved or declined; "
    "1: refused by the policy, or the entry no longer waits (the reason on stderr); 2: no such run, "
    "or the store could not be used."
)
REQUEST_HELP = (
    "The entry records who asked (the Unix account of this command's uid, with the database role on "
    "PostgreSQL): the approval policy never lets them approve its remediation. cairn serve decides "
    "what runs: a runbook it has not loaded ends the entry as failed (runbook not loaded), a target "
    "outside its inventory too. Exit 2 when the runbook and target already have an active entry."
)
EXIT_REFUSED = EXIT_FOUND
"""``cairn approve`` / ``decline`` refused by the approval policy, or the entry no longer waits."""
RUNBOOK_ID = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
"""A runbook id (the runbook schema's pattern)."""
TEXT_LIMIT = 1000
"""The longest target or reason ``cairn request`` takes."""


def register(commands: Commands) -> None:
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("run_id", metavar="RUN_ID", help="the run waiting for a human (see `cairn queue`)")
    approve = commands.add(
        "approve",
        cmd_approve,
        "approve the remediation an alert-started run waits for; once the approval policy's quorum is "
        "met, cairn serve checks again, then remediates",
        [waiting, commands.journal, commands.as_json],
    )
    approve.epilog = IDENTITY_HELP
    decline = commands.add(
        "decline",
        cmd_decline,
        "decline the remediation an alert-started run waits for; nothing is changed",
        [waiting, commands.journal, commands.as_json],
    )
    decline.add_argument("--reason", metavar="TEXT", help="why (journaled with the decision)")
    decline.epilog = IDENTITY_HELP
    request = commands.add(
        "request",
        cmd_request,
        "ask cairn serve to run a runbook on a host: detect and diagnose, then remediate once others "
        "approve (you cannot approve what you asked for)",
        [commands.journal, commands.as_json],
    )
    request.add_argument("runbook_id", metavar="RUNBOOK_ID", help="the runbook (one cairn serve has loaded)")
    request.add_argument("--target", metavar="HOST", required=True, help="the host to run it on")
    request.add_argument("--reason", metavar="TEXT", default="", help="why (shown to the approvers)")
    request.epilog = REQUEST_HELP
    queue = commands.add(
        "queue",
        cmd_queue,
        "alert-started work: what waits for a human (cairn approve / decline) and how far its approval "
        "is, what is queued or running and which server runs it",
        [commands.journal, commands.as_json],
    )
    queue.add_argument(
        "--all", action="store_true", help="also what ended: done, declined, expired, cancelled, failed"
    )
    queue.add_argument("--limit", type=int, default=50, help="with --all: how many entries (default 50)")


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.core.queue_decisions import entry_data, read_decisions  # noqa: PLC0415
    from engine.core.queue_read import EntryState, QueueReader  # noqa: PLC0415
    from engine.core.records import queue_text  # noqa: PLC0415

    queue = QueueReader(args.journal)  # read-only: listing writes nothing
    try:
        if args.all:
            shown = queue.recent(*EntryState, limit=args.limit)[::-1]
        else:
            shown = queue.entries(EntryState.ESCALATED, EntryState.QUEUED, EntryState.RUNNING)
        decisions = read_decisions(queue, shown)
        live = [server for server in queue.servers() if server["state"] == "live"]
    finally:
        queue.close()
    if args.json:
        emit_json(
            {
                "entries": [entry_data(e, decisions[e.id]) for e in shown],
                "servers": [_server_data(s) for s in live],
            }
        )
    else:
        print(queue_text(shown, waiting_only=not args.all, decisions=decisions))
        print("\n" + servers_text(shown, live))
    return EXIT_OK


def servers_text(entries: list[Any], live: list[dict[str, Any]]) -> str:
    """Which server holds each running entry, then the live servers (each with what it holds)."""
    held = [e for e in entries if e.holder]
    lines = []
    if held:
        lines.append("running on:")
        lines += [
            f"  entry {e.id} ({e.runbook_id} on {e.target}, run {e.run_id or '-'}): {e.holder}" for e in held
        ]
        lines.append("")
    if not live:
        lines.append("no live cairn serve on this journal (none holds a lease)")
        return "\n".join(lines)
    lines.append(f"servers: {len(live)} live")
    for server in live:
        holds = sum(e.holder == server["id"] for e in held)
        host = str(server["machine"]).split("/", 1)[0]
        lines.append(
            f"  {server['id']}  {server['kind']}, pid {server['pid']} on {host}, lease "
            f"{max(0.0, float(server['left'])):.1f} s left, holds {holds}"
        )
    return "\n".join(lines)


def _server_data(server: dict[str, Any]) -> dict[str, Any]:
    """A live server as ``--json`` gives it: the holders row, its machine's boot id left out."""
    return {
        "id": server["id"],
        "kind": server["kind"],
        "machine": str(server["machine"]).split("/", 1)[0],
        "pid": server["pid"],
        "state": server["state"],
        "started_at": server["started_at"],
        "lease_left": round(max(0.0, float(server["left"])), 3),
    }


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


def cmd_decline(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    """``cairn approve`` / ``decline``: this account's decision on an escalated entry, as the policy judged it."""
    from engine.core.alert_queue import Action, AlertQueue  # noqa: PLC0415
    from engine.core.identity import Via, local_identity  # noqa: PLC0415
    from engine.core.queue_decisions import entry_data, progress_data, read_decisions  # noqa: PLC0415

    reason = (getattr(args, "reason", None) or "").strip()
    if any(not c.isprintable() for c in reason):
        return usage("the reason may not contain control characters (one line of text)")
    queue = AlertQueue(args.journal)
    try:
        decided = queue.decide(
            args.run_id,
            local_identity(Via.CLI),
            Action.APPROVE if approve else Action.DECLINE,
            reason=reason,
        )
        entry = decided.entry
        decisions = read_decisions(queue, [entry])[entry.id] if args.json else None
    finally:
        queue.close()
    code = EXIT_REFUSED if decided.refused else EXIT_OK
    if args.json:
        emit_json(
            {
                "outcome": decided.outcome.value,
                "message": decided.message,
                "progress": progress_data(decided.progress),
                "entry": entry_data(entry, decisions),
            }
        )
        return code
    said = f"{entry.runbook_id} on {entry.target} (queue entry {entry.id}): {decided.message}"
    if decided.refused:
        print(f"cairn: refused: {said}", file=sys.stderr)
    else:
        print(said)
    return code


def cmd_request(args: argparse.Namespace) -> int:
    """``cairn request``: a queued entry that records who asked; cairn serve runs it."""
    from engine.core.alert_queue import AlertQueue  # noqa: PLC0415
    from engine.core.identity import Via, local_identity  # noqa: PLC0415
    from engine.core.queue_decisions import entry_data  # noqa: PLC0415

    wrong = _request_refused(args)
    if wrong:
        return usage(wrong)
    queue = AlertQueue(args.journal)
    try:
        entry = queue.request(
            args.runbook_id, args.target.strip(), local_identity(Via.CLI), args.reason.strip()
        )
        live = [server for server in queue.servers() if server["state"] == "live"]
    finally:
        queue.close()
    if args.json:
        emit_json({"entry": entry_data(entry), "live_servers": len(live)})
        return EXIT_OK
    asker = entry.requested_by.label if entry.requested_by else "you"
    print(
        f"requested: {entry.runbook_id} on {entry.target} (queue entry {entry.id}), asked by {asker}.\n"
        "cairn serve runs it: detect and diagnose first; a remediation it may not run by itself waits "
        "for the approvers (`cairn queue`), and you cannot approve its remediation yourself."
    )
    if not live:
        print("no live cairn serve on this journal: the entry waits until one starts")
    return EXIT_OK


def _request_refused(args: argparse.Namespace) -> str:
    """What is wrong with ``cairn request``'s arguments ("" when nothing is)."""
    if not RUNBOOK_ID.fullmatch(args.runbook_id) or len(args.runbook_id) > 64:
        return f"{args.runbook_id!r} is not a runbook id (lower-case words joined by -, like node-down)"
    target, reason = args.target.strip(), args.reason.strip()
    if not target:
        return "give the host to run it on: --target HOST (a host of cairn serve's inventory)"
    if any(not c.isprintable() or c.isspace() for c in target):
        return f"the target may not contain spaces or control characters: {target!r}"
    if any(not c.isprintable() for c in reason):
        return "the reason may not contain control characters (one line of text)"
    if len(target) > TEXT_LIMIT or len(reason) > TEXT_LIMIT:
        return f"the target and the reason are at most {TEXT_LIMIT} characters each"
    return ""
