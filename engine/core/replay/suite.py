"""``cairn test``'s work: find the cases, read each with its runbook, play it, compare.

A case *passes* when the runbook concludes what it expects and needs no output the
recording lacks; it *fails* with a unified diff of expected against got (and the
steps never recorded); it is *broken* when the case file, or its runbook, has
problems (file:line:col, as ``cairn validate`` says them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import CairnError, Problem
from engine.core.loader import TESTS_SUFFIX, LoadResult, check_file
from engine.core.model import Phase, Runbook, StepKind
from engine.core.replay.case import Case, case_files, read_case, runbook_beside
from engine.core.replay.compare import observed, test_diff
from engine.core.replay.executor import Unrecorded
from engine.core.replay.play import play


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case run (or not: broken)."""

    path: str
    label: str
    name: str = ""
    problems: tuple[Problem, ...] = ()
    diff: tuple[str, ...] = ()
    unrecorded: tuple[Unrecorded, ...] = ()
    unused: tuple[tuple[str, str], ...] = ()
    steps: int = 0
    hosts: int = 0
    exit_code: int | None = None

    @property
    def state(self) -> str:
        """``passed``, ``failed`` or ``broken``."""
        if self.problems:
            return "broken"
        return "failed" if self.diff or self.unrecorded else "passed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.label,
            "name": self.name,
            "path": self.path,
            "state": self.state,
            "problems": [p.as_dict() for p in self.problems],
            "diff": list(self.diff),
            "unrecorded": [
                {"host": u.host, "step": u.key, "why": u.why, "command": u.command} for u in self.unrecorded
            ],
            "unused": [{"host": h, "step": k} for h, k in self.unused],
            "hosts": self.hosts,
            "steps": self.steps,
            "exit_code": self.exit_code,
        }


@dataclass
class Suite:
    """Every case found under some paths, run; the runbooks each read once."""

    runbook: Path | None = None
    """Run every case against this runbook file (a case outside an ``ID.tests/`` folder needs one)."""
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    _runbooks: dict[Path, LoadResult] = field(default_factory=dict)

    def run(self, paths: Iterable[Path]) -> list[CaseResult]:
        started = time.perf_counter()
        for path in case_files(paths):
            self.results.append(self.one(path))
        self.seconds = time.perf_counter() - started
        return self.results

    def one(self, path: Path) -> CaseResult:
        read = read_case(path)
        if read.case is None:
            return CaseResult(
                read.path,
                f"{path.parent.name.removesuffix(TESTS_SUFFIX)}/{path.stem}",
                problems=read.problems,
            )
        case = read.case
        label = case.label
        runbook_file = self.runbook or runbook_beside(path)
        if runbook_file is None:
            where = (
                "a test case lives in ID.tests/ beside the runbook ID.yaml (or name one with --runbook FILE)"
            )
            return CaseResult(read.path, label, case.name, problems=(Problem(read.path, 1, 1, "", where),))
        loaded = self._load(runbook_file)
        if loaded.runbook is None:
            return CaseResult(read.path, label, case.name, problems=loaded.problems)
        runbook = loaded.runbook
        if runbook.id != case.runbook_id:
            why = f"the case is for runbook {case.runbook_id!r}, and {runbook_file} is {runbook.id!r}"
            return CaseResult(read.path, label, case.name, problems=(case.problem("/runbook", why),))
        return _compare(read.path, label, case, runbook)

    def _load(self, path: Path) -> LoadResult:
        key = path.resolve()
        if key not in self._runbooks:
            self._runbooks[key] = check_file(path)
        return self._runbooks[key]


def manual_keys(runbook: Runbook) -> frozenset[str]:
    """``phase.step`` of every manual step."""
    return frozenset(
        f"{phase.value}.{s.id}" for phase in Phase for s in runbook.steps(phase) if s.kind is StepKind.MANUAL
    )


def _compare(path: str, label: str, case: Case, runbook: Runbook) -> CaseResult:
    try:
        played = play(case, runbook)
    except CairnError as exc:  # the case's inputs do not fit the runbook
        return CaseResult(path, label, case.name, problems=(case.problem("/inputs", str(exc)),))
    got = observed(played.report, played.decided, manual_keys(runbook))
    return CaseResult(
        path,
        label,
        case.name,
        diff=tuple(test_diff(case.expect, got)),
        unrecorded=played.unrecorded,
        unused=played.unused,
        steps=sum(len(h.results) for h in played.report.hosts),
        hosts=len(played.report.hosts),
        exit_code=played.report.exit_code,
    )
