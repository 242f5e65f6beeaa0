"""The Cairn TUI application: a thin shell over the screens, the runbook library and the journal.

``make_app(config)`` is the factory the CLI (``cairn tui``), the tests and the
benchmark use. The app owns what several screens share: the configuration, the
runbook library (loaded in a thread so the first frame is painted at once) and
a way to open the journal. Each screen lives in its own module under
``tui/screens/``; the modes are the runbook library, the run history and the alert queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from tui.config import CairnConfig
from tui.navigation import Navigation
from tui.screens.library import LibraryScreen

if TYPE_CHECKING:
    from textual.command import Provider

    from engine.core.journal_read import JournalReader
    from engine.core.loader import Library
    from engine.core.model import Runbook


class LibraryLoaded(Message):
    """Runbooks checked so far (``complete``: all of them) by the loading worker."""

    def __init__(self, library: Library, *, complete: bool, total: int) -> None:
        super().__init__()
        self.library, self.complete, self.total = library, complete, total


@cache
def runbook_commands() -> type[Provider]:
    """The palette's commands for each runbook: open its knowledge, run it, practise it on its lab.

    A factory, so that ``textual.command`` is imported when the palette first opens, not before
    the first paint.
    """
    from textual.command import DiscoveryHit, Hit, Hits, Provider  # noqa: PLC0415

    class RunbookCommands(Provider):
        """Palette commands for each runbook: open its knowledge, run it, practise it on its lab."""

        def _commands(self) -> list[tuple[str, str, Callable[[], None]]]:
            app = self.app
            if not isinstance(app, CairnApp) or app.library is None:
                return []
            from engine.lab.catalog import has_lab  # noqa: PLC0415

            commands: list[tuple[str, str, Callable[[], None]]] = []
            for runbook in app.library.runbooks:
                commands.append(
                    (f"Open runbook: {runbook.title}", runbook.id, partial(app.open_runbook, runbook.id))
                )
                commands.append((f"Run: {runbook.title}", runbook.id, partial(app.run_runbook, runbook)))
                if has_lab(runbook):  # a lab file beside it, or a bundled lab
                    practise = partial(app.practise_runbook, runbook)
                    commands.append((f"Practice: {runbook.title}", f"start the lab {runbook.id}", practise))
            return commands

        async def discover(self) -> Hits:
            for title, help_text, callback in self._commands():
                if title.startswith("Open runbook"):
                    yield DiscoveryHit(title, callback, help=help_text)

        async def search(self, query: str) -> Hits:
            matcher = self.matcher(query)
            for title, help_text, callback in self._commands():
                score = matcher.match(f"{title} {help_text}")
                if score > 0:
                    yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)

    return RunbookCommands


def _library_screen() -> Screen[Any]:
    return LibraryScreen()


def _history_screen() -> Screen[Any]:
    from tui.screens.history import HistoryScreen  # noqa: PLC0415 - not needed for the first paint

    return HistoryScreen()


def _queue_screen() -> Screen[Any]:
    from tui.screens.queue import QueueScreen  # noqa: PLC0415 - not needed for the first paint

    return QueueScreen()


class CairnApp(Navigation):
    """Browse the knowledge base, step through runbooks, read the journal."""

    TITLE = "Cairn"
    SUB_TITLE = "runbooks for on-call"
    CSS_PATH = Path(__file__).parent / "cairn.tcss"  # absolute: subclasses elsewhere find it too
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "runbooks": "library",
        "history": "history",
        "alerts": "queue",
    }
    SCREENS: ClassVar[dict[str, Callable[[], Screen[Any]]]] = {
        "library": _library_screen,
        "history": _history_screen,
        "queue": _queue_screen,
    }
    DEFAULT_MODE = "runbooks"
    COMMANDS = App.COMMANDS | {runbook_commands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2", "show('runbooks')", "Runbooks", tooltip="The runbook library"),
        Binding("f3", "show('history')", "History", tooltip="Past runs from the journal"),
        Binding("f6", "show('alerts')", "Alerts", tooltip="Alerts from cairn serve; approve, decline"),
        Binding("f7", "back_to_run", "Back to run", tooltip="The run in progress (it went on behind)"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    library: var[Library | None] = var(None, always_update=True)
    """The runbook library; while ``library_loading``, the files checked so far. ``None`` before the first batch."""

    def __init__(self, config: CairnConfig) -> None:
        super().__init__()
        self.config = config
        self.library_loading = True
        self.library_total = 0
        """How many runbook files the library has (known once the folders are listed)."""

    def on_mount(self) -> None:
        # After the first frame: the loading thread's imports would otherwise compete with it.
        self.call_after_refresh(self.reload_library)

    # ------------------------------------------------------------ shared with the screens

    def open_journal(self) -> JournalReader:
        """The journal the CLI would use (``--journal``, ``$CAIRN_JOURNAL`` or the default), opened to read
        (it never writes: history on a full disk still works); close it after use."""
        from engine.core.journal_read import JournalReader  # noqa: PLC0415

        return JournalReader(self.config.journal_location)

    def reload_library(self) -> None:
        """Read the runbook folders again (in a thread; the screens follow ``library``)."""
        self.library_loading = True
        self._load_library()

    @work(thread=True, exclusive=True, exit_on_error=False, group="library")
    def _load_library(self) -> None:
        """Check every runbook file, posting the results in batches so the first ones show at once."""
        from engine.core.loader import load_library_batches  # noqa: PLC0415

        worker = get_current_worker()
        # The first dozen files at once, then a batch a second (the loader's defaults).
        for batch in load_library_batches(self.config.runbook_dirs, cancelled=lambda: worker.is_cancelled):
            self.post_message(LibraryLoaded(batch.library, complete=batch.complete, total=batch.total))

    def on_library_loaded(self, message: LibraryLoaded) -> None:
        self.library_total = message.total
        self.library_loading = not message.complete
        self.library = message.library

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "library" and event.state is WorkerState.ERROR:
            self.library_loading = False
            self.notify(
                f"could not read the runbooks: {event.worker.error}",
                severity="error",
                timeout=15,
                markup=False,
            )
            self.library = self.library  # the screens stop saying "loading"

    # ------------------------------------------------------------ practice labs

    def action_stop_labs(self) -> None:
        """Stop every practice lab under the lab folder (``cairn lab down``)."""
        self.notify("stopping the practice labs…")
        self._stop_labs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="labs")
    def _stop_labs(self) -> None:
        from engine.lab.base import LabError  # noqa: PLC0415
        from engine.lab.lifecycle import LabRoot  # noqa: PLC0415

        try:
            stopped = LabRoot(self.config.lab_root).down()
        except (LabError, OSError) as exc:
            self.call_from_thread(
                self.notify, f"could not stop the labs: {exc}", severity="error", timeout=15, markup=False
            )
            return
        text = f"stopped: {', '.join(s.name for s in stopped)}" if stopped else "no practice lab was up"
        self.call_from_thread(self.notify, text)
        for lab in stopped:
            if lab.teardown is not None and not lab.teardown.ok:
                self.call_from_thread(
                    self.notify,
                    f"lab {lab.name}: {lab.teardown.describe()}; undo by hand what its setup made outside its folder",
                    severity="error",
                    timeout=15,
                    markup=False,
                )

    # ------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        run = self.run_screen
        if run is not None and run not in self.screen_stack:
            yield SystemCommand(
                "Back to the run", f"The run of {run.spec.runbook.id} (F7)", self.action_back_to_run
            )
        yield SystemCommand("Runbooks", "The runbook library: browse, filter, run (F2)", self._show_runbooks)
        yield SystemCommand("History", "Past runs from the journal (F3)", self._show_history)
        yield SystemCommand("Alerts", "The alert queue: approve, decline (F6)", self._show_alerts)
        yield SystemCommand("Reload runbooks", "Read the runbook folders again", self.reload_library)
        yield SystemCommand(
            "Stop practice labs", "Stop every lab started for practice", self.action_stop_labs
        )
        yield from super().get_system_commands(screen)

    def _show_runbooks(self) -> None:
        self.action_show("runbooks")

    def _show_history(self) -> None:
        self.action_show("history")

    def _show_alerts(self) -> None:
        self.action_show("alerts")

    def library_screen(self) -> LibraryScreen:
        """The library screen (installed once, kept while the app runs)."""
        screen = self.get_screen("library")
        assert isinstance(screen, LibraryScreen)
        return screen

    def open_runbook(self, runbook_id: str) -> None:
        """Show a runbook's knowledge in the library."""
        self.action_show("runbooks")
        self.library_screen().show(runbook_id)

    def run_runbook(self, runbook: Runbook) -> None:
        """Set up a run of ``runbook`` (from the library, so Esc comes back to it)."""
        self.action_show("runbooks")
        self.library_screen().open_setup(runbook)

    def practise_runbook(self, runbook: Runbook) -> None:
        """Start the runbook's practice lab and set up a run against it (from the library's own screen)."""
        self.action_show("runbooks")
        self.library_screen().practise(runbook)

    # ------------------------------------------------------------ resume (as `cairn resume`)

    def resume_run(self, run_id: str) -> None:
        """Go on with an interrupted run from where it stopped: its finished steps are reused, the rest runs."""
        running = self.run_in_progress()
        if running is not None:
            self.notify(
                f"a run of {running.spec.runbook.id} is in progress: finish or cancel it first (F7 goes back to it)",
                severity="warning",
                markup=False,
            )
            return
        self.notify(f"resuming run {run_id}…")
        self._prepare_resume(run_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="resume")
    def _prepare_resume(self, run_id: str) -> None:
        from engine.core.errors import CairnError  # noqa: PLC0415
        from tui.screens.run import RunScreen, resume_spec  # noqa: PLC0415

        journal = self.open_journal()
        try:
            spec = resume_spec(journal.get_run(run_id), self.config)
        except CairnError as exc:  # a secret to give again, a host the inventory lost, ...
            self.call_from_thread(
                self.notify,
                f"cannot resume {run_id} here: {exc} (the CLI can: cairn resume {run_id} -e NAME=VALUE)",
                severity="error",
                timeout=20,
                markup=False,
            )
            return
        finally:
            journal.close()
        self.call_from_thread(self.push_screen, RunScreen(spec, self.config))


def make_app(config: CairnConfig) -> CairnApp:
    """The app for ``config``: used by ``cairn tui``, the tests and the benchmark."""
    return CairnApp(config)


def run_app(config: CairnConfig) -> int:
    """Run the TUI in this terminal until the user quits; the exit code of ``cairn tui``."""
    make_app(config).run()
    return 0
