"""`cairn validate`, `schema`, `list`, `show` through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, CairnRunner

pytestmark = pytest.mark.cli

BROKEN = """\
id: broken
title: Broken
severity: high
summary: s
detect:
  - id: first
    title: one
    run: echo {{ inputs.nope }}
  - id: first
    title: two
    runn: echo
"""


def test_playbooks_folders_are_not_read_as_runbooks(cairn: CairnRunner) -> None:
    folder = REPO / "tests" / "fixtures" / "runbooks" / "valid"
    assert (folder / "playbooks" / "backup.yml").is_file()
    done = cairn("validate", str(folder))
    assert done.returncode == 0, done.stdout
    assert "backup.yml" not in done.stdout


def test_bundled_runbooks_validate(cairn: CairnRunner) -> None:
    done = cairn("validate", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runbooks/branch-cleanup.yaml: ok (branch-cleanup)" in done.stdout
    assert done.stdout.rstrip().endswith("valid")


def test_every_problem_in_every_file_with_location(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    (tmp_path / "junk.yml").write_bytes(b"\x00\x01binary")
    (tmp_path / "good.yaml").write_text(
        (REPO / "runbooks" / "branch-cleanup.yaml").read_text(), encoding="utf-8"
    )
    done = cairn("validate", str(tmp_path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    broken = tmp_path / "broken.yaml"
    assert (
        f"{broken}:3:11: [/severity] 'severity' must be one of info, warning, critical, not 'high'" in lines
    )
    assert any(line.startswith(f"{broken}:8:10: [/detect/0/run]") and "inputs.nope" in line for line in lines)
    assert any(line.startswith(f"{broken}:9:5: [/detect/1]") and "does nothing" in line for line in lines)
    assert any(
        line.startswith(f"{broken}:9:9: [/detect/1/id]") and "duplicate step id 'first'" in line
        for line in lines
    )
    assert any(
        line.startswith(f"{broken}:11:5: [/detect/1/runn]") and "did you mean 'run'" in line for line in lines
    )
    assert any(line.startswith(f"{tmp_path / 'junk.yml'}:1:1:") and "binary" in line for line in lines)
    assert any(line.endswith("ok (branch-cleanup)") for line in lines)
    assert "2 of 3 files invalid, 6 problems" in done.stdout
    assert "Traceback" not in done.stderr


def test_validate_json(cairn: CairnRunner, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    done = cairn("validate", "--json", str(tmp_path / "broken.yaml"))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    (entry,) = report["files"]
    assert entry["id"] == "broken"
    first = entry["problems"][0]
    assert first == {
        "file": str(tmp_path / "broken.yaml"),
        "line": 3,
        "column": 11,
        "pointer": "/severity",
        "message": "'severity' must be one of info, warning, critical, not 'high'",
    }
    assert len(entry["problems"]) == 5


def test_usage_errors_exit_2(cairn: CairnRunner, tmp_path: Path) -> None:
    missing = cairn("validate", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr
    unknown = cairn("validate", "--frobnicate")
    assert unknown.returncode == 2
    bare = cairn()
    assert bare.returncode == 2
    assert "validate" in bare.stdout


def test_schema_command_prints_the_shipped_schema(cairn: CairnRunner) -> None:
    done = cairn("schema")
    assert done.returncode == 0
    assert json.loads(done.stdout) == json.loads(
        (REPO / "engine" / "core" / "schema" / "runbook.schema.json").read_text()
    )


def test_list_and_show(cairn: CairnRunner, tmp_path: Path) -> None:
    listed = cairn("list", cwd=REPO)
    assert listed.returncode == 0
    assert "branch-cleanup" in listed.stdout and "info" in listed.stdout
    data = json.loads(cairn("list", "--json", cwd=REPO).stdout)
    ids = [rb["id"] for rb in data["runbooks"]]
    assert "branch-cleanup" in ids

    source = cairn("show", "branch-cleanup", "--markdown", cwd=REPO)
    assert source.returncode == 0
    assert source.stdout.startswith("# Aone Flow branch clean-up")
    for heading in ("## Symptoms", "## Cause", "## Detect", "## Remediate", "## Verify", "## References"):
        assert heading in source.stdout
    assert "*Trade-off:*" in source.stdout
    # Not a terminal: plain text, the Markdown rendered away (headings underlined, no ** or backquotes).
    shown = cairn("show", "branch-cleanup", cwd=REPO)
    assert shown.returncode == 0
    assert shown.stdout.startswith("Aone Flow branch clean-up")
    for heading in ("Symptoms\n--------", "Cause\n-----", "Detect\n------", "Verify\n------"):
        assert heading in shown.stdout
    assert "Trade-off: The branch name is gone for everyone." in shown.stdout
    assert "**" not in shown.stdout and "`" not in shown.stdout.split("Detect\n")[0]
    brief = cairn("show", "branch-cleanup", "--brief", cwd=REPO)
    assert "Symptoms" in brief.stdout and "Cause" not in brief.stdout

    missing = cairn("show", "no-such-runbook", cwd=REPO)
    assert missing.returncode == 2
    assert "no runbook with id 'no-such-runbook'" in missing.stderr
    assert "branch-cleanup" in missing.stderr  # says which ids exist

    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    invalid = cairn("list", "--runbooks", str(tmp_path / "rb"))
    assert "INVALID" in invalid.stdout and "5 problems" in invalid.stdout
    shown_invalid = cairn("show", "broken", "--runbooks", str(tmp_path / "rb"))
    assert shown_invalid.returncode == 2
    assert "5 problems" in shown_invalid.stderr and "[/severity]" in shown_invalid.stderr


NO_TRIGGERS = """\
id: reads-alert
title: Reads the alert without triggers
severity: warning
summary: s
detect:
  - id: look
    title: look
    run: echo {{ alert.labels.node }}
