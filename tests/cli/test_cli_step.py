"""`cairn run --step`: stepping through a run in a plain terminal with the TUI's keys.

In a real terminal (tmux): the keys release, skip and approve steps, `x` cancels, the journal
says what the screen said, and the terminal is left as it was found. In-process, the console
(engine/cli/console.py) with keys fed by the test drives a real run on this machine. Without a
terminal, or with --yes or --json, `--step` is refused.
"""

from __future__ import annotations

import io
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.cli.console import StepConsole
from engine.core.journal import Journal, RunRecord
from engine.core.launch import prepare_run
from engine.core.loader import load_library
from engine.core.model import LOCALHOST, Host, RunReport
from engine.core.spec import RunSpec
from tests.conftest import CairnRunner, RunbookDir, cairn_command
from tests.terminal import EXITED, Terminal, tmux_terminal

STEPPER = """
id: stepper
title: A marker file left behind
severity: warning
summary: A marker file is left behind; remove it.
inputs:
  dir: {type: string}
detect:
  - id: look
    title: Look for the marker
    run: test ! -e {{ inputs.dir }}/marker
    exit_codes: [0, 1]
    expect: rc == 0
    report: "{{ 'marker present' if rc else 'no marker' }}"
  - id: count
    title: Count the files
    run: ls {{ inputs.dir }} | wc -l
remediate:
  - id: remove
    title: Remove the marker
    why: The marker is the pitfall.
    run: rm -f {{ inputs.dir }}/marker
"""

WIDE = {"width": 200, "height": 60}
"""A window where no line of the run wraps and nothing scrolls away."""
TTY_MODE = "echo CAIRN-TTY $(stty -a | tr ' ;' '\\n\\n' | grep -x -e '-\\?icanon' -e '-\\?echo')"
"""After the command: whether the terminal reads lines and echoes them again (``icanon echo``)."""


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    with tmux_terminal() as term:
        yield term


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "marker").write_text("left behind\n")
    return folder


def journaled(path: Path) -> RunRecord:
    journal = Journal(path)
    try:
        return journal.get_run("last")
    finally:
        journal.close()


def steps_of(run: RunRecord) -> list[tuple[str, str, str, str]]:
    return [(s.phase, s.step_id, s.status, s.message) for s in run.steps]


def run_id_on(screen: str) -> str:
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+)", screen)
    assert found, f"no run id on the screen:\n{screen}"
    return found[1]


# ---------------------------------------------------------------------------- a real terminal


def start_stepper(terminal: Terminal, runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path) -> None:
    """`cairn run stepper --step` in the tmux terminal."""
    folder = runbook_dir(STEPPER)
    command = [*cairn_command(), "run", "stepper", "--runbooks", str(folder), "-e", f"dir={marker_dir}"]
    command += ["--journal", str(journal_path), "--step"]
    terminal.start(command, {"TERM": "xterm-256color"}, after=TTY_MODE, **WIDE)


@pytest.mark.cli
@pytest.mark.tmux
def test_step_through_a_run_in_a_real_terminal(
    terminal: Terminal, runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path
) -> None:
    start_stepper(terminal, runbook_dir, journal_path, marker_dir)

    def shows(text: str) -> Callable[[str], bool]:
        return lambda screen: text in screen

    screen = terminal.wait_for(
        shows("── waiting before detect · look · Look for the marker (1 host)"), "look"
    )
    assert "n next · p phase · c continue · s skip · r re-run · x cancel" in screen
    assert "look " not in screen.split("waiting before detect · look")[1], "nothing ran before a key"

    terminal.keys("n")
    screen = terminal.wait_for(shows("waiting before detect · count · Count the files"), "the second step")
    after_look = screen.split("waiting before detect · look")[1]
    assert re.search(r"look\s+FINDING .*marker present", after_look), (
        "the first step's result, then the prompt"
    )
    assert after_look.index("FINDING") < after_look.index("waiting before detect · count")
    assert not re.search(r"count\s+(ok|FINDING)", screen), "the second step waits"

    terminal.keys("s")
    screen = terminal.wait_for(shows("waiting before remediate · remove"), "the remediation step")
    assert re.search(r"count\s+skipped\s+skipped by tty:\S+", screen)

    terminal.keys("n")  # the step is released: it asks for approval, with the exact command
    screen = terminal.wait_for(shows("└ run it? y yes · n no, decline · x cancel the run"), "the approval")
    assert "┌ remediate step 'remove' on localhost: Remove the marker" in screen
    assert f"│ $ rm -f {marker_dir}/marker" in screen
    assert (marker_dir / "marker").exists(), "nothing changed before the approval"

    terminal.keys("y")
    screen = terminal.wait_for(shows("waiting before verify · look"), "verify")
    assert "y → approved" in screen
    assert re.search(r"remove\s+ok", screen)
    assert not (marker_dir / "marker").exists()

    terminal.keys("n")
    terminal.wait_for(shows("waiting before verify · count"), "verify's second step")
    terminal.keys("n")
    screen = terminal.wait_for(shows(f"{EXITED}0"), "the run to end, exit 0", history=True)
    assert re.search(r"look\s+ok\s.*no marker", screen.split("waiting before verify · look")[1])
    assert "exit 0 — details: cairn show-run" in screen
    assert "CAIRN-TTY icanon echo" in screen, "the terminal reads lines and echoes again"

    run = journaled(journal_path)
    assert run.id == run_id_on(screen)
    assert run.status.value == "finished" and run.exit_code == 0
    skipped = [s for s in run.steps if s.status == "skipped"]
    assert [(s.phase, s.step_id) for s in skipped] == [("detect", "count")]
    assert re.fullmatch(r"skipped by tty:\S+", skipped[0].message)
    assert [(s.phase, s.step_id, s.status) for s in run.steps if s.status != "skipped"] == [
        ("detect", "look", "finding"),
        ("remediate", "remove", "ok"),
        ("verify", "look", "ok"),
        ("verify", "count", "ok"),
    ]
    [approval] = run.approvals
    assert approval.approved and approval.step_id == "remove" and approval.decided_by.startswith("tty:")


