"""The ``cairn`` argument parser: each command module adds its own sub-commands.

Adding a command: a module in :mod:`engine.cli.commands` with ``register(commands)`` and
its handlers, and one line in :data:`COMMANDS`. Building the parser imports every command
module, so they import only argparse and the engine's cheapest modules at their top
(``cairn --help`` loads none of jsonschema, jinja2, yaml, ansible, paramiko, rich, textual).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from engine import __version__
from engine.cli.commands import (
    docs,
    doctor,
    history,
    inventory,
    journal,
    lab,
    new,
    queue,
    report,
    run,
    serve,
    show,
    testing,
    tui,
    validate,
)
from engine.cli.options import Commands

COMMANDS: tuple[Callable[[Commands], None], ...] = (
    validate.register,
    new.register,
    doctor.register,
    show.register,
    run.register,
    serve.register,
    queue.register,
    inventory.register,
    history.register,
    journal.register,
    lab.register,
    tui.register,
    testing.register,
    report.register,
    docs.register,
)
"""Each command module's ``register``, in the order ``cairn --help`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help`` in the docs)."""
    parser = argparse.ArgumentParser(
        prog="cairn",
        description="Incident knowledge base and runbook automation: detect, diagnose, remediate, verify.",
        epilog="Exit codes: 0 ok/healthy/remediated, 1 problems found or pitfall present, "
        "2 usage error or failed run, 130 interrupted. Docs: docs/runbook-format.md",
    )
    parser.add_argument("--version", action="version", version=f"cairn {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for register in COMMANDS:
        register(commands)
    return parser
