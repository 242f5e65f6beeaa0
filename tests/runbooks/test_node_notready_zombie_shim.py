"""node-notready-zombie-shim end to end: its lab (a wedged containerd-shim, crictl, a Kubernetes API stand-in).

The lab's shim is a real process named ``containerd-shim`` with real zombie children and real
interactive ``bash`` sessions on pseudo-terminals; kubectl is the real one, talking to the
lab's API stand-in; the cron step runs through real ansible-runner. A process's age cannot be
faked, so the remediation test waits (polling, with a deadline) until the lab's sessions are
old enough, and opens its young session just before the run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import pytest

from engine.lab import zombie_shim
from tests.conftest import REPO, CairnRunner, LabStarter
from tests.runbooks.reports import results, run_json

pytestmark = [pytest.mark.lab, pytest.mark.cli, pytest.mark.kubectl, pytest.mark.ansible, pytest.mark.cron]

RUNBOOK = "node-notready-zombie-shim"
HANG = 5  # runtime_answers' timeout in the runbook: every run on a wedged lab spends it in detect
MAX_AGE = 16  # bash_max_age for the remediation run: old sessions pass it during detect (>= HANG),
# the young one, opened just before the run, stays under it for ~9 s of run start-up and detect
TERMINATING = ["shop/payments-api-7d4b9c6f8-kq2lz", "shop/orders-worker-5c8d7f9b6-m9x4t"]
EXEC_PROBE_PODS = "shop/payments-api-7d4b9c6f8-kq2lz, shop/orders-worker-5c8d7f9b6-m9x4t, shop/redis-0"


def children(pid: int) -> dict[int, tuple[str, str]]:
    """The children of ``pid``: {pid: (state, comm)}."""
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=,comm=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {int(p): (s, c) for p, s, c in (line.split(None, 2) for line in out.splitlines())}


def age(pid: int) -> int:
    out = subprocess.run(
        ["ps", "-o", "etimes=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return int(out.strip() or -1)


class ShimState(TypedDict):
    """The fields of the lab's shim state file (engine/lab/zombie_node.py writes it) these tests read."""

    shim: int
    init: int
    id: str
    old_sessions: list[int]


def shim_state(lab_dir: Path) -> ShimState:
    """``zombie_shim.lab_state``, its fields checked and typed."""
    state = zombie_shim.lab_state(lab_dir)
    shim, init, container, old = state["shim"], state["init"], state["id"], state["old_sessions"]
    assert isinstance(shim, int) and isinstance(init, int) and isinstance(container, str), state
    assert isinstance(old, list) and all(isinstance(pid, int) for pid in old), state
    return ShimState(shim=shim, init=init, id=container, old_sessions=old)


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def kubectl(lab_dir: Path, *args: str) -> Any:
    done = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(lab_dir / "kubeconfig"),
            "--cache-dir",
            str(lab_dir / "kube-cache"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=os.environ | {"KUBECONFIG": "/nonexistent"},
    )
    return json.loads(done.stdout)


