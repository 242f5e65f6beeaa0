"""`cairn doctor`: every program the runbooks, labs and tests need, and the package of each one missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.core import doctor
from tests.conftest import REPO, CairnRunner

pytestmark = pytest.mark.cli


def only_these_programs(folder: Path, *names: str) -> str:
    """A PATH holding links to just ``names`` (what a machine without the others would have)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        found = doctor.locate(name)
        assert found, f"{name} is needed to build this test's PATH"
        (folder / name).symlink_to(found)
    return str(folder)


def test_every_program_is_here_on_a_machine_set_up_by_the_test_script(cairn: CairnRunner) -> None:
    done = cairn("doctor")
    assert done.returncode == 0, done.stdout  # ./scripts/test installed every package it names
    assert "all 26 programs are here" in done.stdout


def test_a_missing_program_is_named_with_its_package_and_what_it_blocks(
    cairn: CairnRunner, tmp_path: Path
) -> None:
    path = only_these_programs(tmp_path / "bin", "bash", "ps", "pgrep", "awk", "timeout", "git", "curl")
    done = cairn("doctor", "--for", "try", "--json", PATH=path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    crontab = next(p for p in report["programs"] if p["program"] == "crontab")
    assert (crontab["ok"], crontab["path"], crontab["package"]) == (False, None, "cron")
    assert any("install_session_cleanup" in use["what"] for use in crontab["uses"])
    assert "cron" in report["missing_packages"]
    assert "git" not in report["missing_packages"]
    assert report["install"].startswith("apt-get install -y --no-install-recommends ")  # root: no sudo

    text = cairn("doctor", "--for", "try", PATH=path)
    assert text.returncode == 1
    assert "MISSING  crontab" in text.stdout
    assert "blocks runbook node-notready-zombie-shim: remediation step install_session_cleanup" in text.stdout
    assert "install them with:  apt-get install -y --no-install-recommends" in text.stdout


def test_a_git_too_old_for_branch_cleanup_is_a_problem(cairn: CairnRunner, tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    old_git = folder / "git"
    old_git.write_text("#!/bin/sh\necho 'git version 2.30.2'\n", encoding="utf-8")
    old_git.chmod(0o755)
    done = cairn("doctor", "--for", "runbooks", "--json", PATH=f"{folder}:{os.environ['PATH']}")
    assert done.returncode == 1
    git = next(p for p in json.loads(done.stdout)["programs"] if p["program"] == "git")
    assert (git["ok"], git["version"], git["minimum"]) == (False, "2.30.2", "2.38")
    assert "merge-tree --write-tree" in git["problem"]


def test_the_setup_scripts_read_the_missing_packages_from_the_same_table(tmp_path: Path) -> None:
    """What ./scripts/try and ./scripts/test install comes from this one list, with the system's Python."""
    path = only_these_programs(tmp_path / "bin", "bash", "python3")
    done = subprocess.run(
        [sys.executable, "-m", "engine.core.doctor", "--packages", "test"],
        cwd=REPO,
        env=os.environ | {"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    packages = done.stdout.split()
    for package in ("git", "cron", "chromium", "tmux", "prometheus-alertmanager"):  # /usr/bin programs
        assert package in packages
    assert "bash" not in packages  # it is there
    assert len(packages) == len(set(packages))
    try_only = subprocess.run(
        [sys.executable, "-m", "engine.core.doctor", "--packages", "try"],
        cwd=REPO,
        env=os.environ | {"PATH": path},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "cron" in try_only and "chromium" not in try_only and "tmux" not in try_only


def test_a_test_that_needs_a_missing_program_fails_at_once_naming_the_package(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_needs_tmux.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.tmux
            def test_terminal():
                raise AssertionError("the hook should have stopped this test before it ran")
            """
        ),
        encoding="utf-8",
    )
    path = only_these_programs(tmp_path / "bin", "bash")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests), "-p", "tests.conftest", "-q", "--rootdir", str(REPO)],
        cwd=REPO,
        env=os.environ | {"PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "this test needs tmux (not found on PATH or in /usr/sbin; apt-get install tmux)" in done.stdout
    assert "should have stopped" not in done.stdout


def test_preflight_hints_come_from_the_same_table() -> None:
    assert doctor.package_hint("crontab") == "Debian package cron"
    assert doctor.package_hint("/usr/sbin/nginx") == "Debian package nginx"
    assert doctor.package_hint("crictl").startswith("not a Debian package: cri-tools")
    assert doctor.package_hint("no-such-tool") == ""


def fake_program(folder: Path, text: str) -> None:
    folder.mkdir(parents=True)
    (folder / folder.name).write_text(f"#!/bin/sh\necho '{text}'\n", encoding="utf-8")
    (folder / folder.name).chmod(0o755)


def test_programs_off_path_are_found_in_versioned_folders_newest_first(tmp_path: Path) -> None:
    """Debian keeps PostgreSQL's server programs in /usr/lib/postgresql/VERSION/bin, off PATH."""
    for version in ("9.6", "16", "13"):
        fake_program(tmp_path / "lib" / version / "bin" / "initdb", f"initdb (PostgreSQL) {version}.1")
    folders = (str(tmp_path / "lib" / "*" / "bin" / "initdb"),)
    program = doctor.Program(
        "initdb", "postgresql", (doctor.Use("tests", "x"),), ("--version",), folders=folders
    )
    finding = doctor.check_program(program, path=str(tmp_path / "empty"))
    assert (finding.ok, finding.path, finding.version) == (
        True,
        str(tmp_path / "lib/16/bin/initdb/initdb"),
        "16.1",
    )

    missing = doctor.Program("initdb", "postgresql", (), folders=(str(tmp_path / "none" / "*" / "bin"),))
    finding = doctor.check_program(missing, path=str(tmp_path / "empty"))
    assert finding.path is None
    assert finding.problem == f"not found on PATH, in /usr/sbin or in {tmp_path}/none/*/bin"


def test_doctor_lists_postgresqls_server_programs_for_the_tests(cairn: CairnRunner) -> None:
    done = cairn("doctor", "--for", "tests", "--json")
    found = {p["program"]: p for p in json.loads(done.stdout)["programs"]}
    for name in ("initdb", "pg_ctl", "postgres"):
        assert found[name]["ok"] is True, found[name]
        assert found[name]["package"] == "postgresql"
        # Debian keeps them off PATH; found there (or through a link on PATH to there)
        assert os.path.realpath(found[name]["path"]).startswith("/usr/lib/postgresql/")
    assert (found["psql"]["ok"], found["psql"]["package"]) == (True, "postgresql-client")
    assert doctor.TEST_MARKERS["postgres"] == ("initdb", "pg_ctl", "postgres", "psql")


def test_the_test_script_installs_postgresql_where_it_is_missing(tmp_path: Path) -> None:
    """A machine without /usr/lib/postgresql (hidden here under an empty tmpfs in a private mount namespace)."""
    path = only_these_programs(tmp_path / "bin", "bash", "python3")
    unshare, mount = doctor.locate("unshare"), doctor.locate("mount")
    assert unshare and mount, "util-linux's unshare and mount build this test's machine"
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
         f'{mount} -t tmpfs cairn-no-postgres /usr/lib/postgresql && exec "$@"', "sh",
         sys.executable, "-m", "engine.core.doctor", "--packages", "test"],
        cwd=REPO, env=os.environ | {"PATH": path}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    packages = done.stdout.split()
    assert "postgresql" in packages and "postgresql-client" in packages
