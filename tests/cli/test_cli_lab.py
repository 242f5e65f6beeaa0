"""`cairn lab` with labs declared beside their runbooks (ID.lab.yaml), through the real command.

Processes are checked the way `cairn lab down` finds them: by pid *and* kernel start
time, so a recycled pid never passes for a lab process.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FIXTURES, REPO, CairnRunner

pytestmark = [pytest.mark.cli, pytest.mark.lab]

EXAMPLES = REPO / "docs" / "examples"
EXAMPLE = "stale-lock-files"


def running(pid: int, started: int) -> bool:
    """Is the process that had ``started`` as its start time still there (and not a zombie)?"""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == started


def is_running(process: dict[str, Any]) -> bool:
    return running(int(process["pid"]), int(process["started"]))


def runbook(rid: str, targets: str = "all") -> str:
    """A minimal runbook with id ``rid``."""
    return textwrap.dedent(
        f"""\
        id: {rid}
        title: The {rid} pitfall
        severity: info
        summary: A runbook whose lab is declared beside it.
        targets: {targets}
        detect:
          - id: look
            title: Look
            run: "true"
        """
    )


def declare(folder: Path, rid: str, lab: str, targets: str = "all") -> Path:
    """Write runbook ``rid`` and its lab file (dedented YAML) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{rid}.yaml").write_text(runbook(rid, targets), encoding="utf-8")
    (folder / f"{rid}.lab.yaml").write_text(textwrap.dedent(lab), encoding="utf-8")
    return folder


@pytest.fixture
def lab_root(cairn: CairnRunner, tmp_path: Path) -> Iterator[Path]:
    """Where this test's labs live; whatever is still up afterwards is stopped."""
    root = tmp_path / "labs"
    yield root
    if root.exists():
        done = cairn("lab", "down", "--dir", str(root))
        assert done.returncode in (0, 2), done.stderr


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every lab, where test labs leave traces (passed to them as $LAB_TEST_OUT)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- the worked example


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """docs/examples' runbook and its lab file, copied to a runbook folder of the user's."""
    folder = tmp_path / "my-runbooks"
    folder.mkdir()
    for name in (f"{EXAMPLE}.yaml", f"{EXAMPLE}.lab.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_the_worked_example_up_run_remediate_status_down(
    cairn: CairnRunner, example_dir: Path, lab_root: Path
) -> None:
    up = cairn("lab", "up", EXAMPLE, "--runbooks", str(example_dir), "--dir", str(lab_root), "--json")
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["failed"] == []
    (info,) = report["labs"]
    assert info["kind"] == "declared"
    assert info["source"] == str((example_dir / f"{EXAMPLE}.lab.yaml").resolve())
    (worker,) = info["processes"]
    assert worker["name"] == "worker" and is_running(worker)
    lab_dir = Path(info["dir"])
    locks = lab_dir / "locks"
    assert yaml.safe_load(Path(info["inputs"]).read_text()) == {"lock_dir": str(locks)}
    inventory = yaml.safe_load(Path(info["inventory"]).read_text())
    assert inventory == {
        "all": {
            "children": {
                "batch_workers": {
                    "hosts": {"batch-node-1": {"ansible_connection": "local", "ansible_become": False}}
                }
            }
        }
    }
    assert sorted(p.name for p in locks.iterdir()) == [
        "cache-warm.lock",
        "invoice-run.lock",
        "nightly-export.lock",
        "nightly-report.lock",
    ]
    assert (locks / "nightly-report.lock").read_text().strip() == str(worker["pid"])

    practise = [
        "run",
        EXAMPLE,
        "--runbooks",
        str(example_dir),
        "-i",
        info["inventory"],
        "-e",
        f"@{info['inputs']}",
    ]
    assert info["command"] == "cairn " + " ".join(
        practise
    )  # the command `lab up` prints is the one that works
    found = cairn(*practise)
    assert found.returncode == 1, found.stdout + found.stderr  # the pitfall is present
    assert "3 stale lock file(s): cache-warm.lock" in found.stdout
    assert f"nightly-report.lock (pid {worker['pid']}: batch-worker nightly-report" in found.stdout
    assert len(list(locks.iterdir())) == 4  # nothing was removed without approval

    fixed = cairn(*practise, "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "remediated; verify is clean" in fixed.stdout
    assert [p.name for p in locks.iterdir()] == ["nightly-report.lock"]  # the live worker's lock stayed
    assert is_running(worker)

    status = cairn("lab", "status", "--runbooks", str(example_dir), "--dir", str(lab_root), "--json")
    assert status.returncode == 0, status.stderr
    (entry,) = [e for e in json.loads(status.stdout)["labs"] if e["name"] == EXAMPLE]
    assert entry["up"] is True and entry["kind"] == "declared"
    assert [(p["name"], p["running"]) for p in entry["processes"]] == [("worker", True)]
    text = cairn("lab", "status", "--runbooks", str(example_dir), "--dir", str(lab_root))
    assert f"  {EXAMPLE:28} up" in text.stdout
    assert info["command"] in text.stdout

    down = cairn("lab", "down", "--dir", str(lab_root), "--json")
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)
    assert stopped["stopped"] == [EXAMPLE]
    (teardown,) = stopped["teardown"]
    assert (
        teardown["ok"] and "lock files left: nightly-report.lock" in teardown["output"]
    )  # it ran, before the worker stopped
    assert not is_running(worker)
    assert not lab_dir.exists()
    after = cairn("lab", "status", "--runbooks", str(example_dir), "--dir", str(lab_root), "--json")
    (entry,) = [e for e in json.loads(after.stdout)["labs"] if e["name"] == EXAMPLE]
    assert entry["up"] is False and entry["source"] == str(example_dir / f"{EXAMPLE}.lab.yaml")


