"""``cairn list`` and ``cairn show``: the knowledge base, as a list and one runbook's knowledge."""

from __future__ import annotations

import argparse
import sys

from engine.cli.common import EXIT_OK, emit_json, library, library_runbook
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    listing = commands.add(
        "list", cmd_list, "list the runbooks in the knowledge base", [commands.runbooks, commands.as_json]
    )
    listing.add_argument("--tag", help="only runbooks with this tag")
    show = commands.add(
        "show",
        cmd_show,
        "show a runbook's knowledge: summary, symptoms, cause, steps",
        [commands.runbooks, commands.as_json],
    )
    show.add_argument("id", metavar="ID", help="runbook id")
    show.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown source (default: rendered on a terminal, plain text otherwise)",
    )
    show.add_argument(
        "--brief", action="store_true", help="only what the pitfall is and how it looks: summary and symptoms"
    )


def cmd_list(args: argparse.Namespace) -> int:
    from engine.core.knowledge import list_text, runbook_summary  # noqa: PLC0415

    loaded = library(args)
    runbooks = [rb for rb in loaded.runbooks if not args.tag or args.tag in rb.tags]
    if args.json:
        emit_json(
            {
                "runbooks": [runbook_summary(rb) for rb in runbooks],
                "invalid": [
                    {"path": r.path, "problems": [p.as_dict() for p in r.problems]} for r in loaded.invalid
                ],
            }
        )
    else:
        print(list_text(runbooks, loaded.invalid))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from engine.core.knowledge import knowledge_markdown  # noqa: PLC0415
    from engine.core.render import as_data  # noqa: PLC0415

    runbook = library_runbook(args, args.id)
    if args.json:
        data = as_data(runbook)
        data.pop("source_text", None)
        emit_json(data)
        return EXIT_OK
    markdown = knowledge_markdown(runbook, brief=args.brief)
    if args.markdown:
        sys.stdout.write(markdown)
    elif sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415
        from rich.markdown import Markdown  # noqa: PLC0415

        Console().print(Markdown(markdown))
    else:  # a pipe, a file, a log: plain text without Markdown's marks
        from engine.core.plaintext import markdown_to_text  # noqa: PLC0415

        sys.stdout.write(markdown_to_text(markdown))
    return EXIT_OK
