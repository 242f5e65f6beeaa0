"""The run spec: everything one run is, built once by a front end and carried unchanged to the runner.

Every front end builds a :class:`RunSpec` — ``cairn run`` and ``cairn resume`` from
their arguments, the TUI from its setup screen (and sends it, pickled, to the run's
own process), ``cairn serve`` from a queued alert — and hands it to
:func:`engine.core.launch.prepare_run`. Nothing copies its fields into another
type on the way, so a setting cannot be lost between a front end and the runner;
each default is stated once, here or (for what ``--help`` shows) in
:mod:`engine.core.defaults`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from engine.core.defaults import DEFAULT_FORKS, MAX_FORKS
from engine.core.events import new_run_id
from engine.core.executors import ExecutionOptions
from engine.core.identity import Via, local_identity
from engine.core.model import Host, Phase, ResumePoint, Runbook


def who() -> str:
    """``account@host``: who started a run from this process, the account from its uid (never ``$USER``)."""
    return f"{local_identity(Via.CLI).name}@{socket.gethostname()}"


class TriggerKind(Enum):
    """What started a run."""

    CLI = "cli"
    TUI = "tui"
    ALERT = "alert"
    RESUME = "resume"
    """``cairn resume`` (or the TUI's resume) going on with an interrupted run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """What started a run and where its hosts came from, journaled so the run can be resumed."""

    kind: TriggerKind = TriggerKind.CLI
    limit: str | None = None
    """The ``--limit`` pattern the hosts were chosen with (the inventory is the options')."""
    resumes: str | None = None
    """The interrupted run this one goes on with."""
    queue_entry: int | None = None
    """The alert-queue entry an alert-started run works on."""
    approved_by: str | None = None
    """Who approved an alert-started run's remediation (``cairn approve``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One run, resolved and validated before it starts; frozen, so every part of Cairn sees the same."""

    runbook: Runbook
    hosts: tuple[Host, ...]
    inputs: Mapping[str, Any]
    """Typed input values, secrets included: the run's event bus takes them out of every event."""
    trigger: Trigger = field(default_factory=Trigger)
    alert: Mapping[str, Any] | None = None
    """The alert that started the run (``status``, ``labels``, ``annotations``, ``fingerprint``,
    ``startsAt``, ``endsAt``, ``generatorURL``): the ``alert`` every template sees; ``None`` otherwise."""
    options: ExecutionOptions = field(default_factory=ExecutionOptions)
    """How hosts are reached; its ``inventory_sources`` are where the hosts came from."""
    last_phase: Phase = Phase.VERIFY
    """Stop after this phase; remediate always continues into verify."""
    forks: int = DEFAULT_FORKS
    """Hosts worked on at once."""
    dry_run: bool = False
    resume: ResumePoint | None = None
    """An interrupted run this one resumes: its finished steps are reused, not run again (and, in an
    unattended run, its remediation steps in doubt are not started again)."""
    unattended: bool = False
    """No human started this run (an alert did): every remediation step goes to the approver,
    even one that says ``confirm: false``, so the policy and the guardrails see each of them."""
    started_by: str = field(default_factory=who)
    run_id: str = field(default_factory=lambda: new_run_id())  # noqa: PLW0108 - looked up per call: tests fix it
    """Known before the run starts, so a front end can follow it (the TUI's run process)."""

    def __post_init__(self) -> None:
        if not 1 <= self.forks <= MAX_FORKS:
            raise ValueError(f"forks must be from 1 to {MAX_FORKS}, not {self.forks}")
        if (self.alert is not None) != (self.trigger.kind is TriggerKind.ALERT):
            raise ValueError("an alert-started run carries its alert, and only such a run does")

    def journal_trigger(self) -> dict[str, Any]:
        """The ``trigger`` the journal keeps (JSON): what started the run, its inventory and limit,
        and for alert-started runs the alert."""
        out: dict[str, Any] = {
            "kind": self.trigger.kind.value,
            "inventory": list(self.options.inventory_sources),
            "limit": self.trigger.limit,
        }
        for key in ("resumes", "queue_entry", "approved_by"):
            value = getattr(self.trigger, key)
            if value is not None:
                out[key] = value
        if self.alert is not None:
            out["alert"] = dict(self.alert)
        return out
