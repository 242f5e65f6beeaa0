"""``cairn history`` and ``cairn show-run``: past runs, from the journal (read-only: nothing is written).

Both say who decided: who approved an alert-started run's remediation, and, in ``show-run``, every
attempt to decide on the queue entry the run worked on (:mod:`engine.core.queue_decisions`).
"""

from __future__ import annotations

import argparse

from engine.cli.common import EXIT_OK, emit_json
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    history = commands.add(
        "history", cmd_history, "list past runs from the journal", [commands.journal, commands.as_json]
    )
    history.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    history.add_argument("--runbook", metavar="ID", help="only runs of this runbook")
    history.add_argument("--alerts", action="store_true", help="only runs started by alerts (cairn serve)")
    show_run = commands.add(
        "show-run",
        cmd_show_run,
        "show one run: every step, output and approval",
        [commands.journal, commands.as_json],
    )
    show_run.add_argument(
        "run_id", metavar="RUN_ID", help="run id, an unambiguous prefix of it, or last (the newest run)"
    )
    show_run.add_argument(
        "--output", action="store_true", help="show complete (journaled) output of every step"
    )


def cmd_history(args: argparse.Namespace) -> int:
    from engine.core.journal_read import JournalReader  # noqa: PLC0415
    from engine.core.records import approver_labels, history_text  # noqa: PLC0415
    from engine.core.render import as_data  # noqa: PLC0415

    journal = JournalReader(args.journal)
    try:
        runs = journal.list_runs(
            limit=args.limit, runbook_id=args.runbook, trigger_kind="alert" if args.alerts else None
        )
    finally:
        journal.close()
    if args.json:
        emit_json([as_data(r) | {"runbook_text": None, "approved_by": approver_labels(r)} for r in runs])
    else:
        print(history_text(runs))
    return EXIT_OK


def cmd_show_run(args: argparse.Namespace) -> int:
    from engine.core.journal_read import JournalReader  # noqa: PLC0415
    from engine.core.queue_decisions import run_decisions  # noqa: PLC0415
    from engine.core.records import run_text  # noqa: PLC0415
    from engine.core.render import as_data  # noqa: PLC0415

    journal = JournalReader(args.journal)
    try:
        run = journal.get_run(args.run_id)
        decisions = run_decisions(journal.location, run)
    finally:
        journal.close()
    if args.json:
        from engine.core.queue_decisions import decisions_data, entry_data  # noqa: PLC0415

        said = (
            None if decisions is None else {"entry": entry_data(decisions.entry)} | decisions_data(decisions)
        )
        emit_json(as_data(run) | {"decisions": said})
    else:
        print(run_text(run, full_output=args.output, decisions=decisions))
    return EXIT_OK
