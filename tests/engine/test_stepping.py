"""Stepping through a run (engine/core/stepping.py) and asking a human through a front end
(engine/core/approval.py's AskingApprover), without any front end: the runner's threads are a pool here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from engine.core.approval import Approval, ApprovalChoice, ApprovalRequest, AskingApprover, Decision
from engine.core.model import (
    ManualAction,
    Phase,
    RunAction,
    Runbook,
    Severity,
    Step,
    StepKind,
    StepResult,
    StepStatus,
)
from engine.core.pacing import Pace, PaceRequest
from engine.core.stepping import StepPacer, step_order

BY = "tty:oncall"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Wait until ``condition()`` holds (another thread's doing); at the deadline fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def step(step_id: str, kind: StepKind = StepKind.RUN) -> Step:
    action = ManualAction(f"{step_id} by hand") if kind is StepKind.MANUAL else RunAction(f"echo {step_id}")
    return Step(id=step_id, title=step_id.title(), action=action)


RUNBOOK = Runbook(
    id="rb",
    title="A runbook",
    severity=Severity.INFO,
    summary="",
    detect=(step("one"), step("two"), step("three")),
    remediate=(step("fix"), step("log", StepKind.MANUAL)),
)


def request(host: str, phase: Phase, step_id: str, previous: str | None = None) -> PaceRequest:
    earlier = StepResult(host, phase, previous, StepStatus.OK) if previous else None
    found = next(s for s in RUNBOOK.steps(phase) if s.id == step_id)
    return PaceRequest("run", host, phase, found, earlier)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def test_a_step_waits_until_released_for_every_host(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    first = pool.submit(pacer.before, request("a", Phase.DETECT, "one"))
    second = pool.submit(pacer.before, request("b", Phase.DETECT, "one"))
    wait_for(lambda: len(pacer.waiting()) == 2, "both hosts to wait")
    assert not first.done() and not second.done()
    assert pacer.next_step() == (Phase.DETECT, "one")

    assert pacer.release_next() == (Phase.DETECT, "one")
    assert first.result(10).pace is Pace.RUN
    assert second.result(10).pace is Pace.RUN
    late = pacer.before(request("c", Phase.DETECT, "one"))
    assert late.pace is Pace.RUN, "a host reaching a released step later runs it too"
    assert pacer.waiting() == []


def test_nothing_waiting_releases_nothing() -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    assert pacer.release_next() is None
    assert pacer.skip_next() is None
    assert pacer.rerun_previous() == []


def test_skip_is_journaled_as_the_human(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    waiting = pool.submit(pacer.before, request("a", Phase.DETECT, "two", previous="one"))
    wait_for(pacer.waiting, "the host to wait")
    assert pacer.skip_next() == (Phase.DETECT, "two")
    decision = waiting.result(10)
    assert (decision.pace, decision.by) == (Pace.SKIP, BY)


def test_rerun_runs_the_previous_step_again_then_waits_again(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    at_first = pool.submit(pacer.before, request("a", Phase.DETECT, "one"))
    wait_for(pacer.waiting, "the host to wait at the first step")
    assert pacer.rerun_previous() == [], "nothing before a phase's first step"
    pacer.release_next()
    at_first.result(10)

    at_second = pool.submit(pacer.before, request("a", Phase.DETECT, "two", previous="one"))
    wait_for(pacer.waiting, "the host to wait at the second step")
    [again] = pacer.rerun_previous()
    assert again.previous is not None and again.previous.step_id == "one"
    assert at_second.result(10).pace is Pace.RERUN
    # the runner asks again after the re-run: still not released
    asked_again = pool.submit(pacer.before, request("a", Phase.DETECT, "two", previous="one"))
    wait_for(pacer.waiting, "the host to wait at the second step again")
    assert not asked_again.done()
    pacer.release_next()
    assert asked_again.result(10).pace is Pace.RUN


def test_phase_releases_the_rest_of_the_phase_only(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    waiting = pool.submit(pacer.before, request("a", Phase.DETECT, "two", previous="one"))
    wait_for(pacer.waiting, "the host to wait")
    assert pacer.release_phase() == (Phase.DETECT, "two")
    assert waiting.result(10).pace is Pace.RUN
    assert pacer.before(request("a", Phase.DETECT, "three", previous="two")).pace is Pace.RUN
    remediation = pool.submit(pacer.before, request("a", Phase.REMEDIATE, "fix"))
    wait_for(pacer.waiting, "the next phase to wait")
    assert not remediation.done()
    pacer.release_all()
    assert remediation.result(10).pace is Pace.RUN
    assert pacer.free_running


def test_the_earliest_step_in_the_runbook_goes_first(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    later = pool.submit(pacer.before, request("a", Phase.REMEDIATE, "fix"))
    earlier = pool.submit(pacer.before, request("b", Phase.DETECT, "three", previous="two"))
    wait_for(lambda: len(pacer.waiting()) == 2, "both hosts to wait")
    assert pacer.release_next() == (Phase.DETECT, "three")
    earlier.result(10)
    assert not later.done()
    assert pacer.release_next() == (Phase.REMEDIATE, "fix")
    later.result(10)


def test_cancel_lets_every_waiting_host_go(pool: ThreadPoolExecutor) -> None:
    notified: list[int] = []
    pacer = StepPacer(RUNBOOK, by=BY, notify=lambda: notified.append(1))
    waiting = [pool.submit(pacer.before, request(h, Phase.DETECT, "one")) for h in ("a", "b", "c")]
    wait_for(lambda: len(pacer.waiting()) == 3, "three hosts to wait")
    pacer.cancel()
    assert all(w.result(10).pace is Pace.RUN for w in waiting), "the runner sees its cancel and skips"
    assert pacer.before(request("d", Phase.DETECT, "two")).pace is Pace.RUN
    assert notified, "the UI heard about the waiting hosts"


def approval_request(host: str, step_id: str = "fix") -> ApprovalRequest:
    found = next(s for s in RUNBOOK.remediate if s.id == step_id)
    shown = found.action.command if isinstance(found.action, RunAction) else "do it by hand"
    return ApprovalRequest("run", host, Phase.REMEDIATE, found, shown)


class Asker:
    """Stands in for the run screen: records what it was asked; a test answers."""

    def __init__(self) -> None:
        self.asked: list[tuple[ApprovalRequest, Callable[[ApprovalChoice], None]]] = []

    def __call__(self, request: ApprovalRequest, answer: Callable[[ApprovalChoice], None]) -> None:
        self.asked.append((request, answer))


@pytest.mark.parametrize(
    ("choice", "decision", "note"),
    [
        (ApprovalChoice.APPROVE, Decision.APPROVED, ""),
        (ApprovalChoice.DECLINE, Decision.DECLINED, f"declined by {BY}"),
    ],
)
def test_approver_blocks_until_the_human_answers(
    pool: ThreadPoolExecutor, choice: ApprovalChoice, decision: Decision, note: str
) -> None:
    asker = Asker()
    approver = AskingApprover(BY, asker)
    answer: Future[Approval] = pool.submit(approver.decide, approval_request("a"))
    wait_for(lambda: asker.asked, "the question")
    assert not answer.done()
    asked, reply = asker.asked[0]
    assert (asked.host, asked.step.id, asked.text) == ("a", "fix", "echo fix")
    reply(choice)
    approval = answer.result(10)
    assert (approval.decision, approval.by, approval.note) == (decision, BY, note)


def test_every_host_approves_the_step_on_the_others_without_asking(pool: ThreadPoolExecutor) -> None:
    asker = Asker()
    approver = AskingApprover(BY, asker)
    first = pool.submit(approver.decide, approval_request("a"))
    wait_for(lambda: asker.asked, "the question")
    asker.asked[0][1](ApprovalChoice.APPROVE_EVERY_HOST)
    assert first.result(10).decision is Decision.APPROVED
    other = approver.decide(approval_request("b"))
    assert (other.decision, other.by, other.note) == (Decision.APPROVED, BY, "approved for every host")
    assert len(asker.asked) == 1
    manual = pool.submit(approver.decide, approval_request("b", "log"))
    wait_for(lambda: len(asker.asked) == 2, "a manual step is always asked")
    asker.asked[1][1](ApprovalChoice.SKIP)
    assert (manual.result(10).decision, manual.result(10).note) == (Decision.SKIPPED, f"skipped by {BY}")


def test_closing_answers_the_open_question_and_every_later_one_not_asked(pool: ThreadPoolExecutor) -> None:
    asker = Asker()
    approver = AskingApprover(BY, asker)
    pending = pool.submit(approver.decide, approval_request("a"))
    wait_for(lambda: asker.asked, "the question")
    approver.close(f"the run was cancelled by {BY}")
    unanswered = pending.result(10)
    assert (unanswered.decision, unanswered.note) == (Decision.NOT_ASKED, f"the run was cancelled by {BY}")
    asker.asked[0][1](ApprovalChoice.APPROVE)  # a late answer changes nothing
    later = approver.decide(approval_request("b"))
    assert later.decision is Decision.NOT_ASKED
    assert len(asker.asked) == 1


def test_step_order_is_the_order_a_run_reaches_the_steps() -> None:
    detect = ["one", "two", "three"]
    assert step_order(RUNBOOK) == [
        *((Phase.DETECT, s) for s in detect),
        (Phase.REMEDIATE, "fix"),
        (Phase.REMEDIATE, "log"),
        *((Phase.VERIFY, s) for s in detect),  # verify re-runs detect's steps, keyed apart
    ]


def test_waiting_at_names_the_hosts_before_a_step(pool: ThreadPoolExecutor) -> None:
    pacer = StepPacer(RUNBOOK, by=BY)
    first = pool.submit(pacer.before, request("a", Phase.DETECT, "one"))
    wait_for(pacer.waiting, "the first host to wait")
    second = pool.submit(pacer.before, request("b", Phase.DETECT, "one"))
    later = pool.submit(pacer.before, request("c", Phase.REMEDIATE, "fix"))
    wait_for(lambda: len(pacer.waiting()) == 3, "three hosts to wait")
    assert pacer.waiting_at((Phase.DETECT, "one")) == ["a", "b"]
    assert pacer.waiting_at((Phase.REMEDIATE, "fix")) == ["c"]
    assert pacer.waiting_at((Phase.DETECT, "two")) == []
    assert not pacer.cancelled
    pacer.cancel()
    assert pacer.cancelled
    assert [f.result(10).pace for f in (first, second, later)] == [Pace.RUN] * 3
