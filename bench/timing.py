"""Repeated wall-clock measurements: a warm-up run first, then N timed runs; median and p90."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    """Wall times of N runs, in seconds."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def p90(self) -> float:
        """Nearest-rank 90th percentile (with N < 10 runs it is the slowest run)."""
        ordered = sorted(self.runs)
        return ordered[math.ceil(0.9 * len(ordered)) - 1]

    @property
    def min(self) -> float:
        return min(self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": len(self.runs),
            "median_s": self.median,
            "p90_s": self.p90,
            "min_s": self.min,
            "runs_s": list(self.runs),
        }


def repeat(action: Callable[[], object], runs: int) -> Stats:
    """Call ``action`` once to warm up (imports, caches, page cache), then time ``runs`` calls."""
    action()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return Stats(tuple(times))


def bench_env() -> dict[str, str]:
    """The caller's environment without CAIRN_* settings, so every run sees the same runbooks."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}


def time_command(argv: Sequence[str], runs: int, *, cwd: Path, ok_codes: Collection[int] = (0,)) -> Stats:
    """Time ``argv`` as a fresh process ``runs`` times, after one warm-up run whose exit code is checked.

    The warm-up writes bytecode caches and fills the page cache, so the timed runs
    measure a cold *process* on a warm machine — what a user sees on the second try.
    """
    env = bench_env()
    warm = subprocess.run(
        argv, check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if warm.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(argv)} exited {warm.returncode}:\n{warm.stderr[-2000:]}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv,
            check=False,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return Stats(tuple(times))
