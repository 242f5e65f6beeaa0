"""`cairn serve` remediating: only where runbook and policy both allow it, within the guardrails,
otherwise waiting for `cairn approve` / `cairn decline`; SIGTERM and kill -9 lose no work.

Everything is real: the `cairn serve` process, HTTP, bash on the inventory's
(local-connection) hosts, the journal read back; the runbooks touch marker files
so the tests see exactly what was changed on the "host".
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.alert_queue import Entry, EntryState
from engine.core.identity import Via, local_identity
from engine.core.journal import RunRecord
from engine.core.model import RunStatus
from tests.cli.conftest import Served, alert, entries, runs, servers, wait_for, webhook
from tests.conftest import CairnRunner, LabStarter

MARKER = """
id: stale-marker
title: A web host's marker is stale
severity: warning
summary: The marker file is missing; touching it is the fix.
triggers:
  - matchers: ['alertname = MarkerStale']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: look
    title: Is the marker there
    run: test -e {dir}/{{{{ target }}}}.fixed && echo fixed || echo stale
    expect: out == 'fixed'
remediate:
  - id: fix
    title: Touch the marker
    automatic: true
    run: {fix}
  - id: also
    title: A second change nobody marked automatic
    confirm: false
    run: touch {dir}/{{{{ target }}}}.also
