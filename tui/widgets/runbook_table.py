"""The library's table: every runbook with severity and tags, invalid files with their problems, filtered.

The entries and the filter are the model in ``tui/models/library.py``; this is how they are shown.
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from tui.models.library import Entry, matches

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
NAME_WIDTH_MAX = 32
"""The id column's widest (a longer id, or an invalid file's long name, is cut with an ellipsis)."""


class RunbookTable(DataTable[Text]):
    """Runbooks (id, severity, title and tags) and invalid files, as the filter allows.

    The title gets the width the id and severity leave, cut with an ellipsis (the tags, dimmed after
    it, first): with the tags in a column of their own before it, the title was off the edge of the
    library's list at 80 and at 120 columns."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("Runbook", "Severity", "Title · tags")
    SEVERITY_WIDTH: ClassVar[int] = 8
    """``critical``, ``INVALID``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.entries: list[Entry] = []
        """Every entry of the library (shown or not)."""
        self.shown: list[Entry] = []
        """The entries the filter lets through, in table order."""
        self._widths: tuple[int, ...] = ()
        self._query = ""

    def _column_widths(self) -> tuple[int, ...]:
        """The id column as wide as the longest id of the library (not of the rows shown: it stays put while
        filtering), the severity's, and the rest for the title (2 columns spare for a scrollbar)."""
        name = max((cell_len(_name(e)) for e in self.entries), default=len(self.COLUMNS[0]))
        name = min(max(name, len(self.COLUMNS[0])), NAME_WIDTH_MAX)
        padding = 2 * self.cell_padding * len(self.COLUMNS)
        title = self.size.width - name - self.SEVERITY_WIDTH - padding - 2
        return (name, self.SEVERITY_WIDTH, max(title, 20))

    def on_resize(self) -> None:
        """The title takes the width there is: lay the columns out again when it changed."""
        if self.entries and self._column_widths() != self._widths:
            self.show(self.entries, self._query)

    def show(self, entries: list[Entry], query: str) -> None:
        """Fill the table with the entries matching ``query``, keeping the highlighted one if it is still shown."""
        keep = self.highlighted_key
        self.entries = entries
        self._query = query
        self.shown = [e for e in entries if matches(e, query)]
        widths = self._column_widths()
        with self.app.batch_update():
            self.clear(columns=widths != self._widths)
            if widths != self._widths:
                self._widths = widths
                for label, width in zip(self.COLUMNS, widths, strict=True):
                    self.add_column(label, width=width)
            for entry in self.shown:
                self.add_row(*_cells(entry), key=entry.key)
            keys = [e.key for e in self.shown]
            if keep in keys:
                self.move_cursor(row=keys.index(keep), animate=False)

    @property
    def highlighted_key(self) -> str | None:
        """The key of the highlighted row (``None`` when the table is empty)."""
        if not self.shown or not 0 <= self.cursor_row < len(self.shown):
            return None
        return self.shown[self.cursor_row].key

    @property
    def highlighted(self) -> Entry | None:
        """The highlighted entry."""
        key = self.highlighted_key
        return next((e for e in self.shown if e.key == key), None)

    def select_key(self, key: str) -> bool:
        """Move the cursor to ``key``'s row; False if it is not shown."""
        keys = [e.key for e in self.shown]
        if key not in keys:
            return False
        self.move_cursor(row=keys.index(key), animate=False)
        return True


def _name(entry: Entry) -> str:
    """The first column: a runbook's id, an invalid file's declared id or file name."""
    if entry.runbook is not None:
        return entry.runbook.id
    assert entry.invalid is not None
    return entry.invalid.declared_id or entry.invalid.path.rsplit("/", 1)[-1]


def _cells(entry: Entry) -> tuple[Text, Text, Text]:
    if entry.runbook is not None:
        rb = entry.runbook
        severity = rb.severity.value
        title = Text(rb.title, overflow="ellipsis", no_wrap=True)
        if rb.tags:
            title.append("  " + ", ".join(rb.tags), style="dim")
        return (
            Text(rb.id, style="bold", overflow="ellipsis", no_wrap=True),
            Text(severity, style=SEVERITY_STYLE.get(severity, "")),
            title,
        )
    assert entry.invalid is not None
    result = entry.invalid
    count = len(result.problems)
    first = result.problems[0].message if result.problems else "cannot be loaded"
    return (
        Text(_name(entry), style="bold", overflow="ellipsis", no_wrap=True),
        Text("INVALID", style="bold red"),
        Text(
            f"{count} problem{'s' if count != 1 else ''}: {first}",
            style="red",
            overflow="ellipsis",
            no_wrap=True,
        ),
    )
