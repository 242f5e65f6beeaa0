"""Journal growth: bytes per run of a 4-step runbook on each store, and ``history`` / ``show-run`` with 100,000 runs.

For SQLite (a file) and PostgreSQL (a fresh database in a throwaway cluster, ``tests/postgres.py``):

1. The schema is created (:func:`engine.core.store.migrate.upgrade`), then ``cairn run`` runs a
   4-step runbook (four detect steps on localhost, each printing five lines: about 1 KB of output
   per run) N times as fresh processes (50; 10 with ``--quick``). **Bytes per run** = the store's
   growth / N: a SQLite file plus its WAL after ``PRAGMA wal_checkpoint(TRUNCATE)``; PostgreSQL's
   ``pg_total_relation_size`` (data, indexes, TOAST) summed over the store's tables, measured as the
   runs left them (dead row versions from each step's insert-then-update included: autovacuum
   makes that room reusable later, it does not give it back). The runs' artifacts folders (complete
   output, on the machine's disk, not in the store) are counted apart.
2. ``history`` and ``show-run`` latency with those N runs in the store.
3. The store is filled to **100,000 runs** (10,000 with ``--quick``) by copying the last real run
   with bulk ``INSERT … SELECT`` (:mod:`bench.journal_fill`; the rows are what ``cairn run``
   wrote, ids and times changed; PostgreSQL is ``ANALYZE``d after) — not by running 100,000 runs.
   Bytes per copied run are reported too.
4. ``history`` and ``show-run`` latency again, ``show-run`` of a copy in the middle (an exact id).

Latency rows: the whole command as a fresh process (``cairn history --journal S``, ``cairn
show-run ID --journal S``), the same command in this process (``engine.cli.main``, output thrown
away), and Cairn's reader alone (:class:`~engine.core.journal_read.JournalReader`: open,
``list_runs(limit=20)`` or ``get_run(ID)``, close). Floor: ``cairn --help`` as a fresh process.
Goal (issue 16): ``history`` / ``show-run`` under 100 ms with 100,000 runs.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.journal_fill import fill, folder_bytes, store_bytes
from bench.report import print_table, ratio, seconds
from bench.servers import cairn_script, fresh_database, postgres, read
from bench.timing import Stats, bench_env, repeat, time_command

DESCRIPTION = "journal growth: bytes per run of a 4-step runbook (SQLite, PostgreSQL); history / show-run with 100,000 runs (goal < 100 ms)"
GOAL_S = 0.100
RUNBOOK = """
id: journal-growth
title: Four looks at a host
severity: info
summary: Four detect steps, each printing five lines (about 250 bytes).
detect:
  - id: uptime
    title: How long the host has been up
    run: seq -f 'uptime check %g, the host answered and has been up for a while' 1 4; echo done
  - id: disk
    title: Disk use
    run: seq -f 'disk check %g, /var is below the threshold (used 42 percent)' 1 4; echo done
  - id: memory
    title: Memory
    run: seq -f 'memory check %g, available memory is above the floor that is set' 1 4; echo done
  - id: services
    title: Services
    run: seq -f 'service check %g, every unit the runbook expects is active' 1 4; echo done
