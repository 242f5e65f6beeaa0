"""The CLI's live side: progress as events arrive, and approvals asked on the terminal.

What comes from hosts and values (commands, output, messages, reasons) is shown through
:mod:`engine.core.visible`: control characters are written as escapes, never obeyed,
and only a command's first line is a ``$`` line (the rest are ``>`` continuations), so
nothing a host prints or a value holds can forge a line or rewrite the terminal.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TextIO

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.events import (
    ApprovalRequested,
    Event,
    HostFinished,
    PreflightChecked,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.core.knowledge import step_notes
from engine.core.model import HostReport, InputSpec, RunReport, StepResult, StepStatus, format_duration
from engine.core.render import STEP_ID_WIDTH, indent
from engine.core.reports import step_line, summary_text
from engine.core.visible import command_lines, continuation, visible, visible_lines


class TerminalApprover:
    """Asks on the terminal before each step that needs approval, showing the exact command."""

    def __init__(self, stream: TextIO | None = None, read: TextIO | None = None, *, user: str = "") -> None:
        from engine.core.identity import Via, local_identity  # noqa: PLC0415

        self.out = stream or sys.stderr
        self.read = read or sys.stdin
        self.user = user or local_identity(Via.CLI).name
        """Who answers, as journaled (``tty:<user>``): this process's account by its uid, never ``$USER``."""
        self._all: Decision | None = None
        self._every_host: set[tuple[str, str]] = set()

    def decide(self, request: ApprovalRequest) -> Approval:
        """Show the step and ask; ``e`` approves it on every host, ``a`` the rest of the run, ``q`` declines it."""
        who = f"tty:{self.user}"
        if self._all is not None and not request.manual:
            return Approval(self._all, who, "answered for all remaining steps")
        if (request.phase.value, request.step.id) in self._every_host and not request.manual:
            return Approval(Decision.APPROVED, who, "approved for every host")
        print_request(request, self.out)
        if request.manual:
            return self._ask_manual(who)
        return self._ask_command(who, (request.phase.value, request.step.id))

    def _answer(self, prompt: str) -> str:
        print(prompt, end="", file=self.out, flush=True)
        line = self.read.readline()
        if not line:  # end of input: nobody is there to approve
            print(file=self.out)
            return ""
        return line.strip().lower()

    def _ask_command(self, who: str, step: tuple[str, str]) -> Approval:
        while True:
            answer = self._answer(
                "  └ run it? [y]es / [n]o / [e]very host: yes to this step on all / "
                "[a]ll remaining steps / [q]uit (decline the rest): "
            )
            if answer in ("y", "yes"):
                return Approval(Decision.APPROVED, who)
            if answer in ("e", "every"):
                self._every_host.add(step)
                return Approval(Decision.APPROVED, who, "approved for every host")
            if answer in ("n", "no", ""):
                return Approval(Decision.DECLINED, who, f"declined by {who}")
            if answer in ("a", "all"):
                self._all = Decision.APPROVED
                return Approval(Decision.APPROVED, who, "approved with all remaining steps")
            if answer in ("q", "quit"):
                self._all = Decision.DECLINED
                return Approval(Decision.DECLINED, who, f"declined by {who} with all remaining steps")

    def _ask_manual(self, who: str) -> Approval:
        while True:
            answer = self._answer("  └ done? [y]es, done / [s]kip / [n]o, decline: ")
            if answer in ("y", "yes", "d", "done"):
                return Approval(Decision.APPROVED, who)
            if answer in ("s", "skip"):
                return Approval(Decision.SKIPPED, who, f"skipped by {who}")
            if answer in ("n", "no", ""):
                return Approval(Decision.DECLINED, who, f"declined by {who}")


def print_request(request: ApprovalRequest, out: TextIO) -> None:
    """The step asking for approval: where it runs, why, the exact command (or what to do by hand), its trade-off.

    Written at once, so that no other thread's line lands inside it."""
    step = request.step
    become = f" ({request.become})" if request.become else ""
    lines = [
        "\n" + visible(f"  ┌ {request.phase.value} step {step.id!r} on {request.host}{become}: {step.title}")
    ]
    notes = step_notes(step)
    lines += [markdown_block(note.text, "  │ ", out) for note in notes if note.lead]
    if request.manual:
        lines.append("  │ Do this by hand:")
        lines.append(markdown_block(request.text, "  │   ", out))
    else:
        lines.append(command_lines(request.text.strip(), "  │ $ ", "  │ > "))
    lines += [
        markdown_block(f"*{note.label.lower()}:* {note.text}", "  │ ", out) for note in notes if not note.lead
    ]
    print("\n".join(lines), file=out, flush=True)


