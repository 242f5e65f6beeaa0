"""Collecting a command's output as it arrives: decoded incrementally, streamed, and bounded.

A stream carries at most ``limit`` bytes (the run's ``output_limit``, 8 MiB by default) to its
callback — and so to the journal's artifacts file — and keeps the same in memory for the
result. What comes after is read (the command is never blocked on a full pipe) and dropped;
when the stream ends, a marker line says how much was kept of how much. The cut is never made
inside a secret: text that may be the start of one is held back until the next chunk shows
whether it is (see :func:`engine.core.lines.safe_cut`).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

from engine.core.defaults import OUTPUT_LIMIT
from engine.core.executors import OutputCallback
from engine.core.lines import safe_cut

MAX_CAPTURE = OUTPUT_LIMIT
"""Bytes of each stream kept by default (the streaming callback sees the same)."""


def size_text(size: int) -> str:
    """``8 MiB``, ``212 MiB``, ``293 KiB``, ``1,000 bytes``: a size as the truncation marker says it."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            shown = f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:.0f}"
            return f"{shown} {unit}"
    return f"{size:,} bytes"


def truncation_marker(name: str, kept: int, total: int, limit: int) -> str:
    """The line that says a stream was cut at the output limit (in the stream, so in the journal too)."""
    return (
        f"[… {name} truncated: {size_text(kept)} kept of {size_text(total)}; "
        f"the rest was read and dropped (output limit {size_text(limit)} per stream) …]"
    )


def bounded_text(text: str, limit: int, name: str) -> str:
    """``text`` cut at ``limit`` characters, with the marker (for output that arrives whole: Ansible's)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n{truncation_marker(name, limit, len(text), limit)}\n"


def bounded_event(event: dict[str, Any], limit: int) -> None:
    """Cut an ansible-runner event's texts at ``limit``, in place: its display text, and each module
    result's ``stdout``/``stderr`` (dropping their ``*_lines`` copies when cut)."""
    if isinstance(event.get("stdout"), str):
        event["stdout"] = bounded_text(event["stdout"], limit, "ansible output")
    data = event.get("event_data")
    res = data.get("res") if isinstance(data, dict) else None
    if not isinstance(res, dict):
        return
    for part in [res, *(r for r in res.get("results") or () if isinstance(r, dict))]:
        for key in ("stdout", "stderr"):
            value = part.get(key)
            if isinstance(value, str) and len(value) > limit:
                part[key] = bounded_text(value, limit, key)
                part.pop(f"{key}_lines", None)


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class OutputStream:
    """One output stream (stdout or stderr) of a running command."""

    def __init__(
        self,
        name: str,
        on_output: OutputCallback | None,
        *,
        limit: int = MAX_CAPTURE,
        forms: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.chunks: list[str] = []
        self.kept = 0
        """Bytes streamed and kept."""
        self.seen = 0
        """Bytes read from the command."""
        self.truncated = False
        self._limit = limit
        self._forms = forms
        self._longest = max(map(len, forms), default=0)
        self._held = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._on_output = on_output

    def feed(self, data: bytes, final: bool = False) -> None:
        """Decode ``data`` (a multi-byte character may span chunks); stream and keep it within the limit."""
        self.seen += len(data)
        if not self.truncated:
            text = self._held + self._decoder.decode(data, final=final)
            ready = len(text) if final or not self._forms else self._ready(text)
            size = _utf8_size(text[:ready])
            if self.kept + size > self._limit:
                self._cut(text)
            else:
                self._pass(text[:ready], size)
                self._held = text[ready:]
        if final and self.truncated:
            self.note(truncation_marker(self.name, self.kept, self.seen, self._limit) + "\n", own_line=True)

    def _ready(self, text: str) -> int:
        """How much of ``text`` may go: all but what may begin a secret (the limit could fall inside it)."""
        end = len(text)
        floor = max(0, end - self._longest)
        # No place to cut in the last `longest` characters: a secret repeated back to back, and
        # the line splitter downstream keeps those whole; here the text only waits for the limit.
        return safe_cut(text, end, self._forms, floor=floor) or floor

    def _cut(self, text: str) -> None:
        """The limit falls inside ``text``: pass what fits (never part of a secret), drop the rest."""
        room = self._limit - self.kept
        fits = len(text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore"))
        cut = safe_cut(text, fits, self._forms, floor=max(0, fits - 4 * self._longest))
        self._pass(text[:cut], _utf8_size(text[:cut]))
        self._held = ""
        self.truncated = True

    def _pass(self, text: str, size: int) -> None:
        if not text:
            return
        if self._on_output:
            self._on_output(self.name, text)
        self.chunks.append(text)
        self.kept += size

    def note(self, text: str, *, own_line: bool = False) -> None:
        """Add Cairn's own words to the stream (a truncation marker, processes left running): never dropped."""
        if own_line and self.chunks and not self.chunks[-1].endswith("\n"):
            text = "\n" + text
        if self._on_output:
            self._on_output(self.name, text)
        self.chunks.append(text)

    @property
    def text(self) -> str:
        """Everything kept so far."""
        return "".join(self.chunks)
