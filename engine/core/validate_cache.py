"""``cairn validate``'s per-file verdicts, kept between runs in the user's cache folder.

A runbook file's problems and warnings depend only on its bytes, the name it is shown under
(every problem carries it; a file without an ``id`` is known by its name) and the validator.
One index file per validator and list of searched paths (``cairn validate runbooks`` has its
own) maps each file's name to the sha256 of its bytes and its verdict. The validator is this
index's format, Cairn's version, Python's, Jinja's and PyYAML's, and the bytes of the checking
code (``engine/core/*.py`` and ``engine/core/schema/*``: a developer's edit to a check starts a
new index). A file whose bytes changed no longer matches its sha256: its old verdict is never
used. Each pass rewrites the index with the files it found, so it never grows past them.

Not cached, checked every time: files that name an Ansible ``playbook`` (their validity depends
on the playbook file beside them) and files that are not regular, too large or unreadable.
Checks across files (duplicate ids) run on every pass, over the cached and the fresh verdicts.

The index is plain JSON written through :mod:`engine.core.user_cache` (atomically, best-effort:
two passes at once leave one complete index); one that is corrupt, of another shape, unreadable
or unwritable is ignored (a debug log) and the files checked again. Safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import user_cache
from engine.core.errors import Problem
from engine.core.loader import (
    LoadResult,
    check_document,
    duplicate_id,
    id_line,
    map_in_workers,
    runbook_files,
)
from engine.core.yamlsource import MAX_BYTES, parse_yaml_bytes, read_yaml_file

log = logging.getLogger(__name__)

INDEX_FORMAT = "validate-index-1"
"""Changed whenever the index's shape or meaning changes: older indexes are then never read."""
UNCACHEABLE_MARK = b"playbook"
"""A file holding this word may name a playbook beside it: its verdict depends on another file."""


@dataclass(frozen=True, slots=True)
class ValidationPass:
    """Every runbook file's verdict, in file order, and how many came from the cache."""

    results: list[LoadResult]
    """Verdicts without the model (``runbook`` is None): a file is valid when it has no problems."""
    from_cache: int
    index: Path | None
    """The cache index used; None when caching is off."""


@dataclass(frozen=True, slots=True)
class _Pending:
    """A file to check (in a worker), with its bytes when they were read for the cache."""

    path: Path
    raw: bytes | None


@dataclass(frozen=True, slots=True)
class _Verdict:
    result: LoadResult
    id_line: int
    """Line of the ``id:`` key of a valid runbook, where a duplicate id is reported (0 when invalid)."""


def validate_paths(paths: Iterable[Path], *, jobs: int = 1, use_cache: bool = True) -> ValidationPass:
    """Check every runbook file under ``paths`` (``jobs`` forked workers for the ones not cached)."""
    paths = list(paths)
    files = runbook_files(paths)
    index = _index_path(paths) if use_cache else None
    known = _read_index(index) if index is not None else {}
    verdicts: list[_Verdict | None] = []
    pending: list[_Pending] = []
    sums: dict[str, str] = {}  # name -> sha256 of the bytes checked, for every cacheable file
    for file in files:
        name = str(file)
        raw = _cacheable_bytes(file) if index is not None else None
        verdict = None
        if raw is not None:
            sums[name] = hashlib.sha256(raw).hexdigest()
            verdict = _from_record(known.get(name), sums[name], name)
        verdicts.append(verdict)
        if verdict is None:
            pending.append(_Pending(file, raw))
    fresh = iter(map_in_workers(_check, pending, jobs))
    merged = [v if v is not None else next(fresh) for v in verdicts]
    from_cache = len(files) - len(pending)
    if index is not None and (from_cache < len(sums) or len(known) != len(sums)):
        records = {v.result.path: _as_record(v, sums[v.result.path]) for v in merged if v.result.path in sums}
        user_cache.write_entry(index, {"format": INDEX_FORMAT, "files": records})
    log.debug("%d of %d runbook files from the cache %s", from_cache, len(files), index)
    return ValidationPass(_unique_ids(merged), from_cache, index)


def _index_path(paths: list[Path]) -> Path | None:
    """Where the index for these searched paths lives (relative ones from this folder); None when
    caching is off or impossible."""
    folder = user_cache.cache_folder("validate")
    validator = validator_digest() if folder is not None else None
    if folder is None or validator is None:
        return None
    try:
        here = os.getcwd()
    except OSError:  # the working folder was removed: relative names could mean anything
        return None
    return folder / f"{user_cache.digest(validator, here, *map(str, paths))}.json"


