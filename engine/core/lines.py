"""A running command's output as events: complete lines, an endless line in bounded pieces, and
never a secret split across two events.

Every output event is redacted on its own, so a secret cut in two by an event boundary would
reach the journal and the terminal as two harmless-looking halves. :func:`safe_cut` finds
where a text may be cut without that: no occurrence of any form of a secret (the literal texts
the run's redactor replaces) may span the cut, counting one that the text's end may only begin.
:class:`LineSplitter` cuts after the last complete line (moved back if a secret with a newline
spans it) and, when a line runs on past :data:`PIECE` characters, inside it. The work is linear
in the output: each new chunk is searched once, the unfinished line is kept as pieces and joined
only when something is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PIECE = 64 * 1024
"""An unfinished line longer than this many characters goes out in pieces of about this size."""
WITHHOLD_AFTER = 4 * PIECE
"""Characters held with no safe place to cut before the rest of the line is withheld (see
:meth:`LineSplitter.feed`; scaled with ``piece``): only a secret that overlaps itself, repeated
over and over, gets there."""


def redacted_forms(redact: Callable[[str], str] | None) -> tuple[str, ...]:
    """The literal texts ``redact`` replaces: a :class:`~engine.core.redaction.Redactor`'s forms.

    ``()`` for ``None`` or a callable that does not say (then nothing is known to keep whole).
    """
    forms: Any = getattr(redact, "forms", ())
    return tuple(f for f in forms if isinstance(f, str) and len(f) > 1)


def safe_cut(text: str, cut: int, forms: Sequence[str], *, floor: int = 0) -> int:
    """The largest position ``<= cut`` where ``text`` may be cut with no form spanning the cut.

    A form that starts before the cut and runs past the end of ``text`` (its start is all there
    is yet) counts as spanning it. ``0`` when there is no such place above ``floor`` (which bounds
    the search: a secret repeated back to back would otherwise be stepped through copy by copy).
    """
    while cut > 0:
        start = _earliest_spanning(text, cut, forms)
        if start is None:
            return cut
        if start < floor:
            return 0
        cut = start
    return 0


def _earliest_spanning(text: str, cut: int, forms: Sequence[str]) -> int | None:
    """Where the earliest occurrence of a form that spans ``cut`` starts, or ``None``."""
    earliest: int | None = None
    end = len(text)
    for form in forms:
        size = len(form)
        low = max(0, cut - size + 1)
        # Whole occurrences: one inside [low, cut + size - 1) necessarily spans the cut.
        found = text.find(form, low, cut + size - 1)
        if found != -1:
            earliest = found if earliest is None else min(earliest, found)
        # An occurrence that may still be completing: text from `start` to its end begins the form.
        if cut + size - 1 > end:
            start = text.find(form[0], max(low, end - size + 1), cut)
            while start != -1:
                if text.startswith(form[: end - start], start):
                    earliest = start if earliest is None else min(earliest, start)
                    break
                start = text.find(form[0], start + 1, cut)
    return earliest


@dataclass
class _Held:
    """What one stream has said that has not been sent yet."""

    parts: list[str] = field(default_factory=list)
    size: int = 0
    line_end: int = 0
    """Characters up to and including the last newline held (0: no complete line is held)."""
    withheld: int = 0
    """Characters dropped since no place to cut was found (see :meth:`LineSplitter.feed`)."""

    def add(self, text: str) -> None:
        newline = text.rfind("\n")
        if newline >= 0:
            self.line_end = self.size + newline + 1
        self.parts.append(text)
        self.size += len(text)

    def joined(self) -> str:
        whole = "".join(self.parts)
        self.parts = [whole]
        return whole

    def keep(self, rest: str, cut: int) -> None:
        self.parts = [rest] if rest else []
        self.size = len(rest)
        self.line_end = max(0, self.line_end - cut)


class LineSplitter:
    """Turns output chunks into events per stream and hands them to ``emit``: complete lines, and
    pieces of an endless line, never cutting a form of a secret that ``redact`` replaces."""

    def __init__(
        self,
        emit: Callable[[str, str], None],
        *,
        redact: Callable[[str], str] | None = None,
        piece: int = PIECE,
    ) -> None:
        self._emit = emit
        self._forms = redacted_forms(redact)
        # Only a form with a newline in it can span a cut made just after a newline.
        self._multiline = tuple(f for f in self._forms if "\n" in f)
        self._piece = piece
        self._withhold_after = WITHHOLD_AFTER * piece // PIECE
        self._held: dict[str, _Held] = {}

    def feed(self, stream: str, text: str) -> None:
        """Take a chunk of ``stream``; send what it completes, keep the rest.

        Output that is one secret overlapping itself over and over ("abab" in "ababab…") has no
        place to cut at all; past :data:`WITHHOLD_AFTER` characters the rest of that line is
        withheld and a note says how much.
        """
        if not text:
            return
        held = self._held.setdefault(stream, _Held())
        if held.withheld:
            text = self._still_withheld(stream, held, text)
            if not text:
                return
        held.add(text)
        if held.size - held.line_end > self._piece:  # the unfinished line runs on: cut inside it
            whole = held.joined()
            cut = safe_cut(whole, len(whole), self._forms, floor=len(whole) - self._piece)
        elif held.line_end:
            cut = held.line_end
            if self._multiline:
                cut = safe_cut(held.joined(), cut, self._multiline, floor=cut - self._piece)
        else:
            return
        if cut:
            whole = held.joined()
            self._emit(stream, whole[:cut])
            held.keep(whole[cut:], cut)
        elif held.size > self._withhold_after:
            held.withheld = held.size
            held.keep("", held.size)

    def _still_withheld(self, stream: str, held: _Held, text: str) -> str:
        """While a line is withheld: drop ``text`` up to the next newline; the rest goes on normally.

        After a newline no secret without one can be cut; with a secret of several lines in the
        run, everything to the end is withheld.
        """
        newline = -1 if self._multiline else text.find("\n")
        if newline < 0:
            held.withheld += len(text)
            return ""
        held.withheld += newline
        self._emit(stream, _withheld_note(held.withheld) + "\n")
        held.withheld = 0
        return text[newline + 1 :]

    def flush(self) -> None:
        """Send everything held (the command ended)."""
        for stream, held in self._held.items():
            if held.withheld:
                self._emit(stream, _withheld_note(held.withheld))
            elif held.size:
                self._emit(stream, held.joined())
        self._held.clear()


def _withheld_note(count: int) -> str:
    return f"[… {count:,} characters withheld: a secret repeats with no place to split the output …]"
