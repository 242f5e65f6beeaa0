"""The run state machine, driven by a scripted executor: phases, conditions, approvals, verify."""

from __future__ import annotations

import errno
import textwrap
import threading

import pytest

from engine.core.approval import Approver, AssumeYes, Decision, NobodyToAsk
from engine.core.events import (
    Event,
    EventBus,
    RunFinished,
    RunStarted,
    StepApproval,
    StepFinished,
    StepOutput,
)
from engine.core.executors import ExecutorSet
from engine.core.loader import check_text
from engine.core.model import (
    CommandResult,
    Host,
    HostOutcome,
    Phase,
    Runbook,
    RunReport,
    StepStatus,
)
from engine.core.pacing import Pace, Pacer
from engine.core.runner import Runner
from engine.core.spec import RunSpec
from tests.fakes import RecordingApprover, ScriptedExecutor, ScriptedPacer, WaitsUntilCancelled

LOCAL = Host("node1", "local", {"role": "worker"})


def ok(stdout: str = "", rc: int = 0) -> CommandResult:
    return CommandResult(rc=rc, stdout=stdout, stderr="", duration=0.01)


def hung() -> CommandResult:
    return CommandResult(rc=None, stdout="partial\n", stderr="", duration=10.0, timed_out=True)


def load(text: str) -> Runbook:
    result = check_text(textwrap.dedent(text))
    assert result.runbook is not None, "\n".join(map(str, result.problems))
    return result.runbook


def execute(
    runbook: Runbook,
    executor: ScriptedExecutor,
    *,
    approver: Approver | None = None,
    inputs: dict[str, object] | None = None,
    pacer: Pacer | None = None,
    last_phase: Phase = Phase.VERIFY,
    dry_run: bool = False,
) -> tuple[list[Event], RunReport]:
    events: list[Event] = []
    bus = EventBus("run-1")
    bus.subscribe(events.append)
    values = {i.name: i.default for i in runbook.inputs} | (inputs or {})
    request = RunSpec(
        runbook=runbook,
        hosts=(LOCAL,),
        inputs=values,
        started_by="test",
        last_phase=last_phase,
        dry_run=dry_run,
    )
    runner = Runner(
        request,
        bus=bus,
        approver=approver or RecordingApprover(),
        executors=ExecutorSet({"local": lambda: executor}),
        pacer=pacer,
    )
    return events, runner.run()


def statuses(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.result.phase.value, e.result.step_id, e.result.status.value)
        for e in events
        if isinstance(e, StepFinished)
    ]


ZOMBIES = """
id: zombies
title: Zombies
severity: warning
summary: s
detect:
  - id: count
    title: count zombies
    run: count-zombies
    parse: number
    expect: out == 0
    report: "{{ out }} zombies"
diagnose:
  - id: parents
    title: parents
    run: show-parents
remediate:
  - id: reap
    title: reap them
    run: reap --max {{ steps.count.out }}
verify: detect
"""


def test_healthy_target_stops_after_detect() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("0\n"))])
    events, report = execute(load(ZOMBIES), executor)
    assert statuses(events) == [("detect", "count", "ok")]
    assert report.hosts[0].outcome is HostOutcome.HEALTHY
    assert report.exit_code == 0
    assert executor.seen == ["count-zombies"]


def test_present_then_remediated_and_verified() -> None:
    counts = iter(["3\n", "0\n"])
    executor = ScriptedExecutor(
        [
            ("count-zombies", lambda _: ok(next(counts))),
            ("show-parents", ok("containerd-shim\n")),
            ("reap", ok()),
        ]
    )
    events, report = execute(load(ZOMBIES), executor)
    assert statuses(events) == [
        ("detect", "count", "finding"),
        ("diagnose", "parents", "ok"),
        ("remediate", "reap", "ok"),
        ("verify", "count", "ok"),
    ]
    # The remediation command saw the parsed result of an earlier step.
    assert "reap --max 3" in executor.seen
    assert report.hosts[0].outcome is HostOutcome.REMEDIATED
    assert report.exit_code == 0
    finding = next(e.result for e in events if isinstance(e, StepFinished))
    assert finding.message == "3 zombies"


