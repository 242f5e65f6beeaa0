"""Lab files (ID.lab.yaml beside ID.yaml): every problem reported exactly, by `cairn validate`; built by LabRoot.

Each ``tests/fixtures/labs/invalid/NN_*.lab.yaml`` lists the problems it must produce in
``# expect: LINE:COL POINTER MESSAGE`` header lines (POINTER ``-`` is the root). Every
fixture is copied beside ``tests/fixtures/labs/practice.yaml`` as ``practice.lab.yaml``
and checked against that runbook.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from engine.core.loader import check_file, load_library, runbook_files
from engine.lab.base import LabContext, LabError
from engine.lab.catalog import has_lab, lab_for
from engine.lab.labfile import load_lab
from engine.lab.lifecycle import LabRoot
from tests.conftest import FIXTURES, CairnRunner, alive

LABS = FIXTURES / "labs"
VALID = sorted((LABS / "valid").glob("*.lab.yaml"))
INVALID = sorted((LABS / "invalid").glob("*.lab.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+) (.+)$")


def expected_lines(fixture: Path, shown_as: Path) -> list[str]:
    """The fixture's ``# expect:`` lines as `cairn validate` prints them for the file ``shown_as``."""
    lines = []
    for text in fixture.read_text(encoding="utf-8").splitlines():
        if text.startswith("# expect:"):
            match = _EXPECT.match(text)
            assert match is not None, f"{fixture.name}: malformed expectation {text!r}"
            line, column, ptr, message = match.groups()
            at = "" if ptr == "-" else f" [{ptr}]"
            lines.append(f"{shown_as}:{line}:{column}:{at} {message}")
    assert lines, f"{fixture.name} has no '# expect:' lines; an invalid fixture must list its problems"
    return lines


def beside_the_runbook(fixture: Path, tmp_path: Path) -> Path:
    """A runbook folder holding practice.yaml and ``fixture`` as its lab file; returns the lab file."""
    folder = tmp_path / fixture.name.removesuffix(".lab.yaml")
    folder.mkdir()
    shutil.copy(LABS / "practice.yaml", folder / "practice.yaml")
    lab = folder / "practice.lab.yaml"
    shutil.copy(fixture, lab)
    return lab


def test_fixture_folders_are_populated() -> None:
    # An empty glob would parametrize nothing and pass silently.
    assert len(VALID) >= 2
    assert len(INVALID) >= 12


@pytest.mark.cli
@pytest.mark.parametrize("fixture", INVALID, ids=lambda p: p.name)
def test_invalid_lab_files_report_exactly_their_problems(
    fixture: Path, cairn: CairnRunner, tmp_path: Path
) -> None:
    lab = beside_the_runbook(fixture, tmp_path)
    done = cairn("validate", str(lab.parent))
    assert done.returncode == 1, done.stdout
    shown = [line for line in done.stdout.splitlines() if line.startswith(f"{lab}:")]
    assert shown == expected_lines(fixture, lab)
    assert f"{lab.parent / 'practice.yaml'}: ok (practice)" in done.stdout
    assert "1 of 2 files invalid" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.cli
@pytest.mark.parametrize("fixture", VALID, ids=lambda p: p.name)
def test_valid_lab_files_validate(fixture: Path, cairn: CairnRunner, tmp_path: Path) -> None:
    lab = beside_the_runbook(fixture, tmp_path)
    done = cairn("validate", str(lab.parent))
    assert done.returncode == 0, done.stdout
    assert f"{lab}: ok (lab practice)" in done.stdout


@pytest.mark.cli
def test_lab_files_are_checked_when_named_and_when_beside_a_named_runbook(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    lab = beside_the_runbook(LABS / "invalid" / "06_unknown_input.lab.yaml", tmp_path)
    for named in (lab.parent / "practice.yaml", lab):
        done = cairn("validate", "--json", str(named))
        assert done.returncode == 1
        files = {f["path"]: f for f in json.loads(done.stdout)["files"]}
        assert files[str(lab)]["id"] == "lab practice"
        assert [p["pointer"] for p in files[str(lab)]["problems"]] == [
            "/inputs/lockdir",
            "/inputs/owner",
            "/inputs/Max-Age",
        ]
        assert (str(named.parent / "practice.yaml") in files) is (named.name == "practice.yaml")


@pytest.mark.cli
def test_a_lab_file_without_its_runbook_or_twice(cairn: CairnRunner, tmp_path: Path) -> None:
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "orphan.lab.yaml").write_text("summary: s\nsetup: 'true'\n", encoding="utf-8")
    shutil.copy(LABS / "practice.yaml", folder / "practice.yaml")
    shutil.copy(LABS / "valid" / "01_minimal.lab.yaml", folder / "practice.lab.yaml")
    shutil.copy(LABS / "valid" / "01_minimal.lab.yaml", folder / "practice.lab.yml")
    done = cairn("validate", str(folder))
    assert done.returncode == 1
    assert (
        f"{folder / 'orphan.lab.yaml'}:1:1: no runbook beside this lab file: a lab file is named after its "
        "runbook's file (orphan.yaml or orphan.yml)"
    ) in done.stdout.splitlines()
    assert (
        f"{folder / 'practice.lab.yml'}:3:1: practice.lab.yaml beside it already declares this runbook's lab; keep one"
    ) in done.stdout.splitlines()
    assert f"{folder / 'practice.lab.yaml'}: ok (lab practice)" in done.stdout
    assert "2 of 4 files invalid, 2 problems" in done.stdout


