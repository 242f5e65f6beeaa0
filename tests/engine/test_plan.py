"""Plans render exactly what would run, per host, and say what can only be known at run time."""

from __future__ import annotations

import textwrap

from engine.core.loader import check_text
from engine.core.model import Host, Phase
from engine.core.plan import plan_run

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
    assert steps[(Phase.REMEDIATE, "call")].text == "notify --token *** 'web 2'"  # secret redacted
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