@pytest.mark.cli
@pytest.mark.tmux
def test_x_cancels_a_stepped_run_while_it_waits(
    terminal: Terminal, runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path
) -> None:
    start_stepper(terminal, runbook_dir, journal_path, marker_dir)
    terminal.wait_for(lambda s: "waiting before detect · look" in s, "the first step to wait")

    terminal.keys("x")
    screen = terminal.wait_for(lambda s: f"{EXITED}130" in s, "exit 130", history=True)
    run_id = run_id_on(screen)
    assert "x → cancelling" in screen
    assert f"to go on from where it stopped: cairn resume {run_id}" in screen
    assert "CAIRN-TTY icanon echo" in screen

    run = journaled(journal_path)
    assert run.id == run_id and run.status.value == "interrupted"
    assert {s.status for s in run.steps} == {"not_run"}
    assert (marker_dir / "marker").exists()


# ---------------------------------------------------------------------------- refused


@pytest.mark.cli
@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ((), "--step reads keys from a terminal"),
        (("--yes",), "--step and --yes do not go together"),
        (("--json",), "--step and --json do not go together"),
    ],
)
def test_step_is_refused_without_a_terminal_and_with_yes_or_json(
    cairn: CairnRunner, runbook_dir: RunbookDir, marker_dir: Path, extra: tuple[str, ...], why: str
) -> None:
    folder = runbook_dir(STEPPER)
    done = cairn("run", "stepper", "--runbooks", str(folder), "-e", f"dir={marker_dir}", "--step", *extra)
    assert done.returncode == 2
    assert done.stderr.startswith(f"cairn: error: {why}") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""
    assert (marker_dir / "marker").exists()

    resumed = cairn("resume", "last", "--step", *extra)
    assert resumed.returncode == 2 and why in resumed.stderr


# ---------------------------------------------------------------------------- the console, in-process


class FedKeys:
    """Keys a test types: the console reads them as it would from the terminal."""

    def __init__(self) -> None:
        self._keys: queue.SimpleQueue[str] = queue.SimpleQueue()

    def press(self, keys: str) -> None:
        self._keys.put(keys)

    def read(self, timeout: float) -> str | None:
        try:
            return self._keys.get(timeout=timeout)
        except queue.Empty:
            return ""


