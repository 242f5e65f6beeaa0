"""Cairn's benchmarks: ``python -m bench [NAME ...] [--quick]`` (see bench/README.md).

Each benchmark is a module with ``DESCRIPTION`` and ``run(quick) -> dict``; it
prints its own tables, and the runner writes the dict to ``bench/results/NAME.json``
together with the machine it ran on. Timings are reported against the goals,
never asserted.
"""

BENCHMARKS = (
    "validate_1000",
    "cold_start",
    "startup",
    "fanout",
    "fanout_bastion",
    "tui",
    "serve",
    "output",
    "failover",
    "journal_growth",
    "decide",
    "runbook_tests",
)
"""Benchmark module names, in the order ``python -m bench`` runs them."""
