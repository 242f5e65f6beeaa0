"""`cairn validate`'s cache through the real command: what a user sees is the same with or without it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CairnRunner

pytestmark = pytest.mark.cli

GOOD = """\
id: good
title: Good
severity: info
summary: A valid runbook.
detect:
  - id: first
    title: One
    run: echo {{ inputs.name }}
inputs:
  name: {type: string, default: x}
"""

BROKEN = """\
id: broken
title: Broken
severity: high
summary: s
detect:
  - id: first
    title: one
    run: echo {{ inputs.nope }}
"""

DEEP = """\
id: deep
title: Loops nested deep
severity: warning
summary: Valid, with a warning.
detect:
  - id: first
    title: One
    run: "true"
    report: "{% for a in out %}{% for b in a %}{% for c in b %}{{ c }}{% endfor %}{% endfor %}{% endfor %}"
"""

PLAYBOOK = """\
id: with-playbook
title: Names a playbook
severity: info
summary: Valid while its playbook is there.
detect:
  - id: check
    title: Check
    run: "true"
remediate:
  - id: fix
    title: Fix
    ansible:
      playbook: fix.yml
"""


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """Where these tests' cache lives (given to every command as CAIRN_CACHE_DIR)."""
    return tmp_path / "user-cache"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    for name, text in (("good.yaml", GOOD), ("broken.yaml", BROKEN), ("deep.yaml", DEEP)):
        (runbooks / name).write_text(text, encoding="utf-8")
    return runbooks


