"""Starting a run the same way from every front end: the CLI, the TUI, later the alert intake.

:func:`prepare_run` builds the :class:`~engine.runner.Runner` for a resolved
runbook, host list and inputs, with a fresh run id, the journal already
subscribed to its events and its artifacts folder beside the journal. The
front end adds its own subscribers (a progress printer, the TUI's message
bridge) to ``runner.bus`` and calls ``runner.run()`` — on its own thread.
"""

from __future__ import annotations

import getpass
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from engine.approval import Approver
from engine.events import EventBus, new_run_id
from engine.executors import ExecutionOptions, ExecutorSet
from engine.fanout import DEFAULT_FORKS
from engine.journal import Journal
from engine.model import Host, Phase, ResumePoint, Runbook
from engine.pacing import Pacer
from engine.runner import Runner, RunRequest


def who() -> str:
    """``user@host``: who started a run from this process."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def prepare_run(
    runbook: Runbook,
    hosts: Sequence[Host],
    inputs: Mapping[str, Any],
    *,
    journal: Journal,
    approver: Approver,
    options: ExecutionOptions | None = None,
    started_by: str | None = None,
    trigger: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    last_phase: Phase = Phase.VERIFY,
    forks: int = DEFAULT_FORKS,
    pacer: Pacer | None = None,
    cancel: threading.Event | None = None,
    resume: ResumePoint | None = None,
    run_id: str | None = None,
    unattended: bool = False,
) -> Runner:
    """A runner for one run, journaled; nothing runs until ``runner.run()``.

    ``run_id``: given when the caller must know it before the run starts (the TUI's run process).
    ``unattended``: an alert started it; every remediation step asks the approver (the policy)."""
    bus = EventBus(run_id or new_run_id())
    bus.subscribe(journal.record)
    request = RunRequest(
        runbook=runbook,
        hosts=tuple(hosts),
        inputs=inputs,
        started_by=started_by or who(),
        trigger=dict(trigger or {"kind": "cli"}),
        dry_run=dry_run,
        last_phase=last_phase,
        forks=forks,
        artifacts=journal.artifacts_root / bus.run_id,
        resume=resume,
        unattended=unattended,
    )
    executors = ExecutorSet(options=options) if options is not None else ExecutorSet()
    return Runner(request, bus=bus, approver=approver, executors=executors, cancel=cancel, pacer=pacer)
