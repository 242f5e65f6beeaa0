"""Stepping through a run from keys: the step is released for every host at once.

A front end that lets a human step through a runbook (the TUI's run screen,
``cairn run --step``) gives the runner a :class:`StepPacer` as its
:class:`~engine.core.pacing.Pacer`. Each host's worker blocks in
:meth:`StepPacer.before` until the human releases the step it waits before
(``n``), the rest of its phase (``p``), every later step (``c``), skips it
(``s``), or has the phase's previous step run again (``r``). The front end
learns that hosts began or stopped waiting through ``notify`` (called on the
worker's thread: it must only wake the front end) and reads :meth:`StepPacer.waiting`.

Nothing here knows about a screen or a terminal: the keys are the front end's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.core.model import PHASE_ORDER, Phase, Runbook
from engine.core.pacing import Pace, PaceDecision, PaceRequest

StepKey = tuple[Phase, str]
"""A step of the runbook: its phase and id (verify's steps are keyed apart from detect's)."""

Notify = Callable[[], object]
"""Wakes the front end; called from the runner's threads, so it must be quick and thread-safe."""


def step_order(runbook: Runbook) -> list[StepKey]:
    """Every step of the runbook in the order a run reaches them."""
    return [(phase, step.id) for phase in PHASE_ORDER for step in runbook.steps(phase)]


@dataclass(eq=False)
class _Ticket:
    """One host's worker waiting before a step."""

    request: PaceRequest
    rerun: bool = False


@dataclass
class _Grants:
    run: set[StepKey] = field(default_factory=set)
    skip: set[StepKey] = field(default_factory=set)
    free: bool = False
    cancelled: bool = False


class StepPacer:
    """Stepping through a run from keys: each step waits until it is released, for every host at once.

    A release is by step (phase and id), not by host: every host that reaches a
    released step runs it, so a 50-host run advances with one key. ``before`` runs
    on the thread asking for a host (a runner's worker, never the front end's own
    thread); every other method on the front end's thread (any thread is safe).
    """

    def __init__(self, runbook: Runbook, *, by: str, notify: Notify = lambda: None) -> None:
        self.by = by
        """Who paces, as journaled for skipped steps (``tui:alice``, ``tty:alice``)."""
        self._order = {key: index for index, key in enumerate(step_order(runbook))}
        self._phase_steps = {phase: [s.id for s in runbook.steps(phase)] for phase in PHASE_ORDER}
        self._notify = notify
        self._cond = threading.Condition()
        self._grants = _Grants()
        self._waiting: list[_Ticket] = []

    # ------------------------------------------------------------ worker threads

    def before(self, request: PaceRequest) -> PaceDecision:
        """Block the host's worker until its step is released, skipped or the previous one re-run."""
        key = (request.phase, request.step.id)
        ticket = _Ticket(request)
        with self._cond:
            try:
                while True:
                    decision = self._decide(key, ticket)
                    if decision is not None:
                        return decision
                    if ticket not in self._waiting:
                        self._waiting.append(ticket)
                        self._notify()
                    self._cond.wait()
            finally:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._notify()

    def _decide(self, key: StepKey, ticket: _Ticket) -> PaceDecision | None:
        grants = self._grants
        if grants.cancelled:
            return PaceDecision(Pace.RUN)  # the runner sees its cancel and skips the step as interrupted
        if key in grants.skip:
            return PaceDecision(Pace.SKIP, self.by)
        if ticket.rerun:
            return PaceDecision(Pace.RERUN, self.by)
        if grants.free or key in grants.run:
            return PaceDecision(Pace.RUN, self.by if not grants.free else "")
        return None

    # ------------------------------------------------------------ the front end's thread

    def waiting(self) -> list[PaceRequest]:
        """The hosts waiting now, each with the step it waits before."""
        with self._cond:
            return [t.request for t in self._waiting]

    def next_step(self) -> StepKey | None:
        """The step the next key acts on: the earliest (in the runbook's order) that a host waits before."""
        with self._cond:
            return self._next_key()

    def waiting_at(self, key: StepKey) -> list[str]:
        """The hosts waiting before ``key`` now, in the order they reached it."""
        with self._cond:
            return [t.request.host for t in self._waiting if (t.request.phase, t.request.step.id) == key]

    def _next_key(self) -> StepKey | None:
        keys = {(t.request.phase, t.request.step.id) for t in self._waiting}
        return min(keys, key=lambda k: self._order.get(k, len(self._order))) if keys else None

    def release_next(self) -> StepKey | None:
        """Run the next step on every host (``n``); the step released, or ``None`` if none waits."""
        return self._grant(self._grants.run.add)

    def release_phase(self) -> StepKey | None:
        """Run the rest of the next step's phase without stopping (``p``)."""

        def phase(key: StepKey) -> None:
            self._grants.run.update((key[0], step_id) for step_id in self._phase_steps[key[0]])

        return self._grant(phase)

    def skip_next(self) -> StepKey | None:
        """Skip the next step on every host (``s``): journaled as ``skipped by <by>``."""
        return self._grant(self._grants.skip.add)

    def rerun_previous(self) -> list[PaceRequest]:
        """Run the phase's previous step again on the hosts waiting at the next step (``r``).

        Returns the requests that will re-run (empty at a phase's first step, where
        there is nothing before it to run again)."""
        with self._cond:
            key = self._next_key()
            chosen = [
                t
                for t in self._waiting
                if (t.request.phase, t.request.step.id) == key and t.request.previous is not None
            ]
            for ticket in chosen:
                ticket.rerun = True
            self._cond.notify_all()
            return [t.request for t in chosen]

    def release_all(self) -> None:
        """Stop stepping: every later step runs as soon as it can (``c``); approvals are still asked."""
        with self._cond:
            self._grants.free = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Let every waiting worker go (call after setting the runner's cancel: they skip as interrupted)."""
        with self._cond:
            self._grants.cancelled = True
            self._cond.notify_all()

    @property
    def free_running(self) -> bool:
        """True once ``c`` stopped the stepping."""
        return self._grants.free

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` let every worker go."""
        return self._grants.cancelled

    def _grant(self, apply: Callable[[StepKey], None]) -> StepKey | None:
        with self._cond:
            key = self._next_key()
            if key is not None:
                apply(key)
                self._cond.notify_all()
            return key
