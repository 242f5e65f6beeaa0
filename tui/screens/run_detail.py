"""One run from the journal: every step per host with status, message, command and output, every approval;
p writes its incident report (Markdown and HTML, :mod:`engine.core.incident_bundle`) into the
current folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from engine.core.model import RunStatus
from tui.screens.fitted_footer import FittedFooterScreen
from tui.screens.history import OUTCOME_STYLE, request_resume, started_by, status_text

if TYPE_CHECKING:
    from engine.core.journal import RunRecord, StepRecord
    from tui.app import CairnApp

STEP_STYLE = {
    "ok": "green",
    "finding": "bold yellow",
    "error": "bold red",
    "timeout": "bold red",
    "skipped": "dim",
    "declined": "magenta",
    "not_asked": "yellow",
    "not_run": "dim",
    "cancelled": "bold yellow",
    "interrupted": "bold yellow",
    "running": "bold cyan",
}


class RunRead(Message):
    """The run read from the journal, or why it could not be."""

    def __init__(self, run: RunRecord | None, error: str = "") -> None:
        super().__init__()
        self.run, self.error = run, error


def run_summary(run: RunRecord) -> Text:
    """The lines above the steps: status and exit code, who and when, targets, inputs, each host's outcome."""
    from engine.core.render import when  # noqa: PLC0415

    text = Text.assemble(("run ", "dim"), (run.id, "bold"), " · ", (run.runbook_id, "bold"), " · ")
    text.append_text(status_text(run))
    if run.exit_code is not None:
        text.append(f", exit {run.exit_code}")
    text.append(f"\nstarted {when(run.started_at)} by {started_by(run)} · finished {when(run.finished_at)}")
    text.append(f"\ntargets {', '.join(run.hosts) or '-'}")
    shown_inputs = ", ".join(f"{k}={v}" for k, v in run.inputs.items())
    text.append(f" · inputs {shown_inputs or '-'}")
    if run.dry_run:
        text.append("\ndry run: remediation was not executed", style="yellow")
    for host, outcome in run.outcomes.items():
        value = outcome.get("outcome", "")
        text.append(f"\n{host}: ")
        text.append(value, style=OUTCOME_STYLE.get(value, ""))
        if outcome.get("reason"):
            text.append(f" — {outcome['reason']}")
    if run.status is RunStatus.INTERRUPTED:
        text.append("\ninterrupted before its end: R resumes it from where it stopped", style="bold yellow")
    return text


def step_text(step: StepRecord, approvals: list[str]) -> Text:
    """Everything the journal has about one step on one host."""
    from engine.core.model import format_duration  # noqa: PLC0415

    text = Text.assemble(
        (f"{step.phase} · {step.title or step.step_id}", "bold"), (f"  ({step.step_id})", "dim")
    )
    text.append(f"\non {step.host}: ")
    text.append(step.status.replace("_", " "), style=STEP_STYLE.get(step.status, ""))
    if step.rc is not None:
        text.append(f", rc {step.rc}")
    if step.duration:
        text.append(f", {format_duration(step.duration)}")
    if step.message:
        text.append(f"\n{step.message}")
    if step.command:
        text.append("\n\n$ ", style="bold")
        text.append(step.command.strip(), style="bold")
    for line in [*([f"approval: {step.approval}"] if step.approval else []), *approvals]:
        text.append(f"\n{line}", style="magenta")
    for name, output in (("stdout", step.stdout), ("stderr", step.stderr)):
        if output.strip():
            text.append(f"\n\n{name}\n", style="bold underline")
            text.append(output.rstrip(), style="red" if name == "stderr" else "")
    if step.out is not None:
        text.append("\n\nparsed\n", style="bold underline")
        text.append(json.dumps(step.out, indent=2, default=str))
    return text


