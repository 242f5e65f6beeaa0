"""Who may remediate in an alert-started run: the operator's policy, the guardrails, or a human.

An alert never remediates on the runbook's word alone. A remediation step runs
without a human only when **both** say so:

* the runbook marks the step ``automatic: true`` (bounded, safe to repeat), and
* the operator's :class:`Policy` automates the runbook (``cairn serve --automate ID``).

Even then the guardrails shared by every runbook hold it back (they live in the
store's remediation ledger, :mod:`engine.core.ledger`, through
:meth:`~engine.core.alert_queue.AlertQueue.begin_remediation`): at most
``breaker`` automatic remediations per host per hour, at most ``budget`` hosts
being remediated at once across the fleet — across every ``cairn serve`` on the
store, each ledger row recording the server that took it. Whatever is held back
**escalates**: the queue entry waits for the people the approval policy names
(:mod:`engine.core.approval_policy`: ``cairn approve RUN_ID``, the TUI's Alerts screen, a Slack
button), and the approved run checks the host again before it changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.defaults import DEFAULT_BREAKER, DEFAULT_BUDGET
from engine.core.model import Phase, Runbook

if TYPE_CHECKING:
    from engine.core.alert_queue import AlertQueue
    from engine.core.ledger import Guard


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator's side of automation, shared by every runbook ``cairn serve`` runs."""

    automate: tuple[str, ...] = ()
    """Runbook ids (or shell-style patterns such as ``node-*``) whose automatic steps may run
    without a human. Empty: nothing remediates without a human."""
    breaker: int = DEFAULT_BREAKER
    budget: int = DEFAULT_BUDGET

    def automates(self, runbook: Runbook) -> bool:
        """True when the policy lets ``runbook``'s automatic steps run without a human."""
        return any(fnmatchcase(runbook.id, pattern) for pattern in self.automate)

    def why_not(self, runbook: Runbook) -> str:
        """Why ``runbook``'s remediation needs a human under this policy ("" when it does not)."""
        if not runbook.remediate:
            return ""
        if not runbook.automatic:
            return f"runbook {runbook.id!r} marks no remediation step automatic"
        if not self.automates(runbook):
            return f"the policy does not automate {runbook.id!r} (cairn serve --automate {runbook.id})"
        return ""

    def describe(self) -> str:
        """One line for the server's start-up message."""
        if not self.automate:
            return "remediation waits for a human (no --automate)"
        return (
            f"automates {', '.join(self.automate)} · breaker {self.breaker}/host/hour · "
            f"budget {self.budget} hosts at once"
        )


class AlertApprover:
    """Decides every remediation step of one alert-started run (``RunSpec.unattended``).

    ``approved_by``: the people whose approvals met the entry's quorum, as
    :meth:`~engine.core.alert_queue.AlertQueue.decide` recorded them (each one's full label — account,
    uid, machine, db role, front end — joined with ``; ``), whether they decided in the CLI, the TUI
    or Slack; every approval this run journals names them all. Their yes covers the commands, never a
    manual step, and is not held back by the guardrails (they are who guardrails escalate to), but
    the host counts toward the fleet budget while it is changed. ``approvers``: the same people by
    short name, for the entry's note. Otherwise only steps marked ``automatic`` run, and only while
    the breaker and budget allow.
    """

    def __init__(
        self,
        queue: AlertQueue,
        policy: Policy,
        runbook_id: str,
        *,
        approved_by: str | None = None,
        approvers: tuple[str, ...] = (),
        on_trip: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.policy = policy
        self.runbook_id = runbook_id
        self.approved_by = approved_by
        self.approvers = approvers
        self.on_trip = on_trip
        self.guard: Guard | None = None
        self.held: list[str] = []
        """Remediation steps declined because they are not automatic."""

    @property
    def escalation(self) -> str:
        """Why this run's remediation was held back for a human ("" when nothing was)."""
        if self.guard is not None and self.guard.ledger_id is None:
            return self.guard.reason
        if self.held:
            return f"not automatic, a human decides: {', '.join(self.held)}"
        return ""

    def decide(self, request: ApprovalRequest) -> Approval:
        """The policy's, the guardrails' or the approving human's decision on one step."""
        if request.manual:
            return Approval(
                Decision.NOT_ASKED,
                "cairn serve",
                "not asked: a manual step needs a human at a terminal (`cairn run` or the TUI)",
            )
        if request.phase is not Phase.REMEDIATE:  # a check that says confirm: true
            return Approval(
                Decision.NOT_ASKED,
                "cairn serve",
                "not asked: the runbook asks a human before this check (confirm: true); an alert-started "
                "run has no one to ask",
            )
        if self.approved_by is None and not request.step.automatic:
            self.held.append(request.step.id)
            return Approval(
                Decision.NOT_ASKED,
                "policy",
                f"not asked: not automatic, it waits for a human (cairn approve {request.run_id})",
            )
        guard = self._guard(request)
        if guard.ledger_id is None:
            return Approval(Decision.NOT_ASKED, guard.tripped, f"escalated: {guard.reason}")
        if self.approved_by is not None:
            return Approval(
                Decision.APPROVED, self.approved_by, "approved: the entry's approvals met its quorum"
            )
        return Approval(Decision.APPROVED, "policy", "automatic step; the policy automates this runbook")

    def _guard(self, request: ApprovalRequest) -> Guard:
        """The run's one ledger entry for its host, taken at its first remediation step."""
        if self.guard is None:
            self.guard = self.queue.begin_remediation(
                request.host,
                self.runbook_id,
                request.run_id,
                automatic=self.approved_by is None,
                breaker=self.policy.breaker,
                budget=self.policy.budget,
            )
            if self.guard.ledger_id is None and self.on_trip is not None:
                self.on_trip(self.guard.tripped)
        return self.guard

    def close(self) -> None:
        """The run is over: its host no longer counts toward the budget."""
        if self.guard is not None and self.guard.ledger_id is not None:
            self.queue.end_remediation(self.guard.ledger_id)
