"""engine.core.validate_cache and the faster paths under it: the same verdicts as a full, uncached check."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import expr, template_lint, validate_cache
from engine.core.loader import LoadResult, load_library, runbook_files
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "runbooks"


def verdicts(results: list[LoadResult]) -> list[tuple[object, ...]]:
    """What `cairn validate` shows of each file."""
    return [(r.path, r.declared_id, bool(r.problems), r.problems, r.warnings) for r in results]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CAIRN_CACHE_DIR", str(folder))
    return folder


DEEP_LOOPS = """\
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


def test_cached_and_fresh_verdicts_equal_load_librarys(cache_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "warned").mkdir()
    (tmp_path / "warned" / "deep.yaml").write_text(DEEP_LOOPS, encoding="utf-8")
    paths = [FIXTURES / "valid", FIXTURES / "invalid", REPO / "runbooks", tmp_path / "warned"]
    library = load_library(paths)
    expected = verdicts(
        [LoadResult(r.path, None, r.problems, r.declared_id, r.warnings) for r in library.results]
    )
    assert any(r.problems for r in library.results) and any(r.warnings for r in library.results)
    cold = validate_cache.validate_paths(paths, use_cache=False)
    first = validate_cache.validate_paths(paths)
    second = validate_cache.validate_paths(paths)
    assert cold.index is None and first.from_cache == 0
    playbooks = sum(
        b"playbook" in Path(r.path).read_bytes() for r in library.results if Path(r.path).is_file()
    )
    assert second.from_cache == len(library.results) - playbooks - _unreadable(library.results)
    assert verdicts(cold.results) == verdicts(first.results) == verdicts(second.results) == expected


def _unreadable(results: list[LoadResult]) -> int:
    return sum(1 for r in results if not Path(r.path).is_file() or Path(r.path).stat().st_size > 1024 * 1024)


def test_another_validator_uses_another_index(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    validate_cache.validate_paths([FIXTURES / "valid"])
    assert validate_cache.validate_paths([FIXTURES / "valid"]).from_cache > 0
    monkeypatch.setattr(validate_cache, "validator_digest", lambda: "an edited check")
    assert validate_cache.validate_paths([FIXTURES / "valid"]).from_cache == 0


def test_the_validator_digest_covers_the_checks_and_the_schema() -> None:
    digest = validate_cache.validator_digest()
    assert digest is not None and len(digest) == 64
    assert digest == validate_cache.validator_digest()


def test_concurrent_runs_leave_a_usable_index(cache_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    text = (FIXTURES / "valid" / "01_minimal.yaml").read_text(encoding="utf-8")
    for i in range(40):
        (folder / f"rb{i}.yaml").write_text(text.replace("id: minimal", f"id: minimal-{i}"), encoding="utf-8")
    code = "import sys; from pathlib import Path; from engine.core.validate_cache import validate_paths; validate_paths([Path(sys.argv[1])])"
    runs = [subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO) for _ in range(4)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0, 0]
    (index,) = (cache_dir / "validate").glob("*.json")
    assert len(json.loads(index.read_text(encoding="utf-8"))["files"]) == 40
    assert validate_cache.validate_paths([folder]).from_cache == 40


def test_listing_follows_file_symlinks_not_folder_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real" / "deep").mkdir(parents=True)
    for name in (
        "real/deep/z.yaml",
        "a.yml",
        "playbooks/p.yaml",
        "c.tests/t.yaml",
        ".yaml",
        "x.lab.yaml",
        "n.txt",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("id: x\n", encoding="utf-8")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "also.yaml").symlink_to(tmp_path / "a.yml")
    (tmp_path / "broken.yaml").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo.yaml")
    assert runbook_files([tmp_path]) == [tmp_path / "a.yml", tmp_path / "real" / "deep" / "z.yaml"]
    assert runbook_files([tmp_path / "also.yaml", tmp_path]) == [
        tmp_path / "also.yaml",
        tmp_path / "real" / "deep" / "z.yaml",
    ]


@pytest.mark.parametrize(
    "template",
    [
        "echo {{ inputs.repo }} {{ steps.first.out | length }}\n",
        "{{ out }} and {{ out | unquoted }} {{ vars.x }}",
        "{{ a | nope }} {{ b }}",
        "{{ a + }} {{ b }}",
        "{{ 'x' * 10**9 }}",
        "{{ x * 10**9 }} {{ 'a' }}",
        "{{- a }} {{ b -}}",
        "{{ a }}{% if b %}{{ c }}{% endif %}",
        "{{ {'a': 1}['a'] }} {{ '}}' }}",
        "{{ steps['x'].out }}{# note #}",
        "{{ }}",
    ],
)
def test_output_only_templates_check_as_a_whole_parse_does(template: str) -> None:
    expr.check.cache_clear()
    assert dataclasses.astuple(template_lint.check_template(template)) == dataclasses.astuple(
        template_lint._check(template, False)
    )
