"""Who says yes: approval of remediation steps and confirmation of manual steps.

The runner asks an :class:`Approver` before every step with ``confirm`` (all
remediation steps by default) and before recording a manual step as done. The
CLI asks on the terminal; ``--yes`` approves commands but never pretends a human
did a manual step; without a terminal and without ``--yes`` nothing is approved.
A step nobody could be asked about is ``not asked``, never ``declined``: that
word is kept for a human's refusal.

A front end that asks somewhere else than on the thread deciding (the TUI's
modal, the ``cairn run --step`` console that owns the keyboard) uses an
:class:`AskingApprover`: it hands the question to the front end and blocks until
an :class:`ApprovalChoice` comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from engine.core.model import Phase, Step, StepKind

if TYPE_CHECKING:
    from engine.core.redaction import Redactor


class Decision(Enum):
    """What the approver decided."""

    APPROVED = "approved"
    """Run it / the manual step was done."""
    DECLINED = "declined"
    """Do not run it; recorded as declined."""
    SKIPPED = "skipped"
    """A human chose to skip it (a manual step not done, ``s`` at the prompt)."""
    NOT_ASKED = "not_asked"
    """Nobody was there to decide: no terminal, an alert-started run, a manual step under ``--yes``,
    a run interrupted before the answer. Never the same as a human's refusal."""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One step waiting for a decision, with exactly what would run where."""

    run_id: str
    host: str
    phase: Phase
    step: Step
    text: str
    """The rendered command (secrets redacted) or, for manual steps, the instructions."""
    become: str = ""
    """How the command would escalate on this host (``as root via sudo``, :attr:`Become.label
    <engine.core.become.Become.label>`); ``""``: as the login user."""

    @property
    def manual(self) -> bool:
        """True for a manual step (the human does it; the decision says it was done)."""
        return self.step.kind is StepKind.MANUAL


@dataclass(frozen=True, slots=True)
class Approval:
    """A decision and who made it."""

    decision: Decision
    by: str
    note: str = ""

    @property
    def approved(self) -> bool:
        """True when the step may run (or the manual step was done)."""
        return self.decision is Decision.APPROVED


class Approver(Protocol):
    """Decides on steps that need a human."""

    def decide(self, request: ApprovalRequest) -> Approval:
        """Approve, decline or skip ``request``."""
        ...


class AssumeYes:
    """``--yes``: approves every command; manual steps are skipped, never faked as done."""

    def decide(self, request: ApprovalRequest) -> Approval:
        """Approve commands, skip manual steps."""
        if request.manual:
            return Approval(
                Decision.NOT_ASKED,
                "--yes",
                "not asked: a manual step needs a human to do it; --yes approves commands only",
            )
        return Approval(Decision.APPROVED, "--yes")


NO_TERMINAL = "not asked: no terminal to ask on; rerun on a terminal, or with --yes to approve the commands"


class NobodyToAsk:
    """No terminal and no ``--yes``: nothing is approved, and the note says how to approve."""

    def decide(self, request: ApprovalRequest) -> Approval:
        """Nobody was asked; the note says how to approve."""
        return Approval(Decision.NOT_ASKED, "no-terminal", NO_TERMINAL)


class RedactedRequests:
    """Hands ``approver`` every request with the run's secrets taken out of what it shows.

    Questions go to an approver without passing the event bus (a terminal, the TUI's dialog, serve's
    policy), so the runner asks through this: an approver never sees a secret, whatever built the text.
    """

    def __init__(self, approver: Approver, redact: Redactor) -> None:
        self.approver = approver
        self.redact = redact

    def decide(self, request: ApprovalRequest) -> Approval:
        """``approver``'s decision on ``request``, shown without secrets."""
        shown = self.redact(request.text)
        return self.approver.decide(request if shown == request.text else replace(request, text=shown))


class ApprovalChoice(Enum):
    """What a human answered when asked by an :class:`AskingApprover`."""

    APPROVE = "approve"
    """Run it on this host (a manual step: it is done)."""
    APPROVE_EVERY_HOST = "every-host"
    """Run this step on every host of the run without asking again."""
    DECLINE = "decline"
    """Do not run it; journaled as declined."""
    SKIP = "skip"
    """A manual step not done now; journaled as skipped."""


Answer = Callable[[ApprovalChoice], None]
"""Gives the human's choice back to the waiting :meth:`AskingApprover.decide` (any thread, once)."""


class AskingApprover:
    """Asks a human through a front end; ``decide`` runs on a thread of the run's and blocks until answered.

    ``ask(request, answer)`` must make the front end show the request and call
    ``answer`` once, from any thread (the TUI's run screen posts a message that
    opens its modal; ``cairn run --step`` hands it to the console that reads the keys).
    """

    def __init__(self, by: str, ask: Callable[[ApprovalRequest, Answer], object]):
        self.by = by
        """Who approves, as journaled (``tui:alice``, ``tty:alice``)."""
        self._ask = ask
        self._lock = threading.Lock()
        self._closed = ""
        self._pending: _Pending | None = None
        self._every_host: set[tuple[Phase, str]] = set()

    def decide(self, request: ApprovalRequest) -> Approval:
        """Ask the human about ``request``; not asked if the run is cancelled or the front end closes meanwhile."""
        key = (request.phase, request.step.id)
        with self._lock:
            if self._closed:
                return Approval(Decision.NOT_ASKED, self.by, self._closed)
            if key in self._every_host and not request.manual:
                return Approval(Decision.APPROVED, self.by, "approved for every host")
            pending = self._pending = _Pending()
        self._ask(request, pending.answer)
        choice = pending.wait()
        with self._lock:
            self._pending = None
            if choice is None:
                return Approval(Decision.NOT_ASKED, self.by, self._closed)
            if choice is ApprovalChoice.APPROVE_EVERY_HOST:
                self._every_host.add(key)
        return self.approval(choice)

    def approval(self, choice: ApprovalChoice) -> Approval:
        """The engine's decision for a choice the human made."""
        match choice:
            case ApprovalChoice.APPROVE:
                return Approval(Decision.APPROVED, self.by)
            case ApprovalChoice.APPROVE_EVERY_HOST:
                return Approval(Decision.APPROVED, self.by, "approved for every host")
            case ApprovalChoice.SKIP:
                return Approval(Decision.SKIPPED, self.by, f"skipped by {self.by}")
            case ApprovalChoice.DECLINE:
                return Approval(Decision.DECLINED, self.by, f"declined by {self.by}")

    def close(self, note: str) -> None:
        """Answer the question being asked and every later one not asked, with ``note`` (cancel, screen closed)."""
        with self._lock:
            self._closed = note
            if self._pending is not None:
                self._pending.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: nothing more is asked."""
        with self._lock:
            return bool(self._closed)


class _Pending:
    """One question waiting for its answer."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._choice: ApprovalChoice | None = None

    def answer(self, choice: ApprovalChoice) -> None:
        with self._lock:  # the first of answer and close wins
            if not self._done.is_set():
                self._choice = choice
                self._done.set()

    def close(self) -> None:
        with self._lock:
            self._done.set()

    def wait(self) -> ApprovalChoice | None:
        self._done.wait()
        return self._choice
