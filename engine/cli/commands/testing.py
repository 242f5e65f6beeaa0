"""``cairn test``, ``cairn record`` and ``cairn replay``: runbooks checked against recorded answers.

``test`` runs the cases beside runbooks (``ID.tests/*.yaml``); ``record`` turns a journaled
run into a case; ``replay`` runs another version of a runbook against a journaled run and
says what it would decide differently. None of them contacts a host; the work is in
:mod:`engine.core.replay`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_FOUND, EXIT_OK, EXIT_USAGE, default_runbook_dirs, emit_json
from engine.cli.options import Commands

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord
    from engine.core.replay.suite import CaseResult


def register(commands: Commands) -> None:
    test = commands.add(
        "test",
        cmd_test,
        "run runbooks' test cases (ID.tests/*.yaml beside each runbook) against recorded outputs; no host is contacted",
        [commands.as_json],
    )
    test.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="runbook folders, runbook files (their ID.tests/ cases) or case files "
        "(default: $CAIRN_RUNBOOKS, ./runbooks, or the bundled runbooks)",
    )
    test.add_argument("--runbook", metavar="FILE", help="test the cases against this runbook file instead")
    test.add_argument("-v", "--verbose", action="store_true", help="also list recordings no step used")
    test.epilog = (
        "Exit codes: 0 every case passed, 1 a case failed (a diff says how), 2 a broken case or runbook."
    )
    record = commands.add(
        "record",
        cmd_record,
        "turn a journaled run into a test case: each host's recorded answers, and what the run concluded",
        [commands.journal],
    )
    record.add_argument("run_id", metavar="RUN_ID", help="run id, an unambiguous prefix of it, or last")
    record.add_argument("-o", "--output", metavar="FILE", help="write the case here (default: stdout)")
    record.add_argument("--name", help="the case's name (default: the runbook and what the run found)")
    replay = commands.add(
        "replay",
        cmd_replay,
        "run another version of a runbook against a journaled run and show what it would decide differently",
        [commands.journal, commands.runbooks, commands.as_json],
    )
    replay.add_argument("run_id", metavar="RUN_ID", help="run id, an unambiguous prefix of it, or last")
    replay.add_argument(
        "--runbook",
        metavar="FILE",
        help="the runbook file to replay (default: the runbook of that id in --runbooks)",
    )
    replay.epilog = "Exit codes: 0 the same decisions, 1 different ones, 2 the run cannot be replayed."


# --------------------------------------------------------------------------- cairn test


def cmd_test(args: argparse.Namespace) -> int:
    from engine.core.replay.suite import Suite  # noqa: PLC0415

    paths = [Path(p) for p in args.paths] or default_runbook_dirs()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"cairn: error: {', '.join(missing)} does not exist", file=sys.stderr)
        return EXIT_USAGE
    suite = Suite(runbook=Path(args.runbook) if args.runbook else None)
    results = suite.run(paths)
    if args.json:
        emit_json({"cases": [r.as_dict() for r in results], "seconds": round(suite.seconds, 3)})
    else:
        for result in results:
            print(_case_text(result, verbose=args.verbose))
        print(_summary(results, suite.seconds, paths))
    if any(r.state == "broken" for r in results):
        return EXIT_USAGE
    return EXIT_FOUND if any(r.state == "failed" for r in results) else EXIT_OK


def _case_text(result: CaseResult, *, verbose: bool) -> str:
    head = {"passed": "ok    ", "failed": "FAIL  ", "broken": "BROKEN"}[result.state]
    lines = [f"{head} {result.label}" + (f" — {result.name}" if result.name else "")]
    lines.extend(f"    {p}" for p in result.problems)
    for item in result.unrecorded:
        lines.append(f"    {item.host}: {item.key} was never recorded ({item.why}): no output to replay")
        if item.recorded_command is not None:
            lines.append("      recorded command and the command it runs now differ; record the case again")
    lines.extend(f"    {line}" for line in result.diff)
    if verbose:
        lines.extend(
            f"    note: {host}: {key} is recorded and no step used it" for host, key in result.unused
        )
    return "\n".join(lines)


def _summary(results: list[CaseResult], seconds: float, paths: list[Path]) -> str:
    if not results:
        return f"no test cases (ID.tests/*.yaml beside a runbook) under {', '.join(map(str, paths))}"
    counts = {state: sum(r.state == state for r in results) for state in ("passed", "failed", "broken")}
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    total = len(results)
    return f"\n{total} case{'s' if total != 1 else ''}: {', '.join(parts)} ({seconds:.2f} s)"


# --------------------------------------------------------------------------- cairn record


def cmd_record(args: argparse.Namespace) -> int:
    from engine.core.errors import CairnError  # noqa: PLC0415
    from engine.core.replay.case import runbook_beside, tests_folder  # noqa: PLC0415
    from engine.core.replay.record import case_from_run, case_yaml  # noqa: PLC0415

    record = _read_run(args)
    data = case_from_run(record, name=args.name, vars_of=_inventory_vars(record))
    comment = f"Recorded by `cairn record {record.id}`: edit the name and about; `cairn test` runs it."
    if not args.output:
        sys.stdout.write(case_yaml(data, comment=comment))
        return EXIT_OK
    from engine.cli.scaffold import case_modeline  # noqa: PLC0415

    target = Path(args.output)
    text = case_yaml(data, comment=comment, modeline=case_modeline(target))
    try:
        _write(target, text)
    except OSError as exc:
        raise CairnError(f"cannot write {target}: {exc.strerror or exc}") from None
    how = f"cairn test {target}"
    if runbook_beside(target) is None:
        runbook = record.runbook_path or f"{record.runbook_id}.yaml"
        folder = tests_folder(Path(runbook)).name
        how = f"cairn test --runbook {runbook} {target} (or move it into {folder}/ beside the runbook)"
    hosts = len(data["hosts"])
    print(
        f"wrote {target}: case {data['case']!r} ({hosts} host{'s' if hosts != 1 else ''}); run it with: {how}"
    )
    return EXIT_OK


def _write(target: Path, text: str) -> None:
    """Write atomically: a reader never sees half a case."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_run(args: argparse.Namespace) -> RunRecord:
    from engine.core.journal_read import JournalReader  # noqa: PLC0415

    journal = JournalReader(args.journal)
    try:
        return journal.get_run(args.run_id)
    finally:
        journal.close()


