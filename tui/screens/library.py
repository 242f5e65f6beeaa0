"""The library (the default screen): every runbook, type to filter, its knowledge beside it, run or practise it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from tui.models.library import EntryCache
from tui.screens.fitted_footer import FittedFooterScreen
from tui.widgets.knowledge import KnowledgePane
from tui.widgets.runbook_table import RunbookTable

if TYPE_CHECKING:
    from engine.core.loader import Library
    from engine.core.model import Runbook
    from tui.app import CairnApp
    from tui.screens.run import RunScreen

KNOWLEDGE_DELAY = 0.08
"""Seconds the cursor rests on a row before its knowledge is rendered (holding an arrow key stays quick)."""


class LabReady(Message):
    """The practice lab for a runbook is up (started now, or already running)."""

    def __init__(self, runbook: Runbook, inventory: str, inputs: dict[str, Any], reused: bool) -> None:
        super().__init__()
        self.runbook, self.inventory, self.inputs, self.reused = runbook, inventory, inputs, reused


class LabFailed(Message):
    """The practice lab could not be started; ``error`` says why and what to do."""

    def __init__(self, runbook_id: str, error: str) -> None:
        super().__init__()
        self.runbook_id, self.error = runbook_id, error


class LibraryScreen(FittedFooterScreen[None]):
    """Browse and filter the runbooks; Enter sets up a run, F4 practises on the runbook's lab."""

    CSS_PATH = Path(__file__).parent / "library.tcss"  # absolute: subclasses elsewhere find it too
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - Textual declares it so
    AUTO_FOCUS = "#filter"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "run", "Run", priority=True, tooltip="Set up a run of the highlighted runbook"),
        Binding("f4", "practise", "Practice", tooltip="Start the runbook's lab and step through it there"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("f5", "reload", "Reload", show=False, tooltip="Read the runbook folders again"),
        Binding("down", "cursor('down')", show=False),
        Binding("up", "cursor('up')", show=False),
        Binding("pagedown", "cursor('page_down')", show=False),
        Binding("pageup", "cursor('page_up')", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._knowledge_timer: Timer | None = None
        self._entries = EntryCache()
        self.lab_starting: str | None = None
        """The runbook whose lab is being started, if any."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="run-banner", markup=False)
        with Horizontal(id="library-body"):
            with Vertical(id="library-list"):
                yield Input(placeholder="type to filter: title, tag, symptom, alert name", id="filter")
                yield RunbookTable(id="runbooks")
                yield Static("loading runbooks…", id="library-status")
                yield Static(id="lab-status")
            yield KnowledgePane(id="knowledge")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#knowledge", KnowledgePane).border_title = "Knowledge"
        self.query_one("#lab-status").display = False
        self.watch(self.app, "library", self._library_changed)
        self.watch(self.app, "run_screen", self._run_changed)

    def on_screen_resume(self) -> None:
        self._run_changed(self.cairn.run_screen)

    def _run_changed(self, run: RunScreen | None) -> None:
        """Say that a run goes on behind (or ended there) and how to go back to it."""
        banner = self.query_one("#run-banner", Static)
        banner.display = run is not None and not run.is_current
        if run is None:
            return
        # The key first: on a narrow screen the end of the line is what gets cut.
        runbook = run.spec.runbook.id
        if run.ended:
            banner.update(
                f"F7: the verdict of the run of {runbook}, which has ended (the history has it too)"
            )
        elif run.waits_for_approval:
            banner.update(f"F7: back to the run of {runbook}, which waits for your approval")
        else:
            hosts = len(run.spec.hosts)
            banner.update(
                f"F7: back to the run of {runbook}, in progress on {hosts} host{'s' if hosts > 1 else ''}"
            )

    # ------------------------------------------------------------ the list

    @property
    def cairn(self) -> CairnApp:
        """The app, with its library and configuration."""
        return cast("CairnApp", self.app)

    @property
    def table(self) -> RunbookTable:
        return self.query_one("#runbooks", RunbookTable)

    @property
    def knowledge(self) -> KnowledgePane:
        return self.query_one("#knowledge", KnowledgePane)

    @property
    def query_text(self) -> str:
        return self.query_one("#filter", Input).value

    def _library_changed(self, library: Library | None) -> None:
        if library is not None:
            self.table.show(self._entries.entries(library), self.query_text)
        self._update_status()
        self._schedule_knowledge(immediately=self.knowledge.shown_key is None)

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.table.show(self.table.entries, self.query_text)
        self._update_status()
        self._schedule_knowledge()

    @on(DataTable.RowHighlighted, "#runbooks")
    def _row_highlighted(self) -> None:
        self._schedule_knowledge()

    def _update_status(self) -> None:
        app = self.cairn
        library: Library | None = app.library
        status = self.query_one("#library-status", Static)
        if library is None:
            status.update("loading runbooks…" if app.library_loading else "the runbooks could not be read")
            return
        valid, invalid = len(library.runbooks), len(library.invalid)
        parts = [f"{valid} runbook{'s' if valid != 1 else ''}"]
        if invalid:
            parts.append(f"[b red]{invalid} invalid[/]")
        if len(self.table.shown) != len(self.table.entries):
            shown = len(self.table.shown)
            parts.append(f"{shown} match{'es' if shown != 1 else ''}")
        if app.library_loading:
            parts.append(f"loading… {len(library.results)} of {app.library_total} files")
        status.update(" · ".join(parts))

    def _schedule_knowledge(self, *, immediately: bool = False) -> None:
        if self._knowledge_timer is not None:
            self._knowledge_timer.stop()
            self._knowledge_timer = None
        if immediately:
            self._show_knowledge()
        else:
            self._knowledge_timer = self.set_timer(KNOWLEDGE_DELAY, self._show_knowledge)

    def _show_knowledge(self) -> None:
        self._knowledge_timer = None
        entry = self.table.highlighted
        app = self.cairn
        if entry is None:
            if app.library is None or (app.library_loading and not self.table.entries):
                self.knowledge.show_message("Loading the runbooks…")
            elif not self.table.entries:
                folders = ", ".join(str(d) for d in self.cairn.config.runbook_dirs)
                self.knowledge.show_message(f"No runbook files (`*.yaml`, `*.yml`) under {folders}.")
            else:
                self.knowledge.show_message(f"No runbook matches “{self.query_text}”. Esc clears the filter.")
        elif entry.runbook is not None:
            self.knowledge.show_runbook(entry.runbook)
        elif entry.invalid is not None:
            self.knowledge.show_invalid(entry.key, entry.invalid)

    def show(self, runbook_id: str) -> None:
        """Highlight a runbook (clearing the filter if it hides it) and show its knowledge."""
        if not self.table.select_key(runbook_id):
            self.query_one("#filter", Input).value = ""
            self.table.show(self.table.entries, "")
            self.table.select_key(runbook_id)
            self._update_status()
        self._schedule_knowledge(immediately=True)

    # ------------------------------------------------------------ actions

    def action_cursor(self, move: str) -> None:
        """Move the table's cursor while the filter keeps the focus."""
        table = self.table
        {
            "up": table.action_cursor_up,
            "down": table.action_cursor_down,
            "page_up": table.action_page_up,
            "page_down": table.action_page_down,
        }[move]()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""

    def action_reload(self) -> None:
        self.cairn.reload_library()

    def _highlighted_runbook(self, what: str) -> Runbook | None:
        entry = self.table.highlighted
        if entry is None:
            self.notify(f"no runbook to {what}: none is highlighted", severity="warning")
            return None
        if entry.runbook is None:
            name = entry.invalid.declared_id if entry.invalid and entry.invalid.declared_id else "this file"
            self.notify(f"{name} is invalid: it cannot run until its problems are fixed", severity="error")
            return None
        return entry.runbook

    def action_run(self) -> None:
        runbook = self._highlighted_runbook("run")
        if runbook is not None:
            self.open_setup(runbook)

    def open_setup(self, runbook: Runbook, **given: Any) -> None:
        """Set up a run of ``runbook`` (targets, inputs, the plan) on top of the library."""
        from tui.screens.setup import RunSetupScreen  # noqa: PLC0415

        if not self.is_current:
            self.notify("a run is open: leave it first (Esc) to start another", severity="warning")
            return
        running = self.cairn.run_in_progress()
        if running is not None:  # one run at a time: its keys, its approvals, its knowledge are unambiguous
            self.notify(
                f"a run of {running.spec.runbook.id} is in progress: finish or cancel it first "
                "(F7 goes back to it)",
                severity="warning",
                markup=False,
            )
            return
        self.app.push_screen(RunSetupScreen(runbook, **given))

    def action_practise(self) -> None:
        runbook = self._highlighted_runbook("practise")
        if runbook is not None:
            self.practise(runbook)

    # ------------------------------------------------------------ practice labs

    def practise(self, runbook: Runbook) -> None:
        """Start (or reuse) the runbook's practice lab (declared beside it, or bundled), then set up a run against it."""
        from engine.lab.catalog import has_lab  # noqa: PLC0415
        from engine.lab.lifecycle import LABS  # noqa: PLC0415

        if not has_lab(runbook):
            self.notify(
                f"{runbook.id} has no practice lab; declare one beside it in "
                f"{Path(runbook.source_path or runbook.id).with_suffix('.lab.yaml').name} "
                f"(docs/labs.md). Bundled labs exist for: {', '.join(LABS)}",
                severity="warning",
                timeout=8,
                markup=False,
            )
            return
        if self.lab_starting:
            self.notify(f"the lab for {self.lab_starting} is still starting", severity="warning")
            return
        self.lab_starting = runbook.id
        self._lab_status(f"starting the practice lab for {runbook.id}…")
        self._start_lab(runbook)

    def _lab_status(self, text: str | Text) -> None:
        status = self.query_one("#lab-status", Static)
        status.update(text)
        status.display = bool(text.plain if isinstance(text, Text) else text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="practice")
    def _start_lab(self, runbook: Runbook) -> None:
        import yaml  # noqa: PLC0415

        from engine.lab.base import LabError  # noqa: PLC0415
        from engine.lab.catalog import lab_for  # noqa: PLC0415
        from engine.lab.lifecycle import LabRoot  # noqa: PLC0415

        try:
            root = LabRoot(self.cairn.config.lab_root)
            info = root.get(runbook.id)
            reused = info is not None and all(info.running().values())
            if info is not None and not reused:  # some of its processes died: build it again
                root.down([runbook.id])
            if info is None or not reused:
                lab = lab_for(runbook)
                if lab is None:  # its lab file went away since F4 was pressed
                    raise LabError(f"{runbook.id} has no practice lab any more")
                info = root.up(lab)
            inputs = yaml.safe_load(info.inputs.read_text(encoding="utf-8")) or {}
        except (LabError, OSError, yaml.YAMLError) as exc:
            self.post_message(LabFailed(runbook.id, str(exc)))
            return
        except Exception as exc:  # a bug in a lab: say so in the app rather than end it
            self.post_message(LabFailed(runbook.id, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(LabReady(runbook, str(info.inventory), dict(inputs), reused))

    def on_lab_ready(self, message: LabReady) -> None:
        self.lab_starting = None
        self._lab_status("")
        runbook = message.runbook
        state = "already up" if message.reused else "up"
        self.notify(f"practice lab {runbook.id} is {state}; stop it from the palette: Stop practice labs")
        if not self.is_current:
            self.notify(f"back in the library, F4 on {runbook.id} practises on its lab")
            return
        self.open_setup(runbook, inventory=(message.inventory,), inputs=message.inputs, practice=runbook.id)

    def on_lab_failed(self, message: LabFailed) -> None:
        self.lab_starting = None
        self._lab_status(
            Text.assemble((f"lab {message.runbook_id} did not start: ", "bold red"), message.error)
        )
        self.notify(
            f"lab {message.runbook_id} did not start: {message.error}",
            severity="error",
            timeout=15,
            markup=False,
        )
