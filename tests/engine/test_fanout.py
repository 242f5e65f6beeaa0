"""Fan-out in the runner: the forks bound, approvals one at a time, rolling batches, per-host isolation."""

from __future__ import annotations

import _thread
import textwrap
import threading
from collections.abc import Iterator

import pytest

from engine.core.approval import Approval, ApprovalRequest, Approver, AssumeYes, Decision
from engine.core.events import Event, EventBus, HostFinished, RunFinished, StepFinished, StepStarted
from engine.core.executors import ExecutorSet
from engine.core.fanout import ApprovalDesk, WorkerPool, fan_out
from engine.core.loader import check_text
from engine.core.model import CommandResult, Host, HostOutcome, Phase, Runbook, RunReport, StepStatus
from engine.core.runner import Runner
from engine.core.spec import RunSpec
from tests.fakes import HandlerExecutor


def ok(stdout: str = "", rc: int = 0) -> CommandResult:
    return CommandResult(rc=rc, stdout=stdout, stderr="", duration=0.0)


def load(text: str) -> Runbook:
    result = check_text(textwrap.dedent(text))
    assert result.runbook is not None, "\n".join(map(str, result.problems))
    return result.runbook


def hosts(count: int) -> tuple[Host, ...]:
    return tuple(Host(f"host{n}", "local") for n in range(1, count + 1))


def execute(
    runbook: Runbook, fake: HandlerExecutor, count: int, *, approver: Approver | None = None, forks: int = 5
) -> tuple[list[Event], RunReport]:
    events: list[Event] = []
    bus = EventBus("fan-1")
    bus.subscribe(events.append)
    request = RunSpec(runbook=runbook, hosts=hosts(count), inputs={}, started_by="test", forks=forks)
    runner = Runner(
        request, bus=bus, approver=approver or AssumeYes(), executors=ExecutorSet({"local": lambda: fake})
    )
    return events, runner.run()


CHECK = """
id: check
title: t
severity: warning
summary: s
detect:
  - {id: probe, title: probe, run: "probe {{ target }}", expect: "stdout == 'fine'"}
"""

FIXABLE = """
id: fixable
title: t
severity: warning
summary: s
detect:
  - {id: probe, title: probe, run: "probe {{ target }}", expect: "stdout == 'fine'"}
remediate:
  - {id: fix, title: fix, run: "fix {{ target }}", serial: SERIAL}
"""


def outcomes(report: RunReport) -> dict[str, tuple[str, str]]:
    return {h.host: (h.outcome.value, h.reason) for h in report.hosts}


# --------------------------------------------------------------------------- the forks bound


def test_hosts_run_concurrently_up_to_forks_and_never_more() -> None:
    forks = 3
    barrier = threading.Barrier(forks, timeout=10)  # proves `forks` probes really overlap
    active = peak = 0
    lock = threading.Lock()

    def probe(host: Host, command: str, cancel: threading.Event | None) -> CommandResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        barrier.wait()
        with lock:
            active -= 1
        return ok("fine")

    _, report = execute(load(CHECK), HandlerExecutor(probe), 9, forks=forks)

    assert peak == forks
    assert [h.host for h in report.hosts] == [f"host{n}" for n in range(1, 10)]  # inventory order
    assert {h.outcome for h in report.hosts} == {HostOutcome.HEALTHY}


def test_approvals_are_asked_one_at_a_time_on_the_thread_that_started_the_run() -> None:
    asked: list[tuple[str, bool]] = []
    busy = threading.Lock()

    class OneAtATime:
        def decide(self, request: ApprovalRequest) -> Approval:
            assert busy.acquire(blocking=False), "two approvals were asked at once"
            try:
                asked.append((request.host, threading.current_thread() is threading.main_thread()))
                return Approval(Decision.APPROVED, "test")
            finally:
                busy.release()

    fixed: set[str] = set()

    def handler(host: Host, command: str, cancel: threading.Event | None) -> CommandResult:
        if command.startswith("fix"):
            fixed.add(host.name)
        return ok("fine" if host.name in fixed else "broken")

    _, report = execute(
        load(FIXABLE.replace("serial: SERIAL", "confirm: true")),
        HandlerExecutor(handler),
        4,
        approver=OneAtATime(),
    )

    assert sorted(asked) == [(f"host{n}", True) for n in range(1, 5)]
    assert {h.outcome for h in report.hosts} == {HostOutcome.REMEDIATED}


# --------------------------------------------------------------------------- rolling batches


def rollout(
    serial: str, count: int, *, never_fixed: str = ""
) -> tuple[list[Event], RunReport, HandlerExecutor]:
    fixed: set[str] = set()
    lock = threading.Lock()

    def handler(host: Host, command: str, cancel: threading.Event | None) -> CommandResult:
        with lock:
            if command.startswith("fix") and host.name != never_fixed:
                fixed.add(host.name)
            return ok("fine" if host.name in fixed else "broken")

    fake = HandlerExecutor(handler)
    events, report = execute(load(FIXABLE.replace("SERIAL", serial)), fake, count, forks=10)
    return events, report, fake


