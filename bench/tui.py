"""The TUI: time from ``cairn tui`` start to first paint, and keystroke latency during a 50-host fan-out.

* **First paint** — ``cairn tui`` started in a real terminal (tmux, 120x40) as a
  fresh process; the clock runs from just before tmux starts it until
  ``capture-pane`` shows the library with a runbook id in it (polled every 5 ms).
  With the bundled runbooks and with 500 generated ones (``bench/corpus.py``).
  Goal: under 0.5 s (at the 90th percentile).
* **Keys during a fan-out** — the run screen in a real terminal (tmux, 120x40;
  ``python -m bench.tui_fanout``), running a step that streams a line every
  10 ms on each of 50 hosts at once (local execution, ``-f 50``: about 5,000
  lines a second into the UI; the rate reached is measured and reported). While
  it streams, two kinds of key are sent, one press at a time, 0.2 s apart (a
  person stepping through, not a key held down): ``↓``/``↑`` (select the next or
  previous step: the detail pane and the output of 50 hosts are drawn again) and
  ``k`` (show or hide the knowledge pane: every pane changes width, a full
  re-layout). The time from ``send-keys`` until ``capture-pane`` shows the
  change is the key's latency (polled every 2 ms; tmux's own round trip, ~7 ms,
  is included). Goal: under 50 ms at the 99th percentile, over at least 50
  presses of each kind (``PRESSES``; ``--quick`` sends fewer and says so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.corpus import generate
from bench.machine import REPO, tool
from bench.report import print_table, seconds

DESCRIPTION = "cairn tui: first paint (bundled, 500 runbooks) and key latency while 50 hosts stream (goals: < 0.5 s, < 50 ms)"
PAINT_GOAL_S = 0.5
KEY_GOAL_S = 0.050
HOSTS = 50
PRESSES = 100
"""Presses in a full run: the keys go ``↓ ↑ k k``, so 50 of each kind (a p99 of fewer means little)."""
QUICK_PRESSES = 20


def run(quick: bool) -> dict[str, Any]:
    cairn = tool("cairn")
    if cairn is None or shutil.which("tmux") is None:
        raise RuntimeError("needs the `cairn` console script and tmux")
    runs = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="cairn-bench-tui-") as scratch:
        root = Path(scratch)
        corpus = root / "corpus"
        generate(corpus, 500)
        bundled = len(list((REPO / "runbooks").glob("*.yaml")))
        paint = {
            f"bundled ({bundled})": first_paint(cairn, REPO / "runbooks", bundled, runs, root),
            "500 generated": first_paint(cairn, corpus, 500, runs, root),
        }
        keys, rate = asyncio.run(key_latency(root, presses=QUICK_PRESSES if quick else PRESSES))
    print_table(
        "cairn tui in tmux 120x40: from start to first paint, and to every runbook listed",
        ["runbooks", "moment", "median", "p90", "max", f"goal < {PAINT_GOAL_S:g} s"],
        [
            [
                name,
                moment,
                seconds(statistics.median(t)),
                seconds(_p(t, 0.9)),
                seconds(max(t)),
                _verdict(_p(t, 0.9), PAINT_GOAL_S) if moment == "first paint" else "—",
            ]
            for name, moments in paint.items()
            for moment, t in moments.items()
        ],
    )
    print_table(
        f"keys while {HOSTS} hosts stream output ({rate:,.0f} lines/s reached), cairn run screen in tmux 120x40",
        ["key", "presses", "median", "p90", "p99", "max", f"goal p99 < {KEY_GOAL_S * 1000:g} ms"],
        [
            [
                name,
                len(t),
                seconds(statistics.median(t)),
                seconds(_p(t, 0.9)),
                seconds(_p(t, 0.99)),
                seconds(max(t)),
                _verdict(_p(t, 0.99), KEY_GOAL_S),
            ]
            for name, t in keys.items()
        ],
    )
    return {
        "first_paint_s": {name: t for name, t in paint.items()},
        "key_latency_s": keys,
        "fanout_lines_per_s": rate,
        "goals": {"first_paint_s": PAINT_GOAL_S, "key_latency_p99_s": KEY_GOAL_S},
    }


PAINTED = "Cairn — runbooks for on-call"
"""The app's title: on screen from the first paint."""


