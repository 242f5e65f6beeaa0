"""``cairn``: the command line. Thin: parse arguments, call the engine, print.

Exit codes: 0 success / healthy / remediated; 1 problems found (``validate``)
or the pitfall is present (``run``); 2 usage or input errors, and runs that
failed; 130 interrupted. Heavy modules are imported inside the handlers so
that ``cairn --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__

if TYPE_CHECKING:
    from engine.journal import Journal
    from engine.runner import Runner

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_ENGINE = Path(__file__).resolve().parent
BUNDLED_RUNBOOKS = _ENGINE / "runbooks" if (_ENGINE / "runbooks").is_dir() else _ENGINE.parent / "runbooks"
"""The knowledge base shipped with Cairn: inside the package when installed from a wheel (pyproject's
force-include puts the repository's runbooks/ there), the repository's runbooks/ in a checkout."""
PHASES = ("detect", "diagnose", "remediate", "verify")


def default_runbook_dirs() -> list[Path]:
    """``$CAIRN_RUNBOOKS`` (os.pathsep-separated), else ``./runbooks``, else the bundled runbooks."""
    explicit = os.environ.get("CAIRN_RUNBOOKS")
    if explicit:
        return [Path(p) for p in explicit.split(os.pathsep) if p]
    local = Path("runbooks")
    return [local] if local.is_dir() else [BUNDLED_RUNBOOKS]


def _emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------- handlers


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.loader import load_library  # noqa: PLC0415
    from engine.render import problems_text  # noqa: PLC0415

    paths = [Path(p) for p in args.paths] or _runbook_dirs(args)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return _usage(f"no such file or folder: {', '.join(missing)}")
    from engine.lab.labfile import validate_lab_files  # noqa: PLC0415 - the labs beside the runbooks

    library = load_library(paths, jobs=_jobs())
    labs = validate_lab_files(paths, library.results)
    results = [*library.results, *labs]
    invalid = any(r.problems for r in results)
    if args.json:
        _emit_json(
            {
                "valid": not invalid,
                "files": [
                    {
                        "path": r.path,
                        "id": r.declared_id,
                        "valid": not r.problems,
                        "problems": [p.as_dict() for p in r.problems],
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import examine, report_data, report_text, resolve_scopes  # noqa: PLC0415

    try:
        scopes = resolve_scopes(args.scopes)
    except ValueError as exc:
        return _usage(str(exc))
    report = examine(scopes)
    if args.json:
        _emit_json(report_data(report))
    else:
        print(report_text(report))
    return EXIT_OK if report.ok else EXIT_FOUND


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.scaffold import LAB_SCHEMA, RUNBOOK_SCHEMA, schema_files, write_schemas  # noqa: PLC0415

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
        return _usage(f"this Cairn ships no {name}")
    sys.stdout.write(files[name].read_text(encoding="utf-8"))
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    from engine.scaffold import new_runbook  # noqa: PLC0415

    folder = Path(args.dir) if args.dir else (Path("runbooks") if Path("runbooks").is_dir() else Path("."))
    written = new_runbook(args.id, folder, force=args.force, lab=args.lab)
    if args.json:
        _emit_json(
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


def cmd_list(args: argparse.Namespace) -> int:
    from engine.render import list_text, runbook_summary  # noqa: PLC0415

    library = _library(args)
    runbooks = [rb for rb in library.runbooks if not args.tag or args.tag in rb.tags]
    if args.json:
        _emit_json(
            {
                "runbooks": [runbook_summary(rb) for rb in runbooks],
                "invalid": [
                    {"path": r.path, "problems": [p.as_dict() for p in r.problems]} for r in library.invalid
                ],
            }
        )
    else:
        print(list_text(runbooks, library.invalid))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from engine.render import as_data, knowledge_markdown  # noqa: PLC0415

    runbook = _library(args).get(args.id)
    if args.json:
        data = as_data(runbook)
        data.pop("source_text", None)
        _emit_json(data)
        return EXIT_OK
    markdown = knowledge_markdown(runbook, brief=args.brief)
    if args.markdown:
        sys.stdout.write(markdown)
    elif sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415
        from rich.markdown import Markdown  # noqa: PLC0415

        Console().print(Markdown(markdown))
    else:  # a pipe, a file, a log: plain text without Markdown's marks
        from engine.plaintext import markdown_to_text  # noqa: PLC0415

        sys.stdout.write(markdown_to_text(markdown))
    return EXIT_OK


def _prepare(args: argparse.Namespace) -> tuple[Any, dict[str, Any], list[Any]]:
    """Runbook, typed inputs and hosts for ``plan`` and ``run``: every input error before anything runs."""
    from engine.inputs import parse_extra_vars, resolve_inputs  # noqa: PLC0415
    from engine.inventory import resolve_targets  # noqa: PLC0415
    from engine.terminal import ask_input  # noqa: PLC0415

    runbook = _library(args).get(args.id)
    given = parse_extra_vars(args.extra_vars)
    interactive = sys.stdin.isatty() and not getattr(args, "json", False)
    inputs = resolve_inputs(runbook, given, ask=ask_input if interactive else None)
    hosts = resolve_targets(args.inventory, runbook.targets, args.limit)
    return runbook, inputs, hosts


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.model import Phase  # noqa: PLC0415
    from engine.plan import plan_run  # noqa: PLC0415
    from engine.render import plan_data, plan_text  # noqa: PLC0415

    runbook, inputs, hosts = _prepare(args)
    plans = plan_run(runbook, hosts, inputs, last_phase=Phase(args.phase))
    preflights = None
    if runbook.has_requirements and not args.no_preflight:
        from engine.preflight import check_hosts  # noqa: PLC0415

        preflights = check_hosts(runbook, hosts, inputs, _execution_options(args), forks=args.forks)
    if args.json:
        _emit_json(plan_data(runbook, plans, preflights))
    else:
        print(plan_text(runbook, plans, preflights))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from engine.journal import Journal  # noqa: PLC0415
    from engine.launch import prepare_run  # noqa: PLC0415
    from engine.model import Phase  # noqa: PLC0415
    from engine.resume import run_trigger  # noqa: PLC0415

    runbook, inputs, hosts = _prepare(args)
    journal = Journal(args.journal)
    runner = prepare_run(
        runbook,
        hosts,
        inputs,
        journal=journal,
        approver=_approver(args),
        options=_execution_options(args),
        trigger=run_trigger(args.inventory, args.limit),
        dry_run=args.dry_run,
        last_phase=Phase(args.phase),
        forks=args.forks,
    )
    return _execute(args, runner, journal, multi_host=len(hosts) > 1)


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.inputs import parse_extra_vars  # noqa: PLC0415
    from engine.journal import Journal  # noqa: PLC0415
    from engine.launch import prepare_run  # noqa: PLC0415
    from engine.model import Phase  # noqa: PLC0415
    from engine.resume import resume_plan  # noqa: PLC0415
    from engine.terminal import ask_input  # noqa: PLC0415

    journal = Journal(args.journal)
    try:
        record = journal.get_run(args.run_id)
        interactive = sys.stdin.isatty() and not args.json
        plan = resume_plan(record, parse_extra_vars(args.extra_vars), ask=ask_input if interactive else None)
    except BaseException:
        journal.close()
        raise
    if not args.json:
        print(f"resuming run {record.id}: {plan.reused} finished step(s) are reused, not run again")
    runner = prepare_run(
        plan.runbook,
        plan.hosts,
        plan.inputs,
        journal=journal,
        approver=_approver(args),
        options=_execution_options(args, plan.trigger["inventory"]),
        trigger=plan.trigger,
        last_phase=Phase(record.last_phase),
        forks=args.forks,
        resume=plan.point,
    )
    return _execute(args, runner, journal, multi_host=len(plan.hosts) > 1)


def _approver(args: argparse.Namespace) -> Any:
    from engine.approval import AssumeYes, NobodyToAsk  # noqa: PLC0415
    from engine.terminal import TerminalApprover  # noqa: PLC0415

    if args.yes:
        return AssumeYes()
    if sys.stdin.isatty():
        return TerminalApprover()
    return NobodyToAsk()


def _execute(args: argparse.Namespace, runner: Runner, journal: Journal, *, multi_host: bool) -> int:
    """Run ``runner`` with the CLI's progress output; the exit code of ``cairn run``."""
    import contextlib  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from engine.render import as_data, runbook_step_width, summary_rows  # noqa: PLC0415
    from engine.terminal import FanOutPrinter, ProgressPrinter  # noqa: PLC0415

    printer: FanOutPrinter | None = None
    if not args.json or args.verbose:
        stream = sys.stderr if args.json else sys.stdout
        width = runbook_step_width(runner.request.runbook)
        if multi_host:
            printer = FanOutPrinter(stream, verbose=args.verbose > 0, id_width=width)
            runner.bus.subscribe(printer)
        else:
            runner.bus.subscribe(ProgressPrinter(stream, verbose=args.verbose > 0, id_width=width))

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # end the run as interrupted, killing the running command

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with printer.ticking() if printer else contextlib.nullcontext():
            report = runner.run()
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; the journal has the run so far: cairn show-run {runner.run_id}\n"
            f"to go on from where it stopped: cairn resume {runner.run_id}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        journal.close()
    if args.json:
        _emit_json(as_data(report) | {"exit_code": report.exit_code, "summary": summary_rows(report)})
    else:
        print(f"\nexit {report.exit_code} — details: cairn show-run {report.run_id}")
    return report.exit_code


def cmd_inventory(args: argparse.Namespace) -> int:
    from engine.executors import describe_reach  # noqa: PLC0415
    from engine.inventory import load_inventory  # noqa: PLC0415
    from engine.render import inventory_text  # noqa: PLC0415

    hosts = load_inventory(args.inventory).hosts(args.pattern, args.limit)
    options = _execution_options(args)
    rows = [
        {
            "host": h.name,
            "connection": h.connection,
            "reached_by": describe_reach(h, options),
            "groups": list(h.vars.get("group_names", [])),
            "vars": h.vars,
        }
        for h in hosts
    ]
    if args.json:
        _emit_json({"hosts": rows})
    else:
        print(inventory_text(rows))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from engine.journal import Journal  # noqa: PLC0415
    from engine.render import as_data, history_text  # noqa: PLC0415

    journal = Journal(args.journal)
    try:
        runs = journal.list_runs(
            limit=args.limit, runbook_id=args.runbook, trigger_kind="alert" if args.alerts else None
        )
    finally:
        journal.close()
    if args.json:
        _emit_json([as_data(r) | {"runbook_text": None} for r in runs])
    else:
        print(history_text(runs))
    return EXIT_OK


def cmd_show_run(args: argparse.Namespace) -> int:
    from engine.journal import Journal  # noqa: PLC0415
    from engine.render import as_data, run_text  # noqa: PLC0415

    journal = Journal(args.journal)
    try:
        run = journal.get_run(args.run_id)
    finally:
        journal.close()
    if args.json:
        _emit_json(as_data(run))
    else:
        print(run_text(run, full_output=args.output))
    return EXIT_OK


SERVE_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:9095",
    "cooldown": 300.0,
    "workers": 8,
    "grace": 20.0,
    "breaker": 3,
    "budget": 2,
    "automate": [],
    "allow_no_token": False,
}
"""``cairn serve``'s defaults: an option given wins, then ``--config``, then these."""


