"""Fan-out: one command on N real loopback sshd hosts, Cairn against the tools people use instead.

The command is ``uname -r; cat /proc/loadavg`` on N = 20 and N = 50 hosts of an
``engine.lab.ssh_fleet`` (one real OpenSSH ``sshd`` per host). Methods, all in
this process and this run, each repetition running every method once in turn
(round-robin, so a burst of load on the noisy machine hits all of them alike):

* **Cairn**: a real in-process run (runner, SSH executor, journal), ``forks=N``;
* **ansible -m command** and **ansible -m raw**: the ``ansible`` CLI, ``-f N``;
* **parallel-ssh**: ``ParallelSSHClient.run_command`` + ``join`` (no host-key checking);
* **paramiko, sequential**: the naive loop, connect/exec/read/close per host.

Plus **connection reuse**: Cairn with a 4-step detect phase against the 1-step
phase at the largest N. Goals (reported, never asserted): Cairn at least 8x faster
than ``ansible -m command`` at N = 50, no slower than parallel-ssh at N = 50, and
the 4-step phase under 1.5x the 1-step phase.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.machine import tool
from bench.report import print_table, seconds
from bench.timing import Stats, bench_env

DESCRIPTION = (
    "one command on 20/50 loopback sshd hosts: Cairn vs ansible, parallel-ssh, paramiko "
    "(goals: 8x ansible -m command, >= parallel-ssh, 4 steps < 1.5x 1 step)"
)
COMMAND = "uname -r; cat /proc/loadavg"
FIRST_ADDRESS = 180
"""host01 is 127.0.0.180: a range the tests (which start at .2 and .120) do not use."""
SIZES, QUICK_SIZES = (20, 50), (20,)
GOAL_X_ANSIBLE, GOAL_X_PSSH, GOAL_REUSE = 8.0, 1.0, 1.5
SETTLE_S = 0.5
"""Pause before each timed run: sshd session processes of the previous one finish exiting."""
CAIRN, CAIRN_4 = "cairn", "cairn, 4-step detect"
ANSIBLE_COMMAND, ANSIBLE_RAW = "ansible -m command", "ansible -m raw"
PSSH, PARAMIKO = "parallel-ssh", "paramiko, sequential"
HOST_KEYS = {PSSH: "NOT checked"}
if TYPE_CHECKING:
    from engine.core.model import Runbook
    from engine.lab.ssh_fleet import SshFleet

_ANSWER = re.compile(r"^(\S+) \| (?:CHANGED|SUCCESS) \| rc=0 ", re.MULTILINE)


def runbook_text(steps: int) -> str:
    """A runbook whose detect phase runs COMMAND ``steps`` times on the ``fleet`` group."""
    body = "".join(
        f"  - id: look{i}\n    title: kernel and load {i}\n    run: '{COMMAND}'\n"
        for i in range(1, steps + 1)
    )
    return (
        f"id: fanout-{steps}\ntitle: Fan-out benchmark, {steps} step(s)\nseverity: info\n"
        f"summary: Kernel release and load average of every host.\ntargets: fleet\ndetect:\n{body}"
    )


class FanOut:
    """The fleet, its inventory, a journal and one timing function per method."""

    def __init__(self, fleet: SshFleet, work: Path) -> None:
        from engine.core.executors import ExecutionOptions
        from engine.core.inventory import load_inventory
        from engine.core.journal import Journal
        from engine.core.loader import check_text

        self.fleet, self.work = fleet, work
        self.inventory = fleet.write_inventory(work / "inventory.yml", group="fleet")
        self.hosts = load_inventory([str(self.inventory)]).hosts("fleet")
        self.options = ExecutionOptions(
            known_hosts=fleet.known_hosts, inventory_sources=(str(self.inventory),)
        )
        self.journal = Journal(work / "journal.db")
        self.runbooks: dict[int, Runbook] = {}
        for steps in (1, 4):
            loaded = check_text(runbook_text(steps), f"fanout-{steps}.yaml")
            if loaded.runbook is None:
                raise RuntimeError(f"the benchmark's runbook is invalid: {loaded.problems}")
            self.runbooks[steps] = loaded.runbook
        ssh_args = (
            f"-F none -o ControlMaster=no -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={fleet.known_hosts} -o IdentitiesOnly=yes"
        )
        ansible = tool("ansible")
        if ansible is None:
            raise RuntimeError("no `ansible` script beside this interpreter or on PATH")
        self.ansible = ansible
        self.ansible_env = bench_env() | {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_PIPELINING": "True",
            "PATH": f"{Path(ansible).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()

    def methods(self, sizes: tuple[int, ...]) -> list[tuple[str, int, Callable[[], float]]]:
        """(method, N, run-and-time) for every case, in the order each repetition runs them."""
        cases: list[tuple[str, int, Callable[[], float]]] = []
        for n in sizes:
            cases += [
                (CAIRN, n, partial(self.cairn, n, steps=1)),
                (PSSH, n, partial(self.parallel_ssh, n)),
                (PARAMIKO, n, partial(self.paramiko_sequential, n)),
                (ANSIBLE_COMMAND, n, partial(self.ansible_adhoc, n, raw=False)),
                (ANSIBLE_RAW, n, partial(self.ansible_adhoc, n, raw=True)),
            ]
        cases.append((CAIRN_4, sizes[-1], partial(self.cairn, sizes[-1], steps=4)))
        return cases

    def cairn(self, n: int, *, steps: int) -> float:
        """A real Cairn run on the first ``n`` hosts: connections, commands, journal; every host healthy."""
        from engine.core.approval import AssumeYes
        from engine.core.launch import prepare_run
        from engine.core.model import HostOutcome, StepStatus
        from engine.core.spec import RunSpec

        spec = RunSpec(
            runbook=self.runbooks[steps],
            hosts=tuple(self.hosts[:n]),
            inputs={},
            options=self.options,
            started_by="bench",
            forks=n,
        )
        start = time.perf_counter()
        report = prepare_run(spec, journal=self.journal, approver=AssumeYes()).run()
        elapsed = time.perf_counter() - start
        bad = [
            f"{h.host}: {h.outcome.value} ({h.reason})"
            for h in report.hosts
            if h.outcome is not HostOutcome.HEALTHY
            or len(h.results) != steps
            or any(r.status is not StepStatus.OK or r.stdout.count("\n") != 2 for r in h.results)
        ]
        if len(report.hosts) != n or bad:
            raise RuntimeError(f"cairn: {len(report.hosts)} of {n} hosts reported; not healthy: {bad[:5]}")
        return elapsed

    def ansible_adhoc(self, n: int, *, raw: bool) -> float:
        """``ansible fleet[0:n-1] -m command|raw -f n`` as a fresh process; rc 0 and every host answered."""
        module, args = ("raw", COMMAND) if raw else ("command", f"sh -c '{COMMAND}'")
        argv = [self.ansible, f"fleet[0:{n - 1}]", "-i", str(self.inventory), "-f", str(n)]
        argv += ["-m", module, "-a", args]
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
        answered = set(_ANSWER.findall(done.stdout))
        missing = [h.name for h in self.hosts[:n] if h.name not in answered]
        if done.returncode != 0 or missing:
            raise RuntimeError(
                f"ansible -m {module} exited {done.returncode}, no answer from {missing[:5]}:\n"
                f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
            )
        return elapsed

    def parallel_ssh(self, n: int) -> float:
        """``ParallelSSHClient(...).run_command`` + ``join`` + reading every host's output."""
        from pssh.clients import ParallelSSHClient

        fleet, hosts = self.fleet, self.fleet.hosts[:n]
        start = time.perf_counter()
        client = ParallelSSHClient(
            [h.address for h in hosts],
            user=fleet.user,
            pkey=str(fleet.user_key),
            port=hosts[0].port,
            pool_size=max(100, n),
            num_retries=1,
        )
        output = client.run_command(COMMAND)
        client.join(output)
        answers = {o.host: (list(o.stdout or ()), o.exit_code) for o in output}
        elapsed = time.perf_counter() - start
        del client  # its connections close when it is collected (it has no close method)
        bad = [h.address for h in hosts if answers.get(h.address, ([], None))[1] != 0]
        bad += [h.address for h in hosts if h.address not in bad and len(answers[h.address][0]) != 2]
        if bad:
            raise RuntimeError(f"parallel-ssh: no good answer from {bad[:5]}")
        return elapsed

    def paramiko_sequential(self, n: int) -> float:
        """The naive script: per host, connect (TCP_NODELAY, RejectPolicy, known_hosts), exec, read, close."""
        import paramiko

        fleet = self.fleet
        start = time.perf_counter()
        key = paramiko.Ed25519Key.from_private_key_file(str(fleet.user_key))
        for host in fleet.hosts[:n]:
            client = paramiko.SSHClient()
            client.load_host_keys(str(fleet.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            sock = socket.create_connection((host.address, host.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                client.connect(
                    host.address,
                    port=host.port,
                    username=fleet.user,
                    pkey=key,
                    sock=sock,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=10,
                )
                _, stdout, _ = client.exec_command(COMMAND)
                lines = stdout.read().decode().splitlines()
                rc = stdout.channel.recv_exit_status()
            finally:
                client.close()
            if rc != 0 or len(lines) != 2:
                raise RuntimeError(f"paramiko: {host.name} exited {rc} with {lines}")
        return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    from engine.lab.ssh_fleet import make_fleet

    if _installed("parallel-ssh") is None:
        raise RuntimeError("parallel-ssh is not installed: `.venv/bin/pip install -e '.[bench]'`")
    runs, sizes = (3, QUICK_SIZES) if quick else (5, SIZES)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-fanout-") as tmp:
        work = Path(tmp)
        with make_fleet(work / "fleet", max(sizes), first_address=FIRST_ADDRESS) as fleet:
            bench = FanOut(fleet, work)
            try:
                cases = bench.methods(sizes)
                for _, _, action in cases:  # warm-up: imports, caches, and a check that each method works
                    action()
                times: dict[tuple[str, int], list[float]] = {(m, n): [] for m, n, _ in cases}
                for _ in range(runs):
                    for method, n, action in cases:
                        time.sleep(SETTLE_S)
                        times[(method, n)].append(action())
            finally:
                bench.close()
    stats = {key: Stats(tuple(values)) for key, values in times.items()}
    results = _results(stats, sizes, runs, load_before, os.getloadavg())
    _print(results)
    return results


def _results(
    stats: dict[tuple[str, int], Stats],
    sizes: tuple[int, ...],
    runs: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    rows = []
    for (method, n), s in stats.items():
        cairn = stats[(CAIRN, n)].median
        rows.append(
            {"method": method, "hosts": n, **s.as_dict()}
            | {
                "per_host_ms": s.median / n * 1000,
                "x_cairn": s.median / cairn,
                "host_keys": HOST_KEYS.get(method, "checked"),
            }
        )
    big = sizes[-1]
    cairn_big = stats[(CAIRN, big)].median
    goals = [
        {
            "goal": f"{ANSIBLE_COMMAND} / cairn at N={big}",
            "value": stats[(ANSIBLE_COMMAND, big)].median / cairn_big,
            "target": f">= {GOAL_X_ANSIBLE:g}",
            "passed": stats[(ANSIBLE_COMMAND, big)].median / cairn_big >= GOAL_X_ANSIBLE,
        },
        {
            "goal": f"{PSSH} / cairn at N={big}",
            "value": stats[(PSSH, big)].median / cairn_big,
            "target": f">= {GOAL_X_PSSH:g}",
            "passed": stats[(PSSH, big)].median / cairn_big >= GOAL_X_PSSH,
        },
        {
            "goal": f"cairn 4-step / 1-step detect at N={big}",
            "value": stats[(CAIRN_4, big)].median / cairn_big,
            "target": f"< {GOAL_REUSE:g}",
            "passed": stats[(CAIRN_4, big)].median / cairn_big < GOAL_REUSE,
        },
    ]
    return {
        "command": COMMAND,
        "versions": {p: _installed(p) for p in ("paramiko", "parallel-ssh", "ssh2-python", "ansible-core")},
        "runs": runs,
        "sizes": list(sizes),
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "rows": rows,
        "goals": goals,
    }


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _print(results: dict[str, Any]) -> None:
    print_table(
        f"`{results['command']}` on N loopback sshd hosts: median of {results['runs']} "
        "(round-robin); x cairn = method / cairn, above 1.00x means Cairn is faster",
        ["method", "N", "median", "p90", "per host", "x cairn", "host keys"],
        [
            [
                r["method"],
                r["hosts"],
                seconds(r["median_s"]),
                seconds(r["p90_s"]),
                f"{r['per_host_ms']:.1f} ms",
                f"{r['x_cairn']:.2f}x",
                r["host_keys"],
            ]
            for r in results["rows"]
        ],
    )
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
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} (on {os.cpu_count()} CPUs); "
        "parallel-ssh does no host-key checking at all"
    )
