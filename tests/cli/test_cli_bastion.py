"""`cairn run` and `cairn inventory` with hosts behind bastions (ProxyJump), on real sshd.

The hosts behind the bastions live in network namespaces (tests/bastions.py) and refuse direct
connections; ``~/.ssh/config`` (HOME points at the test's folder) names the bastions and their
keys, as a user's would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.ssh_fleet import SshFleet
from tests.bastions import BastionSite, bastion_site
from tests.conftest import CairnRunner, RunbookDir

pytestmark = [pytest.mark.cli, pytest.mark.ssh, pytest.mark.inventory]

HELLO = """
id: hello
title: Say hello
severity: info
summary: s
targets: sites
detect:
  - id: hi
    title: hi
    run: echo "hi from $(whoami) at ${SSH_CONNECTION##* }"
    report: "{{ stdout | trim }}"
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[BastionSite]:
    with bastion_site(tmp_path / "site") as built:
        yield built


@pytest.fixture
def home(tmp_path: Path, site: BastionSite) -> Path:
    """A HOME whose ~/.ssh/config is the site's (the bastions' names, addresses and keys)."""
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "config").write_text(site.ssh_config.read_text())
    return folder


def direct_host(fleet: SshFleet, index: int) -> dict[str, Any]:
    host = fleet.hosts[index]
    return {
        "ansible_host": host.address,
        "ansible_port": host.port,
        "ansible_user": fleet.user,
        "ansible_ssh_private_key_file": str(fleet.user_key),
    }


def run_json(
    cairn: CairnRunner, runbooks: Path, inventory: Path, known_hosts: Path, home: Path, tmp_path: Path
) -> tuple[int, dict[str, Any], str]:
    done = cairn(
        "run", "hello", "--runbooks", str(runbooks), "-i", str(inventory), "--known-hosts", str(known_hosts),
        "--journal", str(tmp_path / "journal.db"), "-f", "5", "--json", HOME=str(home),
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_run_through_one_and_two_bastions_shares_one_connection_to_the_first(
    cairn: CairnRunner, runbook_dir: RunbookDir, site: BastionSite, home: Path, tmp_path: Path
) -> None:
    hosts = {
        f"web-{i + 1}": site.target_vars(site.behind, i, ansible_ssh_common_args="-J jump-1")
        for i in range(3)
    }
    hosts["deep-1"] = site.target_vars(site.deep, 0, ansible_ssh_common_args="-o ProxyJump=jump-1,jump-2")
    inventory = site.inventory("through", hosts)

    rc, report, stderr = run_json(cairn, runbook_dir(HELLO), inventory, site.known_hosts, home, tmp_path)

    assert rc == 0, report
    said = {h["host"]: (h["outcome"], [r["stdout"] for r in h["results"]]) for h in report["hosts"]}
    assert said == {
        **{
            f"web-{i + 1}": ("healthy", [f"hi from {site.behind.user} at {h.port}\n"])
            for i, h in enumerate(site.behind.hosts)
        },
        "deep-1": ("healthy", [f"hi from {site.deep.user} at {site.deep.hosts[0].port}\n"]),
    }
    assert site.jump1.accepted_logins() == 1  # one connection to jump-1 for four hosts (and jump-2 behind it)
    assert site.jump2.accepted_logins() == 1
    assert stderr == ""


def test_a_bastion_that_is_down_fails_each_host_behind_it_by_name_and_the_others_run(
    cairn: CairnRunner,
    runbook_dir: RunbookDir,
    site: BastionSite,
    home: Path,
    ssh_fleet: SshFleet,
    tmp_path: Path,
) -> None:
    j1 = site.jump1_host
    site.relays.stop(f"{j1.address}:{j1.port} near")  # the bastion's address answers nothing now
    hosts = {
        f"web-{i + 1}": site.target_vars(site.behind, i, ansible_ssh_common_args="-J jump-1")
        for i in range(3)
    }
    hosts["direct"] = direct_host(ssh_fleet, 17)
    inventory = site.inventory("down", hosts)
    known_hosts = site.write_known_hosts(*site.fleets)
    known_hosts.write_text(known_hosts.read_text() + ssh_fleet.known_hosts.read_text())

    rc, report, stderr = run_json(cairn, runbook_dir(HELLO), inventory, known_hosts, home, tmp_path)

    assert rc == 2
    outcomes = {h["host"]: (h["outcome"], h["reason"]) for h in report["hosts"]}
    for name in ("web-1", "web-2", "web-3"):
        assert outcomes[name] == (
            "failed",
            f"{name}: cannot reach {name} through bastion jump-1 ({site.jump1.user}@{j1.address}:{j1.port}): "
            f"connection refused by {j1.address}:{j1.port}: is sshd running there?",
        )
    assert outcomes["direct"][0] == "healthy"
    direct = next(h for h in report["hosts"] if h["host"] == "direct")
    assert direct["results"][0]["stdout"] == f"hi from {ssh_fleet.user} at {ssh_fleet.hosts[17].port}\n"
    assert site.behind.accepted_logins() == 0
    assert stderr == ""


def test_inventory_says_which_bastions_a_host_is_reached_through_and_what_it_ignored(
    cairn: CairnRunner, site: BastionSite, home: Path
) -> None:
    inventory = site.inventory(
        "described",
        {
            "web-1": site.target_vars(
                site.behind,
                0,
                ansible_ssh_common_args="-o StrictHostKeyChecking=no -o ProxyJump=jump-1,jump-2",
            ),
            "web-2": site.target_vars(site.behind, 1, ansible_ssh_extra_args=f"-J {site.spec(site.jump1)}"),
        },
    )
    j1, j2 = site.jump1_host, site.jump2_host
    b1, b2 = site.behind.hosts[0], site.behind.hosts[1]

    done = cairn("inventory", "-i", str(inventory), "--json", HOME=str(home))

    assert done.returncode == 0, done.stderr
    reached = {h["host"]: h["reached_by"] for h in json.loads(done.stdout)["hosts"]}
    user = site.behind.user
    assert reached["web-1"].startswith(
        f"ssh {user}@{b1.address}:{b1.port} via ProxyJump jump-1 ({user}@{j1.address}:{j1.port}), "
        f"jump-2 ({user}@{j2.address}:{j2.port}), key {site.behind.user_key}"
    ), reached["web-1"]
    assert reached["web-1"].endswith(
        "(strict); ignored (Cairn reads only ProxyJump, -J and ProxyCommand there): "
        "ansible_ssh_common_args -o StrictHostKeyChecking=no"
    )
    assert reached["web-2"].startswith(
        f"ssh {user}@{b2.address}:{b2.port} via ProxyJump {user}@{j1.address}:{j1.port}, key "
    ), reached["web-2"]
