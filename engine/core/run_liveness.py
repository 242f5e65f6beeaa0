"""Whether a run the journal says is ``running`` still has a process behind it.

A run is held one of two ways, and read by whoever opens the journal (readers show a dead run
as interrupted without writing; a writer's :meth:`~engine.core.journal.Journal.reconcile`
records it so):

* by a **holder** (``runs.holder`` set): a process registered in ``holders`` whose lease is
  renewed by heartbeat (:mod:`engine.core.store.leases`). The run is alive while its holder is
  ``live`` and its lease has not run out *by the database's clock* — the one clock every server
  on a shared PostgreSQL agrees on — whatever machine reads it;
* by **a lock file** (no holder): the process running it holds an ``flock`` on
  ``<artifacts>/.lock``; the run is alive while somebody holds that lock. Only processes on the
  machine holding the artifacts folder can see it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from engine.core.store.database import Database
from engine.core.store.leases import machine_id, process_start

LOCK_FILE = ".lock"
"""The file in a run's artifacts folder whose ``flock`` its process holds."""


def held_sql(db: Database, runs: str = "r", holders: str = "h") -> str:
    """A column for ``SELECT … FROM runs {runs} LEFT JOIN holders {holders} ON {holders}.id = {runs}.holder``:
    ``NULL`` when the run has no holder (its lock file says), ``''`` when its holder's lease does not
    hold, else where its holder runs (``MACHINE|PID|START``, for :func:`alive`)."""
    return (
        f"CASE WHEN {runs}.holder IS NULL THEN NULL"
        f" WHEN {holders}.state = 'live' AND {holders}.lease_until > {db.now}"
        f" THEN {holders}.machine || '|' || CAST({holders}.pid AS TEXT) || '|' || {holders}.pid_start"
        " ELSE '' END"
    )


def alive(held: object, artifacts: str) -> bool:
    """Whether a ``running`` run is alive: by its holder's lease (``held`` from :func:`held_sql`) — and,
    when the holder is a process on this machine, by that process being there (a run killed here reads
    interrupted at once, not when its lease runs out) — else by its lock file in ``artifacts``."""
    if held is None:
        return lock_held(Path(artifacts) / LOCK_FILE)
    if not held:
        return False
    machine, pid, start = str(held).rsplit("|", 2)
    if machine == machine_id():
        return process_start(int(pid)) == start
    return True


def lock_held(path: Path) -> bool:
    """True when another open file description holds ``path``'s lock (its run is alive).

    Opened read-only: asking never creates or changes the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody can hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def take_lock(folder: Path) -> IO[bytes]:
    """Hold ``folder``'s lock file for as long as the returned file is open (the run is alive)."""
    lock = (folder / LOCK_FILE).open("wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        lock.close()
        raise
    return lock
