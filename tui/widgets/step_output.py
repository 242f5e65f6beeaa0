"""The selected step's output as it streams: plain lines, cheap enough for a 50-host fan-out."""

from __future__ import annotations

from textual.widgets import Log

from engine.core.visible import visible_lines
from tui.models.progress import HostStep

OUTPUT_SHOWN = 2000
"""Lines the pane keeps (the journal keeps every line)."""
REPLAY_LINES = 400
"""Lines shown again when a step is selected: the tail of each host's output."""
REPLAY_MIN = 5
"""At least this many lines per host when a step is selected again."""


def output_lines(host: str, stream: str, text: str, *, many_hosts: bool) -> list[str]:
    """Lines for the pane: ``[host]`` first on a multi-host run, ``!`` before stderr."""
    prefix = f"[{host}] " if many_hosts else ""
    if stream == "stderr":
        prefix += "! "
    # Control characters shown, never obeyed (an ESC sequence, a \r, a bidi override): visible_lines.
    return [prefix + line for line in visible_lines(text)] or [prefix]


class StepOutputLog(Log):
    """A :class:`~textual.widgets.Log` (not a RichLog: plain lines render ~100 times faster)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=OUTPUT_SHOWN)

    def on_mount(self) -> None:
        """Say how stderr is shown."""
        self.border_title = "Output (stderr lines marked !)"

    def append(self, lines: list[str]) -> None:
        """Add the lines that arrived since the last redraw, in one write."""
        if lines:
            self.write_lines(lines[-OUTPUT_SHOWN:])

    def replay(self, cells: dict[str, HostStep]) -> None:
        """Show a step again: the tail of each host's output, oldest line first."""
        self.clear()
        per_host = max(REPLAY_MIN, REPLAY_LINES // max(1, len(cells)))
        lines: list[str] = []
        for host, cell in cells.items():
            tail: list[str] = []
            for stream, text in reversed(cell.output):
                tail[:0] = output_lines(host, stream, text, many_hosts=len(cells) > 1)
                if len(tail) >= per_host:
                    break
            lines.extend(tail[-per_host:])
        self.append(lines)
