"""A git repository in the state Aone Flow leaves behind: the ``branch-cleanup`` lab.

Dates are relative to now, so the repository always has branches on both sides
of the one-week freeze limit. ``python -m engine.lab.git_branches DIR`` builds it.

What it holds (and what ``branch-cleanup`` should conclude):

* ``main`` — the trunk.
* ``feature/login`` — merged 30 days ago with a merge commit: frozen, old → delete.
* ``feature/export`` — fast-forwarded into main 20 days ago: frozen, old → delete.
* ``feature/payments`` — merged 2 days ago: frozen but recent → keep (hot-fix base).
* ``feature/search`` — not merged: in progress → keep.
* ``release/daily/20211102`` — rebuilt as ``release/daily/20211105``: superseded →
  delete; it holds a merge whose conflict was resolved *on the release branch*
  (``feature/search`` against ``feature/payments``) → diagnose reports it.
* ``release/daily/20211105`` — newest daily release → keep.
* ``release/prod/20211101`` — the only prod release → keep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.lab.base import LabContext, LabResult

DAY = 86400
RUNBOOK = "branch-cleanup"
SUMMARY = "a git repository with superseded release branches and old frozen feature branches"
PROGRAMS = ("git",)


@dataclass(frozen=True, slots=True)
class BranchLab:
    """The built repository and what the runbook should find in it."""

    path: Path
    superseded: tuple[str, ...] = ("release/daily/20211102",)
    frozen_old: tuple[str, ...] = ("feature/export", "feature/login")
    keep: tuple[str, ...] = (
        "feature/payments",
        "feature/search",
        "main",
        "release/daily/20211105",
        "release/prod/20211101",
    )


class _Git:
    def __init__(self, path: Path, now: float) -> None:
        self.path = path
        self.now = now

    def __call__(self, *args: str, days_ago: float = 0, check: bool = True) -> str:
        stamp = f"@{int(self.now - days_ago * DAY)} +0000"
        env = os.environ | {
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
            "GIT_AUTHOR_NAME": "Lab",
            "GIT_AUTHOR_EMAIL": "lab@cairn.invalid",
            "GIT_COMMITTER_NAME": "Lab",
            "GIT_COMMITTER_EMAIL": "lab@cairn.invalid",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        done = subprocess.run(
            ["git", "-C", str(self.path), *args], env=env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def commit_file(self, name: str, text: str, message: str, days_ago: float) -> None:
        (self.path / name).write_text(text, encoding="utf-8")
        self("add", name, days_ago=days_ago)
        self("commit", "-q", "-m", message, days_ago=days_ago)


def build_clean(path: Path, now: float | None = None) -> Path:
    """A repository with nothing to clean: the trunk and one feature in progress."""
    git = _init(path, now)
    git("checkout", "-q", "-b", "feature/search", days_ago=3)
    git.commit_file("search.txt", "search v1\n", "search: first cut", days_ago=3)
    git("checkout", "-q", "main")
    return path


def build(path: Path, now: float | None = None) -> BranchLab:
    """Build the lab repository at ``path`` (created; must not exist or be empty)."""
    git = _init(path, now)
    # feature/login: merged with a merge commit 30 days ago.
    git("checkout", "-q", "-b", "feature/login", days_ago=40)
    git.commit_file("login.txt", "login\n", "login: form", days_ago=35)
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "Merge feature/login", "feature/login", days_ago=30)
    # feature/export: fast-forwarded 20 days ago (no merge commit).
    git("checkout", "-q", "-b", "feature/export", days_ago=21)
    git.commit_file("export.txt", "export\n", "export: csv", days_ago=20)
    git("checkout", "-q", "main")
    git("merge", "-q", "--ff-only", "feature/export", days_ago=20)
    # Two features touching the same line: merging both conflicts.
    git("checkout", "-q", "-b", "feature/payments", days_ago=10)
    git.commit_file("config.txt", "timeout = 30  # payments\n", "payments: timeout", days_ago=9)
    git("checkout", "-q", "main")
    git("checkout", "-q", "-b", "feature/search", days_ago=8)
    git.commit_file("config.txt", "timeout = 60  # search\n", "search: timeout", days_ago=8)
    # release/prod/20211101: the only prod release.
    git("checkout", "-q", "-b", "release/prod/20211101", "main", days_ago=7)
    # release/daily/20211102: both features; the conflict is resolved on the release branch.
    git("checkout", "-q", "-b", "release/daily/20211102", "main", days_ago=6)
    git("merge", "-q", "--no-ff", "-m", "Merge feature/payments", "feature/payments", days_ago=6)
    git("merge", "-q", "--no-ff", "feature/search", days_ago=6, check=False)  # conflicts
    git.commit_file("config.txt", "timeout = 60  # payments + search\n", "Merge feature/search", days_ago=6)
    # release/daily/20211105: rebuilt with payments only; supersedes 20211102.
    git("checkout", "-q", "-b", "release/daily/20211105", "main", days_ago=4)
    git("merge", "-q", "--no-ff", "-m", "Merge feature/payments", "feature/payments", days_ago=4)
    # payments went live and was merged to main 2 days ago: frozen, but recent.
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "Merge feature/payments", "feature/payments", days_ago=2)
    return BranchLab(path)


def _init(path: Path, now: float | None) -> _Git:
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty; the lab builds a fresh repository")
    git = _Git(path, time.time() if now is None else now)
    git("init", "-q", "-b", "main", days_ago=60)
    git.commit_file("README.md", "# shop\n", "initial commit", days_ago=60)
    git.commit_file("config.txt", "timeout = 10\n", "config", days_ago=59)
    return git


def up(ctx: LabContext) -> LabResult:
    """The ``branch-cleanup`` lab: the repository in ``ctx.dir/shop`` (``--healthy``: nothing to clean)."""
    repo = ctx.dir / "shop"
    if ctx.healthy:
        build_clean(repo)
        notes = ["shop/ holds main and one feature in progress: nothing to clean"]
    else:
        lab = build(repo)
        notes = [
            f"shop/ holds {len(lab.superseded)} superseded release branch and "
            f"{len(lab.frozen_old)} feature branches frozen for more than a week",
            "release/daily/20211102 carries a conflict resolution made on the release branch: "
            "diagnose reports it before anything is deleted",
        ]
    return LabResult(group="git_servers", hosts={"git-lab": {}}, inputs={"repo": str(repo)}, notes=notes)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m engine.lab.git_branches DIR")
    lab = build(Path(sys.argv[1]))
    print(lab.path)
