"""The run's steps grouped by phase, each with its live state across the run's hosts.

An :class:`~textual.widgets.OptionList` that redraws only the rows that change: the stock one
repaints every row when the highlight moves and drops every row's rendering when one prompt is
replaced, which made each ``↓``/``↑`` during a 50-host fan-out cost a full redraw of the list.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from engine.core.model import PHASE_ORDER, Phase
from engine.core.stepping import StepKey
from tui.models.progress import RunProgress

DEFAULT_WIDTH = 36
"""Row width before the list knows its size."""
STATE_WIDTH = 11
"""The state column's width at first: every state of one host fits (``not asked``, ``running 59s``).
A longer one (``running 1m05s``, ``ok 48 · finding 2``) widens the column for the rest of the run,
never narrows it: titles do not jump back and forth as states change."""
INDENT = "  "
"""Before a step's title, under its phase's heading."""
GAP = "  "
"""Between a title and its state."""


def option_id(key: StepKey) -> str:
    """The option id of a step: ``detect:check_disk``."""
    return f"{key[0].value}:{key[1]}"


def step_key(option: str) -> StepKey:
    """The step an option id stands for."""
    phase, _, step_id = option.partition(":")
    return Phase(phase), step_id


class StepList(OptionList):
    """Phases as headers, steps as rows with their state; highlighting a step shows it in the detail pane."""

    highlighted: reactive[int | None] = reactive(None, repaint=False)
    """As the OptionList's, but moving it repaints the two rows it leaves and reaches, not every row."""

    def __init__(
        self, progress: RunProgress, *, id: str | None = None, on_highlight: Callable[[], None] | None = None
    ) -> None:
        """``on_highlight``: called as soon as the highlight moves from one step to another (the screen
        shows the step in the same frame; the ``OptionHighlighted`` message arrives after a frame that
        drew the list alone). Not for the first step, highlighted at mount: the screen shows that one."""
        super().__init__(id=id)
        self._highlight_drawn: int | None = None
        """The row drawn highlighted: the one to repaint when the highlight moves on."""
        self.progress = progress
        self.on_highlight = on_highlight
        self.state_width = STATE_WIDTH
        """Where the state column starts, counted from the right edge (every row's state starts there)."""
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
        state = self.progress.summary(key)
        if state.cell_len > self.state_width:  # a wider state: every row's state moves to stay in line
            self.state_width = state.cell_len
            self.refresh_rows()
            return
        prompt = self._prompt(key, state)
        current = self.get_option(option_id(key)).prompt
        if not isinstance(current, Text) or current.plain != prompt.plain or current.spans != prompt.spans:
            self._replace_row(key, prompt)

    def refresh_rows(self) -> None:
        """Redraw every step's row (those that read the same are left alone)."""
        for option in self.options:
            if option.id and not option.disabled:
                self.refresh_step(step_key(option.id))

    def fit_states(self) -> None:
        """Narrow the state column to the states shown now (once the run has ended and they stay as
        they are): a column widened by a long passing state (``approval 1 · waiting 2``) would
        otherwise keep the titles cut for good."""
        keys = [step_key(o.id) for o in self.options if o.id and not o.disabled]
        widest = max((self.progress.summary(k).cell_len for k in keys), default=0)
        if max(STATE_WIDTH, widest) < self.state_width:
            self.state_width = max(STATE_WIDTH, widest)
            self.refresh_rows()

    def watch_highlighted(self, highlighted: int | None) -> None:
        """Repaint the row the highlight left and the one it reached; then as the OptionList does."""
        left, self._highlight_drawn = self._highlight_drawn, highlighted
        for index in (left, highlighted):
            self._refresh_row(index)
        super().watch_highlighted(highlighted)
        if self.on_highlight is not None and left is not None and left != highlighted:  # not the first
            self.on_highlight()

    def _refresh_row(self, index: int | None) -> None:
        line = self._index_to_line.get(index) if index is not None and self.is_mounted else None
        if line is not None:
            self.refresh_line(line)

    def _replace_row(self, key: StepKey, prompt: Text) -> None:
        """A step's new prompt, redrawing its row only (``replace_option_prompt`` redraws them all).

        A one-line row replaced by one that fits stays one line, so no other row moves; any other
        change of height goes the stock way (every row measured again). Uses the OptionList's own
        caches as textual 8.2 (pinned in pyproject.toml) has them."""
        index = self.get_option_index(option_id(key))
        if prompt.cell_len > self.scrollable_content_region.width or self._heights.get(index) != 1:
            self.replace_option_prompt(option_id(key), prompt)
            return
        option = self.get_option_at_index(index)
        option._set_prompt(prompt)
        renders = self._option_render_cache
        for cached in [k for k in renders.keys() if k[0] is option]:  # noqa: SIM118 - not a dict
            renders.discard(cached)
        self._refresh_row(index)

    def select_step(self, key: StepKey) -> None:
        """Move the highlight to ``key``."""
        self.highlighted = self.get_option_index(option_id(key))

    def on_resize(self) -> None:
        """Rows are laid out for the list's width: lay them out again."""
        self.refresh_rows()

    def _prompt(self, key: StepKey, state: Text | None = None) -> Text:
        """``  title…   state``: one line, the state in a column of its own (plain Text: cheap to redraw often).

        The title gets what the state column leaves, cut with an ellipsis; the state starts at the
        same column on every row (a state wider than half the row pushes only its own row's start)."""
        step = next(s for s in self.progress.runbook.steps(key[0]) if s.id == key[1])
        state = state if state is not None else self.progress.summary(key)
        width = self.scrollable_content_region.width or DEFAULT_WIDTH
        column = min(self.state_width, width // 2)
        room = max(8, width - len(INDENT) - len(GAP) - max(column, state.cell_len) - 1)
        row = Text(INDENT)
        title = Text(step.title, no_wrap=True)
        title.truncate(room, overflow="ellipsis", pad=True)
        row.append_text(title)
        row.append(GAP)
        row.append_text(state)
        return row
