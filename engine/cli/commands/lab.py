"""``cairn lab up|status|down``: practice labs that reproduce each pitfall on this machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    emit_json,
    missing_runbook_dirs,
    runbook_dirs,
    usage,
)
from engine.cli.options import Commands


def register(commands: Commands) -> None:
    lab_dir = argparse.ArgumentParser(add_help=False)
    lab_dir.add_argument(
        "--dir",
        metavar="DIR",
        help="where labs live (default: $CAIRN_LAB_DIR or ~/.local/state/cairn/lab)",
    )
    lab = commands.add(
        "lab",
        cmd_lab,
        "practice labs that reproduce each pitfall on this machine: up, status, down",
        [],
    )
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    lab_up = lab_sub.add_parser(
        "up",
        parents=[lab_dir, commands.runbooks, commands.as_json],
        help="start labs (runbook ids, or all) and write an inventory and inputs for each",
        description="Start labs that reproduce the pitfalls, on loopback and unprivileged ports: a runbook's "
        "lab file beside it (ID.lab.yaml, docs/labs.md), else the bundled lab. Every lab that can start "
        "starts; each that cannot is reported and leaves nothing behind (exit 2). Prints, for each, the "
        "`cairn run` command that practises its runbook.",
    )
    lab_up.add_argument("names", nargs="+", metavar="NAME", help="runbook id of the lab, or all")
    lab_up.add_argument(
        "--healthy",
        action="store_true",
        help="build the lab without the pitfall (detect should find nothing)",
    )
    lab_sub.add_parser(
        "status",
        parents=[lab_dir, commands.runbooks, commands.as_json],
        help="which labs exist (bundled and declared beside the runbooks), which are up, whether their processes run",
    )
    lab_down = lab_sub.add_parser(
        "down",
        parents=[lab_dir, commands.as_json],
        help="stop labs (default: all): run each one's teardown, stop its processes, remove its files",
    )
    lab_down.add_argument("names", nargs="*", metavar="NAME", help="runbook id of the lab, or all")


def cmd_lab(args: argparse.Namespace) -> int:
    from engine.lab.base import LabError  # noqa: PLC0415
    from engine.lab.lifecycle import LabRoot  # noqa: PLC0415

    labs_root = LabRoot(Path(args.dir) if args.dir else None)
    try:
        if args.lab_command == "up":
            return _lab_up(args, labs_root)
        if args.lab_command == "down":
            return _lab_down(args, labs_root)
        return _lab_status(args, labs_root)
    except LabError as exc:
        return usage(str(exc))


def _lab_up(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab up``: every chosen lab that can start starts; each failure is said, with its reason."""
    from engine.lab.base import LabError  # noqa: PLC0415
    from engine.lab.catalog import choose  # noqa: PLC0415

    dirs = runbook_dirs(args)
    missing = missing_runbook_dirs(dirs)
    if missing:
        return usage(missing)
    chosen = choose(args.names, dirs)
    started, failed = [], []
    for entry in chosen:
        if not args.json:
            print(f"starting lab {entry.name} ...", file=sys.stderr, flush=True)
        try:
            started.append(labs_root.up(entry.definition(), healthy=args.healthy))
        except LabError as exc:
            failed.append({"name": entry.name, "error": str(exc)})
            print(f"cairn: error: {exc}", file=sys.stderr, flush=True)
    if args.json:
        emit_json({"root": str(labs_root.root), "labs": [i.as_dict() for i in started], "failed": failed})
    else:
        for info in started:
            print(f"\nlab {info.name} is up{' (healthy variant: no pitfall)' if info.healthy else ''}")
            for note in info.notes:
                print(f"  - {note}")
            print(f"  practise:  {info.command()}")
            print(f"  stop:      cairn lab down {info.name}" + (f" --dir {args.dir}" if args.dir else ""))
        if failed:
            names = ", ".join(f["name"] for f in failed)
            print(
                f"\n{len(started)} of {len(chosen)} lab{'s' if len(chosen) != 1 else ''} started; "
                f"did not start: {names} (the reasons are above; nothing of them was left running)"
            )
    return EXIT_USAGE if failed else EXIT_OK


def _lab_down(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab down``: each lab's teardown, then its processes and folder; needs only labs.json."""
    names = None if not args.names or "all" in args.names else list(args.names)
    stopped = labs_root.down(names)
    not_up = [n for n in names or () if n not in {s.name for s in stopped}]
    broken = [s for s in stopped if s.teardown is not None and not s.teardown.ok]
    if args.json:
        emit_json(
            {
                "root": str(labs_root.root),
                "stopped": [s.name for s in stopped],
                "not_up": not_up,
                "teardown": [
                    {"name": s.name} | s.teardown.as_dict() for s in stopped if s.teardown is not None
                ],
            }
        )
    else:
        print(f"stopped: {', '.join(s.name for s in stopped)}" if stopped else "no lab was up")
        for lab in stopped:
            if lab.teardown is not None and lab.teardown.ok:
                tail = lab.teardown.output.strip().splitlines()[-3:]
                print(f"  {lab.name}: teardown done" + "".join(f"\n    {line}" for line in tail))
        if not_up and stopped:
            print(f"not up: {', '.join(not_up)}")
    for lab in broken:
        assert lab.teardown is not None
        print(
            f"cairn: error: lab {lab.name}: {lab.teardown.describe()}\n"
            "its processes were stopped and its folder removed; undo by hand what its setup made outside it",
            file=sys.stderr,
        )
    return EXIT_USAGE if broken else EXIT_OK


def _lab_status(args: argparse.Namespace, labs_root: Any) -> int:
    """``cairn lab status``: every lab (bundled, declared beside the runbooks, and any that is up)."""
    from engine.lab.catalog import catalog  # noqa: PLC0415

    labs = {i.name: i for i in labs_root.status()}
    known = catalog(runbook_dirs(args))
    names = [*known, *(n for n in labs if n not in known)]
    if args.json:
        emit_json(
            {
                "root": str(labs_root.root),
                "labs": [
                    labs[n].as_dict()
                    if n in labs
                    else {"name": n, "up": False, "kind": known[n].kind.value, "source": known[n].source}
                    | ({"problem": known[n].problem} if known[n].problem else {})
                    for n in names
                ],
            }
        )
        return EXIT_OK
    print(f"labs under {labs_root.root}")
    for name in names:
        entry = labs.get(name)
        if entry is None:
            declared = f"  [{known[name].source}]" if known[name].source else ""
            print(f"  {name:28} down     {known[name].summary()}{declared}")
            continue
        dead = [p for p, alive in entry.running().items() if not alive]
        state = "up" if not dead else f"BROKEN ({', '.join(dead)} not running; `cairn lab down {name}`)"
        print(f"  {name:28} {state}{'  (healthy variant)' if entry.healthy else ''}")
        print(f"  {'':28} {entry.command()}")
    return EXIT_OK
