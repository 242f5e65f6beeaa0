"""`become` through the real `cairn` command, against a real sudo: the step runs as root, or the host says
in one line why it cannot, before anything changes.

Cairn runs as real Unix accounts (tests/people.py) with the inventory the account would write:
``cairn-t-alice`` may sudo without a password, ``cairn-t-bob`` with his, ``cairn-t-carol`` may not run
anything as root. The runbook's remediation removes a flag from a folder only root may write to, so a
remediation that ran as the login user would fail, and one that never started leaves the flag. The
become password is looked for everywhere a user or another account could see it: the command's
output, every command line and environment while the step runs, the journal and the run's artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.core import doctor
from engine.lab.ssh_fleet import FleetError, SshFleet, make_fleet
from tests.conftest import CairnRunner, cairn_command
from tests.people import Person, login_shell, password_of, sudo_rules
from tests.procs import wait_until

pytestmark = pytest.mark.cli

RULES = """\
cairn-t-alice ALL=(ALL) NOPASSWD: ALL
cairn-t-bob ALL=(ALL) ALL
cairn-t-carol ALL=(nobody) NOPASSWD: /bin/true
Defaults:cairn-t-bob timestamp_timeout=0
Defaults:cairn-t-carol timestamp_timeout=0
"""

ROOTY = """
id: rooty
title: A flag only root may clear
severity: warning
summary: The flag is in a folder only root may write to.
inputs:
  flag: {type: string}
detect:
  - id: flag_absent
    title: The flag is absent
    run: test ! -e {{ inputs.flag }}
    exit_codes: [0, 1]
    expect: rc == 0
    report: "{{ 'flag present' if rc else 'no flag' }}"
  - id: uid
    title: Who looks as root
    become: true
    run: id -u
    parse: number
    report: "uid {{ out }}"
remediate:
  - id: clear
    title: Clear the flag
    become: true
    run: rm {{ inputs.flag }}
"""

WAITS = """
id: waits
title: A root step that waits for the test
severity: warning
summary: s
become: true
inputs:
  go: {type: string}
  mark: {type: string, default: "0"}
detect:
  - id: as_root
    title: As root, until told to go on
    run: id -u; while [ ! -e {{ inputs.go }} ]; do sleep 0.05; done; cat; echo end
  - id: hangs
    title: As root, past its timeout
    when: inputs.mark != "0"
    timeout: 2s
    run: echo started as $(id -u); sleep {{ inputs.mark }} & setsid sleep {{ inputs.mark }} & sleep {{ inputs.mark }}
"""

SBIN = """
id: sbin
title: A program only root's PATH has
severity: warning
summary: s
detect:
  - id: as_root
    title: As root
    become: true
    requires: [visudo]
    run: visudo -c -q; echo checked
  - id: as_login
    title: As the login user
    requires: [visudo]
    run: "true"
