"""Files a runbook names stay inside its folder: `validate`, `run` and `docs build` never reach outside.

The attacks (issue 15, item 6): a playbook named ``../x.yml``, an absolute path, or a symlink that
leads out of the runbook's folder (to a file elsewhere, to ``/etc/shadow``). Before confinement all
three passed ``validate``, ``run --yes`` executed the outside playbook and ``docs build`` copied the
outside file's lines into the training site.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.core.loader import load_library
from engine.docs.site import build_site
from tests.conftest import CairnRunner

pytestmark = pytest.mark.cli

SENTINEL = "outside-the-folder-3b1f"

RUNBOOK = """\
id: {id}
title: Runs a playbook
severity: warning
summary: An ansible step whose playbook is named {playbook}.
targets: web
detect:
  - id: look
    title: look
    run: "true"
remediate:
  - id: play
    title: play it
    ansible:
      playbook: {playbook}
"""

PLAYBOOK = """\
# {sentinel}
- hosts: all
  gather_facts: false
  tasks:
    - name: leave a mark
      ansible.builtin.file:
        path: {mark}
        state: touch
"""


def _library(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A folder of runbooks, each naming a playbook that leads out of it another way."""
    outside = tmp_path / "outside"
    outside.mkdir()
    mark = tmp_path / "the-outside-playbook-ran"
    (outside / "evil.yml").write_text(PLAYBOOK.format(sentinel=SENTINEL, mark=mark), encoding="utf-8")
    folder = tmp_path / "rb"
    (folder / "playbooks").mkdir(parents=True)  # a playbooks folder is not read as runbooks
    os.symlink(outside / "evil.yml", folder / "playbooks" / "link.yml")
    os.symlink("/etc/shadow", folder / "playbooks" / "shadow.yml")
    names = {
        "parent": "../outside/evil.yml",
        "absolute": str(outside / "evil.yml"),
        "symlink": "playbooks/link.yml",
        "shadow": "playbooks/shadow.yml",
    }
    for name, playbook in names.items():
        text = RUNBOOK.format(id=f"via-{name}", playbook=playbook)
        (folder / f"via-{name}.yaml").write_text(text, encoding="utf-8")
    return folder, mark, names


def test_validate_refuses_every_playbook_outside_the_runbooks_folder_with_the_reason(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    folder, _, names = _library(tmp_path)
    done = cairn("validate", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in names:
        where = f"{folder / f'via-{name}.yaml'}:14:17: [/remediate/0/ansible/playbook] playbook "
        problem = [line for line in lines if line.startswith(where)]
        assert len(problem) == 1, (name, done.stdout)
        assert "outside the runbook's folder" in problem[0] or "absolute path" in problem[0], problem
    assert "through a symlink" in next(line for line in lines if "via-symlink.yaml" in line)
    assert "internal error" not in done.stderr


@pytest.mark.ansible
def test_run_yes_never_executes_a_playbook_outside_the_folder(
    cairn: CairnRunner, tmp_path: Path, inventory: Path
) -> None:
    folder, mark, names = _library(tmp_path)
    for name in names:
        done = cairn(
            "run", f"via-{name}", "--runbooks", str(folder), "-i", str(inventory), "-l", "web-1", "--yes",
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "outside the runbook's folder" in done.stderr or "absolute path" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not mark.exists()


def test_docs_build_copies_nothing_from_outside_the_folder(cairn: CairnRunner, tmp_path: Path) -> None:
    folder, _, _ = _library(tmp_path)
    done = cairn("docs", "build", "out", "--runbooks", str(folder))
    assert done.returncode == 0, done.stderr
    site = "".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert SENTINEL not in site
    shadow = Path("/etc/shadow").read_text(errors="replace").splitlines()
    assert not [line for line in shadow if line.strip() and line in site]


def test_a_playbook_swapped_for_a_symlink_after_loading_is_not_shown(tmp_path: Path) -> None:
    folder, _, _ = _library(tmp_path)
    for path in folder.glob("via-*.yaml"):
        path.unlink()
    (folder / "playbooks" / "play.yml").write_text("- hosts: all\n  tasks: []\n", encoding="utf-8")
    (folder / "ok.yaml").write_text(RUNBOOK.format(id="ok", playbook="playbooks/play.yml"), encoding="utf-8")
    library = load_library([folder])
    assert [rb.id for rb in library.runbooks] == ["ok"], library.invalid
    (folder / "playbooks" / "play.yml").unlink()
    os.symlink(tmp_path / "outside" / "evil.yml", folder / "playbooks" / "play.yml")  # swapped once loaded

    build_site(library, tmp_path / "site")

    page = (tmp_path / "site" / "md" / "runbooks" / "ok.md").read_text()
    assert SENTINEL not in page
    assert (
        "The playbook is not shown: 'playbooks/play.yml' leads through a symlink outside the runbook's folder"
        in page
    )
