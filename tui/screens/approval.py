"""The approval modal: the exact command (or the manual instructions), as whom it runs (``become``), why,
the trade-off and the hosts."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from engine.core.approval import ApprovalChoice, ApprovalRequest
from engine.core.knowledge import step_notes
from engine.core.render import reflow
from engine.core.visible import command_lines, visible_lines
from tui.widgets.notes import note_id, note_text

HOSTS_LISTED = 10
"""Hosts named in the modal; the rest are counted."""


def hosts_text(hosts: list[str]) -> str:
    """``a, b, c`` or ``a, b, … (+48 more)``."""
    if len(hosts) <= HOSTS_LISTED:
        return ", ".join(hosts)
    return ", ".join(hosts[:HOSTS_LISTED]) + f", … (+{len(hosts) - HOSTS_LISTED} more)"


class ApprovalScreen(ModalScreen[ApprovalChoice]):
    """Asks to approve one step on one host; ``e`` approves the step on every host of the run."""

    CSS_PATH = Path(__file__).parent / "approval.tcss"  # absolute: subclasses elsewhere find it too
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "approve", "Approve"),
        Binding("d", "done", "Done"),
        Binding("e", "every_host", "Approve on every host"),
        Binding("s", "skip", "Skip"),
        Binding("n", "decline", "Decline"),
        Binding("escape", "decline", "Decline", show=False),
        Binding("up", "scroll('up')", show=False),
        Binding("down", "scroll('down')", show=False),
        Binding("pageup", "scroll('page_up')", show=False),
        Binding("pagedown", "scroll('page_down')", show=False),
    ]

    def __init__(self, request: ApprovalRequest, hosts: list[str]) -> None:
        super().__init__()
        self.request = request
        self.hosts = hosts
        """Every host of the run (``e`` approves on all of them)."""

    def compose(self) -> ComposeResult:
        request, step = self.request, self.request.step
        manual = request.manual
        with Vertical(id="approval-dialog"):
            verb = "Confirm the manual step" if manual else "Approve"
            yield Label(
                Text.assemble(
                    (f"{verb} ", "bold"),
                    (f"{request.phase.value} · {step.title}", "bold"),
                    (f"  ({step.id})", "dim"),
                ),
                id="approval-title",
            )
            yield Label(Text.assemble(("On host: ", "bold"), request.host), id="approval-host")
            if len(self.hosts) > 1 and not manual:
                yield Label(
                    Text.assemble(
                        (f"Run's hosts ({len(self.hosts)}): ", "dim"), (hosts_text(self.hosts), "dim")
                    ),
                    id="approval-hosts",
                )
            # What may not fit scrolls (its own arrows and page keys); the buttons under it always show.
            with VerticalScroll(id="approval-body"):
                # Prose as paragraphs (the author's line breaks out): the dialog wraps it at its own width.
                for note in step_notes(step):
                    yield Static(note_text(note), id=f"approval-{note_id(note)}")
                become = f" ({request.become})" if request.become else ""  # as root via sudo, on this host
                yield Label(
                    "Do this by hand:" if manual else f"Exact command{become}:",
                    classes="approval-label",
                    markup=False,
                )
                text = request.text.strip()
                shown = reflow("\n".join(visible_lines(text))) if manual else command_lines(text, "$ ", "> ")
                yield Static(Text(shown, style="cyan"), id="approval-command")
            with Horizontal(id="approval-buttons"):
                if manual:
                    yield Button("Done (d)", variant="success", id="approve")
                    yield Button("Skip (s)", id="skip")
                else:
                    yield Button("Approve (y)", variant="warning", id="approve")
                    if len(self.hosts) > 1:
                        yield Button("Every host (e)", id="every-host")
                yield Button("Decline (n)", variant="error", id="decline")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        """Focus Decline: Enter must never approve by accident."""
        self.query_one("#decline", Button).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that mean nothing for this request are hidden (``y`` for a manual step, ``d`` for a command)."""
        manual = self.request.manual
        match action:
            case "approve":
                return not manual
            case "done" | "skip":
                return manual
            case "every_host":
                return not manual and len(self.hosts) > 1
        return True

    def action_scroll(self, move: str) -> None:
        """Scroll what the dialog shows while a button keeps the focus."""
        body = self.query_one("#approval-body", VerticalScroll)
        {
            "up": body.scroll_up,
            "down": body.scroll_down,
            "page_up": body.scroll_page_up,
            "page_down": body.scroll_page_down,
        }[move](animate=False)

    def action_approve(self) -> None:
        """Run it on this host."""
        self.dismiss(ApprovalChoice.APPROVE)

    def action_done(self) -> None:
        """The manual step was done."""
        self.dismiss(ApprovalChoice.APPROVE)

    def action_every_host(self) -> None:
        """Run this step on every host of the run without asking again."""
        self.dismiss(ApprovalChoice.APPROVE_EVERY_HOST)

    def action_skip(self) -> None:
        """Not done now: skipped."""
        self.dismiss(ApprovalChoice.SKIP)

    def action_decline(self) -> None:
        """Do not run it: declined."""
        self.dismiss(ApprovalChoice.DECLINE)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """The buttons answer like their keys."""
        if event.button.id:
            self.dismiss(ApprovalChoice(event.button.id))
