"""Between the runner's threads and the UI thread: approvals, pacing and events.

The run's questions come from other threads: in the TUI, the threads that
answer the run process (:mod:`tui.run_process`, one per question); in one
process, the runner's own threads. Nothing here touches a widget: the
:class:`TuiPacer` and :class:`TuiApprover` block those threads until the UI
answers, and :class:`EventForwarder` buffers the run's events for the UI thread,
telling it (with a callback that posts a Textual message, which is thread-safe)
only when the buffer goes from empty to non-empty, so a 50-host fan-out that
streams output costs the UI one wake-up per batch, not one per line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from textual.message import Message

from engine.approval import Approval, ApprovalRequest, Decision
from engine.errors import CairnError
from engine.events import Event
from engine.model import PHASE_ORDER, Host, Phase, Runbook
from engine.pacing import Pace, PaceDecision, PaceRequest

StepKey = tuple[Phase, str]
"""A step of the runbook: its phase and id (verify's steps are keyed apart from detect's)."""

Notify = Callable[[], object]


class RunEventsReady(Message):
    """The run has new events waiting in its :class:`EventForwarder`."""


class PacingChanged(Message):
    """Which hosts wait at which step changed (the pacer's :meth:`TuiPacer.waiting`)."""


class ApprovalNeeded(Message):
    """A step waits for a human: open the approval modal and call :attr:`answer` with the choice."""

    def __init__(self, request: ApprovalRequest, answer: Callable[[ApprovalChoice], None]) -> None:
        super().__init__()
        self.request = request
        self.answer = answer


class Doorbell:
    """Coalesces wake-ups: ``ring`` calls ``notify`` only once until the UI calls ``answer``."""

    def __init__(self, notify: Notify) -> None:
        self._notify = notify
        self._rung = False
        self._lock = threading.Lock()

    def ring(self) -> None:
        """Wake the UI unless it has been woken and not looked yet (any thread)."""
        with self._lock:
            if self._rung:
                return
            self._rung = True
        self._notify()

    def answer(self) -> None:
        """The UI is looking now: the next ring wakes it again (UI thread, before it looks)."""
        with self._lock:
            self._rung = False


class PlannedCommands(Message):
    """The exact command of every step on every host, as the plan renders them before the run."""

    def __init__(self, commands: dict[tuple[StepKey, str], str]) -> None:
        super().__init__()
        self.commands = commands


def planned_commands(
    runbook: Runbook, hosts: list[Host], inputs: Mapping[str, Any], last_phase: Phase
) -> dict[tuple[StepKey, str], str]:
    """``{((phase, step), host): command}`` for the steps the plan can render before the run.

    Steps that read earlier results are left out (they are rendered when they run)."""
    from engine.plan import plan_run  # noqa: PLC0415

    try:
        plans = plan_run(runbook, hosts, inputs, last_phase=last_phase)
    except CairnError:  # the plan is a preview: the run itself reports what cannot be rendered
        return {}
    return {
        ((p.phase, p.step.id), plan.host.name): p.text
        for plan in plans
        for p in plan.steps
        if not (p.deferred or p.error)
    }


class EventForwarder:
    """An event-bus subscriber: keeps the run's events for the UI thread, which drains them in batches."""

    def __init__(self, notify: Notify) -> None:
        self._notify = notify
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Keep ``event``; wake the UI when it is the first one since the last drain."""
        with self._lock:
            self._events.append(event)
            first = len(self._events) == 1
        if first:
            self._notify()

    def extend(self, events: Sequence[Event]) -> None:
        """Keep a batch of events (from the run's process); wake the UI as for one."""
        if not events:
            return
        with self._lock:
            first = not self._events
            self._events.extend(events)
        if first:
            self._notify()

    def drain(self) -> list[Event]:
        """Every event kept so far, in order; the buffer is empty afterwards."""
        with self._lock:
            events, self._events = self._events, []
        return events


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


class TuiPacer:
    """Stepping through a run from keys: each step waits until it is released, for every host at once.

    A release is by step (phase and id), not by host: every host that reaches a
    released step runs it, so a 50-host run advances with one key. ``before`` runs
    on the thread asking for a host (never the UI thread); every other method on the UI thread.
    """

    def __init__(self, runbook: Runbook, *, by: str, notify: Notify = lambda: None) -> None:
        self.by = by
        """Who paces, as journaled for skipped steps (``tui:alice``)."""
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

    # ------------------------------------------------------------ UI thread

    def waiting(self) -> list[PaceRequest]:
        """The hosts waiting now, each with the step it waits before."""
        with self._cond:
            return [t.request for t in self._waiting]

    def next_step(self) -> StepKey | None:
        """The step the next key acts on: the earliest (in the runbook's order) that a host waits before."""
        with self._cond:
            return self._next_key()

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

    def _grant(self, apply: Callable[[StepKey], None]) -> StepKey | None:
        with self._cond:
            key = self._next_key()
            if key is not None:
                apply(key)
                self._cond.notify_all()
            return key


class ApprovalChoice(Enum):
    """What the human answered in the approval modal."""

    APPROVE = "approve"
    """Run it on this host (a manual step: it is done)."""
    APPROVE_EVERY_HOST = "every-host"
    """Run this step on every host of the run without asking again."""
    DECLINE = "decline"
    """Do not run it; journaled as declined."""
    SKIP = "skip"
    """A manual step not done now; journaled as skipped."""


class TuiApprover:
    """Asks the human in a modal; ``decide`` runs on a thread of the run's and blocks until answered.

    ``ask(request, answer)`` must make the UI show the request and call ``answer``
    once, from any thread (the run screen posts an :class:`ApprovalNeeded`).
    """

    def __init__(self, by: str, ask: Callable[[ApprovalRequest, Callable[[ApprovalChoice], None]], object]):
        self.by = by
        """Who approves, as journaled (``tui:alice``)."""
        self._ask = ask
        self._lock = threading.Lock()
        self._closed = ""
        self._pending: _Pending | None = None
        self._every_host: set[StepKey] = set()

    def decide(self, request: ApprovalRequest) -> Approval:
        """Ask the human about ``request``; a decline if the run is cancelled or the screen closes meanwhile."""
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
        """The engine's decision for a choice made in the modal."""
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
        """Decline the question being asked and every later one, with ``note`` (cancel, screen closed)."""
        with self._lock:
            self._closed = note
            if self._pending is not None:
                self._pending.close()


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
