"""``cairn plan``, ``cairn run`` and ``cairn resume``: a runbook on its targets, shown or run."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_INTERRUPTED, EXIT_OK, emit_json, execution_options, library_runbook, usage
from engine.cli.options import Commands, forks

if TYPE_CHECKING:
    from engine.cli.console import StepConsole
    from engine.core.journal import Journal
    from engine.core.runner import Runner

STEP_HELP = (
    "step through the run from the keyboard, as the TUI does: each step waits for a key — "
    "n the next step (on every host), p the rest of the phase, c continue (stop stepping; remediation "
    "still asks), s skip the next step, r run the phase's previous step again, x or Ctrl-C cancel; "
    "needs a terminal"
)


def register(commands: Commands) -> None:
    plan = commands.add(
        "plan",
        cmd_plan,
        "show the exact commands each target would run, without running anything; each target is asked "
        "only whether it has the programs the runbook requires (preflight)",
        [commands.targets, commands.runbooks, commands.as_json, commands.reach],
    )
    plan.add_argument(
        "--no-preflight",
        action="store_true",
        help="do not contact the targets at all (the programs the runbook requires are not checked)",
    )
    plan.add_argument(
        "-f", "--forks", type=forks, default=5, metavar="N", help="preflight N hosts at once (default 5)"
    )
    run = commands.add(
        "run",
        cmd_run,
        "run a runbook: detect, diagnose, remediate (with approval), verify",
        [commands.targets, commands.runbooks, commands.as_json, commands.journal, commands.reach],
    )
    run.add_argument(
        "--yes", action="store_true", help="approve every remediation step (non-interactive use)"
    )
    run.add_argument(
        "-f",
        "--forks",
        type=forks,
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
    run.add_argument("--step", action="store_true", help=STEP_HELP)
    resume = commands.add(
        "resume",
        cmd_resume,
        "go on with an interrupted run: its finished steps are reused, the rest runs",
        [commands.as_json, commands.journal, commands.reach],
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
        type=forks,
        default=5,
        metavar="N",
        help="work on at most N hosts at once (default 5)",
    )
    resume.add_argument(
        "-v", "--verbose", action="count", default=0, help="stream every command and its output"
    )
    resume.add_argument("--step", action="store_true", help=STEP_HELP)


def _step_refused(args: argparse.Namespace) -> str:
    """Why ``--step`` cannot be used as asked ("" when it can, or was not asked for)."""
    if not args.step:
        return ""
    if args.yes:
        return (
            "--step and --yes do not go together: --step has you release every step and answer every "
            "approval, --yes approves without asking; drop one"
        )
    if args.json:
        return (
            "--step and --json do not go together: --step talks with you on the terminal, --json prints "
            "one JSON document for a script; drop one"
        )
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return (
            "--step reads keys from a terminal and shows the run on it: stdin and stdout must be a terminal "
            "(run without --step to go through every step at once)"
        )
    return ""


def _prepare(args: argparse.Namespace) -> tuple[Any, dict[str, Any], list[Any]]:
    """Runbook, typed inputs and hosts for ``plan`` and ``run``: every input error before anything runs."""
    from engine.cli.terminal import ask_input  # noqa: PLC0415
    from engine.core.inputs import parse_extra_vars, resolve_inputs  # noqa: PLC0415
    from engine.core.inventory import resolve_targets  # noqa: PLC0415

    runbook = library_runbook(args, args.id)
    given = parse_extra_vars(args.extra_vars)
    interactive = sys.stdin.isatty() and not getattr(args, "json", False)
    inputs = resolve_inputs(runbook, given, ask=ask_input if interactive else None)
    _hide_secrets(runbook, inputs, [])
    hosts = resolve_targets(args.inventory, runbook.targets, args.limit)
    _hide_secrets(runbook, inputs, hosts)
    return runbook, inputs, hosts


def _hide_secrets(runbook: Any, inputs: Any, hosts: Any) -> None:
    """From here on, whatever this process prints or logs shows no secret input nor become password of
    ``hosts`` (one place for the CLI, as :meth:`EventBus.emit` is for events)."""
    from engine.cli.redacting import redact_output  # noqa: PLC0415
    from engine.core.redaction import Redactor  # noqa: PLC0415

    redact_output(Redactor.for_run(runbook, inputs, hosts))


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.core.model import Phase  # noqa: PLC0415
    from engine.core.plan import plan_run  # noqa: PLC0415
    from engine.core.reports import plan_data, plan_text  # noqa: PLC0415

    runbook, inputs, hosts = _prepare(args)
    plans = plan_run(runbook, hosts, inputs, last_phase=Phase(args.phase))
    preflights = None
    from engine.core.preflight import check_hosts, needs_preflight  # noqa: PLC0415

    if any(needs_preflight(runbook, h) for h in hosts) and not args.no_preflight:
        preflights = check_hosts(runbook, hosts, inputs, execution_options(args), forks=args.forks)
    if args.json:
        emit_json(plan_data(runbook, plans, preflights))
    else:
        print(plan_text(runbook, plans, preflights))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from engine.core.launch import prepare_run  # noqa: PLC0415
    from engine.core.model import Phase  # noqa: PLC0415
    from engine.core.open_files import ensure_open_files  # noqa: PLC0415
    from engine.core.spec import RunSpec, Trigger  # noqa: PLC0415

    refused = _step_refused(args)
    if refused:
        return usage(refused)
    runbook, inputs, hosts = _prepare(args)
    ensure_open_files(len(hosts), args.forks)  # before anything is journaled or run
    spec = RunSpec(
        runbook=runbook,
        hosts=tuple(hosts),
        inputs=inputs,
        trigger=Trigger(limit=args.limit),
        options=execution_options(args),
        last_phase=Phase(args.phase),
        forks=args.forks,
        dry_run=args.dry_run,
    )
    journal = _journal_to_write(args)
    console = _console(args, spec, journal)
    if console is not None:
        runner = prepare_run(
            spec, journal=journal, approver=console.approver, pacer=console.pacer, cancel=console.cancel
        )
    else:
        runner = prepare_run(spec, journal=journal, approver=_approver(args, journal))
    return _execute(args, runner, journal, console)


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.cli.terminal import ask_input  # noqa: PLC0415
    from engine.core.inputs import parse_extra_vars  # noqa: PLC0415
    from engine.core.launch import prepare_run  # noqa: PLC0415
    from engine.core.open_files import ensure_open_files  # noqa: PLC0415
    from engine.core.resume import resume_plan  # noqa: PLC0415

    refused = _step_refused(args)
    if refused:
        return usage(refused)
    journal = _journal_to_write(args)
    try:
        record = journal.get_run(args.run_id)
        interactive = sys.stdin.isatty() and not args.json
        plan = resume_plan(
            record,
            parse_extra_vars(args.extra_vars),
            ask=ask_input if interactive else None,
            options=execution_options(args),
            forks=args.forks,
        )
        ensure_open_files(len(plan.spec.hosts), plan.spec.forks)
    except BaseException:
        journal.close()
        raise
    _hide_secrets(plan.spec.runbook, plan.spec.inputs, plan.spec.hosts)
    if not args.json:
        print(f"resuming run {record.id}: {plan.reused} finished step(s) are reused, not run again")
    console = _console(args, plan.spec, journal)
    if console is not None:
        runner = prepare_run(
            plan.spec, journal=journal, approver=console.approver, pacer=console.pacer, cancel=console.cancel
        )
    else:
        runner = prepare_run(plan.spec, journal=journal, approver=_approver(args, journal))
    return _execute(args, runner, journal, console)


def _journal_to_write(args: argparse.Namespace) -> Journal:
    """The journal a run writes (``--journal``: a file or a PostgreSQL URL); a store that refuses it
    is said before anything runs."""
    from engine.core.errors import JournalUnwritable  # noqa: PLC0415
    from engine.core.journal import journal_for_a_run  # noqa: PLC0415

    try:
        return journal_for_a_run(args.journal)
    except JournalUnwritable as exc:
        raise exc.about(
            "the run did not start: nothing of it was recorded and nothing ran", recorded=False
        ) from None


def _at_this_terminal(journal: Journal) -> str:
    """Who answers at this terminal, as the journal records it: the account of this process's uid
    (never ``$USER``), with the database role the store authenticated on PostgreSQL."""
    from engine.core.identity import Via, local_identity  # noqa: PLC0415

    role = journal.db.role()
    return local_identity(Via.CLI).name + (f" (db role {role})" if role else "")


def _console(args: argparse.Namespace, spec: Any, journal: Journal) -> StepConsole | None:
    """``--step``: the console that owns the keyboard while the run goes (``None`` without ``--step``)."""
    if not args.step:
        return None
    from engine.cli.console import StepConsole  # noqa: PLC0415

    return StepConsole.on_terminal(
        spec.runbook, hosts=len(spec.hosts), by=f"tty:{_at_this_terminal(journal)}"
    )


def _approver(args: argparse.Namespace, journal: Journal) -> Any:
    from engine.cli.terminal import TerminalApprover  # noqa: PLC0415
    from engine.core.approval import AssumeYes, NobodyToAsk  # noqa: PLC0415

    if args.yes:
        return AssumeYes()
    if sys.stdin.isatty():
        return TerminalApprover(user=_at_this_terminal(journal))
    return NobodyToAsk()


def _execute(
    args: argparse.Namespace, runner: Runner, journal: Journal, console: StepConsole | None = None
) -> int:
    """Run ``runner`` with the CLI's progress output (and, with ``--step``, the keys); the exit code of ``cairn run``."""
    import contextlib  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from engine.cli.terminal import FanOutPrinter, ProgressPrinter  # noqa: PLC0415
    from engine.core.errors import JournalUnreachable, JournalUnwritable, LeaseLost  # noqa: PLC0415
    from engine.core.render import as_data, runbook_step_width  # noqa: PLC0415
    from engine.core.reports import summary_rows  # noqa: PLC0415

    printer: FanOutPrinter | None = None
    if not args.json or args.verbose:
        stream = sys.stderr if args.json else sys.stdout
        width = runbook_step_width(runner.spec.runbook)
        if len(runner.spec.hosts) > 1:
            printer = FanOutPrinter(stream, verbose=args.verbose > 0, id_width=width)
            runner.bus.subscribe(printer)
        else:
            runner.bus.subscribe(ProgressPrinter(stream, verbose=args.verbose > 0, id_width=width))

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # end the run as interrupted, killing the running command

    def interrupted() -> int:
        print(
            f"\ninterrupted; the journal has the run so far: cairn show-run {runner.run_id}\n"
            f"to go on from where it stopped: cairn resume {runner.run_id}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with (
            printer.ticking() if printer else contextlib.nullcontext(),
            console.running(sys.stdin.fileno()) if console else contextlib.nullcontext(),
        ):
            report = runner.run()
    except KeyboardInterrupt:
        return interrupted()
    except JournalUnwritable as exc:  # the run stopped where its journal did: say what it holds, in one line
        then = f"cairn resume {runner.run_id}" if exc.recorded else "run it again"
        once = (
            "the database answers again"
            if isinstance(exc, JournalUnreachable)
            else "the disk takes writes again"
        )
        return usage(f"{exc}; once {once}: {then}")
    except LeaseLost as exc:  # paused past its lease: whoever holds the run now, it goes on from the journal
        return usage(f"{exc}; to go on from the journal: cairn resume {runner.run_id}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        journal.close()
    if report.interrupted:  # `x` in --step: cancelled from the keyboard, as Ctrl-C would have
        return interrupted()
    if args.json:
        emit_json(as_data(report) | {"exit_code": report.exit_code, "summary": summary_rows(report)})
    else:
        print(f"\nexit {report.exit_code} — details: cairn show-run {report.run_id}")
    return report.exit_code
