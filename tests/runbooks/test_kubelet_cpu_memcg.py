"""kubelet-cpu-memcg end to end against its practice lab (engine/lab/memcg.py).

The lab's memory.stat is a FIFO answered after 0.4 ms per memory cgroup (2 s with its
4,986 zombies), its /proc/cgroups counts 5,000 memory cgroups for 14 directories, and
writing 2 to its drop_caches FIFO frees the zombies. The real /proc/sys/vm/drop_caches
is never written: every path the runbook touches comes from the lab's inputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, CairnRunner, Lab, LabStarter
from tests.runbooks.reports import report_of, results

RUNBOOK = "kubelet-cpu-memcg"
QUICK_CPU = ("-e", "cpu_sample=200ms")  # where the CPU figures are not what the test is about


def memory_cgroups(lab: Lab) -> int:
    """The memory line of the lab's /proc/cgroups."""
    for line in Path(lab.inputs["proc_cgroups"]).read_text(encoding="ascii").splitlines():
        fields = line.split()
        if fields[0] == "memory":
            return int(fields[2])
    raise AssertionError("no memory line in the lab's proc/cgroups")


def lab_pid(lab: Lab, name: str) -> int:
    return next(int(p["pid"]) for p in lab.info["processes"] if p["name"] == name)


@pytest.mark.lab
@pytest.mark.cli
def test_detect_diagnose_remediate_verify_on_the_lab(cairn: CairnRunner, lab: LabStarter) -> None:
    memcg = lab(RUNBOOK)
    inputs = memcg.inputs
    assert memory_cgroups(memcg) == 5000

    # 1. Detect and diagnose for real; a dry run shows the remediation, the kernel upgrade offered.
    done = cairn(*memcg.run_args("--dry-run", "-e", "upgrade_kernel=true", "--json"))
    assert done.returncode == 1, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "memory_stat_read": "finding",
        "kubelet_cpu": "ok",
        "system_cpu": "ok",
    }
    read = detect["memory_stat_read"]
    assert len(read["out"]) == 1
    assert read["out"][0] | {"ms": "-"} == {
        "state": "read",
        "ms": "-",
        "layout": "v1",
        "path": inputs["memory_stat"],
    }
    assert int(read["out"][0]["ms"]) >= 1000  # the lab answers after 2 s: above the 1 s threshold
    assert read["message"].startswith(f"{inputs['memory_stat']} (v1) read in ")
    assert read["message"].endswith("s: slow, at or above the 1 s bug threshold")
    kubelet = lab_pid(memcg, "kubelet")
    assert detect["kubelet_cpu"]["out"][0]["pid"] == str(kubelet)
    assert detect["kubelet_cpu"]["message"].startswith(f"kubelet (pid {kubelet}) used ")
    assert re.fullmatch(
        r"host CPU over 0\.5 s on \d+ CPUs: [\d.]+ % busy; [\d.]+ % in the kernel \(system \+ irq \+ softirq\), "
        r"[\d.]+ % of it softirq \(100 % = all CPUs\)|no CPU time was accounted .*",
        detect["system_cpu"]["message"],
    ), detect["system_cpu"]["message"]

    diagnose = results(report, "diagnose")
    assert diagnose["kernel_release"]["status"] == "finding"
    assert diagnose["kernel_release"]["out"] == "4.19.91-18.el7.x86_64"
    assert diagnose["kernel_release"]["message"] == (
        "kernel 4.19.91-18.el7.x86_64 is not fixed: older than 4.19.113-300.el7 (its series' fix) and 5.2 (upstream)"
    )
    assert diagnose["memory_cgroups"]["status"] == "finding"
    assert diagnose["memory_cgroups"]["out"] == [{"kernel": "5000", "directories": "14", "zombies": "4986"}]
    assert diagnose["memory_cgroups"]["message"].endswith(": 4986 zombie cgroups (limit 1000)")

    remediate = results(report, "remediate")
    assert {k: v["status"] for k, v in remediate.items()} == {
        "drop_caches": "skipped",
        "upgrade_kernel": "skipped",
        "cadvisor_root_stats": "skipped",
    }
    assert f"echo 2 > {inputs['drop_caches_path']} || exit 2" in remediate["drop_caches"]["command"]
    assert remediate["upgrade_kernel"]["command"] == "ansible-playbook playbooks/kernel-upgrade.yml (become)"
    assert "--disable_root_cgroup_stats=true" in remediate["cadvisor_root_stats"]["command"]
    assert results(report, "verify") == {}
    assert memory_cgroups(memcg) == 5000  # a dry run changes nothing

    # 2. --yes: drop_caches (the kernel upgrade stays off by default), and verify is clean.
    done = cairn(*memcg.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "remediated"
    remediate = results(report, "remediate")
    assert remediate["drop_caches"]["status"] == "ok"
    assert remediate["drop_caches"]["out"] == [{"before": "5000", "after": "14"}]
    assert remediate["drop_caches"]["message"] == (
        f"wrote 2 to {inputs['drop_caches_path']}: memory cgroups 5000 → 14 (4986 freed)"
    )
    assert remediate["upgrade_kernel"]["status"] == "skipped"
    assert remediate["upgrade_kernel"]["message"].startswith("when is false: inputs.upgrade_kernel")
    assert remediate["cadvisor_root_stats"]["status"] == "not_asked"  # --yes never fakes a manual step
    verify = results(report, "verify")
    assert {k: v["status"] for k, v in verify.items()} == {
        "memory_stat_read": "ok",
        "kubelet_cpu": "ok",
        "system_cpu": "ok",
    }
    assert verify["memory_stat_read"]["message"].endswith("s (bug threshold 1 s)")
    assert memory_cgroups(memcg) == 14  # the lab's kernel really freed the zombies

    # 3. Detect again on the now-healthy lab: nothing to find.
    done = cairn(*memcg.run_args("--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "healthy"
    assert results(report, "detect")["memory_stat_read"]["status"] == "ok"
    assert results(report, "diagnose") == {}
    assert results(report, "remediate") == {}


@pytest.mark.lab
@pytest.mark.cli
def test_healthy_lab_has_no_finding(cairn: CairnRunner, lab: LabStarter) -> None:
    memcg = lab(RUNBOOK, healthy=True)
    assert memory_cgroups(memcg) == 14
    done = cairn(*memcg.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "healthy"
    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "memory_stat_read": "ok",
        "kubelet_cpu": "ok",
        "system_cpu": "ok",
    }
    assert detect["memory_stat_read"]["out"][0]["state"] == "read"
    assert [r["phase"] for r in report["hosts"][0]["results"]] == ["detect"] * 3
    assert memory_cgroups(memcg) == 14


@pytest.mark.lab
@pytest.mark.cli
def test_v2_memory_stat_is_read_when_the_v1_file_does_not_exist(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    memcg = lab(RUNBOOK)
    v2 = memcg.inputs["memory_stat"]  # the lab's slow file, given as the v2 path
    absent = tmp_path / "no-v1" / "memory.stat"
    done = cairn(
        *memcg.run_args(
            "--phase",
            "detect",
            "--json",
            "-e",
            f"memory_stat={absent}",
            "-e",
            f"memory_stat_v2={v2}",
            *QUICK_CPU,
        )
    )
    assert done.returncode == 1, done.stdout + done.stderr
    read = results(report_of(done), "detect")["memory_stat_read"]
    assert read["status"] == "finding"
    assert read["out"][0]["layout"] == "v2"
    assert read["out"][0]["path"] == v2
    assert read["message"].startswith(f"{v2} (v2) read in ")


@pytest.mark.cli
def test_a_read_that_hangs_is_a_finding(cairn: CairnRunner, tmp_path: Path) -> None:
    """A memory.stat nobody answers (a FIFO without a writer): the hang, stopped at the bound, is the finding."""
    hanging = tmp_path / "memory.stat"
    os.mkfifo(hanging)
    done = cairn(
        "run",
        RUNBOOK,
        "--phase",
        "detect",
        "--json",
        "-e",
        f"memory_stat={hanging}",
        "-e",
        "read_timeout=1s",
        "-e",
        f"kubelet_pattern=^{tmp_path}/no-such-kubelet( |$)",
        *QUICK_CPU,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    read = detect["memory_stat_read"]
    assert read["status"] == "finding"
    assert read["out"][0]["state"] == "hung"
    assert read["message"] == f"{hanging} (v1) did not answer within 1 s: the read hangs, severe"
    # No kubelet to measure is an error (it cannot report), but the hang is still found.
    assert detect["kubelet_cpu"]["status"] == "error"
    assert detect["kubelet_cpu"]["message"].startswith("exit code 2: no process matches kubelet_pattern ")


@pytest.mark.ansible
@pytest.mark.cli
def test_kernel_upgrade_playbook_passes_syntax_check_and_is_planned(cairn: CairnRunner) -> None:
    playbook = REPO / "runbooks" / "playbooks" / "kernel-upgrade.yml"
    binary = Path(sys.executable).parent / "ansible-playbook"
    done = subprocess.run(
        [str(binary), "--syntax-check", "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ | {"ANSIBLE_NOCOLOR": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {playbook}" in done.stdout

    plan = cairn("plan", RUNBOOK, "-e", "upgrade_kernel=true", cwd=REPO)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert (
        "upgrade_kernel: Upgrade the kernel, one node at a time (drain, upgrade, reboot, uncordon)  "
        "[needs approval; only if: inputs.upgrade_kernel and steps.kernel_release.finding]\n"
        "      $ ansible-playbook playbooks/kernel-upgrade.yml (become)\n"
    ) in plan.stdout


@pytest.mark.lab
@pytest.mark.cli
@pytest.mark.ansible
def test_kernel_upgrade_refuses_the_lab_host(cairn: CairnRunner, lab: LabStarter) -> None:
    """Asked for, the real playbook runs (ansible-runner) and stops at the lab's guard before changing anything."""
    memcg = lab(RUNBOOK)
    release = Path(memcg.inputs["kernel_release_file"]).read_text(encoding="ascii")
    done = cairn(*memcg.run_args("--yes", "-e", "upgrade_kernel=true", "--json", *QUICK_CPU))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    remediate = results(report, "remediate")
    assert remediate["drop_caches"]["status"] == "ok"
    upgrade = remediate["upgrade_kernel"]
    assert upgrade["status"] == "error"
    assert (
        "memcg-node has kernel_upgrade_allowed=false: nothing was drained, installed or rebooted"
        in (upgrade["message"])
    )
    assert remediate["cadvisor_root_stats"]["status"] == "not_run"  # upgrade_kernel failed before it
    assert remediate["cadvisor_root_stats"]["message"].startswith(
        "not run: remediation step 'upgrade_kernel' failed"
    )
    assert Path(memcg.inputs["kernel_release_file"]).read_text(encoding="ascii") == release


@pytest.mark.lab
@pytest.mark.cli
def test_what_cannot_be_measured_is_an_error_not_a_healthy_node(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """On the healthy node: kubelet_pattern names a binary that does not exist, then memory_stat an empty file.

    Both used to pass for a healthy node: "no process matches …" was an ok kubelet_cpu, and a
    file without counters read fast, so memory_stat_read said "read in 0.00 s".
    """
    memcg = lab(RUNBOOK, healthy=True)
    no_kubelet = tmp_path / "no-kubelet.yaml"
    no_kubelet.write_text(f"kubelet_pattern: ^{tmp_path}/usr/bin/kubelet( |$)\n", encoding="utf-8")

    done = cairn(*memcg.run_args("-e", f"@{no_kubelet}", "--phase", "detect", "--json", *QUICK_CPU))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: kubelet_cpu: ")
    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "memory_stat_read": "ok",
        "kubelet_cpu": "error",
        "system_cpu": "ok",
    }
    assert detect["kubelet_cpu"]["message"] == (
        f"exit code 2: no process matches kubelet_pattern ^{tmp_path}/usr/bin/kubelet( |$): "
        "kubelet is not running here, or the pattern is wrong"
    )

    # A memory.stat that holds nothing (the wrong file): a fast read of it proves nothing.
    empty = tmp_path / "memory.stat"
    empty.write_bytes(b"")
    done = cairn(*memcg.run_args("-e", f"memory_stat={empty}", "--yes", "--json", *QUICK_CPU))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "failed"
    detect = results(report, "detect")
    assert {k: v["status"] for k, v in detect.items()} == {
        "memory_stat_read": "error",
        "kubelet_cpu": "ok",
        "system_cpu": "ok",
    }
    assert detect["memory_stat_read"]["message"] == (
        f'exit code 2: {empty} holds no memory counters (lines like "cache 4096"): not a memory.stat; '
        "check the memory_stat input"
    )
    assert [r["phase"] for r in report["hosts"][0]["results"]] == ["detect"] * 3


@pytest.mark.cli
def test_an_empty_kernel_release_is_an_error_not_an_unfixed_kernel(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    """diagnose reads an osrelease file that is empty: it used to say "kernel  is not fixed" (a finding,
    which offers the kernel upgrade); the memory cgroup root that does not exist is named too."""
    hanging = tmp_path / "memory.stat"  # a read that hangs: the finding that makes diagnose run
    os.mkfifo(hanging)
    osrelease = tmp_path / "osrelease"
    osrelease.write_bytes(b"")
    missing_root = tmp_path / "sys" / "fs" / "cgroup" / "memory"
    done = cairn(
        "run",
        RUNBOOK,
        "--phase",
        "diagnose",
        "--json",
        "-e",
        f"memory_stat={hanging}",
        "-e",
        "read_timeout=1s",
        "-e",
        f"kernel_release_file={osrelease}",
        "-e",
        f"memory_cgroup_root={missing_root}",
        *QUICK_CPU,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # the hang is found; diagnose never decides
    diagnose = results(report_of(done), "diagnose")
    assert {k: v["status"] for k, v in diagnose.items()} == {
        "kernel_release": "error",
        "memory_cgroups": "error",
    }
    assert (
        diagnose["kernel_release"]["message"]
        == f"exit code 2: {osrelease} is empty: check kernel_release_file"
    )
    assert diagnose["memory_cgroups"]["message"] == (
        f"exit code 2: {missing_root} is not a directory: check memory_cgroup_root"
    )
