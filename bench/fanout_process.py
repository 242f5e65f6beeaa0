"""Whole-process fan-out: what a user waits for, from typing the command to its last line.

Each method is a fresh process on the same fleet, each checks every host key against the
fleet's ``known_hosts`` (strict), and each must get the command's two lines from every host:

* **cairn run**: ``cairn run fanout-1 -i INV --known-hosts KH -f N --json --journal J``
  (paramiko, one thread and one connection per host);
* **ansible -m command** (and **ansible -m raw** at N <= 50): ``ansible fleet -f N``, OpenSSH
  with ``StrictHostKeyChecking=yes``, pipelining on;
* **parallel-ssh (Debian pssh)**: the ``parallel-ssh`` command of Debian's ``pssh`` 2.3.4,
  ``-p N``, one OpenSSH ``ssh`` per host.

Each run's process tree is sampled (``bench.proctree``): peak RSS and open fds summed over the
tree. For cairn also its **start-up**: the run's ``started_at`` in the journal (``RunStarted``:
runbook, inventory, journal and executors ready, no host contacted yet; read with Cairn's own
reader) minus the wall clock just before the spawn — the goal's figure — and the first step's
``started_at`` (after that host's SSH handshake, made while every other host makes its own).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.machine import tool
from bench.proctree import MIB, TreePeak, TreeSampler
from bench.timing import Stats, bench_env

if TYPE_CHECKING:
    from engine.lab.ssh_fleet import SshFleet

COMMAND = "uname -r; cat /proc/loadavg"
CAIRN_RUN, ANSIBLE_COMMAND, ANSIBLE_RAW = "cairn run", "ansible -m command", "ansible -m raw"
PSSH_CLI = "parallel-ssh (Debian pssh)"
PROCESS_SIZES, QUICK_PROCESS_SIZES = (20, 50, 500), (20, 50)
RUNS, QUICK_RUNS, RUNS_AT_500 = 5, 2, 3
RAW_UP_TO = 50
"""``ansible -m raw`` only up to this N: ~100 s a run at 500 hosts adds nothing the command row lacks."""
HOSTS_PER_SSHD = 16
GOAL_X_ANSIBLE, GOAL_X_PSSH, GOAL_AT_500_S, GOAL_STARTUP_S = 8.0, 2.5, 10.0, 0.3
PSSH_MISSING = "parallel-ssh not found: install it with `apt-get install pssh`; its rows are skipped"
_ANSIBLE_HEADER = re.compile(r"^(\S+) \| (?:CHANGED|SUCCESS) \| rc=0 >>$")
_ANSIBLE_ANY_HEADER = re.compile(r"^\S+ \| [A-Z!]+ (?:\| rc=-?\d+ )?(?:>>|=>)")
_SSH_CLOSED = re.compile(r"^(?:Shared connection|Connection) to \S+ closed\.$")
_PSSH_HEADER = re.compile(r"^\[\d+\] [\d:]+ \[(\w+)\] (\S+)$")


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


def ansible_env(known_hosts: Path, ansible: str, *, ssh_config: str = "none") -> dict[str, str]:
    """Environment for the ``ansible`` CLI: strict host keys against ``known_hosts``, pipelining."""
    ssh_args = (
        f"-F {ssh_config} -o ControlMaster=no -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={known_hosts} -o IdentitiesOnly=yes"
    )
    path = bench_env().get("PATH", "")
    return bench_env() | {
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_PIPELINING": "True",
        "PATH": f"{Path(ansible).parent}:{path}",
    }


def answer_blocks(stdout: str, header: re.Pattern[str], stop: re.Pattern[str]) -> dict[str, list[str]]:
    """Per host, the lines after its ``header`` line (group 1 the host) up to the next ``stop`` line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if match := header.match(line):
            current = blocks.setdefault(match.group(match.lastindex or 1), [])
        elif stop.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return blocks


class CaseFailed(RuntimeError):
    """A method failed at one N (a host unanswered, a bad exit): that case is reported FAILED, with this."""

    def __init__(self, message: str, finished: Finished | None = None) -> None:
        super().__init__(message)
        self.finished = finished
        """The failed run, whose time and peaks are still worth reporting (how far it got)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """One sampled process run."""

    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    spawned_at: float
    """Wall clock (``time.time()``) just before the spawn."""
    peak: TreePeak


def run_sampled(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> Finished:
    """Run ``argv`` to its end, sampling its process tree; wall time from just before the spawn."""
    spawned_at, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with TreeSampler(proc.pid) as sampler:
        stdout, stderr = proc.communicate()
        elapsed = time.perf_counter() - start
    return Finished(proc.returncode, stdout, stderr, elapsed, spawned_at, sampler.peak)


@dataclass(frozen=True, slots=True)
class Measured:
    """What one run of one method cost."""

    elapsed_s: float
    peak: TreePeak
    startup_s: float | None = None
    """cairn: spawn to the first step's start (the runner connects to a host before its first step)."""
    run_start_s: float | None = None
    """cairn: spawn to the run's own ``started_at`` in the journal (before any connection)."""


