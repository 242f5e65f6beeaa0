"""Runbook Markdown as plain text, for output that is not a terminal (pipes, files, logs).

``cairn show`` renders the knowledge with rich on a terminal; piped, it prints
this instead: no ``**``, backquotes or link syntax, headings underlined,
paragraphs reflowed (the YAML file's own line breaks dropped) and wrapped,
list items with a hanging indent, code blocks indented and kept line by line.
No trailing spaces, so the text greps and diffs cleanly.
"""

from __future__ import annotations

import textwrap
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

WIDTH = 80


@cache
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt  # noqa: PLC0415 - not needed by `cairn --help`

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_text(markdown: str, width: int = WIDTH) -> str:
    """``markdown`` as plain text wrapped at ``width`` columns."""
    tokens = _parser().parse(markdown)
    out: list[str] = []
    _Blocks(tokens, width, out).render()
    return "\n".join(out).strip("\n") + "\n"


def inline_text(markdown: str) -> str:
    """One line of Markdown without its markup (``**id** `x``` → ``id x``); line breaks become spaces."""
    tokens = _parser().parseInline(markdown)
    return " ".join(_inline(tokens[0].children or []).split()) if tokens else ""


def _inline(children: list[Token]) -> str:
    text: list[str] = []
    link: list[str] = []
    for token in children:
        match token.type:
            case "text" | "code_inline":
                text.append(token.content)
            case "softbreak":
                text.append(" ")
            case "hardbreak":
                text.append("\n")
            case "link_open":
                link.append(str(token.attrGet("href") or ""))
                text.append("\x00")  # where the link text starts
            case "link_close":
                href = link.pop() if link else ""
                start = len(text) - 1 - text[::-1].index("\x00")
                label = "".join(text[start + 1 :])
                del text[start:]
                text.append(label if not href or href == label else f"{label} ({href})")
            case "image":
                text.append(token.content)
            case _:
                pass  # strong/em open and close: the words stay, the stars go
    return "".join(text)


class _Blocks:
    """Walks the block tokens, appending wrapped lines to ``out``."""

    def __init__(self, tokens: list[Token], width: int, out: list[str]) -> None:
        self.tokens = tokens
        self.width = width
        self.out = out
        self.pos = 0
        self.prefix: list[tuple[str, str]] = []
        """(first line, later lines) prefixes of the enclosing list items and quotes."""
        self.lists: list[int | None] = []
        """Per open list: the next number (ordered) or None (bullets)."""

    def render(self) -> None:
        while self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            self.pos += 1
            self._block(token)

    def _blank(self) -> None:
        if self.out and self.out[-1] != "":
            self.out.append("")

    def _emit(self, text: str, *, wrap: bool = True) -> None:
        first = "".join(p[0] for p in self.prefix)
        later = "".join(p[1] for p in self.prefix)
        for index, paragraph in enumerate(text.split("\n")):
            lead = first if index == 0 else later
            if wrap:
                lines = textwrap.wrap(
                    paragraph,
                    width=max(20, self.width),
                    initial_indent=lead,
                    subsequent_indent=later,
                    break_long_words=False,
                    break_on_hyphens=False,
                ) or [lead.rstrip()]
            else:
                lines = [(lead + paragraph).rstrip()]
            self.out.extend(line.rstrip() for line in lines)
            first = later
        # A list marker is written once, on the item's first line; later lines are indented.
        self.prefix = [(later_part, later_part) for _, later_part in self.prefix]

    def _block(self, token: Token) -> None:
        match token.type:
            case "heading_open":
                inline = self.tokens[self.pos]
                self.pos += 2  # inline, heading_close
                title = _inline(inline.children or [])
                self._blank()
                self.out.append(title)
                if token.tag in ("h1", "h2"):
                    self.out.append(("=" if token.tag == "h1" else "-") * min(len(title), self.width))
                self.out.append("")
            case "paragraph_open":
                inline = self.tokens[self.pos]
                self.pos += 2
                if not token.hidden:
                    self._blank()
                self._emit(_inline(inline.children or []))
                if not token.hidden:
                    self.out.append("")
            case "bullet_list_open":
                self.lists.append(None)
            case "ordered_list_open":
                self.lists.append(int(token.attrGet("start") or 1))
            case "bullet_list_close" | "ordered_list_close":
                self.lists.pop()
                if not self.lists:
                    self.out.append("")
            case "list_item_open":
                number = self.lists[-1] if self.lists else None
                marker = "- " if number is None else f"{number}. "
                if number is not None:
                    self.lists[-1] = number + 1
                self.prefix.append((marker, " " * len(marker)))
            case "list_item_close":
                self.prefix.pop()
            case "blockquote_open":
                self.prefix.append(("> ", "> "))
            case "blockquote_close":
                self.prefix.pop()
            case "fence" | "code_block":
                self._blank()
                self.prefix.append(("    ", "    "))
                self._emit(token.content.rstrip("\n"), wrap=False)
                self.prefix.pop()
                self.out.append("")
            case "hr":
                self._blank()
                self.out.append("-" * min(20, self.width))
                self.out.append("")
            case "table_open":
                self._table()
            case _:
                pass

    def _table(self) -> None:
        """Rows as cells separated by two spaces, columns aligned (tables are rare in runbooks)."""
        rows: list[list[str]] = []
        row: list[str] = []
        while self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            self.pos += 1
            if token.type == "table_close":
                break
            if token.type == "tr_open":
                row = []
            elif token.type == "inline":
                row.append(_inline(token.children or []))
            elif token.type == "tr_close":
                rows.append(row)
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows), default=0))]
        self._blank()
        for cells in rows:
            self._emit("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)), wrap=False)
        self.out.append("")
