"""The run flow driven by the pilot against real local execution: setup, stepping, approvals, cancel.

Each runbook's steps are real bash commands on this machine (the target is
localhost, no inventory); what the tests check is what the screen shows and what
the journal recorded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from engine.core.journal import Journal, RunRecord
from engine.core.loader import load_library
from engine.core.model import Host, Phase, Runbook, RunStatus
from engine.core.spec import RunSpec
from tests.tui.conftest import HUNG_RUNBOOK, screen_text, until
from tui.app import make_app
from tui.config import CairnConfig
from tui.models.progress import StepState
from tui.screens.approval import ApprovalScreen
from tui.screens.run import RunScreen
from tui.screens.setup import RunSetupScreen

pytestmark = pytest.mark.tui

USER = "oncall"
BY = f"tui:{USER}"

DISK = """
id: disk-full
title: The disk is filling up
severity: warning
summary: The usage report says the disk is nearly full.
inputs:
  threshold:
    type: integer
    default: 95
    description: Percent used that counts as full.
  token:
    type: string
    secret: true
    description: Token for the usage API.
detect:
  - id: usage
    title: Read the disk usage
    why: A full disk stops every write on the host.
    run: echo "asked with {{ inputs.token }}" >&2; echo 93
    parse: number
    expect: out < inputs.threshold
    report: "{{ out }}% used"
"""

LOCKS = """
id: stale-locks
title: Stale lock files block the deploy
severity: critical
summary: A crashed deploy leaves lock files behind.
inputs:
  dir:
    type: string
    description: The deployer's lock folder.
detect:
  - id: locks
    title: Count the lock files
    run: find {{ inputs.dir }} -name '*.lock' | wc -l
    parse: number
    expect: out == 0
    report: "{{ out }} lock files"
