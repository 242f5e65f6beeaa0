"""A run's artifacts folder: the runbook as it ran and every step's complete output, on this machine.

``<root>/<run id>/runbook.yaml`` and ``<root>/<run id>/<host>/<phase>.<step>.stdout|stderr``,
where ``root`` is ``runs/`` beside a SQLite journal, or this machine's state folder for a
journal on PostgreSQL (:attr:`engine.core.store.location.Location.artifacts_root`: each machine
keeps the output of the runs it ran). Output is appended as it arrives and flushed line by
line, never synced (the database keeps a bounded copy, synced where it matters). While its run
goes, the process holds the folder's lock file (:mod:`engine.core.run_liveness`).

Every call may raise :class:`OSError`; the journal says it as the disk's fault.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

from engine.core.events import StepOutput
from engine.core.model import host_folder
from engine.core.run_liveness import take_lock

OutputKey = tuple[str, str, str, str, str]
"""(run id, host, phase, step id, stream)."""


class RunArtifacts:
    """The artifacts folders under ``root`` of the runs one journal writes, and their open files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, IO[bytes]] = {}
        self._outputs: dict[OutputKey, IO[str]] = {}

    def start(self, run_id: str, runbook_text: str) -> Path:
        """Make the run's folder, write the runbook into it and hold its lock; the folder."""
        folder = self.root / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "runbook.yaml").write_text(runbook_text, encoding="utf-8")
        self._locks[run_id] = take_lock(folder)
        return folder

    def holds(self, run_id: str) -> bool:
        """Whether this process holds the run's lock (it is running it)."""
        return run_id in self._locks

    def output(self, event: StepOutput) -> None:
        """Append one chunk of a step's output to its file."""
        key = (event.run_id, event.host, event.phase.value, event.step_id, event.stream)
        handle = self._outputs.get(key)
        if handle is None:
            folder = self.root / event.run_id / host_folder(event.host)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{event.phase.value}.{event.step_id}.{event.stream}"
            handle = self._outputs[key] = (folder / name).open("a", encoding="utf-8")
        handle.write(event.text)
        handle.flush()

    def step_done(self, run_id: str, host: str, phase: str, step_id: str) -> None:
        """Close the step's output files."""
        for stream in ("stdout", "stderr"):
            handle = self._outputs.pop((run_id, host, phase, step_id, stream), None)
            if handle:
                handle.close()

    def release(self, run_id: str) -> None:
        """The run ended: let go of its lock (readers then see no process behind it)."""
        lock = self._locks.pop(run_id, None)
        if lock:
            lock.close()

    def drop(self, run_id: str) -> None:
        """The run's record stopped: close its files (what they still buffer is lost) and its lock."""
        for key in [k for k in self._outputs if k[0] == run_id]:
            with contextlib.suppress(OSError):
                self._outputs.pop(key).close()
        self.release(run_id)

    def close(self) -> None:
        """Close every file and lock (a full disk cannot make this fail)."""
        for output in self._outputs.values():
            with contextlib.suppress(OSError):  # what it still buffers cannot be written: it is lost
                output.close()
        self._outputs.clear()
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()
