"""Plans render exactly what would run, per host, and say what can only be known at run time."""

from __future__ import annotations

import textwrap
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.core.events import EventBus
from engine.core.executors import ExecutorSet, OutputCallback, Shell
from engine.core.loader import check_text
from engine.core.model import CommandResult, Host, Phase, Runbook
from engine.core.plan import plan_run
from engine.core.runner import Runner
from engine.core.spec import RunSpec, Trigger, TriggerKind
from tests.fakes import RecordingApprover

RUNBOOK = textwrap.dedent(
    """
    id: plan-me
    title: t
    severity: info
    summary: s
    inputs:
      path: {type: string, default: /var/log}
      deep: {type: boolean, default: false}
      token: {type: string, secret: true}
    detect:
      - {id: usage, title: u, run: "df --output=pcent {{ inputs.path }}", parse: lines}
      - {id: deep_scan, title: d, when: inputs.deep, run: "du -sh {{ inputs.path }}/*"}
    remediate:
      - {id: rotate, title: r, run: "logrotate -f {{ vars.conf }} # {{ steps.usage.out | length }}"}
      - {id: call, title: c, run: "notify --token {{ inputs.token }} {{ target }}", confirm: false}
      - {id: tell, title: t, manual: "Tell the owner of {{ target }}."}
    """
)


def test_plan_renders_per_host_and_defers_what_needs_results() -> None:
    runbook = check_text(RUNBOOK).runbook
    assert runbook is not None
    hosts = [Host("web1", "local", {"conf": "/etc/lr.conf"}), Host("web 2", "local", {"conf": "x"})]
    plans = plan_run(runbook, hosts, {"path": "/var/log; rm -rf /", "deep": False, "token": "tok-123456"})
    assert [p.host.name for p in plans] == ["web1", "web 2"]
    steps = {(s.phase, s.step.id): s for s in plans[1].steps}
    assert steps[(Phase.DETECT, "usage")].text == "df --output=pcent '/var/log; rm -rf /'"
    assert steps[(Phase.DETECT, "deep_scan")].condition == "skip"
    rotate = steps[(Phase.REMEDIATE, "rotate")]
    assert rotate.deferred == "reads steps.usage"
    assert rotate.text.startswith("logrotate -f {{ vars.conf }}")  # the template, shown as such
    # a secret by reference: the command a run passes it to in its environment, never on its command line
    assert steps[(Phase.REMEDIATE, "call")].text == "notify --token \"$CAIRN_SECRET_TOKEN\" 'web 2'"
    assert steps[(Phase.REMEDIATE, "tell")].text == "Tell the owner of web 2."
    assert (Phase.VERIFY, "usage") in steps  # verify re-runs detect


def test_plan_stops_after_the_requested_phase() -> None:
    runbook = check_text(RUNBOOK).runbook
    assert runbook is not None
    (plan,) = plan_run(
        runbook, [Host("h")], {"path": "/", "deep": True, "token": "t0ken"}, last_phase=Phase.DETECT
    )
    assert {s.phase for s in plan.steps} == {Phase.DETECT}
    assert plan.steps[1].condition == ""  # deep is true now


ALERTED = textwrap.dedent(
    """
    id: alerted
    title: t
    severity: info
    summary: s
    triggers:
      - {matchers: ['alertname = Disk'], target: "{{ alert.labels.host }}"}
    inputs:
      token: {type: string, secret: true}
    detect:
      - {id: call, title: c, run: "notify --token {{ inputs.token }} {{ alert.labels.note }}"}
      - {id: raw, title: r, run: "echo {{ alert.labels.note | unquoted }}", allow_unquoted: "the note is ours"}
      - {id: leak, title: l, run: "echo {{ {'t': inputs.token} }}"}
      - {id: dash, title: d, run: "rm {{ alert.labels.flag }}"}
    """
)
ALERT = {"status": "firing", "labels": {"host": "h", "note": "a; touch owned", "flag": "-rf"}}
SECRET = "tok-9f8e7d6c5b"


def alerted() -> Runbook:
    runbook = check_text(ALERTED).runbook
    assert runbook is not None
    return runbook


@dataclass
class Recorder:
    """An executor that records every task (its command and environment) and answers ok."""

    tasks: list[Shell] = field(default_factory=list)

    def connect(self, host: Host) -> None:
        pass

    def describe(self, host: Host) -> str:
        return "recorder"

    def close(self) -> None:
        pass

    def execute(
        self,
        host: Host,
        task: Shell,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        self.tasks.append(task)
        return CommandResult(0, "", "", 0.0)


def test_plan_and_run_see_the_same_context_secrets_and_outsiders_alike() -> None:
    (plan,) = plan_run(alerted(), [Host("h")], {"token": SECRET}, alert=ALERT, last_phase=Phase.DETECT)
    planned = {s.step.id: s for s in plan.steps if s.phase is Phase.DETECT}
    recorder = Recorder()
    spec = RunSpec(
        runbook=alerted(),
        hosts=(Host("h"),),
        inputs={"token": SECRET},
        trigger=Trigger(kind=TriggerKind.ALERT),
        alert=ALERT,
        last_phase=Phase.DETECT,
        started_by="test",
    )
    report = Runner(
        spec,
        bus=EventBus("r"),
        approver=RecordingApprover(),
        executors=ExecutorSet({"local": lambda: recorder}),
    ).run()
    ran = {r.step_id: r for r in report.hosts[0].results}

    assert planned["call"].text == "notify --token \"$CAIRN_SECRET_TOKEN\" 'a; touch owned'"
    assert ran["call"].command == planned["call"].text
    assert recorder.tasks[0].command == planned["call"].text
    assert recorder.tasks[0].env == {"CAIRN_SECRET_TOKEN": SECRET}
    assert planned["raw"].text == ran["raw"].command == "echo a; touch owned"  # allowed, and said why
    for step_id, words in [
        ("leak", "a dict written out whole is given the secret input 'token'"),
        ("dash", "-rf comes from an alert (an outsider's text) and starts with '-'"),
    ]:
        assert words in planned[step_id].error
        assert ran[step_id].status.value == "error" and words in ran[step_id].message
    assert all(SECRET not in s.error + s.text for s in plan.steps)
    assert len(recorder.tasks) == 2, "the refused steps ran nothing"


def test_plan_refuses_an_outsiders_text_for_unquoted_as_a_run_would() -> None:
    # validate refuses this runbook; built anyway, the plan (like a run) still refuses the step
    runbook = alerted()
    runbook = replace(runbook, detect=tuple(replace(s, allow_unquoted="") for s in runbook.detect))
    (plan,) = plan_run(runbook, [Host("h")], {"token": SECRET}, alert=ALERT, last_phase=Phase.DETECT)
    raw = next(s for s in plan.steps if s.step.id == "raw")
    assert "| unquoted was given text an outsider set" in raw.error
