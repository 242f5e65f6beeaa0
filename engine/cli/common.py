"""What the commands share: exit codes, where the runbooks are, the library, JSON out, usage errors.

Cheap to import (``cairn --help`` imports every command module, and so this one): heavy
modules are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
"""0 success / healthy / remediated; 1 problems found (``validate``) or the pitfall is present
(``run``); 2 usage or input errors, and runs that failed; 130 interrupted."""

_ENGINE = Path(__file__).resolve().parent.parent
BUNDLED_RUNBOOKS = _ENGINE / "runbooks" if (_ENGINE / "runbooks").is_dir() else _ENGINE.parent / "runbooks"
"""The knowledge base shipped with Cairn: inside the package when installed from a wheel (pyproject's
force-include puts the repository's runbooks/ there), the repository's runbooks/ in a checkout."""


def default_runbook_dirs() -> list[Path]:
    """``$CAIRN_RUNBOOKS`` (os.pathsep-separated), else ``./runbooks``, else the bundled runbooks."""
    explicit = os.environ.get("CAIRN_RUNBOOKS")
    if explicit:
        return [Path(p) for p in explicit.split(os.pathsep) if p]
    local = Path("runbooks")
    return [local] if local.is_dir() else [BUNDLED_RUNBOOKS]


def runbook_dirs(args: argparse.Namespace) -> list[Path]:
    """The folders ``--runbooks`` names, else :func:`default_runbook_dirs`."""
    return [Path(p) for p in args.runbooks] if args.runbooks else default_runbook_dirs()


def missing_runbook_dirs(dirs: list[Path]) -> str:
    """The usage error for runbook folders that do not exist ("" when all do)."""
    missing = [str(d) for d in dirs if not d.exists()]
    if not missing:
        return ""
    return f"runbook folder {', '.join(missing)} does not exist; point --runbooks at one"


def library(args: argparse.Namespace) -> Any:
    """The runbooks of ``--runbooks`` (or the default folders), loaded and checked."""
    from engine.core.errors import CairnError  # noqa: PLC0415
    from engine.core.loader import load_library  # noqa: PLC0415

    dirs = runbook_dirs(args)
    missing = missing_runbook_dirs(dirs)
    if missing:
        raise CairnError(missing)
    return load_library(dirs, jobs=jobs())


def library_runbook(args: argparse.Namespace, runbook_id: str) -> Any:
    """The runbook ``runbook_id`` of the library, as :func:`library` would give it, reading one file
    when one can tell which.

    A ``cairn run`` needs one runbook, and checking every file of a large library first (Jinja
    compiles each template) cost ~65 ms for the six bundled runbooks and seconds for a thousand.
    When exactly one file's top-level ``id:`` line names the runbook, only that file is loaded and
    checked; anything less certain — a file whose id is not one plain ``id: VALUE`` line, two files
    naming it, a file that turns out to hold another id — loads the whole library as before, so its answers (a duplicate id, an
    invalid file, "no runbook with id") are the library's.
    """
    import re  # noqa: PLC0415

    from engine.core.errors import CairnError  # noqa: PLC0415
    from engine.core.loader import load_library, runbook_files  # noqa: PLC0415

    dirs = runbook_dirs(args)
    if missing_runbook_dirs(dirs):
        return library(args).get(runbook_id)  # says which folder is missing
    any_id = re.compile(rb"""^["']?id["']?[ \t]*:""", re.M)
    plain_id = re.compile(
        rb"""^["']?id["']?[ \t]*:[ \t]*(["']?)([A-Za-z0-9][A-Za-z0-9._-]*)\1[ \t]*(?:#.*)?$""", re.M
    )
    named: list[Path] = []
    for path in runbook_files(dirs):
        try:
            text = path.read_bytes()
        except OSError:
            return library(args).get(runbook_id)  # the library says what is wrong with it
        ids = plain_id.findall(text)
        if len(any_id.findall(text)) != 1 or len(ids) != 1:
            return library(args).get(runbook_id)  # an id this scan cannot read for sure: no guessing
        if ids[0][1] == runbook_id.encode():
            named.append(path)
    if len(named) == 1:
        try:
            return load_library(named).get(runbook_id)
        except CairnError:
            pass
    return library(args).get(runbook_id)


def execution_options(args: argparse.Namespace) -> Any:
    """How runs reach hosts, from the ``--via``, ``--known-hosts`` … options (and ``-i``)."""
    from engine.core.defaults import OUTPUT_LIMIT  # noqa: PLC0415
    from engine.core.executors import ExecutionOptions  # noqa: PLC0415

    return ExecutionOptions(
        via=args.via,
        inventory_sources=tuple(getattr(args, "inventory", None) or ()),
        known_hosts=Path(args.known_hosts).expanduser() if args.known_hosts else None,
        accept_new_host_keys=args.accept_new_host_keys,
        connect_timeout=args.connect_timeout,
        output_limit=getattr(args, "output_limit", OUTPUT_LIMIT),
    )


def emit_json(data: Any) -> None:
    """``--json``: ``data`` on stdout, indented."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def jobs() -> int:
    """Processes for checking many runbooks: one per CPU (the CLI is single-threaded here)."""
    return min(os.cpu_count() or 1, 8)


def usage(message: str) -> int:
    """Say a usage error on stderr; its exit code."""
    print(f"cairn: error: {message}", file=sys.stderr)
    return EXIT_USAGE
