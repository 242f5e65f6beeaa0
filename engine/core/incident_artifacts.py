"""A run's artifacts folder as the incident report and its bundle read it: files only, links never followed.

The folder (:mod:`engine.core.journal_artifacts`: ``runbook.yaml``, ``<host>/<phase>.<step>.stdout``
and ``.stderr``, ansible's data dirs) holds what the run wrote, but anyone who could write there
could also have planted a symbolic link to a file of this machine (``/etc/shadow``), a FIFO that
blocks a reader, or a name a manifest cannot hold. :func:`scan_artifacts` lists the regular files
and says what it skipped and why; :func:`open_artifact` opens one of them again, walking the path
one folder at a time with ``O_NOFOLLOW`` so that a link swapped in after the scan is refused too.
The run's lock file (:data:`~engine.core.run_liveness.LOCK_FILE`) is the journal's, not an artifact.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.core.model import host_folder
from engine.core.run_liveness import LOCK_FILE
from engine.core.visible import visible

MAX_DEPTH = 32
"""Folders deeper than this are not read (ansible's data dirs are about six deep)."""
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO cannot hang us
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_UNSAFE_NAME = ("\n", "\r", "\\")
"""Characters ``sha256sum`` writes escaped in a manifest: such names are skipped, not mangled."""


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One regular file of the folder: its path inside it (``/``-separated) and its size."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class ArtifactScan:
    """What the artifacts folder holds: its regular files (sorted) and everything skipped, with why."""

    folder: str
    found: bool
    """Whether the folder exists (a run journaled on another machine, or cleaned up, has none here)."""
    files: tuple[ArtifactFile, ...] = ()
    skipped: tuple[str, ...] = ()
    """``git-lab/evil: a symbolic link (to /etc/passwd), not followed``, one line each."""
    problem: str = ""
    """Why the folder could not be read, when it exists but cannot be (``""``: it could)."""

    def has(self, path: str) -> bool:
        """Whether ``path`` is one of the regular files listed."""
        return any(f.path == path for f in self.files)


def output_path(host: str, phase: str, step_id: str, stream: str) -> str:
    """Where a step's complete output is, inside the artifacts folder: ``git-lab/detect.look.stdout``."""
    return f"{host_folder(host)}/{phase}.{step_id}.{stream}"


def scan_artifacts(folder: str | Path) -> ArtifactScan:
    """The regular files under ``folder`` (never through a symbolic link) and what was skipped."""
    where = str(folder)
    if not where:
        return ArtifactScan(folder=where, found=False)
    try:
        top = os.open(where, _OPEN_DIR)
    except FileNotFoundError:
        return ArtifactScan(folder=where, found=False)
    except OSError as exc:
        if Path(where).is_symlink():
            return ArtifactScan(
                folder=where, found=True, problem="the folder is a symbolic link: not followed"
            )
        return ArtifactScan(folder=where, found=True, problem=exc.strerror or str(exc))
    files: list[ArtifactFile] = []
    skipped: list[str] = []
    try:
        _walk(top, "", 0, files, skipped)
    finally:
        os.close(top)
    return ArtifactScan(folder=where, found=True, files=tuple(files), skipped=tuple(skipped))


def _walk(folder_fd: int, prefix: str, depth: int, files: list[ArtifactFile], skipped: list[str]) -> None:
    """Add the regular files under the open folder ``folder_fd`` (named ``prefix``) to ``files``."""
    try:
        with os.scandir(folder_fd) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(f"{prefix or '.'}: cannot be listed ({exc.strerror or exc})")
        return
    for entry in entries:
        path = prefix + entry.name
        shown = visible(path)
        if prefix == "" and entry.name == LOCK_FILE:
            continue  # the run's liveness lock, empty: the journal's, not the run's output
        if any(c in entry.name for c in _UNSAFE_NAME) or not _encodable(entry.name):
            skipped.append(f"{shown}: a name a manifest cannot hold (newline, backslash or not UTF-8)")
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            skipped.append(f"{shown}: cannot be read ({exc.strerror or exc})")
            continue
        if stat.S_ISLNK(info.st_mode):
            skipped.append(
                f"{shown}: a symbolic link (to {visible(_link_target(folder_fd, entry.name))}), not followed"
            )
        elif stat.S_ISDIR(info.st_mode):
            _walk_folder(folder_fd, entry.name, path, depth, files, skipped)
        elif stat.S_ISREG(info.st_mode):
            files.append(ArtifactFile(path=path, size=info.st_size))
        else:
            skipped.append(f"{shown}: not a regular file (a FIFO, socket or device), not read")


def _walk_folder(
    parent_fd: int, name: str, path: str, depth: int, files: list[ArtifactFile], skipped: list[str]
) -> None:
    if depth + 1 >= MAX_DEPTH:
        skipped.append(f"{visible(path)}: deeper than {MAX_DEPTH} folders, not read")
        return
    try:
        child = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
    except OSError as exc:
        skipped.append(f"{visible(path)}: cannot be opened ({exc.strerror or exc})")
        return
    try:
        _walk(child, path + "/", depth + 1, files, skipped)
    finally:
        os.close(child)


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 come back as lone surrogates
        return False
    return True


def _link_target(folder_fd: int, name: str) -> str:
    try:
        return os.readlink(name, dir_fd=folder_fd)
    except OSError:
        return "?"


def open_artifact(folder: str | Path, path: str) -> tuple[int, int]:
    """Open ``folder/path`` to read, refusing a symbolic link anywhere below ``folder`` and anything
    but a regular file: ``(file descriptor, size)``, the descriptor the caller's to close; raises
    :class:`OSError` otherwise."""
    parts = path.split("/")
    folders: list[int] = []
    try:
        folders.append(os.open(str(folder), _OPEN_DIR))
        for part in parts[:-1]:
            folders.append(os.open(part, _OPEN_DIR, dir_fd=folders[-1]))
        fd = os.open(parts[-1], _OPEN_FILE, dir_fd=folders[-1])
    finally:
        for each in folders:
            os.close(each)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd, info.st_size


def tail_of(folder: str | Path, path: str, lines: int, *, keep: int = 64 * 1024) -> tuple[list[str], int]:
    """The last ``lines`` lines of an artifact file and how many lines it has, reading it once in
    pieces (an output may be megabytes); only its last ``keep`` bytes are decoded."""
    count = 0
    last = b""
    ends_with_newline = True
    fd, _size = open_artifact(folder, path)
    try:
        while chunk := os.read(fd, 1 << 20):
            count += chunk.count(b"\n")
            last = (last + chunk)[-keep:]
            ends_with_newline = chunk.endswith(b"\n")
    finally:
        os.close(fd)
    if last and not ends_with_newline:
        count += 1  # a last line without its newline is a line
    text = last.decode("utf-8", errors="replace")
    shown = text.removesuffix("\n").split("\n") if text else []
    return shown[-lines:], count
