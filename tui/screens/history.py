"""History: past runs from the journal (manual and alert-started), filterable; open one, resume an interrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from engine.core.model import RunStatus
from engine.core.records import started_by_text
from tui.screens.fitted_footer import FittedFooterScreen

if TYPE_CHECKING:
    from engine.core.journal import RunRecord
    from tui.app import CairnApp

HISTORY_LIMIT = 1000
"""Most recent runs read from the journal."""
STATUS_STYLE = {"running": "bold cyan", "finished": "", "interrupted": "bold yellow"}
OUTCOME_STYLE = {
    "healthy": "green",
    "remediated": "bold green",
    "present": "bold yellow",
    "failed": "bold red",
}
HOSTS_SHOWN = 2
LIVE_REFRESH = 3.0
"""Seconds between re-reads of the journal while a listed run is still running (and the history is shown)."""


def started_by(run: RunRecord) -> str:
    """Who started a run, as ``cairn history`` says it (an alert-started run names its alert)."""
    return started_by_text(run)


def hosts_text(hosts: tuple[str, ...]) -> str:
    """``a, b`` or ``a, b +3``."""
    if len(hosts) <= HOSTS_SHOWN + 1:
        return ", ".join(hosts)
    return f"{', '.join(hosts[:HOSTS_SHOWN])} +{len(hosts) - HOSTS_SHOWN}"


def outcomes(run: RunRecord) -> list[str]:
    """The distinct per-host outcomes of a run, sorted."""
    return sorted({o.get("outcome", "") for o in run.outcomes.values()} - {""})


def status_text(run: RunRecord) -> Text:
    """The run's status, styled; dry runs say so."""
    status = run.status.value
    return Text(status + (" (dry run)" if run.dry_run else ""), style=STATUS_STYLE.get(status, ""))


def run_haystack(run: RunRecord) -> str:
    """What the text filter looks in: id, runbook, hosts, status, outcomes, who or what started it."""
    parts = [run.id, run.runbook_id, *run.hosts, run.status.value, *outcomes(run), started_by(run)]
    return "\n".join(parts).casefold()


def request_resume(app: App[Any], run: RunRecord) -> None:
    """Ask the app to resume an interrupted run; say plainly when that cannot happen."""
    if run.status is not RunStatus.INTERRUPTED:
        app.notify(
            f"run {run.id} is {run.status.value}; only an interrupted run can be resumed", severity="warning"
        )
        return
    resume = getattr(app, "resume_run", None)
    if not callable(resume):
        app.notify("resume: not available", severity="warning")
        return
    resume(run.id)


class RunsLoaded(Message):
    """The runs read from the journal, or why they could not be read."""

    def __init__(self, runs: list[RunRecord], error: str = "") -> None:
        super().__init__()
        self.runs, self.error = runs, error


COLUMNS = (
    ("Started", 19),
    ("Runbook", 26),
    ("Status", 11),
    ("Outcome", 10),
    ("Targets", 14),
    ("Started by", 16),
    ("Run", 22),
)
"""The runs table's columns and their widths (a run id is 22 characters; the runbook's is the widest)."""
RUNBOOK_MIN = 10
"""The runbook column's narrowest (its header and a short id)."""