class ProcessFanOut:
    """Per N: an inventory, a parallel-ssh hosts file; one timed, sampled, checked call per method."""

    def __init__(self, fleet: SshFleet, work: Path, sizes: Sequence[int]) -> None:
        self.fleet, self.work = fleet, work / "process"
        self.work.mkdir()
        full = yaml.safe_load(fleet.write_inventory(self.work / "all.yml", group="fleet").read_text())
        everyone: dict[str, Any] = full["all"]["children"]["fleet"]["hosts"]
        self.inventories, self.pssh_hosts = {}, {}
        for n in sizes:
            names = [h.name for h in fleet.hosts[:n]]
            subset = {"all": {"children": {"fleet": {"hosts": {k: everyone[k] for k in names}}}}}
            self.inventories[n] = self.work / f"inventory-{n}.yml"
            self.inventories[n].write_text(yaml.safe_dump(subset, sort_keys=False))
            self.pssh_hosts[n] = self.work / f"pssh-hosts-{n}"
            self.pssh_hosts[n].write_text("".join(f"{h.address}:{h.port}\n" for h in fleet.hosts[:n]))
        (self.work / "runbooks").mkdir()
        (self.work / "runbooks" / "fanout-1.yaml").write_text(runbook_text(1))
        self.journal = self.work / "journal.db"
        cairn, ansible = tool("cairn"), tool("ansible")
        if cairn is None or ansible is None:
            raise RuntimeError("no `cairn` or `ansible` script beside this interpreter or on PATH")
        self.cairn_path, self.ansible = cairn, ansible
        self.ansible_env = ansible_env(fleet.known_hosts, ansible)
        self.pssh = shutil.which("parallel-ssh")

    def cases(self, sizes: Sequence[int]) -> list[tuple[str, int, Callable[[], Measured]]]:
        """(method, N, run-time-and-check) for every case, in the order each repetition runs them."""
        cases: list[tuple[str, int, Callable[[], Measured]]] = []
        for n in sizes:
            cases.append((CAIRN_RUN, n, partial(self.cairn_run, n)))
            if self.pssh is not None:
                cases.append((PSSH_CLI, n, partial(self.parallel_ssh, n)))
            cases.append((ANSIBLE_COMMAND, n, partial(self.ansible_adhoc, n, raw=False)))
            if n <= RAW_UP_TO:
                cases.append((ANSIBLE_RAW, n, partial(self.ansible_adhoc, n, raw=True)))
        return cases

    def cairn_run(self, n: int) -> Measured:
        """``cairn run`` as a user types it; every host healthy with the two lines; start-up from the journal."""
        argv = [self.cairn_path, "run", "fanout-1", "--runbooks", str(self.work / "runbooks")]
        argv += ["-i", str(self.inventories[n]), "--known-hosts", str(self.fleet.known_hosts)]
        argv += ["-f", str(n), "--json", "--journal", str(self.journal)]
        done = run_sampled(argv, env=bench_env(), cwd=self.work)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            report = {"hosts": []}
        bad = Counter(
            f"{h['outcome']} ({h.get('reason')})"
            for h in report["hosts"]
            if h["outcome"] != "healthy" or [r["stdout"].count("\n") for r in h["results"]] != [2]
        )
        if done.returncode != 0 or bad or len(report["hosts"]) != n:
            why = "; ".join(f"{count} hosts: {reason}" for reason, count in bad.most_common(3))
            raise CaseFailed(
                f"cairn run at N={n} exited {done.returncode}, {len(report['hosts'])} hosts reported, "
                f"{bad.total()} not healthy: {why}\n{done.stderr[-2000:]}".strip(),
                done,
            )
        run_at, first_step_at = self._journal_times(report["run_id"])
        return Measured(done.elapsed_s, done.peak, first_step_at - done.spawned_at, run_at - done.spawned_at)

    def _journal_times(self, run_id: str) -> tuple[float, float]:
        """(the run's started_at, its first step's started_at), from the journal, by Cairn's reader."""
        from engine.core.journal_read import JournalReader

        reader = JournalReader(self.journal)
        try:
            run = reader.get_run(run_id)
        finally:
            reader.close()
        starts = [s.started_at for s in run.steps if s.started_at is not None]
        if not starts:
            raise CaseFailed(f"run {run_id}: no step with a start time in {self.journal}")
        return run.started_at, min(starts)

    def ansible_adhoc(self, n: int, *, raw: bool) -> Measured:
        """``ansible fleet -f N -m command|raw``; rc 0 and the two lines from every host."""
        module, args = ("raw", COMMAND) if raw else ("command", f"sh -c '{COMMAND}'")
        argv = [self.ansible, "fleet", "-i", str(self.inventories[n]), "-f", str(n), "-m", module]
        done = run_sampled([*argv, "-a", args], env=self.ansible_env, cwd=self.work)
        blocks = answer_blocks(done.stdout, _ANSIBLE_HEADER, _ANSIBLE_ANY_HEADER)
        # raw runs in a pty: ssh's "Connection to ... closed." and a blank line follow the output.
        bad = [
            h.name
            for h in self.fleet.hosts[:n]
            if len([line for line in blocks.get(h.name, []) if line and not _SSH_CLOSED.match(line)]) != 2
        ]
        if done.returncode != 0 or bad:
            raise CaseFailed(
                f"ansible -m {module} at N={n} exited {done.returncode}, no 2-line answer from {bad[:5]}:\n"
                f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}",
                done,
            )
        return Measured(done.elapsed_s, done.peak)

    def parallel_ssh(self, n: int) -> Measured:
        """Debian's ``parallel-ssh -p N -i``, strict host keys; every host SUCCESS with the two lines."""
        assert self.pssh is not None
        fleet = self.fleet
        ssh_args = (
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={fleet.known_hosts} "
            f"-o IdentitiesOnly=yes -o BatchMode=yes -i {fleet.user_key} -F none"
        )
        argv = [self.pssh, "-h", str(self.pssh_hosts[n]), "-l", fleet.user, "-p", str(n), "-t", "0"]
        done = run_sampled([*argv, "-i", "-x", ssh_args, COMMAND], env=bench_env(), cwd=self.work)
        blocks = answer_blocks(done.stdout, _PSSH_HEADER, re.compile(r"^Stderr:"))
        headers = [m for m in map(_PSSH_HEADER.match, done.stdout.splitlines()) if m]
        succeeded = {m.group(2) for m in headers if m.group(1) == "SUCCESS"}
        bad = [
            f"{h.address}:{h.port}"
            for h in fleet.hosts[:n]
            if f"{h.address}:{h.port}" not in succeeded or len(blocks.get(f"{h.address}:{h.port}", [])) != 2
        ]
        if done.returncode != 0 or bad:
            raise CaseFailed(
                f"parallel-ssh at N={n} exited {done.returncode}, no SUCCESS with 2 lines from {bad[:5]}:\n"
                f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}",
                done,
            )
        return Measured(done.elapsed_s, done.peak)