def test_dry_run_shows_the_labs_symptoms_then_remediation_ends_only_old_sessions(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    lab_ = lab(RUNBOOK)
    lab_dir = Path(lab_.info["dir"])
    state = shim_state(lab_dir)
    shim, init, old = int(state["shim"]), int(state["init"]), {int(p) for p in state["old_sessions"]}
    address = lab_.inputs["containerd_address"]

    # --- 1. Look first: a dry run detects and diagnoses for real, and changes nothing.
    code, report = run_json(cairn, lab_, "--dry-run", "-e", "bash_max_age=1h")
    assert code == 1
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    assert {k: r["status"] for k, r in detect.items()} == dict.fromkeys(
        ["node_ready", "stuck_terminating_pods", "shim_zombies", "runtime_answers"], "finding"
    )
    assert detect["node_ready"]["message"].startswith("node k8s-node-1 is NotReady since ")
    assert (
        "(KubeletNotReady: PLEG is not healthy: pleg was last seen active 12m"
        in detect["node_ready"]["message"]
    )
    assert [p["pod"] for p in detect["stuck_terminating_pods"]["out"]] == TERMINATING
    assert all(int(p["seconds"]) >= 13 * 60 for p in detect["stuck_terminating_pods"]["out"])
    zombies = [r for r in detect["shim_zombies"]["out"] if r["kind"] == "zombie"]
    assert Counter(r["name"] for r in zombies) == {"sh": 28, "bash": 6}
    assert {int(r["parent"]) for r in zombies} == {shim}
    assert detect["shim_zombies"]["message"] == (
        f"34 zombie(s) under 1 containerd-shim(s) of {address} (limit 3): 6 bash, 28 sh "
        f"under shim {shim} (container {state['id'][:12]})"
    )
    assert (
        detect["runtime_answers"]["message"]
        == f"no answer within {HANG}.0s: the hang is the symptom (killed)"
    )
    diagnose = results(report, "diagnose")
    assert {int(s["pid"]): s["verdict"] for s in diagnose["exec_sessions"]["out"]} == dict.fromkeys(
        old, "young"
    )
    assert diagnose["exec_probes"]["status"] == "finding"
    assert (
        diagnose["exec_probes"]["message"]
        == f"3 of 6 pod(s) on k8s-node-1 use exec probes: {EXEC_PROBE_PODS}"
    )
    assert diagnose["containerd_version"]["message"] == (
        "containerd 1.2.6 is older than 1.2.8: its shim can deadlock (containerd#2709)"
    )
    remediate = results(report, "remediate")
    assert remediate["install_session_cleanup"]["status"] == "skipped"
    assert (
        f"cron_file={lab_.inputs['cron_file']} user=root minute='*/5'"
        in remediate["install_session_cleanup"]["command"]
    )
    assert (
        "`shop/redis-0`, container `redis`: livenessProbe runs `redis-cli ping`"
        in (remediate["replace_exec_probes"]["command"])
    )
    assert zombie_shim.lab_state(lab_dir)["state"] == "wedged"
    assert len([c for c in children(shim).values() if c[0].startswith("Z")]) == 34
    assert not Path(lab_.inputs["cron_file"]).exists()

    # --- 2. Remediate: the sessions that are old by then end; one opened just before the run stays.
    wait_until(lambda: min(age(p) for p in old) >= MAX_AGE - HANG, "the lab's sessions aging")
    young = int(subprocess.check_output([str(lab_dir / "bin" / "web-terminal"), "--quiet"], text=True))
    code, report = run_json(cairn, lab_, "--yes", "-e", f"bash_max_age={MAX_AGE}s")
    assert code == 0, report
    assert report["hosts"][0]["outcome"] == "remediated"
    sessions = results(report, "diagnose")["exec_sessions"]
    assert sessions["status"] == "finding"
    assert {int(s["pid"]): s["verdict"] for s in sessions["out"]} == dict.fromkeys(old, "old") | {
        young: "young"
    }
    remediate = results(report, "remediate")
    assert remediate["end_old_exec_sessions"]["status"] == "ok"
    assert {int(p) for p in remediate["end_old_exec_sessions"]["out"]} == old
    assert remediate["install_session_cleanup"]["status"] == "ok"
    assert (
        remediate["install_session_cleanup"]["message"] == f"cron job written to {lab_.inputs['cron_file']}"
    )
    for manual in ("replace_exec_probes", "fix_web_terminal", "upgrade_containerd"):
        assert remediate[manual]["status"] == "not_asked"  # --yes never pretends a human did it
    verify = results(report, "verify")
    assert {k: r["status"] for k, r in verify.items()} == dict.fromkeys(detect, "ok")
    assert verify["runtime_answers"]["message"] == "crictl ps answered: 4 container(s)"
    assert (
        verify["shim_zombies"]["message"] == f"0 zombie(s) under 1 containerd-shim(s) of {address} (limit 3)"
    )

    # The lab really changed: old sessions gone, zombies reaped, the young session and the init untouched.
    left = children(shim)
    assert set(left) == {init, young}
    assert left[young][1] == "bash" and not left[young][0].startswith("Z")
    assert zombie_shim.lab_state(lab_dir)["state"] == "running"
    node = kubectl(lab_dir, "get", "node", "k8s-node-1", "-o", "json")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    pods = kubectl(lab_dir, "get", "pods", "-A", "--field-selector", "spec.nodeName=k8s-node-1", "-o", "json")
    assert [p["metadata"]["name"] for p in pods["items"] if "deletionTimestamp" in p["metadata"]] == []

    # --- 3. Detect again on the recovered node: nothing to find.
    code, report = run_json(cairn, lab_, "--phase", "detect")
    assert code == 0
    assert report["hosts"][0]["outcome"] == "healthy"

    # The installed clean-up is one cron line that really ends sessions older than bash_max_age.
    lines = Path(lab_.inputs["cron_file"]).read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "#Ansible: cairn node-notready-zombie-shim: end bash exec sessions under containerd-shim older than bash_max_age"
    )
    schedule, job = lines[1][: len("*/5 * * * * root ")], lines[1][len("*/5 * * * * root ") :]
    assert len(lines) == 2 and schedule == "*/5 * * * * root "
    assert job.startswith(
        f"ps -ww -eo pid=,ppid=,stat=,etimes=,comm=,args= | awk -v addr={address} -v max={MAX_AGE} "
    )
    assert job.endswith("| xargs -r kill -HUP") and "%" not in job  # cron would cut the line at a %
    wait_until(lambda: age(young) >= MAX_AGE, "the young session aging past bash_max_age")
    subprocess.run(["/bin/sh", "-c", job], check=True, timeout=30)
    wait_until(lambda: young not in children(shim), "the cron job ending the now-old session")
    assert init in children(shim)


