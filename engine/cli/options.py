"""Where each command module adds its sub-commands, and the options many commands share.

A command module has ``register(commands: Commands)``; :mod:`engine.cli.parser` calls each
one in turn. Everything here is argparse and the engine's cheapest constants, so that
``cairn --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]
"""A command: the parsed arguments in, the exit code out."""


def forks(text: str) -> int:
    """An argparse type: a whole number of hosts, workers … from 1 to the engine's ``MAX_FORKS``."""
    from engine.core.defaults import MAX_FORKS  # noqa: PLC0415

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_FORKS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_FORKS}")
    return value


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def size(text: str) -> int:
    """An argparse type: a number of bytes, ``65536``, ``512K``, ``8M`` or ``1G`` (at least 1 KiB)."""
    number, unit = text.strip().upper().removesuffix("IB").removesuffix("B"), ""
    if number[-1:] in _UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = int(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 65536, 512K or 8M)") from None
    if value < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is less than 1K")
    return value


class Commands:
    """The ``cairn`` sub-commands being built, and the option groups they share (as parent parsers)."""

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        # The engine's single source of the choices: standard library only, so --help stays cheap.
        from engine.core.defaults import DEFAULT_VIA, OUTPUT_LIMIT, PHASE_NAMES, VIA  # noqa: PLC0415

        self._subparsers = subparsers

        self.runbooks = argparse.ArgumentParser(add_help=False)
        """``--runbooks DIR``."""
        self.runbooks.add_argument(
            "--runbooks",
            action="append",
            metavar="DIR",
            default=[],
            help="folder of runbooks (repeatable; default: $CAIRN_RUNBOOKS, ./runbooks, or the bundled ones)",
        )

        self.as_json = argparse.ArgumentParser(add_help=False)
        """``--json``."""
        self.as_json.add_argument("--json", action="store_true", help="print machine-readable JSON")

        self.journal = argparse.ArgumentParser(add_help=False)
        """``--journal PATH|URL``: a SQLite file or a PostgreSQL database."""
        self.journal.add_argument(
            "--journal",
            metavar="PATH|URL",
            default=None,
            help="journal: a SQLite file, or a PostgreSQL database as postgresql://USER@HOST/DB (a password "
            "is better kept in ~/.pgpass or PGPASSWORD than in the URL) (default: $CAIRN_JOURNAL or "
            "~/.local/state/cairn/journal.db)",
        )

        self.targets = argparse.ArgumentParser(add_help=False)
        """A runbook id and where it runs: ``ID -i INV -l PATTERN -e KEY=VALUE --phase PHASE``."""
        self.targets.add_argument("id", metavar="ID", help="runbook id (see `cairn list`)")
        self.targets.add_argument(
            "-i",
            "--inventory",
            action="append",
            metavar="INV",
            help="Ansible inventory file or folder (repeatable); default: run on this machine",
        )
        self.targets.add_argument(
            "-l", "--limit", metavar="PATTERN", help="further limit the hosts (Ansible pattern)"
        )
        self.targets.add_argument(
            "-e",
            "--extra-vars",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="set a runbook input (repeatable); @FILE reads YAML/JSON",
        )
        self.targets.add_argument(
            "--phase",
            choices=PHASE_NAMES,
            default=PHASE_NAMES[-1],
            help="stop after this phase (remediate always continues into verify); default: all",
        )

        self.reach = argparse.ArgumentParser(add_help=False)
        """How steps reach hosts: ``--via``, ``--known-hosts``, ``--accept-new-host-keys``, ``--connect-timeout``."""
        self.reach.add_argument(
            "--via",
            choices=VIA,
            default=DEFAULT_VIA,
            help="how run steps reach hosts: native (local commands, SSH with paramiko; default) or "
            "ansible (every step through ansible-runner, for hosts reachable only the Ansible way)",
        )
        self.reach.add_argument(
            "--known-hosts",
            metavar="FILE",
            help="verify SSH host keys against FILE (default: ~/.ssh/known_hosts, or ssh_config's)",
        )
        self.reach.add_argument(
            "--accept-new-host-keys",
            action="store_true",
            help="record the key of a host never seen before (like ssh's accept-new); a changed key is always refused",
        )
        self.reach.add_argument(
            "--connect-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="how long to wait for a host to answer and finish the SSH handshake (default 10)",
        )
        self.reach.add_argument(
            "--output-limit",
            type=size,
            default=OUTPUT_LIMIT,
            metavar="SIZE",
            help=f"output kept per step and stream, in the journal too (default {OUTPUT_LIMIT // 1024**2}M); "
            "the rest is read and dropped, and a marker says how much there was",
        )

    def add(
        self, name: str, handler: Handler, help_text: str, parents: Sequence[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        """A sub-command ``cairn NAME`` that runs ``handler``, with the shared options of ``parents``."""
        command = self._subparsers.add_parser(
            name, help=help_text, description=help_text, parents=list(parents)
        )
        command.set_defaults(handler=handler)
        return command
