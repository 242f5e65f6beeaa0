"""`cairn test`, `cairn record` and `cairn replay` through the real command.

A real lab run (kubelet-cpu-memcg, whose detect threshold is an input) is journaled,
recorded into a case, tested and replayed: against the same runbook nothing differs;
against a copy whose threshold moved, the finding changes and the remediation would no
longer run. Small runbooks written by the tests cover what a lab cannot show quickly:
broken case files, steps never recorded, secrets, alerts.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, CairnRunner, LabStarter, RunbookDir

MEMCG = "kubelet-cpu-memcg"
SIX = (
    "branch-cleanup",
    "dual-platform-deploy",
    "ip-whitelist-breakage",
    "kubelet-cpu-memcg",
    "node-notready-zombie-shim",
    "platform-adoption",
)


def runbook_copy(tmp_path: Path, runbook_id: str, old: str, new: str) -> Path:
    """A copy of a bundled runbook (with the playbooks it ships) with ``old`` replaced by ``new`` once."""
    folder = tmp_path / "edited"
    folder.mkdir(exist_ok=True)
    shutil.copytree(REPO / "runbooks" / "playbooks", folder / "playbooks", dirs_exist_ok=True)
    text = (REPO / "runbooks" / f"{runbook_id}.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {runbook_id}"
    target = folder / f"{runbook_id}.yaml"
    target.write_text(text.replace(old, new), encoding="utf-8")
    return target


SLOW_READ = "  slow_read:\n    type: duration\n    default: 1s\n"
SLOW_READ_3S = SLOW_READ.replace("1s", "3s")


# --------------------------------------------------------------------------- the bundled runbooks


@pytest.mark.cli
def test_the_bundled_runbooks_cases_pass(cairn: CairnRunner) -> None:
    done = cairn("test", str(REPO / "runbooks"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    cases = json.loads(done.stdout)["cases"]
    assert cases and all(c["state"] == "passed" for c in cases)
    for runbook_id in SIX:
        folder = REPO / "runbooks" / f"{runbook_id}.tests"
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        # the pitfall present, healthy, a check that cannot look, and at least one edge case
        assert {"present", "healthy"} <= set(names), (runbook_id, names)
        assert len(names) >= 4, (runbook_id, names)
        assert sum(c["case"].startswith(f"{runbook_id}/") for c in cases) == len(names)
        present = yaml.safe_load((folder / "present.yaml").read_text(encoding="utf-8"))
        assert present["recorded_from"].startswith("run "), "the present case is recorded from its lab"


@pytest.mark.cli
def test_a_threshold_moved_in_a_copy_fails_its_case_with_a_readable_diff(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    edited = runbook_copy(tmp_path, MEMCG, SLOW_READ, SLOW_READ_3S)
    present = REPO / "runbooks" / f"{MEMCG}.tests" / "present.yaml"
    done = cairn("test", "--runbook", str(edited), str(present))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"FAIL   {MEMCG}/present" in out
    assert "--- expected" in out and "+++ got" in out
    diff = [re.sub(r"^([-+])\s+", r"\1", line.strip()) for line in out.splitlines()]  # "-outcome: …"
    assert "-outcome: remediated" in diff and "+outcome: healthy" in diff
    assert "-status: finding" in diff and "+status: ok" in diff
    assert "(bug threshold 3 s)" in out
    assert "1 case: 1 failed" in out


# --------------------------------------------------------------------------- a lab run, recorded and replayed


@pytest.mark.lab
@pytest.mark.cli
def test_a_lab_run_recorded_tests_and_replays_as_it_ran(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    memcg = lab(MEMCG)
    ran = cairn(*memcg.run_args("--yes", "-e", "cpu_sample=200ms"))
    assert ran.returncode == 0, ran.stdout + ran.stderr

    case = tmp_path / "case.yaml"
    recorded = cairn("record", "last", "-o", str(case), "--name", "zombies on the lab")
    assert recorded.returncode == 0, recorded.stderr
    assert f"wrote {case}" in recorded.stdout
    data = yaml.safe_load(case.read_text(encoding="utf-8"))
    assert data["case"] == "zombies on the lab" and data["runbook"] == MEMCG
    read = data["hosts"]["memcg-node"]["steps"]["detect.memory_stat_read"]
    assert read["stdout"].startswith("read ") and "timeout 30 cat" in read["command"]
    assert data["expect"]["exit"] == 0
    assert data["expect"]["hosts"]["memcg-node"]["outcome"] == "remediated"
    assert data["expect"]["hosts"]["memcg-node"]["remediation"] == ["drop_caches"]
    assert "slow_read" not in data.get("inputs", {}), "inputs equal to the defaults are not pinned"

    tested = cairn("test", "--runbook", str(REPO / "runbooks" / f"{MEMCG}.yaml"), str(case))
    assert tested.returncode == 0, tested.stdout
    assert f"ok     {MEMCG}/case — zombies on the lab" in tested.stdout

    same = cairn("replay", "last")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "replayed against the same runbook text it ran" in same.stdout
    assert "same decisions on every host (memcg-node)" in same.stdout

    edited = runbook_copy(tmp_path, MEMCG, SLOW_READ, SLOW_READ_3S)
    moved = cairn("replay", "last", "--runbook", str(edited))
    assert moved.returncode == 1, moved.stdout + moved.stderr
    lines = moved.stdout.splitlines()
    assert "  outcome: remediated → healthy (detect found nothing)" in lines
    finding = next(line for line in lines if line.startswith("  detect.memory_stat_read:"))
    assert "finding:" in finding and "slow, at or above the 1 s bug threshold" in finding
    assert "→  ok:" in finding and "(bug threshold 3 s)" in finding
    assert "  remediate.drop_caches would no longer run (it ran in the recorded run)" in lines

    as_json = json.loads(cairn("replay", "last", "--runbook", str(edited), "--json").stdout)
    assert not as_json["same"] and not as_json["same_text"]
    assert {"host": "memcg-node", "what": "remediation", "step": "remediate.drop_caches"}.items() <= next(
        c for c in as_json["changes"] if c["what"] == "remediation"
    ).items()

    # A step whose command now differs is not answered from the recording: never guessed.
    timeout_moved = runbook_copy(
        tmp_path,
        MEMCG,
        "  read_timeout:\n    type: duration\n    default: 30s\n",
        "  read_timeout:\n    type: duration\n    default: 20s\n",
    )
    changed = cairn("replay", "last", "--runbook", str(timeout_moved))
    assert changed.returncode == 1
    assert (
        "detect.memory_stat_read: the new version runs it and the recording has no output for it (its command changed)"
        in changed.stdout
    )
    stale = cairn("test", "--runbook", str(timeout_moved), str(case))
    assert stale.returncode == 1
    assert "memcg-node: detect.memory_stat_read was never recorded (its command changed)" in stale.stdout


@pytest.mark.cli
def test_record_refuses_what_it_cannot_record(cairn: CairnRunner, runbook_dir: RunbookDir) -> None:
    folder = runbook_dir(LOOK)
    dry = cairn("run", "look", "--runbooks", str(folder), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    refused = cairn("record", "last")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("was a dry run: its remediation never ran; record a real run")
    assert "Traceback" not in refused.stderr
    unknown = cairn("record", "no-such-run")
    assert unknown.returncode == 2 and "no-such-run" in unknown.stderr and "Traceback" not in unknown.stderr
    replayed = cairn("replay", "no-such-run")
    assert replayed.returncode == 2 and "Traceback" not in replayed.stderr


# --------------------------------------------------------------------------- small runbooks


LOOK = """\
    id: look
    title: Count the lines of a file
    severity: warning
    summary: More than `max_lines` lines in the file is the pitfall.
    inputs:
      file: {type: string, default: /etc/hostname}
      max_lines: {type: integer, default: 3}
    detect:
      - id: count
        title: Count the lines
        run: wc -l < {{ inputs.file }}
        parse: {regex: '^(?P<n>[0-9]+)$'}
        expect: out[0].n | int <= inputs.max_lines
        report: "{{ out[0].n }} lines (at most {{ inputs.max_lines }})"
    remediate:
      - id: trim
        title: Keep the first lines
        run: sed -i '{{ inputs.max_lines + 1 }},$d' {{ inputs.file }}
