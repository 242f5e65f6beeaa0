"""The wheel as a user gets it (`pip install .`, `pipx install`): built, installed into a fresh venv and
used from another folder — the bundled runbooks, the schema, the labs and the TUI's styles must be in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.package, pytest.mark.git, pytest.mark.cli]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with only the built wheel (and its dependencies) installed; yields its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheels = list(dist.glob("cairn-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheels[0]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield venv / "bin"


def use(bin_dir: Path, *args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run a command of the installed Cairn from a folder that is not the repository."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CAIRN_", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "PATH": f"{bin_dir}:{env['PATH']}"}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def test_the_installed_wheel_has_its_runbooks_labs_schema_and_styles(installed: Path, tmp_path: Path) -> None:
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()

    where = use(installed, "python", "-c", "import engine, tui; print(engine.__file__); print(tui.__file__)",
                cwd=elsewhere, home=home)  # fmt: skip
    assert where.returncode == 0, where.stderr
    engine_file, tui_file = (Path(line) for line in where.stdout.split())
    assert str(engine_file).startswith(str(installed.parent)), "the wheel's engine, not the checkout's"
    assert (tui_file.parent / "cairn.tcss").is_file() and (tui_file.parent / "screens" / "run.tcss").is_file()
    assert (engine_file.parent / "core" / "schema" / "runbook.schema.json").is_file()

    listed = use(installed, "cairn", "list", "--json", cwd=elsewhere, home=home)
    assert listed.returncode == 0, listed.stderr
    ids = {r["id"] for r in json.loads(listed.stdout)["runbooks"]}
    assert ids == {
        "node-notready-zombie-shim", "kubelet-cpu-memcg", "platform-adoption",
        "ip-whitelist-breakage", "dual-platform-deploy", "branch-cleanup",
    }  # fmt: skip

    valid = use(installed, "cairn", "validate", cwd=elsewhere, home=home)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "all 6 runbook files valid" in valid.stdout
    schema = use(installed, "cairn", "schema", cwd=elsewhere, home=home)
    assert json.loads(schema.stdout)["title"].startswith("Cairn runbook")

    labs = tmp_path / "labs"
    up = use(installed, "cairn", "lab", "up", "branch-cleanup", "--dir", str(labs), "--json", cwd=elsewhere,
             home=home)  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    lab = json.loads(up.stdout)["labs"][0]
    try:
        run = ["cairn", "run", "branch-cleanup", "-i", lab["inventory"], "-e", f"@{lab['inputs']}"]
        detect = use(installed, *run, "--phase", "detect", cwd=elsewhere, home=home)
        assert detect.returncode == 1, detect.stdout + detect.stderr  # the lab's pitfall is there
        assert "superseded_releases" in detect.stdout and "FINDING" in detect.stdout
        fixed = use(installed, *run, "--yes", cwd=elsewhere, home=home)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "remediated" in fixed.stdout
        history = use(installed, "cairn", "history", cwd=elsewhere, home=home)
        assert history.stdout.count("branch-cleanup") == 2
    finally:
        down = use(installed, "cairn", "lab", "down", "--dir", str(labs), cwd=elsewhere, home=home)
    assert down.returncode == 0, down.stderr
    assert "stopped: branch-cleanup" in down.stdout
    assert not Path(lab["dir"]).exists()
