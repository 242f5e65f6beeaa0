"""`become` in the native executors against a real sudo: locally as real Unix accounts, and over SSH.

The accounts are tests/people.py's: ``cairn-t-alice`` may run anything as root without a password
(NOPASSWD), ``cairn-t-bob`` with his password, ``cairn-t-carol`` only ``/bin/true`` as ``nobody``
(so sudo refuses her root). The rules are a sudoers file installed for each test (checked with
``visudo -cf``, removed after). Locally the executor runs in a Python process of that account (Cairn
run as alice); over SSH the account logs in to a real sshd on loopback with a key. What a user relies
on: the command runs as root, its secret reaches it, the password reaches sudo and nothing else
(not the output, not a command line, not an environment), a timed-out step's root processes are
gone, and a sudo that will not is one clear line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core import doctor
from engine.core.become import Become
from engine.core.errors import ExecutorError
from engine.core.executors import ExecutionOptions, Shell
from engine.core.executors.escalation import EscalationFailed, escalation_for
from engine.core.executors.local import LocalExecutor
from engine.core.executors.ssh import SSHExecutor
from engine.core.inventory import load_inventory
from engine.core.model import LOCALHOST, CommandResult, Host
from engine.lab.ssh_fleet import FleetError, SshFleet, make_fleet
from tests.people import Person, login_shell, password_of, sudo_rules
from tests.procs import wait_until

RULES = """\
cairn-t-alice ALL=(ALL) NOPASSWD: ALL
cairn-t-bob ALL=(ALL) ALL
cairn-t-carol ALL=(nobody) NOPASSWD: /bin/true
Defaults:cairn-t-bob timestamp_timeout=0
Defaults:cairn-t-carol timestamp_timeout=0
"""
"""alice: NOPASSWD; bob: his password, asked every time (no cached timestamp to make a test pass by
luck); carol: root refused."""

SECRET = "s3cret-input-value"


def _need_sudo() -> None:
    """Fail (never skip) when sudo is missing, naming the package, as a marker's programs do."""
    missing = [
        f"{name} (apt-get install {doctor.by_name(name).package})"
        for name in doctor.TEST_MARKERS["sudo"]
        if not doctor.check_program(doctor.by_name(name)).ok
    ]
    if missing:
        pytest.fail(
            f"this test needs {', '.join(missing)}; ./scripts/test installs it as root", pytrace=False
        )


@pytest.fixture
def sudoers(people: dict[str, Person]) -> Iterator[dict[str, Person]]:
    """The rules above installed for this test; the accounts by short name."""
    _need_sudo()
    with sudo_rules(RULES):
        yield people


def new_password() -> str:
    """A password nothing else contains, so that finding it anywhere is finding a leak."""
    return f"Pw-{secrets.token_hex(8)}-x"


def marker() -> str:
    """A unique ``sleep`` argument: finds this test's processes in /proc."""
    return f"600.{uuid.uuid4().int % 10**9:09d}"


