"""The plan shown before a run: every host's exact commands, a long line wrapped under where its text starts."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text
from textual.widgets import Static

HANG = 2
"""How much further than its line a wrapped line starts: a long command goes on under its text, not under its ``$``."""


def hanging_text(text: str, width: int, console: Console) -> Text:
    """``text`` wrapped to ``width``, every line's continuation indented past the line's own indentation.

    Wrapped by the screen, the plan's long commands went on at the left edge, under the host and step
    names, and the plan's shape (host, phase, step, command) was lost."""
    out: list[Text] = []
    for line in text.splitlines():
        if cell_len(line) <= width:
            out.append(Text(line))
            continue
        body = line.lstrip(" ")
        hang = min(len(line) - len(body) + HANG, width // 2)
        indent = min(len(line) - len(body), hang)
        wrapped = Text(body).wrap(console, max(width - hang, 8), overflow="fold")
        for number, part in enumerate(wrapped):
            part.rstrip()
            out.append(Text(" " * (indent if number == 0 else hang)) + part)
    return Text("\n").join(out)


class PlanView(Static):
    """The plan text, laid out again when its width changes (commands are shown exactly, never as markup)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.plan = ""
        """The plan as ``cairn plan`` prints it."""
        self._width = 0

    def show(self, plan: str) -> None:
        """Show ``plan`` (wrapped at once if the width is known, else at the first resize)."""
        self.plan = plan
        self._width = 0
        self._lay_out()

    def on_resize(self) -> None:
        self._lay_out()

    def _lay_out(self) -> None:
        width = self.content_region.width
        if width <= 0:
            self.update(Text(self.plan))
            return
        if width != self._width:
            self._width = width
            self.update(hanging_text(self.plan, width, self.app.console))
