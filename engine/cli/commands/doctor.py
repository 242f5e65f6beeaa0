"""``cairn doctor``: the programs the runbooks, labs and tests need, and the packages of those missing."""

from __future__ import annotations

import argparse

from engine.cli.common import EXIT_FOUND, EXIT_OK, emit_json, usage
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    doctor = commands.add(
        "doctor",
        cmd_doctor,
        "check the programs the bundled runbooks, the labs and the tests need on this machine; "
        "name the Debian package of each one missing (exit 1 if any is)",
        [commands.as_json],
    )
    doctor.add_argument(
        "--for",
        dest="scopes",
        action="append",
        default=[],
        metavar="SCOPE",
        help="only what SCOPE needs: runbooks, labs, tests, try (runbooks and labs) or all (default)",
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.core.doctor import examine, report_data, report_text, resolve_scopes  # noqa: PLC0415

    try:
        scopes = resolve_scopes(args.scopes)
    except ValueError as exc:
        return usage(str(exc))
    report = examine(scopes)
    if args.json:
        emit_json(report_data(report))
    else:
        print(report_text(report))
    return EXIT_OK if report.ok else EXIT_FOUND