def live_with(needle: str) -> list[tuple[int, int]]:
    """(pid, uid) of live processes whose command line holds ``needle`` (zombies excluded)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            uid = Path(f"/proc/{entry}").stat().st_uid
        except (OSError, IndexError):
            continue
        if needle.encode() in cmdline and stat[0] not in (b"Z", b"X") and int(entry) != os.getpid():
            found.append((int(entry), uid))
    return found


def where_visible(secret: str) -> list[str]:
    """Every /proc/PID/cmdline and /proc/PID/environ (of every user: the test runs as root) that holds ``secret``."""
    hits = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if secret.encode() in Path(f"/proc/{entry}/{part}").read_bytes():
                    hits.append(f"/proc/{entry}/{part}")
    return hits


@pytest.fixture
def gone_after() -> Iterator[Callable[[str], None]]:
    """``gone_after(marker)``: after the test, kill what is left with that marker (a failed test's)."""
    markers: list[str] = []
    yield markers.append
    for value in markers:
        for pid, _ in live_with(value):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- locally, as the account

EXECUTE = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from engine.core.become import Become
    from engine.core.errors import ExecutorError
    from engine.core.executors import ExecutionOptions, Shell
    from engine.core.executors.ansible import AnsibleExecutor
    from engine.core.executors.local import LocalExecutor
    from engine.core.model import LOCALHOST

    order = json.loads(sys.stdin.readline())
    cancel = threading.Event()

    def seen(stream, text):
        if order["cancel_on"] and order["cancel_on"] in text:
            cancel.set()

    def cancel_once_running(needle):  # a command line is anyone's to read, root's too
        while not cancel.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if needle.encode() in open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" "):
                        cancel.set()
                except OSError:
                    pass
            time.sleep(0.05)

    if order["cancel_when_running"]:
        threading.Thread(target=cancel_once_running, args=(order["cancel_when_running"],), daemon=True).start()
    become = Become(**order["become"])
    task = Shell(order["command"], {"CAIRN_SECRET_TOKEN": order["secret"]}, become)
    if order["via"] == "ansible":
        executor = AnsibleExecutor(ExecutionOptions(via="ansible"))
    else:
        executor = LocalExecutor()
    try:
        result = executor.execute(LOCALHOST, task, timeout=order["timeout"], on_output=seen, cancel=cancel)
    except ExecutorError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"rc": result.rc, "stdout": result.stdout, "stderr": result.stderr,
                          "timed_out": result.timed_out, "cancelled": result.cancelled}))
    """
)
"""A step run by the local executor in a process of the account: Cairn run as that user. Its order
(the password too) comes on stdin: the test must not put the password on a command line itself."""


def start_as(
    person: Person,
    command: str,
    *,
    password: str | None = None,
    timeout: float = 30,
    cancel_on: str = "",
    cancel_when_running: str = "",
    flags: str = "",
    method: str = "sudo",
    via: str = "native",
) -> subprocess.Popen[str]:
    """The local executor running ``command`` with become, in a process of ``person``."""
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    proc = subprocess.Popen(
        person.command([sys.executable, "-c", EXECUTE], env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=person.home,
    )
    become = {"password": password, "flags": flags, "method": method}
    order = {
        "command": command,
        "secret": SECRET,
        "timeout": timeout,
        "cancel_on": cancel_on,
        "cancel_when_running": cancel_when_running,
        "become": become,
        "via": via,
    }
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(order) + "\n")
    proc.stdin.close()
    return proc


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """What the step came to (its stdin was closed after the order: read the answer, then wait)."""
    assert proc.stdout is not None and proc.stderr is not None
    with proc.stdout, proc.stderr:
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=90) == 0, err
    answer: dict[str, Any] = json.loads(out)
    return answer


def run_as(person: Person, command: str, **kwargs: Any) -> dict[str, Any]:
    return finished(start_as(person, command, **kwargs))


def test_a_become_step_runs_as_root_with_its_secret_and_its_stdin_at_its_end(
    sudoers: dict[str, Person],
) -> None:
    done = run_as(sudoers["alice"], 'id -u; printf "%s\\n" "$CAIRN_SECRET_TOKEN"; cat; echo end')

    assert done == {
        "rc": 0,
        "stdout": f"0\n{SECRET}\nend\n",
        "stderr": "",
        "timed_out": False,
        "cancelled": False,
    }


def test_without_become_the_same_account_runs_as_itself(sudoers: dict[str, Person]) -> None:
    alice = sudoers["alice"]
    done = alice.run([sys.executable, "-c", "import os; print(os.getuid())"])
    assert done.stdout.strip() == str(alice.uid)  # the account the escalation starts from is not root


def test_the_password_reaches_sudo_on_stdin_and_no_command_line_or_environment(
    sudoers: dict[str, Person], tmp_path: Path
) -> None:
    bob, password = sudoers["bob"], new_password()
    go = tmp_path / "go"  # the escalated step (root) can see it
    with password_of(bob, password):
        proc = start_as(
            bob,
            f"id -u; echo started; while [ ! -e {go} ]; do sleep 0.05; done; cat; echo end",
            password=password,
        )
        try:
            assert wait_until(lambda: live_with(str(go))), "the escalated step never started"
            assert {uid for _, uid in live_with(str(go))} == {0}, "sudo and the step's shell run as root"
            assert where_visible(password) == []  # while it runs: no command line, no environment
        finally:
            go.touch()
        done = finished(proc)
    assert done["stdout"] == "0\nstarted\nend\n"  # the password reached sudo, not the command (cat)
    assert password not in json.dumps(done)


def test_with_nopasswd_a_given_password_is_dropped_before_the_command_and_never_shown(
    sudoers: dict[str, Person], tmp_path: Path
) -> None:
    password = new_password()
    go = tmp_path / "go"  # the escalated step (root) can see it
    proc = start_as(
        sudoers["alice"], f"id -u; while [ ! -e {go} ]; do sleep 0.05; done; cat; echo end", password=password
    )
    try:
        assert wait_until(lambda: live_with(str(go))), "the escalated step never started"
        assert where_visible(password) == []
    finally:
        go.touch()
    done = finished(proc)
    # sudo did not ask, so the password line was still on stdin: dropped, never evaluated nor echoed.
    assert done == {"rc": 0, "stdout": "0\nend\n", "stderr": "", "timed_out": False, "cancelled": False}


def test_sudo_that_asks_for_a_password_nobody_gave_is_one_line(sudoers: dict[str, Person]) -> None:
    done = run_as(sudoers["bob"], "id -u")
    assert done == {
        "error": "sudo on localhost asks for a password: set ansible_become_password, "
        "or allow NOPASSWD for cairn-t-bob"
    }


def test_a_wrong_password_is_one_line_and_the_variables_never_reach_sudo(sudoers: dict[str, Person]) -> None:
    bob = sudoers["bob"]
    with password_of(bob, new_password()):
        done = run_as(bob, "id -u", password="not-the-password")
    assert done == {
        "error": "sudo on localhost did not accept ansible_become_password for cairn-t-bob: check the "
        "password (sudo asks for the password of the user who escalates)"
    }


def test_sudo_refusing_root_is_one_line_with_what_sudo_said(sudoers: dict[str, Person]) -> None:
    carol, password = sudoers["carol"], new_password()
    with password_of(carol, password):
        done = run_as(carol, "id -u", password=password)
    error = done["error"]
    assert error.startswith(
        "sudo on localhost refused: cairn-t-carol may not run commands as root (Sorry, user"
    )
    assert "is not allowed to execute" in error and password not in error
    assert "\n" not in error


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_a_timed_out_step_running_as_root_is_killed_whole(
    who: str, sudoers: dict[str, Person], gone_after: Callable[[str], None]
) -> None:
    person, mark = sudoers[who], marker()
    gone_after(mark)
    password = new_password() if who == "bob" else None
    command = f"echo started as $(id -u); trap '' TERM; sleep {mark} & setsid sleep {mark} & env -i sleep {mark} & sleep {mark}"
    with password_of(person, password) if password else contextlib.nullcontext():
        done = run_as(person, command, password=password, timeout=2)

    assert (done["timed_out"], done["rc"], done["stdout"]) == (True, None, "started as 0\n")
    assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=5), live_with(f"sleep {mark}")


def test_a_cancelled_step_running_as_root_is_killed(
    sudoers: dict[str, Person], gone_after: Callable[[str], None]
) -> None:
    mark = marker()
    gone_after(mark)
    command = f"echo started as $(id -u); setsid sleep {mark} & sleep {mark}"
    done = run_as(sudoers["alice"], command, cancel_on="started", timeout=60)

    assert (done["cancelled"], done["stdout"]) == (True, "started as 0\n")
    assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=5)


@pytest.mark.ansible
def test_via_ansible_a_cancelled_root_command_is_killed_by_an_escalated_task(
    sudoers: dict[str, Person], gone_after: Callable[[str], None], tmp_path: Path
) -> None:
    mark, root_only = marker(), tmp_path / "root-only"
    gone_after(mark)
    root_only.mkdir(mode=0o755)  # root's: only a command running as root can write there
    tmp_path.chmod(0o755)
    done = run_as(
        sudoers["alice"],
        f"touch {root_only}/ran; sleep {mark} & setsid sleep {mark} & sleep {mark}",
        cancel_when_running=f"sleep {mark}",
        timeout=120,
        via="ansible",
    )

    assert done["cancelled"], done
    assert (root_only / "ran").exists(), "the command ran as root"
    # alice cannot signal root's processes: only the escalated kill task could have ended them
    assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=10), live_with(f"sleep {mark}")


def test_ansibles_default_flags_are_taken_and_flags_that_change_what_runs_refused(
    sudoers: dict[str, Person],
) -> None:
    alice = sudoers["alice"]
    assert run_as(alice, "id -u; pwd", flags="-H -S -n")["stdout"].startswith("0\n")
    assert run_as(alice, "id -u", flags="-i") == {
        "error": "localhost: ansible_become_flags -i cannot be used by Cairn's native executors (it changes "
        "what runs or how the password is read); remove it, or rerun with --via ansible"
    }


def test_a_method_other_than_sudo_is_refused_naming_it() -> None:
    with pytest.raises(ExecutorError) as caught:
        LocalExecutor().execute(LOCALHOST, Shell("id -u", become=Become(method="su")), timeout=5)
    assert str(caught.value) == (
        "localhost: ansible_become_method su is not supported by Cairn's native executors; "
        "use sudo, or rerun with --via ansible"
    )


def test_a_host_without_sudo_says_which_package_brings_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # bash is called by its path; sudo is looked up: not found
    with pytest.raises(EscalationFailed) as caught:
        LocalExecutor().execute(LOCALHOST, Shell("id -u", become=Become()), timeout=5)
    assert str(caught.value) == "sudo is not installed on localhost (Debian package sudo)"


class Collected:
    """A stream sink that keeps what it is fed."""

    def __init__(self) -> None:
        self.data = b""
        self.finals = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        self.data += data
        self.finals += final


def test_the_exchange_with_sudo_is_read_whatever_way_its_bytes_arrive() -> None:
    esc = escalation_for("web-3", Become(password="pw"), login="alice", token="0123abcd", env={"A": "1"})
    said = f"{esc.prompt}sudo: unable to resolve host web-3\n{esc.ready_mark} 4242\nthe command's own\n"
    sink, sent, closed = Collected(), list[bytes](), list[bool]()
    stderr = esc.stderr(sink, send=sent.append, close=lambda: closed.append(True))
    for byte in said.encode():  # one byte per read: every marker split across reads
        stderr.feed(bytes([byte]))
    stderr.feed(b"", final=True)

    assert (stderr.ready, stderr.pgid, stderr.asked) == (True, 4242, 1)
    assert sink.data == b"sudo: unable to resolve host web-3\nthe command's own\n" and sink.finals == 1
    assert sent == [esc.variables()] and closed == [True]  # the variables only once the wrapper runs
    assert esc.variables().startswith(f"{esc.input_mark}\n".encode())


def test_a_second_prompt_ends_stdin_and_nothing_else_is_sent() -> None:
    esc = escalation_for("web-3", Become(password="pw"), login="alice", token="0123abcd", env={"A": "1"})
    sink, sent, closed = Collected(), list[bytes](), list[bool]()
    stderr = esc.stderr(sink, send=sent.append, close=lambda: closed.append(True))
    stderr.feed(f"{esc.prompt}Sorry, try again.\n{esc.prompt}".encode())
    stderr.feed(b"\nsudo: 1 incorrect password attempt\n", final=True)

    assert (stderr.ready, stderr.asked, sent, closed) == (False, 2, [], [True])
    assert sink.data == b""  # sudo's words are the failure's, not the step's output
    assert esc.failure(1, stderr).startswith("sudo on web-3 did not accept ansible_become_password for alice")


# --------------------------------------------------------------------------- over SSH


@contextlib.contextmanager
def fleet_of(person: Person, root: Path) -> Iterator[tuple[SshFleet, Host]]:
    """A one-host sshd fleet that ``person`` logs in to (with the fleet's key), and its host."""
    with login_shell(person):
        try:
            fleet = make_fleet(root, 1, first_address=230, user=person.account)
            fleet.start()
        except FleetError as exc:
            pytest.fail(
                f"{exc}\nthe SSH tests need a real sshd (.ci/run installs openssh-server)", pytrace=False
            )
        try:
            inventory = fleet.write_inventory(root / "inventory.yml")
            yield fleet, load_inventory([str(inventory)]).hosts("fleet")[0]
        finally:
            fleet.stop()


def ssh_run(
    fleet: SshFleet, host: Host, command: str, *, password: str | None = None, **kwargs: Any
) -> CommandResult:
    executor = SSHExecutor(ExecutionOptions(known_hosts=fleet.known_hosts))
    try:
        task = Shell(command, {"CAIRN_SECRET_TOKEN": SECRET}, Become(password=password))
        return executor.execute(host, task, **{"timeout": 30, **kwargs})
    finally:
        executor.close()


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_a_become_step_runs_as_root_with_its_secret(
    sudoers: dict[str, Person], tmp_path: Path
) -> None:
    with fleet_of(sudoers["alice"], tmp_path) as (fleet, host):
        result = ssh_run(fleet, host, 'id -u; printf "%s\\n" "$CAIRN_SECRET_TOKEN"; cat; echo end')
        plain = SSHExecutor(ExecutionOptions(known_hosts=fleet.known_hosts))
        try:
            as_login = plain.execute(host, Shell("id -un"), timeout=10)
        finally:
            plain.close()
    assert (result.rc, result.stdout, result.stderr) == (0, f"0\n{SECRET}\nend\n", "")
    assert as_login.stdout == "cairn-t-alice\n"


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_the_password_reaches_sudo_and_nothing_else(
    sudoers: dict[str, Person], tmp_path: Path
) -> None:
    bob, password = sudoers["bob"], new_password()
    go = tmp_path / "go"  # the escalated step (root) can see it
    found: list[list[str]] = []
    with password_of(bob, password), fleet_of(bob, tmp_path) as (fleet, host):

        def look_then_go() -> None:
            if wait_until(lambda: live_with(str(go))):
                found.append(sorted({f"uid {uid}" for _, uid in live_with(str(go))}))
                found.append(where_visible(password))
            go.touch()

        looker = threading.Thread(target=look_then_go)
        looker.start()
        try:
            result = ssh_run(
                fleet,
                host,
                f"id -u; while [ ! -e {go} ]; do sleep 0.05; done; cat; echo end",
                password=password,
            )
        finally:
            looker.join()
    assert found == [["uid 0"], []]  # the step's shell ran as root; the password on no command line or env
    assert (result.rc, result.stdout, result.stderr) == (0, "0\nend\n", "")


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_sudo_asking_for_a_password_is_one_line(sudoers: dict[str, Person], tmp_path: Path) -> None:
    bob = sudoers["bob"]
    with (
        password_of(bob, new_password()),
        fleet_of(bob, tmp_path) as (fleet, host),
        pytest.raises(EscalationFailed) as caught,
    ):
        ssh_run(fleet, host, "id -u")
    assert str(caught.value) == (
        "sudo on host01 asks for a password: set ansible_become_password, or allow NOPASSWD for cairn-t-bob"
    )


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_a_timed_out_step_running_as_root_is_killed_whole(
    sudoers: dict[str, Person], tmp_path: Path, gone_after: Callable[[str], None]
) -> None:
    mark = marker()
    gone_after(mark)
    command = f"echo started as $(id -u); trap '' TERM; sleep {mark} & setsid sleep {mark} & env -i sleep {mark} & sleep {mark}"
    with fleet_of(sudoers["alice"], tmp_path) as (fleet, host):
        result = ssh_run(fleet, host, command, timeout=2)
        assert (result.timed_out, result.rc, result.stdout) == (True, None, "started as 0\n")
        assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=5), live_with(f"sleep {mark}")


