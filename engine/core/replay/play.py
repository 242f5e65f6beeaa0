"""Running a case: the runbook's real runner, its hosts answered from the recording.

:func:`play` builds the run a case describes — the runbook, its inputs, the hosts (with
their ``vars``), the alert of an alert-started run, the run id templates see, the last
phase — and runs it with :class:`~engine.core.replay.executor.ReplayExecutors` and
:class:`~engine.core.replay.executor.ReplayApprover`: no host is touched, nothing is
journaled, and what it concludes comes from the same code a real run uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.defaults import MAX_FORKS
from engine.core.events import EventBus
from engine.core.inputs import resolve_inputs
from engine.core.model import Host, Runbook, RunReport
from engine.core.redaction import Redactor
from engine.core.replay.case import Case
from engine.core.replay.executor import REPLAYED_BY, ReplayApprover, ReplayExecutors, Unrecorded
from engine.core.runner import Runner
from engine.core.spec import RunSpec, Trigger, TriggerKind


@dataclass(frozen=True, slots=True)
class Played:
    """What a runbook concluded from a case's recording."""

    report: RunReport
    unrecorded: tuple[Unrecorded, ...]
    """Steps it ran that the recording has no answer for (each an error on its host, never a guess)."""
    unused: tuple[tuple[str, str], ...]
    """(host, ``phase.step``) recordings no step asked for."""
    decided: frozenset[tuple[str, str]]
    """(host, ``phase.step``) of the steps the approver was asked about."""


def play(case: Case, runbook: Runbook) -> Played:
    """Run ``runbook`` against ``case``'s recording; :class:`~engine.core.errors.CairnError` (an
    :class:`~engine.core.errors.InputError`) when the case's inputs do not fit the runbook."""
    inputs = resolve_inputs(runbook, case.inputs)
    hosts = tuple(Host(name=h.name, connection="local", vars=dict(h.vars)) for h in case.hosts)
    spec = RunSpec(
        runbook=runbook,
        hosts=hosts,
        inputs=inputs,
        trigger=Trigger(kind=TriggerKind.ALERT if case.alert is not None else TriggerKind.CLI),
        alert=case.alert,
        last_phase=case.phase,
        forks=max(1, min(len(hosts), MAX_FORKS)),
        unattended=case.alert is not None,
        started_by=REPLAYED_BY,
        run_id=case.run_id,
    )
    by_name = {h.name: h for h in case.hosts}
    executors = ReplayExecutors(by_name, Redactor.for_inputs(runbook, inputs))
    approver = ReplayApprover(by_name)
    report = Runner(spec, bus=EventBus(spec.run_id), approver=approver, executors=executors).run()
    recorded = [(h.name, key) for h in case.hosts for key in h.steps]
    return Played(
        report=report,
        unrecorded=tuple(executors.unrecorded),
        unused=tuple(item for item in recorded if item not in executors.used),
        decided=frozenset((host, key) for host, key, _ in approver.asked),
    )
