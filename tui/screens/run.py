"""Stepping through a run: steps by phase with a live state per host, output, approvals, verdict."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, Header

from engine.core.approval import ApprovalChoice, ApprovalRequest, AskingApprover
from engine.core.events import StepOutput, StepStarted
from engine.core.runner import phases_until
from engine.core.spec import RunSpec
from engine.core.stepping import StepKey, StepPacer
from tui.bridge import (
    ApprovalNeeded,
    Doorbell,
    EventForwarder,
    PacingChanged,
    PlannedCommands,
    RunEventsReady,
    planned_become,
    planned_commands,
)
from tui.config import CairnConfig
from tui.models.progress import RunProgress
from tui.screens.approval import ApprovalScreen
from tui.screens.fitted_footer import FittedFooterScreen
from tui.widgets.knowledge import KnowledgePane
from tui.widgets.step_detail import StepDetail
from tui.widgets.step_list import StepList
from tui.widgets.step_output import StepOutputLog, output_lines
from tui.widgets.step_status_line import RunStatusLine, run_status
from tui.widgets.step_verdict import RunVerdict

if TYPE_CHECKING:
    from engine.core.journal import RunRecord

REDRAW_INTERVAL = 0.1
"""Seconds between two redraws from run events: a 50-host fan-out is drawn in batches, keys stay quick."""
BESIDE_FROM = 110
"""Columns from which the knowledge pane sits beside both the steps and the step's detail; below, the
steps keep their width and the knowledge takes the detail's place while it is shown (``k`` switches)."""


def resume_spec(record: RunRecord, config: CairnConfig, given: Mapping[str, Any] | None = None) -> RunSpec:
    """The run that goes on with an interrupted one, as ``cairn resume`` does (its finished steps reused).

    ``given``: input values, the secret ones at least (they are never journaled). Raises the
    engine's :class:`~engine.core.errors.CairnError` naming why the run cannot be resumed. Reads the
    inventory: call it in a worker thread."""
    from engine.core.resume import resume_plan  # noqa: PLC0415

    return resume_plan(record, dict(given or {}), options=config.options).spec