def _inventory_vars(record: RunRecord) -> Any:
    """The recorded hosts' inventory variables, read again from the run's inventory (if it is still there)."""
    sources = list(record.trigger.get("inventory") or ())
    if not sources:
        return None
    cache: dict[str, dict[str, Any]] = {}

    def vars_of(host: str) -> dict[str, Any]:
        if not cache:
            from engine.core.errors import CairnError  # noqa: PLC0415
            from engine.core.inventory import resolve_targets  # noqa: PLC0415
            from engine.core.loader import check_text  # noqa: PLC0415

            loaded = check_text(record.runbook_text, record.runbook_path or "<journal>")
            try:
                targets = loaded.runbook.targets if loaded.runbook else "all"
                cache.update({h.name: dict(h.vars) for h in resolve_targets(sources, targets, None)})
            except (CairnError, OSError):
                cache["\0"] = {}  # the inventory is gone: no vars
        return cache.get(host, {})

    return vars_of


# --------------------------------------------------------------------------- cairn replay


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.core.errors import CairnError  # noqa: PLC0415
    from engine.core.replay.replaying import replay_run  # noqa: PLC0415

    record = _read_run(args)
    runbook = _replay_runbook(args, record)
    try:
        replayed = replay_run(record, runbook, vars_of=_inventory_vars(record))
    except CairnError as exc:
        raise CairnError(f"run {record.id} cannot be replayed: {exc}") from None
    if args.json:
        emit_json(replayed.as_dict())
    else:
        print(replayed.text())
    return EXIT_FOUND if replayed.changes else EXIT_OK


def _replay_runbook(args: argparse.Namespace, record: RunRecord) -> Any:
    from engine.core.errors import CairnError  # noqa: PLC0415
    from engine.core.loader import check_file  # noqa: PLC0415

    if args.runbook:
        loaded = check_file(Path(args.runbook))
        if loaded.runbook is None:
            problems = "\n".join(str(p) for p in loaded.problems)
            raise CairnError(f"{args.runbook} is not a valid runbook:\n{problems}")
        return loaded.runbook
    from engine.cli.common import library  # noqa: PLC0415

    return library(args).get(record.runbook_id)
