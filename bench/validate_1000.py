"""Validating 1,000 distinct runbooks: in-process, as ``cairn validate``, stage by stage, against a naive floor;
and ``cairn validate`` again with its cache warm, after one file changed and after none did.

Goals (from the issue): 1,000 runbooks validated in under 2 s cold on a 2-core machine, and in
under 0.3 s (the whole command) after one of them changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bench import corpus
from bench.machine import REPO, tool
from bench.report import print_table, ratio, seconds
from bench.timing import Stats, bench_env, repeat
from engine.core import expr, schema, semantics
from engine.core.loader import (  # _build_runbook: the model-build stage, timed alone
    _build_runbook,
    load_library,
)
from engine.core.yamlsource import read_yaml_file

DESCRIPTION = (
    "validate 1,000 distinct generated runbooks (goal: < 2 s cold, < 0.3 s after one changed); "
    "stage breakdown; naive baseline"
)
GOAL_S = 2.0
GOAL_ONE_CHANGED_S = 0.3
COLD = "cairn validate FOLDER, cold (no cache)"
COLD_FILLING = "cairn validate FOLDER, cold (empty cache, filled)"
ONE_CHANGED = "cairn validate FOLDER, 1 of 1,000 changed (cache warm)"
NONE_CHANGED = "cairn validate FOLDER, all cached, none changed"
GOAL_FILES = 1000
JOBS = min(os.cpu_count() or 1, 8)  # what `cairn validate` uses
STAGES = ("yaml parse", "schema", "semantics", "model build")


def run(quick: bool) -> dict[str, Any]:
    count = 100 if quick else GOAL_FILES  # --quick: a smoke check; numbers are projected to 1,000
    runs, stage_runs = (1, 1) if quick else (5, 3)
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        folder = Path(tmp) / "runbooks"
        files = corpus.generate(folder, count)
        sizes = [f.stat().st_size for f in files]
        distinct = len({hashlib.sha256(f.read_bytes()).digest() for f in files})
        cache = Path(tmp) / "cache"  # CAIRN_CACHE_DIR of the cached rows: never the user's own cache
        whole = {
            "load_library (in-process, 1 process)": repeat(lambda: _load_all(folder, count, 1), runs),
            f"load_library (in-process, {JOBS} processes)": repeat(
                lambda: _load_all(folder, count, JOBS), runs
            ),
            COLD: _cairn_validate(folder, runs, cache=None),
            COLD_FILLING: _cairn_validate(
                folder, runs, cache=cache, before=lambda _: shutil.rmtree(cache, ignore_errors=True)
            ),
        }
        cached = {  # the warm-up run of each fills the cache
            ONE_CHANGED: _cairn_validate(folder, runs, cache=cache, before=lambda i: _edit(files[i])),
            NONE_CHANGED: _cairn_validate(folder, runs, cache=cache),
        }
        stages = _stage_breakdown(files, stage_runs)
        baselines = {
            "yaml.safe_load + Draft202012Validator": repeat(
                lambda: _naive(files, yaml.SafeLoader), stage_runs
            ),
            "yaml CSafeLoader + Draft202012Validator": repeat(
                lambda: _naive(files, yaml.CSafeLoader), stage_runs
            ),
        }
    results = {
        "corpus": {
            "files": count,
            "distinct_files": distinct,
            "bytes_total": sum(sizes),
            "bytes_median": statistics.median(sizes),
            "bytes_min": min(sizes),
            "bytes_max": max(sizes),
            "reference_branch_cleanup_bytes": (REPO / "runbooks" / "branch-cleanup.yaml").stat().st_size,
        },
        "goal": {"files": GOAL_FILES, "seconds": GOAL_S},
        "whole": {name: _summary(stats, count) for name, stats in whole.items()},
        "cached": {name: stats.as_dict() for name, stats in cached.items()},
        "goal_one_changed_s": GOAL_ONE_CHANGED_S,
        "stages": {name: _summary(stats, count) for name, stats in stages.items()},
        "baselines": {name: _summary(stats, count) for name, stats in baselines.items()},
    }
    _print(results, quick)
    return results


def _load_all(folder: Path, count: int, jobs: int) -> None:
    expr.check.cache_clear()  # every pass starts as a fresh process would
    library = load_library([folder], jobs=jobs)
    if len(library.runbooks) != count:
        first = library.invalid[0] if library.invalid else None
        raise RuntimeError(f"corpus should be valid; {len(library.invalid)} invalid, e.g. {first}")


def _cairn_validate(
    folder: Path, runs: int, *, cache: Path | None, before: Callable[[int], object] = lambda _: None
) -> Stats:
    """``cairn validate FOLDER`` as a fresh process: a warm-up run (bytecode, page cache, the cache
    filled), then ``runs`` timed runs, each after ``before(i)``; with ``cache`` as its cache folder,
    else with the cache off."""
    cairn = tool("cairn")
    if cairn is None:
        raise RuntimeError("no `cairn` console script beside this interpreter or on PATH")
    env = bench_env() | ({"CAIRN_CACHE_DIR": str(cache)} if cache else {"CAIRN_NO_CACHE": "1"})
    argv = [cairn, "validate", str(folder)]

    def once() -> float:
        start = time.perf_counter()
        done = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True)
        spent = time.perf_counter() - start
        if done.returncode != 0 or not done.stdout.rstrip().endswith("valid"):
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        return spent

    once()
    times = []
    for index in range(runs):
        before(index)
        times.append(once())
    return Stats(tuple(times))


def _edit(path: Path) -> None:
    """Give one runbook different, still valid content (another title): its cached verdict no longer applies."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\ntitle: ", "\ntitle: (edited) ", 1), encoding="utf-8")


