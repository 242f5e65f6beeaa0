"""Alerts: the queue ``cairn serve`` fills from Alertmanager; approve or decline what waits for a human.

Decisions are this process's account (its uid, never ``$USER``), judged by the entry's approval
policy (:meth:`~engine.core.alert_queue.AlertQueue.decide`): a refusal is said with its reason, a
counted approval with the quorum so far. An entry's row and detail are drawn by
:mod:`tui.screens.queue_entry`; the approve and decline dialogs are in :mod:`tui.screens.queue_dialogs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import get_current_worker

from engine.core.alert_queue import Action, AlertQueue, Decided, Entry, EntryState
from engine.core.errors import CairnError
from engine.core.identity import Identity, Via, local_identity
from engine.core.queue_decisions import Decisions, read_decisions
from engine.core.queue_read import QueueReader
from engine.core.store.location import Location
from tui.screens.fitted_footer import FittedFooterScreen
from tui.screens.queue_dialogs import ApproveScreen, DeclineScreen
from tui.screens.queue_entry import cells, entry_detail, why_not_waiting

if TYPE_CHECKING:
    from tui.app import CairnApp

STYLESHEET = Path(__file__).parent / "queue.tcss"
"""The queue's rules (absolute: subclasses elsewhere find it too); its dialogs have their own."""
REFRESH_SECONDS = 2.0
"""Seconds between re-reads of the queue while the screen is shown (new alerts appear by themselves)."""
ENDED_SHOWN = 50
"""Ended entries (done, declined, expired, cancelled, failed) listed, newest first."""
WAITING, PENDING = (EntryState.ESCALATED,), (EntryState.QUEUED, EntryState.RUNNING)  # as `cairn queue`
ENDED = (EntryState.DONE, EntryState.DECLINED, EntryState.EXPIRED, EntryState.CANCELLED, EntryState.FAILED)
COLUMNS = (
    ("State", 10),
    ("Received", 11),
    ("Runbook", 18),
    ("Target", 12),
    ("Note", 44),
    ("Alert", 36),
    ("Run", 22),
)
"""The table's columns and widths: the note (why the entry is where it is) before the long ones."""
EMPTY = (
    "No alerts in the queue.\n\n"
    "Alerts get here from `cairn serve`: point an Alertmanager webhook receiver at it, and every alert "
    "a runbook's `triggers` match is queued here, detected and diagnosed on its target. When a "
    "remediation needs a human, the entry waits here for you to approve (y) or decline (n).\n"
    'See "Alerts" in the README.'
)


def listed(entries: list[Entry]) -> list[Entry]:
    """Waiting for a human first (longest waiting first), then queued and running, then the last ended.

    Each entry once, as last updated: the waiting and the ended entries are read by two queries, and
    an entry decided between them (declined in this very screen) comes back from both.
    """
    latest: dict[int, Entry] = {}
    for entry in entries:
        if entry.id not in latest or entry.updated_at >= latest[entry.id].updated_at:
            latest[entry.id] = entry
    entries = list(latest.values())
    order = {state: index for index, state in enumerate((*WAITING, *PENDING))}
    active = sorted((e for e in entries if e.state in order), key=lambda e: (order[e.state], e.id))
    ended = sorted((e for e in entries if e.state in ENDED), key=lambda e: (-e.updated_at, -e.id))
    return active + ended[:ENDED_SHOWN]


class EntriesRead(Message):
    """The queue as read in a thread (with each entry's decisions), or why it could not be read."""

    def __init__(
        self,
        entries: list[Entry],
        error: str = "",
        ended: int = 0,
        decisions: dict[int, Decisions] | None = None,
    ) -> None:
        super().__init__()
        self.entries, self.error = entries, error
        self.ended = ended
        """How many entries have ended (only the last ``ENDED_SHOWN`` are read)."""
        self.decisions = decisions or {}


class DecisionMade(Message):
    """An approval or a decline done in a thread: what the policy made of it, or why it could not be made."""

    def __init__(self, decided: Decided | None, error: str = "") -> None:
        super().__init__()
        self.decided, self.error = decided, error


