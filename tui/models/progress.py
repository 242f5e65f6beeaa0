"""What the run screen knows about each step on each host, built from the run's events.

:class:`RunProgress` is plain state (no widgets, no Textual): the run screen
feeds it the events it drains from the bridge and the pacer's waiting hosts, and
the step widgets in ``tui/widgets/`` render from it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from rich.text import Text

from engine.core.events import (
    ApprovalRequested,
    Event,
    HostFinished,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
    StepStarted,
)
from engine.core.model import (
    PHASE_ORDER,
    HostReport,
    Phase,
    Runbook,
    RunReport,
    Step,
    StepResult,
    format_duration,
)
from engine.core.pacing import PaceRequest
from engine.core.stepping import StepKey

OUTPUT_LINES = 2000
"""Lines of output kept per step and host for the output pane (the journal keeps it all)."""


class StepState(Enum):
    """Where one step stands on one host, as the run screen shows it."""

    PENDING = "pending"
    """Not reached yet."""
    WAITING = "waiting"
    """Reached, waiting for a key to release it."""
    APPROVAL = "approval"
    """Waiting for a human's approval."""
    RUNNING = "running"
    """Running now."""
    OK = "ok"
    """Ran; everything as expected."""
    FINDING = "finding"
    """Ran; the pitfall's symptom is there."""
    ERROR = "error"
    """The step failed."""
    TIMEOUT = "timeout"
    """Ran out of time; the command was killed."""
    SKIPPED = "skipped"
    """Not needed or not wanted (its condition, a human, a dry run)."""
    DECLINED = "declined"
    """A human refused it."""
    NOT_ASKED = "not_asked"
    """It needed a human and nobody was there to ask (the run was cancelled first, …)."""
    NOT_RUN = "not_run"
    """Never started: the run stopped first, an earlier remediation failed, or a program is missing."""
    CANCELLED = "cancelled"
    """The run was cancelled while it ran; its command was killed."""
    INTERRUPTED = "interrupted"
    """It was running when the process running it stopped."""


def whole_seconds(seconds: float) -> str:
    """A running step's elapsed time to the second (``7s``, ``4m05s``): it changes once a second, as often as it is redrawn."""
    return format_duration(seconds) if seconds >= 60 else f"{int(seconds)}s"


STATE_STYLE = {
    StepState.PENDING: "dim",
    StepState.WAITING: "bold yellow",
    StepState.APPROVAL: "bold magenta",
    StepState.RUNNING: "bold cyan",
    StepState.OK: "green",
    StepState.FINDING: "bold red",
    StepState.ERROR: "bold red",
    StepState.TIMEOUT: "bold red",
    StepState.SKIPPED: "dim",
    StepState.DECLINED: "yellow",
    StepState.NOT_ASKED: "yellow",
    StepState.NOT_RUN: "dim",
    StepState.CANCELLED: "bold yellow",
    StepState.INTERRUPTED: "bold yellow",
}


@dataclass
class HostStep:
    """One step on one host."""

    state: StepState = StepState.PENDING
    started_at: float = 0.0
    command: str = ""
    become: str = ""
    """How its command escalates on this host (``as root via sudo``): from the plan, then the run's events."""
    result: StepResult | None = None
    runs: int = 0
    """How many times it started (a re-run makes it 2)."""
    output: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))
    """(stream, line) pairs, newest last."""

    def elapsed(self, now: float | None = None) -> float:
        """Seconds it has been running (0 when not running)."""
        if self.state is not StepState.RUNNING:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - self.started_at)

    def label(self, now: float | None = None) -> str:
        """``running 12s``, ``ok 0.3s``, ``finding``: the state with its time."""
        if self.state is StepState.RUNNING:
            return f"running {whole_seconds(self.elapsed(now))}"
        return state_text(self.state)


def state_text(state: StepState) -> str:
    """A state as people read it: ``not asked``, not ``not_asked``."""
    return state.value.replace("_", " ")


