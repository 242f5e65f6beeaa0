"""The replay executor: hosts answered from a recording, never contacted.

:class:`ReplayExecutors` stands where the runner's :class:`~engine.core.executors.ExecutorSet`
stands, so a case runs the runbook's real logic — templates, ``when``, ``parse``,
``expect``, reports, preflight, approvals and phase rules — and only the commands'
answers come from the case. A step the case has no answer for is never guessed: it
is an executor error on that host ("never recorded"), and the replay lists it.
:class:`ReplayApprover` answers approvals with the case's decisions.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.errors import ExecutorError
from engine.core.executors import ExecutorSet, OutputCallback, Redact, Shell, StepKey, Task
from engine.core.model import CommandResult, Host
from engine.core.preflight import probed_programs
from engine.core.replay.case import CaseHost, Recorded

REPLAYED_BY = "cairn test"
"""Who approves a replayed step the case has no decision for."""


@dataclass(frozen=True, slots=True)
class Unrecorded:
    """A step the runbook ran that the recording has no answer for."""

    host: str
    key: str
    """``phase.step``."""
    why: str
    command: str
    """What the runbook would run now (redacted)."""
    recorded_command: str | None = None
    """The command the recording answered, when it answered another one."""


def step_key(step: StepKey) -> str:
    """``detect.look``."""
    return f"{step[0].value}.{step[1]}"


class ReplayExecutors(ExecutorSet):
    """Answers every task from a case's recorded outputs (thread-safe: hosts replay in parallel)."""

    def __init__(self, hosts: Mapping[str, CaseHost], redact: Redact) -> None:
        super().__init__({}, redact=redact)
        self._hosts = dict(hosts)
        self._redact_text = redact
        self._guard = threading.Lock()
        self.unrecorded: list[Unrecorded] = []
        self.used: set[tuple[str, str]] = set()
        """(host, ``phase.step``) of every recording a step was answered from."""

    def for_host(self, host: Host) -> _RecordedHost:
        """The host as the recording has it (for connect and preflight)."""
        return _RecordedHost(self._case_host(host))

    def _case_host(self, host: Host) -> CaseHost:
        found = self._hosts.get(host.name)
        if found is None:
            raise ExecutorError(host.name, "the recording has no such host")
        return found

    def execute(
        self,
        host: Host,
        task: Task,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
        step: StepKey | None = None,
    ) -> CommandResult:
        """The recorded answer to ``step`` on ``host``; :class:`ExecutorError` when there is none."""
        del cancel, artifacts
        if step is None:  # only steps are replayed; a task without one is a caller's bug
            raise ExecutorError(host.name, "replay needs to know which step a task is")
        key = step_key(step)
        command = self._redact_text(task.command) if isinstance(task, Shell) else ""
        recorded = self._case_host(host).steps.get(key)
        if recorded is None:
            self._missing(Unrecorded(host.name, key, "never recorded", command))
            raise ExecutorError(host.name, f"{key} was never recorded on this host: no output to replay")
        if recorded.command is not None and isinstance(task, Shell) and recorded.command != command:
            self._missing(Unrecorded(host.name, key, "its command changed", command, recorded.command))
            raise ExecutorError(
                host.name,
                f"{key} now runs another command than the one recorded: its output is not replayed for it",
            )
        with self._guard:
            self.used.add((host.name, key))
        return _answer(recorded, timeout, on_output, host.name)

    def _missing(self, item: Unrecorded) -> None:
        with self._guard:
            self.unrecorded.append(item)

    def close(self) -> None:
        """Nothing to release."""


def _answer(recorded: Recorded, timeout: float, on_output: OutputCallback | None, host: str) -> CommandResult:
    if recorded.error is not None:
        raise ExecutorError(host, recorded.error)
    if on_output is not None:
        for stream, text in (("stdout", recorded.stdout), ("stderr", recorded.stderr)):
            if text:
                on_output(stream, text)
    if recorded.hang:
        return CommandResult(
            rc=None, stdout=recorded.stdout, stderr=recorded.stderr, duration=timeout, timed_out=True
        )
    return CommandResult(
        rc=recorded.rc,
        stdout=recorded.stdout,
        stderr=recorded.stderr,
        duration=recorded.duration,
        data=dict(recorded.data) if recorded.data is not None else None,
    )


@dataclass
class _RecordedHost:
    """A host of the recording: reachable or not, and which programs preflight finds."""

    host: CaseHost

    def connect(self, host: Host) -> None:
        if self.host.unreachable is not None:
            raise ExecutorError(host.name, self.host.unreachable)

    def execute(
        self,
        host: Host,
        task: Shell,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        """The preflight probe's answer: every program it asks for but those the case says are missing."""
        del timeout, on_output, cancel, artifacts
        programs = probed_programs(task.command)
        if not programs:
            raise ExecutorError(host.name, "replay answers steps and the preflight probe only")
        lines = [f"{p}\t/usr/bin/{p}\n" for p in programs if p not in self.host.missing]
        return CommandResult(rc=0, stdout="".join(lines), stderr="", duration=0.0)

    def describe(self, host: Host) -> str:
        return "replayed from a recording"

    def close(self) -> None:
        pass


@dataclass
class ReplayApprover:
    """Answers each approval with the case's decision for the step; a command not named is approved
    (as ``--yes``), a manual step not named is not asked."""

    hosts: Mapping[str, CaseHost]
    asked: list[tuple[str, str, str]] = field(default_factory=list)
    """(host, ``phase.step``, decision) of every question, in the order asked."""

    def decide(self, request: ApprovalRequest) -> Approval:
        key = f"{request.phase.value}.{request.step.id}"
        case_host = self.hosts.get(request.host)
        given = case_host.decisions.get(key) if case_host is not None else None
        decision = given or ("not-asked" if request.manual else "approve")
        self.asked.append((request.host, key, decision))
        match decision:
            case "approve":
                return Approval(Decision.APPROVED, REPLAYED_BY)
            case "decline":
                return Approval(Decision.DECLINED, REPLAYED_BY, "declined (as recorded)")
            case "skip":
                return Approval(Decision.SKIPPED, REPLAYED_BY, "skipped (as recorded)")
            case _:
                why = "a manual step needs a human" if request.manual else "nobody was asked (as recorded)"
                return Approval(Decision.NOT_ASKED, REPLAYED_BY, f"not asked: {why}")
