"""Alerts: the queue ``cairn serve`` fills from Alertmanager; approve or decline what waits for a human.

The approve and decline dialogs are in :mod:`tui.screens.queue_dialogs`.
"""

from __future__ import annotations

import time
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

from engine.core.alert_queue import WAITS_FOR_A_HUMAN, AlertQueue, Entry, EntryState
from engine.core.errors import CairnError
from engine.core.queue_read import QueueReader
from engine.core.records import alert_summary
from engine.core.render import when
from engine.core.store.location import Location
from tui.screens.fitted_footer import FittedFooterScreen
from tui.screens.queue_dialogs import ApproveScreen, DeclineScreen

if TYPE_CHECKING:
    from tui.app import CairnApp

STYLESHEET = Path(__file__).parent / "queue.tcss"
"""The queue's rules (absolute: subclasses elsewhere find it too); its dialogs have their own."""
REFRESH_SECONDS = 2.0
"""Seconds between re-reads of the queue while the screen is shown (new alerts appear by themselves)."""
ENDED_SHOWN = 50
"""Ended entries (done, declined, cancelled, failed) listed, newest first."""
WAITING, PENDING = (EntryState.ESCALATED,), (EntryState.QUEUED, EntryState.RUNNING)  # as `cairn queue`
ENDED = (EntryState.DONE, EntryState.DECLINED, EntryState.CANCELLED, EntryState.FAILED)
STATE_STYLE = {
    EntryState.ESCALATED: "bold black on yellow",
    EntryState.QUEUED: "cyan",
    EntryState.RUNNING: "bold cyan",
    EntryState.DONE: "green",
    EntryState.DECLINED: "magenta",
    EntryState.CANCELLED: "dim",
    EntryState.FAILED: "bold red",
}
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


