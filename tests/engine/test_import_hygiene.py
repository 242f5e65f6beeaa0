"""The engine is a pure core: importing it never loads the TUI, and `cairn --help` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_FOR_HELP = ("textual", "tui", "ansible", "paramiko", "jsonschema", "jinja2", "yaml", "rich")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "engine",
        "engine.cli",
        "engine.core.loader",
        "engine.core.runner",
        "engine.core.journal",
        "engine.core.render",
        "engine.core.knowledge",
        "engine.core.reports",
        "engine.core.records",
        "engine.cli.terminal",
        "engine.core.plan",
        "engine.core.inventory",
        "engine.core.executors.local",
    ],
)
def test_engine_never_imports_textual(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert "textual" not in loaded
    assert "tui" not in loaded


def test_help_imports_no_heavy_library() -> None:
    loaded = _loaded_after("import engine.cli\nengine.cli.build_parser().format_help()")
    heavy = {name for name in loaded if name.split(".")[0] in HEAVY_FOR_HELP}
    assert heavy == set()
