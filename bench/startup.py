"""Start-up: how long ``cairn run`` takes, on a 50-host SSH inventory, before it starts on the hosts.

**Start-up** is the time from just before the process is spawned to the run's start as the
journal records it (``runs.started_at``: the ``RunStarted`` event, emitted when the runbook is
loaded and checked, the inputs and the inventory resolved, the journal open and the executors
created — paramiko imported — and just before the first host is contacted). Also reported: the
first step's start (``steps.started_at``: after that host's SSH handshake, which 50 hosts do at
once), and the whole process.

Methods, each a fresh process, round-robin after one warm-up each (the warm-up also fills the
inventory cache for the cached method):

* ``cairn run, inventory cached``: the inventory resolved from Cairn's cache
  (:mod:`engine.core.inventory_cache`) — what every run after the first one sees;
* ``cairn run, no cache``: ``CAIRN_NO_CACHE=1``, so ansible-core is imported and parses the
  inventory every time — the first run after an inventory change;
* floors: ``cairn inventory -i INV`` (ansible-core's import and load alone), ``cairn --help``
  and ``python -c pass``.

Goal (issue 20, reported, never asserted): start-up <= 0.3 s on the 50-host inventory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.machine import REPO, tool
from bench.report import print_table, seconds
from bench.timing import Stats, bench_env

DESCRIPTION = "cairn run on a 50-host SSH inventory: time before the run starts on the hosts (goal <= 0.3 s)"
HOSTS = 50
FIRST_ADDRESS = 180
GOAL_S = 0.3
RUNBOOK = """id: startup
title: Start-up benchmark
severity: info
summary: Kernel release of every host.
targets: fleet
detect:
  - id: look
    title: kernel
    run: uname -r
"""
CACHED, UNCACHED = "cairn run, inventory cached", "cairn run, no cache"
INVENTORY, HELP, PYTHON = "cairn inventory -i INV", "cairn --help", "python -c pass"


class Startup:
    """A started fleet, its inventory and journal, and one timed call per method."""

    def __init__(self, work: Path, known_hosts: Path, inventory: Path) -> None:
        cairn = tool("cairn")
        if cairn is None:
            raise RuntimeError("no `cairn` script beside this interpreter or on PATH")
        (work / "runbooks").mkdir()
        (work / "runbooks" / "startup.yaml").write_text(RUNBOOK, encoding="utf-8")
        self.journal = work / "journal.db"
        self.run_argv = [
            cairn, "run", "startup", "--runbooks", str(work / "runbooks"), "-i", str(inventory),
            "--known-hosts", str(known_hosts), "-f", str(HOSTS), "--json", "--journal", str(self.journal),
        ]  # fmt: skip
        self.env = bench_env() | {"CAIRN_CACHE_DIR": str(work / "cache")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached
        self.floors = {
            INVENTORY: [cairn, "inventory", "-i", str(inventory)],
            HELP: [cairn, "--help"],
            PYTHON: [sys.executable, "-c", "pass"],
        }
        self.marks: dict[str, list[tuple[float, float]]] = {CACHED: [], UNCACHED: []}

    def run(self, method: str) -> float:
        """One ``cairn run``; records (start-up, first step) and returns the whole process's time."""
        env = self.env | ({"CAIRN_NO_CACHE": "1"} if method == UNCACHED else {})
        spawned = time.time()
        start = time.perf_counter()
        done = subprocess.run(self.run_argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        whole = time.perf_counter() - start
        report = json.loads(done.stdout) if done.stdout.startswith("{") else {"hosts": []}
        healthy = [h for h in report["hosts"] if h["outcome"] == "healthy"]
        if done.returncode != 0 or len(healthy) != HOSTS:
            raise RuntimeError(f"cairn run exited {done.returncode}: {done.stderr[-1500:]}")
        with sqlite3.connect(self.journal) as db:
            (began,) = db.execute("SELECT started_at FROM runs WHERE id = ?", (report["run_id"],)).fetchone()
            (first,) = db.execute(
                "SELECT min(started_at) FROM steps WHERE run_id = ?", (report["run_id"],)
            ).fetchone()
        self.marks[method].append((began - spawned, first - spawned))
        return whole

    def floor(self, method: str) -> float:
        start = time.perf_counter()
        subprocess.run(self.floors[method], env=self.env, cwd=REPO, capture_output=True, check=True)
        return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    from engine.lab.ssh_fleet import make_fleet

    runs = 5 if quick else 15
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-startup-") as tmp:
        work = Path(tmp)
        with make_fleet(work / "fleet", HOSTS, first_address=FIRST_ADDRESS) as fleet:
            inventory = work / "fleet.yml"
            hosts = {
                h.name: {
                    "ansible_host": h.address,
                    "ansible_port": h.port,
                    "ansible_user": fleet.user,
                    "ansible_ssh_private_key_file": str(fleet.user_key),
                }
                for h in fleet.hosts
            }
            inventory.write_text(yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts}}}}))
            bench = Startup(work, fleet.known_hosts, inventory)
            methods: list[tuple[str, Callable[[], float]]] = [
                (m, partial(bench.run, m)) for m in (CACHED, UNCACHED)
            ]
            methods += [(m, partial(bench.floor, m)) for m in (INVENTORY, HELP, PYTHON)]
            for _, action in methods:  # warm-up: bytecode, page cache, the inventory cache
                action()
            for marks in bench.marks.values():
                marks.clear()
            times: dict[str, list[float]] = {m: [] for m, _ in methods}
            for _ in range(runs):
                for method, action in methods:
                    times[method].append(action())
            imports = _import_profile(bench)
    results = _results(bench, times, runs, imports, load_before, os.getloadavg())
    _print(results)
    return results