def _failed_row(method: str, n: int, failure: CaseFailed) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "hosts": n, "failed": str(failure)}
    if (done := failure.finished) is not None:
        row["failed_run"] = {
            "elapsed_s": done.elapsed_s,
            "peak_rss_mib": done.peak.rss_bytes / MIB,
            "peak_fds": done.peak.fds,
        }
    return row


def process_rows(
    measured: Mapping[tuple[str, int], list[Measured]], failed: Mapping[tuple[str, int], CaseFailed]
) -> list[dict[str, Any]]:
    """One row per (method, N): times, x vs cairn run, peak memory and fds (the largest of its runs).

    A failed case's row holds ``failed`` (the reason) and no figures; with cairn failed, ``x_cairn`` is None.
    """
    rows = []
    for (method, n), runs in measured.items():
        if (method, n) in failed:
            rows.append(_failed_row(method, n, failed[(method, n)]))
            continue
        stats = Stats(tuple(m.elapsed_s for m in runs))
        cairn_runs = [] if (CAIRN_RUN, n) in failed else measured[(CAIRN_RUN, n)]
        cairn = Stats(tuple(m.elapsed_s for m in cairn_runs)).median if cairn_runs else None
        peak_rss = max(m.peak.rss_bytes for m in runs) / MIB
        row: dict[str, Any] = {"method": method, "hosts": n, **stats.as_dict()}
        row |= {
            "per_host_ms": stats.median / n * 1000,
            "x_cairn": None if cairn is None else stats.median / cairn,
            "host_keys": "checked",
            "peak_rss_mib": peak_rss,
            "rss_mib_per_host": peak_rss / n,
            "peak_fds": max(m.peak.fds for m in runs),
            "peak_processes": max(m.peak.processes for m in runs),
            "sampler_cpu_s": max(m.peak.sampler_cpu_s for m in runs),
        }
        startups = [m.startup_s for m in runs if m.startup_s is not None]
        if startups:
            row["startup_s"] = Stats(tuple(startups)).as_dict()
        run_starts = [m.run_start_s for m in runs if m.run_start_s is not None]
        if run_starts:
            row["run_start_s"] = Stats(tuple(run_starts)).as_dict()
        rows.append(row)
    return rows


