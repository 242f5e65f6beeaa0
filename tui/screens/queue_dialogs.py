"""The alert queue's dialogs: confirm an approval (saying who you are, what the approval needs and
how far it is), or decline with a reason (the queue screen asks)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from engine.core.approval_policy import Action, Outcome, Requirement, judge
from engine.core.records import alert_summary

if TYPE_CHECKING:
    from engine.core.alert_queue import Entry
    from engine.core.identity import Identity
    from engine.core.queue_decisions import Decisions

STYLESHEET = Path(__file__).parent / "queue_dialogs.tcss"
"""The dialogs' rules (absolute: subclasses elsewhere find it too)."""


class ApproveScreen(ModalScreen[bool]):
    """Confirm the approval of one escalated entry's remediation (it will really change the host)."""

    CSS_PATH = STYLESHEET
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Approve"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, entry: Entry, me: Identity, decisions: Decisions | None = None) -> None:
        super().__init__()
        self.entry, self.me, self.decisions = entry, me, decisions

    def compose(self) -> ComposeResult:
        entry = self.entry
        with Vertical(classes="queue-dialog"):
            title = Text("Remediate ", style="bold")
            title.append(entry.runbook_id, style="yellow").append(" on ").append(entry.target, style="yellow")
            yield Label(title.append("?"))
            yield Static(self.standing(), id="approve-standing")
            yield Static(
                "Its next run checks again first, once the approvals it needs are in, and remediates only "
                f"if the pitfall is still there: remediation steps will really run on {entry.target}.",
                classes="queue-dialog-text",
            )
            yield Static(
                Text(f"alert: {alert_summary(entry.alert)}\nwhy it waits: {entry.note}", style="dim")
            )
            with Horizontal(classes="queue-dialog-buttons"):
                yield Button("Approve (y)", variant="warning", id="approve")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer(compact=True)

    def standing(self) -> Text:
        """``you are alice (uid 999); needs 2 approvers from group sre; 1 of 2 so far (bob)``, then,
        when the policy is sure to refuse it (not an approver, already approved, one's own request,
        expired), why: the approval is still journaled if made."""
        requirement = (self.entry.requirement if self.decisions is None else self.decisions.requirement) or (
            Requirement.of(None)
        )
        attempts = self.decisions.attempts if self.decisions is not None else ()
        me = requirement.person_of(self.me)
        progress = requirement.progress(attempts)
        uid = f" (uid {me.uid})" if me.uid is not None else ""
        names = f" ({', '.join(progress.approved)})" if progress.approved else ""
        text = Text(f"you are {me.short}{uid}; ", style="bold")
        text.append(f"{requirement.describe()}; {len(progress.approved)} of {progress.quorum} so far{names}")
        foreseen = judge(requirement, me, Action.APPROVE, attempts, time.time())
        if foreseen.outcome is Outcome.REFUSED:
            text.append(f"\nthe approval policy will refuse it: {foreseen.message}", style="bold red")
        return text

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # Enter must never approve by accident

    def action_answer(self, approve: bool) -> None:
        self.dismiss(approve)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "approve")


class DeclineScreen(ModalScreen[str | None]):
    """Decline one escalated entry's remediation, with an optional reason; ``None``: not declined."""

    CSS_PATH = STYLESHEET
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        entry = self.entry
        with Vertical(classes="queue-dialog"):
            title = Text("Decline the remediation of ", style="bold")
            title.append(entry.runbook_id, style="magenta").append(" on ").append(
                entry.target, style="magenta"
            )
            yield Label(title.append("?"))
            yield Static(
                "The entry ends and nothing is changed on the host; the reason goes in its note.",
                classes="queue-dialog-text",
            )
            yield Input(placeholder="reason (optional), Enter declines", id="decline-reason")
            with Horizontal(classes="queue-dialog-buttons"):
                yield Button("Decline (enter)", variant="error", id="decline")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer(compact=True)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.dismiss(self.query_one("#decline-reason", Input).value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "decline":
            self._submitted()
        else:
            self.dismiss(None)
