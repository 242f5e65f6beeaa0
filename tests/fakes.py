"""Fakes of Cairn's protocols, shared by the tests: executors, an approver, a pacer, an output callback.

Each one satisfies its protocol as mypy sees it (``Executor[Shell]`` from
:mod:`engine.core.executors`, ``Approver`` from :mod:`engine.core.approval`, ``Pacer``
from :mod:`engine.core.pacing`, ``OutputCallback``), so a test that hands one to the
runner is type-checked like the code it drives.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.errors import ExecutorError
from engine.core.executors import OutputCallback, Shell
from engine.core.model import CommandResult, Host
from engine.core.pacing import Pace, PaceDecision, PaceRequest

# --------------------------------------------------------------------------- executors

Answer = CommandResult | Callable[[str], CommandResult]
"""A scripted command's answer: a result, or a function of the command that returns one (or raises)."""

Handler = Callable[[Host, str, threading.Event | None], CommandResult]
"""Answers a command from (host, command, the run's cancel event)."""


class _Reachable:
    """``connect``, ``describe`` and ``close`` of an executor whose every host can be reached."""

    def connect(self, host: Host) -> None:
        pass

    def describe(self, host: Host) -> str:
        return "fake"

    def close(self) -> None:
        pass


@dataclass
class ScriptedExecutor(_Reachable):
    """Answers commands from a script: the first ``(regex, answer)`` whose regex is found in the command.

    Remembers every command in ``seen``; an answer's stdout goes to ``on_output``; a command the script
    does not cover fails the test.
    """

    script: list[tuple[str, Answer]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    """Each command's ``Shell.env`` (the secrets it refers to), in the order of ``seen``."""

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
        command = task.command
        self.seen.append(command)
        self.envs.append(dict(task.env))
        for pattern, answer in self.script:
            if re.search(pattern, command):
                result = answer(command) if callable(answer) else answer
                if on_output and result.stdout:
                    on_output("stdout", result.stdout)
                return result
        raise AssertionError(f"unscripted command: {command}")


@dataclass
class HandlerExecutor(_Reachable):
    """Answers every command with ``handler(host, command, cancel)``; safe to call from many threads.

    Remembers ``(host, command)`` in ``seen``; ``connect`` refuses the hosts named in ``refuse``.
    """

    handler: Handler
    refuse: set[str] = field(default_factory=set)
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, host: Host) -> None:
        if host.name in self.refuse:
            raise ExecutorError(host.name, "connection refused by 10.0.0.9:22: is sshd running there?")

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
        command = task.command
        with self.lock:
            self.seen.append((host.name, command))
        return self.handler(host, command, cancel)


@dataclass
class WaitsUntilCancelled(_Reachable):
    """Every command runs until the run's cancel event is set (at most ``patience`` seconds).

    ``started`` is set when a command begins; the result is always ``cancelled``.
    """

    started: threading.Event = field(default_factory=threading.Event)
    patience: float = 30.0

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
        self.started.set()
        assert isinstance(cancel, threading.Event), "the runner hands every command its cancel event"
        cancel.wait(self.patience)
        return CommandResult(rc=None, stdout="", stderr="", duration=0.1, cancelled=True)


class OutputRecorder:
    """An ``on_output`` callback that keeps what it was given, in order (callable from any thread)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, stream: str, text: str) -> None:
        with self._lock:
            self.chunks.append((stream, text))

    def text(self, stream: str) -> str:
        """Everything that came on ``stream`` (``stdout`` or ``stderr``), joined."""
        with self._lock:
            return "".join(t for s, t in self.chunks if s == stream)


# --------------------------------------------------------------------------- approver and pacer


class RecordingApprover:
    """Answers from a dict of step id -> Decision (approves the rest) as ``test``; remembers the requests."""

    def __init__(self, answers: dict[str, Decision] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[ApprovalRequest] = []

    def decide(self, request: ApprovalRequest) -> Approval:
        self.requests.append(request)
        return Approval(self.answers.get(request.step.id, Decision.APPROVED), "test")


class ScriptedPacer:
    """Answers the runner's "may this step run?" from a list of decisions, one per question, as ``tui:alice``.

    Runs every step once the list is used up; remembers ``(phase, step id, previous step id)`` in ``asked``.
    """

    def __init__(self, answers: list[Pace]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, str | None]] = []

    def before(self, request: PaceRequest) -> PaceDecision:
        previous = request.previous.step_id if request.previous else None
        self.asked.append((request.phase.value, request.step.id, previous))
        return PaceDecision(self.answers.pop(0) if self.answers else Pace.RUN, "tui:alice")