"""


@dataclass(frozen=True)
class Sizes:
    real_runs: int
    total_runs: int
    repetitions: int


def run(quick: bool) -> dict[str, Any]:
    sizes = Sizes(10, 10_000, 5) if quick else Sizes(50, 100_000, 15)
    cairn = cairn_script()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-growth-") as scratch, postgres() as cluster:
        root = Path(scratch)
        (root / "runbooks").mkdir()
        (root / "runbooks" / "journal-growth.yaml").write_text(RUNBOOK.lstrip(), encoding="utf-8")
        floor = time_command([cairn, "--help"], sizes.repetitions, cwd=root)
        for dialect in ("sqlite", "postgresql"):
            store: str | Path = (
                root / "journal.db" if dialect == "sqlite" else fresh_database(cluster, "growth")
            )
            print(f"  {dialect} …", flush=True)
            results[dialect] = _backend(cairn, root, store, sizes)
    _print(results, floor, sizes)
    return {
        "stores": results,
        "floor_cairn_help": floor.as_dict(),
        "sizes": sizes.__dict__,
        "goal_s": GOAL_S,
    }


def _backend(cairn: str, root: Path, store: str | Path, sizes: Sizes) -> dict[str, Any]:
    from engine.core.store import migrate

    migrate.upgrade(store)
    state = root / f"state-{'sqlite' if isinstance(store, Path) else 'postgresql'}"
    artifacts = store.parent / "runs" if isinstance(store, Path) else state / "cairn" / "runs"
    before = store_bytes(store)
    env = bench_env() | {"XDG_STATE_HOME": str(state)}
    for _ in range(sizes.real_runs):
        ran = subprocess.run(
            [cairn, "run", "journal-growth", "--runbooks", str(root / "runbooks"), "--journal", str(store)],
            cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if ran.returncode != 0:
            raise RuntimeError(f"cairn run exited {ran.returncode}: {ran.stderr[-2000:]}")
    after_runs = store_bytes(store)
    files, on_disk = folder_bytes(artifacts)
    [(template,)] = read(store, "SELECT id FROM runs ORDER BY started_at DESC LIMIT 1")
    small = _latencies(cairn, root, store, str(template), sizes.repetitions)
    copies = sizes.total_runs - sizes.real_runs
    started = time.perf_counter()
    fill(store, str(template), copies)
    fill_s = time.perf_counter() - started
    after_fill = store_bytes(store)
    [(count,)] = read(store, "SELECT count(*) FROM runs")
    if int(count) != sizes.total_runs:
        raise RuntimeError(f"the store holds {count} runs, not {sizes.total_runs}")
    large = _latencies(cairn, root, store, f"{template}-{copies // 2}", sizes.repetitions)
    return {
        "real_runs": sizes.real_runs,
        "bytes_before": before,
        "bytes_after_runs": after_runs,
        "bytes_per_run": (after_runs - before) / sizes.real_runs,
        "artifacts_bytes_per_run": files / sizes.real_runs,
        "artifacts_disk_bytes_per_run": on_disk / sizes.real_runs,
        "copies": copies,
        "fill_s": fill_s,
        "bytes_after_fill": after_fill,
        "bytes_per_copy": (after_fill - after_runs) / copies,
        "latency_small": {k: v.as_dict() for k, v in small.items()},
        "latency_large": {k: v.as_dict() for k, v in large.items()},
    }


def _latencies(cairn: str, root: Path, store: str | Path, run_id: str, n: int) -> dict[str, Stats]:
    from engine.cli.main import main
    from engine.core.journal_read import JournalReader

    journal = ["--journal", str(store)]

    def in_process(argv: list[str]) -> Callable[[], None]:
        def call() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
            if code != 0:
                raise RuntimeError(f"cairn {' '.join(argv)} exited {code}")

        return call

    def reader(action: Callable[[JournalReader], object]) -> Callable[[], None]:
        def call() -> None:
            opened = JournalReader(store)
            try:
                action(opened)
            finally:
                opened.close()

        return call

    return {
        "cairn history (process)": time_command([cairn, "history", *journal], n, cwd=root),
        "cairn show-run ID (process)": time_command([cairn, "show-run", run_id, *journal], n, cwd=root),
        "cairn history (in-process main)": repeat(in_process(["history", *journal]), n),
        "cairn show-run ID (in-process main)": repeat(in_process(["show-run", run_id, *journal]), n),
        "reader: list_runs(limit=20)": repeat(reader(lambda r: r.list_runs(limit=20)), n),
        "reader: get_run(ID)": repeat(reader(lambda r: r.get_run(run_id)), n),
    }


def _print(results: dict[str, Any], floor: Stats, sizes: Sizes) -> None:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    print_table(
        f"bytes per run: a 4-step runbook (about 1 KB of output), {sizes.real_runs} real runs, "
        f"then copies up to {sizes.total_runs:,} runs",
        ["store", "per run (real runs)", "per run (copies)", "store with all runs", "artifacts per run (files / on disk)",
         "fill time"],
        [
            [
                names[d],
                f"{r['bytes_per_run']:,.0f} B",
                f"{r['bytes_per_copy']:,.0f} B",
                f"{r['bytes_after_fill'] / 2**20:,.1f} MiB",
                f"{r['artifacts_bytes_per_run']:,.0f} B / {r['artifacts_disk_bytes_per_run']:,.0f} B",
                f"{r['fill_s']:.1f} s",
            ]
            for d, r in results.items()
        ],
    )  # fmt: skip
    for dialect, r in results.items():
        rows = []
        for what, large in r["latency_large"].items():
            small = r["latency_small"][what]
            rows.append(
                [
                    what,
                    seconds(small["median_s"]),
                    seconds(large["median_s"]),
                    seconds(large["p90_s"]),
                    ratio(large["median_s"], small["median_s"]),
                    ratio(large["median_s"], floor.median),
                    "PASS" if large["median_s"] < GOAL_S else "FAIL",
                ]
            )
        print_table(
            f"{names[dialect]}: latency with {r['real_runs']} runs and with {sizes.total_runs:,} runs "
            f"(N = {sizes.repetitions}; cairn --help as a process: {seconds(floor.median)})",
            ["what", f"{r['real_runs']} runs: median", f"{sizes.total_runs:,}: median", "p90",
             f"x {r['real_runs']} runs", "x cairn --help", f"goal < {GOAL_S * 1000:g} ms"],
            rows,
        )  # fmt: skip
