"""The library's table: every runbook with severity and tags, invalid files with their problems, filtered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.widgets import DataTable

if TYPE_CHECKING:
    from engine.loader import Library, LoadResult
    from engine.model import Runbook

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
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
    """Runbooks (id, severity, tags, title) and invalid files, as the filter allows."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("Runbook", "Severity", "Tags", "Title")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.entries: list[Entry] = []
        """Every entry of the library (shown or not)."""
        self.shown: list[Entry] = []
        """The entries the filter lets through, in table order."""

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    def show(self, entries: list[Entry], query: str) -> None:
        """Fill the table with the entries matching ``query``, keeping the highlighted one if it is still shown."""
        keep = self.highlighted_key
        self.entries = entries
        self.shown = [e for e in entries if matches(e, query)]
        with self.app.batch_update():
            self.clear()
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


def _cells(entry: Entry) -> tuple[Text, Text, Text, Text]:
    if entry.runbook is not None:
        rb = entry.runbook
        severity = rb.severity.value
        return (
            Text(rb.id, style="bold"),
            Text(severity, style=SEVERITY_STYLE.get(severity, "")),
            Text(", ".join(rb.tags), style="dim"),
            Text(rb.title),
        )
    assert entry.invalid is not None
    result = entry.invalid
    name = result.declared_id or result.path.rsplit("/", 1)[-1]
    count = len(result.problems)
    first = result.problems[0].message if result.problems else "cannot be loaded"
    return (
        Text(name, style="bold"),
        Text("INVALID", style="bold red"),
        Text(f"{count} problem{'s' if count != 1 else ''}", style="red"),
        Text(first, style="red"),
    )
