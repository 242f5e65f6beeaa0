"""Writing incident reports to disk: one report file, the TUI's pair, and the bundle tarball.

Every file is written the same way: into a temporary file beside the target (mode 0600: it holds
commands and output of hosts), synced, then renamed over the target, so a reader never sees half
a file and a full disk or a read-only folder leaves nothing behind. A failure is a
:class:`~engine.core.errors.CairnError` saying which file and why, in one line.

The bundle (``--bundle FILE.tar.gz``) is a gzip tarball with one top folder
``cairn-run-<run id>/``: ``report.md``, ``report.html``, ``run.json`` (the run record as data, its
runbook text in ``runbook.yaml`` instead), ``runbook.yaml`` (the text as run), every regular file
of the run's artifacts folder under ``artifacts/`` (:mod:`engine.core.incident_artifacts`: no
symbolic link is followed; what was skipped is in the report's notes) and ``MANIFEST.sha256``, which
``sha256sum -c MANIFEST.sha256`` checks from inside the top folder. Everything in it was redacted
when it was journaled; nothing is added that was not.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.core.errors import CairnError
from engine.core.incident_artifacts import ArtifactFile, ArtifactScan, open_artifact, scan_artifacts
from engine.core.incident_html import html_report
from engine.core.incident_render import markdown_report
from engine.core.incident_report import build_report
from engine.core.model import host_folder
from engine.core.render import as_data

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord
    from engine.core.queue_decisions import Decisions

MANIFEST = "MANIFEST.sha256"
ARTIFACTS = "artifacts"


@dataclass(frozen=True, slots=True)
class Bundle:
    """What :func:`write_bundle` wrote: the tarball, its top folder, the files it holds (manifest
    order), and what it left out of the artifacts."""

    path: Path
    top: str
    files: tuple[str, ...]
    skipped: tuple[str, ...]


def write_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (0600); the path written."""
    data = text.encode("utf-8")
    _atomically(path, lambda out: out.write(data))
    return path


def write_reports(
    run: RunRecord, decisions: Decisions | None, folder: Path, *, stem: str | None = None
) -> tuple[Path, Path]:
    """``cairn-report-<run id>.md`` and ``.html`` in ``folder`` (the TUI's "report"); both paths."""
    report = build_report(run, decisions)
    name = stem or f"cairn-report-{host_folder(run.id)}"  # a run id is a name, never a path
    markdown = write_file(folder / f"{name}.md", markdown_report(report))
    page = write_file(folder / f"{name}.html", html_report(report))
    return markdown, page


def run_data(run: RunRecord, decisions: Decisions | None) -> dict[str, Any]:
    """The run record as ``run.json`` holds it: as ``cairn show-run --json`` gives it, the runbook
    text replaced by the name of the file that holds it."""
    from engine.core.queue_decisions import decisions_data, entry_data  # noqa: PLC0415

    data: dict[str, Any] = as_data(run)
    data.pop("runbook_text", None)
    data["runbook_file"] = "runbook.yaml"
    data["decisions"] = (
        None if decisions is None else {"entry": entry_data(decisions.entry)} | decisions_data(decisions)
    )
    return data


def write_bundle(run: RunRecord, decisions: Decisions | None, path: Path) -> Bundle:
    """The run's bundle at ``path`` (see the module's docstring)."""
    top = f"cairn-run-{host_folder(run.id)}"
    scan = scan_artifacts(run.artifacts)
    written: dict[str, list[str]] = {"files": [], "skipped": []}

    def fill(out: IO[bytes]) -> None:
        mtime = int(run.finished_at or run.started_at)
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            packer = _Packer(tar, top, mtime)
            packer.folder("")
            bundled, lost = packer.artifacts(scan)
            kept = replace(scan, files=bundled, skipped=(*scan.skipped, *lost))
            report = build_report(run, decisions, scan=kept, output_base=ARTIFACTS, notes=_notes(scan))
            packer.text("report.md", markdown_report(report))
            packer.text("report.html", html_report(report))
            packer.text("run.json", json.dumps(run_data(run, decisions), indent=2, default=str) + "\n")
            packer.text("runbook.yaml", run.runbook_text)
            packer.text(MANIFEST, "".join(f"{digest}  {name}\n" for name, digest in packer.digests))
            written["files"] = [name for name, _ in packer.digests]
            written["skipped"] = [*kept.skipped]

    _atomically(path, fill)
    return Bundle(path=path, top=top, files=tuple(written["files"]), skipped=tuple(written["skipped"]))