"""
"""visudo lives in /usr/sbin: on sudo's secure_path, not on a plain account's PATH."""


def _need_sudo() -> None:
    missing = [n for n in doctor.TEST_MARKERS["sudo"] if not doctor.check_program(doctor.by_name(n)).ok]
    if missing:
        pytest.fail(f"this test needs {', '.join(missing)} (apt-get install sudo)", pytrace=False)


@pytest.fixture
def sudoers(people: dict[str, Person]) -> Iterator[dict[str, Person]]:
    _need_sudo()
    with sudo_rules(RULES):
        yield people


@dataclass
class Desk:
    """One account's working folder: runbooks, inventory, journal (all the account's own), and a
    flag in a folder only root may write to."""

    person: Person
    root: Path
    flag: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    def inventory(self, **host_vars: Any) -> Path:
        """``localhost`` with ``ansible_connection: local`` and ``host_vars``, as the account writes it (0600)."""
        path = self.root / "inventory.yml"
        hosts = {"localhost": {"ansible_connection": "local", **host_vars}}
        path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}), encoding="utf-8")
        path.chmod(0o600)
        os.chown(path, self.person.uid, -1)
        return path

    def command(self, *args: str) -> list[str]:
        return self.person.command([*cairn_command(), *args], self.env())

    def env(self) -> dict[str, str]:
        env = {
            "HOME": str(self.person.home),
            "XDG_STATE_HOME": str(self.state),
            "CAIRN_JOURNAL": str(self.state / "journal.db"),
        }
        if os.environ.get("PYTHONPATH"):  # the same Cairn as this test session
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def cairn(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def holds(self, secret: str) -> list[Path]:
        """Files of the journal and the run's artifacts that hold ``secret`` (bytes, every file)."""
        return [p for p in self.state.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def desk_for(tmp_path: Path) -> Iterator[Callable[[Person], Desk]]:
    made: list[Path] = []

    def make(person: Person) -> Desk:
        root = Path(tempfile.mkdtemp(prefix="cairn-become-", dir="/var/tmp"))
        made.append(root)
        root.chmod(0o755)
        (root / "rb").mkdir()
        for text in (ROOTY, WAITS, SBIN):
            body = textwrap.dedent(text).lstrip()
            (root / "rb" / f"{body.split()[1]}.yaml").write_text(body, encoding="utf-8")
        (root / "state").mkdir()
        for path in (root, root / "rb", root / "state"):
            os.chown(path, person.uid, -1)
        locked = root / "root-only"
        locked.mkdir(mode=0o755)  # root's: only root may remove the flag
        flag = locked / "flag"
        flag.write_text("x", encoding="utf-8")
        return Desk(person, root, flag)

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


def new_password() -> str:
    return f"Pw-{secrets.token_hex(8)}-y"


def where_visible(secret: str) -> list[str]:
    hits = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if secret.encode() in Path(f"/proc/{entry}/{part}").read_bytes():
                    hits.append(f"/proc/{entry}/{part}")
    return hits


def live_with(needle: str) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle.encode() in cmdline and state not in (b"Z", b"X") and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``phase.step`` → that step's result, for the run's one host."""
    [host] = report["hosts"]
    return {f"{r['phase']}.{r['step_id']}": r for r in host["results"]}


def run_waits(
    desk: Desk, inventory: Path, password: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`cairn run waits` as the desk's account; while its root step waits: where the password is visible."""
    go = desk.root / "go"
    args = [
        "run",
        "waits",
        "--runbooks",
        str(desk.root / "rb"),
        "-i",
        str(inventory),
        "-e",
        f"go={go}",
        "--json",
    ]
    proc = subprocess.Popen(
        desk.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=desk.root
    )
    try:
        assert wait_until(lambda: live_with(f"[ ! -e {go} ]"), timeout=20), "the root step never started"
        seen = where_visible(password)
    finally:
        go.touch()
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err), seen


# --------------------------------------------------------------------------- locally


def test_alice_with_nopasswd_runs_the_check_and_the_remediation_as_root(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["alice"])
    args = ["--runbooks", str(desk.root / "rb"), "-i", str(desk.inventory()), "-e", f"flag={desk.flag}"]
    done = desk.cairn("run", "rooty", *args, "--yes", "--json")

    report = json.loads(done.stdout)
    assert report["exit_code"] == 0, done.stdout + done.stderr
    steps = results(report)
    assert steps["detect.uid"]["stdout"] == "0\n" and steps["detect.uid"]["message"] == "uid 0"
    assert steps["remediate.clear"]["status"] == "ok"
    assert report["hosts"][0]["outcome"] == "remediated"
    assert not desk.flag.exists()


