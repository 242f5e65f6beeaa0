"""Between the run and the UI thread: the Textual messages, and how the run wakes the UI.

The run's questions come from other threads: the threads that answer the run
process (:mod:`engine.core.run_process`, one per question). The engine's
:class:`~engine.core.stepping.StepPacer` and
:class:`~engine.core.approval.AskingApprover` block those threads until the UI
answers; this module is the UI's side of it. :class:`EventForwarder` buffers
the run's events for the UI thread, telling it (with a callback that posts a
Textual message, which is thread-safe) only when the buffer goes from empty to
non-empty, so a 50-host fan-out that streams output costs the UI one wake-up
per batch, not one per line; :class:`Doorbell` does the same for the pacer's
``notify``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from textual.message import Message

from engine.core.approval import ApprovalChoice, ApprovalRequest
from engine.core.errors import CairnError
from engine.core.events import Event
from engine.core.model import Host, Phase, Runbook
from engine.core.stepping import Notify, StepKey


class RunEventsReady(Message):
    """The run has new events waiting in its :class:`EventForwarder`."""


class PacingChanged(Message):
    """Which hosts wait at which step changed (the pacer's :meth:`~engine.core.stepping.StepPacer.waiting`)."""


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
    """The exact command of every step on every host, as the plan renders them before the run, and how
    each escalates (``as root via sudo``; only the steps that do)."""

    def __init__(
        self, commands: dict[tuple[StepKey, str], str], become: dict[tuple[StepKey, str], str] | None = None
    ) -> None:
        super().__init__()
        self.commands = commands
        self.become = become or {}


def planned_commands(
    runbook: Runbook, hosts: list[Host], inputs: Mapping[str, Any], last_phase: Phase
) -> dict[tuple[StepKey, str], str]:
    """``{((phase, step), host): command}`` for the steps the plan can render before the run.

    Steps that read earlier results are left out (they are rendered when they run)."""
    from engine.core.plan import plan_run  # noqa: PLC0415

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


def planned_become(runbook: Runbook, hosts: list[Host]) -> dict[tuple[StepKey, str], str]:
    """``{((phase, step), host): "as root via sudo"}`` for every step that escalates on a host (the step,
    the runbook and the host's inventory decide; no template is rendered for it)."""
    from engine.core.become import become_for  # noqa: PLC0415

    return {
        ((phase, step.id), host.name): escalation.label
        for phase in Phase
        for step in runbook.steps(phase)
        for host in hosts
        if (escalation := become_for(step, runbook, host.vars)) is not None
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
