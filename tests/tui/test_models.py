"""The TUI's models (``tui/models/``) are plain state: importing them loads no Textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import tui.models
from tests.conftest import REPO

pytestmark = pytest.mark.tui


def test_the_models_import_no_textual() -> None:
    """In a fresh interpreter, as a bench or another front end would import them."""
    names = sorted(f"tui.models.{m.name}" for m in pkgutil.iter_modules(tui.models.__path__))
    assert {"tui.models.library", "tui.models.progress"} <= set(names)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"tui/models imports textual: {done.stdout[:200]}"
