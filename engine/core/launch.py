"""Starting a run the same way from every front end: the CLI, the TUI's run process, ``cairn serve``.

:func:`prepare_run` builds the :class:`~engine.core.runner.Runner` for a
:class:`~engine.core.spec.RunSpec`, with the journal already subscribed to its
events and its artifacts folder beside the journal. The front end adds its own
subscribers (a progress printer, the TUI's message bridge, serve's metrics) to
``runner.bus`` and calls ``runner.run()`` — on its own thread.
"""

from __future__ import annotations

import threading

from engine.core.approval import Approver
from engine.core.events import EventBus
from engine.core.journal import Journal
from engine.core.pacing import Pacer
from engine.core.runner import Runner
from engine.core.spec import RunSpec


def prepare_run(
    spec: RunSpec,
    *,
    journal: Journal,
    approver: Approver,
    pacer: Pacer | None = None,
    cancel: threading.Event | None = None,
) -> Runner:
    """A runner for ``spec``, journaled; nothing runs until ``runner.run()``.

    ``approver`` answers remediation approvals (a terminal, ``--yes``, the TUI, serve's policy);
    ``pacer`` is asked before every step (stepping); ``cancel`` stops the run when set."""
    bus = EventBus(spec.run_id)
    bus.subscribe(journal.record)
    return Runner(
        spec,
        bus=bus,
        approver=approver,
        cancel=cancel,
        pacer=pacer,
        artifacts=journal.artifacts_root / spec.run_id,
    )
