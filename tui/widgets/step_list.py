"""The run's steps grouped by phase, each with its live state across the run's hosts."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from engine.model import PHASE_ORDER, Phase
from tui.widgets.step_status import RunProgress, StepKey

DEFAULT_WIDTH = 36
"""Row width before the list knows its size."""


def option_id(key: StepKey) -> str:
    """The option id of a step: ``detect:check_disk``."""
    return f"{key[0].value}:{key[1]}"


def step_key(option: str) -> StepKey:
    """The step an option id stands for."""
    phase, _, step_id = option.partition(":")
    return Phase(phase), step_id


class StepList(OptionList):
    """Phases as headers, steps as rows with their state; highlighting a step shows it in the detail pane."""

    def __init__(self, progress: RunProgress, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.progress = progress
        options: list[Option] = []
        runbook = progress.runbook
        for phase in PHASE_ORDER:
            steps = runbook.steps(phase)
            if not steps:
                continue
            heading = Text(phase.value.upper(), style="bold")
            if phase is Phase.VERIFY and runbook.verify_is_detect:
                heading.append(" (re-runs detect)", style="dim")
            if phase not in progress.phases:
                heading.append(" (not in this run)", style="dim")
            options.append(Option(heading, id=f"phase:{phase.value}", disabled=True))
            options.extend(Option(self._prompt((phase, s.id)), id=option_id((phase, s.id))) for s in steps)
        self.add_options(options)

    def on_mount(self) -> None:
        """Start on the first step."""
        first = next((i for i, o in enumerate(self.options) if not o.disabled), None)
        self.highlighted = first

    @property
    def selected_step(self) -> StepKey | None:
        """The highlighted step."""
        option = self.highlighted_option
        return step_key(option.id) if option is not None and option.id and not option.disabled else None

    def refresh_step(self, key: StepKey) -> None:
        """Redraw one step's row from the progress (only if it reads differently: redraws cost)."""
        prompt = self._prompt(key)
        current = self.get_option(option_id(key)).prompt
        if not isinstance(current, Text) or current.plain != prompt.plain or current.spans != prompt.spans:
            self.replace_option_prompt(option_id(key), prompt)

    def select_step(self, key: StepKey) -> None:
        """Move the highlight to ``key``."""
        self.highlighted = self.get_option_index(option_id(key))

    def on_resize(self) -> None:
        """Rows are laid out for the list's width: lay them out again."""
        for option in self.options:
            if option.id and not option.disabled:
                self.refresh_step(step_key(option.id))

    def _prompt(self, key: StepKey) -> Text:
        """``  title ……… state``: one line, the state right-aligned (plain Text: cheap to redraw often)."""
        step = next(s for s in self.progress.runbook.steps(key[0]) if s.id == key[1])
        state = self.progress.summary(key)
        width = self.scrollable_content_region.width or DEFAULT_WIDTH
        room = max(8, width - state.cell_len - 3)
        title = f"  {step.title}"
        if len(title) > room:
            title = title[: room - 1] + "…"
        row = Text(title.ljust(room + 1))
        row.append_text(state)
        return row