class HistoryScreen(FittedFooterScreen[None]):
    """Past runs, most recent first; Enter opens one, R resumes an interrupted one."""

    CSS_PATH = Path(__file__).parent / "history.tcss"  # absolute: subclasses elsewhere find it too
    SUB_TITLE = "run history"
    AUTO_FOCUS = "#runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", priority=True, tooltip="Every step, output and approval of the run"),
        Binding("R", "resume", "Resume", tooltip="Go on with an interrupted run from where it stopped"),
        Binding("slash", "filter", "Filter", tooltip="Filter by runbook, host, status, who started it"),
        Binding("escape", "leave_filter", "Clear filter", show=False),
        Binding("f5", "refresh", "Refresh", show=False, tooltip="Read the journal again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunRecord] = []
        self.shown: list[RunRecord] = []
        self.error = ""
        self._widths: tuple[int, ...] = ()

    @property
    def cairn(self) -> CairnApp:
        """The app, with its configuration and journal."""
        return cast("CairnApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="history-filters"):
            yield Input(placeholder="/ filter: runbook, host, who", id="history-filter")
            yield Select[str]((), prompt="any status", id="history-status")
            yield Select[str]((), prompt="any runbook", id="history-runbook")
        yield DataTable[Text](id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("reading the journal…", id="history-summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._fit_columns()
        statuses = [(s.value, s.value) for s in RunStatus]
        self.query_one("#history-status", Select).set_options(statuses)

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    # ------------------------------------------------------------ reading

    def refresh_runs(self) -> None:
        """Read the runs from the journal again (in a thread)."""
        self._read_runs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="history")
    def _read_runs(self) -> None:
        from engine.core.errors import CairnError  # noqa: PLC0415

        app = self.cairn
        try:
            journal = app.open_journal()
            try:
                runs = journal.list_runs(limit=HISTORY_LIMIT)
            finally:
                journal.close()
        except CairnError as exc:
            self.post_message(RunsLoaded([], str(exc)))
            return
        self.post_message(RunsLoaded(runs))

    def _fit_columns(self) -> None:
        """Fixed widths (auto-sized columns were sometimes left at their headers' width after a refill), the
        runbook's as wide as the longest runbook id listed: at 80 columns the targets still show."""
        longest = max((len(run.runbook_id) for run in self.runs), default=0)
        widths = tuple(
            min(width, max(longest, RUNBOOK_MIN)) if label == "Runbook" else width for label, width in COLUMNS
        )
        if widths == self._widths:
            return
        self._widths = widths
        table = self.query_one("#runs", DataTable)
        table.clear(columns=True)
        for (label, _), width in zip(COLUMNS, widths, strict=True):
            table.add_column(label, width=width)

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.runs, self.error = message.runs, message.error
        self._fit_columns()
        runbooks = sorted({r.runbook_id for r in self.runs})
        choice = self.query_one("#history-runbook", Select)
        keep = choice.value
        choice.set_options([(r, r) for r in runbooks])
        if isinstance(keep, str) and keep in runbooks:
            choice.value = keep
        self._show()
        if any(r.status is RunStatus.RUNNING for r in self.runs):
            self.set_timer(LIVE_REFRESH, self._refresh_if_shown)

    def _refresh_if_shown(self) -> None:
        if self.is_current:
            self.refresh_runs()

    # ------------------------------------------------------------ filtering

    @on(Input.Changed, "#history-filter")
    @on(Select.Changed)
    def _filters_changed(self) -> None:
        self._show()

    def _show(self) -> None:
        words = self.query_one("#history-filter", Input).value.casefold().split()
        status = self.query_one("#history-status", Select).value
        runbook = self.query_one("#history-runbook", Select).value
        self.shown = [
            run
            for run in self.runs
            if (not isinstance(status, str) or run.status.value == status)
            and (not isinstance(runbook, str) or run.runbook_id == runbook)
            and all(word in run_haystack(run) for word in words)
        ]
        table = self.query_one("#runs", DataTable)
        keep = self.highlighted.id if self.highlighted else None
        table.clear()
        for run in self.shown:
            table.add_row(*self._cells(run), key=run.id)
        ids = [r.id for r in self.shown]
        if keep in ids:
            table.move_cursor(row=ids.index(keep), animate=False)
        self._summarise()

    @staticmethod
    def _cells(run: RunRecord) -> list[Text]:
        from engine.core.render import when  # noqa: PLC0415

        found = outcomes(run)
        outcome = Text(
            ", ".join(found) or "-", style=OUTCOME_STYLE.get(found[0], "") if len(found) == 1 else ""
        )
        cells = [
            Text(when(run.started_at)),
            Text(run.runbook_id, style="bold"),
            status_text(run),
            outcome,
            Text(hosts_text(run.hosts)),
            Text(started_by(run), style="dim"),
            Text(run.id, style="dim"),
        ]
        for cell in cells:  # a cell wider than its column ends in "…", not cut mid-word
            cell.overflow, cell.no_wrap = "ellipsis", True
        return cells

    def _summarise(self) -> None:
        summary = self.query_one("#history-summary", Static)
        if self.error:
            summary.update(Text(self.error, style="bold red"))
            return
        if not self.runs:
            summary.update("no runs in the journal yet; start one from the runbooks (F2)")
            return
        text = Text(f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}")
        if len(self.shown) != len(self.runs):
            text.append(f" · {len(self.shown)} shown")
        interrupted = sum(r.status is RunStatus.INTERRUPTED for r in self.runs)
        if interrupted:
            text.append(f" · {interrupted} interrupted (R resumes)", style="yellow")
        summary.update(text)

    @property
    def highlighted(self) -> RunRecord | None:
        """The run under the cursor."""
        table = self.query_one("#runs", DataTable)
        if not self.shown or not 0 <= table.cursor_row < len(self.shown):
            return None
        return self.shown[table.cursor_row]

    # ------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open" and self.focused is not None:
            # Enter opens the run, except in the status and runbook choices (it opens their list there).
            return not any(isinstance(node, Select) for node in self.focused.ancestors_with_self)
        return True

    @on(DataTable.RowSelected, "#runs")
    def action_open(self) -> None:
        """Open the highlighted run: every step, output and approval."""
        from tui.screens.run_detail import RunDetailScreen  # noqa: PLC0415

        run = self.highlighted
        if run is None:
            self.notify("no run to open", severity="warning")
            return
        self.app.push_screen(RunDetailScreen(run.id))

    def action_resume(self) -> None:
        run = self.highlighted
        if run is None:
            self.notify("no run to resume", severity="warning")
            return
        request_resume(self.app, run)

    def action_filter(self) -> None:
        self.query_one("#history-filter", Input).focus()

    def action_leave_filter(self) -> None:
        field = self.query_one("#history-filter", Input)
        if field.has_focus and field.value:
            field.value = ""
        else:
            self.query_one("#runs", DataTable).focus()

    def action_refresh(self) -> None:
        self.refresh_runs()