def markdown_block(markdown: str, prefix: str, stream: TextIO) -> str:
    """Runbook Markdown (a why, instructions, a trade-off) for ``stream``, each line after ``prefix``.

    On a terminal it is rendered with rich (inline code and emphasis styled, paragraphs
    reflowed to the terminal's width); elsewhere it is plain text without Markdown's marks.
    Control characters in it are shown as escapes (its lines are kept).
    """
    markdown = "\n".join(visible_lines(markdown))
    width = max(40, shutil.get_terminal_size((100, 24)).columns - len(prefix) - 1)
    if stream.isatty():
        import io  # noqa: PLC0415

        from rich.console import Console  # noqa: PLC0415 - only when a step asks on a terminal
        from rich.markdown import Markdown  # noqa: PLC0415

        buffer = io.StringIO()
        Console(file=buffer, force_terminal=True, width=width, highlight=False).print(
            Markdown(markdown.strip(), code_theme="ansi_dark")
        )
        text = "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())
    else:
        from engine.core.plaintext import markdown_to_text  # noqa: PLC0415

        text = markdown_to_text(markdown, width=width).rstrip("\n")
    return indent(text, prefix)


def one_line(result: StepResult) -> StepResult:
    """``result`` fit for a one-line summary: id and the first line of its message, control characters shown."""
    return replace(
        result,
        host=visible(result.host),
        step_id=visible(result.step_id),
        message=visible(result.message.split("\n", 1)[0]),
    )


def shown_report(report: RunReport) -> RunReport:
    """``report`` fit for the summary table: each host's name and reason on one line, control characters shown."""
    return replace(report, hosts=tuple(_shown_host(h) for h in report.hosts))


def _shown_host(host: HostReport) -> HostReport:
    return replace(host, host=visible(host.host), reason=visible(host.reason))


def ask_input(spec: InputSpec, stream: TextIO | None = None) -> str | None:
    """Prompt for a required input on the terminal (secrets without echo)."""
    out = stream or sys.stderr
    label = f"input {spec.name} ({spec.type.value})" + (f" — {spec.description}" if spec.description else "")
    try:
        if spec.secret:
            return getpass.getpass(f"{label}: ", stream=out)
        print(f"{label}: ", end="", file=out, flush=True)
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None
    except (EOFError, KeyboardInterrupt):
        return None


