"""YAML file -> validated :class:`~engine.core.model.Runbook`, or every problem with file:line.

The only place that turns dicts into the model. Reading (:mod:`engine.core.yamlsource`),
the schema (:mod:`engine.core.schema`) and the semantic checks (:mod:`engine.core.semantics`)
each add problems; a runbook is built only when there are none.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.core import schema, semantics
from engine.core.errors import Problem, RunbookInvalid, RunbookNotFound
from engine.core.model import (
    DEFAULT_TIMEOUT,
    Action,
    AnsibleAction,
    InputSpec,
    InputType,
    ManualAction,
    OnTimeout,
    ParseKind,
    ParseSpec,
    Reference,
    RunAction,
    Runbook,
    Severity,
    Step,
    Trigger,
    duration_value,
    parse_duration,
)
from engine.core.yamlsource import Document, parse_yaml_bytes, read_yaml_file

log = logging.getLogger(__name__)

RUNBOOK_SUFFIXES = (".yaml", ".yml")
LAB_SUFFIXES = (".lab.yaml", ".lab.yml")
"""A runbook's practice lab, declared beside it (``ID.lab.yaml``; :mod:`engine.lab.declared`): not a runbook."""
PLAYBOOKS = "playbooks"
"""Folders of this name hold Ansible playbooks beside the runbooks, not runbooks."""
TESTS_SUFFIX = ".tests"
"""``DIR/ID.tests/`` beside ``DIR/ID.yaml`` holds the runbook's test cases (:mod:`engine.core.replay`), never runbooks."""
_ID_LINE = re.compile(r"""^["']?id["']?\s*:""")
_Item = TypeVar("_Item")
_Out = TypeVar("_Out")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One file: the runbook when it is valid, else its problems."""

    path: str
    runbook: Runbook | None
    problems: tuple[Problem, ...] = ()
    declared_id: str = ""
    """The ``id`` the file declares, even when it is invalid."""
    warnings: tuple[Problem, ...] = ()
    """What may go wrong depending on the data (``cairn validate`` shows it; the file is still valid)."""


def check_document(doc: Document, *, build: bool = True) -> LoadResult:
    """Validate a parsed document and build its runbook when it has no problem (and ``build``: a
    verdict alone, as ``cairn validate`` needs, is a valid result without the runbook)."""
    warnings: list[Problem] = []
    if isinstance(doc.data, dict):
        # Even when reading found problems (a duplicate key, a tag), check the rest:
        # every problem in one pass. Values that could not be read are skipped.
        read_problems = len(doc.problems)
        for issue in schema.validate(doc.data):
            doc.add(issue.pointer, issue.message, key=issue.at_key)
        warnings = semantics.check(doc)
        if doc.broken:
            later = [p for p in doc.problems[read_problems:] if not _under(p.pointer, doc.broken)]
            doc.problems[read_problems:] = later
    elif not doc.problems:
        doc.add(
            "",
            f"a runbook is a mapping of keys (id, title, severity, …), but this file holds {_kind(doc.data)}",
        )
    problems = tuple(sorted(doc.problems, key=lambda p: (p.line, p.column, p.message)))
    declared = doc.data.get("id") if isinstance(doc.data, dict) else None
    declared_id = declared if isinstance(declared, str) else Path(doc.file).stem
    found = tuple(sorted(warnings, key=lambda p: (p.line, p.column, p.message)))
    if problems or not build:
        return LoadResult(doc.file, None, problems, declared_id, found)
    return LoadResult(doc.file, _build_runbook(doc.data, doc), (), declared_id, found)


def check_file(path: Path | str, *, display: str | None = None) -> LoadResult:
    """Load one file, collecting problems instead of raising."""
    return check_document(read_yaml_file(Path(path), display=display))


def check_text(text: str | bytes, name: str = "<text>") -> LoadResult:
    """Load a runbook from text (tests, stdin)."""
    # surrogatepass: text with lone surrogates becomes invalid UTF-8, reported as such.
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return check_document(parse_yaml_bytes(raw, name))


def _under(ptr: str, roots: set[str]) -> bool:
    return any(ptr == root or ptr.startswith(root + "/") for root in roots)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a single string"
    if value is None:
        return "only null (~)"
    if isinstance(value, bool):
        return "a single true/false value"
    return "a single number"


# --------------------------------------------------------------------------- building


def _build_runbook(data: dict[str, Any], doc: Document) -> Runbook:
    verify_raw = data.get("verify", "detect")
    return Runbook(
        id=data["id"],
        title=data["title"],
        severity=Severity(data["severity"]),
        summary=data["summary"],
        tags=tuple(data.get("tags", ())),
        symptoms=tuple(data.get("symptoms", ())),
        cause=data.get("cause", ""),
        references=tuple(Reference(r["title"], r["url"]) for r in data.get("references", ())),
        triggers=tuple(Trigger(tuple(t["matchers"]), t["target"]) for t in data.get("triggers", ())),
        inputs=tuple(_build_input(name, spec) for name, spec in data.get("inputs", {}).items()),
        targets=data.get("targets", "all"),
        requires=tuple(data.get("requires", ())),
        become=data.get("become", False),
        detect=_build_steps(data, "detect", doc),
        diagnose=_build_steps(data, "diagnose", doc),
        remediate=_build_steps(data, "remediate", doc),
        verify=() if verify_raw == "detect" else _build_steps(data, "verify", doc),
        verify_is_detect=verify_raw == "detect",
        source_path=doc.file,
        source_text=doc.text,
        sha256=hashlib.sha256(doc.text.encode("utf-8")).hexdigest(),
    )


def _build_input(name: str, spec: dict[str, Any]) -> InputSpec:
    kind = InputType(spec["type"])
    default = spec.get("default")
    choices = tuple(spec.get("choices", ()))
    if kind is InputType.DURATION:  # templates and -e values see durations as seconds
        default = duration_value(default) if default is not None else None
        choices = tuple(duration_value(c) for c in choices)
    return InputSpec(
        name=name,
        type=kind,
        description=spec.get("description", ""),
        default=default,
        has_default="default" in spec,
        secret=spec.get("secret", False),
        choices=choices,
    )


def _build_parse(raw: Any) -> ParseSpec:
    if raw is None:
        return ParseSpec()
    if isinstance(raw, str):
        return ParseSpec(kind=ParseKind(raw))
    if "regex" in raw:
        return ParseSpec(kind=ParseKind.REGEX, pattern=raw["regex"])
    table = raw["table"] or {}
    return ParseSpec(
        kind=ParseKind.TABLE,
        columns=tuple(table.get("columns", ())),
        separator=table.get("separator"),
    )


def _build_action(raw: dict[str, Any]) -> Action:
    """The step's action: the schema allows exactly one of ``run``, ``manual`` and ``ansible``."""
    if "run" in raw:
        return RunAction(raw["run"])
    if "manual" in raw:
        return ManualAction(raw["manual"])
    ansible = raw["ansible"]
    return AnsibleAction(
        module=ansible.get("module", ""),
        args=ansible.get("args"),
        playbook=ansible.get("playbook", ""),
        become=ansible.get("become", False),
    )


