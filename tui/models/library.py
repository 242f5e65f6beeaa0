"""The library's entries: every runbook and every file that failed validation, and the filter over them.

Plain data (no widgets, no Textual): the library screen keeps an :class:`EntryCache` over the
library as it arrives in batches, and its table (``tui/widgets/runbook_table.py``) shows the
entries :func:`matches` lets through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.loader import Library, LoadResult
    from engine.core.model import Runbook

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
