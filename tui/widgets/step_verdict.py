"""What a run concluded, plainly: each host's outcome and reason, and what the exit code means."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widgets import Static

from engine.core.model import HostOutcome, RunReport

OUTCOME_STYLE = {
    HostOutcome.HEALTHY: "bold green",
    HostOutcome.REMEDIATED: "bold green",
    HostOutcome.PRESENT: "bold red",
    HostOutcome.FAILED: "bold red",
}
EXIT_MEANING = {
    0: "every host is healthy or was remediated (verify is clean)",
    1: "the pitfall is still present on a host",
    2: "the run failed on a host: a step errored or timed out",
    130: "interrupted: resume it from the history (or `cairn resume RUN`)",
}
HOSTS_LISTED = 20
"""Hosts listed one by one; past that, the outcomes are counted."""


def verdict_renderable(report: RunReport | None, crashed: str = "") -> RenderableType:
    """The verdict of ``report`` (``None``: the run stopped on a fault in Cairn, ``crashed``)."""
    if report is None:
        return Text(f"The run stopped on a fault in Cairn: {crashed}", style="bold red")
    lines: list[RenderableType] = []
    code = report.exit_code
    head = Text("Verdict: ", style="bold")
    head.append(f"exit {code}", style="bold red" if code else "bold green")
    head.append(f" — {EXIT_MEANING.get(code, '')}")
    lines.append(head)
    if not report.hosts:
        lines.append(Text("no host was run", style="dim"))
    for host in report.hosts[:HOSTS_LISTED]:
        line = Text(f"  {host.host}  ")
        line.append(host.outcome.value.upper(), style=OUTCOME_STYLE[host.outcome])
        if host.reason:
            line.append(f"  {host.reason}")
        lines.append(line)
    if len(report.hosts) > HOSTS_LISTED:
        counts: dict[str, int] = {}
        for host in report.hosts:
            counts[host.outcome.value] = counts.get(host.outcome.value, 0) + 1
        total = ", ".join(f"{n} {o}" for o, n in counts.items())
        lines.append(Text(f"  {len(report.hosts)} hosts: {total}"))
    lines.append(Text(f"Details: cairn show-run {report.run_id} — press escape to go back", style="dim"))
    return Group(*lines)


class RunVerdict(Static):
    """Hidden until the run ends; then its verdict."""

    def on_mount(self) -> None:
        """Nothing to say before the end."""
        self.display = False

    def show(self, report: RunReport | None, crashed: str = "") -> None:
        """Show the verdict of the finished (or crashed) run."""
        self.display = True
        self.update(verdict_renderable(report, crashed))