class RunDetailScreen(FittedFooterScreen[None]):
    """A journaled run, read-only; R resumes it when it was interrupted."""

    CSS_PATH = Path(__file__).parent / "run_detail.tcss"  # absolute: subclasses elsewhere find it too
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("R", "resume", "Resume", tooltip="Go on with this interrupted run from where it stopped"),
        Binding("a", "tab('approvals')", "Approvals"),
        Binding(
            "p",
            "report",
            "Report",
            tooltip="Write this run's incident report (cairn-report-RUN.md and .html) into the current folder",
        ),
        Binding("s", "tab('steps')", "Steps", show=False),
        Binding("f5", "refresh", "Refresh", show=False, tooltip="Read the run from the journal again"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: RunRecord | None = None

    @property
    def cairn(self) -> CairnApp:
        """The app, with its configuration and journal."""
        return cast("CairnApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"reading run {self.run_id}…", id="run-summary")
        with TabbedContent(id="run-tabs"):
            with TabPane("Steps", id="steps"):
                yield DataTable[Text](id="run-steps", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="run-step-scroll"):
                    yield Static(id="run-step-detail")
            with TabPane("Approvals", id="approvals"):
                yield DataTable[Text](id="run-approvals", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = f"Run {self.run_id}"
        self.query_one("#run-steps", DataTable).add_columns(
            "Host", "Phase", "Step", "Status", "Took", "Message"
        )
        self.query_one("#run-approvals", DataTable).add_columns(
            "Host", "Step", "Decision", "By", "When", "Note", "Command"
        )
        self.query_one("#run-steps", DataTable).focus()
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-detail")
    def _read(self) -> None:
        from engine.core.errors import CairnError  # noqa: PLC0415

        app = self.cairn
        try:
            journal = app.open_journal()
            try:
                run = journal.get_run(self.run_id)
            finally:
                journal.close()
        except CairnError as exc:
            self.post_message(RunRead(None, str(exc)))
            return
        self.post_message(RunRead(run))

    def on_run_read(self, message: RunRead) -> None:
        summary = self.query_one("#run-summary", Static)
        if message.run is None:
            summary.update(Text(message.error, style="bold red"))
            return
        run = self.run = message.run
        self.sub_title = run.runbook_id
        summary.update(run_summary(run))
        self._fill_steps(run)
        self._fill_approvals(run)
        self.refresh_bindings()

    def _fill_steps(self, run: RunRecord) -> None:
        from engine.core.model import format_duration  # noqa: PLC0415

        table = self.query_one("#run-steps", DataTable)
        keep = table.cursor_row
        table.clear()
        for index, step in enumerate(run.steps):
            table.add_row(
                Text(step.host),
                Text(step.phase),
                Text(step.step_id, style="bold"),
                Text(step.status.replace("_", " "), style=STEP_STYLE.get(step.status, "")),
                Text(format_duration(step.duration) if step.duration else ""),
                Text(step.message.splitlines()[0] if step.message else ""),
                key=str(index),
            )
        if run.steps:
            table.move_cursor(row=min(keep, len(run.steps) - 1), animate=False)
        self._show_step()

    def _fill_approvals(self, run: RunRecord) -> None:
        from engine.core.render import when  # noqa: PLC0415

        table = self.query_one("#run-approvals", DataTable)
        table.clear()
        for approval in run.approvals:
            table.add_row(
                Text(approval.host),
                Text(f"{approval.phase}/{approval.step_id}"),
                Text("approved", style="green")
                if approval.approved
                else Text("declined", style="bold magenta"),
                Text(approval.decided_by),
                Text(when(approval.at)),
                Text(approval.note),
                Text(" ".join(approval.command.split())),
            )
        tabs = self.query_one("#run-tabs", TabbedContent)
        tabs.get_tab("approvals").label = f"Approvals ({len(run.approvals)})"
        tabs.get_tab("steps").label = f"Steps ({len(run.steps)})"

    @on(DataTable.RowHighlighted, "#run-steps")
    def _show_step(self) -> None:
        from engine.core.render import when  # noqa: PLC0415

        detail = self.query_one("#run-step-detail", Static)
        run = self.run
        table = self.query_one("#run-steps", DataTable)
        if run is None or not run.steps:
            detail.update("no step ran" if run is not None else "")
            return
        step = run.steps[min(table.cursor_row, len(run.steps) - 1)]
        decisions = [
            f"{'approved' if a.approved else 'declined'} by {a.decided_by} at {when(a.at)}"
            + (f" — {a.note}" if a.note else "")
            for a in run.approvals
            if (a.host, a.phase, a.step_id) == (step.host, step.phase, step.step_id)
        ]
        detail.update(step_text(step, decisions))
        self.query_one("#run-step-scroll").scroll_home(animate=False)

    # ------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resume":
            return (self.run is not None and self.run.status is RunStatus.INTERRUPTED) or None
        if action == "report":
            return self.run is not None or None
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_resume(self) -> None:
        if self.run is not None:
            request_resume(self.app, self.run)

    def action_tab(self, tab: str) -> None:
        self.query_one("#run-tabs", TabbedContent).active = tab
        self.query_one("#run-approvals" if tab == "approvals" else "#run-steps", DataTable).focus()

    def action_refresh(self) -> None:
        self._read()

    def action_report(self) -> None:
        if self.run is not None:
            self._write_report(self.run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-report")
    def _write_report(self, run: RunRecord) -> None:
        """The report as the CLI writes it (the queue's decisions too), beside where the TUI was started."""
        from engine.core.errors import CairnError  # noqa: PLC0415
        from engine.core.incident_bundle import write_reports  # noqa: PLC0415
        from engine.core.queue_decisions import run_decisions  # noqa: PLC0415

        try:
            folder = Path.cwd()
            decisions = run_decisions(self.cairn.config.journal_location, run)
            written = write_reports(run, decisions, folder)
        except (CairnError, OSError) as exc:
            self.app.call_from_thread(
                self.notify, f"report not written: {exc}", severity="error", timeout=15, markup=False
            )
            return
        said = "report written:\n" + "\n".join(str(path) for path in written)
        self.app.call_from_thread(self.notify, said, title="Report", timeout=15, markup=False)