def test_verify_still_finding_means_present() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("2\n")), ("show-parents", ok()), ("reap", ok())])
    _, report = execute(load(ZOMBIES), executor)
    assert report.hosts[0].outcome is HostOutcome.PRESENT
    assert "verify still finds it: count" in report.hosts[0].reason
    assert report.exit_code == 1


def test_declined_remediation_is_recorded_and_skips_verify() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("2\n")), ("show-parents", ok())])
    approver = RecordingApprover({"reap": Decision.DECLINED})
    events, report = execute(load(ZOMBIES), executor, approver=approver)
    assert statuses(events)[-1] == ("remediate", "reap", "declined")
    assert [r.step.id for r in approver.requests] == ["reap"]
    assert approver.requests[0].text == "reap --max 2"  # the exact command was shown
    approvals = [e for e in events if isinstance(e, StepApproval)]
    assert [(a.step_id, a.approved, a.command) for a in approvals] == [("reap", False, "reap --max 2")]
    assert report.hosts[0].outcome is HostOutcome.PRESENT
    assert report.exit_code == 1
    assert not any("reap" in c for c in executor.seen)


def test_no_terminal_is_not_asked_never_declined_and_says_how_to_approve() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("2\n")), ("show-parents", ok())])
    events, report = execute(load(ZOMBIES), executor, approver=NobodyToAsk())
    unasked = [e.result for e in events if isinstance(e, StepFinished)][-1]
    assert unasked.status is StepStatus.NOT_ASKED  # "declined" is a human's refusal; nobody refused
    assert unasked.message.startswith("not asked: no terminal to ask on")
    assert "--yes" in unasked.message
    assert report.hosts[0].outcome is HostOutcome.PRESENT
    assert report.hosts[0].reason == (
        "found by count; not remediated: 1 step(s) not asked (no terminal to ask on; rerun on a terminal, "
        "or with --yes to approve the commands)"
    )


def test_remediation_error_stops_the_phase_and_still_verifies() -> None:
    runbook = load(
        """
        id: two-fixes
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: check, expect: "out == 'fine'"}
        remediate:
          - {id: first, title: f, run: first-fix}
          - {id: second, title: s, run: second-fix}
        """
    )
    executor = ScriptedExecutor([("check", ok("broken\n")), ("first-fix", ok(rc=1))])
    events, report = execute(runbook, executor, approver=AssumeYes())
    assert statuses(events) == [
        ("detect", "check", "finding"),
        ("remediate", "first", "error"),
        ("remediate", "second", "not_run"),
        ("verify", "check", "finding"),
    ]
    assert "second-fix" not in executor.seen
    assert report.hosts[0].outcome is HostOutcome.FAILED
    assert report.hosts[0].reason.startswith("remediation failed: first: exit code 1")
    assert report.exit_code == 2


def test_detect_error_without_finding_is_a_failed_run() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("not a number\n"))])
    events, report = execute(load(ZOMBIES), executor)
    result = next(e.result for e in events if isinstance(e, StepFinished))
    assert result.status is StepStatus.ERROR
    assert "expected one number" in result.message
    assert report.hosts[0].outcome is HostOutcome.FAILED
    assert report.exit_code == 2


