"""``cairn validate``: check runbooks (and the lab files beside them) against the format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import EXIT_FOUND, EXIT_OK, emit_json, jobs, runbook_dirs, usage
from engine.cli.options import Commands

if TYPE_CHECKING:
    from engine.core.validate_cache import ValidationPass


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
    validate.add_argument(
        "--no-cache",
        action="store_true",
        help="check every file, reading and writing no cached result (as CAIRN_NO_CACHE=1 does)",
    )
    validate.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say on stderr how many files came from the cache (-vv: debug log)",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.core.knowledge import problems_text  # noqa: PLC0415
    from engine.core.validate_cache import validate_paths  # noqa: PLC0415

    paths = [Path(p) for p in args.paths] or runbook_dirs(args)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return usage(f"no such file or folder: {', '.join(missing)}")
    from engine.lab.labfile import validate_lab_files  # noqa: PLC0415 - the labs beside the runbooks

    checked = validate_paths(paths, jobs=jobs(), use_cache=not args.no_cache)
    if args.verbose:
        print(_cache_note(checked), file=sys.stderr)
    # A lab is checked against its runbook's model: only the invalid verdicts are handed over
    # (a valid runbook's model is built again by the lab check, from its file).
    labs = validate_lab_files(paths, [r for r in checked.results if r.problems])
    results = [*checked.results, *labs]
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
            runbooks = len(checked.results)
            both = f" and {len(labs)} lab file{'s' if len(labs) != 1 else ''}" if labs else ""
            print(f"\nall {runbooks} runbook file{'s' if runbooks != 1 else ''}{both} valid")
    return EXIT_FOUND if invalid else EXIT_OK


def _cache_note(checked: ValidationPass) -> str:
    """What ``-v`` says on stderr: how many verdicts came from the cache, and which index holds them."""
    total = len(checked.results)
    files = f"runbook file{'s' if total != 1 else ''}"
    if checked.index is None:
        return f"validate cache off: {total} {files} checked"
    return f"{checked.from_cache} of {total} {files} from the cache ({checked.index})"
