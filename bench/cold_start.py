"""Start-up time of ``cairn`` commands as fresh processes, against the interpreter floor and Ansible.

Goal (from the issue): ``cairn --help`` in under 0.3 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

from bench.machine import REPO, tool
from bench.report import print_table, ratio, seconds
from bench.timing import Stats, bench_env, time_command

DESCRIPTION = "wall time of cairn --help/validate/list/plan as fresh processes vs python and ansible (goal: --help < 0.3 s)"
GOAL_S = 0.3
FLOOR = "python -c pass"
PEER = "ansible --version"
HEAVY = ("yaml", "jsonschema", "jinja2", "ansible", "ansible_runner", "paramiko", "rich", "textual")
IMPORT_PROBES = {  # what `cairn --help` imports (the question), and what `cairn validate` adds
    "cairn --help": "import engine.cli; engine.cli.build_parser()",
    "cairn validate runbooks/": "import engine.cli; engine.cli.main(['validate', 'runbooks/'])",
}


def run(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 15
    cairn, ansible, playbook = tool("cairn"), tool("ansible"), tool("ansible-playbook")
    if cairn is None:
        raise RuntimeError("no `cairn` console script beside this interpreter or on PATH")
    commands: dict[str, list[str] | None] = {
        "cairn --help": [cairn, "--help"],
        "cairn validate runbooks/": [cairn, "validate", "runbooks/"],
        "cairn list": [cairn, "list"],
        "cairn plan branch-cleanup": [cairn, "plan", "branch-cleanup"],
        FLOOR: [sys.executable, "-c", "pass"],
        PEER: [ansible, "--version"] if ansible else None,
        "ansible-playbook --help": [playbook, "--help"] if playbook else None,
    }
    timed: dict[str, Stats] = {}
    for name, argv in commands.items():
        if argv is None:
            print(f"{name}: not installed, skipped")
            continue
        timed[name] = time_command(argv, runs, cwd=REPO)  # cwd: ./runbooks is the bundled folder
    imports = {name: import_profile(probe, 3 if quick else 7) for name, probe in IMPORT_PROBES.items()}
    results = {
        "goal": {"command": "cairn --help", "seconds": GOAL_S},
        "commands": {
            name: stats.as_dict()
            | {
                "x_python": stats.median / timed[FLOOR].median,
                "x_ansible_version": stats.median / timed[PEER].median if PEER in timed else None,
            }
            for name, stats in timed.items()
        },
        "imports": imports,
    }
    _print(results)
    return results


def import_profile(probe: str, runs: int) -> dict[str, Any]:
    """What ``probe`` imports: ``-X importtime`` over ``runs`` processes, median cumulative time per module."""
    cumulative: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    for _ in range(runs + 1):  # the first run is a warm-up (bytecode caches)
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", probe],
            cwd=REPO,
            env=bench_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, cumul, name = line.removeprefix("import time:").split("|")
            module = name.strip()
            cumulative.setdefault(module, []).append(int(cumul))
            depth[module] = (len(name) - len(name.lstrip()) - 1) // 2
    median = {m: statistics.median(v[1:] or v) for m, v in cumulative.items()}
    top = sorted(median, key=median.__getitem__, reverse=True)[:5]
    loaded = {m.split(".")[0] for m in median}
    return {
        "probe": probe,
        "runs": runs,
        "modules_imported": len(median),
        "top5_cumulative": [{"module": m, "cumulative_ms": median[m] / 1000, "depth": depth[m]} for m in top],
        "heavy_modules_loaded": sorted(h for h in HEAVY if h in loaded),
    }


def _print(results: dict[str, Any]) -> None:
    rows = [
        [
            name,
            seconds(s["median_s"]),
            seconds(s["p90_s"]),
            seconds(s["min_s"]),
            s["n"],
            f"{s['x_python']:.2f}x",
            "-" if s["x_ansible_version"] is None else f"{s['x_ansible_version']:.2f}x",
        ]
        for name, s in results["commands"].items()
    ]
    print_table(
        "fresh-process wall time (cwd: the repository)",
        ["command", "median", "p90", "min", "n", f"x {FLOOR}", f"x {PEER}"],
        rows,
    )
    for command, imports in results["imports"].items():
        print_table(
            f"{command}: top 5 cumulative imports of `{imports['probe']}` "
            f"(-X importtime, median of {imports['runs']}; depth 0 = top level)",
            ["module", "cumulative", "depth"],
            [[i["module"], f"{i['cumulative_ms']:.1f} ms", i["depth"]] for i in imports["top5_cumulative"]],
        )
        heavy = ", ".join(imports["heavy_modules_loaded"]) or "none"
        print(f"{imports['modules_imported']} modules imported; heavy ones ({', '.join(HEAVY)}): {heavy}")
    print()
    help_s = results["commands"]["cairn --help"]["median_s"]
    verdict = "met" if help_s < GOAL_S else "NOT met"
    ansible = results["commands"].get(PEER)
    peer = f", {ratio(help_s, ansible['median_s'])} of {PEER}" if ansible else ""
    print(f"goal cairn --help < {GOAL_S:g} s: {verdict} ({seconds(help_s)}{peer})")