def _serve_settings(args: argparse.Namespace) -> argparse.Namespace:
    from engine.serve import read_config  # noqa: PLC0415

    given = read_config(Path(args.config)) if args.config else {}
    args.config_inputs = given.pop("inputs", {})
    for key, value in given.items():
        if getattr(args, key, None) in (None, [], False):
            setattr(args, key, value)
    for key, value in SERVE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from engine.errors import InputError  # noqa: PLC0415
    from engine.inputs import resolve_inputs  # noqa: PLC0415
    from engine.journal import default_journal_path  # noqa: PLC0415
    from engine.policy import Policy  # noqa: PLC0415
    from engine.serve import (  # noqa: PLC0415
        ServeConfig,
        check_listen,
        parse_listen,
        read_token,
        runbook_inputs,
        serve,
    )

    args = _serve_settings(args)
    host, port = parse_listen(args.listen)
    token = read_token(args.token_file, dict(os.environ))
    check_listen(host, token, args.allow_no_token)
    library = _library(args)
    for result in library.results:
        for problem in result.problems:
            print(f"cairn serve: skipping an invalid runbook: {problem}", file=sys.stderr)
    runbooks = tuple(r.runbook for r in library.results if r.runbook is not None)
    with_triggers = [r.id for r in runbooks if r.triggers]
    journal_path = Path(args.journal) if args.journal else default_journal_path()
    policy = Policy(automate=tuple(args.automate), breaker=args.breaker, budget=args.budget)
    unknown = [p for p in policy.automate if not any(policy.automates(r) for r in runbooks)]
    for pattern in unknown:
        print(f"cairn serve: --automate {pattern}: no loaded runbook has that id", file=sys.stderr)
    inputs = runbook_inputs(args.inputs or [], args.config_inputs)
    by_id = {r.id: r for r in runbooks}
    for runbook_id in inputs.keys() - by_id.keys():
        print(f"cairn serve: --inputs {runbook_id}: no loaded runbook has that id", file=sys.stderr)
    for runbook in runbooks:
        if runbook.triggers:
            try:
                resolve_inputs(runbook, inputs.get(runbook.id, {}))
            except InputError as exc:  # its alerts will say so too; the other runbooks still serve
                print(f"cairn serve: {runbook.id}: its alerts cannot run: {exc}", file=sys.stderr)
    config = ServeConfig(
        runbooks=runbooks,
        journal_path=journal_path,
        token=token,
        inventory_sources=tuple(args.inventory or ()),
        options=_execution_options(args),
        cooldown=args.cooldown,
        workers=args.workers,
        policy=policy,
        grace=args.grace,
        inputs=inputs,
        runbook_dirs=tuple(_runbook_dirs(args)),
    )

    def listening() -> None:
        print(
            f"cairn serve: http://{args.listen}/alertmanager · {len(with_triggers)} runbooks with triggers "
            f"({', '.join(with_triggers) or 'none'}) · journal {journal_path} · {policy.describe()}",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await serve(config, host, port, on_ready=listening)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        print("cairn serve: stopped (SIGTERM)", file=sys.stderr)
    return 0


def _queue(args: argparse.Namespace) -> Any:
    from engine.alert_queue import AlertQueue  # noqa: PLC0415
    from engine.journal import default_journal_path  # noqa: PLC0415

    return AlertQueue(Path(args.journal) if args.journal else default_journal_path())


def cmd_queue(args: argparse.Namespace) -> int:
    from engine.alert_queue import EntryState  # noqa: PLC0415
    from engine.render import queue_text  # noqa: PLC0415

    queue = _queue(args)
    try:
        if args.all:
            shown = queue.recent(*EntryState, limit=args.limit)[::-1]
        else:
            shown = queue.entries(EntryState.ESCALATED, EntryState.QUEUED, EntryState.RUNNING)
    finally:
        queue.close()
    if args.json:
        _emit_json([_entry_data(e) for e in shown])
    else:
        print(queue_text(shown, waiting_only=not args.all))
    return EXIT_OK


def _entry_data(entry: Any) -> dict[str, Any]:
    from engine.render import as_data  # noqa: PLC0415

    data: dict[str, Any] = as_data(entry)
    return data


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(
        args,
        lambda queue, by: queue.approve(args.run_id, by),
        "approved: {runbook} on {target} (queue entry {id}). cairn serve runs it again: detect first, "
        "then the remediation if the pitfall is still there; `cairn queue --all` shows how it went",
    )


def cmd_decline(args: argparse.Namespace) -> int:
    return _decide(
        args,
        lambda queue, by: queue.decline(args.run_id, by, args.reason or ""),
        "declined: {runbook} on {target} (queue entry {id}); nothing was changed",
    )


def _decide(args: argparse.Namespace, decide: Callable[[Any, str], Any], said: str) -> int:
    """``cairn approve`` / ``decline``: one decision on an escalated entry, then what it became."""
    from engine.launch import who  # noqa: PLC0415

    queue = _queue(args)
    try:
        entry = decide(queue, args.by or who())
    finally:
        queue.close()
    if args.json:
        _emit_json(_entry_data(entry))
    else:
        print(said.format(runbook=entry.runbook_id, target=entry.target, id=entry.id))
    return EXIT_OK


def cmd_tui(args: argparse.Namespace) -> int:
    import importlib  # noqa: PLC0415

    # Textual draws on stderr; stdin and stdout must be the terminal too (nothing else may write there).
    streams = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}
    redirected = [name for name, stream in streams.items() if not stream.isatty()]
    if redirected:
        return _usage(
            f"cairn tui needs a terminal, but {', '.join(redirected)} "
            f"{'is' if len(redirected) == 1 else 'are'} not one; the other commands work in scripts"
        )
    dirs = _runbook_dirs(args)
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        return _usage(f"runbook folder {', '.join(missing)} does not exist; point --runbooks at one")
    # The engine never imports the TUI (import-linter forbids even a lazy `import tui`): the CLI
    # hands over to it by name, and the TUI calls back into the engine.
    config = importlib.import_module("tui.config").CairnConfig(
        runbook_dirs=tuple(dirs),
        journal_path=Path(args.journal) if args.journal else None,
        inventory=tuple(args.inventory or ()),
        lab_root=Path(args.lab_dir) if args.lab_dir else None,
        options=_execution_options(args),
    )
    code: int = importlib.import_module("tui.app").run_app(config)
    return code


