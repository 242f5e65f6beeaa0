"""One line over the steps: what the run is doing now and what the next key would do."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.core.stepping import StepPacer
from tui.models.progress import RunProgress, StepState, find_step


def run_status(
    progress: RunProgress,
    pacer: StepPacer,
    *,
    crashed: str = "",
    cancelling: bool = False,
    dry_run: bool = False,
) -> Text:
    """Most important first; the run id last (the verdict names it too)."""
    text = _doing(progress, pacer, crashed, cancelling)
    if dry_run:
        text = Text("dry run · ", style="bold") + text
    if progress.run_id:
        text.append(f" · run {progress.run_id}", style="dim")
    return text


def _doing(progress: RunProgress, pacer: StepPacer, crashed: str, cancelling: bool) -> Text:
    if crashed:
        return Text(f"The run could not go on: {crashed}", style="bold red")
    if progress.report is not None:
        how = "interrupted" if progress.report.interrupted else "finished"
        return Text(f"{how} — see the verdict below", style="bold")
    if cancelling:
        return Text("cancelling: killing the running commands…", style="bold yellow")
    if any(c.state is StepState.APPROVAL for cells in progress.steps.values() for c in cells.values()):
        return Text("waiting for your approval", style="bold magenta")
    waiting = pacer.next_step()
    if waiting is not None:
        hosts = sum(1 for r in pacer.waiting() if (r.phase, r.step.id) == waiting)
        noun = "host" if hosts == 1 else "hosts"
        text = Text("waiting before ", style="bold")
        text.append(f"{waiting[0].value} · {find_step(progress, waiting).title}", style="bold yellow")
        text.append(f" ({hosts} {noun}) — n runs it, s skips it")
        return text
    running = progress.running()
    if running:
        phase, step_id = running[0]
        return Text(f"running {phase.value} · {step_id}", style="bold cyan")
    return Text("running every step…" if pacer.free_running else "stepping…")


class RunStatusLine(Static):
    """The run's status line: one row (``height: 1``, no wrap), redrawn only when its text changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: Text | None = None

    def show(self, status: Text) -> None:
        """Show ``status`` unless it is what is shown already."""
        if self._shown is None or status.plain != self._shown.plain or status.spans != self._shown.spans:
            self._shown = status
            self.update(status, layout=False)  # one fixed row: a new text never changes the layout
