"""``cairn docs build``: the knowledge base as training material (Markdown and a static HTML site)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import EXIT_OK, emit_json, library
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    docs = commands.add("docs", cmd_docs, "render the knowledge base as training material", [])
    docs_sub = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    docs_build = docs_sub.add_parser(
        "build",
        parents=[commands.runbooks, commands.as_json],
        help="write one page per runbook and an index, as Markdown and as a static HTML site",
        description="Write the knowledge base as training material to OUT: OUT/md/*.md and "
        "OUT/html/*.html (opens from disk, no server needed).",
    )
    docs_build.add_argument("out", metavar="OUT", help="output folder (created; existing pages are replaced)")


def cmd_docs(args: argparse.Namespace) -> int:
    from engine.docs.site import build_site  # noqa: PLC0415

    loaded = library(args)
    out = Path(args.out)
    built = build_site(loaded, out)
    if args.json:
        emit_json({"out": str(out), "pages": [str(p) for p in built.pages], "index": str(built.index_html)})
    else:
        print(f"{len(built.runbooks)} runbook pages in {out}/ (Markdown and HTML)")
        if built.invalid:
            print(f"{built.invalid} invalid runbook file(s) listed on the index with their problems")
        print(f"open {built.index_html.resolve().as_uri()}")
    return EXIT_OK