class Shown(io.StringIO):
    """What the console printed, from any thread; a test waits for a line."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()

    def wait_for(self, text: str, count: int = 1, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while self.text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {text!r}; the console shows:\n{self.text()}")
            time.sleep(0.01)
        return self.text()


def stepped_run(
    runbook_dir: RunbookDir,
    journal_path: Path,
    marker_dir: Path,
    script: Callable[[FedKeys, Shown], None],
    hosts: tuple[Host, ...] = (LOCALHOST,),
) -> tuple[RunReport, str]:
    """Run STEPPER with a console whose keys ``script`` types (on a thread of its own, as a human would);
    the run on this thread, as `cairn run` runs it. A script that fails cancels the run and fails the test."""
    [result] = load_library([runbook_dir(STEPPER)]).results
    assert result.runbook is not None
    spec = RunSpec(runbook=result.runbook, hosts=hosts, inputs={"dir": str(marker_dir)})
    keys, shown = FedKeys(), Shown()
    console = StepConsole(spec.runbook, hosts=len(hosts), by="tty:oncall", keys=keys, out=shown)
    journal = Journal(journal_path)
    runner = prepare_run(
        spec, journal=journal, approver=console.approver, pacer=console.pacer, cancel=console.cancel
    )
    failures: list[BaseException] = []

    def typist() -> None:
        try:
            script(keys, shown)
        except BaseException as exc:
            failures.append(exc)
            keys.press("x")

    thread = threading.Thread(target=typist, daemon=True)
    try:
        with console.running():
            thread.start()
            report = runner.run()
    finally:
        journal.close()
    thread.join(timeout=20)
    if failures:
        raise failures[0]
    return report, shown.text()


def test_console_steps_skips_reruns_and_asks(
    runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path
) -> None:
    def script(keys: FedKeys, shown: Shown) -> None:
        shown.wait_for("── waiting before detect · look · Look for the marker (1 host)")
        keys.press("r")
        shown.wait_for("r: nothing to re-run: look is the first step of detect")
        keys.press("n")
        shown.wait_for("waiting before detect · count")
        keys.press("r")  # look runs again, then count waits again: its line is shown again
        shown.wait_for("waiting before detect · count", count=2)
        keys.press("s")
        shown.wait_for("waiting before remediate · remove")
        keys.press("q")  # not a key of ours: nothing happens
        keys.press("n")
        shown.wait_for("└ run it? y yes · n no, decline · x cancel the run")
        keys.press("s")  # not an answer to a command: the question stays
        keys.press("y")
        shown.wait_for("waiting before verify · look")
        keys.press("c")

    report, text = stepped_run(runbook_dir, journal_path, marker_dir, script)

    assert report.exit_code == 0 and not report.interrupted
    assert text.count("waiting before detect · look") == 1, "a line once per change, not once per look"
    assert "r → detect · look again on 1 host, then count waits again" in text
    assert "s → detect · count skipped (skipped by tty:oncall)" in text
    assert "y → approved" in text and "s →" not in text.split("run it?")[1]
    assert "c → continue" in text
    assert "waiting before verify · count" not in text, "c stopped the stepping"
    run = journaled(journal_path)
    assert [(p, s, st) for p, s, st, _ in steps_of(run)] == [
        ("detect", "look", "finding"),  # the re-run's result replaced the first one's
        ("detect", "count", "skipped"),
        ("remediate", "remove", "ok"),
        ("verify", "look", "ok"),
        ("verify", "count", "ok"),
    ]
    assert steps_of(run)[1][3] == "skipped by tty:oncall"
    assert [(a.step_id, a.approved, a.decided_by) for a in run.approvals] == [("remove", True, "tty:oncall")]


def test_console_x_at_the_approval_cancels_the_run(
    runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path
) -> None:
    def script(keys: FedKeys, shown: Shown) -> None:
        shown.wait_for("waiting before detect · look")
        keys.press("p")
        shown.wait_for("waiting before remediate · remove")
        keys.press("n")
        shown.wait_for("└ run it?")
        keys.press("x")

    report, text = stepped_run(runbook_dir, journal_path, marker_dir, script)

    assert report.interrupted and report.exit_code == 130
    assert "x → cancelling: running commands are killed; the run ends interrupted" in text
    run = journaled(journal_path)
    assert run.status.value == "interrupted"
    remove = next(s for s in run.steps if s.step_id == "remove")
    assert (remove.status, remove.message) == ("not_run", "the run was cancelled by tty:oncall")
    assert (marker_dir / "marker").exists(), "nothing was removed"


def test_console_every_host_approves_the_step_once_for_all(
    runbook_dir: RunbookDir, journal_path: Path, marker_dir: Path
) -> None:
    hosts = tuple(Host(name=f"web-{n}", connection="local") for n in (1, 2, 3))

    def script(keys: FedKeys, shown: Shown) -> None:
        shown.wait_for("── waiting before detect · look · Look for the marker (3 hosts)")
        keys.press("p")
        shown.wait_for("waiting before remediate · remove · Remove the marker (3 hosts)")
        keys.press("n")
        shown.wait_for("└ run it? y yes · e yes on every host · n no, decline · x cancel the run")
        keys.press("e")
        shown.wait_for("waiting before verify · look")
        keys.press("c")

    report, text = stepped_run(runbook_dir, journal_path, marker_dir, script, hosts)

    assert report.exit_code == 0
    assert text.count("run it?") == 1, "asked once, for every host"
    run = journaled(journal_path)
    assert sorted((a.host, a.note) for a in run.approvals) == [
        (h.name, "approved for every host") for h in hosts
    ]