class ProgressPrinter:
    """Prints a run as it happens: a line per step, output when asked, a summary at the end."""

    def __init__(self, stream: TextIO, *, verbose: bool = False, id_width: int = STEP_ID_WIDTH) -> None:
        self.out = stream
        self.verbose = verbose
        self.id_width = id_width
        """Width of the step id column (:func:`~engine.core.render.runbook_step_width`): rows stay in line."""
        self._where: tuple[str, str] | None = None

    def __call__(self, event: Event) -> None:
        """Print what ``event`` means for the person watching."""
        match event:
            case RunStarted():
                hosts = ", ".join(event.hosts)
                mode = " (dry run: remediation is shown, not run)" if event.dry_run else ""
                self._print(visible(f"{event.runbook_id} on {hosts} — run {event.run_id}{mode}"))
            case PreflightChecked():
                mark = "" if event.ok else "PROBLEM: "
                self._print(f"── {visible(event.host)} · preflight\n   {mark}{visible(event.summary)}")
            case StepStarted():
                self._heading(event.host, event.phase.value)
                if self.verbose:
                    if event.become:
                        self._print(visible(f"     ({event.become})"))
                    self._print(command_lines(event.command, "     $ ", "     > "))
            case StepOutput() if self.verbose:
                self.out.write("".join(f"     | {line}\n" for line in visible_lines(event.text)))
            case ApprovalRequested():
                self._heading(event.host, event.phase.value)
            case StepApproval():
                pass
            case StepFinished():
                result = event.result
                self._heading(result.host, result.phase.value)
                self._print("   " + step_line(one_line(result), self.id_width))
                finding = result.status is StepStatus.FINDING
                quiet = finding and bool(result.message) and not result.message.startswith("expect")
                if (finding or result.status.failed) and not self.verbose and not quiet:
                    detail = (result.stderr if not finding else "") or result.stdout
                    lines = [ln for ln in visible_lines(detail.strip()) if ln.strip()]
                    if lines and lines[-1].strip() not in visible(result.message):
                        shown = lines[:6] + ([f"… {len(lines) - 6} more lines"] if len(lines) > 6 else [])
                        self._print(indent("\n".join(shown), "       | "))
                if (
                    result.status is StepStatus.SKIPPED
                    and result.command
                    and result.message.startswith("dry run")
                ):
                    if result.message.startswith("dry run: a human"):  # a manual step: its instructions
                        self._print(markdown_block(result.command, "       would ask > ", self.out))
                    else:
                        self._print(
                            command_lines(result.command, "       would run $ ", "       would run > ")
                        )
            case HostFinished():
                pass
            case RunFinished():
                self._print("\n" + summary_text(shown_report(event.report)))
            case _:
                pass

    def _heading(self, host: str, phase: str) -> None:
        if self._where != (host, phase):
            self._where = (host, phase)
            self._print(f"── {visible(host)} · {phase}")

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class FanOutPrinter:
    """Progress of a run over many hosts, as it happens.

    One line per finished step and per finished host, prefixed by the host; when
    nothing has finished for a while, a line saying which hosts are still busy and
    for how long; the summary table at the end. While a question is on the
    terminal, lines wait, so they never break into the prompt.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        verbose: bool = False,
        quiet_after: float = 5.0,
        id_width: int = STEP_ID_WIDTH,
    ) -> None:
        self.out = stream
        self.verbose = verbose
        self.id_width = id_width
        self.quiet_after = quiet_after
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, float]] = {}
        self._total = self._done = 0
        self._width = 8
        self._asking = False
        self._held: list[str] = []
        self._last = time.monotonic()

    def __call__(self, event: Event) -> None:
        """Print what ``event`` means for the person watching."""
        with self._lock:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        match event:
            case RunStarted():
                self._total = len(event.hosts)
                self._width = min(max((len(visible(h)) for h in event.hosts), default=8), 32)
                mode = " (dry run: remediation is shown, not run)" if event.dry_run else ""
                self._line(visible(f"{event.runbook_id} on {self._total} hosts — run {event.run_id}{mode}"))
            case PreflightChecked(ok=False):  # hosts that have everything stay quiet: 500 of them would
                self._line(f"{self._host(event.host)}  preflight {visible(event.summary)}")
            case StepStarted():
                step = visible(f"{event.phase.value} {event.step_id}")
                self._running[visible(event.host)] = (step, time.monotonic())
                if self.verbose:
                    if event.become:
                        self._line(f"{self._host(event.host)}  {visible(f'({event.become})')}")
                    prefix = f"{self._host(event.host)}  $ "
                    self._line(command_lines(event.command, prefix, continuation(prefix)))
            case StepOutput() if self.verbose:
                prefix = f"{self._host(event.host)}  | "
                self._line("\n".join(prefix + line for line in visible_lines(event.text)))
            case ApprovalRequested():
                self._asking = True
            case StepApproval():
                self._asking = False
                held, self._held = self._held, []
                for line in held:
                    self._line(line)
            case StepFinished():
                result = event.result
                self._running.pop(visible(result.host), None)
                self._line(
                    f"{self._host(result.host)}  {result.phase.value:<9} {step_line(one_line(result), self.id_width)}"
                )
            case HostFinished():
                self._done += 1
                report = event.report
                self._line(
                    f"{self._host(report.host)}  == {report.outcome.value}: {visible(report.reason)}"
                    f"  [{self._done}/{self._total} hosts done]"
                )
            case RunFinished():
                self._running.clear()
                self._line("\n" + summary_text(shown_report(event.report)))
            case _:
                pass

    def _host(self, host: str) -> str:
        """The host column: the name with its control characters shown, padded."""
        return f"{visible(host):<{self._width}}"

    def tick(self) -> None:
        """Say who is still busy, if nothing was printed for ``quiet_after`` seconds."""
        with self._lock:
            now = time.monotonic()
            if self._asking or not self._running or now - self._last < self.quiet_after:
                return
            busy = sorted(self._running.items(), key=lambda item: item[1][1])
            shown = ", ".join(f"{h} ({what}, {format_duration(now - t)})" for h, (what, t) in busy[:5])
            more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
            self._line(f"… {self._done}/{self._total} hosts done; still running on {shown}{more}")

    @contextlib.contextmanager
    def ticking(self, every: float = 1.0) -> Iterator[None]:
        """Call :meth:`tick` from a background thread while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                self.tick()

        thread = threading.Thread(target=loop, name="cairn-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _line(self, text: str) -> None:
        if self._asking:
            self._held.append(text)
            return
        print(text, file=self.out, flush=True)
        self._last = time.monotonic()
