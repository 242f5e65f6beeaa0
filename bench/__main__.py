"""``python -m bench [NAME ...] [--quick] [--list]``: run benchmarks, print tables, write JSON."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from bench import BENCHMARKS
from bench.machine import machine_info
from bench.report import write_result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Cairn benchmarks: each prints a table and writes bench/results/NAME.json.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and a smaller corpus: a smoke check, not numbers to quote",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.list:
        for name in BENCHMARKS:
            print(f"{name:15}  {importlib.import_module(f'bench.{name}').DESCRIPTION}")
        return 0
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        print(f"=== {name}{' (quick)' if args.quick else ''}: {module.DESCRIPTION}", flush=True)
        machine, started = machine_info(), time.time()  # before the run: its load average is the machine's
        results = module.run(quick=args.quick)
        path = write_result(name, results, quick=args.quick, started=started, machine=machine)
        print(f"\n{name}: {time.time() - started:.1f} s; results in {path}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