def _import_profile(bench: Startup) -> list[dict[str, Any]]:
    """The heaviest top-level imports of a cached ``cairn run`` (``-X importtime``, median of 3)."""
    cumulative: dict[str, list[int]] = {}
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *bench.run_argv],
            env=bench.env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "cumulative" not in line:
                _, cumul, name = line.removeprefix("import time:").split("|")
                if not name.startswith("  "):  # top level only: the rest is inside these
                    cumulative.setdefault(name.strip(), []).append(int(cumul))
    median = {m: statistics.median(v) / 1000 for m, v in cumulative.items()}
    top = sorted(median, key=median.__getitem__, reverse=True)[:8]
    return [{"module": m, "cumulative_ms": median[m]} for m in top]


def _results(
    bench: Startup,
    times: dict[str, list[float]],
    runs: int,
    imports: list[dict[str, Any]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    rows = []
    for method, values in times.items():
        row: dict[str, Any] = {"method": method, **Stats(tuple(values)).as_dict()}
        if method in bench.marks:
            row["startup"] = Stats(tuple(s for s, _ in bench.marks[method])).as_dict()
            row["first_step"] = Stats(tuple(f for _, f in bench.marks[method])).as_dict()
        rows.append(row)
    cached = next(r for r in rows if r["method"] == CACHED)["startup"]["median_s"]
    return {
        "hosts": HOSTS,
        "runs": runs,
        "rows": rows,
        "imports_top_level": imports,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "goals": [
            {
                "goal": f"start-up before the run starts on {HOSTS} hosts ({CACHED})",
                "value": cached,
                "target": f"<= {GOAL_S:g} s",
                "passed": cached <= GOAL_S,
            }
        ],
    }


def _print(results: dict[str, Any]) -> None:
    def cell(row: dict[str, Any], key: str, field: str) -> str:
        return seconds(row[key][field]) if key in row else "-"

    print_table(
        f"cairn run on {results['hosts']} SSH hosts, fresh processes, median of {results['runs']} (round-robin)",
        ["method", "start-up", "p90", "first step", "whole process", "p90"],
        [
            [
                r["method"],
                cell(r, "startup", "median_s"),
                cell(r, "startup", "p90_s"),
                cell(r, "first_step", "median_s"),
                seconds(r["median_s"]),
                seconds(r["p90_s"]),
            ]
            for r in results["rows"]
        ],
    )
    print_table(
        "top-level imports of a cached `cairn run` (-X importtime, median of 3; inflates times)",
        ["module", "cumulative"],
        [[i["module"], f"{i['cumulative_ms']:.1f} ms"] for i in results["imports_top_level"]],
    )
    for goal in results["goals"]:
        verdict = "PASS" if goal["passed"] else "FAIL"
        print(f"\ngoal: {goal['goal']} {goal['target']}: {seconds(goal['value'])} — {verdict}")
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"load average before {before[0]:.2f}, after {after[0]:.2f} (on {os.cpu_count()} CPUs)")
