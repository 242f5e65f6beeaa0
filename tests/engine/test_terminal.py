"""The terminal approver: what it shows, and what each answer means for this and later steps."""

from __future__ import annotations

import io

from engine.cli.terminal import TerminalApprover
from engine.core.approval import ApprovalRequest, Decision
from engine.core.model import ManualAction, Phase, RunAction, Step

RESTART = Step(id="restart", title="Restart the shim", action=RunAction("x"), tradeoff="drops exec sessions")
DRAIN = Step(id="drain", title="Drain the node", action=RunAction("y"))
CHECKLIST = Step(id="probes", title="Switch probes to HTTP", action=ManualAction("z"))


def ask(answers: str) -> tuple[TerminalApprover, io.StringIO]:
    shown = io.StringIO()
    return TerminalApprover(stream=shown, read=io.StringIO(answers)), shown


def request(step: Step, host: str) -> ApprovalRequest:
    return ApprovalRequest("run-1", host, Phase.REMEDIATE, step, f"do {step.id} on {host}")


def test_the_prompt_shows_host_step_exact_command_and_trade_off() -> None:
    approver, shown = ask("y\n")

    decision = approver.decide(request(RESTART, "node7"))

    assert decision.decision is Decision.APPROVED
    text = shown.getvalue()
    assert "remediate step 'restart' on node7: Restart the shim" in text
    assert "$ do restart on node7" in text
    assert "trade-off: drops exec sessions" in text


def test_every_host_approves_that_step_on_later_hosts_but_still_asks_for_other_steps() -> None:
    approver, shown = ask("e\nn\n")

    first = approver.decide(request(RESTART, "node1"))
    second = approver.decide(request(RESTART, "node2"))
    other = approver.decide(request(DRAIN, "node2"))

    assert first.decision is second.decision is Decision.APPROVED
    assert second.note == "approved for every host"
    assert other.decision is Decision.DECLINED
    assert shown.getvalue().count("run it?") == 2  # node2's restart was not asked again


def test_quit_declines_every_remaining_command_but_manual_steps_still_ask() -> None:
    approver, _ = ask("q\ns\n")

    approver.decide(request(RESTART, "node1"))
    later = approver.decide(request(DRAIN, "node1"))
    manual = approver.decide(request(CHECKLIST, "node1"))

    assert later.decision is Decision.DECLINED
    assert manual.decision is Decision.SKIPPED


def test_end_of_input_declines() -> None:
    approver, _ = ask("")

    assert approver.decide(request(RESTART, "node1")).decision is Decision.DECLINED