def test_the_worked_example_without_the_pitfall(
    cairn: CairnRunner, example_dir: Path, lab_root: Path
) -> None:
    up = cairn(
        "lab", "up", EXAMPLE, "--healthy", "--runbooks", str(example_dir), "--dir", str(lab_root), "--json"
    )
    assert up.returncode == 0, up.stderr
    (info,) = json.loads(up.stdout)["labs"]
    assert info["healthy"] is True
    assert "nothing to find" in info["notes"][0]
    done = cairn(*info["command"].split()[1:])
    assert done.returncode == 0, done.stdout + done.stderr  # detect finds nothing: no false positive
    assert "no stale lock file" in done.stdout


def test_the_example_files_validate(cairn: CairnRunner) -> None:
    done = cairn("validate", str(EXAMPLES))
    assert done.returncode == 0, done.stdout
    assert f"{EXAMPLES / EXAMPLE}.yaml: ok ({EXAMPLE})" in done.stdout
    assert f"{EXAMPLES / EXAMPLE}.lab.yaml: ok (lab {EXAMPLE})" in done.stdout
    listing = cairn("list", "--runbooks", str(EXAMPLES), "--json")
    assert [r["id"] for r in json.loads(listing.stdout)["runbooks"]] == [EXAMPLE]
    assert json.loads(listing.stdout)["invalid"] == []  # the lab file is not read as a runbook


# --------------------------------------------------------------------------- up all: every lab that can start


GOOD = """\
summary: a process that stays
processes:
  - name: idle
    run: exec sleep 300
setup: touch ready-to-go
"""

# The setup starts a process of its own and leaves a trace outside the lab; then its first lab
# process starts, the second never gets ready. All of it must be undone.
BAD = """\
summary: starts things, then fails
setup: |
  touch "$LAB_TEST_OUT/bad-was-here"
  sleep 300 &
  echo "$! $(cut -d' ' -f22 /proc/$!/stat)" >> "$LAB_TEST_OUT/pids"
processes:
  - name: server
    run: |
      echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" >> "$LAB_TEST_OUT/pids"
      exec sleep 300
    ready: test "$(wc -l < "$LAB_TEST_OUT/pids")" -eq 2
  - name: never-ready
    run: exec sleep 300
    ready: "false"
    ready_timeout: 1s
teardown: rm "$LAB_TEST_OUT/bad-was-here"
"""