def text_map(value: object) -> dict[str, str]:
    """A labels or annotations mapping of an alert as strings (an alert is JSON: be lenient)."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


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


def received_text(at: float, now: float | None = None) -> str:
    """``10:37:41`` today, ``11-28 10:37`` before (local time; the pane below has the full date)."""
    today = time.localtime(now).tm_yday, time.localtime(now).tm_year
    stamp = time.localtime(at)
    return time.strftime("%H:%M:%S" if (stamp.tm_yday, stamp.tm_year) == today else "%m-%d %H:%M", stamp)


def cells(entry: Entry) -> tuple[Text, ...]:
    """One row; an escalated row is bold from end to end, its note without "remediation waits for a human"
    (the state says it; the pane below has the whole note)."""
    bold = "bold" if entry.state is EntryState.ESCALATED else ""
    annotations = text_map(entry.alert.get("annotations"))
    alert = alert_summary(entry.alert) + (
        f" — {annotations['summary']}" if annotations.get("summary") else ""
    )
    row = (
        Text(entry.state.value, style=STATE_STYLE.get(entry.state, "")),
        Text(received_text(entry.received_at), style=bold),
        Text(entry.runbook_id, style="bold"),
        Text(entry.target, style=bold),
        Text(" ".join(entry.note.removeprefix(WAITS_FOR_A_HUMAN).split()), style=bold or "dim"),
        Text(alert),
        Text(entry.run_id or "-", style="dim"),
    )
    for cell in row:  # a cell wider than its column ends in "…", not cut mid-word
        cell.overflow, cell.no_wrap = "ellipsis", True
    return row


def entry_detail(entry: Entry) -> Text:
    """Everything the queue holds about one entry, for the pane under the table."""
    text = Text.assemble(
        (entry.state.value, STATE_STYLE.get(entry.state, "")),
        (f"  entry {entry.id} · ", "dim"),
        (entry.runbook_id, "bold"),
        " on ",
        (entry.target, "bold"),
    )
    if entry.state is EntryState.ESCALATED and entry.run_id:
        text.append(
            "\nwaiting for a human: y approves (the next run checks again, then remediates), n declines",
            style="bold yellow",
        )
    elif entry.state is EntryState.ESCALATED:
        text.append(
            "\nit could not run at all: fix what the note says; it ends when the alert resolves", "yellow"
        )
    text.append(f"\n{entry.note or '(no note)'}")
    text.append(f"\nreceived {when(entry.received_at)} · updated {when(entry.updated_at)}", style="dim")
    run = f"run {entry.run_id} (Enter opens it)" if entry.run_id else "no run yet"
    text.append(f"\n{run}")
    if entry.holder:
        text.append(f"\nheld by server {entry.holder} (it runs it)", style="cyan")
    if entry.approved_by:
        text.append(f"\napproved by {entry.approved_by}", style="green")
    alert_status = str(entry.alert.get("status", ""))
    text.append(f"\n\nalert ({alert_status or 'status unknown'}) · fingerprint {entry.fingerprint}\n", "bold")
    for title, mapping in (
        ("labels", text_map(entry.alert.get("labels"))),
        ("annotations", text_map(entry.alert.get("annotations"))),
    ):
        text.append(f"{title}\n", style="underline")
        text.append("".join(f"  {k}: {v}\n" for k, v in mapping.items()) or "  -\n")
    if entry.alert.get("startsAt"):
        text.append(f"starts at {entry.alert['startsAt']}", style="dim")
    return text


def why_not_waiting(entry: Entry, verb: str) -> str:
    """What ``verb`` (approve, decline) cannot do on ``entry``, and why."""
    if entry.state is not EntryState.ESCALATED:
        note = f" ({entry.note})" if entry.note else ""
        return f"entry {entry.id} is {entry.state.value}, not waiting for a human: nothing to {verb}{note}"
    return (
        f"entry {entry.id} never got a run, so there is nothing to {verb} here: {entry.note}"
        " (it ends when the alert resolves)"
    )


class EntriesRead(Message):
    """The queue as read in a thread, or why it could not be read."""

    def __init__(self, entries: list[Entry], error: str = "", ended: int = 0) -> None:
        super().__init__()
        self.entries, self.error = entries, error
        self.ended = ended
        """How many entries have ended (only the last ``ENDED_SHOWN`` are read)."""


class Decided(Message):
    """An approval or a decline done in a thread: the entry as it is now, or the engine's refusal."""

    def __init__(self, entry: Entry | None, error: str = "") -> None:
        super().__init__()
        self.entry, self.error = entry, error


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
        self.error = ""

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
            finally:
                queue.close()
        except CairnError as exc:
            message = EntriesRead([], str(exc))
        else:
            message = EntriesRead(entries, ended=ended)
        if not get_current_worker().is_cancelled:  # a newer read is on its way
            self.post_message(message)

    def on_entries_read(self, message: EntriesRead) -> None:
        self.entries, self.error = message.entries, message.error
        self.ended = message.ended
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
            detail.update(entry_detail(entry))
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
        """Ask, then approve the highlighted entry's remediation."""
        entry = self._waiting("approve")
        if entry is None:
            return
        by = f"tui:{self.cairn.config.user}"

        def answered(approve: bool | None) -> None:
            if approve:
                self._decide(entry, by, approve=True)

        self.app.push_screen(ApproveScreen(entry, by), answered)

    def action_decline(self) -> None:
        """Ask for a reason, then decline the highlighted entry's remediation."""
        entry = self._waiting("decline")
        if entry is None:
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._decide(entry, f"tui:{self.cairn.config.user}", approve=False, reason=reason)

        self.app.push_screen(DeclineScreen(entry), answered)

    @work(thread=True, exit_on_error=False, group="queue-decide")
    def _decide(self, entry: Entry, by: str, *, approve: bool, reason: str = "") -> None:
        assert entry.run_id  # _waiting checked: an empty prefix would match every entry
        try:
            queue = AlertQueue(self.queue_location)
            try:
                done = queue.approve(entry.run_id, by) if approve else queue.decline(entry.run_id, by, reason)
            finally:
                queue.close()
        except CairnError as exc:  # decided meanwhile (another human, the alert resolved): the engine says so
            self.post_message(Decided(None, str(exc)))
            return
        self.post_message(Decided(done))

    def on_decided(self, message: Decided) -> None:
        entry = message.entry
        if entry is None:
            self.notify(message.error, severity="error", timeout=15, markup=False)
        elif entry.state is EntryState.QUEUED:
            self.notify(
                f"approved: {entry.runbook_id} on {entry.target} (entry {entry.id}) is queued again;"
                " its next run checks again, then remediates",
                markup=False,
            )
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