def validate(cairn: CairnRunner, cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = cairn("validate", *args, CAIRN_CACHE_DIR=str(cache_dir))
    assert "Traceback" not in done.stderr, done.stderr
    return done


def cached_count(done: subprocess.CompletedProcess[str]) -> str:
    """What ``-v`` says: 'N of M runbook files from the cache …' (its first words)."""
    (line,) = [ln for ln in done.stderr.splitlines() if "runbook file" in ln]
    return line.split(" runbook file")[0]


def test_second_run_is_identical_and_comes_from_the_cache(
    cairn: CairnRunner, cache_dir: Path, folder: Path
) -> None:
    cold = validate(cairn, cache_dir, "--no-cache", str(folder))
    first = validate(cairn, cache_dir, "-v", str(folder))
    second = validate(cairn, cache_dir, "-v", str(folder))
    assert cached_count(first) == "0 of 3"
    assert cached_count(second) == "3 of 3"
    assert cold.returncode == first.returncode == second.returncode == 1
    assert cold.stdout == first.stdout == second.stdout
    broken = folder / "broken.yaml"
    assert f"{broken}:3:11: [/severity] 'severity' must be one of info, warning, critical, not 'high'" in (
        second.stdout.splitlines()
    )
    assert any(
        line.startswith(f"{folder / 'deep.yaml'}:9:13: warning:") for line in second.stdout.splitlines()
    )
    assert f"{folder / 'good.yaml'}: ok (good)" in second.stdout


def test_json_output_is_identical_from_the_cache(cairn: CairnRunner, cache_dir: Path, folder: Path) -> None:
    cold = validate(cairn, cache_dir, "--json", "--no-cache", str(folder))
    validate(cairn, cache_dir, "--json", str(folder))
    cached = validate(cairn, cache_dir, "--json", "-v", str(folder))
    assert cached_count(cached) == "3 of 3"
    assert cold.returncode == cached.returncode == 1
    assert json.loads(cached.stdout) == json.loads(cold.stdout)
    assert cached.stdout == cold.stdout


def test_an_edited_file_of_the_same_size_and_time_is_checked_again(
    cairn: CairnRunner, cache_dir: Path, folder: Path
) -> None:
    validate(cairn, cache_dir, str(folder))
    good = folder / "good.yaml"
    before = good.stat()
    good.write_text(GOOD.replace("severity: info", "severity: infx"), encoding="utf-8")
    os.utime(good, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert good.stat().st_size == before.st_size and good.stat().st_mtime_ns == before.st_mtime_ns
    done = validate(cairn, cache_dir, "-v", str(folder))
    assert cached_count(done) == "2 of 3"
    assert (
        f"{good}:3:11: [/severity] 'severity' must be one of info, warning, critical, not 'infx'; did you mean 'info'?"
        in (done.stdout.splitlines())
    )
    assert "2 of 3 files invalid" in done.stdout


def test_a_duplicate_id_across_cached_files_is_still_reported(
    cairn: CairnRunner, cache_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "dups"
    folder.mkdir()
    (folder / "a.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "b.yaml").write_text("# the same id\n" + GOOD, encoding="utf-8")
    cold = validate(cairn, cache_dir, "--no-cache", str(folder))
    validate(cairn, cache_dir, str(folder))
    cached = validate(cairn, cache_dir, "-v", str(folder))
    assert cached_count(cached) == "2 of 2"
    expected = f"{folder / 'b.yaml'}:2:1: [/id] runbook id 'good' is already used by {folder / 'a.yaml'}; ids must be unique"
    assert expected in cached.stdout.splitlines()
    assert cached.stdout == cold.stdout
    assert cached.returncode == cold.returncode == 1


def test_a_runbook_naming_a_playbook_is_checked_every_time(
    cairn: CairnRunner, cache_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ansible"
    folder.mkdir()
    (folder / "with-playbook.yaml").write_text(PLAYBOOK, encoding="utf-8")
    (folder / "fix.yml").write_text("- hosts: all\n  tasks: []\n", encoding="utf-8")
    valid = validate(cairn, cache_dir, "-v", str(folder / "with-playbook.yaml"))
    assert valid.returncode == 0, valid.stdout
    (folder / "fix.yml").unlink()
    gone = validate(cairn, cache_dir, "-v", str(folder / "with-playbook.yaml"))
    assert cached_count(gone) == "0 of 1"
    assert gone.returncode == 1
    assert "playbook 'fix.yml' not found next to the runbook" in gone.stdout


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "other shape", "wrong types", "a folder"],
)
def test_a_damaged_cache_gives_the_right_result_silently(
    cairn: CairnRunner, cache_dir: Path, folder: Path, damage: str
) -> None:
    cold = validate(cairn, cache_dir, "--no-cache", str(folder))
    validate(cairn, cache_dir, str(folder))
    (index,) = (cache_dir / "validate").glob("*.json")
    text = index.read_text(encoding="utf-8")
    if damage == "garbage":
        index.write_bytes(os.urandom(512))
    elif damage == "truncated":
        index.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "other shape":
        index.write_text(json.dumps([1, 2, 3]), encoding="utf-8")
    elif damage == "wrong types":
        stored = json.loads(text)
        for record in stored["files"].values():
            record["problems"] = [["one", None, 3, {}]]
            record["id_line"] = "x"
        index.write_text(json.dumps(stored), encoding="utf-8")
    else:
        index.unlink()
        index.mkdir()
    (cache_dir / "validate" / "junk.json").write_text("{not json", encoding="utf-8")
    done = validate(cairn, cache_dir, "-v", str(folder))
    assert cached_count(done) == "0 of 3"
    assert (done.stdout, done.returncode) == (cold.stdout, cold.returncode)
    again = validate(cairn, cache_dir, str(folder))
    assert (again.stdout, again.returncode, again.stderr) == (cold.stdout, cold.returncode, "")


def test_an_unwritable_cache_folder_changes_nothing(cairn: CairnRunner, tmp_path: Path, folder: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    cache_dir = blocker / "cache"  # cannot be made, whoever runs the test (root ignores modes)
    cold = validate(cairn, tmp_path / "unused", "--no-cache", str(folder))
    for _ in range(2):
        done = validate(cairn, cache_dir, str(folder))
        assert (done.stdout, done.returncode, done.stderr) == (cold.stdout, cold.returncode, "")
    assert cached_count(validate(cairn, cache_dir, "-v", str(folder))) == "0 of 3"


def test_deleting_the_cache_gives_a_cold_correct_run(
    cairn: CairnRunner, cache_dir: Path, folder: Path
) -> None:
    first = validate(cairn, cache_dir, str(folder))
    assert any((cache_dir / "validate").iterdir())
    subprocess.run(["rm", "-rf", str(cache_dir)], check=True)
    done = validate(cairn, cache_dir, "-v", str(folder))
    assert cached_count(done) == "0 of 3"
    assert (done.stdout, done.returncode) == (first.stdout, first.returncode)
    assert cached_count(validate(cairn, cache_dir, "-v", str(folder))) == "3 of 3"


def test_no_cache_reads_and_writes_nothing(cairn: CairnRunner, cache_dir: Path, folder: Path) -> None:
    done = validate(cairn, cache_dir, "--no-cache", "-v", str(folder))
    assert "validate cache off: 3 runbook files checked" in done.stderr
    assert not cache_dir.exists()
    off = cairn("validate", "-v", str(folder), CAIRN_CACHE_DIR=str(cache_dir), CAIRN_NO_CACHE="1")
    assert "validate cache off" in off.stderr and not cache_dir.exists()
    assert off.stdout == done.stdout


def test_the_cache_is_plain_json_holding_no_source(cairn: CairnRunner, cache_dir: Path, folder: Path) -> None:
    validate(cairn, cache_dir, str(folder))
    (index,) = (cache_dir / "validate").glob("*.json")
    stored = json.loads(index.read_text(encoding="utf-8"))
    assert sorted(stored["files"]) == sorted(
        str(folder / n) for n in ("broken.yaml", "deep.yaml", "good.yaml")
    )
    assert "echo {{ inputs.name }}" not in index.read_text(encoding="utf-8")
    assert not [p for p in (cache_dir / "validate").iterdir() if p.name.startswith(".tmp-")]