class RunScreen(FittedFooterScreen[None]):
    """Runs a :class:`~engine.core.spec.RunSpec` in its own process (:mod:`engine.core.run_process`), one step at a time unless told to go on."""

    CSS_PATH = Path(__file__).parent / "run.tcss"  # absolute: subclasses elsewhere find it too
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "next", "Next", tooltip="Run the next step on every host"),
        Binding("p", "phase", "Phase", tooltip="Run the rest of this phase"),
        Binding("c", "continue", "Continue", tooltip="Run every step; remediation still asks"),
        Binding("s", "skip", "Skip", tooltip="Skip the next step"),
        Binding("r", "rerun", "Re-run", tooltip="Run the phase's previous step again"),
        Binding("x", "cancel", "Cancel", tooltip="Cancel the run: kill what runs"),
        Binding("k", "knowledge", "Knowledge", tooltip="Show or hide the runbook's knowledge"),
        Binding("escape,q", "back", "Back"),
    ]

    def __init__(self, spec: RunSpec, config: CairnConfig, *, practice: str | None = None) -> None:
        """``practice``: the lab's name in practice mode (the runbook's knowledge is shown beside the steps)."""
        super().__init__()
        self.spec = spec
        self.practice = practice
        self.config = config
        self.by = f"tui:{config.user}"
        self.cancel = threading.Event()
        self.progress = RunProgress(spec.runbook, [h.name for h in spec.hosts], phases_until(spec.last_phase))
        self.forwarder = EventForwarder(lambda: self.post_message(RunEventsReady()))
        self.pacing_bell = Doorbell(lambda: self.post_message(PacingChanged()))
        self.pacer = StepPacer(spec.runbook, by=self.by, notify=self.pacing_bell.ring)
        self.approver = AskingApprover(self.by, self._ask)
        self.crashed = ""
        self._followed: StepKey | None = None
        self._keys_state: tuple[bool, ...] = ()
        self._knowledge_loaded = False
        self.knowledge_shown = practice is not None
        """The knowledge pane is wanted (practice mode starts with it; ``k`` switches)."""
        self._waiting_approval: ApprovalNeeded | None = None
        """A question the run asked while this screen was not in front: asked when it comes back."""
        self._last_drain = 0.0
        self._drain_timer: Timer | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunStatusLine(id="run-status")
        with Horizontal(id="run-body"):
            yield StepList(self.progress, id="steps", on_highlight=self._show_selected)
            with Vertical(id="step-pane"):
                with VerticalScroll(id="step-detail-scroll"):
                    yield StepDetail(self.progress, id="step-detail")
                yield StepOutputLog(id="output")
            yield KnowledgePane(id="knowledge")
        yield RunVerdict(id="verdict")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        """Show the first step, the knowledge in practice mode, and start the run."""
        runbook = self.spec.runbook
        self.title = f"Run: {runbook.title}"
        self.sub_title = f"practice on lab {self.practice}" if self.practice else runbook.id
        self.query_one("#knowledge").border_title = "Knowledge"
        self._arrange_panes()
        self.query_one(StepList).focus()
        self._show_selected()
        self._update_status()
        self.set_interval(1.0, self._tick)
        self._run()
        # While the run streams, a full collection walked every object of the app (the library, every
        # screen): pauses of 60-110 ms that a key had to wait out. Frozen objects are skipped until the
        # screen goes; cyclic garbage among them is collected then.
        self.call_after_refresh(gc.freeze)
        self._tell_app("run_changed")

    def _tell_app(self, what: str) -> None:
        """Tell the Cairn app (not a test's or the benchmark's app) that this run started, ended or waits."""
        told = getattr(self.app, what, None)
        if callable(told):
            told(self)

    @property
    def ended(self) -> bool:
        """The run is over: finished, interrupted, or its process died."""
        return self.progress.finished or bool(self.crashed)

    @property
    def waits_for_approval(self) -> bool:
        """The run asked for an approval while another screen was in front: the question waits for this one."""
        return self._waiting_approval is not None

    def _load_knowledge(self) -> None:
        """Render the knowledge once; hiding and showing it again keeps it.

        As in the library: rendered once per width into one Static (Textual's Markdown widget mounted
        a widget per block, and every ``k`` laid out and drew them all again)."""
        self._knowledge_loaded = True
        self.query_one(KnowledgePane).show_runbook(self.spec.runbook)

    def on_resize(self) -> None:
        """Beside or instead of the step's detail, depending on the width."""
        self._arrange_panes()

    def on_screen_resume(self) -> None:
        """Back in front (the terminal may have been resized meanwhile); ask what the run asked meanwhile."""
        self._arrange_panes()
        waiting, self._waiting_approval = self._waiting_approval, None
        if waiting is not None:
            self.on_approval_needed(waiting)

    def _arrange_panes(self) -> None:
        """Show the knowledge if wanted: beside the step's detail when both fit, else in its place.

        The step list keeps its width either way (titles and states stay readable); only the two panes'
        ``display`` change, never a class on the screen (restyling every widget costs ~100 ms)."""
        beside = self.app.size.width >= BESIDE_FROM
        knowledge = self.query_one("#knowledge")
        if self.knowledge_shown and not self._knowledge_loaded:
            self._load_knowledge()
        knowledge.display = self.knowledge_shown
        knowledge.border_subtitle = "k hides it" if beside else "k: the step's detail and output"
        self.query_one("#step-pane").display = beside or not self.knowledge_shown

    # ------------------------------------------------------------ the run, in a thread

    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def _run(self) -> None:
        """The run, in its own process (see :mod:`engine.core.run_process`); this thread answers its questions."""
        from engine.core.run_process import RunHandlers, RunOrder, run_in_child  # noqa: PLC0415

        spec = self.spec
        planned = planned_commands(spec.runbook, list(spec.hosts), spec.inputs, spec.last_phase)
        self.post_message(PlannedCommands(planned, planned_become(spec.runbook, list(spec.hosts))))
        order = RunOrder(spec, self.config.journal_location)
        run_in_child(
            order,
            RunHandlers(
                pace=self.pacer.before,
                approve=self.approver.decide,
                cancel=self.cancel,
                on_events=self.forwarder.extend,
                on_crash=self._crashed,
            ),
        )

    def _crashed(self, text: str) -> None:
        """The run could not start or its process died (any thread): say so where the verdict goes."""
        self.crashed = text
        self.pacer.cancel()  # nothing will take a released step any more: let questions still waiting go
        self.approver.close("the run's process ended")
        self.post_message(RunEventsReady())

    def _ask(self, request: ApprovalRequest, answer: Any) -> None:
        """On the thread answering the run's question: have the UI ask the human (declined if the screen is gone)."""
        if not self.post_message(ApprovalNeeded(request, answer)):
            answer(ApprovalChoice.DECLINE)

    # ------------------------------------------------------------ messages from the run

    def on_run_events_ready(self, _: RunEventsReady) -> None:
        """New events: take them in now, or at the next redraw slot if the last was very recent."""
        self._schedule_drain()

    def on_pacing_changed(self, _: PacingChanged) -> None:
        """Hosts began or stopped waiting before a step: as for events."""
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        wait = self._last_drain + REDRAW_INTERVAL - time.monotonic()
        if wait <= 0:
            self._drain_events()
        elif self._drain_timer is None:
            self._drain_timer = self.set_timer(wait, self._drain_events)

    def _drain_events(self) -> None:
        """Take in every event that arrived; redraw what changed, once per batch."""
        self._drain_timer = None
        self._last_drain = time.monotonic()
        self.pacing_bell.answer()
        events = self.forwarder.drain()
        changed: set[StepKey] = set()
        selected = self.query_one(StepList).selected_step
        output: list[str] = []
        many = len(self.spec.hosts) > 1
        started: StepKey | None = None
        for event in events:
            key = self.progress.apply(event)
            if key is not None:
                changed.add(key)
            if isinstance(event, StepStarted):
                started = (event.phase, event.step_id)
                if started == selected:
                    if event.become:
                        output += output_lines(event.host, "note", f"({event.become})", many_hosts=many)
                    output += output_lines(event.host, "note", f"$ {event.command}", many_hosts=many)
            elif isinstance(event, StepOutput) and (event.phase, event.step_id) == selected:
                output += output_lines(event.host, event.stream, event.text, many_hosts=many)
        self.query_one(StepOutputLog).append(output)  # one write per batch, not one per line
        changed |= self.progress.set_waiting(self.pacer.waiting())
        self._redraw(changed)
        follow = self.pacer.next_step() or started
        if follow is not None:
            self._follow(follow)
        if self.ended:
            if not self.query_one(RunVerdict).display:
                self._tell_app("run_changed")  # once: the library says it ended
                self.query_one(StepList).fit_states()  # states no longer change: titles get the room back
            self._show_verdict()
        self._update_status()

    def on_planned_commands(self, message: PlannedCommands) -> None:
        """Show each step's exact command before it runs (the plan's rendering)."""
        for (key, host), command in message.commands.items():
            cell = self.progress.steps.get(key, {}).get(host)
            if cell is not None and not cell.command:
                cell.command = command
        for (key, host), become in message.become.items():
            cell = self.progress.steps.get(key, {}).get(host)
            if cell is not None and not cell.runs:  # the run's own events say it once the step starts
                cell.become = become
        self._show_selected()

    def on_approval_needed(self, message: ApprovalNeeded) -> None:
        """Open the approval modal for the step; its answer goes back to the waiting runner.

        While another screen is in front (the history, the library: the run goes on behind them), the
        question waits for this screen to come back rather than pop up over something else, where a
        key meant for that screen could answer it."""
        if self.cancel.is_set():
            message.answer(ApprovalChoice.DECLINE)
            return
        if not self.is_current:
            self._waiting_approval = message
            self.app.notify(
                f"the run of {self.spec.runbook.id} waits for your approval: "
                f"{message.request.phase.value} · {message.request.step.title} (F7 goes back to it)",
                severity="warning",
                timeout=15,
                markup=False,
            )
            self._tell_app("run_changed")
            return
        # The events that led to the question arrived before it: take them in first, or a drain due
        # later would move the selection back to the step they started, away from the one asking.
        if self._drain_timer is not None:
            self._drain_timer.stop()
        self._drain_events()
        self._follow((message.request.phase, message.request.step.id))
        modal = ApprovalScreen(message.request, [h.name for h in self.spec.hosts])

        def answered(choice: ApprovalChoice | None) -> None:
            message.answer(choice or ApprovalChoice.DECLINE)

        self.app.push_screen(modal, answered)

    # ------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stepping keys while the run waits for them, cancel while it runs, back once it ended."""
        running = not self.ended
        match action:
            case "next" | "skip" | "rerun" | "phase":
                if not running or self.pacer.free_running:
                    return False
                return True if self.pacer.next_step() is not None else None
            case "continue":
                return running and not self.pacer.free_running
            case "cancel":
                return running and not self.cancel.is_set()
            case "back":
                return not running
        return True

    def action_next(self) -> None:
        """Run the step the hosts wait before, on every host."""
        self._released(self.pacer.release_next())

    def action_phase(self) -> None:
        """Run the rest of the phase without stopping."""
        self._released(self.pacer.release_phase())

    def action_skip(self) -> None:
        """Skip the step the hosts wait before (journaled as skipped by you)."""
        self._released(self.pacer.skip_next())

    def action_rerun(self) -> None:
        """Run the phase's previous step again on the waiting hosts."""
        again = self.pacer.rerun_previous()
        if not again:
            self.notify("Nothing to re-run: no step of this phase has run yet.", severity="warning")
            return
        self.refresh_bindings()

    def action_continue(self) -> None:
        """Stop stepping: run everything (remediation still asks for approval)."""
        self.pacer.release_all()
        self._update_status()
        self.refresh_bindings()

    def action_cancel(self) -> None:
        """Cancel the run: running commands are killed where they run, the rest is skipped."""
        self._stop("the run was cancelled")
        self.notify("Cancelling: running commands are being killed.", severity="warning")
        self._update_status()
        self.refresh_bindings()

    def action_knowledge(self) -> None:
        """Show or hide the runbook's knowledge beside the steps (in the detail's place on a narrow screen)."""
        self.knowledge_shown = not self.knowledge_shown
        self._arrange_panes()

    def action_back(self) -> None:
        """Leave the finished run."""
        self.app.pop_screen()

    def _released(self, key: StepKey | None) -> None:
        if key is None:
            self.notify("No step is waiting yet.", severity="warning")
            return
        self.refresh_bindings()

    def _stop(self, note: str) -> None:
        self.cancel.set()
        self.pacer.cancel()
        self.approver.close(f"{note} by {self.by}")

    def on_unmount(self) -> None:
        """Leaving the screen (or the app) while the run goes on cancels it: no worker waits forever."""
        gc.unfreeze()  # frozen in on_mount
        if not self.progress.finished:
            self._stop("the run screen was closed")
        self._tell_app("run_closed")

    # ------------------------------------------------------------ drawing

    def _show_selected(self) -> None:
        key = self.query_one(StepList).selected_step
        self.query_one(StepDetail).show(key)
        self.query_one(StepOutputLog).replay(self.progress.steps.get(key, {}) if key is not None else {})
        # Lay the screen out in the next frame: otherwise the detail's own layout request arrives after
        # the list's repaint, and a new selection shows in two frames ~40 ms apart.
        self.refresh(layout=True)

    def _redraw(self, keys: set[StepKey]) -> None:
        steps = self.query_one(StepList)
        for key in keys:
            steps.refresh_step(key)
        detail = self.query_one(StepDetail)
        if detail.key in keys:
            detail.show(detail.key)

    def _follow(self, key: StepKey) -> None:
        """Move the highlight to ``key`` unless the human moved it away from where it was following."""
        steps = self.query_one(StepList)
        if steps.selected_step in (self._followed, None) or self._followed is None:
            if steps.selected_step != key:
                steps.select_step(key)
            self._followed = key

    def _tick(self) -> None:
        """Once a second: the elapsed time of running steps."""
        running = set(self.progress.running())
        if running:
            self._redraw(running)
            self._update_status()

    def _update_status(self) -> None:
        self.query_one(RunStatusLine).show(
            run_status(
                self.progress,
                self.pacer,
                crashed=self.crashed,
                cancelling=self.cancel.is_set(),
                dry_run=self.spec.dry_run,
            )
        )
        keys = (
            self.progress.finished,
            bool(self.crashed),
            self.pacer.free_running,
            self.cancel.is_set(),
            self.pacer.next_step() is not None,
        )
        if keys != self._keys_state:  # the footer is costly to redraw: only when a key's state changed
            self._keys_state = keys
            self.refresh_bindings()

    def _show_verdict(self) -> None:
        self.query_one(RunVerdict).show(self.progress.report, self.crashed)
