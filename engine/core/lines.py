"""A running command's output as complete lines, so a secret is never split across two events."""

from __future__ import annotations

from collections.abc import Callable


class LineSplitter:
    """Turns output chunks into complete lines, per stream, and hands them to ``emit``."""

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self._emit = emit
        self._pending: dict[str, str] = {}

    def feed(self, stream: str, text: str) -> None:
        """Take a chunk of ``stream``; emit what it completes, keep the unfinished line."""
        data = self._pending.get(stream, "") + text
        head, sep, tail = data.rpartition("\n")
        self._pending[stream] = tail
        if sep:
            self._emit(stream, head + sep)

    def flush(self) -> None:
        """Emit every unfinished line (the command ended)."""
        for stream, text in self._pending.items():
            if text:
                self._emit(stream, text)
        self._pending.clear()
