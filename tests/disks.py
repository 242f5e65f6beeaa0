"""A small tmpfs that fills and empties: the disk-full tests of the journal, the queue, `cairn run` and
`cairn serve` (mounting needs root, as CI runs)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs of ``size`` at ``root``: :meth:`fill` takes every free byte, :meth:`free` gives them back."""

    def __init__(self, root: Path, size: str = "8m") -> None:
        self.root = root
        self.size = size
        self._filler = root / ".filler"
        self._views: list[Path] = []

    def mount(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                "this test fills a small file system of its own: it needs root, to mount a tmpfs "
                f"(mount -t tmpfs said: {done.stderr.strip() or done.returncode})",
                pytrace=False,
            )

    def read_only_view(self) -> Path:
        """The same files, mounted again read-only beside the disk (as a file system remounted ro)."""
        view = self.root.with_name(self.root.name + "-read-only")
        view.mkdir(exist_ok=True)
        for command in (
            ["mount", "--bind", str(self.root), str(view)],
            ["mount", "-o", "remount,bind,ro", str(view)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
        self._views.append(view)
        return view

    def unmount(self) -> None:
        for mounted in [*self._views, self.root]:
            if subprocess.run(["umount", str(mounted)], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", str(mounted)], capture_output=True, check=False)

    def fill(self) -> None:
        """Write until the file system refuses even one byte more."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink()


def files_of(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder`` but the filler: size, mtime and bytes.

    Of a ``-shm`` file only its size: it is SQLite's shared-memory index of the WAL, which every
    reader of a WAL database writes its read marks into (the database and its WAL it never writes).
    """
    return {
        str(p.relative_to(folder)): (p.stat().st_size, 0, b"")
        if p.name.endswith("-shm")
        else (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".filler"
    }
