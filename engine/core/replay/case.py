"""Test cases of a runbook: what each host answered, and what the runbook should conclude.

A case is a YAML file in ``ID.tests/`` beside the runbook ``ID.yaml`` (one case per
file), checked against ``engine/core/schema/case.schema.json``; every problem has a
file, line, column and JSON pointer, as a runbook's have. ``cairn record`` writes
cases from journaled runs (:mod:`engine.core.replay.record`); people write the rest.
This module is the only place that reads a case's dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.errors import Problem
from engine.core.loader import RUNBOOK_SUFFIXES, TESTS_SUFFIX, unique_files
from engine.core.model import HostOutcome, Phase, StepStatus
from engine.core.schema import SCHEMA_PATH
from engine.core.yamlsource import Document, read_yaml_file

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

CASE_SCHEMA_PATH = SCHEMA_PATH.with_name("case.schema.json")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one step's command answered on one host."""

    stdout: str = ""
    stderr: str = ""
    rc: int | None = 0
    hang: bool = False
    """It did not finish within the step's timeout and was killed (stdout/stderr: what it printed first)."""
    error: str | None = None
    """The executor could not run it (a dropped connection …): its error."""
    command: str | None = None
    """The command as it ran; when given, the output stands for exactly that command."""
    duration: float = 0.0
    data: Mapping[str, Any] | None = None
    """An ``ansible`` step's module result: what its ``out`` is."""


@dataclass(frozen=True, slots=True)
class CaseHost:
    """One host of a case: how it is reached and what it answered."""

    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    unreachable: str | None = None
    missing: tuple[str, ...] = ()
    decisions: Mapping[str, str] = field(default_factory=dict)
    steps: Mapping[str, Recorded] = field(default_factory=dict)
    """By ``phase.step``."""


@dataclass(frozen=True, slots=True)
class ExpectedStep:
    status: StepStatus
    report: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedHost:
    outcome: HostOutcome | None = None
    reason: str | None = None
    steps: Mapping[str, ExpectedStep] = field(default_factory=dict)
    remediation: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Expected:
    """What the runbook should conclude; only what is given is compared."""

    exit: int | None = None
    hosts: Mapping[str, ExpectedHost] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Case:
    """A test case, read and checked."""

    path: str
    name: str
    runbook_id: str
    hosts: tuple[CaseHost, ...]
    expect: Expected
    about: str = ""
    run_id: str = "replay"
    phase: Phase = Phase.VERIFY
    inputs: Mapping[str, Any] = field(default_factory=dict)
    alert: Mapping[str, Any] | None = None
    recorded_from: str = ""
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    """Line and column of ``/runbook`` and ``/inputs``, for problems found after reading."""

    def problem(self, ptr: str, message: str) -> Problem:
        """A problem with this case at ``ptr`` (``/runbook`` or ``/inputs``)."""
        line, column = self.positions.get(ptr, (1, 1))
        return Problem(self.path, line, column, ptr, message)

    @property
    def label(self) -> str:
        """``runbook-id/file-stem``: how ``cairn test`` names the case."""
        return f"{self.runbook_id}/{Path(self.path).stem}"


@dataclass(frozen=True, slots=True)
class CaseFile:
    """One case file read: the case when it is valid, else its problems."""

    path: str
    case: Case | None
    problems: tuple[Problem, ...]


# --------------------------------------------------------------------------- finding case files


_CASE_KEY = re.compile(rb"^case\s*:", re.MULTILINE)


def _says_case(path: Path) -> bool:
    """Whether a YAML file given by name is a case (a top-level ``case:`` key), not a runbook."""
    try:
        with path.open("rb") as handle:
            return _CASE_KEY.search(handle.read(1 << 16)) is not None
    except OSError:
        return False


def is_case_file(path: Path) -> bool:
    """A YAML file in a ``*.tests`` folder."""
    return path.suffix in RUNBOOK_SUFFIXES and path.parent.name.endswith(TESTS_SUFFIX)


def tests_folder(runbook_file: Path) -> Path:
    """``DIR/ID.tests`` for ``DIR/ID.yaml``."""
    stem = runbook_file.name
    for suffix in RUNBOOK_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return runbook_file.with_name(stem + TESTS_SUFFIX)


def runbook_beside(case_file: Path) -> Path | None:
    """The runbook a case in ``DIR/ID.tests/`` is for: ``DIR/ID.yaml`` (or ``.yml``)."""
    folder = case_file.parent
    if not folder.name.endswith(TESTS_SUFFIX):
        return None
    stem = folder.name.removesuffix(TESTS_SUFFIX)
    return next((f for f in (folder.with_name(stem + s) for s in RUNBOOK_SUFFIXES) if f.is_file()), None)