def test_healthy_node_is_healthy_and_left_alone(cairn: CairnRunner, lab: LabStarter) -> None:
    lab_ = lab(RUNBOOK, healthy=True)
    code, report = run_json(cairn, lab_, "--yes")
    assert code == 0
    assert report["hosts"][0]["outcome"] == "healthy"
    detect = results(report, "detect")
    assert {k: r["status"] for k, r in detect.items()} == dict.fromkeys(
        ["node_ready", "stuck_terminating_pods", "shim_zombies", "runtime_answers"], "ok"
    )
    assert detect["node_ready"]["message"].startswith("node k8s-node-1 is Ready since ")
    assert (
        detect["stuck_terminating_pods"]["message"] == "no pod on k8s-node-1 Terminating for more than 5 min"
    )
    assert detect["shim_zombies"]["message"] == (
        f"0 zombie(s) under 1 containerd-shim(s) of {lab_.inputs['containerd_address']} (limit 3)"
    )
    assert detect["runtime_answers"]["message"] == "crictl ps answered: 4 container(s)"
    assert {r["phase"] for r in report["hosts"][0]["results"]} == {"detect"}
    assert not Path(lab_.inputs["cron_file"]).exists()


def test_plan_with_real_world_defaults(cairn: CairnRunner) -> None:
    """Without a lab the inputs are a real node's: kubeconfig default, containerd's socket, /etc/cron.d."""
    done = cairn("plan", RUNBOOK, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "$ kubectl --request-timeout=15s get node localhost -o json" in done.stdout
    assert (
        "$ crictl --runtime-endpoint unix:///run/containerd/containerd.sock --timeout 30s ps" in done.stdout
    )
    assert "awk -v addr=/run/containerd/containerd.sock -v max=1800 '" in done.stdout
    assert "cron_file=/etc/cron.d/cairn-exec-session-cleanup user=root minute='*/5'" in done.stdout
    assert "$ containerd --version" in done.stdout


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed (nobody else binds it this quickly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_inputs_that_point_at_nothing_are_errors_not_a_healthy_node(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """On the healthy node, a containerd address with no socket and no shim, then an API server on a closed port.

    With no shim of that address, shim_zombies counted "0 zombie(s) under 0 containerd-shim(s)": ok,
    although it had looked at nothing.
    """
    lab_ = lab(RUNBOOK, healthy=True)
    lab_dir = Path(lab_.info["dir"])
    address = tmp_path / "run" / "containerd" / "containerd.sock"  # no such socket, no shim started with it
    wrong = tmp_path / "wrong-address.yaml"
    wrong.write_text(f"containerd_address: {address}\n", encoding="utf-8")

    code, report = run_json(cairn, lab_, "-e", f"@{wrong}", "--phase", "detect")
    assert code == 2, report
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: shim_zombies: ")
    detect = results(report, "detect")
    assert {k: r["status"] for k, r in detect.items()} == {
        "node_ready": "ok",
        "stuck_terminating_pods": "ok",
        "shim_zombies": "error",
        "runtime_answers": "error",
    }
    assert detect["shim_zombies"]["message"] == (
        f"exit code 2: no containerd-shim runs with -address {address} and no socket is there: "
        "check containerd_address"
    )

    # The Kubernetes API on a closed port: the two kubectl steps cannot look either.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        re.sub(
            r"server: http://127\.0\.0\.1:\d+",
            f"server: http://127.0.0.1:{closed_port()}",
            (lab_dir / "kubeconfig").read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    code, report = run_json(cairn, lab_, "-e", f"kubeconfig={kubeconfig}", "--yes")
    assert code == 2, report
    assert report["hosts"][0]["outcome"] == "failed"
    detect = results(report, "detect")
    assert {k: r["status"] for k, r in detect.items()} == {
        "node_ready": "error",
        "stuck_terminating_pods": "error",
        "shim_zombies": "ok",
        "runtime_answers": "ok",
    }
    assert "was refused" in detect["node_ready"]["message"]
    assert {r["phase"] for r in report["hosts"][0]["results"]} == {"detect"}
    assert not Path(lab_.inputs["cron_file"]).exists()


def test_exec_sessions_of_an_address_with_no_shim_are_an_error(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """On the wedged node, with a containerd address that has no socket and no shim: diagnose cannot list sessions.

    It used to report "0 bash exec session(s) under containerd-shim": nothing old to end.
    """
    lab_ = lab(RUNBOOK)
    address = tmp_path / "containerd.sock"
    code, report = run_json(cairn, lab_, "-e", f"containerd_address={address}", "--phase", "diagnose")
    assert code == 1, report  # the node's own symptoms (NotReady, pods Terminating) are still found
    assert results(report, "detect")["shim_zombies"]["status"] == "error"
    sessions = results(report, "diagnose")["exec_sessions"]
    assert sessions["status"] == "error"
    assert sessions["message"] == (
        f"exit code 2: no containerd-shim runs with -address {address} and no socket is there: "
        "check containerd_address"
    )


def path_without(folder: Path, *left_out: str) -> str:
    """A PATH with links to every program of this machine but ``left_out``: a host that lacks them."""
    folder.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for program in Path(directory).iterdir() if Path(directory).is_dir() else ():
            if program.name not in left_out and not (folder / program.name).exists():
                (folder / program.name).symlink_to(program)
    return str(folder)


def test_on_a_node_without_crontab_the_remediation_does_not_start(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """Preflight: install_session_cleanup needs crontab (Ansible's cron module), so ending the sessions
    (the step before it) would leave the node half-fixed: neither runs, and the host says why."""
    lab_ = lab(RUNBOOK)
    state = shim_state(Path(lab_.info["dir"]))
    old = [int(pid) for pid in state["old_sessions"]]
    no_cron = path_without(tmp_path / "bin", "crontab")

    done = cairn(*lab_.run_args("--yes", "--json"), PATH=no_cron)

    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads(done.stdout)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].endswith(
        "remediation cannot run on k8s-node-1 (install_session_cleanup: crontab is not installed on "
        "k8s-node-1 (Debian package cron)); nothing was changed"
    )
    assert "remediate" not in {r["phase"] for r in host["results"]}  # not one remediation step ran
    assert all(age(pid) >= 0 for pid in old), "the old sessions still live: nothing was ended"
    assert not Path(lab_.inputs["cron_file"]).exists()
    assert results(report, "detect")["shim_zombies"]["status"] == "finding"  # detect still looked

    plan = cairn("plan", RUNBOOK, "-i", lab_.inventory, "-e", f"@{lab_.info['inputs']}", PATH=no_cron)
    assert (
        "PROBLEM: crontab not found (Debian package cron): remediate install_session_cleanup cannot run"
        in (plan.stdout)
    )