"""


def write_case(folder: Path, runbook_id: str, name: str, text: str) -> Path:
    tests = folder / f"{runbook_id}.tests"
    tests.mkdir(exist_ok=True)
    path = tests / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.mark.cli
def test_a_broken_case_is_exit_2_with_file_line_and_column(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(LOOK)
    broken = write_case(
        folder,
        "look",
        "broken",
        """\
        case: a typo
        runbook: look
        hosts:
          web-1:
            steps:
              detect.count: {stdout: "9\\n", rc: zero}
        expect: {exit: 1}
        """,
    )
    other = write_case(
        folder,
        "look",
        "other",
        """\
        case: for another runbook
        runbook: not-look
        hosts:
          web-1: {}
        expect: {exit: 0}
        """,
    )
    done = cairn("test", str(folder))
    assert done.returncode == 2, done.stdout
    assert f"{broken}:6:41: [/hosts/web-1/steps/detect.count/rc]" in done.stdout
    assert f"{other}:2:10: [/runbook] the case is for runbook 'not-look'" in done.stdout
    assert "2 broken" in done.stdout


@pytest.mark.cli
def test_a_case_passes_fails_and_names_steps_never_recorded(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(LOOK)
    write_case(
        folder,
        "look",
        "too-long",
        """\
        case: nine lines
        about: The file has grown past three lines.
        runbook: look
        phase: detect
        hosts:
          web-1:
            steps:
              detect.count: {stdout: "9\\n"}
        expect:
          exit: 1
          hosts:
            web-1:
              outcome: present
              steps:
                detect.count: {status: finding, report: 9 lines (at most 3)}
        """,
    )
    write_case(
        folder,
        "look",
        "trimmed",
        """\
        case: trimmed, and verify was never recorded
        runbook: look
        hosts:
          web-1:
            steps:
              detect.count: {stdout: "9\\n"}
              remediate.trim: {}
        expect: {exit: 0}
        """,
    )
    done = cairn("test", str(folder / "look.yaml"))
    assert done.returncode == 1, done.stdout
    assert "ok     look/too-long — nine lines" in done.stdout
    assert "FAIL   look/trimmed" in done.stdout
    assert "web-1: verify.count was never recorded (never recorded): no output to replay" in done.stdout
    assert "-exit: 0" in done.stdout and "+exit: 2" in done.stdout
    assert "2 cases: 1 passed, 1 failed" in done.stdout


@pytest.mark.cli
def test_a_recorded_secret_stays_redacted(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path
) -> None:
    folder = runbook_dir(
        """\
        id: secretive
        title: A step that prints a secret
        severity: info
        summary: s
        inputs:
          token: {type: string, secret: true}
        detect:
          - id: show
            title: show
            run: echo "token is $CAIRN_SECRET_TOKEN"
        """
    )
    ran = cairn("run", "secretive", "--runbooks", str(folder), "-e", "token=hunter2-zz")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    case = tmp_path / "secret.yaml"
    assert cairn("record", "last", "-o", str(case)).returncode == 0
    text = case.read_text(encoding="utf-8")
    assert "hunter2-zz" not in text
    data = yaml.safe_load(text)
    assert data["inputs"] == {"token": "***"}
    assert data["hosts"]["localhost"]["steps"]["detect.show"]["stdout"] == "token is ***\n"
    tested = cairn("test", "--runbook", str(folder / "secretive.yaml"), str(case))
    assert tested.returncode == 0, tested.stdout


@pytest.mark.cli
def test_an_alert_case_renders_the_alert_and_runs_unattended(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(
        """\
        id: alerted
        title: A node named by its alert
        severity: warning
        summary: s
        triggers:
          - matchers: ['alertname = NodeSlow']
            target: "{{ alert.labels.node }}"
        detect:
          - id: ping
            title: ping the node the alert names
            run: echo {{ alert.labels.node }}
            expect: "'slow' not in stdout"
            report: "{{ stdout | trim }}"
        remediate:
          - id: restart
            title: restart
            confirm: false
            automatic: true
            run: echo restarted {{ alert.labels.node }}
        """
    )
    write_case(
        folder,
        "alerted",
        "declined",
        """\
        case: the alert's node, remediation declined by the approver
        runbook: alerted
        alert: {status: firing, labels: {alertname: NodeSlow, node: node-7}}
        hosts:
          node-7:
            decisions: {remediate.restart: decline}
            steps:
              detect.ping: {command: echo node-7, stdout: "node-7 slow\\n"}
        expect:
          exit: 1
          hosts:
            node-7:
              outcome: present
              steps:
                detect.ping: {status: finding, report: node-7 slow}
                remediate.restart: declined
              remediation: []
        """,
    )
    done = cairn("test", str(folder))
    assert done.returncode == 0, done.stdout
    assert "1 case: 1 passed" in done.stdout
