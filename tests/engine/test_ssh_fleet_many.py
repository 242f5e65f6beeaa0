"""A large loopback fleet: several hosts per sshd (listen sockets) and addresses past 127.0.0.254."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.lab.ssh_fleet import FleetError, FleetHost, SshFleet, make_fleet
from tests.conftest import CairnRunner, RunbookDir, alive
from tests.procs import processes_with, wait_until

pytestmark = [pytest.mark.ssh, pytest.mark.cli]

WHERE = """
id: where
title: Which address answered
severity: info
summary: s
targets: fleet
detect:
  - id: where
    title: the address and port the session came in on
    run: echo $SSH_CONNECTION
"""


def sshd_listeners(fleet: SshFleet) -> list[int]:
    """The fleet's listening sshds: its processes whose parent is this one (sessions are theirs)."""
    mine = []
    for pid in processes_with(str(fleet.root)):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                mine.append(pid)
    return mine


def refuses(host: FleetHost) -> bool:
    try:
        socket.create_connection((host.address, host.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_forty_hosts_on_three_sshds_each_answer_on_its_own_address_with_strict_keys(
    tmp_path: Path, cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    # From 127.0.0.250: five addresses there, then 127.0.1.1 and up.
    fleet = make_fleet(tmp_path / "fleet", 40, first_address=250, hosts_per_sshd=16)
    try:
        fleet.start()
        hosts = fleet.hosts
        assert [h.address for h in hosts[:6]] == [*(f"127.0.0.{b}" for b in range(250, 255)), "127.0.1.1"]
        assert hosts[-1] == FleetHost("host40", "127.0.1.35", hosts[0].port)
        assert len({h.address for h in hosts}) == 40
        listeners = sshd_listeners(fleet)
        assert len(listeners) == 3  # ceil(40 / 16) sshd processes, nothing else yet
        known = fleet.known_hosts.read_text().splitlines()
        assert known == [f"[{h.address}]:{h.port} {fleet.host_public_key(h.name)}" for h in hosts]
        assert fleet.host_public_key("host01") == fleet.host_public_key("host16")  # one sshd, one key
        assert fleet.host_public_key("host16") != fleet.host_public_key("host17")

        done = cairn(
            "run", "where", "--runbooks", str(runbook_dir(WHERE)), "-i",
            str(fleet.write_inventory(tmp_path / "fleet.yml")), "--known-hosts", str(fleet.known_hosts),
            "-f", "40", "--json", "--journal", str(tmp_path / "journal.db"),
        )  # fmt: skip

        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        answered = {h["host"]: h["results"][0]["stdout"].split() for h in report["hosts"]}
        assert {h["outcome"] for h in report["hosts"]} == {"healthy"}
        assert {name: words[2:] for name, words in answered.items()} == {
            h.name: [h.address, str(h.port)] for h in hosts
        }
        assert fleet.accepted_logins() == 40
        assert [fleet.accepted_logins(h.name) for h in hosts] == [1] * 40  # each on its own address
    finally:
        fleet.stop()
    assert wait_until(lambda: not processes_with(str(fleet.root))), "a process of the fleet survived stop()"
    assert not any(alive(pid) for pid in listeners)


def test_kill_host_takes_down_every_host_of_its_sshd_and_restart_brings_them_back(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet", 5, first_address=110, hosts_per_sshd=3)
    try:
        fleet.start()
        assert len(sshd_listeners(fleet)) == 2
        fleet.kill_host("host02")
        assert [refuses(h) for h in fleet.hosts] == [True, True, True, False, False]
        assert len(sshd_listeners(fleet)) == 1
        fleet.restart_host("host03")
        assert not any(refuses(h) for h in fleet.hosts)
        assert len(sshd_listeners(fleet)) == 2
    finally:
        fleet.stop()


@pytest.mark.parametrize("per_sshd", [0, 17])
def test_more_listen_sockets_than_sshd_allows_is_refused(tmp_path: Path, per_sshd: int) -> None:
    with pytest.raises(FleetError, match="give 1 to 16 hosts per sshd"):
        make_fleet(tmp_path / "fleet", 20, hosts_per_sshd=per_sshd)


def test_addresses_run_out_only_past_127_0_255_254(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=re.escape("do not fit in 127.0.0.1-127.0.255.254")):
        make_fleet(tmp_path / "fleet", 256 * 254, first_address=2, hosts_per_sshd=16)


def test_command_line_up_with_hosts_per_sshd_and_down(tmp_path: Path) -> None:
    folder = tmp_path / "lab"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "engine.lab.ssh_fleet", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    up = cli("up", str(folder), "--count", "20", "--first-address", "140", "--hosts-per-sshd", "16")
    assert up.returncode == 0, up.stderr
    assert "20 sshd hosts up (2 sshd processes)" in up.stdout
    state = json.loads((folder / "fleet.json").read_text())
    try:
        assert state["hosts_per_sshd"] == 16
        assert len(state["pids"]) == 2
        assert all(alive(pid) for pid in state["pids"].values())
        bad = cli("up", str(tmp_path / "other"), "--count", "20", "--hosts-per-sshd", "17")
        assert bad.returncode == 1
        assert bad.stderr.startswith("error: hosts_per_sshd=17: give 1 to 16 hosts per sshd")
    finally:
        down = cli("down", str(folder))
    assert down.returncode == 0, down.stderr
    assert wait_until(lambda: not any(alive(pid) for pid in state["pids"].values()))
    assert not processes_with(str(folder))
