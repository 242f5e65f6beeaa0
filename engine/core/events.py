"""One typed event stream for a run; the journal, CLI, TUI and server all read it.

Events are frozen dataclasses, one class per kind. The emitter builds the event
itself (``bus.emit(StepStarted(host=…, phase=…, …))``), so mypy checks every
field at every emit site; the :class:`EventBus` stamps it with the run id, a
per-run counter and a timestamp and delivers it synchronously, in order, to
every subscriber, so a subscriber that writes (the journal) has committed an
event before the runner takes its next step. Subscribers match on the class
(``match event: case StepFinished(result=r): …``). Secrets are redacted by the
runner before an event is built; subscribers never see them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from engine.core.model import HostReport, Phase, RunReport, StepResult

log = logging.getLogger(__name__)


def new_run_id(now: float | None = None) -> str:
    """A sortable, unique run id: ``20261128-020301-3fa2c1``."""
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), tz=UTC)
    return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: which run, in what order, when (set by :meth:`EventBus.emit`)."""

    run_id: str = ""
    seq: int = 0
    at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A run began; carries everything the journal keeps about it."""

    runbook_id: str
    runbook_path: str
    runbook_sha256: str
    runbook_text: str
    hosts: tuple[str, ...]
    inputs: dict[str, Any]
    """Input values with secrets replaced by ``***``."""
    started_by: str
    trigger: dict[str, Any] = field(default_factory=dict)
    """What started it: ``{"kind": "cli"}``, or the alert for alert-started runs."""
    dry_run: bool = False
    last_phase: str = Phase.VERIFY.value


@dataclass(frozen=True, slots=True, kw_only=True)
class PreflightChecked(Event):
    """A host was asked, before its first step, for the programs the runbook's steps need."""

    host: str
    ok: bool
    summary: str
    """``all 3 programs found``, or what is missing and which steps it stops."""
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    """A step began on a host (after its ``when`` and approval)."""

    host: str
    phase: Phase
    step_id: str
    title: str
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutput(Event):
    """Complete lines of output from a running step."""

    host: str
    phase: Phase
    step_id: str
    stream: str
    """``stdout`` or ``stderr``."""
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(Event):
    """A step waits for a decision (the approver is being asked now)."""

    host: str
    phase: Phase
    step_id: str
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepApproval(Event):
    """A step that needed approval has its answer: a human's, ``--yes``'s or the policy's, or none
    (``asked`` false: nobody was there to ask; the step ends ``not asked``)."""

    host: str
    phase: Phase
    step_id: str
    command: str
    approved: bool
    by: str
    note: str = ""
    asked: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished(Event):
    """A step has its result."""

    result: StepResult


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFinished(Event):
    """Every phase is done on a host."""

    report: HostReport


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The run reached its end, or was interrupted."""

    report: RunReport


Subscriber = Callable[[Event], None]
E = TypeVar("E", bound=Event)


class EventBus:
    """Numbers events and hands each to every subscriber, in subscription order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._subscribers: list[Subscriber] = []
        self._seq = 0
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every later event to ``subscriber``."""
        self._subscribers.append(subscriber)

    def emit(self, event: E) -> E:
        """Stamp ``event`` with this run's id, the next number and the time, and deliver it; returns
        the stamped event."""
        with self._lock:
            self._seq += 1
            stamped = replace(event, run_id=self.run_id, seq=self._seq, at=time.time())
            for subscriber in self._subscribers:
                subscriber(stamped)
        return stamped
