"""``cairn queue``, ``cairn approve``, ``cairn decline``: the alert-started work ``cairn serve`` keeps.

Each takes ``--journal`` (or ``$CAIRN_JOURNAL``): a SQLite file, or a ``postgresql://`` URL that
several ``cairn serve`` share — ``cairn queue`` then says which server holds each running entry
and which servers are live.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.cli.common import EXIT_OK, emit_json
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("run_id", metavar="RUN_ID", help="the run waiting for a human (see `cairn queue`)")
    waiting.add_argument("--by", metavar="NAME", help="who decides (default: user@host)")
    commands.add(
        "approve",
        cmd_approve,
        "approve the remediation an alert-started run waits for; cairn serve checks again, then remediates",
        [waiting, commands.journal, commands.as_json],
    )
    decline = commands.add(
        "decline",
        cmd_decline,
        "decline the remediation an alert-started run waits for; nothing is changed",
        [waiting, commands.journal, commands.as_json],
    )
    decline.add_argument("--reason", metavar="TEXT", help="why (journaled with the decision)")
    queue = commands.add(
        "queue",
        cmd_queue,
        "alert-started work: what waits for a human (cairn approve / decline), what is queued or running "
        "and which server runs it",
        [commands.journal, commands.as_json],
    )
    queue.add_argument(
        "--all", action="store_true", help="also what ended: done, declined, cancelled, failed"
    )
    queue.add_argument("--limit", type=int, default=50, help="with --all: how many entries (default 50)")


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.core.queue_read import EntryState, QueueReader  # noqa: PLC0415
    from engine.core.records import queue_text  # noqa: PLC0415

    queue = QueueReader(args.journal)  # read-only: listing writes nothing
    try:
        if args.all:
            shown = queue.recent(*EntryState, limit=args.limit)[::-1]
        else:
            shown = queue.entries(EntryState.ESCALATED, EntryState.QUEUED, EntryState.RUNNING)
        live = [server for server in queue.servers() if server["state"] == "live"]
    finally:
        queue.close()
    if args.json:
        emit_json({"entries": [_entry_data(e) for e in shown], "servers": [_server_data(s) for s in live]})
    else:
        print(queue_text(shown, waiting_only=not args.all))
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


def _entry_data(entry: Any) -> dict[str, Any]:
    from engine.core.render import as_data  # noqa: PLC0415

    data: dict[str, Any] = as_data(entry)
    return data


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
    return _decide(
        args,
        lambda queue, by: queue.approve(args.run_id, by),
        "approved: {runbook} on {target} (queue entry {id}). cairn serve runs it again: detect first, "
        "then the remediation if the pitfall is still there; `cairn queue --all` shows how it went",
    )


def cmd_decline(args: argparse.Namespace) -> int:
    return _decide(
        args,
        lambda queue, by: queue.decline(args.run_id, by, args.reason or ""),
        "declined: {runbook} on {target} (queue entry {id}); nothing was changed",
    )


def _decide(args: argparse.Namespace, decide: Callable[[Any, str], Any], said: str) -> int:
    """``cairn approve`` / ``decline``: one decision on an escalated entry, then what it became."""
    from engine.core.alert_queue import AlertQueue  # noqa: PLC0415
    from engine.core.spec import who  # noqa: PLC0415

    queue = AlertQueue(args.journal)
    try:
        entry = decide(queue, args.by or who())
    finally:
        queue.close()
    if args.json:
        emit_json(_entry_data(entry))
    else:
        print(said.format(runbook=entry.runbook_id, target=entry.target, id=entry.id))
    return EXIT_OK
