"""Snapshots of the library, the history, a run's details and the alert queue at 80x24 and 120x40.

Deterministic: fixture runbooks (no paths on screen), a journal written with
fixed run ids and times, shown in UTC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from engine.core.alert_queue import AlertQueue, EntryState
from engine.core.alerts import Alert, AlertStatus, Route
from engine.core.events import (
    HostFinished,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepStarted,
)
from engine.core.journal import Journal
from engine.core.model import HostOutcome, HostReport, Phase, RunReport, StepResult, StepStatus
from tests.tui.conftest import until
from tests.tui.test_library import BAD_SEVERITY, CERT, DISK, LOCKS
from tui.app import CairnApp, make_app
from tui.config import CairnConfig
from tui.screens.history import HistoryScreen
from tui.screens.queue import QueueScreen
from tui.screens.run_detail import RunDetailScreen

pytestmark = pytest.mark.tui

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
DAY = 1772355600.0  # 2026-03-01 09:00:00 UTC
REMEDIATED = "20260301-090000-a1b2c3"
ALERTED = "20260301-101500-d4e5f6"
HEALTHY = "20260302-080000-0a0b0c"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen in UTC, whatever this machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class RunWriter:
    """Events for one run, with a fixed id and clock, straight into the journal."""

    def __init__(self, journal: Journal, run_id: str, at: float) -> None:
        self.journal, self.run_id, self.at, self.seq = journal, run_id, at, 0

    def emit(self, kind: type[Any], **fields: Any) -> None:
        self.seq += 1
        self.at += 1.5
        self.journal.record(kind(run_id=self.run_id, seq=self.seq, at=self.at, **fields))

    def step(self, host: str, phase: Phase, step_id: str, title: str, result: dict[str, Any]) -> StepResult:
        command = result.pop("command")
        self.emit(StepStarted, host=host, phase=phase, step_id=step_id, title=title, command=command)
        done = StepResult(
            host=host,
            phase=phase,
            step_id=step_id,
            command=command,
            started_at=self.at,
            duration=1.2,
            **result,
        )
        self.emit(StepFinished, result=done)
        return done


def write_runs(journal_path: Path) -> None:
    """Three runs: one remediated on web1 and declined on web2, one started by an alert and interrupted, one healthy."""
    journal = Journal(journal_path)
    try:
        run = RunWriter(journal, REMEDIATED, DAY)
        run.emit(
            RunStarted,
            runbook_id="disk-full",
            runbook_path="runbooks/disk-full.yaml",
            runbook_sha256="0" * 64,
            runbook_text=DISK,
            hosts=("web1", "web2"),
            inputs={},
            started_by="alice",
            trigger={"kind": "cli", "inventory": ["inventory/prod.yml"], "limit": None},
        )
        usage = {
            "command": "echo 93",
            "status": StepStatus.FINDING,
            "message": "93",
            "rc": 0,
            "stdout": "93\n",
        }
        results: dict[str, list[StepResult]] = {"web1": [], "web2": []}
        for host in ("web1", "web2"):
            results[host].append(run.step(host, Phase.DETECT, "usage", "Read the disk usage", dict(usage)))
        run.emit(
            StepApproval,
            host="web1",
            phase=Phase.REMEDIATE,
            step_id="prune",
            command="echo pruned",
            approved=True,
            by="tui:oncall",
        )
        pruned = {"command": "echo pruned", "status": StepStatus.OK, "rc": 0, "stdout": "pruned\n"}
        results["web1"].append(run.step("web1", Phase.REMEDIATE, "prune", "Delete the debug dumps", pruned))
        run.emit(
            StepApproval,
            host="web2",
            phase=Phase.REMEDIATE,
            step_id="prune",
            command="echo pruned",
            approved=False,
            by="tui:oncall",
            note="web2 keeps its dumps for the vendor",
        )
        verify = {"command": "echo 41", "status": StepStatus.OK, "message": "41", "rc": 0, "stdout": "41\n"}
        results["web1"].append(run.step("web1", Phase.VERIFY, "usage", "Read the disk usage", verify))
        reports = (
            HostReport("web1", HostOutcome.REMEDIATED, tuple(results["web1"]), "verify came back clean"),
            HostReport("web2", HostOutcome.PRESENT, tuple(results["web2"]), "remediation declined"),
        )
        for report in reports:
            run.emit(HostFinished, report=report)
        run.emit(RunFinished, report=RunReport(REMEDIATED, "disk-full", reports))

        run = RunWriter(journal, ALERTED, DAY + 4500)
        run.emit(
            RunStarted,
            runbook_id="stale-locks",
            runbook_path="runbooks/stale-locks.yaml",
            runbook_sha256="1" * 64,
            runbook_text=LOCKS,
            hosts=("deploy1",),
            inputs={},
            started_by="alertmanager",
            trigger={"kind": "alert", "alertname": "DeployStuck"},
        )
        run.emit(
            StepStarted, host="deploy1", phase=Phase.DETECT, step_id="locks", title="Count", command="echo 0"
        )
        run.emit(RunFinished, report=RunReport(ALERTED, "stale-locks", (), interrupted=True))

        run = RunWriter(journal, HEALTHY, DAY + 82800)
        run.emit(
            RunStarted,
            runbook_id="cert-expiry",
            runbook_path="runbooks/cert-expiry.yaml",
            runbook_sha256="2" * 64,
            runbook_text=CERT,
            hosts=("localhost",),
            inputs={},
            started_by="bob",
            trigger={"kind": "cli"},
        )
        days = {"command": "echo 30", "status": StepStatus.OK, "message": "", "rc": 0, "stdout": "30\n"}
        done = run.step("localhost", Phase.DETECT, "days", "Days left", days)
        report = HostReport("localhost", HostOutcome.HEALTHY, (done,), "detect found nothing")
        run.emit(HostFinished, report=report)
        run.emit(RunFinished, report=RunReport(HEALTHY, "cert-expiry", (report,)))
    finally:
        journal.close()


@pytest.fixture
def app(runbook_dir: Callable[..., Path], journal_path: Path, utc: None) -> CairnApp:
    folder = runbook_dir(DISK, LOCKS, CERT, name="snapshots")
    (folder / "bad-severity.yaml").write_text(BAD_SEVERITY.read_text(encoding="utf-8"), encoding="utf-8")
    write_runs(journal_path)
    write_queue(journal_path)
    return make_app(CairnConfig(runbook_dirs=(folder,), journal_path=journal_path, user="oncall"))


def write_queue(journal_path: Path) -> None:
    """The alert queue `cairn serve` would have left: one entry waiting for a human, one queued, one done."""

    def alert(fingerprint: str, **labels: str) -> Alert:
        return Alert(AlertStatus.FIRING, labels, {"summary": "deploys stuck behind a lock"}, fingerprint)

    queue = AlertQueue(journal_path)
    try:
        [waiting] = queue.accept(
            [Route(alert("fp-locks", alertname="DeployStuck", host="deploy1"), "stale-locks", 0, "deploy1")],
            now=DAY + 4500,
        ).queued
        queue.claim(now=DAY + 4500)
        queue.started(waiting, ALERTED, now=DAY + 4500)
        queue.finish(
            waiting,
            EntryState.ESCALATED,
            note="remediation waits for a human: the policy does not automate 'stale-locks' "
            "(cairn serve --automate stale-locks)",
            now=DAY + 4510,
        )
        [done] = queue.accept(
            [Route(alert("fp-disk", alertname="DiskFull", host="web1"), "disk-full", 0, "web1")], now=DAY
        ).queued
        queue.claim(now=DAY)
        queue.started(done, REMEDIATED, now=DAY)
        queue.finish(done, EntryState.DONE, note="remediated automatically; verify is clean", now=DAY + 60)
        queue.accept(
            [Route(alert("fp-cert", alertname="CertExpiring", host="web2"), "cert-expiry", 0, "web2")],
            now=DAY + 86400,
        )
    finally:
        queue.close()


async def library_ready(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CairnApp)
    await until(pilot, lambda: app.library is not None and not app.library_loading, "the library")
    knowledge = app.screen.query_one("#knowledge")
    await until(pilot, lambda: getattr(knowledge, "shown_key", None) == "cert-expiry", "the first knowledge")


async def history_ready(pilot: Pilot[Any]) -> None:
    await library_ready(pilot)
    await pilot.press("f3")

    def listed() -> bool:
        screen = pilot.app.screen
        return isinstance(screen, HistoryScreen) and len(screen.runs) == 3

    await until(pilot, listed, "the history")


@pytest.mark.parametrize("size", SIZES)
def test_library(snap_compare: Any, app: CairnApp, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=library_ready)


@pytest.mark.parametrize("size", SIZES)
def test_library_filtered_by_alert_name(snap_compare: Any, app: CairnApp, size: tuple[int, int]) -> None:
    async def filtered(pilot: Pilot[Any]) -> None:
        await library_ready(pilot)
        await pilot.press(*"DeployStuck")
        knowledge = pilot.app.screen.query_one("#knowledge")
        await until(
            pilot, lambda: getattr(knowledge, "shown_key", None) == "stale-locks", "the match's knowledge"
        )

    assert snap_compare(app, terminal_size=size, run_before=filtered)


@pytest.mark.parametrize("size", SIZES)
def test_history(snap_compare: Any, app: CairnApp, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=history_ready)


@pytest.mark.parametrize("size", SIZES)
def test_run_detail(snap_compare: Any, app: CairnApp, size: tuple[int, int]) -> None:
    async def open_run(pilot: Pilot[Any]) -> None:
        await history_ready(pilot)
        await pilot.press(
            "down", "down"
        )  # most recent first: the healthy run, the alert's, the remediated one
        await pilot.press("enter")

        def opened() -> bool:
            screen = pilot.app.screen
            return isinstance(screen, RunDetailScreen) and screen.run is not None

        await until(pilot, opened, "the run")
        await pilot.press("down", "down")  # web1's remediation: its command, output and approval

    assert snap_compare(app, terminal_size=size, run_before=open_run)


@pytest.mark.parametrize("size", SIZES)
def test_alert_queue(snap_compare: Any, app: CairnApp, size: tuple[int, int]) -> None:
    async def queue_ready(pilot: Pilot[Any]) -> None:
        await library_ready(pilot)
        await pilot.press("f6")

        def listed() -> bool:
            screen = pilot.app.screen
            return isinstance(screen, QueueScreen) and len(screen.shown) == 3

        await until(pilot, listed, "the alert queue")

    assert snap_compare(app, terminal_size=size, run_before=queue_ready)
