"""A step's prose (:func:`engine.core.knowledge.step_notes`) as the TUI shows it: labelled paragraphs."""

from __future__ import annotations

from rich.text import Text

from engine.core.knowledge import StepNote
from engine.core.render import reflow


def note_text(note: StepNote) -> Text:
    """``Why: …`` in bold, ``Trade-off: …`` in bold yellow; the text reflowed to the widget's width."""
    return Text.assemble((f"{note.label}: ", "bold yellow" if note.caution else "bold"), reflow(note.text))


def note_id(note: StepNote) -> str:
    """A widget id for the note: ``why``, ``tradeoff``."""
    return "".join(ch for ch in note.label.lower() if ch.isalnum())