def test_hang_as_finding_and_as_error() -> None:
    runbook = load(
        """
        id: hangs
        title: t
        severity: info
        summary: s
        detect:
          - {id: runtime, title: r, run: docker ps, timeout: 10s, on_timeout: finding}
          - {id: other, title: o, run: slow-thing, timeout: 10s}
        """
    )
    events, report = execute(
        runbook, ScriptedExecutor([("docker ps|slow-thing", hung())]), last_phase=Phase.DETECT
    )
    results = [e.result for e in events if isinstance(e, StepFinished)]
    assert [r.status for r in results] == [StepStatus.FINDING, StepStatus.TIMEOUT]
    assert "no answer within 10s" in results[0].message
    assert results[0].stdout == "partial\n"  # partial output kept
    # A finding decides "present", even though another check timed out.
    assert report.hosts[0].outcome is HostOutcome.PRESENT


def test_when_false_skips_and_exit_codes_allow_nonzero() -> None:
    runbook = load(
        """
        id: conditions
        title: t
        severity: info
        summary: s
        inputs:
          deep: {type: boolean, default: false}
        detect:
          - id: grep
            title: g
            run: grep-it
            exit_codes: [0, 1]
            expect: rc == 1
          - id: deep_check
            title: d
            when: inputs.deep
            run: deep-check
        """
    )
    executor = ScriptedExecutor([("grep-it", ok(rc=1))])
    events, report = execute(runbook, executor)
    assert statuses(events) == [("detect", "grep", "ok"), ("detect", "deep_check", "skipped")]
    assert report.exit_code == 0
    events, _ = execute(runbook, ScriptedExecutor([("grep-it", ok(rc=2))]), inputs={"deep": False})
    assert statuses(events)[0] == ("detect", "grep", "error")


def test_phase_limit_and_dry_run_never_execute_remediation() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("4\n")), ("show-parents", ok())])
    events, report = execute(load(ZOMBIES), executor, last_phase=Phase.DETECT)
    assert statuses(events) == [("detect", "count", "finding")]
    assert report.exit_code == 1

    approver = RecordingApprover()
    events, report = execute(load(ZOMBIES), executor, approver=approver, dry_run=True)
    dry = [e.result for e in events if isinstance(e, StepFinished)][-1]
    assert (dry.step_id, dry.status, dry.command) == ("reap", StepStatus.SKIPPED, "reap --max 4")
    assert approver.requests == []
    assert not any(c.startswith("reap") for c in executor.seen)
    assert report.exit_code == 1


def test_manual_steps_need_a_human() -> None:
    runbook = load(
        """
        id: manual
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: check, expect: "false"}
        remediate:
          - id: probes
            title: switch probes
            manual: Replace the exec probe of {{ target }} with an HTTP probe.
        """
    )
    executor = ScriptedExecutor([("check", ok())])
    events, report = execute(runbook, executor, approver=AssumeYes())
    manual = [e.result for e in events if isinstance(e, StepFinished)][-1]
    assert manual.status is StepStatus.NOT_ASKED  # --yes never pretends a human did it
    assert "needs a human" in manual.message
    assert report.hosts[0].outcome is HostOutcome.PRESENT  # nothing was done, so nothing to verify

    approver = RecordingApprover()
    events, _ = execute(runbook, executor, approver=approver)
    assert approver.requests[0].text == "Replace the exec probe of node1 with an HTTP probe."
    assert statuses(events)[1:] == [("remediate", "probes", "ok"), ("verify", "check", "finding")]


def test_template_errors_become_step_errors() -> None:
    runbook = load(
        """
        id: templates
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: "check {{ vars.missing_var }}"}
        """
    )
    events, report = execute(runbook, ScriptedExecutor([]))
    result = next(e.result for e in events if isinstance(e, StepFinished))
    assert result.status is StepStatus.ERROR
    assert "missing_var" in result.message
    assert report.exit_code == 2


def test_host_vars_and_target_are_visible_and_quoted() -> None:
    runbook = load(
        """
        id: vars
        title: t
        severity: info
        summary: s
        inputs:
          name: {type: string}
        detect:
          - {id: check, title: c, run: "check {{ target }} {{ vars.role }} {{ inputs.name }}"}
        """
    )
    executor = ScriptedExecutor([("check", ok())])
    execute(runbook, executor, inputs={"name": "a; rm -rf /"})
    assert executor.seen == ["check node1 worker 'a; rm -rf /'"]


