"""What the journal holds of each run it writes, and what it says once it can hold no more of one.

When the store refuses one of a run's writes (:class:`~engine.core.errors.JournalUnwritable`:
a full disk, a PostgreSQL that does not answer) or the lease fence does
(:class:`~engine.core.errors.LeaseLost`), the run's record stops there: the error says what the
journal holds of the run, and every later event of the run raises it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import JournalError, JournalUnwritable, LeaseLost
from engine.core.events import Event, RunFinished, RunStarted, StepFinished


@dataclass
class _Held:
    """What the journal holds of one run."""

    started: bool = False
    steps: int = 0
    last: str = ""

    def holds(self) -> str:
        if not self.steps:
            return "its start and no finished step"
        return f"it up to {self.last} ({self.steps} step{'s' if self.steps != 1 else ''} recorded)"

    def refused(self, run_id: str) -> str:
        if not self.started:
            return f"run {run_id} did not start: nothing of it was recorded and nothing ran"
        return (
            f"run {run_id} stopped: the journal holds {self.holds()}; "
            "commands already started on hosts may have finished"
        )

    def lease_lost(self, run_id: str) -> str:
        held = self.holds() if self.started else "nothing of it"
        return (
            f"run {run_id} stopped: the lease it ran under lapsed before the next step could be recorded "
            f"(the process was paused or cut off from the store for longer than the lease), so nothing "
            f"more of the run starts here; another server may hold its work now "
            f"(the journal holds {held})"
        )


class RunRecords:
    """Per run: how far its record got, and whether it stopped (and why)."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._stopped: dict[str, JournalError] = {}

    def recorded(self, event: Event) -> None:
        """``event`` is in the journal."""
        match event:
            case RunStarted():
                self._held[event.run_id] = _Held(started=True)
            case StepFinished(result=r):
                held = self._held.setdefault(event.run_id, _Held(started=True))
                held.steps += 1
                held.last = f"{r.phase.value}/{r.step_id} on {r.host}"
            case RunFinished():
                self._held.pop(event.run_id, None)

    def stop(self, run_id: str, fault: JournalUnwritable | LeaseLost) -> JournalError:
        """The run's record ends at ``fault``; the error that says so, for this event and every later one."""
        held = self._held.get(run_id, _Held())
        if isinstance(fault, LeaseLost):
            self._stopped[run_id] = LeaseLost(held.lease_lost(run_id))
        else:
            self._stopped[run_id] = fault.about(held.refused(run_id), recorded=held.started)
        return self.stopped(run_id) or fault

    def stopped(self, run_id: str) -> JournalError | None:
        """A fresh copy of the error that stopped the run's record (``None`` while it goes on)."""
        stopped = self._stopped.get(run_id)
        if stopped is None:
            return None
        if isinstance(stopped, JournalUnwritable):
            return stopped.about(stopped.context, recorded=stopped.recorded)
        return type(stopped)(str(stopped))
