"""The selected step: why it exists, what it runs (and as whom: ``become``), and its result on each host."""

from __future__ import annotations

import json
from typing import Any

from rich.console import RenderableType
from rich.text import Text
from textual.widgets import Static

from engine.core.knowledge import step_notes
from engine.core.model import AnsibleAction, ManualAction, RunAction, StepKind, format_duration
from engine.core.render import reflow
from engine.core.stepping import StepKey
from engine.core.visible import command_lines, visible_lines
from tui.models.progress import STATE_STYLE, RunProgress, find_step
from tui.widgets.notes import note_text

HOSTS_SHOWN = 12
"""Hosts listed one by one in the detail pane; the rest are counted."""
OUT_LINES = 8
"""Lines of a parsed result shown per host."""


def shown_out(out: Any) -> str:
    """A parsed result as a few lines of JSON."""
    text = json.dumps(out, indent=1, default=str, ensure_ascii=False)
    lines = text.splitlines()
    if len(lines) > OUT_LINES:
        lines = [*lines[:OUT_LINES], f"… {len(lines) - OUT_LINES} more lines"]
    return "\n".join(lines)


class StepDetail(Static):
    """Title, why, trade-off, the exact command and each host's state, message and parsed result."""

    def __init__(self, progress: RunProgress, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.progress = progress
        self.key: StepKey | None = None
        self._shown: tuple[object, object] = (None, None)

    def show(self, key: StepKey | None, now: float | None = None) -> None:
        """Render ``key`` (``None``: nothing selected), unless it would look the same as now."""
        self.key = key
        seen = self._signature(key, now)
        if seen != self._shown:
            # Only the hosts' short state labels changed (the elapsed time of running hosts, once a
            # second): the lines keep their number, so skip the layout pass, the costly part of a redraw.
            layout = seen[0] != self._shown[0]
            self._shown = seen
            self.update(self.render_step(key, now) if key is not None else "", layout=layout)

    def _signature(self, key: StepKey | None, now: float | None) -> tuple[object, object]:
        """What the detail shows, cheaply: (the step, its listed hosts, commands and results; their labels)."""
        if key is None:
            return (None, None)
        cells = self.progress.steps.get(key, {})
        shown = list(cells.items())[:HOSTS_SHOWN]
        return (key, len(cells), [(h, c.command, c.become, id(c.result)) for h, c in shown]), [
            c.label(now) for _, c in shown
        ]

    def render_step(self, key: StepKey, now: float | None = None) -> RenderableType:
        """The detail of one step as Rich renderables."""
        step = find_step(self.progress, key)
        parts: list[Text] = []
        head = Text(f"{key[0].value} · {step.title}", style="bold")
        head.append(f"  ({step.id}, {step.kind.value})", style="dim")
        parts.append(head)
        if step.kind is StepKind.MANUAL:
            parts.append(Text("A manual step: a human does it and confirms.", style="italic"))
        elif step.confirm:
            parts.append(Text("Asks for approval before it runs.", style="italic"))
        # Prose as paragraphs (the author's line breaks out): the pane wraps it at its own width.
        parts += [note_text(note) for note in step_notes(step)]
        cells = self.progress.steps.get(key, {})
        commands = {c.command for c in cells.values() if c.command}
        command = next(iter(commands)) if len(commands) == 1 else ""
        manual = step.kind is StepKind.MANUAL
        match step.action:
            case RunAction(command=text) | ManualAction(instructions=text):
                template = text
            case AnsibleAction():
                template = ""  # its arguments are YAML, not a command: shown once rendered
        shown = command or template.strip()
        # As whom it runs: beside the command when every host says the same, else on each host's line.
        becomes = {c.become for c in cells.values()}
        same_become = next(iter(becomes)) if len(becomes) == 1 else ""
        if shown:
            label = "" if command else " (template; differs per host)" if commands else " (template)"
            label += f" ({same_become})" if same_become else ""
            parts.append(Text(f"{'Instructions' if manual else 'Command'}{label}:", style="bold"))
            # A command line by line, as it runs; instructions are prose, wrapped as paragraphs.
            lines = reflow("\n".join(visible_lines(shown))) if manual else command_lines(shown, "$ ", "> ")
            parts.append(Text(lines, style="cyan"))
        many = len(cells) > 1
        for number, (host, cell) in enumerate(cells.items()):
            if number == HOSTS_SHOWN:
                parts.append(Text(f"… and {len(cells) - HOSTS_SHOWN} more hosts", style="dim"))
                break
            line = Text()
            if many:
                line.append(f"{host}  ", style="bold")
            line.append(cell.label(now), style=STATE_STYLE[cell.state])
            if cell.become and not same_become:
                line.append(f"  ({cell.become})", style="yellow")
            result = cell.result
            if result is not None:
                if result.duration:
                    line.append(f"  {format_duration(result.duration)}", style="dim")
                if result.rc is not None:
                    line.append(f"  rc={result.rc}", style="dim")
                if result.message:
                    line.append(f"  {result.message}")
            parts.append(line)
            if result is not None and result.out is not None and not isinstance(result.out, str):
                parts.append(Text("out: " + shown_out(result.out), style="dim"))
        # One Text, not a rich Group: Textual draws a Text natively, ~10 times faster than a Group.
        return Text("\n").join(parts)