def _build_steps(data: dict[str, Any], phase: str, doc: Document) -> tuple[Step, ...]:
    steps = []
    for index, raw in enumerate(data.get(phase, ())):
        ptr = f"/{phase}/{index}"
        steps.append(
            Step(
                id=raw["id"],
                title=raw["title"],
                action=_build_action(raw),
                why=raw.get("why", ""),
                when=raw.get("when", ""),
                expect=raw.get("expect", ""),
                report=raw.get("report", ""),
                timeout=parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_TIMEOUT,
                on_timeout=OnTimeout(raw.get("on_timeout", "error")),
                parse=_build_parse(raw.get("parse")),
                exit_codes=tuple(raw.get("exit_codes", (0,))),
                confirm=raw.get("confirm", phase == "remediate"),
                automatic=raw.get("automatic", False),
                tradeoff=raw.get("tradeoff", ""),
                serial=str(raw.get("serial", "")),
                requires=tuple(raw.get("requires", ())),
                allow_unquoted=raw.get("allow_unquoted", ""),
                become=raw.get("become"),
                pointer=ptr,
                line=doc.where(ptr)[0],
            )
        )
    return tuple(steps)


# --------------------------------------------------------------------------- library


@dataclass
class Library:
    """Every runbook found in some folders or files, valid or not."""

    searched: list[str] = field(default_factory=list)
    results: list[LoadResult] = field(default_factory=list)

    @property
    def runbooks(self) -> list[Runbook]:
        """The valid runbooks, by id."""
        return sorted((r.runbook for r in self.results if r.runbook), key=lambda rb: rb.id)

    @property
    def invalid(self) -> list[LoadResult]:
        """Files that failed to load."""
        return [r for r in self.results if r.runbook is None]

    def get(self, runbook_id: str) -> Runbook:
        """The runbook with ``runbook_id``; a clear error when it is absent or invalid."""
        for result in self.results:
            if result.runbook and result.runbook.id == runbook_id:
                return result.runbook
        for result in self.invalid:
            if result.declared_id == runbook_id:
                raise RunbookInvalid(result.path, list(result.problems))
        raise RunbookNotFound(runbook_id, self.searched, [rb.id for rb in self.runbooks])


