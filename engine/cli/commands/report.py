"""``cairn report`` (a run's incident report, its bundle) and ``cairn diff`` (two runs compared).

Both read the journal only. ``report`` prints the Markdown or HTML report
(:mod:`engine.core.incident_report`, :mod:`engine.core.incident_render`) or writes it with ``-o``,
and ``--bundle`` writes the tarball (:mod:`engine.core.incident_bundle`); ``diff`` compares two
runs (:mod:`engine.core.run_diff`). A run that is not there, or a file that cannot be written, is
one line and exit 2 (a :class:`~engine.core.errors.CairnError`, which ``main`` says).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import EXIT_FOUND, EXIT_OK, emit_json
from engine.cli.options import Commands

RUN_ID_HELP = "run id, an unambiguous prefix of it, or last (the newest run)"


def register(commands: Commands) -> None:
    report = commands.add(
        "report",
        cmd_report,
        "the incident report of a run: trigger, timeline, approvals, verdict, durations",
        [commands.journal],
    )
    report.add_argument("run_id", metavar="RUN_ID", help=RUN_ID_HELP)
    report.add_argument(
        "--format",
        choices=("md", "html"),
        default="md",
        help="Markdown (default) or one self-contained HTML page",
    )
    report.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: stdout)")
    report.add_argument(
        "--bundle",
        metavar="FILE.tar.gz",
        help="write a tarball: both reports, run.json, runbook.yaml, every artifact of the run and a "
        "MANIFEST.sha256 that `sha256sum -c` checks",
    )
    diff = commands.add(
        "diff",
        cmd_diff,
        "compare two runs: their runbook texts as a unified diff, then the decisions that differed",
        [commands.journal, commands.as_json],
    )
    diff.add_argument("run_a", metavar="RUN_A", help=RUN_ID_HELP)
    diff.add_argument("run_b", metavar="RUN_B", help=RUN_ID_HELP)


def cmd_report(args: argparse.Namespace) -> int:
    from engine.core.incident_bundle import write_bundle, write_file  # noqa: PLC0415
    from engine.core.incident_render import render  # noqa: PLC0415
    from engine.core.incident_report import build_report, read_incident  # noqa: PLC0415
    from engine.core.store.location import locate  # noqa: PLC0415

    run, decisions = read_incident(locate(args.journal), args.run_id)
    if args.bundle:
        bundle = write_bundle(run, decisions, Path(args.bundle))
        skipped = f"; {len(bundle.skipped)} left out (see the report's notes)" if bundle.skipped else ""
        print(
            f"wrote {bundle.path}: {len(bundle.files)} files in {bundle.top}/{skipped}; "
            f"check it with: tar xzf {bundle.path} && cd {bundle.top} && sha256sum -c MANIFEST.sha256",
            file=sys.stderr,
        )
        if not args.output:
            return EXIT_OK
    text = render(build_report(run, decisions), args.format)
    if args.output:
        written = write_file(Path(args.output), text)
        print(f"wrote {written}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from engine.core.journal_read import JournalReader  # noqa: PLC0415
    from engine.core.render import as_data  # noqa: PLC0415
    from engine.core.run_diff import diff_runs, diff_text  # noqa: PLC0415

    journal = JournalReader(args.journal)
    try:
        run_a = journal.get_run(args.run_a)
        run_b = journal.get_run(args.run_b)
    finally:
        journal.close()
    diff = diff_runs(run_a, run_b)
    if args.json:
        emit_json(as_data(diff) | {"same_text": diff.same_text, "same": diff.same})
    else:
        print(diff_text(diff))
    return EXIT_OK if diff.same else EXIT_FOUND
