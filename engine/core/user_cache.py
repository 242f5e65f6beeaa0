"""Cairn's cache folder and the rules every cache in it follows.

``$CAIRN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cairn``, else ``~/.cache/cairn``. Everything in it
is derived from files the user has (runbooks, inventories) and keyed by their bytes, so the
folder is safe to delete at any time: the next command is slower once and just as right.

Reading and writing are best-effort: a cache that is missing, corrupt, unreadable, unwritable
or on a full disk is skipped with a debug log, never an error. Entries are plain JSON (never
pickle: a cache file is data, not code), written to a temporary file and renamed into place so
a concurrent reader sees the old entry or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DISABLE = "CAIRN_NO_CACHE"
"""Set to any non-empty value: no cache is read or written (every command works from the files)."""


def cache_folder(*parts: str) -> Path | None:
    """The cache folder for ``parts`` (not created); ``None`` when caching is turned off."""
    if os.environ.get(DISABLE):
        return None
    root = os.environ.get("CAIRN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "cairn")
    return Path(root).joinpath(*parts)


def digest(*pieces: bytes | str) -> str:
    """A sha256 over ``pieces``, each length-prefixed so that ("ab", "c") and ("a", "bc") differ."""
    hasher = hashlib.sha256()
    for piece in pieces:
        data = piece.encode() if isinstance(piece, str) else piece
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def read_entry(path: Path) -> Any | None:
    """The JSON stored at ``path``; ``None`` when it is absent or cannot be used."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("cache entry %s ignored: %s", path, exc)
        return None


def write_entry(path: Path, value: Any) -> bool:
    """Store ``value`` as JSON at ``path`` atomically (mode 0600); False if it could not be written."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, separators=(",", ":"))
        os.replace(tmp, path)
        return True
    except (OSError, TypeError, ValueError) as exc:
        log.debug("cache entry %s not written: %s", path, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
