"""``cairn new`` and ``cairn schema``: start a runbook, and the schema editors check it with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import EXIT_OK, emit_json, usage
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    schema = commands.add(
        "schema",
        cmd_schema,
        "print the runbook JSON Schema (or write it beside your runbooks for editors)",
        [],
    )
    schema.add_argument("--lab", action="store_true", help="the practice lab file's schema instead")
    schema.add_argument(
        "--write",
        metavar="DIR",
        help="write runbook.schema.json (and lab.schema.json, case.schema.json) into DIR, for the modeline "
        "`# yaml-language-server: $schema=runbook.schema.json` of the runbooks there",
    )
    new = commands.add(
        "new",
        cmd_new,
        "write a new runbook to start from: every phase, comments that teach the format, valid as it is",
        [commands.as_json],
    )
    new.add_argument("id", metavar="ID", help="the new runbook's id, in kebab-case (e.g. disk-almost-full)")
    new.add_argument(
        "--dir", metavar="DIR", help="where to write ID.yaml (default: ./runbooks if it exists, else here)"
    )
    new.add_argument("--force", action="store_true", help="overwrite ID.yaml (and ID.lab.yaml) if it exists")
    new.add_argument(
        "--lab", action="store_true", help="also write ID.lab.yaml, a practice lab beside it (docs/labs.md)"
    )


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.cli.scaffold import LAB_SCHEMA, RUNBOOK_SCHEMA, schema_files, write_schemas  # noqa: PLC0415

    if args.write:
        for path in write_schemas(Path(args.write)):
            print(f"wrote {path}")
        print(
            f"runbooks in {args.write} validate in editors with this first line:\n"
            f"# yaml-language-server: $schema={RUNBOOK_SCHEMA}"
        )
        return EXIT_OK
    name = LAB_SCHEMA if args.lab else RUNBOOK_SCHEMA
    files = schema_files()
    if name not in files:
        return usage(f"this Cairn ships no {name}")
    sys.stdout.write(files[name].read_text(encoding="utf-8"))
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    from engine.cli.scaffold import new_runbook  # noqa: PLC0415

    folder = Path(args.dir) if args.dir else (Path("runbooks") if Path("runbooks").is_dir() else Path("."))
    written = new_runbook(args.id, folder, force=args.force, lab=args.lab)
    if args.json:
        emit_json(
            {
                "runbook": str(written.runbook),
                "lab": str(written.lab) if written.lab else None,
                "schemas": [str(p) for p in written.schemas],
                "modeline": written.modeline,
            }
        )
        return EXIT_OK
    print(f"wrote {written.runbook}")
    if written.lab is not None:
        print(f"wrote {written.lab} (its practice lab: cairn lab up {args.id} --runbooks {folder})")
    for schema in written.schemas:
        print(
            f"wrote {schema} (for editors: the runbook's first line, {written.modeline}, names it)"
            if schema.name == "runbook.schema.json"
            else f"wrote {schema} (the schema of lab files, docs/labs.md)"
        )
    runbooks = "" if folder == Path("runbooks") else f" --runbooks {folder}"
    print(
        "next:\n"
        f"  cairn validate {written.runbook}          # every problem, with file:line:col\n"
        f"  cairn plan {args.id}{runbooks}             # the exact commands, nothing runs\n"
        f"  cairn run {args.id}{runbooks} --dry-run    # detect and diagnose for real, remediation shown\n"
        "the format, key by key: docs/runbook-format.md; a practice lab beside it: docs/labs.md"
    )
    return EXIT_OK