"""


def test_a_runbook_no_alert_can_start_is_told_its_alert_is_always_none(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    (tmp_path / "reads-alert.yaml").write_text(NO_TRIGGERS)
    done = cairn("validate", str(tmp_path))
    assert done.returncode == 1, done.stdout
    assert (
        "reads-alert.yaml:8:10: [/detect/0/run] template reads alert, but the runbook has no triggers: "
        "no alert ever starts it, so alert is always none; add a trigger (runbook format §10) or take "
        "the value as an input"
    ) in done.stdout


RISKY = """\
id: risky
title: Risky templates
severity: info
summary: Loops nested three deep and a macro that calls itself.
detect:
  - id: nested
    title: nested loops
    run: "echo {% for a in vars.rows %}{% for b in a %}{% for c in b %}{{ c }}{% endfor %}{% endfor %}{% endfor %}"
  - id: recursive
    title: a recursive macro
    run: "echo {% macro down(n) %}{{ n }}{% if n %}{{ down(n - 1) }}{% endif %}{% endmacro %}{{ down(3) }}"
"""


def test_what_may_go_past_a_templates_limits_is_a_warning_with_its_place(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    path = tmp_path / "risky.yaml"
    path.write_text(RISKY, encoding="utf-8")
    done = cairn("validate", str(path))
    assert done.returncode == 0, done.stdout  # warnings do not make a file invalid
    lines = done.stdout.splitlines()
    assert lines[0] == f"{path}: ok (risky)"
    assert any(
        line.startswith(f"{path}:8:10: warning: [/detect/0/run] ") and "loops nested 3 deep" in line
        for line in lines
    ), done.stdout
    assert any(
        line.startswith(f"{path}:11:10: warning: [/detect/1/run] ") and "macro 'down' calls itself" in line
        for line in lines
    ), done.stdout

    data = json.loads(cairn("validate", str(path), "--json").stdout)
    assert data["valid"] is True
    assert [w["pointer"] for w in data["files"][0]["warnings"]] == ["/detect/0/run", "/detect/1/run"]