def validator_digest() -> str | None:
    """What the verdicts depend on besides the file: versions and the checking code; None if unreadable."""
    import jinja2  # noqa: PLC0415 - already imported by the checks; only their versions are read
    import yaml  # noqa: PLC0415

    from engine import __version__  # noqa: PLC0415

    core = Path(__file__).parent
    try:
        schema = (p for p in (core / "schema").iterdir() if p.suffix in (".py", ".json"))
        sources = sorted(core.glob("*.py")) + sorted(schema)
        code = [piece for source in sources for piece in (source.name, source.read_bytes())]
    except OSError as exc:
        log.debug("validate cache off: cannot read the checking code: %s", exc)
        return None
    return user_cache.digest(
        INDEX_FORMAT, __version__, sys.version, jinja2.__version__, yaml.__version__, *code
    )


def _read_index(index: Path) -> dict[str, Any]:
    """The index's records by file name; empty when it is absent or not one this version wrote."""
    stored = user_cache.read_entry(index)
    if stored is None:
        return {}
    files = stored.get("files") if isinstance(stored, dict) else None
    if not isinstance(files, dict) or stored.get("format") != INDEX_FORMAT:
        log.debug("validate cache index %s ignored: not an index of this version", index)
        return {}
    return files


def _cacheable_bytes(file: Path) -> bytes | None:
    """The file's bytes when its verdict may be cached: a regular file within the size limit, naming no playbook."""
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):
            return None
        with open(file, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError:
        return None  # checked directly, which reports why it cannot be read
    if len(raw) > MAX_BYTES or UNCACHEABLE_MARK in raw:
        return None
    return raw


def _check(item: _Pending) -> _Verdict:
    """Check one file: from the bytes whose sha256 the index will hold, when there are some."""
    name = str(item.path)
    doc = read_yaml_file(item.path) if item.raw is None else parse_yaml_bytes(item.raw, name)
    result = check_document(doc, build=False)  # the verdict only: the model is not needed
    return _Verdict(result, 0 if result.problems else id_line(doc.text))


def _as_record(verdict: _Verdict, sha256: str) -> dict[str, Any]:
    result = verdict.result
    return {
        "sha256": sha256,
        "id": result.declared_id,
        "id_line": verdict.id_line,
        "problems": [[p.line, p.column, p.pointer, p.message] for p in result.problems],
        "warnings": [[p.line, p.column, p.pointer, p.message] for p in result.warnings],
    }


def _from_record(record: Any, sha256: str, name: str) -> _Verdict | None:
    """The verdict a record holds for these bytes; None (a debug line if it is damaged) otherwise."""
    if record is None:
        return None
    try:
        if record["sha256"] != sha256:
            return None  # the file changed since
        declared, line = record["id"], record["id_line"]
        if not isinstance(declared, str) or type(line) is not int:
            raise TypeError("id or id_line of the wrong type")
        problems = _problems(record["problems"], name)
        warnings = _problems(record["warnings"], name)
    except (KeyError, TypeError, ValueError) as exc:
        log.debug("validate cache record for %s ignored: %s", name, exc)
        return None
    return _Verdict(LoadResult(name, None, problems, declared, warnings), line)


def _problems(rows: Any, name: str) -> tuple[Problem, ...]:
    if not isinstance(rows, list):
        raise TypeError("problems are not a list")
    found = []
    for row in rows:
        line, column, pointer, message = row
        if type(line) is not int or type(column) is not int:
            raise TypeError("a position is not a number")
        if not isinstance(pointer, str) or not isinstance(message, str):
            raise TypeError("a pointer or message is not text")
        found.append(Problem(name, line, column, pointer, message))
    return tuple(found)


def _unique_ids(verdicts: Iterable[_Verdict]) -> list[LoadResult]:
    """The results in order, a valid runbook whose id an earlier file has turned into that problem
    (as :func:`engine.core.loader.load_library` reports it)."""
    seen: dict[str, str] = {}
    results: list[LoadResult] = []
    for verdict in verdicts:
        result = verdict.result
        if not result.problems:
            if result.declared_id in seen:
                first = seen[result.declared_id]
                problem = duplicate_id(result.path, verdict.id_line, result.declared_id, first)
                result = LoadResult(result.path, None, (problem,), result.declared_id)
            else:
                seen[result.declared_id] = result.path
        results.append(result)
    return results
