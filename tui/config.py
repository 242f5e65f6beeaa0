"""What the TUI works on: the same runbooks, journal, inventory and labs as the CLI."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.executors import ExecutionOptions


@dataclass(frozen=True, slots=True)
class CairnConfig:
    """Where the TUI finds things; built by ``cairn tui`` from the same options and defaults as ``cairn run``."""

    runbook_dirs: tuple[Path, ...]
    """Folders of runbooks (``--runbooks``, ``$CAIRN_RUNBOOKS``, ``./runbooks`` or the bundled ones)."""
    journal_path: Path | None = None
    """The journal database; ``None``: ``$CAIRN_JOURNAL`` or ``~/.local/state/cairn/journal.db``."""
    inventory: tuple[str, ...] = ()
    """Inventory sources offered when a run is set up (``-i``); empty: this machine."""
    lab_root: Path | None = None
    """Where practice labs live (``--lab-dir``); ``None``: ``$CAIRN_LAB_DIR`` or the default."""
    options: ExecutionOptions = field(default_factory=ExecutionOptions)
    """How hosts are reached (known_hosts, --via ...), as for ``cairn run``."""
    user: str = field(default_factory=getpass.getuser)
    """Who approves in this TUI: approvals are journaled as ``tui:<user>``."""