def test_runbook_discovery_skips_lab_files(tmp_path: Path) -> None:
    lab = beside_the_runbook(LABS / "valid" / "01_minimal.lab.yaml", tmp_path)
    assert runbook_files([lab.parent]) == [lab.parent / "practice.yaml"]
    assert runbook_files([lab]) == []
    library = load_library([lab.parent])
    assert [r.id for r in library.runbooks] == ["practice"] and library.invalid == []


def test_a_runbook_knows_its_lab(tmp_path: Path) -> None:
    lab = beside_the_runbook(LABS / "valid" / "01_minimal.lab.yaml", tmp_path)
    runbook = check_file(lab.parent / "practice.yaml").runbook
    assert runbook is not None and has_lab(runbook)
    definition = lab_for(runbook)
    assert definition is not None and definition.source == str(lab.resolve())
    assert definition.programs == ("bash",) and not definition.healthy_variant
    declared = load_lab(lab)
    assert declared.group == "batch_workers"  # the runbook's targets
    assert declared.hosts is None and declared.setup_timeout == 120
    lab.unlink()
    assert not has_lab(runbook) and lab_for(runbook) is None


# --------------------------------------------------------------------------- built by LabRoot, in process


FAILS_LATE = """\
summary: starts a process from its setup and one from processes, then one never gets ready
setup: sleep 300 &
processes:
  - name: first
    run: echo $$ > "$LAB_DIR/first"; exec sleep 300
    ready: test -s "$LAB_DIR/first"
  - name: second
    run: exec sleep 300
    ready: test -e never
    ready_timeout: 1s
"""


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every process a lab spawns or adopts, as (name, pid), seen through LabContext."""
    seen: list[tuple[str, int]] = []
    spawn, adopt = LabContext.spawn, LabContext.adopt

    def spy_spawn(
        self: LabContext,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        pid = spawn(self, argv, name=name, env=env, cwd=cwd)
        seen.append((name, pid))
        return pid

    def spy_adopt(self: LabContext, pid: int, name: str) -> None:
        adopt(self, pid, name)
        seen.append((name, pid))

    monkeypatch.setattr(LabContext, "spawn", spy_spawn)
    monkeypatch.setattr(LabContext, "adopt", spy_adopt)
    return seen


def test_a_declared_lab_that_fails_late_leaves_nothing_running(
    tmp_path: Path, recorded: list[tuple[str, int]]
) -> None:
    lab = beside_the_runbook(LABS / "valid" / "01_minimal.lab.yaml", tmp_path)
    lab.write_text(FAILS_LATE, encoding="utf-8")
    root = LabRoot(tmp_path / "labs")
    with pytest.raises(
        LabError, match=r"process second was ready \(`test -e never` exited 0\) did not happen"
    ):
        root.up(load_lab(lab).definition())
    assert [name for name, _ in recorded] == ["setup:sleep", "first", "second"]
    assert not any(alive(pid) for _, pid in recorded)
    assert not (tmp_path / "labs" / "practice").exists()
    assert root.status() == []


def test_a_setup_that_hangs_is_killed_with_what_it_started(
    tmp_path: Path, recorded: list[tuple[str, int]]
) -> None:
    lab = beside_the_runbook(LABS / "valid" / "01_minimal.lab.yaml", tmp_path)
    # With job control on, the background sleep gets a process group of its own (in the setup's
    # session): killing the setup's group on timeout does not reach it; it is adopted and stopped.
    lab.write_text(
        'summary: s\nsetup_timeout: 1s\nsetup: |\n  set -m\n  sleep 300 &\n  echo $! > "$LAB_TEST_BG"\n'
        "  set +m\n  sleep 300\n",
        encoding="utf-8",
    )
    background = tmp_path / "bg"
    root = LabRoot(tmp_path / "labs")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAB_TEST_BG", str(background))
        with pytest.raises(LabError, match=r"lab practice: setup did not finish within 1 s"):
            root.up(load_lab(lab).definition())
    pid = int(background.read_text())
    assert recorded == [("setup:sleep", pid)]
    assert not alive(pid)
    assert not (tmp_path / "labs" / "practice").exists()
