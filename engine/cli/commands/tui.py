"""``cairn tui`` (and ``cairn`` alone at a terminal): hand over to the on-call TUI."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from engine.cli.common import execution_options, missing_runbook_dirs, runbook_dirs, usage
from engine.cli.options import Commands
from engine.core.store.location import locate


def register(commands: Commands) -> None:
    tui = commands.add(
        "tui",
        cmd_tui,
        "the on-call TUI: browse the runbooks, step through a run, read the history, practise on labs "
        "(also `cairn` alone in a terminal)",
        [commands.runbooks, commands.journal, commands.reach],
    )
    tui.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="INV",
        help="Ansible inventory offered when a run is set up (repeatable); default: this machine",
    )
    tui.add_argument(
        "--lab-dir",
        metavar="DIR",
        help="where practice labs live (default: $CAIRN_LAB_DIR or ~/.local/state/cairn/lab)",
    )


def cmd_tui(args: argparse.Namespace) -> int:
    # Textual draws on stderr; stdin and stdout must be the terminal too (nothing else may write there).
    streams = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}
    redirected = [name for name, stream in streams.items() if not stream.isatty()]
    if redirected:
        return usage(
            f"cairn tui needs a terminal, but {', '.join(redirected)} "
            f"{'is' if len(redirected) == 1 else 'are'} not one; the other commands work in scripts"
        )
    dirs = runbook_dirs(args)
    missing = missing_runbook_dirs(dirs)
    if missing:
        return usage(missing)
    # engine/ never imports the TUI (the core must stay free of it): the command hands over by name,
    # only when the TUI is asked for (textual is heavy; `cairn --help` must not load it).
    config_class = importlib.import_module("tui.config").CairnConfig
    run_app = importlib.import_module("tui.app").run_app

    config = config_class(
        runbook_dirs=tuple(dirs),
        journal=locate(args.journal) if args.journal else None,
        inventory=tuple(args.inventory or ()),
        lab_root=Path(args.lab_dir) if args.lab_dir else None,
        options=execution_options(args),
    )
    code: int = run_app(config)
    return code
