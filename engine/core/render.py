"""Formatting primitives the text and data views share; the views themselves live by concern.

:mod:`engine.core.knowledge` (runbooks as Markdown, listings, validation),
:mod:`engine.core.reports` (plans and run reports) and :mod:`engine.core.records`
(the journal's runs, the alert queue, the inventory) build on these.
Pure functions returning strings or JSON-ready data; no I/O here.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable
from enum import Enum
from typing import Any

from engine.core.model import Phase, Runbook

STATUS_MARK = {
    "ok": "ok",
    "finding": "FINDING",
    "error": "ERROR",
    "timeout": "TIMEOUT",
    "skipped": "skipped",
    "declined": "declined",
    "not_asked": "not asked",
    "not_run": "not run",
    "cancelled": "CANCELLED",
    "interrupted": "INTERRUPTED",
    "running": "running",
}


def as_data(value: Any) -> Any:
    """Dataclasses, enums and tuples -> JSON-ready dicts, strings and lists.

    A dataclass whose ``kind`` is not a field (a step's, derived from its action; an action's,
    a class constant) has it as its first key: the tag of a tagged union.
    """
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: as_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
        kind = getattr(value, "kind", None)
        return {"kind": as_data(kind)} | data if "kind" not in data and kind is not None else data
    if isinstance(value, dict):
        return {str(k): as_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(v) for v in value]
    return value


def when(ts: float | None) -> str:
    """Local time of a timestamp, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of ``text`` prefixed."""
    return "\n".join(prefix + line for line in text.splitlines())


_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+(?=\S)")
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")
_TABLE_DELIMITER = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)+\|?[ \t]*")
_LINE_ON_ITS_OWN = re.compile(r" {0,3}(?:#{1,6}(?:\s|$)|>|\||(?:([-*_])[ \t]*)(?:\1[ \t]*){2,}$)")
"""A heading, a quote, a table row with its leading pipe, a rule (``---``): never joined to a neighbour."""


def _columns(line: str) -> int:
    """How far a line is indented, a tab counting as 4 columns."""
    stripped = line.lstrip(" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(4))


def reflow(text: str) -> str:
    """Runbook prose with each paragraph and list item on one line, for a screen that wraps at its own width.

    ``why``, ``summary``, ``cause``, ``tradeoff`` and the like are YAML block scalars that keep the
    author's line breaks; wrapped again at a narrower width they leave ragged, half-empty lines.
    The lines of a paragraph (or of a list item) are joined with single spaces; blank lines stay
    as paragraph breaks (one between two blocks); list items (``- ``, ``* ``, ``1. ``), fenced
    (```` ``` ````, ``~~~``) and indented code (4 columns past the text it belongs to), table rows,
    headings, quotes and rules are kept line by line, as written. Valid Markdown stays valid.
    """
    out: list[str] = []
    block: list[str] = []
    """The paragraph or list item being joined: its first line as written (indent, marker), then words."""
    item_text: int | None = None
    """Where the text of the list item we are in starts (its continuation lines' indent); None: no list."""
    fence = ""
    table = False

    def close() -> None:
        if block:
            out.append(" ".join(block))
            block.clear()

    for raw in text.splitlines():
        line = raw.rstrip()
        if fence:
            out.append(line)
            closing = _FENCE.fullmatch(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = ""
            continue
        if not line:
            close()
            table = False
            if out and out[-1]:
                out.append("")
            continue
        depth = _columns(line)
        if item_text is not None and depth < item_text and not _LIST_ITEM.match(line) and not block:
            item_text = None  # a block after a blank line, less indented than the item: the list ended
        code_from = (item_text if item_text is not None and depth >= item_text else 0) + 4
        table = table and "|" in line
        opening = _FENCE.match(line)
        if opening:
            close()
            fence = opening.group(1)
            out.append(line)
        elif _TABLE_DELIMITER.fullmatch(line) and block and "|" in block[-1]:
            header = block.pop()  # the header row of a table without leading pipes
            close()
            out += [header, line]
            table = True
        elif table:
            out.append(line)
        elif depth >= code_from or _LINE_ON_ITS_OWN.match(line):  # code; a heading, quote, table row, rule
            close()
            out.append(line)
        elif item := _LIST_ITEM.match(line):
            close()
            block.append(line)
            item_text = len(item.group(0).expandtabs(4))
        elif block:
            block.append(line.strip())
        else:
            block.append(line)
    close()
    return "\n".join(out).strip("\n")


def duration_text(seconds: float) -> str:
    """``30s``, ``2m``, ``1h30m``, ``7d``, ``500ms``: a duration as a runbook author writes it."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


STEP_ID_WIDTH = 24
"""The step id column's usual width; a runbook with longer ids widens it (up to 64, the longest allowed)."""


def step_id_width(step_ids: Iterable[str]) -> int:
    """The width of the step id column that keeps every row of these steps in line."""
    return max([STEP_ID_WIDTH, *(len(s) for s in step_ids)])


def runbook_step_width(runbook: Runbook) -> int:
    """:func:`step_id_width` over every step of ``runbook``."""
    return step_id_width(s.id for phase in Phase for s in runbook.steps(phase))
