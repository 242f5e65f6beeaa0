"""``cairn validate``: check runbooks (and the lab files beside them) against the format."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import EXIT_FOUND, EXIT_OK, emit_json, jobs, runbook_dirs, usage
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    validate = commands.add(
        "validate",
        cmd_validate,
        "check runbooks against the format; report every problem",
        [commands.runbooks, commands.as_json],
    )
    validate.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders (default: the runbooks folder)"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.core.knowledge import problems_text  # noqa: PLC0415
    from engine.core.loader import load_library  # noqa: PLC0415

    paths = [Path(p) for p in args.paths] or runbook_dirs(args)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return usage(f"no such file or folder: {', '.join(missing)}")
    from engine.lab.labfile import validate_lab_files  # noqa: PLC0415 - the labs beside the runbooks

    library = load_library(paths, jobs=jobs())
    labs = validate_lab_files(paths, library.results)
    results = [*library.results, *labs]
    invalid = any(r.problems for r in results)
    if args.json:
        emit_json(
            {
                "valid": not invalid,
                "files": [
                    {
                        "path": r.path,
                        "id": r.declared_id,
                        "valid": not r.problems,
                        "problems": [p.as_dict() for p in r.problems],
                        "warnings": [w.as_dict() for w in getattr(r, "warnings", ())],
                    }
                    for r in results
                ],
            }
        )
    else:
        text, bad, count = problems_text(results)
        total = len(results)
        print(text) if text else None
        if total == 0:
            print(f"no runbook files (*.yaml, *.yml) under {', '.join(map(str, paths))}")
        elif bad:
            print(
                f"\n{bad} of {total} file{'s' if total != 1 else ''} invalid, {count} problem{'s' if count != 1 else ''}"
            )
        else:
            runbooks = len(library.results)
            both = f" and {len(labs)} lab file{'s' if len(labs) != 1 else ''}" if labs else ""
            print(f"\nall {runbooks} runbook file{'s' if runbooks != 1 else ''}{both} valid")
    return EXIT_FOUND if invalid else EXIT_OK
