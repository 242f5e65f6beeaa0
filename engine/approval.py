"""Who says yes: approval of remediation steps and confirmation of manual steps.

The runner asks an :class:`Approver` before every step with ``confirm`` (all
remediation steps by default) and before recording a manual step as done. The
CLI asks on the terminal; ``--yes`` approves commands but never pretends a human
did a manual step; without a terminal and without ``--yes`` nothing is approved.
A step nobody could be asked about is ``not asked``, never ``declined``: that
word is kept for a human's refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from engine.model import Phase, Step, StepKind


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
