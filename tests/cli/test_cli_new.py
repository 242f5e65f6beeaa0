"""`cairn new` and `cairn schema --write`: a runbook to start from, valid and runnable, with editor support
in whatever folder it is written to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.cli.scaffold import modeline_for
from engine.core.schema import SCHEMA_PATH
from tests.conftest import REPO, CairnRunner

pytestmark = pytest.mark.cli


def test_a_new_runbook_is_valid_runs_and_its_modeline_names_a_schema_that_is_there(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "my-runbooks"
    done = cairn("new", "disk-almost-full", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    runbook = folder / "disk-almost-full.yaml"
    assert f"wrote {runbook}" in done.stdout
    assert f"cairn run disk-almost-full --runbooks {folder} --dry-run" in done.stdout

    first = runbook.read_text(encoding="utf-8").splitlines()[0]
    reference = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert reference, first
    named = runbook.parent / reference.group(1)
    assert named.read_text(encoding="utf-8") == SCHEMA_PATH.read_text(encoding="utf-8")

    valid = cairn("validate", str(folder))
    assert valid.returncode == 0, valid.stdout
    for phase in ("detect:", "diagnose:", "remediate:", "verify: detect", "requires:", "inputs:"):
        assert phase in runbook.read_text(encoding="utf-8")

    healthy = cairn("run", "disk-almost-full", "--runbooks", str(folder), "-e", "max_percent=100", "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert json.loads(healthy.stdout)["hosts"][0]["outcome"] == "healthy"
    found = cairn("run", "disk-almost-full", "--runbooks", str(folder), "-e", "max_percent=0", "--dry-run")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "would ask > TODO: what a human does" in found.stdout


def test_a_check_that_cannot_look_in_the_new_runbook_is_an_error(cairn: CairnRunner, tmp_path: Path) -> None:
    cairn("new", "disk-almost-full", "--dir", str(tmp_path))
    done = cairn("run", "disk-almost-full", "--runbooks", str(tmp_path), "-e", "path=/no/such/path", "--json")
    report = json.loads(done.stdout)
    assert report["exit_code"] == 2
    assert report["hosts"][0]["results"][0]["status"] == "error"


def test_new_never_overwrites_and_refuses_a_bad_id(cairn: CairnRunner, tmp_path: Path) -> None:
    assert cairn("new", "disk-full", "--dir", str(tmp_path)).returncode == 0
    mine = tmp_path / "disk-full.yaml"
    mine.write_text("# my work\n", encoding="utf-8")
    again = cairn("new", "disk-full", "--dir", str(tmp_path))
    assert again.returncode == 2
    assert f"{mine} already exists; choose another id, or --force to overwrite it" in again.stderr
    assert mine.read_text(encoding="utf-8") == "# my work\n"
    bad = cairn("new", "Disk_Full", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "not a runbook id: use kebab-case" in bad.stderr


def test_in_the_repository_s_runbooks_folder_the_modeline_names_the_shipped_schema() -> None:
    assert modeline_for(REPO / "runbooks") == ("../engine/core/schema/runbook.schema.json", False)
    bundled = (REPO / "runbooks" / "branch-cleanup.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert bundled == "# yaml-language-server: $schema=../engine/core/schema/runbook.schema.json"


def test_schema_write_puts_the_schemas_where_the_runbooks_are(cairn: CairnRunner, tmp_path: Path) -> None:
    done = cairn("schema", "--write", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runbook.schema.json").read_text(encoding="utf-8") == cairn("schema").stdout
    assert "# yaml-language-server: $schema=runbook.schema.json" in done.stdout
    lab = cairn("schema", "--lab")
    assert lab.returncode == 0 and json.loads(lab.stdout)["$schema"].endswith("2020-12/schema")
    assert (tmp_path / "lab.schema.json").read_text(encoding="utf-8") == lab.stdout


@pytest.mark.lab
def test_a_new_runbook_with_its_lab_goes_up_is_practised_and_goes_down(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    folder, labs = tmp_path / "mine", tmp_path / "labs"
    done = cairn("new", "disk-almost-full", "--dir", str(folder), "--lab", "--json")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert written["lab"] == str(folder / "disk-almost-full.lab.yaml")
    first = Path(written["lab"]).read_text(encoding="utf-8").splitlines()[0]
    assert (
        first == "# yaml-language-server: $schema=lab.schema.json" and (folder / "lab.schema.json").is_file()
    )
    assert cairn("validate", str(folder)).stdout.rstrip().endswith("all 1 runbook file and 1 lab file valid")

    for healthy, expected in ((False, 1), (True, 0)):
        up = cairn("lab", "up", "disk-almost-full", "--runbooks", str(folder), "--dir", str(labs), "--json",
                   *(["--healthy"] if healthy else []))  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        lab = json.loads(up.stdout)["labs"][0]
        run = cairn("run", "disk-almost-full", "--runbooks", str(folder), "-i", lab["inventory"],
                    "-e", f"@{lab['inputs']}", "--json")  # fmt: skip
        assert run.returncode == expected, run.stdout + run.stderr
        down = cairn("lab", "down", "--dir", str(labs))
        assert down.returncode == 0 and not Path(lab["dir"]).exists()