def _notes(scan: ArtifactScan) -> list[str]:
    if scan.found and not scan.problem:
        return [f"the artifacts folder {scan.folder} is bundled under {ARTIFACTS}/ (regular files only)"]
    return ["this bundle holds no artifacts: only report.md, report.html, run.json and runbook.yaml"]


class _Packer:
    """Adds members under the top folder and keeps each file's SHA-256 for the manifest."""

    def __init__(self, tar: tarfile.TarFile, top: str, mtime: int) -> None:
        self.tar, self.top, self.mtime = tar, top, mtime
        self.digests: list[tuple[str, str]] = []
        self._folders: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(f"{self.top}/{name}".rstrip("/"))
        info.type, info.mode, info.mtime = kind, mode, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def folder(self, name: str) -> None:
        """The folder ``name`` (and those above it), once."""
        parts = [p for p in name.split("/") if p]
        for depth in range(len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub not in self._folders:
                self._folders.add(sub)
                self.tar.addfile(self._info(sub, tarfile.DIRTYPE, 0o700, self.mtime))

    def text(self, name: str, text: str) -> None:
        data = text.encode("utf-8")
        info = self._info(name, tarfile.REGTYPE, 0o600, self.mtime)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        self.digests.append((name, hashlib.sha256(data).hexdigest()))

    def artifacts(self, scan: ArtifactScan) -> tuple[tuple[ArtifactFile, ...], list[str]]:
        """Every file of ``scan`` under ``artifacts/``: the ones bundled, and why any was not."""
        if not scan.found or scan.problem:
            return (), []
        bundled: list[ArtifactFile] = []
        lost: list[str] = []
        for item in scan.files:
            name = f"{ARTIFACTS}/{item.path}"
            try:
                fd, size = open_artifact(scan.folder, item.path)
            except OSError as exc:  # swapped for a link, or removed, since the scan
                lost.append(f"{item.path}: changed since it was listed ({exc.strerror or exc}), left out")
                continue
            try:  # a read error past this point fails the whole bundle: the tar would be torn
                self.folder(name.rpartition("/")[0])
                info = self._info(name, tarfile.REGTYPE, 0o600, int(os.fstat(fd).st_mtime))
                info.size = size
                reader = _HashingReader(fd, size)
                self.tar.addfile(info, reader)
            finally:
                os.close(fd)
            if reader.short:
                lost.append(f"{item.path}: shrank while it was read; its end is NUL bytes in the bundle")
            self.digests.append((name, reader.digest.hexdigest()))
            bundled.append(replace(item, size=size))
        return tuple(bundled), lost


class _HashingReader:
    """Exactly ``size`` bytes of ``fd`` for tarfile, hashed as they go; NULs if the file shrank."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left = fd, size
        self.digest = hashlib.sha256()
        self.short = False

    def read(self, wanted: int = -1) -> bytes:
        wanted = self.left if wanted < 0 else min(wanted, self.left)
        data = os.read(self.fd, wanted) if wanted else b""
        while len(data) < wanted:
            more = os.read(self.fd, wanted - len(data))
            if not more:
                self.short = True  # the tar header already promised `size` bytes: keep the promise
                data += b"\0" * (wanted - len(data))
                break
            data += more
        self.left -= len(data)
        self.digest.update(data)
        return data


def _atomically(path: Path, fill: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``fill`` into a 0600 temporary file beside it, synced, then renamed."""
    target = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise CairnError(f"cannot write {target}: {_why(exc, target)}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CairnError(f"cannot write {target}: {_why(exc, target)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _why(exc: OSError, target: Path) -> str:
    """An OS error as the reason a file could not be written."""
    if exc.errno == errno.ENOENT and not target.parent.is_dir():
        return f"the folder {target.parent} does not exist"
    if exc.errno == errno.ENOSPC:
        return "the disk is full (No space left on device)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EISDIR,) or target.is_dir():
        return "it is a folder; name a file"
    return exc.strerror or str(exc)
