"""A SQLite store's file: opened to write or only to read, and the disk's faults said as one error.

:class:`~engine.core.store.database.Database` opens a SQLite store (the journal, the alert queue
and the remediation ledger share one file) through here, and :mod:`engine.core.store.migrate`
migrates it through here too:

* a **writer** (:func:`open_writer`): WAL, a busy timeout, and ``synchronous=NORMAL``: a commit
  survives a crash of the process at once, a power loss only once it is synced. The commits a
  promise rests on are synced before they return (``Database.transaction(..., synced=True)``:
  ``synchronous=FULL`` for them); in WAL mode that sync also takes every commit before it to disk;
* a **reader** (:func:`open_reader`): read-only, and it changes no byte of any file, not even by
  creating the ``-wal`` and ``-shm`` files SQLite keeps beside a WAL database. A database whose
  WAL holds nothing is whole in its main file and is read as immutable (nothing is created or
  locked); one whose WAL holds commits is read through it, read-only.

A write the file system refuses — full, read-only, failing — becomes one error,
:class:`~engine.core.errors.JournalUnwritable` (:func:`journal_fault`); the artifacts folder's
writes too (:func:`probe_folder` asks whether it takes them again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from engine.core.errors import JournalError, JournalUnwritable

log = logging.getLogger(__name__)

FULL = "the journal's disk is full"
READ_ONLY = "the journal's file system is read-only"
FAILING = "the journal's disk fails to write (I/O error)"
BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another connection's transaction before it is refused."""
_ALMOST_FULL = 64 * 1024
"""Free bytes below which an I/O error SQLite reports is taken for a full disk (it says "disk I/O
error" when it cannot grow its ``-shm`` file)."""


def journal_fault(exc: BaseException, path: Path, doing: str) -> JournalError:
    """``exc`` as Cairn says it: :class:`JournalUnwritable` for a disk that refuses writes, else a
    :class:`JournalError` naming what could not be done (``doing``) and where."""
    problem = _disk_problem(exc, path)
    if problem:
        return JournalUnwritable(problem, str(path), _detail(exc))
    return JournalError(f"cannot {doing} at {path}: {exc}")


def _disk_problem(exc: BaseException, path: Path) -> str:
    """Which of FULL, READ_ONLY, FAILING ``exc`` is ("" when it is not a fault of the file system)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if exc.errno == errno.EROFS:
            return READ_ONLY
        return _why_io_failed(path) if exc.errno == errno.EIO else ""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name == "SQLITE_FULL":
            return FULL
        if name.startswith("SQLITE_IOERR"):
            return _why_io_failed(path)
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):  # a -wal it cannot create, say
            problem = _why_io_failed(path)
            return "" if problem == FAILING else problem  # else a file's permissions: said as it is
    return ""


def _detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc)


def _why_io_failed(path: Path) -> str:
    """An I/O error is a full disk when the file system has no room left, read-only when it is."""
    stat = _statvfs(path)
    if stat is None:
        return FAILING
    if stat.f_flag & os.ST_RDONLY:
        return READ_ONLY
    free = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return FULL if free * stat.f_frsize < _ALMOST_FULL else FAILING


def _statvfs(path: Path) -> os.statvfs_result | None:
    """The file system ``path`` is (or would be) on: its nearest existing folder's."""
    for folder in (path, *path.parents):
        try:
            return os.statvfs(folder)
        except OSError:
            continue
    return None


def open_writer(path: Path, schema: str, *, what: str, hint: str = "") -> sqlite3.Connection:
    """A connection that writes ``path`` (created with its folder if missing), ``schema`` applied.

    ``what`` names the store in errors (``the journal``); ``hint`` ends the message of an error
    that is not the disk's (where else to put it)."""
    try:
        _create_private(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise _open_failed(exc, path, what, hint) from exc
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # synced() where a commit must survive a power loss
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        db.close()
        raise _open_failed(exc, path, what, hint) from exc
    return db


def _create_private(path: Path) -> None:
    """Create ``path``'s folder (``0700``) and an empty ``path`` (``0600``) if missing.

    A journal holds every command, output and decision: readable by its owner only, unless the
    owner opens it up (a shared team folder made by hand keeps its own modes). SQLite gives its
    ``-wal`` and ``-shm`` files the database file's mode; the artifacts live in the same folder."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _open_failed(exc: BaseException, path: Path, what: str, hint: str) -> JournalError:
    fault = journal_fault(exc, path, f"open {what}")
    if isinstance(fault, JournalUnwritable) or not hint:
        return fault
    return JournalError(f"{fault}; {hint}")


def open_reader(path: Path, *, what: str) -> sqlite3.Connection | None:
    """A read-only connection to ``path`` that writes no file; ``None`` when there is no such file.

    With nothing in the ``-wal`` file (or none: the last writer folded it in), the main file holds
    every commit and is opened ``immutable``: no lock, no ``-shm``, nothing created. With commits
    in the WAL it is read through it (``mode=ro``): SQLite then uses the ``-shm`` index a writer
    made, which changes neither the database nor its WAL. One race is left: a writer that commits
    and folds its WAL into the main file while an immutable read is under way; that read then
    misses the commit, or fails saying the file cannot be read (run it again), never writes.
    """
    if not path.is_file():
        return None
    wal = path.with_name(path.name + "-wal")
    try:
        whole = wal.stat().st_size == 0
    except FileNotFoundError:
        whole = True
    uri = f"file:{quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if whole else "")
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read {what} at {path}: {exc}") from exc
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a file it cannot read says so here
    except sqlite3.Error as exc:
        db.close()
        raise JournalError(f"cannot read {what} at {path}: {exc}") from exc
    return db


def probe_folder(folder: Path) -> None:
    """Write and remove a small file in ``folder`` (made if missing): :class:`JournalUnwritable` or
    :class:`JournalError` while the file system refuses it."""
    probe = folder / ".cairn-probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise journal_fault(exc, folder, "write the journal's artifacts") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
