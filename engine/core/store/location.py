"""What ``--journal`` (or ``CAIRN_JOURNAL``) names: a SQLite file, or a PostgreSQL database by URL.

A URL may carry a password: :attr:`Location.shown` is the form every message, log line and
``/healthz`` uses, with the password replaced by ``***``. The full URL goes to the driver only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True, slots=True)
class Location:
    """Where the store is. Exactly one of ``path`` (SQLite) and ``url`` (PostgreSQL) is set."""

    path: Path | None = None
    url: str = ""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.path is not None else "postgresql"

    @property
    def shown(self) -> str:
        """How to name it to a human: the file, or the URL without its password."""
        if self.path is not None:
            return str(self.path)
        return hide_password(self.url)

    @property
    def artifacts_root(self) -> Path:
        """Where runs keep their complete output: ``runs/`` beside a SQLite file; for PostgreSQL,
        this machine's state folder (each server keeps the output of the runs it ran)."""
        if self.path is not None:
            return self.path.parent / "runs"
        return state_folder() / "runs"

    def __str__(self) -> str:
        return self.shown


def hide_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (and ``password=`` in its query)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
        if item
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def state_folder() -> Path:
    """``$XDG_STATE_HOME/cairn`` (``~/.local/state/cairn``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cairn"


def is_url(value: str) -> bool:
    """Whether ``value`` names a PostgreSQL database rather than a file."""
    return value.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in value


def locate(value: Location | Path | str | None = None) -> Location:
    """The store ``value`` names; ``None`` or empty: ``$CAIRN_JOURNAL``, else the default file,
    ``$XDG_STATE_HOME/cairn/journal.db``."""
    if isinstance(value, Location):
        return value
    if value is None or value == "":
        value = os.environ.get("CAIRN_JOURNAL") or ""
        if not value:
            return Location(path=state_folder() / "journal.db")
    if isinstance(value, str) and is_url(value):
        scheme, rest = value.split("://", 1)
        return Location(url=("postgresql" if scheme.lower() != "postgresql" else scheme) + "://" + rest)
    return Location(path=Path(value).expanduser())
