"""Who says "next": stepping through a run one step at a time.

The runner asks a :class:`Pacer` before every step on every host. The CLI runs
free (:class:`FreeRunning`); a front end that lets a human step through a
runbook — run the next step, the rest of the phase, skip one, run the last one
again — answers from its keys, blocking the host's worker until the human has
chosen. Approval of remediation (:mod:`engine.core.approval`) is a separate, later
question: a step released by the pacer still asks for approval when it needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from engine.core.model import Phase, Step, StepResult


class Pace(Enum):
    """What to do with the step the runner is about to run."""

    RUN = "run"
    """Run it."""
    SKIP = "skip"
    """Do not run it: ``skipped`` by a human, which counts as a check that did not look."""
    RERUN = "rerun"
    """Run the phase's previous step on this host again (its result replaces the old one), then ask again.

    At a phase's first step there is nothing to run again: the step itself runs."""


@dataclass(frozen=True, slots=True)
class PaceRequest:
    """The step a host's worker is about to run, and the phase's last result on that host."""

    run_id: str
    host: str
    phase: Phase
    step: Step
    previous: StepResult | None
    """The last result of this phase on this host; ``None`` at the phase's first step."""


@dataclass(frozen=True, slots=True)
class PaceDecision:
    """A pacing decision and who made it (``tui:alice``); ``by`` is empty when nobody was asked."""

    pace: Pace
    by: str = ""


class Pacer(Protocol):
    """Releases steps one at a time, a phase at a time, or all at once."""

    def before(self, request: PaceRequest) -> PaceDecision:
        """Block until the step may run, is skipped, or the previous step should run again."""
        ...


class FreeRunning:
    """Every step runs as soon as the one before it finished (the CLI, alerts)."""

    def before(self, request: PaceRequest) -> PaceDecision:
        """Run it."""
        return PaceDecision(Pace.RUN)
