"""What the TUI works on: the same runbooks, journal, inventory and labs as the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.core.executors import ExecutionOptions
from engine.core.identity import Via, local_identity
from engine.core.store.location import Location, locate


@dataclass(frozen=True, slots=True)
class CairnConfig:
    """Where the TUI finds things; built by ``cairn tui`` from the same options and defaults as ``cairn run``."""

    runbook_dirs: tuple[Path, ...]
    """Folders of runbooks (``--runbooks``, ``$CAIRN_RUNBOOKS``, ``./runbooks`` or the bundled ones)."""
    journal_path: Path | None = None
    """A journal file, for callers that name one; :attr:`journal` (any store) wins over it."""
    inventory: tuple[str, ...] = ()
    """Inventory sources offered when a run is set up (``-i``); empty: this machine."""
    lab_root: Path | None = None
    """Where practice labs live (``--lab-dir``); ``None``: ``$CAIRN_LAB_DIR`` or the default."""
    options: ExecutionOptions = field(default_factory=ExecutionOptions)
    """How hosts are reached (known_hosts, --via ...), as for ``cairn run``."""
    user: str = field(default_factory=lambda: local_identity(Via.TUI).name)
    """Who approves a run's steps in this TUI (journaled as ``tui:<user>``): the account of this
    process's uid, never ``$USER``. Decisions on the alert queue take the whole identity
    (:func:`~engine.core.identity.local_identity`), not this name."""
    journal: Location | None = None
    """The journal (``--journal``: a SQLite file or a PostgreSQL database); ``None``: :attr:`journal_path`,
    else ``$CAIRN_JOURNAL`` or ``~/.local/state/cairn/journal.db``."""

    @property
    def journal_location(self) -> Location:
        """The journal this TUI reads and its runs write: :attr:`journal`, :attr:`journal_path` or the default."""
        return self.journal or locate(self.journal_path)
