"""Preflight through the real `cairn plan` and `cairn run`: the programs a runbook needs, asked of each host
before anything runs there; a check that cannot look is an error, and a remediation that cannot finish does
not start."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.lab.ssh_fleet import SshFleet
from tests.conftest import CairnRunner

pytestmark = pytest.mark.cli

TOOLS = """
id: tools
title: A runbook that needs programs
severity: warning
summary: s
requires: [bash]
inputs:
  marker: {type: string}
  counter: {type: string, default: wc}
  fixer: {type: string, default: no-such-fixer-program}
  also_fix: {type: boolean, default: true}
detect:
  - id: marker_absent
    title: the marker is absent
    run: test ! -e {{ inputs.marker }}
    exit_codes: [0, 1]
    expect: rc == 0
    report: "{{ 'marker present' if rc else 'no marker' }}"
  - id: count
    title: count with a program an input names
    requires: ["{{ inputs.counter }}"]
    run: echo 1 | {{ inputs.counter }} -l
    parse: number
remediate:
  - id: remove_marker
    title: Remove the marker
    run: rm -f {{ inputs.marker }}
  - id: fix
    title: Fix with a program the host may lack
    when: inputs.also_fix
    requires: ["{{ inputs.fixer }}"]
    run: "{{ inputs.fixer }} --all"
"""


@pytest.fixture
def tools(runbook_dir: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    marker.write_text("x", encoding="utf-8")
    return runbook_dir(TOOLS), marker


def test_a_remediation_that_needs_a_missing_program_does_not_start(
    cairn: CairnRunner, tools: tuple[Path, Path]
) -> None:
    folder, marker = tools
    done = cairn("run", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "--yes")
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    assert (
        "── localhost · preflight\n   PROBLEM: no-such-fixer-program not found: remediate fix cannot run"
        in out
    )
    assert marker.exists(), "nothing was changed: remove_marker, the first step, did not run either"
    assert "remove_marker" not in out
    assert (
        "found by marker_absent; remediation cannot run on localhost (fix: no-such-fixer-program is not "
        "installed on localhost); nothing was changed"
    ) in out

    report = json.loads(
        cairn("run", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "--yes", "--json").stdout
    )
    assert report["exit_code"] == 2
    assert [r["phase"] for r in report["hosts"][0]["results"]] == ["detect", "detect"]


def test_a_step_whose_when_is_false_does_not_hold_the_remediation_back(
    cairn: CairnRunner, tools: tuple[Path, Path]
) -> None:
    folder, marker = tools
    done = cairn(
        "run", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "-e", "also_fix=false",
        "--yes", "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["exit_code"] == 0, done.stdout
    assert report["hosts"][0]["outcome"] == "remediated"
    assert not marker.exists()


def test_a_check_whose_program_is_missing_is_an_error_not_healthy(
    cairn: CairnRunner, tools: tuple[Path, Path]
) -> None:
    folder, marker = tools
    marker.unlink()
    done = cairn(
        "run", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "-e", "counter=no-such-counter",
        "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["exit_code"] == 2
    count = next(r for r in report["hosts"][0]["results"] if r["step_id"] == "count")
    assert (count["status"], count["message"]) == (
        "not_run",
        "not run: no-such-counter is not installed on localhost",
    )
    assert report["hosts"][0]["reason"].startswith("detect could not decide: count: not run:")


def test_plan_says_per_host_what_is_missing_and_what_it_stops(
    cairn: CairnRunner, tools: tuple[Path, Path]
) -> None:
    folder, marker = tools
    done = cairn("plan", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "-e", "fixer=crontab")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Plan for tools on 1 host — nothing is run but the preflight probe")
    assert "  preflight: all 3 programs found" in done.stdout
    missing = cairn("plan", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "--json")
    preflight = json.loads(missing.stdout)["hosts"][0]["preflight"]
    assert preflight["ok"] is False
    assert preflight["missing"] == ["no-such-fixer-program"]
    assert preflight["blocked_steps"] == {"fix": ["no-such-fixer-program is not installed on localhost"]}
    assert preflight["found"]["wc"].endswith("/wc")
    offline = cairn("plan", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "--no-preflight")
    assert "preflight" not in offline.stdout


def test_the_package_is_named_for_known_programs(cairn: CairnRunner, tools: tuple[Path, Path]) -> None:
    folder, marker = tools
    done = cairn(
        "run", "tools", "--runbooks", str(folder), "-e", f"marker={marker}", "-e", "fixer=crictl", "--yes",
    )  # fmt: skip
    assert "crictl is not installed on localhost (not a Debian package: cri-tools" in done.stdout


def test_requires_is_validated(cairn: CairnRunner, runbook_dir: Callable[..., Path]) -> None:
    folder = runbook_dir(
        TOOLS.replace("requires: [bash]", "requires: [bash, 'two words', '{{ steps.count.out }}']")
    )
    done = cairn("validate", str(folder))
    assert done.returncode == 1
    assert "[/requires/1]" in done.stdout
    assert "[/requires/2] template uses unknown variable 'steps'" in done.stdout


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_the_host_is_asked_not_this_machine(
    cairn: CairnRunner, runbook_dir: Callable[..., Path], ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    inventory = ssh_fleet.write_inventory(
        tmp_path / "fleet.yml", host_vars={"host03": {"tool": "/nonexistent/bin/tool"}}
    )
    folder = runbook_dir(
        """
        id: remote-tools
        title: t
        severity: info
        summary: s
        targets: fleet
        detect:
          - id: tool_runs
            title: the host's tool runs
            requires: ["{{ vars.tool | default('true') }}"]
            run: "{{ vars.tool | default('true') }}"
        """
    )
    common = ["--runbooks", str(folder), "-i", str(inventory), "--known-hosts", str(ssh_fleet.known_hosts)]
    plan = json.loads(cairn("plan", "remote-tools", *common, "-l", "host02:host03", "--json").stdout)
    by_host = {h["host"]: h["preflight"] for h in plan["hosts"]}
    assert by_host["host02"]["ok"] is True
    assert by_host["host03"]["missing"] == ["/nonexistent/bin/tool"]
    run = json.loads(cairn("run", "remote-tools", *common, "-l", "host02:host03", "--json").stdout)
    outcomes = {h["host"]: (h["outcome"], h["results"][0]["message"]) for h in run["hosts"]}
    assert outcomes["host02"][0] == "healthy"
    assert outcomes["host03"] == ("failed", "not run: /nonexistent/bin/tool is not installed on host03")


def test_a_missing_program_nobody_declared_says_how_to_have_it_checked_first(
    cairn: CairnRunner, runbook_dir: Callable[..., Path]
) -> None:
    folder = runbook_dir(
        """
        id: undeclared
        title: t
        severity: info
        summary: s
        detect:
          - {id: look, title: look, run: no-such-program-at-all --version}
        """
    )
    done = cairn("run", "undeclared", "--runbooks", str(folder))
    assert done.returncode == 2
    assert (
        "no-such-program-at-all: command not found (a program this step runs is not installed there"
        in done.stdout
    )
