"""Fan-out behind a bastion: one command on N hosts reached through one ProxyJump, Cairn against Ansible.

An ``engine.lab.ssh_fleet`` of N + 1 real OpenSSH servers with TCP forwarding on: ``host01`` is
the bastion, ``host02``… the targets. Both tools read the same ssh_config (``Host bastion``: its
address, port, user, key, known_hosts) and the same inventory line, ``ansible_ssh_common_args:
-J bastion``; both check every host key, the bastion's included. Four methods, each a fresh
process, the repetitions round-robin (each runs every method once, in turn):

* **cairn, via bastion**: ``cairn run`` (the SSH executor: one connection to the bastion shared
  by every host, a ``direct-tcpip`` channel per host);
* **ansible -m command, via bastion**: ``ansible -f N -m command`` (OpenSSH: one ``ssh -W``
  jump process, so one bastion connection, per host);
* **cairn, direct** and **ansible -m command, direct**: the same hosts without the bastion, in
  the same run: what the bastion costs each tool per host.

The hosts are in this network namespace (the tests isolate them; here only the time counts). Goal
(reported, never asserted): Cairn at least 8x faster than ``ansible -m command`` through the
bastion at N = 50, as without one (``bench/fanout.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.machine import tool
from bench.report import print_table, seconds
from bench.timing import Stats, bench_env

if TYPE_CHECKING:
    from engine.lab.ssh_fleet import SshFleet

DESCRIPTION = (
    "one command on 50 hosts behind one bastion (ProxyJump): cairn run vs ansible -m command, "
    "and both without the bastion (goal: 8x ansible through the bastion)"
)
COMMAND = "uname -r; cat /proc/loadavg"
FIRST_ADDRESS = 180
"""The bastion is 127.0.0.180, the hosts .181 and up: the range of bench/fanout.py, clear of the tests."""
SIZE, QUICK_SIZE = 50, 20
GOAL_X_ANSIBLE = 8.0
SETTLE_S = 0.5
"""Pause before each timed run: sshd session processes of the previous one finish exiting."""
CAIRN_JUMP, ANSIBLE_JUMP = "cairn, via bastion", "ansible -m command, via bastion"
CAIRN_DIRECT, ANSIBLE_DIRECT = "cairn, direct", "ansible -m command, direct"
METHODS = (CAIRN_JUMP, ANSIBLE_JUMP, CAIRN_DIRECT, ANSIBLE_DIRECT)
RUNBOOK = f"""id: fanout-bastion
title: Fan-out behind a bastion
severity: info
summary: Kernel release and load average of every host.
targets: fleet
detect:
  - id: look
    title: kernel and load
    run: '{COMMAND}'