def goal(goal: str, value: float | None, target: str, passed: bool, unit: str = "x") -> dict[str, Any]:
    """A goal's line; ``value`` None: a method it needs failed, so it is not met."""
    return {
        "goal": goal,
        "value": value,
        "unit": unit,
        "target": target,
        "passed": value is not None and passed,
    }


def process_goals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The whole-process goals of the issue, each PASS/FAIL (reported, never asserted)."""
    by = {(r["method"], r["hosts"]): r for r in rows}

    def value(method: str, n: int, field: str) -> float | None:
        row = by.get((method, n), {})
        figure = row.get(field)
        return figure["median_s"] if isinstance(figure, dict) else figure

    goals = []
    if (CAIRN_RUN, 50) in by:
        x_ansible, x_pssh = value(ANSIBLE_COMMAND, 50, "x_cairn"), value(PSSH_CLI, 50, "x_cairn")
        startup = value(CAIRN_RUN, 50, "run_start_s")
        goals += [
            goal(f"{ANSIBLE_COMMAND} / {CAIRN_RUN} at N=50", x_ansible, f">= {GOAL_X_ANSIBLE:g}x",
                  (x_ansible or 0) >= GOAL_X_ANSIBLE),
            goal(f"{PSSH_CLI} / {CAIRN_RUN} at N=50", x_pssh, f">= {GOAL_X_PSSH:g}x", (x_pssh or 0) >= GOAL_X_PSSH),
            goal("cairn run: start-up (spawn to the run's start) at N=50", startup, f"<= {GOAL_STARTUP_S:g} s",
                  (startup or 0) <= GOAL_STARTUP_S, unit="s"),
        ]  # fmt: skip
    if (CAIRN_RUN, 500) in by:
        big = value(CAIRN_RUN, 500, "median_s")
        goals.append(
            goal(
                f"{CAIRN_RUN} at N=500", big, f"<= {GOAL_AT_500_S:g} s", (big or 0) <= GOAL_AT_500_S, unit="s"
            )
        )
    return goals


def print_process_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """The lead table: time, x cairn, memory and fds per method and N; cairn's start-up below it."""
    from bench.report import print_table, seconds

    print_table(
        title,
        ["method", "N", "median", "p90", "per host", "x cairn", "peak RSS", "MiB/host", "peak fds"],
        [
            [r["method"], r["hosts"], "FAILED", *["-"] * 6] if "failed" in r else [
                r["method"], r["hosts"], seconds(r["median_s"]), seconds(r["p90_s"]),
                f"{r['per_host_ms']:.1f} ms", "-" if r["x_cairn"] is None else f"{r['x_cairn']:.2f}x",
                f"{r['peak_rss_mib']:.0f} MiB", f"{r['rss_mib_per_host']:.2f}", r["peak_fds"],
            ]
            for r in rows
        ],
    )  # fmt: skip
    for row in rows:
        if "failed" in row:
            got = row.get("failed_run")
            print(f"FAILED: {row['method']} at N={row['hosts']}: {row['failed']}")
            if got:
                print(
                    f"  (that run: {got['elapsed_s']:.1f} s, peak RSS {got['peak_rss_mib']:.0f} MiB, "
                    f"peak fds {got['peak_fds']})"
                )
    print_table(
        "cairn run: start-up, from the wall clock before the spawn to the journal's started_at of the run "
        "(before any connection) and of the first step (after that host's connection)",
        ["N", "run: median", "p90", "first step: median", "p90"],
        [
            [
                r["hosts"],
                seconds(r["run_start_s"]["median_s"]),
                seconds(r["run_start_s"]["p90_s"]),
                seconds(r["startup_s"]["median_s"]),
                seconds(r["startup_s"]["p90_s"]),
            ]
            for r in rows
            if "startup_s" in r
        ],
    )
