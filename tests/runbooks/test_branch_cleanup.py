"""branch-cleanup end to end against real git repositories with dated branches."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from engine.lab import git_branches
from tests.conftest import REPO, CairnRunner

pytestmark = [pytest.mark.git, pytest.mark.cli]


def branches(repo: Path) -> set[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def step_results(report: dict, phase: str) -> dict[str, dict]:
    return {r["step_id"]: r for r in report["hosts"][0]["results"] if r["phase"] == phase}


def test_detect_and_diagnose_find_exactly_what_may_go(cairn: CairnRunner, tmp_path: Path) -> None:
    lab = git_branches.build(tmp_path / "repo")
    done = cairn("run", "branch-cleanup", "-e", f"repo={lab.path}", "--phase", "diagnose", "--json", cwd=REPO)
    assert done.returncode == 1, done.stderr  # present, nothing remediated
    report = json.loads(done.stdout)
    detect = step_results(report, "detect")
    assert detect["trunk_exists"]["status"] == "ok"
    assert detect["superseded_releases"]["status"] == "finding"
    assert [r["branch"] for r in detect["superseded_releases"]["out"]] == list(lab.superseded)
    assert detect["superseded_releases"]["out"][0]["superseded_by"] == "release/daily/20211105"
    assert detect["frozen_features"]["status"] == "finding"
    frozen = {r["branch"]: int(r["frozen_days"]) for r in detect["frozen_features"]["out"]}
    assert frozen == {"feature/export": 20, "feature/login": 30}  # payments froze 2 days ago: kept
    diagnose = step_results(report, "diagnose")["release_only_resolutions"]
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
    remediate = step_results(report, "remediate")
    # A manual step is never faked by --yes.
    assert remediate["redo_resolutions"]["status"] == "skipped"
    assert remediate["delete_superseded"]["status"] == "ok"
    assert remediate["delete_superseded"]["command"] == f"git -C {lab.path} branch -D release/daily/20211102"
    assert remediate["delete_frozen"]["command"].endswith("branch -D feature/export feature/login")
    verify = step_results(report, "verify")
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