remediate:
  - id: remove_locks
    title: Remove the lock files
    why: Nothing holds them; the deploy that did crashed.
    tradeoff: A deploy that really holds a lock would lose it.
    run: rm -f {{ inputs.dir }}/*.lock
  - id: restart_deployer
    title: Restart the deployer
    run: touch {{ inputs.dir }}/restarted
"""

STEPS = """
id: three-checks
title: Three checks in a row
severity: info
summary: Three detect steps to step through.
inputs:
  dir:
    type: string
detect:
  - id: first
    title: First check
    run: echo run >> {{ inputs.dir }}/first.count; wc -l < {{ inputs.dir }}/first.count
  - id: second
    title: Second check
    run: touch {{ inputs.dir }}/second.ran
  - id: third
    title: Third check
    run: echo third
"""


async def open_screen(pilot: Pilot[Any], screen: Screen[None]) -> None:
    """Put ``screen`` on top of the app (as the library does when you press its run key)."""
    pilot.app.push_screen(screen)
    await until(pilot, lambda: pilot.app.screen is screen, "the screen to open")


def load(runbook_dir: Callable[..., Path], text: str) -> tuple[Runbook, CairnConfig]:
    folder = runbook_dir(text)
    library = load_library([folder])
    assert not library.invalid, library.invalid
    runbook = library.runbooks[0]
    return runbook, CairnConfig(runbook_dirs=(folder,), user=USER)


def run_screen(app: App[Any]) -> RunScreen:
    screen = next(s for s in app.screen_stack if isinstance(s, RunScreen))
    return screen


def waiting_before(app: App[Any], step_id: str) -> Callable[[], bool]:
    def check() -> bool:
        screen = app.screen
        if not isinstance(screen, RunScreen):
            return False
        key = screen.pacer.next_step()
        return key is not None and key[1] == step_id and "waiting before" in screen_text(app)

    return check


def only_run(journal_path: Path) -> RunRecord:
    journal = Journal(journal_path)
    try:
        runs = journal.list_runs()
        assert len(runs) == 1, runs
        return journal.get_run(runs[0].id)
    finally:
        journal.close()


async def test_setup_types_inputs_shows_the_plan_then_steps_through_detect(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    runbook, config = load(runbook_dir, DISK)
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, RunSetupScreen(runbook))
        await until(pilot, lambda: "1 host: localhost (local)" in screen_text(app), "the resolved host")
        assert "token is required" in screen_text(app)

        app.screen.query_one("#input-token", Input).focus()
        await pilot.press(*"s3cret-value")
        threshold = app.screen.query_one("#input-threshold", Input)
        threshold.focus()
        threshold.value = ""
        await pilot.press(*"lots")
        await until(
            pilot,
            lambda: "input 'threshold': expected a whole number, got 'lots'" in screen_text(app),
            "the error under the bad field",
        )
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, RunSetupScreen), "a bad input must not start the run"

        threshold.value = ""
        await pilot.press(*"90")
        await until(
            pilot, lambda: 'echo "asked with ${CAIRN_SECRET_TOKEN}" >&2;' in screen_text(app), "the plan"
        )
        shown = screen_text(app)
        assert "expected a whole number" not in shown
        assert "s3cret-value" not in shown, "the secret is masked in its field and redacted in the plan"
        assert "Plan for disk-full on 1 host" in shown

        await pilot.press("ctrl+s")
        await until(pilot, waiting_before(app, "usage"), "the run to wait before the first step")
        assert run_screen(app).progress.steps[(Phase.DETECT, "usage")]["localhost"].state is StepState.WAITING
        assert "A full disk stops every write on the host." in screen_text(app), "why the step exists"

        await pilot.press("n")
        await until(pilot, lambda: run_screen(app).progress.finished, "the run to end after detect")
        shown = screen_text(app)
        assert re.search(r"Read the disk usage\s+finding", shown), shown
        assert "93% used" in shown, "the finding's report"
        assert "asked with ***" in shown, "the step's output, the secret redacted"
        assert "PRESENT" in shown and "found by usage" in shown, "the verdict"
        assert "exit 1" in shown

    run = only_run(journal_path)
    assert run.status is RunStatus.FINISHED
    assert run.inputs == {"threshold": 90, "token": "***"}
    assert run.trigger["kind"] == "tui"
    [usage] = run.steps
    assert (usage.step_id, usage.status, usage.message, usage.out) == ("usage", "finding", "93% used", 93)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, so the commands that name it fit on one line of the screen."""
    folder = Path(tempfile.mkdtemp(prefix="cairn-"))
    yield folder
    shutil.rmtree(folder)


async def test_approve_one_remediation_decline_another_and_verify(
    runbook_dir: Callable[..., Path], journal_path: Path, short_dir: Path
) -> None:
    locks = short_dir
    (locks / "deploy.lock").touch()
    (locks / "build.lock").touch()
    runbook, config = load(runbook_dir, LOCKS)
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, RunSetupScreen(runbook, inputs={"dir": str(locks)}))
        await until(pilot, lambda: f"rm -f {locks}/*.lock" in screen_text(app), "the plan")
        await pilot.press("ctrl+s")
        await until(pilot, waiting_before(app, "locks"), "the first step")
        await pilot.press("c")  # run everything; remediation still asks

        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the first approval")
        shown = screen_text(app)
        assert "Approve remediate · Remove the lock files" in shown
        assert f"$ rm -f {locks}/*.lock" in shown, "the exact command"
        assert "On host: localhost" in shown
        assert "A deploy that really holds a lock would lose it." in shown, "the trade-off"
        await pilot.press("y")

        await until(
            pilot,
            lambda: isinstance(app.screen, ApprovalScreen) and "Restart the deployer" in screen_text(app),
            "the second approval",
        )
        await pilot.press("n")
        await until(pilot, lambda: run_screen(app).progress.finished, "the run to end")
        shown = screen_text(app)
        assert "REMEDIATED" in shown and "remediated; verify is clean" in shown, "verify's verdict"
        assert "exit 0" in shown
        assert re.search(r"Restart the deployer\s+declined", shown), shown

    assert not list(locks.glob("*.lock")), "the approved remediation ran"
    assert not (locks / "restarted").exists(), "the declined one did not"
    run = only_run(journal_path)
    assert [(a.step_id, a.approved, a.decided_by) for a in run.approvals] == [
        ("remove_locks", True, BY),
        ("restart_deployer", False, BY),
    ]
    assert [(s.phase, s.step_id, s.status) for s in run.steps] == [
        ("detect", "locks", "finding"),
        ("remediate", "remove_locks", "ok"),
        ("remediate", "restart_deployer", "declined"),
        ("verify", "locks", "ok"),
    ]
    assert run.outcomes["localhost"]["outcome"] == "remediated"


async def test_skip_and_rerun_keys(
    runbook_dir: Callable[..., Path], journal_path: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    runbook, config = load(runbook_dir, STEPS)
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, RunSetupScreen(runbook, inputs={"dir": str(work)}))
        await until(pilot, lambda: "Plan for three-checks" in screen_text(app), "the plan")
        await pilot.press("ctrl+s")
        await until(pilot, waiting_before(app, "first"), "the first step")
        await pilot.press("n")
        await until(pilot, waiting_before(app, "second"), "the second step")

        await pilot.press("r")  # the phase's previous step again: `first`
        first = run_screen(app).progress.steps[(Phase.DETECT, "first")]["localhost"]
        await until(pilot, lambda: first.runs == 2 and first.state is StepState.OK, "the re-run")
        await until(pilot, waiting_before(app, "second"), "the second step again")
        await pilot.press("up")  # look at the first step: both runs' output, the second marked
        await until(pilot, lambda: "── run 2 ──" in screen_text(app), "the output of the re-run")
        assert re.search(r"\n.*1 .*\n.*── run 2 ──.*\n.*2 ", screen_text(app)), screen_text(app)

        await pilot.press("s")
        await until(pilot, waiting_before(app, "third"), "the third step")
        assert re.search(r"Second check\s+skipped", screen_text(app))
        await pilot.press("n")
        await until(pilot, lambda: run_screen(app).progress.finished, "the run to end")

    assert (work / "first.count").read_text().splitlines() == ["run", "run"], "first ran twice"
    assert not (work / "second.ran").exists(), "second was skipped"
    run = only_run(journal_path)
    steps = {s.step_id: s for s in run.steps}
    assert (steps["first"].status, steps["first"].stdout.strip()) == ("ok", "2"), "the re-run's result"
    assert (steps["second"].status, steps["second"].message) == ("skipped", f"skipped by {BY}")
    assert steps["third"].status == "ok"
    first_output = Path(run.artifacts) / "localhost" / "detect.first.stdout"
    assert first_output.read_text().split() == ["1", "2"], "the journal kept the output of both runs"


def processes_named(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return found.stdout.split()


async def test_cancel_a_hung_step_kills_it_and_ends_the_run_interrupted(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    marker = f"cairn-hang-{uuid.uuid4().hex[:12]}"
    runbook, config = load(runbook_dir, HUNG_RUNBOOK)
    app = make_app(config)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await open_screen(pilot, RunSetupScreen(runbook, inputs={"marker": marker}))
            await until(pilot, lambda: "Plan for hung-daemon" in screen_text(app), "the plan")
            await pilot.press("ctrl+s")
            await until(pilot, waiting_before(app, "ask"), "the step")
            await pilot.press("n")
            await until(pilot, lambda: processes_named(marker), "the hung command to start")
            await until(
                pilot,
                lambda: re.search(r"Ask the daemon\s+running ([1-9][0-9.]*s|\d+m)", screen_text(app)),
                "the elapsed time to be shown",
            )
            assert "x Cancel" in screen_text(app)

            await pilot.press("x")
            await until(pilot, lambda: run_screen(app).progress.finished, "the run to end")
            await until(pilot, lambda: not processes_named(marker), "the hung command to be gone", timeout=10)
            shown = screen_text(app)
            assert "interrupted" in shown
            assert "cancelled; the command was killed" in shown
    finally:
        for pid in processes_named(marker):  # never leave a sleeper behind, even when the test fails
            subprocess.run(["kill", "-9", pid], check=False)

    run = only_run(journal_path)
    assert run.status is RunStatus.INTERRUPTED
    assert run.exit_code == 130
    [ask] = run.steps
    assert (ask.status, ask.message) == ("cancelled", "cancelled; the command was killed")


PRACTICE = """
id: stuck-queue
title: The job queue is stuck
severity: warning
summary: Workers stop taking jobs after a broker failover.
symptoms:
  - Jobs pile up; no worker logs a new job.
cause: The workers keep a connection to the old broker.
detect:
  - id: backlog
    title: Count the waiting jobs
    run: echo 7
    parse: number
    expect: out == 0
    report: "{{ out }} jobs waiting"
remediate:
  - id: restart_workers
    title: Restart the workers
    manual: Restart the workers on {{ target }} from the scheduler's UI.
"""


async def test_practice_mode_shows_the_knowledge_and_a_manual_step_is_confirmed(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    runbook, config = load(runbook_dir, PRACTICE)
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, RunSetupScreen(runbook, practice="stuck-queue"))
        await until(pilot, lambda: "Plan for stuck-queue" in screen_text(app), "the plan")
        await pilot.press("ctrl+s")
        await until(pilot, waiting_before(app, "backlog"), "the first step")
        shown = screen_text(app)
        assert "practice on lab stuck-queue" in shown
        assert re.search(r"Symptoms.*\n(.*\n)*.*Jobs pile up", shown), "the knowledge beside the steps"
        assert re.search(r"Cause.*\n(.*\n)*.*The workers keep a", shown)

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the manual step")
        shown = screen_text(app)
        assert "Confirm the manual step remediate · Restart the workers" in shown
        assert re.search(
            r"Do this by hand:.*\n.*Restart the workers on localhost from the scheduler's UI\.", shown
        )
        assert "d Done" in shown and "s Skip" in shown and "n Decline" in shown
        assert "y Approve" not in shown, "a manual step is done, not approved"
        await pilot.press("d")
        await until(pilot, lambda: run_screen(app).progress.finished, "the run to end")
        shown = screen_text(app)
        assert "PRESENT" in shown and "verify still finds it: backlog" in shown

    run = only_run(journal_path)
    restart = next(s for s in run.steps if s.step_id == "restart_workers")
    assert (restart.status, restart.message) == ("ok", f"done, confirmed by {BY}")
    assert [(a.step_id, a.approved, a.decided_by) for a in run.approvals] == [("restart_workers", True, BY)]


FLEET = """
id: stale-pidfile
title: A stale pid file stops the agent starting
severity: warning
summary: The agent refuses to start while an old pid file exists.
inputs:
  dir:
    type: string
detect:
  - id: pidfile
    title: Look for the pid file
    run: test ! -e {{ inputs.dir }}/{{ target }}.pid
    exit_codes: [0, 1]
    expect: rc == 0
remediate:
  - id: remove_pidfile
    title: Remove the pid file
    run: rm {{ inputs.dir }}/{{ target }}.pid
"""


async def test_every_host_approves_a_step_on_the_whole_fleet_at_once(
    runbook_dir: Callable[..., Path], journal_path: Path, short_dir: Path
) -> None:
    hosts = ("web1", "web2", "web3")
    for host in hosts:
        (short_dir / f"{host}.pid").touch()
    runbook, config = load(runbook_dir, FLEET)
    launch = RunSpec(
        runbook=runbook,
        hosts=tuple(Host(name, connection="local") for name in hosts),  # three names, all run on this machine
        inputs={"dir": str(short_dir)},
        forks=3,
    )
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(pilot, RunScreen(launch, config))
        await until(
            pilot,
            lambda: "waiting before detect · Look for the pid file (3 hosts)" in screen_text(app),
            "3 hosts",
        )
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the approval")
        shown = screen_text(app)
        assert "Run's hosts (3): web1, web2, web3" in shown
        assert re.search(r"\$ rm \S+/web\d\.pid", shown), "the exact command for the host asked about"
        assert "e Approve on every host" in shown
        await pilot.press("e")
        await until(pilot, lambda: run_screen(app).progress.finished, "the run to end")
        assert not isinstance(app.screen, ApprovalScreen), "one answer for the whole fleet"
        # The whole title once the run has ended, even if a long passing state ("approval 1 · waiting 2")
        # had widened the state column while it ran.
        await until(
            pilot, lambda: re.search(r"Remove the pid file\s+ok 3", screen_text(app)), "the step's title"
        )
        assert screen_text(app).count("REMEDIATED") == 3

    assert not list(short_dir.glob("*.pid"))
    run = only_run(journal_path)
    assert sorted((a.host, a.approved, a.decided_by) for a in run.approvals) == [(h, True, BY) for h in hosts]
    assert sum(a.note == "approved for every host" for a in run.approvals) == 3


BRACKETS = """
id: brackets
title: Commands with square brackets
severity: info
summary: s
inputs:
  label: {type: string, default: "[bold]x[/bold]"}
detect:
  - id: awk_arrays
    title: awk with arrays
    run: "awk '{ name[NR] = $0 } END { print name[1] }' /etc/hostname; echo {{ inputs.label }}"
"""


async def test_the_plan_shows_commands_exactly_even_with_square_brackets(
    runbook_dir: Callable[..., Path], journal_path: Path
) -> None:
    """`name[NR]` or a `[bold]` value is shell text: shown as it is, never eaten as screen markup."""
    runbook, config = load(runbook_dir, BRACKETS)
    app = make_app(config)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_screen(pilot, RunSetupScreen(runbook))
        await until(
            pilot, lambda: "awk '{ name[NR] = $0 }" in screen_text(app), "the exact command in the plan"
        )
        assert "'[bold]x[/bold]'" in screen_text(app)  # the input's value, quoted, not bold text
