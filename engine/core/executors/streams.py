"""Collecting a command's output as it arrives: decoded incrementally, streamed whole, kept bounded."""

from __future__ import annotations

import codecs

from engine.core.executors import OutputCallback

MAX_CAPTURE = 8 * 1024 * 1024
"""Bytes of each stream kept in memory; streaming callbacks still see everything."""


class OutputStream:
    """One output stream (stdout or stderr) of a running command."""

    def __init__(self, name: str, on_output: OutputCallback | None) -> None:
        self.name = name
        self.chunks: list[str] = []
        self.size = 0
        self.truncated = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._on_output = on_output

    def feed(self, data: bytes, final: bool = False) -> None:
        """Decode ``data`` (a multi-byte character may span chunks), stream it, keep it if room is left."""
        text = self._decoder.decode(data, final=final)
        if not text:
            return
        if self._on_output:
            self._on_output(self.name, text)
        if self.size < MAX_CAPTURE:
            self.chunks.append(text)
            self.size += len(data)
        else:
            self.truncated = True

    @property
    def text(self) -> str:
        """Everything kept so far."""
        return "".join(self.chunks)
