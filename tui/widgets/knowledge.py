"""The knowledge pane: a runbook's knowledge as Markdown (as ``cairn show``), or an invalid file's problems.

Rendered by Rich, as ``cairn show`` renders it in a terminal, once per width into
plain styled text (Markdown joins the lines of a paragraph, so the runbook's prose,
written with hard line breaks, is already reflowed to the pane's width): Textual's Markdown widget mounts a widget per block, and a Rich
Markdown in a Static is parsed and laid out again on every screen layout — both
made each key press in the library cost tens of milliseconds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

if TYPE_CHECKING:
    from engine.core.loader import LoadResult
    from engine.core.model import Runbook

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def _is_plain(markdown: str) -> bool:
    """One line without any Markdown syntax: rendered as it is."""
    return (
        "\n" not in markdown
        and markdown[:1].isalpha()  # no list item, heading or quote
        and "&" not in markdown  # no entity
        and not _MARKDOWN_SPECIAL.search(markdown)
    )


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def invalid_markdown(result: LoadResult) -> str:
    """An invalid file and every problem, each at ``file:line:column``, as ``cairn validate`` lists them."""
    named = f" (id `{result.declared_id}`)" if result.declared_id else ""
    lines = [
        "# Invalid runbook file",
        "",
        f"`{result.path}`{named} fails validation and cannot be run. "
        f"`cairn validate {result.path}` reports the same problems:",
        "",
    ]
    for problem in result.problems:
        pointer = f" `{problem.pointer}`" if problem.pointer else ""
        location = f"{problem.file}:{problem.line}:{problem.column}"
        lines.append(f"- `{location}`{pointer} {escape_markdown(problem.message)}")
    return "\n".join(lines) + "\n"


class KnowledgePane(VerticalScroll):
    """Scrollable Markdown: what a runbook knows, or why a file is invalid."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown_key: str | None = None
        """What is shown: a runbook id, ``invalid:PATH``, or ``None`` for a message."""

        self.markdown = ""
        """The Markdown shown now."""
        self._rendered_width = 0

    def compose(self) -> ComposeResult:
        yield Static(id="knowledge-text")

    def show_runbook(self, runbook: Runbook) -> None:
        """The runbook's knowledge: summary, symptoms, cause, steps with their trade-offs, references."""
        from engine.core.knowledge import knowledge_markdown  # noqa: PLC0415

        self._show(runbook.id, knowledge_markdown(runbook))

    def show_invalid(self, key: str, result: LoadResult) -> None:
        """An invalid file's problems."""
        self._show(key, invalid_markdown(result))

    def show_message(self, text: str) -> None:
        """A plain message (nothing selected, nothing matches)."""
        self._show(None, text)

    def _show(self, key: str | None, markdown: str) -> None:
        if key == self.shown_key and markdown == self.markdown:
            return
        self.shown_key, self.markdown = key, markdown
        self._rendered_width = 0
        self._render_markdown()
        self.scroll_home(animate=False)

    def on_resize(self) -> None:
        self._render_markdown()

    def _render_markdown(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or width == self._rendered_width:
            return
        self._rendered_width = width
        if _is_plain(self.markdown):
            # A one-line message ("Loading the runbooks…" at the first paint) reads the same without
            # Markdown: no parser (markdown-it, pygments: ~40 ms) imported before the first frame.
            self.query_one("#knowledge-text", Static).update(Text(self.markdown))
            return
        from rich.markdown import Markdown  # noqa: PLC0415 - not needed for the first paint

        console = self.app.console
        lines = console.render_lines(
            Markdown(self.markdown, hyperlinks=False), console.options.update_width(width), pad=False
        )
        text = Text("\n").join(
            Text.assemble(*((seg.text, seg.style or "") for seg in line if not seg.control)) for line in lines
        )
        self.query_one("#knowledge-text", Static).update(text)