def _stage_pass(files: list[Path]) -> dict[str, float]:
    """One pass over every file, timing each stage of :func:`engine.core.loader.check_document` apart."""
    expr.check.cache_clear()
    totals = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter
    for path in files:
        t0 = clock()
        doc = read_yaml_file(path)
        t1 = clock()
        issues = schema.validate(doc.data)
        t2 = clock()
        semantics.check(doc)
        t3 = clock()
        _build_runbook(doc.data, doc)
        t4 = clock()
        if issues or doc.problems:
            raise RuntimeError(f"{path}: corpus runbook is invalid: {(issues or doc.problems)[0]}")
        for stage, spent in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[stage] += spent
    return totals


def _stage_breakdown(files: list[Path], runs: int) -> dict[str, Stats]:
    passes = [_stage_pass(files) for _ in range(runs + 1)][1:]  # the first pass is the warm-up
    stats = {stage: Stats(tuple(p[stage] for p in passes)) for stage in STAGES}
    stats["sum of stages"] = Stats(tuple(sum(p.values()) for p in passes))
    return stats


def _naive(files: list[Path], loader: type[Any]) -> None:
    """The least any validator pays: parse the YAML, run the same JSON Schema. No positions, no semantics."""
    validator = jsonschema.Draft202012Validator(schema.schema())
    for path in files:
        data = yaml.load(path.read_bytes(), Loader=loader)  # SafeLoader / CSafeLoader only
        for _ in validator.iter_errors(data):
            pass


def _summary(stats: Stats, count: int) -> dict[str, Any]:
    return stats.as_dict() | {
        "per_file_ms": stats.median / count * 1000,
        "projected_1000_s": stats.median / count * GOAL_FILES,
    }


def _print(results: dict[str, Any], quick: bool) -> None:
    c = results["corpus"]
    count = c["files"]
    print(
        f"\ncorpus: {count} runbooks ({c['distinct_files']} distinct), median {c['bytes_median'] / 1024:.1f} KiB "
        f"({c['bytes_min'] / 1024:.1f}-{c['bytes_max'] / 1024:.1f}), {c['bytes_total'] / 2**20:.1f} MiB total; "
        f"runbooks/branch-cleanup.yaml is {c['reference_branch_cleanup_bytes'] / 1024:.1f} KiB"
    )
    if quick:
        print("--quick: 100 files, one run each; the 1,000-file column is projected, not measured")
    head = ["measurement", "median", "p90", "n", "per file", f"{GOAL_FILES} files", f"vs goal {GOAL_S:g} s"]

    def rows(section: dict[str, Any]) -> list[list[object]]:
        return [
            [
                name,
                seconds(s["median_s"]),
                seconds(s["p90_s"]),
                s["n"],
                f"{s['per_file_ms']:.2f} ms",
                seconds(s["projected_1000_s"]),
                ratio(s["projected_1000_s"], GOAL_S),
            ]
            for name, s in section.items()
        ]

    print_table("whole validation", head, rows(results["whole"]))
    stage_total = results["stages"]["sum of stages"]["median_s"]
    stage_rows = [
        [*row, f"{results['stages'][row[0]]['median_s'] / stage_total:.0%}"]
        for row in rows(results["stages"])
    ]
    print_table("one pass, stage by stage (share of the sum)", [*head, "share"], stage_rows)
    print_table(
        "naive baselines: parse + the same JSON Schema, nothing else", head, rows(results["baselines"])
    )
    print_table(
        "ratios (median time / baseline median)",
        ["cairn", *results["baselines"]],
        [[name, *(ratio(s["median_s"], b["median_s"]) for b in results["baselines"].values())]
         for name, s in results["whole"].items()],
    )  # fmt: skip
    print_table(
        f"with the cache ({count} files; every run a fresh process)",
        ["measurement", "median", "p90", "min", "n", f"vs goal {GOAL_ONE_CHANGED_S:g} s"],
        [
            [name, seconds(s["median_s"]), seconds(s["p90_s"]), seconds(s["min_s"]), s["n"],
             ratio(s["median_s"], GOAL_ONE_CHANGED_S)]
            for name, s in results["cached"].items()
        ],
    )  # fmt: skip
    print()
    for name, s in results["whole"].items():
        verdict = "met" if s["projected_1000_s"] < GOAL_S else "NOT met"
        print(
            f"goal {GOAL_FILES} runbooks < {GOAL_S:g} s, {name}: {verdict} ({seconds(s['projected_1000_s'])})"
        )
    one = results["cached"][ONE_CHANGED]["median_s"]
    verdict = "met" if one < GOAL_ONE_CHANGED_S else "NOT met"
    where = " (--quick: 100 files, not 1,000)" if quick else ""
    print(f"goal one changed < {GOAL_ONE_CHANGED_S:g} s, {ONE_CHANGED}: {verdict} ({seconds(one)}){where}")