PARALLEL_FROM = 64
"""Fewer files than this are checked in-process: forking costs more than it saves."""


def _check_files(files: list[Path], jobs: int) -> list[LoadResult]:
    """``check_file`` for every file, in order; in forked worker processes when worth it."""
    return map_in_workers(check_file, files, jobs)


def map_in_workers(function: Callable[[_Item], _Out], items: list[_Item], jobs: int) -> list[_Out]:
    """``function`` over ``items``, in order; in ``jobs`` forked worker processes when there are many.

    ``function`` must be a module-level function (it is sent to the workers by name)."""
    if jobs <= 1 or len(items) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return [function(item) for item in items]
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    # Small chunks (~16 per worker): whichever worker finishes first takes the next, so the last
    # chunk leaves the other CPU idle for a short while only.
    chunk = max(8, len(items) // (jobs * 16))
    context = multiprocessing.get_context("fork")  # workers inherit the imported modules: no start-up cost
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(function, items, chunksize=chunk))


def runbook_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named by ``paths``: files as given, folders searched recursively; never lab files.

    A folder's symlinks to files count, symlinks to folders are not followed (as ``Path.rglob``)."""
    found: list[tuple[Path, str | None]] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(_folder_files(path, str(path.resolve())), key=lambda pair: pair[0]))
        elif not path.name.endswith(LAB_SUFFIXES):
            found.append((path, None))
    seen: set[str] = set()
    unique = []
    for file, real in found:
        key = real or str(file.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique


def _folder_files(folder: Path, real: str) -> Iterator[tuple[Path, str | None]]:
    """Runbook files under ``folder`` (whose real path is ``real``), each with its real path when that
    is known without asking the file system again (None for a symlink: resolved later)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # an unreadable folder holds no runbook we could read (as rglob skips it)
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if name != PLAYBOOKS and not name.endswith(TESTS_SUFFIX):
                    yield from _folder_files(folder / name, os.path.join(real, name))
            elif _is_runbook_name(name) and entry.is_file():
                yield folder / name, None if entry.is_symlink() else os.path.join(real, name)
        except OSError:
            continue


def _is_runbook_name(name: str) -> bool:
    """``name`` has a runbook's suffix (``.yaml`` alone is a hidden file without one) and is no lab file."""
    return (
        name.endswith(RUNBOOK_SUFFIXES) and name not in RUNBOOK_SUFFIXES and not name.endswith(LAB_SUFFIXES)
    )


def unique_files(files: Iterable[Path]) -> list[Path]:
    """``files`` in order, each once: a file named twice (itself and its folder) is read once."""
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique


def load_library(paths: Iterable[Path], *, jobs: int = 1) -> Library:
    """Load every runbook under ``paths``; duplicate ids are problems of the later file.

    ``jobs`` > 1 checks files in that many forked processes when there are many of
    them. Only a single-threaded caller (the CLI) may ask for it: forking a process
    that runs threads is unsafe.
    """
    paths = list(paths)
    library = Library([str(p) for p in paths], _with_unique_ids(_check_files(runbook_files(paths), jobs)))
    log.debug("loaded %d runbooks (%d invalid)", len(library.runbooks), len(library.invalid))
    return library


def _with_unique_ids(results: Iterable[LoadResult]) -> list[LoadResult]:
    """``results`` in order, a runbook whose id an earlier file already has turned into that problem.

    Every other result is passed on as it is (the same object)."""
    seen: dict[str, str] = {}
    unique: list[LoadResult] = []
    for result in results:
        runbook = result.runbook
        if runbook is not None:
            if runbook.id in seen:
                problem = duplicate_id(
                    result.path, id_line(runbook.source_text), runbook.id, seen[runbook.id]
                )
                result = LoadResult(result.path, None, (problem,), runbook.id)  # noqa: PLW2901
            else:
                seen[runbook.id] = result.path
        unique.append(result)
    return unique


def id_line(text: str) -> int:
    """The line of a runbook's top-level ``id:`` (1 when none is found), where a duplicate id is reported."""
    return next((i + 1 for i, ln in enumerate(text.splitlines()) if _ID_LINE.match(ln)), 1)


def duplicate_id(path: str, line: int, runbook_id: str, first: str) -> Problem:
    """The problem of a runbook whose id the file ``first`` already has."""
    return Problem(
        path, line, 1, "/id", f"runbook id {runbook_id!r} is already used by {first}; ids must be unique"
    )


FIRST_BATCH = 12
"""Runbook files checked before :func:`load_library_batches` gives its first batch (a first paint waits for no more)."""
BATCH_SECONDS = 1.0
"""After the first batch, how often :func:`load_library_batches` gives the runbooks checked so far."""


@dataclass(frozen=True, slots=True)
class LibraryBatch:
    """The runbooks checked so far, while a library loads."""

    library: Library
    """The files checked so far, duplicate ids already problems (as :func:`load_library` makes them)."""
    complete: bool
    """Every file is in :attr:`library`: the last batch."""
    total: int
    """How many runbook files there are in all."""


def load_library_batches(
    paths: Iterable[Path],
    *,
    first: int = FIRST_BATCH,
    every: float = BATCH_SECONDS,
    cancelled: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LibraryBatch]:
    """Load the library file by file, giving what is checked so far: after ``first`` files, then every
    ``every`` seconds, and the whole library last (``complete``), equal to what :func:`load_library` loads.

    For a front end that shows runbooks while the rest load (the TUI's library). Stops without
    a last batch as soon as ``cancelled()`` (asked before each file). Each result keeps its identity
    from batch to batch, so a front end may cache what it built from one."""
    paths = list(paths)
    searched = [str(p) for p in paths]
    files = runbook_files(paths)
    results: list[LoadResult] = []
    given = clock()
    for index, path in enumerate(files, 1):
        if cancelled():
            return
        results.append(check_file(path))
        if index == first or clock() - given > every:
            given = clock()
            yield LibraryBatch(Library(searched, _with_unique_ids(results)), complete=False, total=len(files))
    if cancelled():
        return
    library = Library(searched, _with_unique_ids(results))
    log.debug("loaded %d runbooks (%d invalid)", len(library.runbooks), len(library.invalid))
    yield LibraryBatch(library, complete=True, total=len(files))