def test_up_all_starts_every_lab_it_can_and_undoes_the_one_that_fails(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path, outside: Path
) -> None:
    folder = declare(tmp_path / "rb", "bad-lab", BAD)
    declare(folder, "good-lab", GOOD)
    (folder / "no-lab.yaml").write_text(runbook("no-lab"), encoding="utf-8")  # no lab: not part of all

    done = cairn(
        "lab",
        "up",
        "all",
        "--runbooks",
        str(folder),
        "--dir",
        str(lab_root),
        "--json",
        LAB_TEST_OUT=str(outside),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [lab["name"] for lab in report["labs"]] == ["good-lab"]  # started after bad-lab failed
    (failed,) = report["failed"]
    assert failed["name"] == "bad-lab"
    assert "process never-ready was ready (`false` exited 0) did not happen within 1 s" in failed["error"]
    assert f"cairn: error: {failed['error']}" in done.stderr

    # The failed lab left nothing: its setup's process and its started process are gone (pid and
    # start time), its teardown undid what it made outside, its folder is gone, it is not recorded.
    started = [tuple(map(int, line.split())) for line in (outside / "pids").read_text().splitlines()]
    assert len(started) == 2
    assert not any(running(pid, start) for pid, start in started)
    assert not (outside / "bad-was-here").exists()
    assert not (lab_root / "bad-lab").exists()
    (good,) = report["labs"]
    assert all(is_running(p) for p in good["processes"])
    assert (Path(good["dir"]) / "ready-to-go").exists()

    status = json.loads(
        cairn("lab", "status", "--runbooks", str(folder), "--dir", str(lab_root), "--json").stdout
    )
    assert {lab["name"]: lab["up"] for lab in status["labs"]} == {"bad-lab": False, "good-lab": True}

    (outside / "pids").unlink()
    text = cairn(
        "lab", "up", "all", "--runbooks", str(folder), "--dir", str(lab_root), LAB_TEST_OUT=str(outside)
    )
    assert text.returncode == 2
    assert "lab good-lab is already up" in text.stderr
    assert "0 of 2 labs started; did not start: bad-lab, good-lab" in text.stdout


# --------------------------------------------------------------------------- refused before anything starts


def test_a_missing_program_of_a_declared_lab_is_named_before_anything_runs(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path, outside: Path
) -> None:
    lab = """\
    summary: needs a program nobody has
    requires: [git, cairn-no-such-program]
    setup: touch "$LAB_TEST_OUT/setup-ran"
    """
    folder = declare(tmp_path / "rb", "needy", lab)
    done = cairn(
        "lab", "up", "needy", "--runbooks", str(folder), "--dir", str(lab_root), LAB_TEST_OUT=str(outside)
    )
    assert done.returncode == 2
    assert (
        "cairn: error: lab needy needs cairn-no-such-program, which is not installed; `cairn doctor` lists "
        f"everything missing (its lab file: {(folder / 'needy.lab.yaml').resolve()})"
    ) in done.stderr
    assert not (outside / "setup-ran").exists()
    assert not lab_root.exists()


@pytest.mark.git
def test_a_bundled_lab_without_its_program_names_the_package(cairn: CairnRunner, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # python, but no git
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    root = tmp_path / "labs"
    done = cairn("lab", "up", "branch-cleanup", "--dir", str(root), PATH=str(bin_dir))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "cairn: error: lab branch-cleanup needs git (Debian package git), which is not installed: "
        "apt-get install git; `cairn doctor` lists everything missing"
    )
    assert not root.exists()  # nothing started, not even the lab folder


def test_healthy_is_refused_for_a_lab_without_a_healthy_variant(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path, outside: Path
) -> None:
    folder = declare(
        tmp_path / "rb", "one-way", 'summary: only broken\nsetup: touch "$LAB_TEST_OUT/setup-ran"\n'
    )
    done = cairn(
        "lab",
        "up",
        "one-way",
        "--healthy",
        "--runbooks",
        str(folder),
        "--dir",
        str(lab_root),
        LAB_TEST_OUT=str(outside),
    )
    assert done.returncode == 2
    assert "lab one-way has no healthy variant: its lab file" in done.stderr
    assert "does not say `healthy: true`" in done.stderr
    assert not (outside / "setup-ran").exists()


def test_an_invalid_lab_file_is_refused_with_its_problems(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path
) -> None:
    folder = declare(tmp_path / "rb", "typo", "summary: s\nsetpu: mkdir x\n")
    done = cairn("lab", "up", "typo", "--runbooks", str(folder), "--dir", str(lab_root))
    assert done.returncode == 2
    lab_file = folder / "typo.lab.yaml"
    assert f"cairn: error: {lab_file}: 2 problems; fix them and retry:" in done.stderr
    assert f"  {lab_file}:2:1: [/setpu] unknown key 'setpu'; did you mean 'setup'?" in done.stderr
    status = cairn("lab", "status", "--runbooks", str(folder), "--dir", str(lab_root))
    assert f"  {'typo':28} down     (cannot be built: {lab_file} has problems" in status.stdout


def test_a_failing_setup_is_reported_with_the_end_of_its_log(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path
) -> None:
    lab = """\
    summary: a setup that fails
    setup: |
      echo "building the pitfall"
      echo "oops: no such thing" >&2
      exit 3
      echo "never here"
    """
    folder = declare(tmp_path / "rb", "oops", lab)
    done = cairn("lab", "up", "oops", "--runbooks", str(folder), "--dir", str(lab_root))
    assert done.returncode == 2
    assert (
        "cairn: error: lab oops: setup exited with 3; logs/setup.log ends:\n"
        "  building the pitfall\n"
        "  oops: no such thing\n"
    ) in done.stderr
    assert not (lab_root / "oops").exists()


# --------------------------------------------------------------------------- down, ports, templates


def test_down_runs_the_teardown_and_stops_what_the_setup_left_even_without_the_runbook(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path, outside: Path
) -> None:
    lab = """\
    summary: makes something outside its folder
    setup: |
      touch "$LAB_TEST_OUT/outside-marker"
      echo "$LAB_TEST_OUT/outside-marker" > made-outside  # what teardown must undo, kept in the lab folder
      sleep 300 &
    processes:
      - name: idle
        run: exec sleep 300
    teardown: rm "$(cat made-outside)" && echo "removed the marker"
    """
    folder = declare(tmp_path / "rb", "outsider", lab)
    up = cairn(
        "lab",
        "up",
        "outsider",
        "--runbooks",
        str(folder),
        "--dir",
        str(lab_root),
        "--json",
        LAB_TEST_OUT=str(outside),
    )
    assert up.returncode == 0, up.stderr
    (info,) = json.loads(up.stdout)["labs"]
    names = [p["name"] for p in info["processes"]]
    assert names == ["setup:sleep", "idle"]  # what the setup left running is the lab's too
    assert all(is_running(p) for p in info["processes"])
    assert (outside / "outside-marker").exists()

    shutil.rmtree(folder)  # the runbook and its lab file are gone: down needs neither
    down = cairn("lab", "down", "outsider", "--dir", str(lab_root))
    assert down.returncode == 0, down.stderr
    assert "stopped: outsider\n  outsider: teardown done\n    removed the marker" in down.stdout
    assert not (outside / "outside-marker").exists()
    assert not any(is_running(p) for p in info["processes"])
    assert not Path(info["dir"]).exists()


def test_a_failing_teardown_is_reported_and_the_lab_still_stopped(
    cairn: CairnRunner, tmp_path: Path, lab_root: Path
) -> None:
    lab = """\
    summary: its teardown fails
    setup: "true"
    processes:
      - name: idle
        run: exec sleep 300
    teardown: echo "cannot undo" >&2; exit 4
    """
    folder = declare(tmp_path / "rb", "stubborn", lab)
    up = cairn("lab", "up", "stubborn", "--runbooks", str(folder), "--dir", str(lab_root), "--json")
    (info,) = json.loads(up.stdout)["labs"]
    down = cairn("lab", "down", "--dir", str(lab_root))
    assert down.returncode == 2
    assert "stopped: stubborn" in down.stdout
    assert (
        "cairn: error: lab stubborn: teardown exited with 4; its output ends:\n  cannot undo" in down.stderr
    )
    assert not any(is_running(p) for p in info["processes"])
    assert not Path(info["dir"]).exists()


def test_every_key_of_a_lab_file(cairn: CairnRunner, tmp_path: Path, lab_root: Path) -> None:
    """tests/fixtures/labs/valid/02_every_key.lab.yaml, built: ports, processes, templates, hosts, healthy."""
    folder = tmp_path / "rb"
    folder.mkdir()
    shutil.copy(FIXTURES / "labs" / "practice.yaml", folder / "practice.yaml")
    shutil.copy(FIXTURES / "labs" / "valid" / "02_every_key.lab.yaml", folder / "practice.lab.yaml")
    for healthy in (False, True):
        flags = ["--healthy"] if healthy else []
        up = cairn(
            "lab", "up", "practice", *flags, "--runbooks", str(folder), "--dir", str(lab_root), "--json"
        )
        assert up.returncode == 0, up.stderr
        (info,) = json.loads(up.stdout)["labs"]
        lab_dir = Path(info["dir"])
        inputs = yaml.safe_load(Path(info["inputs"]).read_text())
        assert inputs == {
            "lock_dir": f"{lab_dir}/locks",
            "max_age": 30 if healthy else 60,
        }  # a number stays one
        hosts = yaml.safe_load(Path(info["inventory"]).read_text())["all"]["children"]["batch_workers"][
            "hosts"
        ]
        port = int(hosts["node-1"]["role"].removeprefix("worker on "))
        assert hosts == {
            "node-1": {
                "ansible_connection": "local",
                "ansible_become": False,
                "role": f"worker on {port}",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "node-2": {"ansible_connection": "local", "ansible_become": False},
        }
        assert info["notes"] == [
            f"the worker answers on http://127.0.0.1:{port}/ (practice)",
            "plain text is fine too",
        ]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the worker listens on the port the lab picked for it
        assert [p["name"] for p in info["processes"]] == ["worker", "idle"]
        assert (lab_dir / "locks" / "dead.lock").exists() is not healthy
        assert (lab_dir / "logs" / "worker.log").exists()
        down = cairn("lab", "down", "practice", "--dir", str(lab_root))
        assert down.returncode == 0, down.stderr
        assert not any(is_running(p) for p in info["processes"])