def case_files(paths: Iterable[Path]) -> list[Path]:
    """Case files named by ``paths``: a folder's (recursively), a runbook's (its ``ID.tests/``), or as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            folders = [path] if path.name.endswith(TESTS_SUFFIX) else sorted(path.rglob("*" + TESTS_SUFFIX))
            for folder in folders:
                found.extend(sorted(p for p in folder.iterdir() if p.is_file() and is_case_file(p)))
        elif (
            path.is_file()
            and not is_case_file(path)
            and not _says_case(path)
            and path.suffix in RUNBOOK_SUFFIXES
        ):
            folder = tests_folder(path)
            if folder.is_dir():
                found.extend(sorted(p for p in folder.iterdir() if p.is_file() and is_case_file(p)))
        else:
            found.append(path)
    return unique_files(found)


# --------------------------------------------------------------------------- reading


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - only when checking

    return Draft202012Validator(json.loads(CASE_SCHEMA_PATH.read_text(encoding="utf-8")))


def read_case(path: Path, *, display: str | None = None) -> CaseFile:
    """Read and check one case file; never raises for bad content."""
    from engine.core.schema import translate_error  # noqa: PLC0415

    doc = read_yaml_file(path, display=display)
    doc.problems = [_in_case_terms(p) for p in doc.problems]
    if not doc.problems:
        if not isinstance(doc.data, dict):
            doc.add("", "a test case is a mapping: case, runbook, hosts, expect")
        else:
            issues: dict[Any, None] = {}
            for error in sorted(_validator().iter_errors(doc.data), key=lambda e: list(e.absolute_path)):
                issues.update(dict.fromkeys(translate_error(error)))
            for issue in issues:
                doc.add(issue.pointer, issue.message, key=issue.at_key)
    if doc.problems:
        return CaseFile(doc.file, None, tuple(doc.problems))
    case = _build(doc)
    return CaseFile(doc.file, case if not doc.problems else None, tuple(doc.problems))


def case_from_data(data: dict[str, Any], name: str) -> Case:
    """A case built in memory (a recorded run's, for ``cairn replay``), trusted to have the schema's shape."""
    doc = Document(file=name, text="", data=data)
    case = _build(doc)
    if doc.problems:
        raise ValueError(f"{name}: {doc.problems[0].message}")
    return case


def _in_case_terms(problem: Problem) -> Problem:
    if problem.message.startswith("file is empty"):
        return Problem(
            problem.file,
            problem.line,
            problem.column,
            problem.pointer,
            "file is empty: a test case needs case, runbook, hosts and expect",
        )
    return problem


def _build(doc: Document) -> Case:
    data: dict[str, Any] = doc.data
    hosts = tuple(_host(name, raw or {}) for name, raw in data["hosts"].items())
    expect_raw = data.get("expect") or {}
    expected_hosts = {}
    for name, raw in (expect_raw.get("hosts") or {}).items():
        if name not in data["hosts"]:
            doc.add(
                f"/expect/hosts/{name}",
                f"host {name} is not one of the case's hosts ({', '.join(data['hosts'])})",
                key=True,
            )
            continue
        expected_hosts[name] = _expected_host(raw or {})
    return Case(
        path=doc.file,
        name=data["case"],
        about=data.get("about", ""),
        runbook_id=data["runbook"],
        recorded_from=data.get("recorded_from", ""),
        run_id=data.get("run_id", "replay"),
        phase=Phase(data.get("phase", "verify")),
        inputs=data.get("inputs") or {},
        alert=data.get("alert"),
        hosts=hosts,
        expect=Expected(exit=expect_raw.get("exit"), hosts=expected_hosts),
        positions={ptr: doc.where(ptr) for ptr in ("/runbook", "/inputs")},
    )


def _host(name: str, raw: dict[str, Any]) -> CaseHost:
    return CaseHost(
        name=name,
        vars=raw.get("vars") or {},
        unreachable=raw.get("unreachable"),
        missing=tuple(raw.get("missing") or ()),
        decisions=dict(raw.get("decisions") or {}),
        steps={key: _recorded(value or {}) for key, value in (raw.get("steps") or {}).items()},
    )


def _recorded(raw: dict[str, Any]) -> Recorded:
    return Recorded(
        stdout=raw.get("stdout", ""),
        stderr=raw.get("stderr", ""),
        rc=raw.get("rc", None if raw.get("hang") or raw.get("error") else 0),
        hang=bool(raw.get("hang", False)),
        error=raw.get("error"),
        command=raw.get("command"),
        duration=float(raw.get("duration", 0.0)),
        data=raw.get("data"),
    )


def _expected_host(raw: dict[str, Any]) -> ExpectedHost:
    steps = {}
    for key, value in (raw.get("steps") or {}).items():
        if isinstance(value, str):
            steps[key] = ExpectedStep(StepStatus(value))
        else:
            steps[key] = ExpectedStep(StepStatus(value["status"]), value.get("report"))
    remediation = raw.get("remediation")
    return ExpectedHost(
        outcome=HostOutcome(raw["outcome"]) if "outcome" in raw else None,
        reason=raw.get("reason"),
        steps=steps,
        remediation=tuple(remediation) if remediation is not None else None,
    )
