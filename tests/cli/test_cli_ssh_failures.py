"""`cairn run` over hosts that accept TCP but do not speak SSH: one clear line each, no tracebacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lab.not_sshd import Behaviour, NotSshd
from engine.lab.ssh_fleet import SshFleet
from tests.conftest import CairnRunner, RunbookDir

pytestmark = [pytest.mark.cli, pytest.mark.ssh, pytest.mark.inventory]

HELLO = """
id: hello
title: Say hello
severity: info
summary: s
targets: mixed
detect:
  - id: hi
    title: hi
    run: echo "hi from $(whoami)"
    report: "{{ stdout | trim }}"
"""


@pytest.fixture
def odd_hosts() -> Iterator[dict[str, NotSshd]]:
    """A host that never sends a banner, one that closes at once, one that answers with garbage."""
    servers = {f"{b.value}-host": NotSshd(b) for b in Behaviour}
    yield servers
    for server in servers.values():
        server.close()


def test_fan_out_over_hosts_that_do_not_speak_ssh_says_one_line_each_and_runs_the_good_one(
    cairn: CairnRunner,
    runbook_dir: RunbookDir,
    ssh_fleet: SshFleet,
    odd_hosts: dict[str, NotSshd],
    tmp_path: Path,
) -> None:
    good = ssh_fleet.hosts[13]
    lines = [
        f"        {name}: {{ansible_host: {s.address}, ansible_port: {s.port}, ansible_user: x}}"
        for name, s in odd_hosts.items()
    ]
    lines.append(
        f"        {good.name}: {{ansible_host: {good.address}, ansible_port: {good.port}, "
        f"ansible_user: {ssh_fleet.user}, ansible_ssh_private_key_file: {ssh_fleet.user_key}}}"
    )
    inventory = tmp_path / "mixed.yml"
    inventory.write_text("all:\n  children:\n    mixed:\n      hosts:\n" + "\n".join(lines) + "\n")

    done = cairn(
        "run", "hello", "--runbooks", str(runbook_dir(HELLO)), "-i", str(inventory),
        "--known-hosts", str(ssh_fleet.known_hosts), "--connect-timeout", "2", "-f", "4",
    )  # fmt: skip

    assert "Traceback" not in done.stderr and "paramiko" not in done.stderr, done.stderr
    assert done.stderr == ""
    reasons = {
        "silent-host": "no SSH banner from 127.0.0.1:{port} within 2s",
        "close-host": "127.0.0.1:{port} closed the connection before the SSH banner",
        "garbage-host": "127.0.0.1:{port} is not an SSH server: it answered 'HTTP/1.1 400 Bad Request'",
    }
    for name, reason in reasons.items():
        said = [line for line in done.stdout.splitlines() if line.startswith(f"{name} ") and "failed" in line]
        assert said, f"no line for {name}:\n{done.stdout}"
        assert all(reason.format(port=odd_hosts[name].port) in line for line in said), said
    assert f"hi from {ssh_fleet.user}" in done.stdout  # the good host's step ran
    assert done.returncode == 2
