"""`cairn run` and `cairn inventory` over a fleet of real sshd hosts on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lab.ssh_fleet import SshFleet
from tests.conftest import REPO, CairnRunner, RunbookDir

pytestmark = [pytest.mark.cli, pytest.mark.ssh, pytest.mark.inventory]

HEALTH = """
id: health
title: Kernel, load and role on every node
severity: info
summary: s
targets: fleet
detect:
  - id: kernel
    title: kernel
    run: uname -r
    expect: rc == 0
  - id: load
    title: load average
    run: cat /proc/loadavg
    parse: lines
    expect: out | length == 1
  - id: role
    title: the inventory's role for this host
    run: echo {{ vars.role }} {{ vars.zone }} {{ target }}
    expect: "stdout.split() == [vars.role, vars.zone, target]"
    report: "{{ stdout | trim }}"
"""


@pytest.fixture
def fleet_inventory(ssh_fleet: SshFleet, tmp_path: Path) -> Path:
    """The session fleet's inventory, with a group var and a different host var on one host."""
    path = ssh_fleet.write_inventory(
        tmp_path / "fleet.yml",
        host_vars={h.name: {"role": "worker"} for h in ssh_fleet.hosts} | {"host07": {"role": "gpu"}},
    )
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "fleet.yml").write_text("zone: eu-1\n")
    return path


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the fleet's login user can write to (the hosts are this machine)."""
    path = Path(f"/tmp/cairn-test-{uuid.uuid4().hex}")
    path.mkdir()
    path.chmod(0o777)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_a_runbook_over_20_hosts_runs_everywhere_on_one_connection_each(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path
) -> None:
    logins_before = ssh_fleet.accepted_logins()

    done = cairn(
        "run", "health", "--runbooks", str(runbook_dir(HEALTH)), "-i", str(fleet_inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-f", "20", "--json",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [row["host"] for row in data["summary"]] == [f"host{n:02d}" for n in range(1, 21)]
    assert {(row["phase"], row["outcome"]) for row in data["summary"]} == {("detect", "healthy")}
    assert all(row["steps"] == {"ok": 3} for row in data["summary"])
    roles = {h["host"]: h["results"][2]["message"] for h in data["hosts"]}
    assert roles["host07"] == "gpu eu-1 host07"
    assert roles["host01"] == "worker eu-1 host01"
    assert ssh_fleet.accepted_logins() - logins_before == 20  # 3 steps, one handshake per host


def test_the_text_output_shows_progress_per_host_and_a_summary_table(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path
) -> None:
    done = cairn(
        "run", "health", "--runbooks", str(runbook_dir(HEALTH)), "-i", str(fleet_inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "fleet[0:2]",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("health on 3 hosts — run ")
    assert any(line.startswith("host02  detect    role") and "worker eu-1 host02" in line for line in lines)
    assert sum("== healthy: detect found nothing" in line for line in lines) == 3
    header = lines.index(next(line for line in lines if line.startswith("HOST ")))
    assert lines[header].split() == ["HOST", "PHASE", "OUTCOME", "STEPS", "REASON"]
    assert lines[header + 1].split()[:4] == ["host01", "detect", "healthy", "3"]
    assert "3 hosts: 3 healthy" in done.stdout


def test_a_pattern_with_an_exclusion_picks_the_hosts_ansible_would(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path
) -> None:
    done = cairn(
        "run", "health", "--runbooks", str(runbook_dir(HEALTH)), "-i", str(fleet_inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "fleet:!host03:!host1*", "--json",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    hosts = [row["host"] for row in json.loads(done.stdout)["summary"]]
    assert hosts == ["host01", "host02", "host04", "host05", "host06", "host07", "host08", "host09", "host20"]


def test_a_host_with_an_unknown_key_fails_alone_and_says_how_to_trust_it(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path, tmp_path: Path
) -> None:
    third = ssh_fleet.hosts[2]
    partial = tmp_path / "known_hosts"
    partial.write_text(
        "".join(
            line + "\n"
            for line in ssh_fleet.known_hosts.read_text().splitlines()
            if not line.startswith(f"[{third.address}]:")
        )
    )

    done = cairn(
        "run", "health", "--runbooks", str(runbook_dir(HEALTH)), "-i", str(fleet_inventory),
        "--known-hosts", str(partial), "-l", "host01:host02:host03:host04", "--json",
    )  # fmt: skip

    assert done.returncode == 2
    summary = {row["host"]: row for row in json.loads(done.stdout)["summary"]}
    assert summary["host03"]["outcome"] == "failed"
    assert summary["host03"]["phase"] == "connect"
    assert f"host key of [{third.address}]:{third.port} is not in {partial}" in summary["host03"]["reason"]
    assert {summary[h]["outcome"] for h in ("host01", "host02", "host04")} == {"healthy"}


ROLLOUT = """
id: rollout
title: Mark each host fixed, two at a time
severity: warning
summary: s
targets: fleet
inputs:
  dir: {type: string}
detect:
  - id: marked
    title: the host is marked fixed
    run: test -e {{ inputs.dir }}/{{ target }}.fixed
    exit_codes: [0, 1]
    expect: rc == 0
remediate:
  - id: mark
    title: mark it (a host with broken set only pretends)
    run: "{% if vars.broken | default(false) %}true{% else %}touch {{ inputs.dir }}/{{ target }}.fixed{% endif %}"
    serial: 2
    confirm: false
"""


def test_a_serial_roll_out_stops_when_a_batch_fails_verify(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, tmp_path: Path, shared_dir: Path
) -> None:
    inventory = ssh_fleet.write_inventory(tmp_path / "inv.yml", host_vars={"host03": {"broken": True}})

    done = cairn(
        "run", "rollout", "--runbooks", str(runbook_dir(ROLLOUT)), "-i", str(inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "fleet[0:5]", "-e", f"dir={shared_dir}",
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in shared_dir.iterdir()) == ["host01.fixed", "host02.fixed", "host04.fixed"]
    rows = {
        line.split()[0]: line
        for line in done.stdout.splitlines()
        if line.startswith("host0") and "  " in line
    }
    assert "verify still finds it: marked" in rows["host03"]
    for host in ("host05", "host06"):
        assert "the roll-out stopped because batch 2 of 3 failed verify on host03" in rows[host]
    assert "6 hosts: 3 present, 3 remediated" in done.stdout


# --------------------------------------------------------------------------- cairn inventory


def test_inventory_lists_hosts_and_how_each_is_reached(cairn: CairnRunner) -> None:
    done = cairn("inventory", "-i", str(REPO / "inventory"), "k8s_nodes:!node3")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["HOST", "REACHED", "BY", "GROUPS"]
    assert lines[1].startswith("node1  ssh ops@10.0.0.11:22, key ")
    assert "cairn_ed25519" in lines[1] and "(strict)" in lines[1]
    assert lines[2].startswith("node2  ssh ops@10.0.0.12:22")
    assert lines[3] == "2 hosts"


def test_inventory_json_has_the_variables_templates_see(cairn: CairnRunner) -> None:
    done = cairn("inventory", "-i", str(REPO / "inventory"), "-l", "node3", "--json")

    assert done.returncode == 0, done.stderr
    (node3,) = json.loads(done.stdout)["hosts"]
    assert node3["reached_by"].startswith("ssh ops@10.0.0.13:2222, ")
    assert node3["vars"]["kubelet_root_dir"] == "/data/kubelet"  # host_vars
    assert node3["vars"]["container_runtime"] == "containerd"  # group_vars
    assert node3["groups"] == ["k8s_nodes"]


def test_inventory_local_hosts_and_unsupported_connections(cairn: CairnRunner, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[misc]\nhere ansible_connection=local\nwin1 ansible_connection=winrm\n")

    done = cairn("inventory", "-i", str(inventory))

    assert done.returncode == 0, done.stderr
    assert "here  local: this machine" in done.stdout
    assert "win1  not natively (ansible_connection=winrm): use --via ansible" in done.stdout
    via = cairn("inventory", "-i", str(inventory), "--via", "ansible")
    assert "win1  ansible-runner (ansible_connection=winrm)" in via.stdout


def test_inventory_errors_are_clear(cairn: CairnRunner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("all:\n  hosts:\n    a: [unclosed\n")

    nothing = cairn("inventory", "-i", str(REPO / "inventory"), "db_servers")
    malformed = cairn("inventory", "-i", str(broken))
    missing = cairn("inventory", "-i", str(tmp_path / "nope.yml"))

    assert nothing.returncode == malformed.returncode == missing.returncode == 2
    assert "pattern 'db_servers' matches no host in " in nothing.stderr
    assert "groups: control, git_servers, k8s_nodes" in nothing.stderr
    assert str(broken) in malformed.stderr
    assert "does not exist" in missing.stderr
    assert "Traceback" not in nothing.stderr + malformed.stderr + missing.stderr


# --------------------------------------------------------------------------- through Ansible

PLACED = """
id: placed
title: A file Ansible places on each host
severity: warning
summary: s
targets: fleet
inputs:
  dir: {type: string}
detect:
  - id: present
    title: the file is there
    run: cat {{ inputs.dir }}/{{ target }}.conf
    exit_codes: [0, 1]
    expect: "rc == 0 and stdout == 'zone=' ~ vars.zone ~ '\\\\n'"
remediate:
  - id: place
    title: place it with ansible.builtin.copy
    ansible:
      module: ansible.builtin.copy
      args:
        dest: "{{ inputs.dir }}/{{ target }}.conf"
        content: "zone={{ vars.zone }}\\n"
        mode: "0644"
    expect: out.changed
    report: "changed={{ out.changed }}"
"""


@pytest.mark.ansible
def test_an_ansible_step_runs_through_ansible_runner_and_lands_in_the_journal(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path, shared_dir: Path
) -> None:
    done = cairn(
        "run", "placed", "--runbooks", str(runbook_dir(PLACED)), "-i", str(fleet_inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "host01:host02", "-e", f"dir={shared_dir}",
        "--yes", "--json", timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {row["outcome"] for row in data["summary"]} == {"remediated"}
    assert (shared_dir / "host01.conf").read_text() == "zone=eu-1\n"
    place = next(r for r in data["hosts"][0]["results"] if r["step_id"] == "place")
    assert place["status"] == "ok" and place["message"] == "changed=true"
    assert place["out"]["changed"] is True
    assert place["command"].startswith("ansible ansible.builtin.copy dest=")

    shown = cairn("show-run", data["run_id"], "--json")
    artifacts = Path(json.loads(shown.stdout)["artifacts"])
    events = list(
        (artifacts / "host01" / "ansible" / "remediate.place").glob("artifacts/*/job_events/*.json")
    )
    assert events, "ansible-runner's job events are kept in the run's artifacts folder"
    assert "changed: [host01]" in (artifacts / "host01" / "remediate.place.stdout").read_text()


@pytest.mark.ansible
def test_via_ansible_runs_plain_steps_through_ansible_with_the_same_results(
    cairn: CairnRunner, runbook_dir: RunbookDir, ssh_fleet: SshFleet, fleet_inventory: Path
) -> None:
    done = cairn(
        "run", "health", "--runbooks", str(runbook_dir(HEALTH)), "-i", str(fleet_inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "-l", "host06:host07", "--via", "ansible", "--json",
        timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + done.stdout
    data = json.loads(done.stdout)
    assert {(row["outcome"], tuple(row["steps"].items())) for row in data["summary"]} == {
        ("healthy", (("ok", 3),))
    }
    roles = {h["host"]: h["results"][2]["message"] for h in data["hosts"]}
    assert roles == {"host06": "worker eu-1 host06", "host07": "gpu eu-1 host07"}
