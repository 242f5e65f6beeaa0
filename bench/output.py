"""A step printing 20-200 MB through ``cairn run``: one endless line, and the same in 80-character lines.

Each row is a fresh ``cairn run`` (its own journal in a temporary folder) of a one-step runbook
whose command prints SIZE bytes, three times (once with ``--quick``); the table gives the median
wall time, the largest peak resident memory (the ``wait4`` rusage of the process and what it
waited for), the bytes the journal's artifacts file
kept, and the ratio to the command alone (its output to /dev/null: the floor). Before the fix an
unfinished line was copied on every read: 200 MB on one line took 295 s and 456 MB.

``CAIRN_BENCH_SOURCE=DIR`` runs the ``engine`` package found in DIR instead of this checkout (e.g. an
export of an older commit: ``git archive HEAD | tar -x -C DIR``), for before/after numbers.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.machine import REPO, tool
from bench.report import print_table, ratio
from bench.timing import bench_env

DESCRIPTION = (
    "cairn run on a step printing 20-200 MB as one line and as 80-character lines: seconds, peak RSS"
)
SIZES_MB = (20, 50, 100, 200)
SHAPES = {
    "one line": "head -c {size} /dev/zero | tr '\\0' x",
    "80-char lines": "yes " + "x" * 79 + " | head -c {size}",
}
RUNBOOK = """
id: output-{slug}
title: Print a lot
severity: info
summary: The output benchmark's step.
inputs:
  size: {{type: integer}}
detect:
  - id: flood
    title: print SIZE bytes
    run: |
      {command}
    timeout: 30m
"""


def _cairn() -> tuple[list[str], dict[str, str]]:
    """The command that runs cairn, and its environment (``CAIRN_BENCH_SOURCE`` picks another tree)."""
    source = os.environ.get("CAIRN_BENCH_SOURCE")
    env = bench_env()
    if source:
        env["PYTHONPATH"] = str(Path(source).resolve())
        return [sys.executable, "-m", "engine.cli"], env
    cairn = tool("cairn")
    if cairn is None:
        raise RuntimeError("no `cairn` console script beside this interpreter or on PATH")
    return [cairn], env


def _measured(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, int]:
    """Run ``argv``; (seconds, peak RSS in KiB, exit status)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.stderr is not None:
        process.stderr.close()
    return elapsed, usage.ru_maxrss, process.returncode


def run(quick: bool) -> dict[str, Any]:
    return measure((20,) if quick else SIZES_MB, runs=1 if quick else 3)


def measure(sizes: tuple[int, ...], runs: int) -> dict[str, Any]:
    """Each size and shape ``runs`` times: the median wall time and the largest peak RSS."""
    cairn, env = _cairn()
    rows: list[list[object]] = []
    results: dict[str, Any] = {"source": os.environ.get("CAIRN_BENCH_SOURCE") or str(REPO), "runs": []}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-output-") as scratch:
        root = Path(scratch)
        folder = root / "runbooks"
        folder.mkdir()
        for slug, command in zip(("line", "lines"), SHAPES.values(), strict=True):
            text = RUNBOOK.format(slug=slug, command=command.format(size="{{ inputs.size }}"))
            (folder / f"output-{slug}.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        for size_mb in sizes:
            size = size_mb * 1000 * 1000
            for slug, (shape, command) in zip(("line", "lines"), SHAPES.items(), strict=True):
                floor, _, _ = _measured(
                    ["/bin/bash", "-c", command.format(size=size) + " >/dev/null"], env, root
                )
                journal = root / f"journal-{slug}-{size_mb}"
                run_env = env | {"CAIRN_JOURNAL": str(journal / "journal.db")}
                argv = [
                    *cairn,
                    "run",
                    f"output-{slug}",
                    "--runbooks",
                    str(folder),
                    "-e",
                    f"size={size}",
                    "--json",
                ]
                timed = [_measured(argv, run_env, root) for _ in range(runs)]
                seconds = statistics.median(t[0] for t in timed)
                rss_kib, code = max(t[1] for t in timed), max(t[2] for t in timed)
                kept = max(p.stat().st_size for p in journal.glob("runs/*/*/detect.flood.stdout"))
                results["runs"].append(
                    {"size_mb": size_mb, "shape": shape, "seconds": seconds, "runs_s": [t[0] for t in timed],
                     "peak_rss_mib": rss_kib / 1024, "artifacts_bytes": kept, "floor_s": floor, "exit": code}
                )  # fmt: skip
                rows.append(
                    [f"{size_mb} MB, {shape}", f"{seconds:.2f} s", f"{rss_kib / 1024:.0f} MiB",
                     f"{kept / 1024 / 1024:.1f} MiB", f"{floor:.2f} s", ratio(seconds, floor)]
                )  # fmt: skip
                print(f"  {size_mb} MB {shape}: {seconds:.2f} s, {rss_kib / 1024:.0f} MiB", flush=True)
    print_table(
        f"cairn run, one step printing SIZE bytes ({results['source']})",
        ["output", "wall", "peak RSS", "artifacts kept", "command alone", "x floor"],
        rows,
    )
    return results
