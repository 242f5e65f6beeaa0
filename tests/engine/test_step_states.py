"""Unfinished steps are typed states (not_run, cancelled, interrupted), and resume decides from them alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.core.events import StepFinished
from engine.core.journal import Journal
from engine.core.model import Phase, RunStatus, StepResult, StepStatus
from engine.core.resume import resume_point
from tests.engine.test_journal import FIRST_RELEASE_RUN, finish_run, first_release_journal, start_run


def test_each_status_says_whether_resume_runs_the_step_again() -> None:
    again = {s for s in StepStatus if not s.finished}
    assert again == {StepStatus.NOT_RUN, StepStatus.CANCELLED, StepStatus.INTERRUPTED}
    assert {s for s in StepStatus if s.failed} == {
        StepStatus.ERROR,
        StepStatus.TIMEOUT,
        StepStatus.CANCELLED,
        StepStatus.INTERRUPTED,
    }
    assert StepStatus.NOT_RUN.label == "not run"


def result(step_id: str, status: StepStatus, message: str) -> StepResult:
    return StepResult(host="web1", phase=Phase.REMEDIATE, step_id=step_id, status=status, message=message)


def test_resume_reads_the_state_never_the_wording(journal_path: Path) -> None:
    """A finished step whose message happens to start like an unfinished one's is reused, and an
    unfinished step with any wording (``interrupted (Ctrl-C); …`` once slipped through) is run again."""
    journal = Journal(journal_path)
    try:
        bus = start_run(journal, "run-words")
        for done in (
            result("a", StepStatus.OK, "not run: this is what the command printed as its report"),
            result("b", StepStatus.ERROR, "cancelled the cron job failed"),
            result("c", StepStatus.INTERRUPTED, "interrupted (Ctrl-C); the command was killed"),
            result("d", StepStatus.CANCELLED, "cancelled; the command was killed"),
            result("e", StepStatus.NOT_RUN, "not run: the run was interrupted"),
        ):
            bus.emit(StepFinished(result=done))
        finish_run(bus, interrupted=True)
        record = journal.get_run("run-words")
    finally:
        journal.close()
    assert record.status is RunStatus.INTERRUPTED
    point = resume_point(record)
    assert sorted(step for (_, _, step) in point.results) == ["a", "b"]


def test_a_journal_from_the_first_release_is_upgraded_once_on_open(journal_path: Path) -> None:
    """Version 1 wrote unfinished steps as error/skipped with telling words; opening it upgrades them."""
    first_release_journal(
        journal_path,
        user_version=1,
        steps=(
            ("killed", "error", "interrupted: the run stopped before this step finished"),
            ("cancel", "error", "cancelled; the command was killed"),
            ("later", "skipped", "not run: the run was interrupted"),
            ("missing", "error", "not run: needs crictl, which is not installed on web1"),
            ("fine", "error", "exit code 3"),
            ("when", "skipped", "when is false: false"),
        ),
    )

    journal = Journal(journal_path)
    try:
        states = {s.step_id: s.status for s in journal.get_run(FIRST_RELEASE_RUN).steps}
    finally:
        journal.close()
    assert states == {
        "killed": "interrupted",
        "cancel": "cancelled",
        "later": "not_run",
        "missing": "not_run",
        "fine": "error",
        "when": "skipped",
    }
    with sqlite3.connect(journal_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        on_file = dict(db.execute("SELECT step_id, status FROM steps"))
    db.close()
    assert on_file == states, "the writer upgraded the file, not only what it shows"