class QueueScreen(FittedFooterScreen[None]):
    """The alert queue: what waits for a human first; y approves, n declines, Enter opens the run."""

    CSS_PATH = STYLESHEET
    SUB_TITLE = "alert queue"
    AUTO_FOCUS = "#queue-entries"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "approve", "Approve", tooltip="Approve the waiting remediation (asks first)"),
        Binding("n", "decline", "Decline", tooltip="End the waiting entry without remediating"),
        # Hidden, so that F6 still fits an 80-column footer; the pane under the table says Enter opens the run.
        Binding("enter", "open", "Run", priority=True, show=False, tooltip="The entry's run, step by step"),
        Binding("f5", "refresh", "Refresh", show=False, tooltip="Read the queue again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] = []
        self.ended = 0
        self.shown: list[Entry] = []
        self.decisions: dict[int, Decisions] = {}
        self.error = ""
        self.me: Identity = local_identity(Via.TUI)
        """Who decides in this TUI: the account of this process's uid."""

    @property
    def cairn(self) -> CairnApp:
        """The app, with its configuration."""
        return cast("CairnApp", self.app)

    @property
    def queue_location(self) -> Location:
        """The store the queue lives in, as ``cairn serve`` and ``cairn approve`` use it: the TUI's
        journal (a file or a PostgreSQL database), else ``$CAIRN_JOURNAL`` or the default file."""
        return self.cairn.config.journal_location

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading the queue…", id="queue-summary")
        yield DataTable[Text](id="queue-entries", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="queue-detail-scroll"):
            yield Static(id="queue-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#queue-entries", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        self.set_interval(REFRESH_SECONDS, self._refresh_if_shown)

    def on_screen_resume(self) -> None:
        self.refresh_entries()

    # ------------------------------------------------------------ reading

    def refresh_entries(self) -> None:
        """Read the queue again (in a thread)."""
        self._read_entries()

    def _refresh_if_shown(self) -> None:
        if self.is_current:  # not while another mode or the run's details are shown
            self.refresh_entries()

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue-read")
    def _read_entries(self) -> None:
        try:
            queue = QueueReader(self.queue_location)  # reads only: never writes the journal's database
            try:
                entries = queue.entries(*WAITING, *PENDING) + queue.recent(*ENDED, limit=ENDED_SHOWN)
                ended = queue.count(*ENDED)
                decisions = read_decisions(queue, listed(entries))
            finally:
                queue.close()
        except CairnError as exc:
            message = EntriesRead([], str(exc))
        else:
            message = EntriesRead(entries, ended=ended, decisions=decisions)
        if not get_current_worker().is_cancelled:  # a newer read is on its way
            self.post_message(message)

    def on_entries_read(self, message: EntriesRead) -> None:
        self.entries, self.error = message.entries, message.error
        self.ended = message.ended
        self.decisions = message.decisions
        shown = listed(self.entries)
        if shown != self.shown:  # the same entries again: leave the cursor and the scroll alone
            self._fill(shown)
        self._summarise()
        self._show_entry()

    def _fill(self, shown: list[Entry]) -> None:
        """Refill the table, the cursor staying on the same entry (it moves when escalations come and go)."""
        table = self.query_one("#queue-entries", DataTable)
        kept = self.highlighted
        self.shown = shown
        table.clear()
        for entry in shown:
            table.add_row(*cells(entry), key=str(entry.id))
        ids = [e.id for e in shown]
        if kept is not None and kept.id in ids:
            table.move_cursor(row=ids.index(kept.id), animate=False)

    def _summarise(self) -> None:
        summary = self.query_one("#queue-summary", Static)
        if self.error:
            summary.update(Text(self.error, style="bold red"))
            return
        if not self.entries:
            summary.update("the queue is empty: alerts come from `cairn serve` (see below)")
            return
        counts = {state: sum(e.state is state for e in self.entries) for state in EntryState}
        waiting = counts[EntryState.ESCALATED]
        text = Text()
        if waiting:
            text.append(f"{waiting} waiting for a human", style="bold black on yellow")
        else:
            text.append("nothing waits for a human")
        text.append(f" · {counts[EntryState.QUEUED]} queued · {counts[EntryState.RUNNING]} running")
        ended = self.ended
        text.append(f" · {ended} ended" + (f" (last {ENDED_SHOWN} shown)" if ended > ENDED_SHOWN else ""))
        summary.update(text)

    @property
    def highlighted(self) -> Entry | None:
        """The entry under the cursor."""
        row = self.query_one("#queue-entries", DataTable).cursor_row
        return self.shown[row] if self.shown and 0 <= row < len(self.shown) else None

    @on(DataTable.RowHighlighted, "#queue-entries")
    def _show_entry(self) -> None:
        detail = self.query_one("#queue-detail", Static)
        entry = self.highlighted
        if entry is not None:
            detail.update(entry_detail(entry, self.decisions.get(entry.id)))
        else:
            detail.update("" if self.error else EMPTY)

    # ------------------------------------------------------------ actions

    def _waiting(self, verb: str) -> Entry | None:
        """The highlighted entry if a human can ``verb`` it; else say why not."""
        entry = self.highlighted
        if entry is None:
            self.notify(f"no entry to {verb}", severity="warning")
        elif entry.state is not EntryState.ESCALATED or not entry.run_id:
            self.notify(why_not_waiting(entry, verb), severity="warning", markup=False)
        else:
            return entry
        return None

    def action_approve(self) -> None:
        """Ask (saying who you are and the quorum so far), then approve the highlighted entry's remediation."""
        entry = self._waiting("approve")
        if entry is None:
            return

        def answered(approve: bool | None) -> None:
            if approve:
                self._decide(entry, Action.APPROVE)

        self.app.push_screen(ApproveScreen(entry, self.me, self.decisions.get(entry.id)), answered)

    def action_decline(self) -> None:
        """Ask for a reason, then decline the highlighted entry's remediation."""
        entry = self._waiting("decline")
        if entry is None:
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._decide(entry, Action.DECLINE, reason=reason)

        self.app.push_screen(DeclineScreen(entry), answered)

    @work(thread=True, exit_on_error=False, group="queue-decide")
    def _decide(self, entry: Entry, action: Action, *, reason: str = "") -> None:
        assert entry.run_id  # _waiting checked: an empty prefix would match every entry
        try:
            queue = AlertQueue(self.queue_location)
            try:
                decided = queue.decide(entry.run_id, self.me, action, reason=reason)
            finally:
                queue.close()
        except CairnError as exc:  # the store could not be written, or the run is gone: the engine says so
            self.post_message(DecisionMade(None, str(exc)))
            return
        self.post_message(DecisionMade(decided))

    def on_decision_made(self, message: DecisionMade) -> None:
        decided = message.decided
        if decided is None:
            self.notify(message.error, severity="error", timeout=15, markup=False)
            self.refresh_entries()
            return
        entry = decided.entry
        about = f"{entry.runbook_id} on {entry.target} (entry {entry.id})"
        if decided.refused:  # not allowed, or decided meanwhile (another human, the alert resolved)
            self.notify(f"refused: {about}: {decided.message}", severity="error", timeout=15, markup=False)
        elif entry.state is EntryState.QUEUED:
            self.notify(
                f"approved: {about} is queued again; its next run checks again, then remediates"
                f" ({decided.progress.describe()})",
                markup=False,
            )
        elif entry.state is EntryState.ESCALATED:
            self.notify(f"{about}: {decided.message}", markup=False)
        else:
            self.notify(f"declined: entry {entry.id} ({entry.note})", markup=False)
        self.refresh_entries()

    @on(DataTable.RowSelected, "#queue-entries")
    def action_open(self) -> None:
        """Open the highlighted entry's run: every step, output and approval."""
        from tui.screens.run_detail import RunDetailScreen  # noqa: PLC0415

        entry = self.highlighted
        if entry is None:
            self.notify("no entry, so no run to open", severity="warning")
        elif not entry.run_id:
            self.notify(f"entry {entry.id} has no run yet: {entry.note or entry.state.value}", markup=False)
        else:
            self.app.push_screen(RunDetailScreen(entry.run_id))

    def action_refresh(self) -> None:
        self.refresh_entries()
