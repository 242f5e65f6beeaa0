"""The replay engine: a case played through the real runner, answered from its recording only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.core.loader import check_text, runbook_files
from engine.core.model import HostOutcome, Runbook, StepStatus
from engine.core.preflight import probe_command, probed_programs
from engine.core.replay.case import Case, case_files, read_case
from engine.core.replay.compare import changes, observed
from engine.core.replay.play import Played, play

RUNBOOK = """\
id: disk
title: A disk that fills
severity: warning
summary: s
requires: [df]
inputs:
  max_use: {type: integer, default: 90}
detect:
  - id: use
    title: How full the disk is
    run: df --output=pcent / | tail -1
    parse: {regex: '^ *(?P<pct>[0-9]+)%$'}
    expect: out[0].pct | int < inputs.max_use
    report: "{{ out[0].pct }} % used (limit {{ inputs.max_use }} %)"
  - id: scan
    title: A scan that may hang
    requires: [find]
    run: find / -xdev -size +1G
    timeout: 5s
    on_timeout: finding
remediate:
  - id: clean
    title: Clean the journal
    run: journalctl --vacuum-size=100M
"""


def runbook(text: str = RUNBOOK) -> Runbook:
    loaded = check_text(text, "disk.yaml")
    assert loaded.runbook is not None, loaded.problems
    return loaded.runbook


def case(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "disk.tests"
    folder.mkdir(exist_ok=True)
    path = folder / "case.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def played(tmp_path: Path, text: str, rb: Runbook | None = None) -> tuple[Case, Played]:
    read = read_case(case(tmp_path, text))
    assert read.case is not None, read.problems
    return read.case, play(read.case, rb or runbook())


def test_hosts_in_different_states_conclude_as_a_run_would(tmp_path: Path) -> None:
    _, result = played(
        tmp_path,
        """\
        case: four hosts
        runbook: disk
        hosts:
          full:
            steps:
              detect.use: {stdout: " 97%\\n"}
              detect.scan: {hang: true, stdout: "/var/log/huge\\n"}
              remediate.clean: {stdout: "Vacuuming done\\n"}
              verify.use: {stdout: " 40%\\n"}
              verify.scan: {stdout: ""}
          fine:
            steps:
              detect.use: {stdout: " 12%\\n"}
              detect.scan: {stdout: ""}
          gone:
            unreachable: "connection refused"
          bare:
            missing: [find]
            steps:
              detect.use: {stdout: " 12%\\n"}
        expect: {}
        """,
    )
    hosts = {h.host: h for h in result.report.hosts}
    assert hosts["full"].outcome is HostOutcome.REMEDIATED
    scan = next(r for r in hosts["full"].results if r.step_id == "scan")
    assert scan.status is StepStatus.FINDING and scan.message.startswith(
        "no answer within 5.0s: the hang is the symptom"
    )
    assert hosts["fine"].outcome is HostOutcome.HEALTHY
    assert hosts["gone"].outcome is HostOutcome.FAILED and "connection refused" in hosts["gone"].reason
    # A check whose program is missing cannot look: the host is failed, never healthy.
    assert hosts["bare"].outcome is HostOutcome.FAILED
    not_run = next(r for r in hosts["bare"].results if r.step_id == "scan")
    assert not_run.status is StepStatus.NOT_RUN and "find is not installed on bare" in not_run.message
    assert result.unrecorded == ()
    assert result.report.exit_code == 2


def test_partial_output_is_an_error_and_a_declined_remediation_leaves_it_present(tmp_path: Path) -> None:
    _, result = played(
        tmp_path,
        """\
        case: cut short
        runbook: disk
        hosts:
          cut:
            steps:
              detect.use: {stdout: " 9", rc: 141}
              detect.scan: {stdout: ""}
          declined:
            decisions: {remediate.clean: decline}
            steps:
              detect.use: {stdout: " 97%\\n"}
              detect.scan: {stdout: ""}
        expect: {}
        """,
    )
    hosts = {h.host: h for h in result.report.hosts}
    assert hosts["cut"].outcome is HostOutcome.FAILED
    assert next(r for r in hosts["cut"].results if r.step_id == "use").message.startswith("exit code 141")
    assert hosts["declined"].outcome is HostOutcome.PRESENT
    clean = next(r for r in hosts["declined"].results if r.step_id == "clean")
    assert clean.status is StepStatus.DECLINED


def test_a_new_version_is_compared_with_the_recording_and_never_guesses(tmp_path: Path) -> None:
    the_case, before = played(
        tmp_path,
        """\
        case: healthy at 85 %
        runbook: disk
        hosts:
          web:
            steps:
              detect.use: {stdout: " 85%\\n", command: "df --output=pcent / | tail -1"}
              detect.scan: {stdout: ""}
        expect: {}
        """,
    )
    recorded = observed(before.report, before.decided)
    stricter = runbook(RUNBOOK.replace("default: 90", "default: 80"))
    after = play(the_case, stricter)
    found = changes(recorded, observed(after.report, after.decided), after.unrecorded)
    texts = [c.text for c in found]
    assert texts[:2] == [
        "outcome: healthy → failed, resting on steps never recorded (below): not a conclusion",
        "detect.use: ok: 85 % used (limit 90 %)  →  finding: 85 % used (limit 80 %)",
    ]
    assert "remediate.clean would now run (it did not in the recorded run)" in texts
    assert any(c.what == "unrecorded" and c.key == "remediate.clean" for c in found)
    # Another command for the same step: the recorded output is not used for it.
    other = play(the_case, runbook(RUNBOOK.replace("df --output=pcent /", "df --output=pcent /var")))
    assert [(u.key, u.why) for u in other.unrecorded] == [("detect.use", "its command changed")]


def test_probed_programs_read_back_what_the_probe_asks() -> None:
    assert probed_programs(probe_command(["df", "find", "a b"])) == ["df", "find", "a b"]
    assert probed_programs("echo hello") == []


def test_case_folders_are_never_read_as_runbooks(tmp_path: Path) -> None:
    (tmp_path / "disk.yaml").write_text(RUNBOOK, encoding="utf-8")
    path = case(tmp_path, "case: c\nrunbook: disk\nhosts: {web: {}}\nexpect: {}\n")
    assert runbook_files([tmp_path]) == [tmp_path / "disk.yaml"]
    assert case_files([tmp_path]) == [path]
    assert case_files([tmp_path / "disk.yaml"]) == [path]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "1:1"),
        ("case: c\nrunbook: disk\nhosts: {}\nexpect: {}\n", "3:8"),
        ("case: c\nrunbook: disk\nhosts: {web: {}}\nexpect: {hosts: {db: {outcome: present}}}\n", "4:18"),
    ],
)
def test_a_broken_case_says_where(tmp_path: Path, text: str, where: str) -> None:
    read = read_case(case(tmp_path, text))
    assert read.case is None
    assert str(read.problems[0]).split(": ")[0].endswith(f"case.yaml:{where}")