class RunProgress:
    """Every step on every host of one run, updated from its events."""

    def __init__(self, runbook: Runbook, hosts: list[str], phases: tuple[Phase, ...] = PHASE_ORDER) -> None:
        self.runbook = runbook
        self.hosts = hosts
        self.phases = phases
        """The phases this run can go through (it stops after its last phase)."""
        self.run_id = ""
        self.steps: dict[StepKey, dict[str, HostStep]] = {
            (phase, step.id): {host: HostStep() for host in hosts}
            for phase in PHASE_ORDER
            for step in runbook.steps(phase)
        }
        self.host_reports: dict[str, HostReport] = {}
        self._waiting: set[tuple[StepKey, str]] = set()
        self.report: RunReport | None = None

    @property
    def finished(self) -> bool:
        """True once the run ended (finished or interrupted)."""
        return self.report is not None

    def apply(self, event: Event) -> StepKey | None:
        """Take in one event; the step whose state it changed, if any (output changes no state)."""
        match event:
            case RunStarted():
                self.run_id = event.run_id
            case StepStarted():
                cell = self._cell((event.phase, event.step_id), event.host)
                if cell.runs:
                    cell.output.append(("note", f"── run {cell.runs + 1} ──\n"))
                cell.runs += 1
                cell.state, cell.started_at, cell.command = StepState.RUNNING, event.at, event.command
                cell.become, cell.result = event.become, None
                return (event.phase, event.step_id)
            case StepOutput():
                self._cell((event.phase, event.step_id), event.host).output.append((event.stream, event.text))
            case ApprovalRequested():
                cell = self._cell((event.phase, event.step_id), event.host)
                cell.state, cell.command, cell.become = StepState.APPROVAL, event.command, event.become
                return (event.phase, event.step_id)
            case StepApproval():
                return (event.phase, event.step_id)
            case StepFinished():
                result = event.result
                cell = self._cell((result.phase, result.step_id), result.host)
                cell.state, cell.result = StepState(result.status.value), result
                cell.command = result.command or cell.command
                return (result.phase, result.step_id)
            case HostFinished():
                self.host_reports[event.report.host] = event.report
            case RunFinished():
                self.report = event.report
        return None

    def set_waiting(self, waiting: list[PaceRequest]) -> set[StepKey]:
        """Mark the steps hosts wait before (and unmark those no longer waited at); the steps changed."""
        now_waiting = {((r.phase, r.step.id), r.host) for r in waiting}
        changed: set[StepKey] = set()
        for key, host in self._waiting - now_waiting:
            cell = self._cell(key, host)
            if cell.state is StepState.WAITING:
                cell.state = StepState.PENDING if cell.result is None else StepState(cell.result.status.value)
                changed.add(key)
        for key, host in now_waiting - self._waiting:
            cell = self._cell(key, host)
            if cell.state is StepState.PENDING:
                cell.state = StepState.WAITING
                changed.add(key)
        self._waiting = now_waiting
        return changed

    def _cell(self, key: StepKey, host: str) -> HostStep:
        cells = self.steps.setdefault(key, {})
        cell = cells.get(host)
        if cell is None:
            cell = cells[host] = HostStep()
        return cell

    def running(self) -> list[StepKey]:
        """Steps running on some host now."""
        return [
            k for k, cells in self.steps.items() if any(c.state is StepState.RUNNING for c in cells.values())
        ]

    def summary(self, key: StepKey, now: float | None = None) -> Text:
        """The step's state across hosts: ``finding`` on one host, ``ok 48 · finding 2`` on many."""
        cells = list(self.steps.get(key, {}).values())
        if len(cells) == 1:
            return Text(cells[0].label(now), style=STATE_STYLE[cells[0].state])
        counts: dict[StepState, int] = {}
        for cell in cells:
            counts[cell.state] = counts.get(cell.state, 0) + 1
        if set(counts) == {StepState.PENDING}:
            return Text("pending", style=STATE_STYLE[StepState.PENDING])
        text = Text()
        for state in StepState:
            if state in counts and state is not StepState.PENDING:
                if text:
                    text.append(" · ", style="dim")
                label = f"{state_text(state)} {counts[state]}"
                if state is StepState.RUNNING:
                    longest = max(c.elapsed(now) for c in cells)
                    label += f" ({whole_seconds(longest)})"
                text.append(label, style=STATE_STYLE[state])
        return text


def find_step(progress: RunProgress, key: StepKey) -> Step:
    """The runbook's step for ``key``."""
    return next(s for s in progress.runbook.steps(key[0]) if s.id == key[1])
