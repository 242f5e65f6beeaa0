"""`cairn plan/run ID` reads only the file that names ID — and answers exactly as the whole library would.

The fast path must never change an answer: a duplicate id, an invalid file, an id the quick scan
cannot read, an unknown id all get the library's own answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CairnRunner

pytestmark = pytest.mark.cli


def runbook(rid: str, command: str, *, id_line: str | None = None) -> str:
    return (
        f"{id_line or f'id: {rid}'}\ntitle: t\nseverity: info\nsummary: s\n"
        f"detect:\n  - id: look\n    title: look\n    run: {command}\n"
    )


def plan(cairn: CairnRunner, folder: Path, rid: str) -> tuple[int, str, str]:
    result = cairn("plan", rid, "--runbooks", str(folder), "--no-preflight")
    return result.returncode, result.stdout, result.stderr


def test_the_named_runbook_runs_beside_a_broken_one(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(runbook("alpha", "echo alpha"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text("id: broken\ntitle: [unclosed\n", encoding="utf-8")
    code, out, err = plan(cairn, tmp_path, "alpha")
    assert code == 0, err
    assert "$ echo alpha" in out


def test_a_duplicate_id_gets_the_librarys_answer(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(runbook("twin", "echo first"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(runbook("twin", "echo second"), encoding="utf-8")
    code, out, err = plan(cairn, tmp_path, "twin")
    assert code == 0, err
    assert "$ echo first" in out and "echo second" not in out  # the later file is the duplicate


def test_an_id_written_in_a_way_the_scan_cannot_read_is_still_found(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text(runbook("flow", "echo flow", id_line="id: >-\n  flow"), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(runbook("other", "echo other"), encoding="utf-8")
    code, out, err = plan(cairn, tmp_path, "flow")
    assert code == 0, err
    assert "$ echo flow" in out


def test_an_invalid_runbook_is_reported_with_file_and_line(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: bad\ntitle: t\nseverity: dire\nsummary: s\n", encoding="utf-8")
    code, out, err = plan(cairn, tmp_path, "bad")
    assert code == 2 and out == ""
    assert f"{tmp_path / 'a.yaml'}:3:" in err


def test_an_unknown_id_lists_the_known_ones(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(runbook("alpha", "echo alpha"), encoding="utf-8")
    code, _, err = plan(cairn, tmp_path, "omega")
    assert code == 2
    assert "no runbook with id 'omega'" in err and "alpha" in err


def test_a_duplicate_whose_id_the_scan_cannot_read_still_gets_the_librarys_answer(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    # a.yaml comes first and holds the id in a folded scalar: the library runs it, the later file is the duplicate
    (tmp_path / "a.yaml").write_text(
        runbook("twin", "echo folded", id_line="id: >-\n  twin"), encoding="utf-8"
    )
    (tmp_path / "b.yaml").write_text(runbook("twin", "echo plain"), encoding="utf-8")
    code, out, err = plan(cairn, tmp_path, "twin")
    assert code == 0, err
    assert "$ echo folded" in out and "echo plain" not in out
