"""One typed event stream for a run; the journal, CLI, TUI and server all read it.

Events are frozen dataclasses, one class per kind. The emitter builds the event
itself (``bus.emit(StepStarted(host=…, phase=…, …))``), so mypy checks every
field at every emit site; the :class:`EventBus` stamps it with the run id, a
per-run counter and a timestamp and delivers it synchronously, in order, to
every subscriber, so a subscriber that writes (the journal) has committed an
event before the runner takes its next step. Subscribers match on the class
(``match event: case StepFinished(result=r): …``).

Secrets: the bus holds the run's :class:`~engine.core.redaction.Redactor` and
:meth:`EventBus.emit` redacts every string inside every event (nested results,
reports, mappings, keys) before it stamps and delivers it. That is the one point
no event passes by, so no subscriber (the journal, a printer, ``--json``, the TUI,
serve) sees a secret, whatever the emitter built. Only :data:`NAMES` are kept as
they are: what a run's parts are called and what a resume rebuilds the run from.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from engine.core.model import HostReport, Phase, RunReport, StepResult
from engine.core.redaction import Redactor

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
    become: str = ""
    """How the command escalates on this host (``as root via sudo``); ``""``: as the login user."""


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
    become: str = ""
    """How the command would escalate on this host (``as root via sudo``); ``""``: as the login user."""


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


NAMES: Mapping[type, frozenset[str]] = {
    RunStarted: frozenset(
        {"runbook_id", "runbook_path", "runbook_sha256", "runbook_text", "hosts", "inputs", "trigger"}
    ),
    PreflightChecked: frozenset({"host"}),
    StepStarted: frozenset({"host", "step_id"}),
    StepOutput: frozenset({"host", "step_id", "stream"}),
    ApprovalRequested: frozenset({"host", "step_id"}),
    StepApproval: frozenset({"host", "step_id"}),
    StepResult: frozenset({"host", "step_id"}),
    HostReport: frozenset({"host"}),
    RunReport: frozenset({"run_id", "runbook_id"}),
}
"""The fields the bus does not redact: names from the runbook file, the inventory and the journal (hosts,
step ids, the runbook as run, where the hosts came from) that the journal keys a run by and ``cairn
resume`` rebuilds it from, and the inputs as given, in which the runner has already put ``***`` for each
secret (``resume`` asks for those again and runs with the others). None of them holds a value that
comes from a run; a short secret (``t``) redacted in them would rename steps and hosts and send a
resumed run to other paths."""

Subscriber = Callable[[Event], None]
E = TypeVar("E", bound=Event)


class EventBus:
    """Redacts, numbers and hands each event to every subscriber, in subscription order."""

    def __init__(self, run_id: str, redact: Redactor | None = None) -> None:
        self.run_id = run_id
        self.redact = redact or Redactor([])
        """The run's secrets: taken out of every event before any subscriber sees it."""
        self._subscribers: list[Subscriber] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._redacted: dict[int, tuple[Any, Any]] = {}
        """Step results and host reports already redacted, by identity: they come again in later events."""

    def protect(self, redact: Redactor) -> None:
        """Redact the secrets of ``redact`` too, from the next event on (the runner gives its own)."""
        with self._lock:
            self.redact = self.redact.joined(redact)
            self._redacted = {}

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every later event to ``subscriber``."""
        self._subscribers.append(subscriber)

    def emit(self, event: E) -> E:
        """Redact ``event``, stamp it with this run's id, the next number and the time, and deliver it;
        returns the event as the subscribers got it."""
        clean: E = self.redact.data(event, NAMES, self._redacted)
        with self._lock:
            self._seq += 1
            stamped = replace(clean, run_id=self.run_id, seq=self._seq, at=time.time())
            for subscriber in self._subscribers:
                subscriber(stamped)
        return stamped
