"""branch-cleanup end to end against real git repositories with dated branches."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.lab import git_branches
from tests.conftest import REPO, CairnRunner, LabStarter
from tests.runbooks.reports import report_of, results, statuses

pytestmark = [pytest.mark.git, pytest.mark.cli]


def branches(repo: Path) -> set[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_detect_and_diagnose_find_exactly_what_may_go(cairn: CairnRunner, tmp_path: Path) -> None:
    lab = git_branches.build(tmp_path / "repo")
    done = cairn("run", "branch-cleanup", "-e", f"repo={lab.path}", "--phase", "diagnose", "--json", cwd=REPO)
    assert done.returncode == 1, done.stderr  # present, nothing remediated
    report = json.loads(done.stdout)
    detect = results(report, "detect")
    assert detect["trunk_exists"]["status"] == "ok"
    assert detect["superseded_releases"]["status"] == "finding"
    assert [r["branch"] for r in detect["superseded_releases"]["out"]] == list(lab.superseded)
    assert detect["superseded_releases"]["out"][0]["superseded_by"] == "release/daily/20211105"
    assert detect["frozen_features"]["status"] == "finding"
    frozen = {r["branch"]: int(r["frozen_days"]) for r in detect["frozen_features"]["out"]}
    assert frozen == {"feature/export": 20, "feature/login": 30}  # payments froze 2 days ago: kept
    diagnose = results(report, "diagnose")["release_only_resolutions"]
    assert diagnose["status"] == "finding"
    assert [(r["branch"], r["subject"]) for r in diagnose["out"]] == [
        ("release/daily/20211102", "Merge feature/search")
    ]
    assert branches(lab.path) == set(lab.superseded) | set(lab.frozen_old) | set(lab.keep)


def test_remediate_deletes_only_what_may_go_and_verifies(cairn: CairnRunner, tmp_path: Path) -> None:
    lab = git_branches.build(tmp_path / "repo")
    done = cairn("run", "branch-cleanup", "-e", f"repo={lab.path}", "--yes", "--json", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"][0]["outcome"] == "remediated"
    remediate = results(report, "remediate")
    # A manual step is never faked by --yes.
    assert remediate["redo_resolutions"]["status"] == "not_asked"
    assert remediate["delete_superseded"]["status"] == "ok"
    assert remediate["delete_superseded"]["command"] == f"git -C {lab.path} branch -D release/daily/20211102"
    assert remediate["delete_frozen"]["command"].endswith("branch -D feature/export feature/login")
    verify = results(report, "verify")
    assert {k: v["status"] for k, v in verify.items()} == {
        "trunk_exists": "ok",
        "superseded_releases": "ok",
        "frozen_features": "ok",
    }
    assert branches(lab.path) == set(lab.keep)

    shown = cairn("show-run", report["run_id"])
    assert "approval: --yes" in shown.stdout


def test_clean_repository_is_healthy(cairn: CairnRunner, tmp_path: Path) -> None:
    repo = git_branches.build_clean(tmp_path / "repo")
    before = branches(repo)
    done = cairn("run", "branch-cleanup", "-e", f"repo={repo}", "--yes", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout
    assert "remediate" not in done.stdout
    assert branches(repo) == before == {"main", "feature/search"}


def test_hostile_branch_names_are_arguments(cairn: CairnRunner, tmp_path: Path) -> None:
    """git allows `;`, `$`, `{}` in branch names: deleting one must not run it."""
    repo = git_branches.build_clean(tmp_path / "repo")
    hostile = "feature/pwn;touch${IFS}owned"
    day = 86400
    env = {
        "GIT_COMMITTER_DATE": f"@{int(time.time() - 30 * day)} +0000",
        "GIT_AUTHOR_DATE": f"@{int(time.time() - 30 * day)} +0000",
    }
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "checkout", "-q", "-b", hostile], check=True)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "pwn"], check=True, env={**env, "PATH": "/usr/bin:/bin"}
    )
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    subprocess.run(
        [*git, "merge", "-q", "--no-ff", "-m", "merge pwn", hostile],
        check=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    done = cairn("run", "branch-cleanup", "-e", f"repo={repo}", "--yes", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert hostile not in branches(repo)
    assert not (tmp_path / "owned").exists()
    assert not (repo / "owned").exists()


def test_not_a_repository_fails_loudly(cairn: CairnRunner, tmp_path: Path) -> None:
    done = cairn("run", "branch-cleanup", "-e", f"repo={tmp_path}", "--yes", cwd=REPO)
    assert done.returncode == 2
    assert "detect could not decide: trunk_exists" in done.stdout


def test_through_the_bundled_inventory(cairn: CairnRunner, tmp_path: Path) -> None:
    lab = git_branches.build(tmp_path / "repo")
    done = cairn(
        "run",
        "branch-cleanup",
        "-i",
        "inventory/",
        "-e",
        f"repo={lab.path}",
        "--phase",
        "detect",
        "--json",
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert [h["host"] for h in report["hosts"]] == ["localhost"]
    plan = cairn("plan", "branch-cleanup", "-i", "inventory/", "-e", f"repo={lab.path}", cwd=REPO)
    assert plan.returncode == 0
    assert f"$ git -C {lab.path} rev-parse --verify --quiet refs/heads/main" in plan.stdout
    assert "(rendered at run time: reads steps.superseded_releases)" in plan.stdout


@pytest.mark.lab
def test_practice_lab_detect_remediate_then_clean(cairn: CairnRunner, lab: LabStarter) -> None:
    """`cairn lab up branch-cleanup` -> present; --yes cleans it up; detect then finds nothing."""
    lab_up = lab("branch-cleanup")
    repo = Path(lab_up.inputs["repo"])
    expected = git_branches.BranchLab(repo)
    before = branches(repo)
    assert before == set(expected.superseded) | set(expected.frozen_old) | set(expected.keep)

    done = cairn(*lab_up.run_args("--json"))  # no terminal, no --yes: nobody is asked about any deletion
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"][0]["host"] == "git-lab"
    assert report["hosts"][0]["outcome"] == "present"
    detect = results(report, "detect")
    assert (
        detect["superseded_releases"]["message"]
        == "1 superseded: release/daily/20211102 (by release/daily/20211105)"
    )
    assert (
        detect["frozen_features"]["message"]
        == "2 frozen longer than 7 days: feature/export (20d), feature/login (30d)"
    )
    assert {k: v["status"] for k, v in results(report, "remediate").items()} == {
        "redo_resolutions": "not_asked",
        "delete_superseded": "not_asked",
        "delete_frozen": "not_asked",
    }
    assert branches(repo) == before

    done = cairn(*lab_up.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"][0]["outcome"] == "remediated"
    assert branches(repo) == set(expected.keep)

    done = cairn(*lab_up.run_args("--phase", "detect"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout
    assert "no superseded release branch" in done.stdout
    assert "no frozen feature branch past its freeze" in done.stdout


@pytest.mark.lab
def test_practice_lab_healthy_variant_finds_nothing(cairn: CairnRunner, lab: LabStarter) -> None:
    lab_up = lab("branch-cleanup", healthy=True)
    repo = Path(lab_up.inputs["repo"])
    done = cairn(*lab_up.run_args("--yes", "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"][0]["outcome"] == "healthy"
    assert {k: v["status"] for k, v in results(report, "detect").items()} == {
        "trunk_exists": "ok",
        "superseded_releases": "ok",
        "frozen_features": "ok",
    }
    assert results(report, "remediate") == {}
    assert branches(repo) == {"main", "feature/search"}


@pytest.mark.lab
def test_git_older_than_2_38_keeps_superseded_release_branches(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """Without merge-tree --write-tree nobody can tell which resolutions would be lost: those branches stay."""
    old_git = tmp_path / "old-git" / "git"
    old_git.parent.mkdir()
    old_git.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "git version 2.30.2"; exit 0; fi\nexec /usr/bin/git "$@"\n',
        encoding="utf-8",
    )
    old_git.chmod(0o755)
    lab_up = lab("branch-cleanup")
    repo = Path(lab_up.inputs["repo"])
    expected = git_branches.BranchLab(repo)
    done = cairn(
        *lab_up.run_args("--yes", "--json"), PATH=f"{old_git.parent}{os.pathsep}{os.environ['PATH']}"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    host = report["hosts"][0]
    assert host["outcome"] == "present"
    assert host["reason"] == "verify still finds it: superseded_releases"
    version = results(report, "diagnose")["git_supports_merge_tree"]
    assert version["status"] == "finding"
    assert version["message"] == (
        "git 2.30.2 is older than 2.38: superseded release branches cannot be checked and are kept"
    )
    remediate = results(report, "remediate")
    assert remediate["delete_superseded"]["status"] == "skipped"
    assert remediate["delete_frozen"]["status"] == "ok"
    assert branches(repo) == set(expected.superseded) | set(expected.keep)


# --- A check that cannot look must not say "nothing found" ----------------------------------------------


@pytest.mark.lab
def test_a_repository_that_is_not_there_is_an_error_not_a_clean_repository(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    """`repo` names a path that does not exist (given in an inputs file, as a user would): every step is an error.

    Piped into awk, a git that could not open the repository used to leave awk an empty
    input: superseded_releases said "no superseded release branch" next to the errors.
    """
    lab_up = lab("branch-cleanup")
    missing = tmp_path / "srv" / "git" / "shop.git"
    wrong_inputs = tmp_path / "wrong-repo.yaml"
    wrong_inputs.write_text(f"repo: {missing}\n", encoding="utf-8")
    before = branches(Path(lab_up.inputs["repo"]))

    done = cairn(*lab_up.run_args("-e", f"@{wrong_inputs}", "--phase", "detect", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "failed"
    assert host["reason"].startswith("detect could not decide: ")
    detect = results(report, "detect")
    assert {step: r["status"] for step, r in detect.items()} == {
        "trunk_exists": "error",
        "superseded_releases": "error",
        "frozen_features": "error",
    }
    assert detect["trunk_exists"]["message"] == (
        f"exit code 2: cannot read the git repository {missing}: check the repo input"
    )
    assert detect["superseded_releases"]["message"] == (
        f"exit code 2: cannot list the branches of {missing}: check the repo input"
    )
    assert detect["frozen_features"]["message"] == (
        f"exit code 2: cannot read the history of refs/heads/main in {missing}: check the repo and trunk inputs"
    )

    # A full run approved in advance: nothing to diagnose or delete, and it says it failed.
    done = cairn(*lab_up.run_args("-e", f"@{wrong_inputs}", "--yes", "--json"))
    assert done.returncode == 2, done.stdout + done.stderr
    report = report_of(done)
    assert report["hosts"][0]["outcome"] == "failed"
    assert set(statuses(report, "detect").values()) == {"error"}
    assert [r["phase"] for r in report["hosts"][0]["results"]] == ["detect"] * 3
    assert branches(Path(lab_up.inputs["repo"])) == before


def test_a_superseded_branch_whose_history_cannot_be_read_is_kept(cairn: CairnRunner, tmp_path: Path) -> None:
    """The superseded branch's tip commit is missing from the object store (a damaged repository).

    for-each-ref still lists the branch, so detect finds it superseded; but diagnose cannot read
    its merges. It used to take the failed `git rev-list` for "no merges": "no conflict resolution
    would be lost", and --yes deleted the branch with the resolution on it.
    """
    lab = git_branches.build(tmp_path / "repo")
    (superseded,) = lab.superseded
    tip = subprocess.run(
        ["git", "-C", str(lab.path), "rev-parse", f"refs/heads/{superseded}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    loose = lab.path / ".git" / "objects" / tip[:2] / tip[2:]
    assert loose.is_file(), "the lab's objects are expected loose (not packed)"
    loose.unlink()

    done = cairn("run", "branch-cleanup", "-e", f"repo={lab.path}", "--yes", "--json", cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    report = report_of(done)
    host = report["hosts"][0]
    assert host["outcome"] == "present"
    assert host["reason"] == "verify still finds it: superseded_releases"
    assert statuses(report, "detect") == {
        "trunk_exists": "ok",
        "superseded_releases": "finding",
        "frozen_features": "finding",
    }
    check = results(report, "diagnose")["release_only_resolutions"]
    assert check["status"] == "error"
    assert check["message"] == (
        f"exit code 2: cannot list the merges of {superseded} (against release/daily/20211105) in {lab.path}"
    )
    remediate = results(report, "remediate")
    assert remediate["delete_superseded"]["status"] == "skipped"
    assert remediate["delete_frozen"]["status"] == "ok"  # what could be checked is still cleaned up
    assert branches(lab.path) == {superseded, *lab.keep}