"""
_ANSWER = re.compile(r"^(\S+) \| CHANGED \| rc=0 ", re.MULTILINE)


class BastionFanOut:
    """The fleet, its two inventories (with and without the jump), and one timed call per method."""

    def __init__(self, fleet: SshFleet, work: Path, n: int) -> None:
        self.fleet, self.work, self.n = fleet, work, n
        self.bastion, self.targets = fleet.hosts[0], fleet.hosts[1 : n + 1]
        config = work / "ssh_config"
        config.write_text(
            f"Host bastion\n  HostName {self.bastion.address}\n  Port {self.bastion.port}\n"
            f"  User {fleet.user}\n  IdentityFile {fleet.user_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {fleet.known_hosts}\n  StrictHostKeyChecking yes\n"
        )
        self.home = work / "home"  # Cairn reads ~/.ssh/config; OpenSSH reads -F (it ignores $HOME)
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh" / "config").write_text(config.read_text())
        self.inventories = {
            "direct": self._inventory("direct", {}),
            "bastion": self._inventory("bastion", {"ansible_ssh_common_args": "-J bastion"}),
        }
        (work / "runbooks").mkdir()
        (work / "runbooks" / "fanout-bastion.yaml").write_text(RUNBOOK)
        cairn, ansible = tool("cairn"), tool("ansible")
        if cairn is None or ansible is None:
            raise RuntimeError("no `cairn` or `ansible` script beside this interpreter or on PATH")
        self.cairn_argv = [cairn, "run", "fanout-bastion", "--runbooks", str(work / "runbooks")]
        self.cairn_argv += ["--known-hosts", str(fleet.known_hosts), "-f", str(n), "--json"]
        self.cairn_argv += ["--journal", str(work / "journal.db")]
        self.ansible = ansible
        ssh_args = (
            f"-F {config} -o ControlMaster=no -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes"
        )
        self.ansible_env = bench_env() | {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_PIPELINING": "True",
            "PATH": f"{Path(ansible).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.bastion_logins: dict[str, list[int]] = {m: [] for m in METHODS}

    def _inventory(self, name: str, extra: dict[str, str]) -> Path:
        hosts = {
            h.name: {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "ansible_user": self.fleet.user,
                "ansible_ssh_private_key_file": str(self.fleet.user_key),
                "ansible_python_interpreter": "/usr/bin/python3",
                **extra,
            }
            for h in self.targets
        }
        path = self.work / f"{name}.yml"
        path.write_text(yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts}}}}, sort_keys=False))
        return path

    def methods(self) -> list[tuple[str, Callable[[], float]]]:
        return [
            (CAIRN_JUMP, partial(self.timed, CAIRN_JUMP, self.cairn, "bastion")),
            (ANSIBLE_JUMP, partial(self.timed, ANSIBLE_JUMP, self.ansible_adhoc, "bastion")),
            (CAIRN_DIRECT, partial(self.timed, CAIRN_DIRECT, self.cairn, "direct")),
            (ANSIBLE_DIRECT, partial(self.timed, ANSIBLE_DIRECT, self.ansible_adhoc, "direct")),
        ]

    def timed(self, method: str, action: Callable[[str], float], inventory: str) -> float:
        """Time one run, and count the logins it made on the bastion (from its sshd's log)."""
        before = self.fleet.accepted_logins(self.bastion.name)
        elapsed = action(inventory)
        self.bastion_logins[method].append(self.fleet.accepted_logins(self.bastion.name) - before)
        return elapsed

    def cairn(self, inventory: str) -> float:
        """``cairn run`` as a fresh process; every host healthy with the command's two lines."""
        argv = [*self.cairn_argv, "-i", str(self.inventories[inventory])]
        env = bench_env() | {"HOME": str(self.home)}
        start = time.perf_counter()
        done = subprocess.run(
            argv, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - start
        try:
            report = json.loads(done.stdout)
        except ValueError:
            report = {"hosts": []}
        bad = [
            f"{h['host']}: {h['outcome']} ({h.get('reason')})"
            for h in report["hosts"]
            if h["outcome"] != "healthy" or [r["stdout"].count("\n") for r in h["results"]] != [2]
        ]
        if done.returncode != 0 or bad or len(report["hosts"]) != self.n:
            raise RuntimeError(
                f"cairn ({inventory}) exited {done.returncode}: {bad[:5]} {done.stderr[-1500:]}"
            )
        return elapsed

    def ansible_adhoc(self, inventory: str) -> float:
        """``ansible fleet -m command -f N`` as a fresh process; rc 0 and a CHANGED line from every host."""
        argv = [self.ansible, "fleet", "-i", str(self.inventories[inventory]), "-f", str(self.n)]
        argv += ["-m", "command", "-a", f"sh -c '{COMMAND}'"]
        start = time.perf_counter()
        done = subprocess.run(
            argv,
            check=False,
            cwd=self.work,
            env=self.ansible_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        missing = [h.name for h in self.targets if h.name not in set(_ANSWER.findall(done.stdout))]
        if done.returncode != 0 or missing:
            raise RuntimeError(
                f"ansible ({inventory}) exited {done.returncode}, no answer from {missing[:5]}:\n"
                f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
            )
        return elapsed


def run(quick: bool) -> dict[str, Any]:
    from engine.lab.ssh_fleet import make_fleet

    runs, n = (2, QUICK_SIZE) if quick else (5, SIZE)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-bastion-") as tmp:
        work = Path(tmp)
        with make_fleet(work / "fleet", n + 1, first_address=FIRST_ADDRESS, forwarding=True) as fleet:
            bench = BastionFanOut(fleet, work, n)
            cases = bench.methods()
            for _, action in cases:  # warm-up: caches, and a check that each method works
                action()
            times: dict[str, list[float]] = {m: [] for m, _ in cases}
            for _ in range(runs):
                for method, action in cases:
                    time.sleep(SETTLE_S)
                    times[method].append(action())
    stats = {m: Stats(tuple(v)) for m, v in times.items()}
    results = _results(stats, n, runs, bench.bastion_logins, load_before, os.getloadavg())
    _print(results)
    return results


def _results(
    stats: dict[str, Stats],
    n: int,
    runs: int,
    logins: dict[str, list[int]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    cairn = stats[CAIRN_JUMP].median
    rows = [
        {"method": m, "hosts": n, **s.as_dict()}
        | {
            "per_host_ms": s.median / n * 1000,
            "x_cairn_via_bastion": s.median / cairn,
            "bastion_logins_per_run": max(logins[m]),
        }
        for m, s in stats.items()
    ]
    x_ansible = stats[ANSIBLE_JUMP].median / cairn
    return {
        "command": COMMAND,
        "hosts": n,
        "runs": runs,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "rows": rows,
        "bastion_cost_per_host_ms": {
            "cairn": (stats[CAIRN_JUMP].median - stats[CAIRN_DIRECT].median) / n * 1000,
            "ansible": (stats[ANSIBLE_JUMP].median - stats[ANSIBLE_DIRECT].median) / n * 1000,
        },
        "goals": [
            {
                "goal": f"{ANSIBLE_JUMP} / {CAIRN_JUMP} at N={n}",
                "value": x_ansible,
                "target": f">= {GOAL_X_ANSIBLE:g}",
                "passed": x_ansible >= GOAL_X_ANSIBLE,
            },
            {
                "goal": f"(for comparison) {ANSIBLE_DIRECT} / {CAIRN_DIRECT} at N={n}",
                "value": stats[ANSIBLE_DIRECT].median / stats[CAIRN_DIRECT].median,
                "target": f">= {GOAL_X_ANSIBLE:g}",
                "passed": stats[ANSIBLE_DIRECT].median / stats[CAIRN_DIRECT].median >= GOAL_X_ANSIBLE,
            },
        ],
    }


def _print(results: dict[str, Any]) -> None:
    print_table(
        f"`{results['command']}` on {results['hosts']} loopback sshd hosts, as fresh processes: median "
        f"of {results['runs']} (round-robin); x = method / cairn via bastion",
        ["method", "N", "median", "p90", "per host", "x", "bastion logins/run"],
        [
            [
                r["method"],
                r["hosts"],
                seconds(r["median_s"]),
                seconds(r["p90_s"]),
                f"{r['per_host_ms']:.1f} ms",
                f"{r['x_cairn_via_bastion']:.2f}x",
                r["bastion_logins_per_run"],
            ]
            for r in results["rows"]
        ],
    )
    cost = results["bastion_cost_per_host_ms"]
    print(f"\nthe bastion costs per host: cairn {cost['cairn']:.1f} ms, ansible {cost['ansible']:.1f} ms")
    print_table(
        "goals",
        ["goal", "measured", "target", "result"],
        [
            [g["goal"], f"{g['value']:.2f}x", g["target"], "PASS" if g["passed"] else "FAIL"]
            for g in results["goals"]
        ],
    )
    before, after = results["load_average_before"], results["load_average_after"]
    print(
        f"\nload average (1/5/15 min) before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} (on {os.cpu_count()} CPUs)"
    )