def kill_sshd_only(fleet: SshFleet) -> None:
    """Kill the host's sshd processes, not the sessions' commands: a lost connection, not a lost host."""
    master = fleet._live_pid(fleet.hosts[0].name)
    assert master is not None
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError):
            parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, changed = {master}, True
    while changed:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        changed, tree = grown != tree, grown
    for pid in tree:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(pid, signal.SIGKILL)


@pytest.mark.ssh
@pytest.mark.inventory
def test_over_ssh_a_root_command_outlives_a_lost_connection_only_until_its_deadline(
    sudoers: dict[str, Person], tmp_path: Path, gone_after: Callable[[str], None]
) -> None:
    bob, password, mark = sudoers["bob"], new_password(), marker()
    gone_after(mark)
    with password_of(bob, password), fleet_of(bob, tmp_path) as (fleet, host):

        def drop_when_guarded(stream: str, text: str) -> None:
            if "still" in text:  # printed after GUARD_AFTER: the host's guard watches the command by now
                kill_sshd_only(fleet)

        with pytest.raises(ExecutorError, match="connection lost during the step"):
            ssh_run(
                fleet,
                host,
                f"echo started; sleep 2.5; echo still; sleep {mark}",
                password=password,
                timeout=6,
                on_output=drop_when_guarded,
            )
        assert {uid for _, uid in live_with(f"sleep {mark}")} == {0}  # root's, running on for now
        # The guard (bob's) ends it through sudo with bob's password, at the step's deadline.
        assert wait_until(lambda: not live_with(f"sleep {mark}"), timeout=15), live_with(f"sleep {mark}")
        assert where_visible(password) == []
