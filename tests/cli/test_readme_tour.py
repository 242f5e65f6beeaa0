"""README's "A short tour" works as written: every command of it, in order, with the exit code it promises.

The tour builds its lab under /tmp/tour; this test runs it under a temporary folder instead (the only
change made to the commands), so that it never meets a tour a person is taking on the same machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.cli, pytest.mark.git, pytest.mark.lab]


def tour_commands() -> list[tuple[str, int]]:
    """(command, expected exit code) for each line of the tour's shell block; ``exit N`` in a comment."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A short tour") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("\n```", start)]
    commands = []
    for line in block.splitlines():
        if not line.strip():
            continue
        command, _, comment = line.partition("  # ")
        found = re.search(r"exit (\d+)", comment)
        commands.append((command.strip(), int(found.group(1)) if found else 0))
    return commands


def test_the_tour_lists_what_it_promises() -> None:
    commands = [c for c, _ in tour_commands()]
    assert commands[0] == "source .venv/bin/activate"
    assert any(c.startswith("cairn lab up branch-cleanup") for c in commands)
    assert commands.index("cairn lab down --dir /tmp/tour") > commands.index("cairn show-run last")


def test_every_command_of_the_readme_tour_works_as_written(tmp_path: Path) -> None:
    tour = tmp_path / "tour"
    venv_bin = REPO / ".venv" / "bin"
    env = os.environ | {"PATH": f"{venv_bin}:{os.environ['PATH']}"}  # what `source .venv/bin/activate` does
    outputs: dict[str, str] = {}
    for command, expected in tour_commands():
        if command == "source .venv/bin/activate":
            assert (venv_bin / "activate").is_file(), "the set-up scripts create .venv"
            continue
        line = command.replace("/tmp/tour", str(tour))
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == expected, (
            f"$ {command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        outputs[command] = done.stdout

    shop = "cairn run branch-cleanup -e repo=/tmp/tour/branch-cleanup/shop"
    assert "superseded_releases" in outputs[f"{shop} --phase detect"]
    assert "would run $ git -C" in outputs[f"{shop} --dry-run"]
    assert "not asked" in outputs[shop]
    assert "remediated" in outputs[f"{shop} --yes"]
    scripted = next(v for k, v in outputs.items() if k.endswith("--json"))
    assert json.loads(scripted)["hosts"][0]["outcome"] == "healthy"
    assert "branch-cleanup" in outputs["cairn show-run last"]
    assert not (tour / "branch-cleanup").exists(), "cairn lab down removed the lab"
    schema = json.loads((tmp_path / "tour-runbook.schema.json").read_text(encoding="utf-8"))
    assert schema["title"].startswith("Cairn runbook")
