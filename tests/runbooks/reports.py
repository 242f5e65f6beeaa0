"""Reading `cairn run --json` reports in the runbook tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.conftest import CairnRunner, Lab


def report_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON report a `cairn run --json` printed, or a failure showing what it printed instead."""
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"cairn run printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return report


def run_json(cairn: CairnRunner, lab: Lab, *extra: str) -> tuple[int, dict[str, Any]]:
    """`cairn run` on the lab with `--json`: (exit code, report)."""
    done = cairn(*lab.run_args(*extra, "--json"))
    return done.returncode, report_of(done)


def results(report: dict[str, Any], phase: str) -> dict[str, dict[str, Any]]:
    """The first host's step results of one phase, by step id."""
    return {r["step_id"]: r for r in report["hosts"][0]["results"] if r["phase"] == phase}


def statuses(report: dict[str, Any], phase: str) -> dict[str, str]:
    return {step: r["status"] for step, r in results(report, phase).items()}