# --------------------------------------------------------------------------- helpers


def cmd_lab(args: argparse.Namespace) -> int:
    from engine.lab.base import LabError  # noqa: PLC0415
    from engine.lab.lifecycle import LabRoot  # noqa: PLC0415

    labs_root = LabRoot(Path(args.dir) if args.dir else None)
    try:
        if args.lab_command == "up":
            return _lab_up(args, labs_root)
        if args.lab_command == "down":
            return _lab_down(args, labs_root)
        return _lab_status(args, labs_root)
    except LabError as exc:
        return _usage(str(exc))


def _lab_up(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab up``: every chosen lab that can start starts; each failure is said, with its reason."""
    from engine.lab.base import LabError  # noqa: PLC0415
    from engine.lab.catalog import choose  # noqa: PLC0415

    dirs = _runbook_dirs(args)
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        return _usage(f"runbook folder {', '.join(missing)} does not exist; point --runbooks at one")
    chosen = choose(args.names, dirs)
    started, failed = [], []
    for entry in chosen:
        if not args.json:
            print(f"starting lab {entry.name} ...", file=sys.stderr, flush=True)
        try:
            started.append(labs_root.up(entry.definition(), healthy=args.healthy))
        except LabError as exc:
            failed.append({"name": entry.name, "error": str(exc)})
            print(f"cairn: error: {exc}", file=sys.stderr, flush=True)
    if args.json:
        _emit_json({"root": str(labs_root.root), "labs": [i.as_dict() for i in started], "failed": failed})
    else:
        for info in started:
            print(f"\nlab {info.name} is up{' (healthy variant: no pitfall)' if info.healthy else ''}")
            for note in info.notes:
                print(f"  - {note}")
            print(f"  practise:  {info.command()}")
            print(f"  stop:      cairn lab down {info.name}" + (f" --dir {args.dir}" if args.dir else ""))
        if failed:
            names = ", ".join(f["name"] for f in failed)
            print(
                f"\n{len(started)} of {len(chosen)} lab{'s' if len(chosen) != 1 else ''} started; "
                f"did not start: {names} (the reasons are above; nothing of them was left running)"
            )
    return EXIT_USAGE if failed else EXIT_OK


def _lab_down(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab down``: each lab's teardown, then its processes and folder; needs only labs.json."""
    names = None if not args.names or "all" in args.names else list(args.names)
    stopped = labs_root.down(names)
    not_up = [n for n in names or () if n not in {s.name for s in stopped}]
    broken = [s for s in stopped if s.teardown is not None and not s.teardown.ok]
    if args.json:
        _emit_json(
            {
                "root": str(labs_root.root),
                "stopped": [s.name for s in stopped],
                "not_up": not_up,
                "teardown": [
                    {"name": s.name} | s.teardown.as_dict() for s in stopped if s.teardown is not None
                ],
            }
        )
    else:
        print(f"stopped: {', '.join(s.name for s in stopped)}" if stopped else "no lab was up")
        for lab in stopped:
            if lab.teardown is not None and lab.teardown.ok:
                tail = lab.teardown.output.strip().splitlines()[-3:]
                print(f"  {lab.name}: teardown done" + "".join(f"\n    {line}" for line in tail))
        if not_up and stopped:
            print(f"not up: {', '.join(not_up)}")
    for lab in broken:
        assert lab.teardown is not None
        print(
            f"cairn: error: lab {lab.name}: {lab.teardown.describe()}\n"
            "its processes were stopped and its folder removed; undo by hand what its setup made outside it",
            file=sys.stderr,
        )
    return EXIT_USAGE if broken else EXIT_OK


def _lab_status(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab status``: every lab (bundled, declared beside the runbooks, and any that is up)."""
    from engine.lab.catalog import catalog  # noqa: PLC0415

    labs = {i.name: i for i in labs_root.status()}
    known = catalog(_runbook_dirs(args))
    names = [*known, *(n for n in labs if n not in known)]
    if args.json:
        _emit_json(
            {
                "root": str(labs_root.root),
                "labs": [
                    labs[n].as_dict()
                    if n in labs
                    else {"name": n, "up": False, "kind": known[n].kind.value, "source": known[n].source}
                    | ({"problem": known[n].problem} if known[n].problem else {})
                    for n in names
                ],
            }
        )
        return EXIT_OK
    print(f"labs under {labs_root.root}")
    for name in names:
        entry = labs.get(name)
        if entry is None:
            declared = f"  [{known[name].source}]" if known[name].source else ""
            print(f"  {name:28} down     {known[name].summary()}{declared}")
            continue
        dead = [p for p, alive in entry.running().items() if not alive]
        state = "up" if not dead else f"BROKEN ({', '.join(dead)} not running; `cairn lab down {name}`)"
        print(f"  {name:28} {state}{'  (healthy variant)' if entry.healthy else ''}")
        print(f"  {'':28} {entry.command()}")
    return EXIT_OK


def cmd_docs(args: argparse.Namespace) -> int:
    from engine.docs import build_site  # noqa: PLC0415

    library = _library(args)
    out = Path(args.out)
    built = build_site(library, out)
    if args.json:
        _emit_json({"out": str(out), "pages": [str(p) for p in built.pages], "index": str(built.index_html)})
    else:
        print(f"{len(built.runbooks)} runbook pages in {out}/ (Markdown and HTML)")
        if built.invalid:
            print(f"{built.invalid} invalid runbook file(s) listed on the index with their problems")
        print(f"open {built.index_html.resolve().as_uri()}")
    return EXIT_OK


def _runbook_dirs(args: argparse.Namespace) -> list[Path]:
    return [Path(p) for p in args.runbooks] if args.runbooks else default_runbook_dirs()


def _library(args: argparse.Namespace) -> Any:
    from engine.errors import CairnError  # noqa: PLC0415
    from engine.loader import load_library  # noqa: PLC0415

    dirs = _runbook_dirs(args)
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        raise CairnError(f"runbook folder {', '.join(missing)} does not exist; point --runbooks at one")
    return load_library(dirs, jobs=_jobs())


def _execution_options(args: argparse.Namespace, inventory: Sequence[str] | None = None) -> Any:
    from engine.executors import ExecutionOptions  # noqa: PLC0415

    return ExecutionOptions(
        via=args.via,
        inventory_sources=tuple(inventory if inventory is not None else args.inventory or ()),
        known_hosts=Path(args.known_hosts).expanduser() if args.known_hosts else None,
        accept_new_host_keys=args.accept_new_host_keys,
        connect_timeout=args.connect_timeout,
    )


def _forks(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError("must be between 1 and 500")
    return value


def _jobs() -> int:
    """Processes for checking many runbooks: one per CPU (the CLI is single-threaded here)."""
    return min(os.cpu_count() or 1, 8)


def _usage(message: str) -> int:
    print(f"cairn: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help`` in the docs)."""
    parser = argparse.ArgumentParser(
        prog="cairn",
        description="Incident knowledge base and runbook automation: detect, diagnose, remediate, verify.",
        epilog="Exit codes: 0 ok/healthy/remediated, 1 problems found or pitfall present, "
        "2 usage error or failed run, 130 interrupted. Docs: docs/runbook-format.md",
    )
    parser.add_argument("--version", action="version", version=f"cairn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    runbooks = argparse.ArgumentParser(add_help=False)
    runbooks.add_argument(
        "--runbooks",
        action="append",
        metavar="DIR",
        default=[],
        help="folder of runbooks (repeatable; default: $CAIRN_RUNBOOKS, ./runbooks, or the bundled ones)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print machine-readable JSON")
    journal = argparse.ArgumentParser(add_help=False)
    journal.add_argument(
        "--journal",
        metavar="PATH",
        default=None,
        help="journal database (default: $CAIRN_JOURNAL or ~/.local/state/cairn/journal.db)",
    )
    targets = argparse.ArgumentParser(add_help=False)
    targets.add_argument("id", metavar="ID", help="runbook id (see `cairn list`)")
    targets.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="INV",
        help="Ansible inventory file or folder (repeatable); default: run on this machine",
    )
    targets.add_argument("-l", "--limit", metavar="PATTERN", help="further limit the hosts (Ansible pattern)")
    targets.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a runbook input (repeatable); @FILE reads YAML/JSON",
    )
    targets.add_argument(
        "--phase",
        choices=PHASES,
        default="verify",
        help="stop after this phase (remediate always continues into verify); default: all",
    )

    reach = argparse.ArgumentParser(add_help=False)
    reach.add_argument(
        "--via",
        choices=("native", "ansible"),
        default="native",
        help="how run steps reach hosts: native (local commands, SSH with paramiko; default) or "
        "ansible (every step through ansible-runner, for hosts reachable only the Ansible way)",
    )
    reach.add_argument(
        "--known-hosts",
        metavar="FILE",
        help="verify SSH host keys against FILE (default: ~/.ssh/known_hosts, or ssh_config's)",
    )
    reach.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record the key of a host never seen before (like ssh's accept-new); a changed key is always refused",
    )
    reach.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a host to answer and finish the SSH handshake (default 10)",
    )

    def add(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help_text: str,
        parents: Sequence[argparse.ArgumentParser],
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, parents=list(parents))
        command.set_defaults(handler=handler)
        return command

    validate = add(
        "validate",
        cmd_validate,
        "check runbooks against the format; report every problem",
        [runbooks, as_json],
    )
    validate.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders (default: the runbooks folder)"
    )
    schema = add(
        "schema",
        cmd_schema,
        "print the runbook JSON Schema (or write it beside your runbooks for editors)",
        [],
    )
    schema.add_argument("--lab", action="store_true", help="the practice lab file's schema instead")
    schema.add_argument(
        "--write",
        metavar="DIR",
        help="write runbook.schema.json (and lab.schema.json) into DIR, for the modeline "
        "`# yaml-language-server: $schema=runbook.schema.json` of the runbooks there",
    )
    new = add(
        "new",
        cmd_new,
        "write a new runbook to start from: every phase, comments that teach the format, valid as it is",
        [as_json],
    )
    new.add_argument("id", metavar="ID", help="the new runbook's id, in kebab-case (e.g. disk-almost-full)")
    new.add_argument(
        "--dir", metavar="DIR", help="where to write ID.yaml (default: ./runbooks if it exists, else here)"
    )
    new.add_argument("--force", action="store_true", help="overwrite ID.yaml (and ID.lab.yaml) if it exists")
    new.add_argument(
        "--lab", action="store_true", help="also write ID.lab.yaml, a practice lab beside it (docs/labs.md)"
    )
    doctor = add(
        "doctor",
        cmd_doctor,
        "check the programs the bundled runbooks, the labs and the tests need on this machine; "
        "name the Debian package of each one missing (exit 1 if any is)",
        [as_json],
    )
    doctor.add_argument(
        "--for",
        dest="scopes",
        action="append",
        default=[],
        metavar="SCOPE",
        help="only what SCOPE needs: runbooks, labs, tests, try (runbooks and labs) or all (default)",
    )
    listing = add("list", cmd_list, "list the runbooks in the knowledge base", [runbooks, as_json])
    listing.add_argument("--tag", help="only runbooks with this tag")
    show = add(
        "show", cmd_show, "show a runbook's knowledge: summary, symptoms, cause, steps", [runbooks, as_json]
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
    plan = add(
        "plan",
        cmd_plan,
        "show the exact commands each target would run, without running anything; each target is asked "
        "only whether it has the programs the runbook requires (preflight)",
        [targets, runbooks, as_json, reach],
    )
    plan.add_argument(
        "--no-preflight",
        action="store_true",
        help="do not contact the targets at all (the programs the runbook requires are not checked)",
    )
    plan.add_argument(
        "-f", "--forks", type=_forks, default=5, metavar="N", help="preflight N hosts at once (default 5)"
    )
    serve = add(
        "serve",
        cmd_serve,
        "take Prometheus Alertmanager webhooks: run the matching runbooks on the alert's target; "
        "remediate where the runbook and --automate allow it, else wait for `cairn approve`",
        [runbooks, journal, reach],
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file with the same settings (listen, token_file, inventory, runbooks, journal, workers, "
        "cooldown, grace, inputs: {RUNBOOK: FILE or mapping}, policy: {automate, breaker, budget}); "
        "options given here win",
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:9095")
    serve.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="INV",
        help="Ansible inventory the alerts' targets are in",
    )
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        help="bearer token Alertmanager must send (default: $CAIRN_WEBHOOK_TOKEN)",
    )
    serve.add_argument(
        "--allow-no-token",
        action="store_true",
        default=None,
        help="serve without a token (loopback addresses only)",
    )
    serve.add_argument(
        "--cooldown",
        type=float,
        metavar="SECONDS",
        help="after a run, the same runbook and target wait this long before an alert runs them again (300)",
    )
    serve.add_argument("--workers", type=_forks, metavar="N", help="runs at once (default 8)")
    serve.add_argument(
        "--automate",
        action="append",
        metavar="RUNBOOK",
        help="let this runbook's steps marked `automatic: true` remediate without a human (repeatable; "
        "shell patterns like 'node-*'); default: every remediation waits for `cairn approve`",
    )
    serve.add_argument(
        "--breaker",
        type=_forks,
        metavar="N",
        help="at most N automatic remediations per host per hour; then escalate to a human (default 3)",
    )
    serve.add_argument(
        "--budget",
        type=_forks,
        metavar="M",
        help="at most M hosts being remediated at once across the fleet; then escalate (default 2)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="at SIGTERM, running runs get this long to finish; then they are cancelled and resume "
        "at the next start (default 20)",
    )
    serve.add_argument(
        "--inputs",
        action="append",
        metavar="RUNBOOK:@FILE",
        help="input values for a runbook's alert-started runs: RUNBOOK:@FILE (YAML/JSON) or "
        "RUNBOOK:KEY=VALUE (repeatable); the runbook's defaults fill the rest",
    )
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("run_id", metavar="RUN_ID", help="the run waiting for a human (see `cairn queue`)")
    waiting.add_argument("--by", metavar="NAME", help="who decides (default: user@host)")
    add(
        "approve",
        cmd_approve,
        "approve the remediation an alert-started run waits for; cairn serve checks again, then remediates",
        [waiting, journal, as_json],
    )
    decline = add(
        "decline",
        cmd_decline,
        "decline the remediation an alert-started run waits for; nothing is changed",
        [waiting, journal, as_json],
    )
    decline.add_argument("--reason", metavar="TEXT", help="why (journaled with the decision)")
    queue = add(
        "queue",
        cmd_queue,
        "alert-started work: what waits for a human (cairn approve / decline), what is queued or running",
        [journal, as_json],
    )
    queue.add_argument(
        "--all", action="store_true", help="also what ended: done, declined, cancelled, failed"
    )
    queue.add_argument("--limit", type=int, default=50, help="with --all: how many entries (default 50)")
    run = add(
        "run",
        cmd_run,
        "run a runbook: detect, diagnose, remediate (with approval), verify",
        [targets, runbooks, as_json, journal, reach],
    )
    run.add_argument(
        "--yes", action="store_true", help="approve every remediation step (non-interactive use)"
    )
    run.add_argument(
        "-f",
        "--forks",
        type=_forks,
        default=5,
        metavar="N",
        help="work on at most N hosts at once (default 5, as ansible)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run the read-only phases; show remediation commands without running them",
    )
    run.add_argument("-v", "--verbose", action="count", default=0, help="stream every command and its output")
    resume = add(
        "resume",
        cmd_resume,
        "go on with an interrupted run: its finished steps are reused, the rest runs",
        [as_json, journal, reach],
    )
    resume.add_argument(
        "run_id", metavar="RUN_ID", help="the interrupted run (an unambiguous id prefix, or last)"
    )
    resume.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="give an input again (secrets are never journaled; they are asked for on a terminal)",
    )
    resume.add_argument("--yes", action="store_true", help="approve every remaining remediation step")
    resume.add_argument(
        "-f",
        "--forks",
        type=_forks,
        default=5,
        metavar="N",
        help="work on at most N hosts at once (default 5)",
    )
    resume.add_argument(
        "-v", "--verbose", action="count", default=0, help="stream every command and its output"
    )
    inventory = add(
        "inventory",
        cmd_inventory,
        "list the hosts an inventory resolves to and how each will be reached",
        [as_json, reach],
    )
    inventory.add_argument(
        "-i",
        "--inventory",
        action="append",
        required=True,
        metavar="INV",
        help="Ansible inventory file or folder (repeatable)",
    )
    inventory.add_argument(
        "pattern", nargs="?", default="all", metavar="PATTERN", help="host pattern (default: all)"
    )
    inventory.add_argument(
        "-l", "--limit", metavar="PATTERN", help="further limit the hosts (Ansible pattern)"
    )
    history = add("history", cmd_history, "list past runs from the journal", [journal, as_json])
    history.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    history.add_argument("--runbook", metavar="ID", help="only runs of this runbook")
    history.add_argument("--alerts", action="store_true", help="only runs started by alerts (cairn serve)")
    show_run = add(
        "show-run", cmd_show_run, "show one run: every step, output and approval", [journal, as_json]
    )
    show_run.add_argument(
        "run_id", metavar="RUN_ID", help="run id, an unambiguous prefix of it, or last (the newest run)"
    )
    show_run.add_argument(
        "--output", action="store_true", help="show complete (journaled) output of every step"
    )
    lab_dir = argparse.ArgumentParser(add_help=False)
    lab_dir.add_argument(
        "--dir",
        metavar="DIR",
        help="where labs live (default: $CAIRN_LAB_DIR or ~/.local/state/cairn/lab)",
    )
    lab = add(
        "lab",
        cmd_lab,
        "practice labs that reproduce each pitfall on this machine: up, status, down",
        [],
    )
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    lab_up = lab_sub.add_parser(
        "up",
        parents=[lab_dir, runbooks, as_json],
        help="start labs (runbook ids, or all) and write an inventory and inputs for each",
        description="Start labs that reproduce the pitfalls, on loopback and unprivileged ports: a runbook's "
        "lab file beside it (ID.lab.yaml, docs/labs.md), else the bundled lab. Every lab that can start "
        "starts; each that cannot is reported and leaves nothing behind (exit 2). Prints, for each, the "
        "`cairn run` command that practises its runbook.",
    )
    lab_up.add_argument("names", nargs="+", metavar="NAME", help="runbook id of the lab, or all")
    lab_up.add_argument(
        "--healthy",
        action="store_true",
        help="build the lab without the pitfall (detect should find nothing)",
    )
    lab_sub.add_parser(
        "status",
        parents=[lab_dir, runbooks, as_json],
        help="which labs exist (bundled and declared beside the runbooks), which are up, whether their processes run",
    )
    lab_down = lab_sub.add_parser(
        "down",
        parents=[lab_dir, as_json],
        help="stop labs (default: all): run each one's teardown, stop its processes, remove its files",
    )
    lab_down.add_argument("names", nargs="*", metavar="NAME", help="runbook id of the lab, or all")
    tui = add(
        "tui",
        cmd_tui,
        "the on-call TUI: browse the runbooks, step through a run, read the history, practise on labs "
        "(also `cairn` alone in a terminal)",
        [runbooks, journal, reach],
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
    docs = add("docs", cmd_docs, "render the knowledge base as training material", [])
    docs_sub = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    docs_build = docs_sub.add_parser(
        "build",
        parents=[runbooks, as_json],
        help="write one page per runbook and an index, as Markdown and as a static HTML site",
        description="Write the knowledge base as training material to OUT: OUT/md/*.md and "
        "OUT/html/*.html (opens from disk, no server needed).",
    )
    docs_build.add_argument("out", metavar="OUT", help="output folder (created; existing pages are replaced)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cairn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and sys.stdin.isatty() and sys.stdout.isatty():
        args = parser.parse_args(["tui"])  # `cairn` alone at a terminal opens the TUI
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "verbose", 0) > 1:
        import logging  # noqa: PLC0415

        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    from engine.errors import CairnError, RunbookInvalid  # noqa: PLC0415

    try:
        code: int = args.handler(args)
    except RunbookInvalid as exc:
        print(f"cairn: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CairnError as exc:
        return _usage(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `cairn history | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a bug in Cairn: say so plainly, keep the traceback for -vv
        import logging  # noqa: PLC0415

        logging.getLogger("engine.cli").debug("internal error", exc_info=True)
        print(
            f"cairn: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in Cairn, not in your input; rerun with -vv for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