def test_secrets_never_reach_events() -> None:
    runbook = load(
        """
        id: secrets
        title: t
        severity: info
        summary: s
        inputs:
          token: {type: string, secret: true}
        detect:
          - id: call
            title: c
            run: 'curl -H "Authorization: Bearer {{ inputs.token }}" api'
            report: "got {{ stdout }}"
        """
    )
    secret = "tok-3f9a8b7c"
    executor = ScriptedExecutor([("curl", ok(f"echo: {secret}\n"))])
    events, _ = execute(runbook, executor, inputs={"token": secret})
    # The executor gets the real value, in the command's environment; its command line refers to it.
    assert executor.seen[0] == 'curl -H "Authorization: Bearer ${CAIRN_SECRET_TOKEN}" api'
    assert executor.envs[0] == {"CAIRN_SECRET_TOKEN": secret}
    dumped = repr(events)
    assert secret not in dumped  # ... nobody else does
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.inputs == {"token": "***"}
    output = [e for e in events if isinstance(e, StepOutput)]
    assert output and output[0].text == "echo: ***\n"


def test_events_are_numbered_in_order_and_end_with_run_finished() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("0\n"))])
    events, report = execute(load(ZOMBIES), executor)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished) and events[-1].report == report
    assert all(e.run_id == "run-1" for e in events)


def test_unreachable_host_fails_alone() -> None:
    runbook = load(ZOMBIES)
    events: list[Event] = []
    bus = EventBus("run-2")
    bus.subscribe(events.append)
    executor = ScriptedExecutor([("count-zombies", ok("0\n"))])
    hosts = (Host("far", "ssh"), LOCAL)
    request = RunSpec(runbook=runbook, hosts=hosts, inputs={}, started_by="test")
    report = Runner(
        request, bus=bus, approver=RecordingApprover(), executors=ExecutorSet({"local": lambda: executor})
    ).run()
    outcomes = {h.host: (h.outcome, h.reason) for h in report.hosts}
    assert outcomes["node1"][0] is HostOutcome.HEALTHY
    assert outcomes["far"][0] is HostOutcome.FAILED
    assert "ansible_connection=ssh" in outcomes["far"][1]
    assert report.exit_code == 2


