"""The TUI's run process (engine/core/run_process.py): a real child process, real bash, the real journal.

What the on-call engineer relies on: when the TUI goes away in the middle of a
run, the run does not go on unattended and leaves nothing running; when the run
process dies, the TUI says so instead of waiting forever.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.core.events import Event, RunStarted, StepFinished, StepStarted
from engine.core.journal import Journal, RunRecord
from engine.core.loader import load_library
from engine.core.model import LOCALHOST, RunStatus
from engine.core.pacing import Pace, PaceDecision, PaceRequest
from engine.core.run_process import CHILD_MODULE, RunHandlers, RunOrder, run_in_child, spawn_child
from engine.core.spec import RunSpec, Trigger, TriggerKind
from tests.tui.conftest import HUNG_RUNBOOK, wait_for

QUICK = """
id: quick
title: A quick check
severity: info
summary: Says hello.
detect:
  - id: hello
    title: Say hello
    run: echo hello
"""


def processes_named(marker: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout.split()


@pytest.fixture
def marker() -> Iterator[str]:
    name = f"cairn-orphan-{uuid.uuid4().hex[:12]}"
    yield name
    for pid in processes_named(name):  # never leave a sleeper behind, even when a test fails
        subprocess.run(["kill", "-9", pid], check=False)


def journaled(path: Path, run_id: str) -> RunRecord:
    journal = Journal(path)
    try:
        return journal.get_run(run_id)
    finally:
        journal.close()


def order_for(runbook_dir: Callable[..., Path], text: str, journal_path: Path, **inputs: Any) -> RunOrder:
    folder = runbook_dir(text)
    [result] = load_library([folder]).results
    assert result.runbook is not None
    return RunOrder(
        RunSpec(
            runbook=result.runbook,
            hosts=(LOCALHOST,),
            inputs=dict(inputs),
            trigger=Trigger(kind=TriggerKind.TUI),
        ),
        journal_path,
    )


def test_when_the_tui_goes_away_the_run_is_cancelled_and_its_command_killed(
    runbook_dir: Callable[..., Path], journal_path: Path, marker: str
) -> None:
    order = order_for(runbook_dir, HUNG_RUNBOOK, journal_path, marker=marker)
    with tempfile.TemporaryFile() as output:
        child, conn = spawn_child(output)
        conn.send(order)
        started = False
        while not started:  # answer "run" to the pacing question; stop at the step's start
            message = conn.recv()
            if message[0] == "pace":
                conn.send(("answer", message[1], PaceDecision(Pace.RUN)))
            elif message[0] == "events":
                started = any(isinstance(e, StepStarted) for e in message[1])
        wait_for(lambda: processes_named(marker), "the hung command to start")

        conn.close()  # the TUI is gone (quit, crashed or killed)

        assert child.wait(timeout=20) == 0
    assert not processes_named(marker), "the hung command was killed, not left running"
    run = journaled(journal_path, order.spec.run_id)
    assert run.status is RunStatus.INTERRUPTED
    [ask] = run.steps
    assert (ask.status, ask.message) == ("cancelled", "cancelled; the command was killed")


def test_a_run_reports_its_events_in_order_and_ends(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    order = order_for(runbook_dir, QUICK, journal_path)
    events: list[Event] = []
    crashes: list[str] = []
    asked: list[PaceRequest] = []

    def pace(request: PaceRequest) -> PaceDecision:
        asked.append(request)
        return PaceDecision(Pace.RUN)

    run_in_child(
        order,
        RunHandlers(
            pace=pace,
            approve=lambda request: pytest.fail(f"nothing here needs approval: {request}"),
            cancel=threading.Event(),
            on_events=events.extend,
            on_crash=crashes.append,
        ),
    )

    assert crashes == []
    assert [(r.phase.value, r.step.id) for r in asked] == [("detect", "hello")]  # nothing found: no verify
    assert isinstance(events[0], RunStarted) and events[0].run_id == order.spec.run_id
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "every event, in order"
    finished = [e.result for e in events if isinstance(e, StepFinished)]
    assert [(r.phase.value, r.step_id, r.status.value, r.stdout) for r in finished] == [
        ("detect", "hello", "ok", "hello\n")
    ]
    assert journaled(journal_path, order.spec.run_id).status is RunStatus.FINISHED


def test_a_run_process_that_dies_is_reported_not_waited_for(
    runbook_dir: Callable[..., Path], journal_path: Path, marker: str
) -> None:
    order = order_for(runbook_dir, HUNG_RUNBOOK, journal_path, marker=marker)
    crashes: list[str] = []
    cancel = threading.Event()

    def pace(request: PaceRequest) -> PaceDecision:
        return PaceDecision(Pace.RUN)

    def kill_the_run_process(events: Sequence[Event]) -> None:
        if any(isinstance(e, StepStarted) for e in events):
            wait_for(lambda: processes_named(marker), "the hung command to start")
            ours = ["pgrep", "-P", str(os.getpid()), "-f", CHILD_MODULE]  # our child, no other test's
            for pid in subprocess.run(ours, capture_output=True, text=True, check=False).stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)

    run_in_child(
        order,
        RunHandlers(
            pace=pace,
            approve=lambda request: pytest.fail("nothing here needs approval"),
            cancel=cancel,
            on_events=kill_the_run_process,
            on_crash=crashes.append,
        ),
    )

    assert len(crashes) == 1
    assert crashes[0].startswith("the run's process ended unexpectedly (exit code -9)")


def test_a_journal_that_cannot_be_opened_is_said(runbook_dir: Callable[..., Path], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the journal's folder should be\n")
    order = order_for(runbook_dir, QUICK, blocker / "journal.db")
    crashes: list[str] = []

    run_in_child(
        order,
        RunHandlers(
            pace=lambda request: PaceDecision(Pace.RUN),
            approve=lambda request: pytest.fail("nothing runs"),
            cancel=threading.Event(),
            on_events=lambda events: pytest.fail(f"no run, no events: {events}"),
            on_crash=crashes.append,
        ),
    )

    assert len(crashes) == 1
    assert "cannot open the journal" in crashes[0]
