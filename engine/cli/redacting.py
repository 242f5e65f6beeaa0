"""The CLI's own output, redacted: once a run's secrets are known, nothing this process prints shows them.

Events reach the terminal redacted by the event bus. What the CLI prints itself (an
error, a plan, a notice, a log record, a traceback under ``-vv``) does not pass the
bus, so :func:`redact_output` puts a :class:`RedactingStream` in place of
``sys.stdout`` and ``sys.stderr`` and points the logging handlers that write to them
at the redacting ones. ``cairn plan``, ``run`` and ``resume`` call it as soon as the
inputs are typed, before anything else is printed.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO, cast

from engine.core.redaction import Redactor


class RedactingStream:
    """A text stream that writes whole lines, redacted, to ``target``; the rest of a line on ``flush``.

    Whole lines, so a secret written in two pieces (``print(a, b)`` writes four) is still
    seen whole; a prompt is shown when its writer flushes, as on any stream.
    """

    def __init__(self, target: TextIO, redact: Redactor) -> None:
        self.target = target
        self.redact = redact
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        """Take ``text``; write the lines it completes."""
        with self._lock:
            data = self._pending + text
            head, newline, self._pending = data.rpartition("\n")
            if newline:
                self.target.write(self.redact(head + newline))
        return len(text)

    def flush(self) -> None:
        """Write the unfinished line too, and flush ``target``."""
        with self._lock:
            if self._pending:
                self.target.write(self.redact(self._pending))
                self._pending = ""
        self.target.flush()

    def writelines(self, lines: list[str]) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        # Everything else (isatty, fileno, encoding, buffer, …) is the target's.
        return getattr(self.target, name)


SHORTEST = 4
"""Secrets shorter than this are not looked for in the CLI's own output: a one-letter secret would
garble every word printed, the keys of ``--json`` among them. Events — every command, output line
and message of a run — are redacted by the event bus whatever a secret's length."""


def redact_output(redact: Redactor) -> None:
    """From now on, this process's stdout, stderr and logging show no secret of ``redact`` (of
    :data:`SHORTEST` characters or more).

    Called again (``cairn resume`` after a run, a test), the secrets add up."""
    redact = Redactor([s for s in redact.secrets if len(s) >= SHORTEST])
    if not redact.active:
        return
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if isinstance(current, RedactingStream):
            current.flush()
            current.redact = current.redact.joined(redact)
            continue
        wrapped = RedactingStream(current, redact)
        setattr(sys, name, cast(TextIO, wrapped))
        _repoint_handlers(current, cast(TextIO, wrapped))


def _repoint_handlers(original: TextIO, wrapped: TextIO) -> None:
    """Logging handlers set up before the secrets were known (``-vv``) write through ``wrapped`` now."""
    known = logging.root.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(logger for logger in known if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                handler.setStream(wrapped)