def test_ctrl_c_ends_the_run_as_interrupted() -> None:
    def interrupt(_: str) -> CommandResult:
        raise KeyboardInterrupt

    events: list[Event] = []
    bus = EventBus("run-3")
    bus.subscribe(events.append)
    request = RunSpec(runbook=load(ZOMBIES), hosts=(LOCAL,), inputs={}, started_by="test")
    runner = Runner(
        request,
        bus=bus,
        approver=RecordingApprover(),
        executors=ExecutorSet({"local": lambda: ScriptedExecutor([("count", interrupt)])}),
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert statuses(events) == [("detect", "count", "interrupted")]
    assert isinstance(events[-1], RunFinished)
    assert events[-1].report.interrupted
    assert events[-1].report.exit_code == 130


def test_a_declined_check_proves_nothing() -> None:
    runbook = load(
        """
        id: heavy-check
        title: t
        severity: info
        summary: s
        detect:
          - {id: heavy, title: heavy scan, run: heavy-scan, confirm: true}
        """
    )
    events, report = execute(runbook, ScriptedExecutor([]), approver=NobodyToAsk())
    assert statuses(events) == [("detect", "heavy", "not_asked")]
    assert report.hosts[0].outcome is HostOutcome.FAILED  # not "healthy": nothing was looked at
    assert report.hosts[0].reason.startswith("detect could not decide: heavy")
    assert report.exit_code == 2


def test_dry_run_never_verifies_nor_fails_on_what_it_does_not_run() -> None:
    runbook = load(
        """
        id: dry
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: check, expect: "false"}
        remediate:
          - id: cron
            title: install clean-up
            ansible: {module: ansible.builtin.cron, args: {name: "clean {{ target }}", job: "true"}}
          - {id: fix, title: f, run: "fix {{ target }}"}
        """
    )
    executor = ScriptedExecutor([("check", ok())])
    events, report = execute(runbook, executor, approver=AssumeYes(), dry_run=True)
    assert statuses(events) == [
        ("detect", "check", "finding"),
        ("remediate", "cron", "skipped"),
        ("remediate", "fix", "skipped"),
    ]
    commands = [e.result.command for e in events if isinstance(e, StepFinished)][1:]
    assert commands == ["ansible ansible.builtin.cron name='clean node1' job=true", "fix node1"]
    assert report.hosts[0].outcome is HostOutcome.PRESENT
    assert executor.seen == ["check"]


def test_the_failed_remediation_step_is_named_and_a_dry_run_shows_it_would_fail() -> None:
    runbook = load(
        """
        id: named
        title: t
        severity: info
        summary: s
        detect:
          - {id: check, title: c, run: check, expect: "false"}
        remediate:
          - {id: by_hand, title: h, manual: do it}
          - {id: broken, title: b, run: "fix {{ vars.nowhere }}"}
        """
    )
    _, report = execute(runbook, ScriptedExecutor([("check", ok())]), approver=AssumeYes())
    assert report.hosts[0].reason.startswith("remediation failed: broken:")
    _, dry = execute(runbook, ScriptedExecutor([("check", ok())]), approver=AssumeYes(), dry_run=True)
    assert dry.hosts[0].outcome is HostOutcome.FAILED
    assert dry.hosts[0].reason.startswith("remediation would fail: broken:")


# --------------------------------------------------------------------------- pacing (stepping through)


def test_the_pacer_is_asked_before_every_step_with_the_phases_previous_result() -> None:
    counts = iter(["3\n", "0\n"])
    executor = ScriptedExecutor(
        [("count-zombies", lambda _: ok(next(counts))), ("show-parents", ok("shim\n")), ("reap", ok())]
    )
    pacer = ScriptedPacer([])
    _, report = execute(load(ZOMBIES), executor, pacer=pacer)
    assert pacer.asked == [
        ("detect", "count", None),
        ("diagnose", "parents", None),
        ("remediate", "reap", None),
        ("verify", "count", None),
    ]
    assert report.hosts[0].outcome is HostOutcome.REMEDIATED


def test_a_step_skipped_by_the_pacer_is_recorded_as_a_human_skip_that_did_not_look() -> None:
    executor = ScriptedExecutor([("count-zombies", ok("3\n"))])
    events, report = execute(load(ZOMBIES), executor, pacer=ScriptedPacer([Pace.RUN, Pace.SKIP, Pace.SKIP]))
    assert statuses(events) == [
        ("detect", "count", "finding"),
        ("diagnose", "parents", "skipped"),
        ("remediate", "reap", "skipped"),
    ]
    skipped = [e.result for e in events if isinstance(e, StepFinished)][1:]
    assert [(r.message, r.approval) for r in skipped] == [("skipped by tui:alice", "tui:alice")] * 2
    assert executor.seen == ["count-zombies"]  # nothing skipped ran
    assert report.hosts[0].outcome is HostOutcome.PRESENT
    assert report.hosts[0].reason == "found by count; no remediation step was carried out"


def test_skipping_a_detect_step_leaves_detect_undecided() -> None:
    executor = ScriptedExecutor([])
    events, report = execute(load(ZOMBIES), executor, pacer=ScriptedPacer([Pace.SKIP]))
    assert statuses(events) == [("detect", "count", "skipped")]
    assert report.hosts[0].outcome is HostOutcome.FAILED
    assert report.hosts[0].reason == "detect could not decide: count: skipped by tui:alice"


TWO_CHECKS = """
id: two-checks
title: Two checks
severity: info
summary: s
detect:
  - id: first
    title: first
    run: first-check
    parse: number
    expect: out == 0
  - id: second
    title: second
    run: second-check {{ steps.first.out }}
"""


def test_rerun_runs_the_previous_step_again_and_later_steps_see_its_new_result() -> None:
    answers = iter(["2\n", "0\n"])
    executor = ScriptedExecutor([("first-check", lambda _: ok(next(answers))), ("second-check", ok())])
    pacer = ScriptedPacer([Pace.RUN, Pace.RERUN, Pace.RUN])
    events, report = execute(load(TWO_CHECKS), executor, pacer=pacer)
    assert pacer.asked == [
        ("detect", "first", None),
        ("detect", "second", "first"),
        ("detect", "second", "first"),
    ]
    assert statuses(events) == [
        ("detect", "first", "finding"),
        ("detect", "first", "ok"),  # run again: the journal keeps both
        ("detect", "second", "ok"),
    ]
    assert executor.seen == ["first-check", "first-check", "second-check 0"]
    host = report.hosts[0]
    assert [(r.step_id, r.status.value) for r in host.results] == [("first", "ok"), ("second", "ok")]
    assert host.outcome is HostOutcome.HEALTHY


def test_a_cancel_from_another_thread_ends_the_run_interrupted_without_raising() -> None:
    """The TUI's cancel key sets the run's cancel event: the running command stops, the run is interrupted."""
    waits = WaitsUntilCancelled()
    cancel = threading.Event()
    runbook = load(ZOMBIES)
    request = RunSpec(runbook=runbook, hosts=(LOCAL,), inputs={}, started_by="test")
    events: list[Event] = []
    bus = EventBus("run-1")
    bus.subscribe(events.append)
    runner = Runner(
        request,
        bus=bus,
        approver=RecordingApprover(),
        executors=ExecutorSet({"local": lambda: waits}),
        cancel=cancel,
    )

    def cancel_once_started() -> None:
        if waits.started.wait(30):
            cancel.set()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    report = runner.run()
    assert report.interrupted
    assert report.exit_code == 130
    assert statuses(events) == [("detect", "count", "cancelled")]
    assert next(e for e in events if isinstance(e, RunFinished)).report.interrupted


def test_a_step_whose_processes_survived_the_kill_never_says_they_were_killed() -> None:
    runbook = load(
        """
        id: stuck
        title: t
        severity: info
        summary: s
        detect:
          - id: wait
            title: waits
            run: sleep 600
            timeout: 10s
        """
    )
    survived = "cairn: could not kill process 4242 (sleep 600) of this step: it is still running (…)\n"
    stuck = CommandResult(rc=None, stdout="", stderr=survived, duration=10.0, timed_out=True)
    events, _ = execute(runbook, ScriptedExecutor([("sleep", stuck)]))
    result = next(e.result for e in events if isinstance(e, StepFinished))
    assert result.status is StepStatus.TIMEOUT
    assert result.message == "timed out after 10s; some of its processes could not be killed (see stderr)"

    events, _ = execute(runbook, ScriptedExecutor([("sleep", hung())]))
    result = next(e.result for e in events if isinstance(e, StepFinished))
    assert result.message == "timed out after 10s; the command was killed"


def test_running_out_of_open_files_says_so_and_how_to_fix_it() -> None:
    def no_more_files(command: str) -> CommandResult:
        raise OSError(errno.EMFILE, "Too many open files")

    _, report = execute(load(ZOMBIES), ScriptedExecutor([("count-zombies", no_more_files)]))
    (host,) = report.hosts
    assert host.outcome is HostOutcome.FAILED
    assert host.reason.startswith("Cairn ran out of open files (limit ")
    assert "`ulimit -n`" in host.reason and "--limit" in host.reason
    assert "internal error" not in host.reason
