"""The static checks as tests, so CI (which runs only pytest) enforces them.

import-linter keeps the layers (pyproject.toml's ``[tool.importlinter]``); ``mypy --strict`` passes
over the code, the tests and the benchmarks (``[tool.mypy]``); and mypy is what catches a typo'd
event field, before any run does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

# `python -m importlinter.cli` imports the module and exits 0 without checking anything: call its command.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
)


def python(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``args`` in the repository (where the tools find their config)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=os.environ | {"COLUMNS": "1000"},  # import-linter's report is not wrapped at 80 columns
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_every_import_contract_is_kept() -> None:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"
    ]
    names = [contract["name"] for contract in contracts]
    assert names, "pyproject.toml declares no import contracts"

    done = python("-c", LINT_IMPORTS)

    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    for name in names:
        assert re.search(rf"^{re.escape(name)} KEPT\b", report, re.MULTILINE), f"{name!r} not kept:\n{report}"
    assert f"Contracts: {len(names)} kept, 0 broken." in report, report


def test_mypy_strict_passes_over_the_code_the_tests_and_the_benchmarks() -> None:
    checked = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert checked["strict"] is True
    assert {"engine", "tui", "tests", "bench"} <= set(checked["packages"])

    done = python("-m", "mypy")  # what [tool.mypy] configures; the cache is the repository's .mypy_cache

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout


EMIT = """\
from engine.core.events import EventBus, StepStarted
from engine.core.model import Phase

EventBus("r").emit(StepStarted(host="h", phase=Phase.DETECT, {fields}, command="c"))
"""
TYPO = EMIT.format(fields='step_id=7, titel="t"')  # a misspelt field, and a number for a string
FIXED = EMIT.format(fields='step_id="s", title="t"')


def mypy_on(module: Path, text: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy with the repository's (strict) configuration on ``module`` alone, written with ``text``."""
    module.write_text(text, encoding="utf-8")
    config = str(REPO / "pyproject.toml")
    return python("-m", "mypy", "--config-file", config, "--cache-dir", str(cache), str(module))


def test_a_misspelt_event_field_and_a_wrong_type_fail_mypy(tmp_path: Path) -> None:
    module, cache = tmp_path / "typo_event.py", tmp_path / "mypy_cache"

    done = mypy_on(module, TYPO, cache)

    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Unexpected keyword argument "titel" for "StepStarted"' in done.stdout, done.stdout
    assert 'Argument "step_id" to "StepStarted" has incompatible type "int"; expected "str"' in done.stdout
    assert "Found 2 errors in 1 file" in done.stdout, done.stdout

    fixed = mypy_on(module, FIXED, cache)

    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.startswith("Success: no issues found in 1 source file"), fixed.stdout