def first_index(events: list[Event], kind: type[Event], host: str, phase: Phase) -> int:
    for index, event in enumerate(events):
        if (
            isinstance(event, StepStarted)
            and kind is StepStarted
            and (event.host, event.phase) == (host, phase)
        ):
            return index
        if (
            isinstance(event, StepFinished)
            and kind is StepFinished
            and (event.result.host, event.result.phase) == (host, phase)
        ):
            return index
    raise AssertionError(f"no {kind.__name__} for {host} {phase}")


def test_serial_remediates_in_batches_each_verified_before_the_next() -> None:
    events, report, _ = rollout("2", 6)

    assert {h.outcome for h in report.hosts} == {HostOutcome.REMEDIATED}
    for earlier, later in (("host1", "host3"), ("host2", "host4"), ("host3", "host5"), ("host4", "host6")):
        assert first_index(events, StepFinished, earlier, Phase.VERIFY) < first_index(
            events, StepStarted, later, Phase.REMEDIATE
        )
    # detect ran on every host before any remediation started
    last_detect = max(first_index(events, StepFinished, f"host{n}", Phase.DETECT) for n in range(1, 7))
    assert last_detect < min(
        first_index(events, StepStarted, f"host{n}", Phase.REMEDIATE) for n in range(1, 7)
    )


def test_a_batch_that_fails_verify_stops_the_roll_out() -> None:
    _, report, fake = rollout("2", 6, never_fixed="host3")

    result = outcomes(report)
    assert (
        result["host1"] == result["host2"] == result["host4"] == ("remediated", "remediated; verify is clean")
    )
    assert result["host3"] == ("present", "verify still finds it: probe")
    stopped = (
        "present",
        "found by probe; not remediated: the roll-out stopped because batch 2 of 3 failed verify on host3",
    )
    assert result["host5"] == result["host6"] == stopped
    assert not [c for h, c in fake.seen if h in ("host5", "host6") and c.startswith("fix")]
    assert report.exit_code == 1


def test_a_percentage_serial_is_a_share_of_the_targets() -> None:
    events, report, _ = rollout('"50%"', 4)

    assert {h.outcome for h in report.hosts} == {HostOutcome.REMEDIATED}
    assert first_index(events, StepFinished, "host2", Phase.VERIFY) < first_index(
        events, StepStarted, "host3", Phase.REMEDIATE
    )


# --------------------------------------------------------------------------- isolation


def test_a_host_that_cannot_be_reached_fails_alone() -> None:
    fake = HandlerExecutor(lambda host, command, cancel: ok("fine"), refuse={"host2"})

    events, report = execute(load(CHECK), fake, 3)

    result = outcomes(report)
    assert result["host2"] == ("failed", "host2: connection refused by 10.0.0.9:22: is sshd running there?")
    assert result["host1"][0] == result["host3"][0] == "healthy"
    assert not [h for h, _ in fake.seen if h == "host2"]
    assert report.exit_code == 2
    assert sum(isinstance(e, HostFinished) for e in events) == 3


def test_a_fault_in_cairn_on_one_host_fails_that_host_only() -> None:
    def handler(host: Host, command: str, cancel: threading.Event | None) -> CommandResult:
        if host.name == "host2":
            raise RuntimeError("boom")
        return ok("fine")

    _, report = execute(load(CHECK), HandlerExecutor(handler), 3)

    result = outcomes(report)
    assert result["host2"] == ("failed", "internal error in Cairn: RuntimeError: boom")
    assert result["host1"][0] == result["host3"][0] == "healthy"


def test_ctrl_c_cancels_every_running_command_and_ends_the_run_as_interrupted() -> None:
    started = threading.Barrier(3, timeout=10)
    events: list[Event] = []

    def handler(host: Host, command: str, cancel: threading.Event | None) -> CommandResult:
        assert cancel is not None
        if started.wait() == 0:
            _thread.interrupt_main()
        cancelled = cancel.wait(10)
        return CommandResult(rc=None, stdout="", stderr="", duration=0.1, cancelled=cancelled)

    bus = EventBus("fan-2")
    bus.subscribe(events.append)
    request = RunSpec(runbook=load(CHECK), hosts=hosts(3), inputs={}, started_by="test", forks=3)
    runner = Runner(
        request,
        bus=bus,
        approver=AssumeYes(),
        executors=ExecutorSet({"local": lambda: HandlerExecutor(handler)}),
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run()

    finished = [e.result for e in events if isinstance(e, StepFinished)]
    assert sorted(r.host for r in finished) == ["host1", "host2", "host3"]
    assert {(r.status, r.message) for r in finished} == {
        (StepStatus.CANCELLED, "cancelled; the command was killed")
    }
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert final.report.interrupted and final.report.exit_code == 130


def test_ctrl_c_while_work_is_still_being_handed_out_cancels_what_already_started() -> None:
    cancel = threading.Event()
    began = threading.Event()
    seen: list[str] = []

    def work(item: str) -> str:
        began.set()
        seen.append(f"{item} cancelled" if cancel.wait(10) else f"{item} ran out its time")
        return item

    def items() -> Iterator[str]:
        yield "host1"
        began.wait(10)
        raise KeyboardInterrupt  # the Ctrl-C lands between two hand-outs

    with WorkerPool(2, "test") as pool, pytest.raises(KeyboardInterrupt):
        fan_out(items(), work, pool=pool, desk=ApprovalDesk(AssumeYes()), on_interrupt=cancel.set)

    assert seen == ["host1 cancelled"]
