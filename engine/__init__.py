"""Cairn's engine: runbook format, loader, runner, executors and journal.

Pure logic over Protocols; never imports the TUI (a test enforces it).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
