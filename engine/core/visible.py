"""Text from hosts and values made safe to show on a terminal: control characters shown, never obeyed.

A command's output, a rendered command (its values come from inputs, inventories,
earlier output) and a step's message can hold a carriage return, an escape sequence
(clear the screen, retitle the window, hide text), a bidi override that shows text in
another order, or a newline inside a value. Shown raw, they rewrite what the person
watching reads: a value with a newline prints a second ``$`` line that never runs, a
``\\r`` overwrites the line it is on. Here each of them is written as an escape
(``\\r``, ``\\x1b``, ``\\u202e``), and lines are split at newlines only, so a front end
lays out genuine lines itself (a multi-line script, output) and nothing else.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f"  # C0 but tab, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\u2028\u2029]"  # line and paragraph separators
)
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` as one line, every control character but a tab (newlines too) written as an escape."""
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def visible_lines(text: str) -> list[str]:
    """``text``'s lines, split at newlines only (``\\r\\n`` ends a line too), each :func:`visible`."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [visible(line.removesuffix("\r")) for line in lines]


def command_lines(command: str, prefix: str, more: str) -> str:
    """A command for a terminal: its first line after ``prefix``, each further line after ``more``.

    A newline inside a value (or a multi-line script) stays a line of its own, but only the first
    line of a command can look like one: every later line is marked as its continuation."""
    lines = visible_lines(command) or [""]
    return "\n".join([prefix + lines[0], *(more + line for line in lines[1:])])


def continuation(prefix: str, mark: str = "$") -> str:
    """``prefix`` with its ``$`` (or ``mark``) made a ``>``, aligned: ``     $ `` → ``     > ``."""
    head, found, tail = prefix.rpartition(mark)
    return f"{head}>{tail}" if found else prefix