"""


def marker(folder: Path, fix: str = "") -> str:
    return MARKER.format(dir=folder, fix=fix or f"touch {folder}/{{{{ target }}}}.fixed")


def fire(served: Served, node: str, fingerprint: str = "") -> None:
    code, body = served.post(webhook(alert(alertname="MarkerStale", node=node, fingerprint=fingerprint)))
    assert code == 200 and len(body["queued"]) == 1, body


def settled(served: Served, node: str, *states: EntryState) -> Callable[[], Entry | None]:
    """A condition: the newest entry for ``node`` is in one of ``states``."""

    def check() -> Entry | None:
        mine = [e for e in entries(served.journal) if e.target == node]
        return mine[-1] if mine and mine[-1].state in states else None

    return check


def run_of(served: Served, run_id: str | None) -> RunRecord:
    [run] = [r for r in runs(served.journal) if r.id == run_id]
    return run


def steps(run: RunRecord) -> list[tuple[str, str, str]]:
    return [(s.phase, s.step_id, s.status) for s in run.steps]


def metric(served: Served, line_start: str) -> str:
    code, text = served.get("/metrics")
    assert code == 200
    return next((line for line in text.splitlines() if line.startswith(line_start)), "")


def test_remediation_runs_alone_only_when_runbook_and_policy_both_allow_it(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve("--automate", "stale-*", runbook=marker(tmp_path))
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.DONE, EntryState.ESCALATED), "web-1's run")
    assert (entry.state, entry.note) == (EntryState.DONE, "remediated automatically; verify is clean")
    assert (tmp_path / "web-1.fixed").exists()
    assert not (tmp_path / "web-1.also").exists(), "confirm: false is not 'automatic': it waited"
    run = run_of(served, entry.run_id)
    assert steps(run) == [
        ("detect", "look", "finding"),
        ("remediate", "fix", "ok"),
        ("remediate", "also", "not_asked"),
        ("verify", "look", "ok"),
    ]
    assert [(a.step_id, a.approved, a.decided_by) for a in run.approvals] == [("fix", True, "policy")]
    also = next(s for s in run.steps if s.step_id == "also")  # held back: nobody was asked, nobody refused
    assert (also.approval, also.message) == (
        "policy",
        f"not asked: not automatic, it waits for a human (cairn approve {entry.run_id})",
    )
    assert (
        metric(served, 'cairn_runs_total{result="remediated"}') == 'cairn_runs_total{result="remediated"} 1.0'
    )
    assert metric(served, 'cairn_step_seconds_count{phase="remediate"}').endswith(" 1.0"), "fix ran, also not"
    assert metric(served, 'cairn_step_seconds_count{phase="verify"}').endswith(" 1.0")


def test_without_the_policy_the_run_waits_and_a_human_declines(
    serve: Callable[..., Served], cairn: CairnRunner, tmp_path: Path
) -> None:
    served = serve(runbook=marker(tmp_path))  # the runbook says automatic; the operator did not
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.ESCALATED, EntryState.DONE), "web-1's run")
    assert entry.state is EntryState.ESCALATED
    assert entry.note == (
        "remediation waits for a human: the policy does not automate 'stale-marker' "
        "(cairn serve --automate stale-marker)"
    )
    assert steps(run_of(served, entry.run_id)) == [("detect", "look", "finding")]

    listed = cairn("queue", "--journal", str(served.journal))
    assert listed.returncode == 0
    assert entry.run_id is not None
    assert entry.run_id in listed.stdout and "ESCALATED" in listed.stdout
    assert "MarkerStale node=web-1" in listed.stdout
    assert "1 waiting for a human" in listed.stdout

    refused = cairn("approve", "20991231-nope", "--journal", str(served.journal))
    assert refused.returncode == 2
    assert "no alert-started run '20991231-nope'" in refused.stderr

    assert entry.run_id is not None
    declined = cairn("decline", entry.run_id, "--reason", "host is being retired",
                     "--journal", str(served.journal), "--json")  # fmt: skip
    assert declined.returncode == 0, declined.stderr
    assert json.loads(declined.stdout)["entry"]["state"] == "declined"
    [after] = entries(served.journal)
    me = local_identity(Via.CLI)  # who the decider is: this process's account, by its uid
    assert (after.state, after.note) == (EntryState.DECLINED, f"declined by {me.name}: host is being retired")
    again = cairn("approve", entry.run_id, "--journal", str(served.journal))
    assert again.returncode == 1 and "is not waiting for a human" in again.stderr
    assert not (tmp_path / "web-1.fixed").exists()


def test_the_breaker_escalates_and_an_approval_remediates_past_it(
    serve: Callable[..., Served], cairn: CairnRunner, tmp_path: Path
) -> None:
    served = serve(
        "--automate", "stale-marker", "--breaker", "1", "--cooldown", "0", runbook=marker(tmp_path)
    )
    fire(served, "web-1")
    first = wait_for(settled(served, "web-1", EntryState.DONE, EntryState.ESCALATED), "the first run")
    assert first.note == "remediated automatically; verify is clean"

    (tmp_path / "web-1.fixed").unlink()  # the pitfall comes back within the hour
    fire(served, "web-1")
    second = wait_for(
        lambda: (
            (e := settled(served, "web-1", EntryState.DONE, EntryState.ESCALATED)())
            and e.id != first.id
            and e
        ),
        "the second run",
    )
    assert second.state is EntryState.ESCALATED
    assert second.note.startswith(
        "remediation waits for a human: circuit breaker: 1 automatic remediations on web-1 in the last hour "
        "(at most 1); the next is allowed in "
    )
    assert not (tmp_path / "web-1.fixed").exists(), "the breaker held the fix back"
    assert steps(run_of(served, second.run_id))[:2] == [
        ("detect", "look", "finding"),
        ("remediate", "fix", "not_asked"),
    ]
    assert metric(served, 'cairn_guardrail_trips_total{guard="breaker"}').endswith(" 1.0")

    assert second.run_id is not None
    approved = cairn("approve", second.run_id, "--journal", str(served.journal))
    assert approved.returncode == 0, approved.stderr
    assert f"stale-marker on web-1 (queue entry {second.id}): approved (1 of 1 approval" in approved.stdout
    me = local_identity(Via.CLI)
    third = wait_for(
        lambda: (e := settled(served, "web-1", EntryState.DONE)()) and e.id == second.id and e,
        "the approved run",
    )
    assert third.note == f"remediated approved by {me.name}; verify is clean"
    assert (tmp_path / "web-1.fixed").exists()
    run = run_of(served, third.run_id)
    assert run.id != second.run_id, "an approval starts a new run that checks the host again first"
    assert run.trigger["approved_by"] == me.label
    assert [(a.step_id, a.approved, a.decided_by) for a in run.approvals] == [
        ("fix", True, me.label),
        ("also", True, me.label),
    ]
    history = cairn("history", "--alerts", "--journal", str(served.journal))
    assert history.returncode == 0
    assert history.stdout.count("alert MarkerStale node=web-1") == 3
    shown = cairn("show-run", run.id, "--journal", str(served.journal))
    assert f"approved by {me.name}" in shown.stdout and "alert     firing since" in shown.stdout


def test_the_fleet_budget_escalates_a_second_host_while_the_first_is_changed(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    hold = f"touch {tmp_path}/{{{{ target }}}}.started; while [ ! -e {tmp_path}/release ]; do sleep 0.05; done; touch {tmp_path}/{{{{ target }}}}.fixed"
    served = serve("--automate", "stale-marker", "--budget", "1", runbook=marker(tmp_path, hold))
    fire(served, "web-1")
    wait_for((tmp_path / "web-1.started").exists, "web-1's remediation to start")
    fire(served, "web-2")
    held = wait_for(settled(served, "web-2", EntryState.ESCALATED, EntryState.DONE), "web-2's run")
    assert held.state is EntryState.ESCALATED
    assert held.note == (
        "remediation waits for a human: fleet budget: 1 hosts are being remediated now (at most 1): web-1"
    )
    assert not (tmp_path / "web-2.started").exists()
    (tmp_path / "release").touch()
    done = wait_for(settled(served, "web-1", EntryState.DONE), "web-1's remediation to end")
    assert done.note == "remediated automatically; verify is clean"
    assert metric(served, 'cairn_guardrail_trips_total{guard="budget"}').endswith(" 1.0")


WAITING = """
id: slow-check
title: A check that waits
severity: warning
summary: The second detect step waits for a file.
triggers:
  - matchers: ['alertname = Slow']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: first
    title: Quick
    run: echo quick; touch {dir}/first-ran-$$
  - id: wait
    title: Wait for the go file
    run: touch {dir}/waiting; while [ ! -e {dir}/go ]; do sleep 0.05; done; echo fine
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_stopped_server_loses_nothing_and_the_next_resumes_the_run(
    serve: Callable[..., Served], tmp_path: Path, stop: signal.Signals
) -> None:
    runbook = WAITING.format(dir=tmp_path)
    served = serve("--grace", "0", "--workers", "1", runbook=runbook)
    code, body = served.post(
        webhook(alert(alertname="Slow", node="web-1"), alert(alertname="Slow", node="web-2"))
    )
    assert code == 200 and len(body["queued"]) == 2
    wait_for((tmp_path / "waiting").exists, "web-1's run to reach its second step (web-2 waits: one worker)")
    server = served.server_id
    served.process.send_signal(stop)
    served.process.wait(timeout=60)
    entry, waiting = entries(served.journal)
    assert (waiting.target, waiting.state, waiting.run_id) == ("web-2", EntryState.QUEUED, None)
    # kill -9: nobody could say anything; the run reads interrupted once its server's lease ran out.
    [first_run] = wait_for(
        lambda: [r for r in runs(served.journal) if r.status is RunStatus.INTERRUPTED],
        "the run to read interrupted",
    )
    if stop is signal.SIGTERM:
        assert entry.state is EntryState.QUEUED
        assert entry.note == (
            f"handed over at shutdown by {server}: run {first_run.id} was interrupted; "
            "another cairn serve resumes it without repeating finished steps"
        )
        assert servers(served.journal)[server]["state"] == "released"
    else:
        assert entry.state is EntryState.RUNNING, "kill -9: nobody could say anything"
        assert entry.holder == server
    assert entry.run_id == first_run.id

    (tmp_path / "go").touch()
    again = serve(runbook=runbook)
    done = wait_for(settled(again, "web-1", EntryState.DONE), "the resumed run")
    assert done.id == entry.id and done.note == "healthy: detect found nothing"
    resumed = run_of(again, done.run_id)
    assert resumed.trigger["resumes"] == first_run.id
    assert [(s.step_id, s.status, s.message.split(":")[0]) for s in resumed.steps] == [
        ("first", "ok", f"from run {first_run.id}"),
        ("wait", "ok", ""),
    ]
    after = wait_for(settled(again, "web-2", EntryState.DONE), "the queued entry's run")
    assert after.note == "healthy: detect found nothing"
    assert len(list(tmp_path.glob("first-ran-*"))) == 2, (
        "web-1's finished step was not run again; web-2's ran"
    )


