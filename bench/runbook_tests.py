"""``cairn test runbooks/``: the bundled runbooks' test cases, as a person waits for them on every save.

The issue's goal: the bundled runbooks' tests in under 2 s. Measured as a fresh process (what
``cairn test`` costs a user), with the in-process time ``cairn test --json`` reports for the cases
themselves (reading each case and runbook, playing and comparing), and ``cairn --help`` in the
same run as the floor of any ``cairn`` command.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.machine import REPO, tool
from bench.report import print_table, ratio
from bench.timing import bench_env, time_command

DESCRIPTION = "cairn test runbooks/: every bundled runbook's test cases, fresh process (goal < 2 s)"
GOAL_S = 2.0


def run(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 15
    cairn = tool("cairn")
    if cairn is None:
        raise RuntimeError("no `cairn` console script beside this interpreter or on PATH")
    runbooks = str(REPO / "runbooks")
    floor = time_command([cairn, "--help"], runs, cwd=REPO)
    whole = time_command([cairn, "test", runbooks], runs, cwd=REPO)
    report = subprocess.run(
        [cairn, "test", runbooks, "--json"],
        cwd=REPO,
        env=bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    data = json.loads(report.stdout)
    cases = data["cases"]
    states = {state: sum(c["state"] == state for c in cases) for state in ("passed", "failed", "broken")}
    steps = sum(c["steps"] for c in cases)
    print_table(
        f"cairn test runbooks/ — {len(cases)} cases, {steps} steps replayed ({states})",
        ["what", "median", "p90", "vs --help"],
        [
            [
                "cairn test runbooks/ (fresh process)",
                f"{whole.median:.3f} s",
                f"{whole.p90:.3f} s",
                ratio(whole.median, floor.median),
            ],
            ["  of which the cases (in process)", f"{data['seconds']:.3f} s", "", ""],
            ["cairn --help (floor)", f"{floor.median:.3f} s", f"{floor.p90:.3f} s", "1.00x"],
        ],
    )
    verdict = "met" if whole.median < GOAL_S else "missed"
    print(f"\ngoal < {GOAL_S:.0f} s: {verdict} ({whole.median:.2f} s median)")
    return {
        "cases": len(cases),
        "steps": steps,
        "states": states,
        "in_process_s": data["seconds"],
        "cairn_test": whole.as_dict(),
        "floor": floor.as_dict(),
        "goal_s": GOAL_S,
        "goal_met": whole.median < GOAL_S,
    }
