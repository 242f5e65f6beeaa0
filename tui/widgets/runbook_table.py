"""The library's table: every runbook with severity and tags, invalid files with their problems, filtered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

if TYPE_CHECKING:
    from engine.loader import Library, LoadResult
    from engine.model import Runbook

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
NAME_WIDTH_MAX = 32
"""The id column's widest (a longer id, or an invalid file's long name, is cut with an ellipsis)."""
INVALID_PREFIX = "invalid:"
"""Row keys of invalid files start with this, then the file's path (runbook ids cannot contain ':')."""

# `alertname = "KubeNodeNotReady"` is also found as `alertname=KubeNodeNotReady`.
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


@dataclass(frozen=True, slots=True)
class Entry:
    """One row: a valid runbook, or a file that failed validation."""

    key: str
    runbook: Runbook | None
    invalid: LoadResult | None
    haystack: str
    """Everything the filter looks in, case-folded."""


def runbook_haystack(runbook: Runbook) -> str:
    """Id, title, tags, symptoms and the alert matchers of a runbook, for filtering."""
    matchers = [m for trigger in runbook.triggers for m in trigger.matchers]
    compact = [_MATCHER.sub(r"\1\2\3", m) for m in matchers]
    parts = [runbook.id, runbook.title, *runbook.tags, *runbook.symptoms, *matchers, *compact]
    return "\n".join(parts).casefold()


def invalid_haystack(result: LoadResult) -> str:
    """Path, declared id and problem messages of an invalid file."""
    return "\n".join([result.path, result.declared_id, *(p.message for p in result.problems)]).casefold()


class EntryCache:
    """Entries for a library's results, each built once: the library arrives in growing batches."""

    def __init__(self) -> None:
        self._built: dict[int, tuple[LoadResult, Entry]] = {}
        """By ``id(result)``; the result is kept with its entry, so the id cannot be reused meanwhile."""

    def entries(self, library: Library) -> list[Entry]:
        """Valid runbooks by id, then the invalid files in the order they were found."""
        built: dict[int, tuple[LoadResult, Entry]] = {}
        for result in library.results:
            known = self._built.get(id(result))
            built[id(result)] = known if known and known[0] is result else (result, _entry(result))
        self._built = built
        valid = sorted((e for _, e in built.values() if e.runbook is not None), key=lambda e: e.key)
        return valid + [e for _, e in built.values() if e.runbook is None]


def _entry(result: LoadResult) -> Entry:
    if result.runbook is not None:
        return Entry(result.runbook.id, result.runbook, None, runbook_haystack(result.runbook))
    return Entry(INVALID_PREFIX + result.path, None, result, invalid_haystack(result))


def matches(entry: Entry, query: str) -> bool:
    """Every word of ``query`` occurs somewhere in what the entry is searched by (case-insensitive)."""
    return all(word in entry.haystack for word in query.casefold().split())


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