def test_a_config_file_gives_the_same_settings(
    serve: Callable[..., Served], tmp_path: Path, cairn: CairnRunner
) -> None:
    config = tmp_path / "etc" / "serve.yml"
    config.parent.mkdir()
    config.write_text("policy:\n  automate: [stale-marker]\n  breaker: 2\ncooldown: 1m\n")
    served = serve("--config", str(config), runbook=marker(tmp_path))
    assert (
        "automates stale-marker · breaker 2/host/hour · budget 2 hosts at once" in served.stderr.read_text()
    )
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.DONE, EntryState.ESCALATED), "web-1's run")
    assert entry.note == "remediated automatically; verify is clean"

    config.write_text("listen: 127.0.0.1:x\nworkers: 0\npolicy:\n  automat: [x]\ncooldown: soon\n")
    result = cairn("serve", "--config", str(config), "--allow-no-token")
    assert result.returncode == 2
    assert "the config file has problems:" in result.stderr
    for line, problem in [
        (2, "[/workers] 0 is less than the minimum of 1"),
        (4, "[/policy/automat] unknown setting 'automat'; the settings are: automate, breaker, budget"),
        (5, "[/cooldown] 'soon' is not a duration"),
    ]:
        assert f"{config}:{line}:" in result.stderr and problem in result.stderr, result.stderr


