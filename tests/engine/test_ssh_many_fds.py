"""A run on hundreds of hosts holds more than 1,024 descriptors: the SSH executor must still wait on them.

select(2) cannot watch a descriptor numbered 1,024 or more ("filedescriptor out of range in
select()"): 223 of 500 hosts failed that way in the fan-out benchmark. Here the test process
first holds ~1,100 descriptors of its own, so every channel the executor opens is numbered past
1,024, and steps must still run — in the host's persistent shell and in a session of their own.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors.ssh import SSHExecutor
from engine.core.model import Host
from engine.lab.ssh_fleet import SshFleet

pytestmark = pytest.mark.ssh

HELD = 1100


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This process holds ``HELD`` more descriptors (the soft limit raised for it, then restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HELD + 512:
        pytest.fail(
            f"the hard open-file limit ({hard}) is below {HELD + 512}: raise `ulimit -Hn` to run this"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HELD + 512), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(HELD)]
    try:
        assert max(held) >= 1024
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_steps_run_when_every_descriptor_is_past_1024(ssh_fleet: SshFleet, many_descriptors: None) -> None:
    host_entry = ssh_fleet.hosts[0]
    host = Host(
        host_entry.name,
        "ssh",
        {
            "ansible_host": host_entry.address,
            "ansible_port": host_entry.port,
            "ansible_user": ssh_fleet.user,
            "ansible_ssh_private_key_file": str(ssh_fleet.user_key),
        },
    )
    executor = SSHExecutor(ExecutionOptions(known_hosts=Path(ssh_fleet.known_hosts)))
    try:
        first = executor.execute(host, Shell("echo first; echo err >&2"), timeout=30)
        second = executor.execute(host, Shell("printf 'a\\0b' | od -c | head -1"), timeout=30)
        late = executor.execute(host, Shell("sleep 5"), timeout=0.5)  # timed out: killed over a new channel
        after = executor.execute(host, Shell("echo after"), timeout=30)
    finally:
        executor.close()
    assert (first.rc, first.stdout, first.stderr) == (0, "first\n", "err\n")
    assert second.rc == 0 and "a  \\0   b" in second.stdout
    assert late.timed_out and late.rc is None
    assert (after.rc, after.stdout) == (0, "after\n")