def test_bobs_password_reaches_sudo_and_nowhere_else(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    bob, password = sudoers["bob"], new_password()
    desk = desk_for(bob)
    with password_of(bob, password):
        inventory = desk.inventory(ansible_become_password=password)
        done, seen = run_waits(desk, inventory, password)
        plan = desk.cairn(
            "plan", "waits", "--runbooks", str(desk.root / "rb"), "-i", str(inventory), "-e", "go=/x"
        )

    assert seen == [], "while the step ran, the password was on a command line or in an environment"
    report = json.loads(done.stdout)
    assert report["exit_code"] == 0, done.stdout + done.stderr
    assert results(report)["detect.as_root"]["stdout"] == "0\nend\n"
    assert password not in done.stdout + done.stderr
    assert desk.holds(password) == [], "the journal or the artifacts hold the password"
    assert plan.returncode == 0, plan.stderr
    assert "  preflight: sudo as root works" in plan.stdout
    assert password not in plan.stdout + plan.stderr


def test_alice_with_nopasswd_and_a_password_given_runs_and_the_password_is_nowhere(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    password = new_password()
    desk = desk_for(sudoers["alice"])
    done, seen = run_waits(desk, desk.inventory(ansible_become_password=password), password)

    assert seen == []
    report = json.loads(done.stdout)
    # sudo did not ask: the password line was still on stdin, and was dropped before the command (cat)
    assert results(report)["detect.as_root"]["stdout"] == "0\nend\n", done.stdout
    assert password not in done.stdout + done.stderr
    assert desk.holds(password) == []


def test_carol_refused_by_sudo_gets_one_line_and_no_remediation_starts(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    carol, password = sudoers["carol"], new_password()
    desk = desk_for(carol)
    args = ["--runbooks", str(desk.root / "rb"), "-e", f"flag={desk.flag}", "--yes"]
    with password_of(carol, password):
        inventory = desk.inventory(ansible_become_password=password)
        text = desk.cairn("run", "rooty", "-i", str(inventory), *args)
        report = json.loads(desk.cairn("run", "rooty", "-i", str(inventory), *args, "--json").stdout)

    refused = (
        "sudo on localhost refused: cairn-t-carol may not run commands as root (Sorry, user cairn-t-carol"
    )
    assert text.returncode == 2, text.stdout + text.stderr
    assert f"── localhost · preflight\n   PROBLEM: {refused}" in text.stdout, text.stdout
    assert password not in text.stdout + text.stderr
    steps = results(report)
    assert steps["detect.uid"]["status"] == "not_run"
    assert steps["detect.uid"]["message"].startswith(f"not run: {refused}")
    assert "remediate.clear" not in steps
    assert (
        "remediation cannot run on localhost (clear: sudo on localhost refused"
        in report["hosts"][0]["reason"]
    )
    assert desk.flag.exists(), "nothing was changed"


def test_bob_without_a_password_is_told_in_the_plan_and_nothing_changes(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["bob"])
    args = ["--runbooks", str(desk.root / "rb"), "-i", str(desk.inventory()), "-e", f"flag={desk.flag}"]
    plan = desk.cairn("plan", "rooty", *args)
    run = desk.cairn("run", "rooty", *args, "--yes", "--json")

    asks = "sudo on localhost asks for a password: set ansible_become_password, or allow NOPASSWD for cairn-t-bob"
    assert plan.returncode == 0, plan.stderr
    assert f"  preflight: PROBLEM: {asks}: detect uid, remediate clear cannot run" in plan.stdout, plan.stdout
    report = json.loads(run.stdout)
    assert report["exit_code"] == 2
    assert results(report)["detect.uid"]["message"] == f"not run: {asks}"
    assert desk.flag.exists()


def test_the_programs_of_a_root_step_are_looked_for_as_root(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["alice"])
    args = ["--runbooks", str(desk.root / "rb"), "-i", str(desk.inventory())]
    plan = desk.cairn("plan", "sbin", *args)
    report = json.loads(desk.cairn("run", "sbin", *args, "--json").stdout)

    assert (
        "  preflight: PROBLEM: visudo not found (Debian package sudo): detect as_login cannot run; sudo as root works"
        in plan.stdout
    ), plan.stdout
    steps = results(report)
    assert (steps["detect.as_root"]["status"], steps["detect.as_root"]["stdout"]) == ("ok", "checked\n")
    assert (
        steps["detect.as_login"]["message"]
        == "not run: visudo is not installed on localhost (Debian package sudo)"
    )


def test_a_timed_out_root_step_leaves_no_process_behind(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["alice"])
    mark = f"600.{uuid.uuid4().int % 10**9:09d}"
    (desk.root / "go").touch()
    args = ["--runbooks", str(desk.root / "rb"), "-i", str(desk.inventory()), "-e", f"go={desk.root / 'go'}"]
    try:
        done = desk.cairn("run", "waits", *args, "-e", f"mark={mark}", "--json")
        report = json.loads(done.stdout)
        hangs = results(report)["detect.hangs"]
        assert (hangs["status"], hangs["stdout"]) == ("timeout", "started as 0\n"), hangs
        assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=5), live_with(f"sleep {mark}")
    finally:
        for pid in live_with(f"sleep {mark}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


@pytest.mark.ansible
def test_via_ansible_the_step_runs_as_root_with_ansibles_own_become(
    sudoers: dict[str, Person], desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["alice"])
    args = ["--runbooks", str(desk.root / "rb"), "-i", str(desk.inventory()), "-e", f"flag={desk.flag}"]
    done = desk.cairn("run", "rooty", *args, "--via", "ansible", "--yes", "--json", timeout=300)

    report = json.loads(done.stdout)
    assert report["exit_code"] == 0, done.stdout + done.stderr
    assert results(report)["detect.uid"]["stdout"] == "0\n"
    assert not desk.flag.exists()


# --------------------------------------------------------------------------- over SSH


@contextlib.contextmanager
def fleet_of(person: Person, root: Path) -> Iterator[SshFleet]:
    with login_shell(person):
        try:
            fleet = make_fleet(root, 1, first_address=240, user=person.account)
            fleet.start()
        except FleetError as exc:
            pytest.fail(
                f"{exc}\nthe SSH tests need a real sshd (.ci/run installs openssh-server)", pytrace=False
            )
        try:
            yield fleet
        finally:
            fleet.stop()


@pytest.mark.ssh
def test_over_ssh_alice_escalates_and_a_timed_out_root_step_is_killed_on_the_host(
    sudoers: dict[str, Person], cairn: CairnRunner, tmp_path: Path, desk_for: Callable[[Person], Desk]
) -> None:
    desk = desk_for(sudoers["alice"])  # only for its runbooks and its root-only flag
    mark = f"600.{uuid.uuid4().int % 10**9:09d}"
    (desk.root / "go").touch()
    with fleet_of(sudoers["alice"], tmp_path / "fleet") as fleet:
        inventory = fleet.write_inventory(tmp_path / "inventory.yml")
        common = [
            "--runbooks",
            str(desk.root / "rb"),
            "-i",
            str(inventory),
            "--known-hosts",
            str(fleet.known_hosts),
        ]
        fixed = cairn("run", "rooty", *common, "-e", f"flag={desk.flag}", "--yes", "--json")
        hung = cairn("run", "waits", *common, "-e", f"go={desk.root / 'go'}", "-e", f"mark={mark}", "--json")
        try:
            report = json.loads(fixed.stdout)
            assert report["exit_code"] == 0, fixed.stdout + fixed.stderr
            assert results(report)["detect.uid"]["stdout"] == "0\n"
            assert not desk.flag.exists()
            hangs = results(json.loads(hung.stdout))["detect.hangs"]
            assert (hangs["status"], hangs["stdout"]) == ("timeout", "started as 0\n"), hangs
            assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=5), live_with(f"sleep {mark}")
        finally:
            for pid in live_with(f"sleep {mark}"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