@pytest.mark.lab
def test_a_kubelet_cpu_alert_drops_caches_on_the_lab_when_the_policy_automates_it(
    serve: Callable[..., Served], lab: LabStarter
) -> None:
    """The bundled kubelet-cpu-memcg runbook, its lab and an alert: the whole automatic path."""
    memcg = lab("kubelet-cpu-memcg")
    served = serve(
        "--automate",
        "kubelet-cpu-memcg",
        "--inputs",
        f"kubelet-cpu-memcg:@{memcg.info['inputs']}",
        "--inputs",
        "kubelet-cpu-memcg:cpu_sample=200ms",
        hosts=memcg.inventory,
    )
    code, body = served.post(
        webhook(alert(alertname="KubeletHighCPU", node="memcg-node", severity="warning"))
    )
    assert code == 200 and body["queued"], body
    entry = wait_for(
        settled(served, "memcg-node", EntryState.DONE, EntryState.ESCALATED), "the run", timeout=120
    )
    assert (entry.state, entry.note) == (EntryState.DONE, "remediated automatically; verify is clean")
    run = run_of(served, entry.run_id)
    by_step = {(s.phase, s.step_id): s for s in run.steps}
    assert by_step[("detect", "memory_stat_read")].status == "finding"
    assert by_step[("remediate", "drop_caches")].message == (
        f"wrote 2 to {memcg.inputs['drop_caches_path']}: memory cgroups 5000 → 14 (4986 freed)"
    )
    assert by_step[("remediate", "drop_caches")].approval == "policy"
    manual = by_step[("remediate", "cadvisor_root_stats")]
    assert (manual.status, manual.message) == (
        "not_asked",
        "not asked: a manual step needs a human at a terminal (`cairn run` or the TUI)",
    )
    assert by_step[("verify", "memory_stat_read")].status == "ok"


def test_a_check_that_asks_for_a_human_is_not_run_by_an_alert(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    runbook = marker(tmp_path).replace(
        "    expect: out == 'fixed'\n", "    expect: out == 'fixed'\n    confirm: true\n", 1
    )
    served = serve("--automate", "stale-marker", runbook=runbook)
    fire(served, "web-1")
    entry = wait_for(settled(served, "web-1", EntryState.DONE, EntryState.ESCALATED), "web-1's run")
    assert entry.note == (
        "failed: detect could not decide: look: not asked: the runbook asks a human before this check "
        "(confirm: true); an alert-started run has no one to ask"
    )
    assert not (tmp_path / "web-1.fixed").exists()