def first_paint(cairn: str, runbooks: Path, count: int, runs: int, scratch: Path) -> dict[str, list[float]]:
    """Seconds from starting ``cairn tui`` in tmux until the first paint, and until all ``count`` runbooks are listed."""
    times: dict[str, list[float]] = {"first paint": [], "library listed": []}
    listed = f"{count} runbooks"
    env = os.environ | {"CAIRN_JOURNAL": str(scratch / "journal.db")}
    for index in range(runs + 1):  # the first run warms the page cache and is not counted
        socket = f"cairn-bench-{os.getpid()}-{index}"
        command = f"{cairn} tui --runbooks {runbooks}"
        started = time.perf_counter()
        subprocess.run(
            ["tmux", "-L", socket, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", command],
            check=True,
            env=env,
        )
        seen: dict[str, float] = {}
        try:
            while len(seen) < 2:
                screen = subprocess.run(
                    ["tmux", "-L", socket, "capture-pane", "-p", "-t", "bench"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                now = time.perf_counter() - started
                if PAINTED in screen:
                    seen.setdefault("first paint", now)
                if listed in screen:
                    seen.setdefault("library listed", now)
                if now > 30:
                    raise RuntimeError(f"cairn tui did not show {listed!r} within 30 s:\n{screen}")
                time.sleep(0.005)
        finally:
            subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
        if index:
            for name, value in seen.items():
                times[name].append(value)
    return times


async def key_latency(scratch: Path, presses: int) -> tuple[dict[str, list[float]], float]:
    """Seconds per press of each key while the fan-out streams, and the lines per second it streamed."""
    socket = f"cairn-bench-keys-{os.getpid()}"
    command = f"{sys.executable} -m bench.tui_fanout {scratch} {HOSTS}"
    env = os.environ | {"CAIRN_JOURNAL": str(scratch / "keys.db"), "PYTHONPATH": str(REPO)}
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", command],
        check=True,
        env=env,
    )
    latencies: dict[str, list[float]] = {"↓/↑ select a step": [], "k knowledge pane": []}
    try:
        screen = await _wait_screen(socket, lambda text: RUNNING in text and MARKER in text, 60)
        lines, started = _streamed(scratch), time.perf_counter()
        for index in range(presses):
            key = ("Down", "Up", "k", "k")[index % 4]
            changed = _knowledge_toggled(MARKER in screen) if key == "k" else _heading_shown(SELECTED[key])
            pressed = time.perf_counter()
            subprocess.run(["tmux", "-L", socket, "send-keys", "-t", "bench", key], check=True)
            screen = await _wait_screen(socket, changed, 10)
            latencies["k knowledge pane" if key == "k" else "↓/↑ select a step"].append(
                time.perf_counter() - pressed
            )
            if RUNNING not in screen:
                raise RuntimeError(
                    f"the fan-out ended after {index + 1} presses: make the step stream longer"
                )
            await asyncio.sleep(GAP_S)
        rate = (_streamed(scratch) - lines) / (time.perf_counter() - started)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
    return latencies, rate


def _knowledge_toggled(shown: bool) -> Callable[[str], bool]:
    return lambda text: (MARKER in text) != shown


def _heading_shown(heading: str) -> Callable[[str], bool]:
    return lambda text: heading in text


def _streamed(scratch: Path) -> int:
    """Lines of output the fan-out's hosts have written so far (the journal's artifacts keep every line)."""
    return sum(path.read_bytes().count(b"\n") for path in (scratch / "runs").glob("*/*/detect.stream.stdout"))


GAP_S = 0.2
"""Seconds between a key's effect showing and the next press."""
RUNNING = "running detect"
"""The run screen's status line while the step runs."""
MARKER = "Benchmark load for the TUI"
"""Text of the knowledge pane (the runbook's summary): on screen exactly while the pane is shown."""
SELECTED = {"Down": "verify · a line every 10 ms", "Up": "detect · a line every 10 ms"}
"""The detail pane's heading once ``↓`` / ``↑`` has selected the verify / detect step."""


async def _wait_screen(socket: str, done: Any, timeout: float) -> str:
    deadline = time.perf_counter() + timeout
    while True:
        text = subprocess.run(
            ["tmux", "-L", socket, "capture-pane", "-p", "-t", "bench"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if done(text):
            return text
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the screen did not change as expected within {timeout:g} s:\n{text}")
        await asyncio.sleep(0.002)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _verdict(value: float, goal: float) -> str:
    return "PASS" if value < goal else "FAIL"


if __name__ == "__main__":
    sys.exit(print(run("--quick" in sys.argv)))
