"""Fan-out: one command on N real loopback sshd hosts, Cairn against the tools people use instead.

The command is ``uname -r; cat /proc/loadavg`` on the hosts of one ``engine.lab.ssh_fleet``
(real OpenSSH, 16 hosts per ``sshd``, addresses 127.0.0.180 and up). Two tables, one run, each
repetition running every case once in turn (round-robin, so a burst of load on the noisy machine
hits all of them alike), a warm-up of every case first, every answer checked:

* **whole process** (the lead table, ``bench.fanout_process``), N = 20, 50, 500: ``cairn run``,
  ``ansible -m command`` / ``-m raw`` and Debian's ``parallel-ssh`` command, each a fresh process
  checking host keys; peak memory and fds of its process tree; cairn's start-up;
* **in-process, the floor**, N = 20, 50: Cairn's runner called in this process (hosts resolved,
  interpreter warm), the ``parallel-ssh`` Python library (no host-key checking), a sequential
  paramiko loop, and Cairn with a 4-step detect phase (connection reuse).

Goals (reported, never asserted): at N = 50 ``cairn run`` >= 8x faster than ``ansible -m command``
and >= 2.5x faster than ``parallel-ssh``; at N = 500 ``cairn run`` <= 10 s; start-up before the
first step <= 0.3 s at N = 50; the 4-step phase <= 1.3x the 1-step phase.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import fanout_process as proc
from bench.fanout_process import CAIRN_RUN, COMMAND, runbook_text
from bench.proctree import fd_limits
from bench.report import print_table, seconds
from bench.timing import Stats

DESCRIPTION = (
    "one command on 20/50/500 loopback sshd hosts, whole processes: cairn run vs ansible, Debian "
    "parallel-ssh (goals at 50: 8x ansible, 2.5x parallel-ssh, start-up <= 0.3 s; 500: <= 10 s); "
    "in-process floor"
)
FIRST_ADDRESS = 180
"""host01 is 127.0.0.180 (then 127.0.1.1 and up): a range the tests (.2-.21, .100-.130) do not use."""
FLOOR_UP_TO = 50
"""The in-process floor runs at N <= 50: at 500 it would add minutes (the sequential loop) and no news."""
GOAL_X_PSSH_LIBRARY, GOAL_REUSE = 1.0, 1.3
SETTLE_S = 0.5
"""Pause before each timed run: sshd session processes of the previous one finish exiting."""
CAIRN, CAIRN_4 = "cairn, in-process", "cairn, in-process, 4-step detect"
PSSH, PARAMIKO = "parallel-ssh library", "paramiko, sequential"
HOST_KEYS = {PSSH: "NOT checked"}
if TYPE_CHECKING:
    from engine.core.model import Runbook
    from engine.lab.ssh_fleet import SshFleet


class FanOut:
    """The in-process floor: the fleet, its inventory, a journal and one timing function per method."""

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


Case = tuple[str, str, int, Callable[[], object], int]
"""(table, method, N, run-time-and-check, repetitions): ``action()`` returns seconds or a Measured."""


def run(quick: bool) -> dict[str, Any]:
    from engine.lab.ssh_fleet import make_fleet

    if _installed("parallel-ssh") is None:
        raise RuntimeError("parallel-ssh is not installed: `.venv/bin/pip install -e '.[bench]'`")
    sizes = proc.QUICK_PROCESS_SIZES if quick else proc.PROCESS_SIZES
    floor_sizes = tuple(n for n in sizes if n <= FLOOR_UP_TO)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-fanout-") as tmp:
        work = Path(tmp)
        fleet = make_fleet(
            work / "fleet", max(sizes), first_address=FIRST_ADDRESS, hosts_per_sshd=proc.HOSTS_PER_SSHD
        )
        with fleet:
            floor, whole = FanOut(fleet, work), proc.ProcessFanOut(fleet, work, sizes)
            if whole.pssh is None:
                print(proc.PSSH_MISSING, flush=True)
            try:
                cases = _cases(floor, whole, sizes, floor_sizes, quick)
                measured, failed = _round_robin(cases)
            finally:
                floor.close()
    floor_stats = {(m, n): Stats(tuple(v)) for (t, m, n), v in measured.items() if t == "floor"}
    whole_runs = {(m, n): v for (t, m, n), v in measured.items() if t == "process"}
    results = _results(floor_stats, floor_sizes, whole_runs, failed, sizes, load_before, os.getloadavg())
    results["pssh_installed"] = whole.pssh is not None
    _print(results)
    return results


def _cases(
    floor: FanOut,
    whole: proc.ProcessFanOut,
    sizes: tuple[int, ...],
    floor_sizes: tuple[int, ...],
    quick: bool,
) -> list[Case]:
    """Every case with its repetitions: 5 (3 at N = 500), or 2 with ``--quick``."""

    def runs(n: int) -> int:
        return proc.QUICK_RUNS if quick else proc.RUNS_AT_500 if n >= 500 else proc.RUNS

    cases: list[Case] = [("process", m, n, action, runs(n)) for m, n, action in whole.cases(sizes)]
    cases += [("floor", m, n, action, runs(n)) for m, n, action in floor.methods(floor_sizes)]
    return cases


def _round_robin(
    cases: list[Case],
) -> tuple[dict[tuple[str, str, int], list[Any]], dict[tuple[str, int], proc.CaseFailed]]:
    """A warm-up of every case, then repetitions: each runs every case (that still needs one) in turn.

    A whole-process case that fails (``CaseFailed``) is reported FAILED with its reason and not run
    again, so one method breaking at 500 hosts does not hide the others' figures; any other failure
    (the floor, the fleet) stops the benchmark.
    """
    measured: dict[tuple[str, str, int], list[Any]] = {(t, m, n): [] for t, m, n, _, _ in cases}
    failed: dict[tuple[str, int], proc.CaseFailed] = {}
    for repetition in range(-1, max(c[4] for c in cases)):  # -1: the warm-up, not kept
        print("warm-up" if repetition < 0 else f"repetition {repetition + 1}", flush=True)
        for table, method, n, action, runs in cases:
            if repetition >= runs or (method, n) in failed:
                continue
            if repetition >= 0:
                time.sleep(SETTLE_S)
            try:
                result = action()
            except proc.CaseFailed as exc:
                failed[(method, n)] = exc
                print(f"FAILED: {exc}", flush=True)
                continue
            if repetition >= 0:
                measured[(table, method, n)].append(result)
    return measured, failed


def _floor_rows(stats: dict[tuple[str, int], Stats]) -> list[dict[str, Any]]:
    rows = []
    for (method, n), s in stats.items():
        rows.append(
            {"method": method, "hosts": n, **s.as_dict()}
            | {
                "per_host_ms": s.median / n * 1000,
                "x_cairn": s.median / stats[(CAIRN, n)].median,
                "host_keys": HOST_KEYS.get(method, "checked"),
            }
        )
    return rows


def _floor_goals(stats: dict[tuple[str, int], Stats], big: int) -> list[dict[str, Any]]:
    cairn_big = stats[(CAIRN, big)].median
    x_pssh, reuse = stats[(PSSH, big)].median / cairn_big, stats[(CAIRN_4, big)].median / cairn_big
    return [
        proc.goal(f"(floor) {PSSH} / {CAIRN} at N={big}", x_pssh, f">= {GOAL_X_PSSH_LIBRARY:g}x",
              x_pssh >= GOAL_X_PSSH_LIBRARY),
        proc.goal(f"(floor) cairn 4-step / 1-step detect at N={big}", reuse, f"<= {GOAL_REUSE:g}x",
              reuse <= GOAL_REUSE),
    ]  # fmt: skip


def _results(
    floor: dict[tuple[str, int], Stats],
    floor_sizes: tuple[int, ...],
    whole: dict[tuple[str, int], list[proc.Measured]],
    failed: dict[tuple[str, int], proc.CaseFailed],
    sizes: tuple[int, ...],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    process_rows = proc.process_rows(whole, failed)
    soft, hard = fd_limits()
    cairn_500 = next((r for r in process_rows if r["method"] == CAIRN_RUN and r["hosts"] == 500), {})
    return {
        "command": COMMAND,
        "versions": {p: _installed(p) for p in ("paramiko", "parallel-ssh", "ssh2-python", "ansible-core")}
        | {"pssh (Debian)": _debian_version("pssh")},
        "runs": {str(n): max(len(v) for (_, size), v in whole.items() if size == n) for n in sizes},
        "sizes": list(sizes),
        "floor_sizes": list(floor_sizes),
        "hosts_per_sshd": proc.HOSTS_PER_SSHD,
        "ulimit_n": {"soft": soft, "hard": hard},
        "cairn_500_peak_fds_of_soft_limit": cairn_500["peak_fds"] / soft if "peak_fds" in cairn_500 else None,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "process_rows": process_rows,
        "rows": _floor_rows(floor),
        "goals": proc.process_goals(process_rows) + _floor_goals(floor, floor_sizes[-1]),
    }


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _debian_version(package: str) -> str | None:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def _print(results: dict[str, Any]) -> None:
    runs = ", ".join(f"{n} at N={size}" for size, n in results["runs"].items())
    proc.print_process_table(
        results["process_rows"],
        f"WHOLE PROCESS: `{results['command']}` on N loopback sshd hosts, each method a fresh process "
        f"checking host keys; median of {runs} (round-robin); x cairn = method / cairn run",
    )
    print_table(
        f"IN-PROCESS (the floor): median, round-robin in the same run; x cairn = method / {CAIRN}",
        ["method", "N", "median", "p90", "per host", "x cairn", "host keys"],
        [
            [r["method"], r["hosts"], seconds(r["median_s"]), seconds(r["p90_s"]),
             f"{r['per_host_ms']:.1f} ms", f"{r['x_cairn']:.2f}x", r["host_keys"]]
            for r in results["rows"]
        ],
    )  # fmt: skip
    print_table(
        "goals (reported, never asserted)",
        ["goal", "measured", "target", "result"],
        [
            [g["goal"], "FAILED" if g["value"] is None else f"{g['value']:.2f}{' s' if g['unit'] == 's' else 'x'}",
             g["target"], "PASS" if g["passed"] else "FAIL"]
            for g in results["goals"]
        ],
    )  # fmt: skip
    limit, share = results["ulimit_n"], results["cairn_500_peak_fds_of_soft_limit"]
    at_500 = "" if share is None else f"; cairn run at N=500 peaked at {share:.0%} of the soft limit"
    print(f"\nulimit -n of the benchmark (inherited): soft {limit['soft']}, hard {limit['hard']}{at_500}")
    if not results["pssh_installed"]:
        print(proc.PSSH_MISSING)
    before, after = results["load_average_before"], results["load_average_after"]
    print(
        f"load average (1/5/15 min) before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} (on {os.cpu_count()} CPUs); "
        "the parallel-ssh library (floor) does no host-key checking at all"
    )
