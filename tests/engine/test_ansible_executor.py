"""The ansible executor against real ansible-runner: the local connection and real sshd hosts.

Every call is a real ansible-playbook run (~2-3 s here), so each test makes as few as it can.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core.errors import ExecutorError
from engine.core.executors import AnsibleTask, ExecutionOptions, OutputCallback, Shell
from engine.core.executors.ansible import PLAY_FILE, AnsibleExecutor
from engine.core.executors.ansible_events import describe_unreachable
from engine.core.model import AnsibleAction, CommandResult, Host
from engine.lab.ssh_fleet import SshFleet
from tests.conftest import OwnFleet
from tests.fakes import OutputRecorder
from tests.procs import processes_with

pytestmark = pytest.mark.ansible

LOCAL = Host("localhost", "local")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def sleeper() -> Iterator[str]:
    """A unique ``sleep`` argument (``600.<digits>``) to find this test's command in /proc."""
    token = f"600.{uuid.uuid4().int % 10**9:09d}"
    yield token
    for pid in processes_with(f"sleep {token}"):  # never leave one behind, even when the test failed
        os.kill(pid, 9)


def cancel_when(path: Path, event: threading.Event) -> threading.Thread:
    """Set ``event`` from another thread once ``path`` exists (the command has started)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        event.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def module(
    executor: AnsibleExecutor,
    host: Host,
    name: str,
    args: object,
    *,
    timeout: float = 60,
    on_output: OutputCallback | None = None,
    cancel: threading.Event | None = None,
    artifacts: Path | None = None,
) -> CommandResult:
    task = AnsibleTask(AnsibleAction(module=name), args, Path("."))
    return executor.execute(
        host, task, timeout=timeout, on_output=on_output, cancel=cancel, artifacts=artifacts
    )


# --------------------------------------------------------------------------- local connection


def test_module_with_args_changes_then_reports_no_change_and_keeps_templates_literal(tmp_path: Path) -> None:
    executor = AnsibleExecutor(ExecutionOptions())
    dest = tmp_path / "motd"
    # "{{ … }}" was rendered by Cairn already: Ansible must not render it again; "0640" stays a string.
    args = {"content": "total {{ 6 * 7 }}\n", "dest": str(dest), "mode": "0640"}

    first = module(executor, LOCAL, "ansible.builtin.copy", args)
    assert (first.rc, first.data["changed"]) == (0, True), first
    assert dest.read_text() == "total {{ 6 * 7 }}\n"
    assert dest.stat().st_mode & 0o777 == 0o640
    assert first.stdout == "changed: [localhost]"
    assert not any(key.startswith("_ansible") or key == "invocation" for key in first.data)

    second = module(executor, LOCAL, "ansible.builtin.copy", args)
    assert (second.rc, second.data["changed"]) == (0, False), second
    assert second.stdout == "ok: [localhost]"


def test_free_form_command_streams_events_and_leaves_artifacts_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "operator-" + uuid.uuid4().hex
    monkeypatch.setenv("CAIRN_TEST_OPERATOR_TOKEN", token)  # inherited by ansible, not for the record
    secret = "hunter2-" + uuid.uuid4().hex
    executor = AnsibleExecutor(ExecutionOptions(), redact=lambda text: text.replace(secret, "***"))
    artifacts = tmp_path / "runs" / "r1" / "localhost" / "ansible" / "detect.probe"
    output = OutputRecorder()

    result = module(
        executor,
        LOCAL,
        "ansible.builtin.command",
        f"echo token={secret}",
        artifacts=artifacts,
        on_output=output,
    )

    # the event (and so the result) is redacted as it arrives, before it is written anywhere
    assert (result.rc, result.stdout, result.stderr) == (0, "token=***", "")
    assert result.data["cmd"] == ["echo", "token=***"]
    assert "TASK [ansible.builtin.command]" in output.text("stdout")
    assert "changed: [localhost]\n" in output.text("stdout")
    events = list(artifacts.glob("artifacts/*/job_events/*.json"))
    kinds = {json.loads(e.read_text())["event"] for e in events}
    assert {"playbook_on_start", "runner_on_ok", "playbook_on_stats"} <= kinds
    assert next(artifacts.glob("artifacts/*/status")).read_text() == "successful"
    assert not (artifacts / PLAY_FILE).exists()  # the generated playbook held the arguments
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert [p for p in files if secret.encode() in p.read_bytes()] == []
    assert [p for p in files if token.encode() in p.read_bytes()] == []
    assert any(b"token=***" in p.read_bytes() for p in files)  # redacted, not merely absent


def test_failing_module_is_rc_2_with_its_message_in_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = module(
        AnsibleExecutor(ExecutionOptions()),
        LOCAL,
        "ansible.builtin.file",
        {"path": str(missing), "state": "file"},
    )
    assert result.rc == 2
    assert f"file ({missing}) is absent, cannot continue" in result.stderr
    assert "is absent" in result.data["msg"]
    assert "fatal: [localhost]: FAILED!" in result.stdout  # no stdout of its own: ansible's lines


def test_shipped_playbook_runs_relative_to_the_runbook_folder_and_counts_its_tasks(tmp_path: Path) -> None:
    runbook_dir = tmp_path / "runbooks"
    (runbook_dir / "plays").mkdir(parents=True)
    (runbook_dir / "plays" / "check.yml").write_text(
        "- hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: look around\n"
        "      ansible.builtin.command: uname -s\n"
        "      changed_when: false\n"
        "    - name: give up\n"
        "      ansible.builtin.fail:\n"
        "        msg: disk is still full\n"
    )
    executor = AnsibleExecutor(ExecutionOptions())
    output = OutputRecorder()

    result = executor.execute(
        LOCAL,
        AnsibleTask(AnsibleAction(playbook="plays/check.yml"), None, runbook_dir),
        timeout=60,
        on_output=output,
    )

    assert result.rc == 2
    assert {k: result.data[k] for k in ("ok", "changed", "failures", "skipped")} == {
        "ok": 1,
        "changed": 0,
        "failures": 1,
        "skipped": 0,
    }
    assert result.data["tasks"] == [
        {"task": "look around", "status": "ok", "msg": ""},
        {"task": "give up", "status": "failed", "msg": "disk is still full"},
    ]
    assert result.stderr == "give up: disk is still full"
    assert "PLAY RECAP" in result.stdout
    assert "TASK [give up]" in output.text("stdout")


def test_missing_shipped_playbook_says_where_it_looked(tmp_path: Path) -> None:
    executor = AnsibleExecutor(ExecutionOptions())
    with pytest.raises(ExecutorError, match=r"playbook 'gone\.yml' not found in .*runbook"):
        executor.execute(LOCAL, AnsibleTask(AnsibleAction(playbook="gone.yml"), None, tmp_path), timeout=60)


def test_a_shell_task_returns_the_commands_own_stdout_stderr_and_rc() -> None:
    output = OutputRecorder()
    result = AnsibleExecutor(ExecutionOptions()).execute(
        LOCAL, Shell("echo out; echo '{{ 6 * 7 }}'; echo err >&2; exit 3"), timeout=60, on_output=output
    )
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n{{ 6 * 7 }}\n", "err\n")
    assert (output.text("stdout"), output.text("stderr")) == ("out\n{{ 6 * 7 }}\n", "err\n")
    assert result.data["cmd"].startswith("echo out;")
    assert not result.timed_out


def test_a_shell_task_timeout_keeps_partial_output_and_leaves_no_process(sleeper: str) -> None:
    result = AnsibleExecutor(ExecutionOptions()).execute(
        LOCAL, Shell(f"echo started; sleep {sleeper}"), timeout=2
    )
    assert (result.rc, result.timed_out, result.cancelled) == (None, True, False)
    assert result.stdout == "started\n"
    wait_for(lambda: not processes_with(f"sleep {sleeper}"), 10, f"sleep {sleeper} is gone")


def test_module_cancelled_from_another_thread_leaves_no_process(tmp_path: Path, sleeper: str) -> None:
    # ansible-core's workers setsid(): ansible-runner's kill alone would leave this sleep running
    started, cancel = tmp_path / "started", threading.Event()
    watcher = cancel_when(started, cancel)
    result = module(
        AnsibleExecutor(ExecutionOptions()),
        LOCAL,
        "ansible.builtin.shell",
        f"touch {started}; sleep {sleeper}",
        cancel=cancel,
    )
    watcher.join()
    assert started.exists()
    assert (result.rc, result.cancelled, result.timed_out) == (None, True, False)
    wait_for(lambda: not processes_with(f"sleep {sleeper}"), 10, f"sleep {sleeper} is gone")
    wait_for(lambda: not processes_with(str(started)), 10, "no ansible process of the job is left")


def test_module_timeout_is_timed_out_without_rc() -> None:
    result = module(
        AnsibleExecutor(ExecutionOptions()), LOCAL, "ansible.builtin.command", "sleep 30", timeout=0.5
    )
    assert (result.rc, result.timed_out, result.cancelled) == (None, True, False)


@pytest.mark.parametrize(
    ("ssh_said", "meaning"),
    [
        (
            'Task failed: Data could not be sent to remote host "127.0.0.2". Make sure this host can be '
            "reached over ssh: No ED25519 host key is known for [127.0.0.2]:2222 and you have requested "
            "strict checking.\r\nHost key verification failed.\r\n",
            "host key is not known",
        ),
        (
            "Failed to connect to the host via ssh: @@@@@@@@@@@\r\n@ WARNING: REMOTE HOST IDENTIFICATION "
            "HAS CHANGED! @\r\n@@@@@@@@@@@\r\nHost key verification failed.",
            "host key has CHANGED",
        ),
        ("Failed to connect to the host via ssh: user@127.0.0.2: Permission denied (publickey).", "permission"),
        ("Task failed: Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 1: "
         "Connection refused", "connection refused"),
    ],
)  # fmt: skip
def test_unreachable_message_leads_with_the_cause_and_keeps_ssh_text(ssh_said: str, meaning: str) -> None:
    described = describe_unreachable(ssh_said)
    assert meaning in described.split("; ssh said: ")[0]  # the cause first, in our words
    last_line = ssh_said.replace("\r\n", "\n").strip().splitlines()[-1].split("ssh: ")[-1]
    assert described.endswith(last_line.strip())
    assert "Task failed" not in described
    assert "@@@" not in described


# --------------------------------------------------------------------------- real sshd hosts


def fleet_executor(
    fleet: SshFleet, tmp_path: Path, *, known_hosts: Path | None = None, accept_new_host_keys: bool = False
) -> AnsibleExecutor:
    """An executor for ``fleet``'s inventory, checking ``known_hosts`` (default: the fleet's)."""
    inventory = fleet.write_inventory(tmp_path / "inventory.yml")
    options = ExecutionOptions(
        inventory_sources=(str(inventory),),
        known_hosts=fleet.known_hosts if known_hosts is None else known_hosts,
        accept_new_host_keys=accept_new_host_keys,
    )
    return AnsibleExecutor(options)


@pytest.mark.ssh
def test_module_on_two_fleet_hosts_at_once_as_the_login_user(ssh_fleet: SshFleet, tmp_path: Path) -> None:
    executor = fleet_executor(ssh_fleet, tmp_path)
    hosts = ssh_fleet.hosts[:2]
    results: dict[str, CommandResult] = {}

    def probe(name: str) -> None:
        results[name] = module(
            executor, Host(name, "ssh"), "ansible.builtin.shell", "whoami; echo $SSH_CONNECTION"
        )

    threads = [threading.Thread(target=probe, args=(h.name,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for host in hosts:
        user, connection = results[host.name].stdout.splitlines()
        assert user == ssh_fleet.user  # become is off unless the step asks for it
        assert connection.split()[2:] == [host.address, str(host.port)]


@pytest.mark.ssh
def test_unknown_host_key_is_refused_then_accepted_with_accept_new(
    ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = ssh_fleet.hosts[0]

    with pytest.raises(ExecutorError, match="host key verification failed") as refused:
        fleet_executor(ssh_fleet, tmp_path, known_hosts=empty).execute(
            Host(host.name, "ssh"), Shell("true"), timeout=60
        )
    assert refused.value.host == host.name
    assert "unreachable through Ansible" in str(refused.value)
    assert f"No ED25519 host key is known for [{host.address}]:{host.port}" in str(refused.value)
    assert empty.read_text() == ""

    accepting = fleet_executor(ssh_fleet, tmp_path, known_hosts=empty, accept_new_host_keys=True)
    assert accepting.execute(Host(host.name, "ssh"), Shell("echo in"), timeout=60).stdout == "in\n"
    assert ssh_fleet.host_public_key(host.name).split()[1] in empty.read_text()


@pytest.mark.ssh
def test_changed_host_key_is_refused_naming_the_change(own_ssh_fleet: OwnFleet, tmp_path: Path) -> None:
    fleet = own_ssh_fleet(1)
    fleet.restart_host("host01", new_host_key=True)
    with pytest.raises(ExecutorError, match="host key has CHANGED") as refused:
        fleet_executor(fleet, tmp_path).execute(Host("host01", "ssh"), Shell("true"), timeout=60)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in str(refused.value)


@pytest.mark.ssh
def test_cancelled_command_is_killed_on_the_ssh_host(
    ssh_fleet: SshFleet, tmp_path: Path, sleeper: str
) -> None:
    # The fleet's hosts are this machine, so /proc shows the remote side too.
    started = Path(f"/tmp/cairn-test-{uuid.uuid4().hex}")  # the login user must be able to write it
    cancel = threading.Event()
    watcher = cancel_when(started, cancel)
    try:
        result = fleet_executor(ssh_fleet, tmp_path).execute(
            Host(ssh_fleet.hosts[2].name, "ssh"),
            Shell(f"touch {started}; sleep {sleeper}"),
            timeout=300,
            cancel=cancel,
        )
    finally:
        watcher.join()
        started.unlink(missing_ok=True)
    assert (result.rc, result.cancelled) == (None, True)
    wait_for(lambda: not processes_with(f"sleep {sleeper}"), 10, f"sleep {sleeper} is gone from the host")


# --------------------------------------------------------------------------- secrets, confinement

SECRET_VALUE = 'p@ss w\'rd $(touch /tmp/cairn-owned) "quoted" {{ 6 * 7 }}'
"""One line: ansible's result repeats stdout as ``stdout_lines``, which a whole-value redaction misses."""


def cmdlines_with(value: str) -> list[str]:
    """Every command line on this machine (the fleet's hosts too) containing ``value`` or its first line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if value.encode() in cmdline or value.split("\n", maxsplit=1)[0].encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def secret_step(
    executor: AnsibleExecutor, host: Host, artifacts: Path
) -> tuple[CommandResult, list[list[str]]]:
    """Run a step that prints its secret variable and sleeps; scan every command line while it sleeps."""
    sleeper = f"3.{uuid.uuid4().int % 10**9:09d}"
    seen: list[list[str]] = []

    def scan_when_running() -> None:
        wait_for(lambda: bool(processes_with(f"sleep {sleeper}")), 60, "the command runs")
        seen.append(cmdlines_with(SECRET_VALUE))

    scanner = threading.Thread(target=scan_when_running)
    scanner.start()
    task = Shell(
        f'printf "%s" "$CAIRN_SECRET_TOKEN"; sleep {sleeper}', env={"CAIRN_SECRET_TOKEN": SECRET_VALUE}
    )
    result = executor.execute(host, task, timeout=60, artifacts=artifacts)
    scanner.join()
    return result, seen


def test_a_secret_reaches_a_command_via_ansible_as_a_variable_and_no_command_line(tmp_path: Path) -> None:
    # ansible's `environment:` keyword would put `CAIRN_SECRET_TOKEN=<value>` on the module's
    # `/bin/sh -c` command line; Cairn hands the values to the command on its stdin instead.
    artifacts = tmp_path / "artifacts"
    executor = AnsibleExecutor(ExecutionOptions(), redact=lambda text: text.replace(SECRET_VALUE, "***"))

    result, seen = secret_step(executor, LOCAL, artifacts)

    assert result.rc == 0, result.stderr
    assert result.stdout == "***"  # printed by the command, redacted in the result like any output
    assert seen == [[]]
    assert not Path("/tmp/cairn-owned").exists()
    kept = [
        p
        for p in artifacts.rglob("*")
        if p.is_file() and SECRET_VALUE.split("\n", maxsplit=1)[0].encode() in p.read_bytes()
    ]
    assert kept == []


@pytest.mark.ssh
def test_a_secret_reaches_a_command_on_an_ssh_host_via_ansible_and_no_command_line(
    ssh_fleet: SshFleet, tmp_path: Path
) -> None:
    result, seen = secret_step(
        fleet_executor(ssh_fleet, tmp_path), Host(ssh_fleet.hosts[12].name, "ssh"), tmp_path / "a"
    )

    assert result.rc == 0, result.stderr
    assert result.stdout == SECRET_VALUE
    assert seen == [[]]


def test_a_playbook_that_leads_outside_the_runbook_folder_is_refused_before_it_runs(tmp_path: Path) -> None:
    # The loader refuses such a runbook; a symlink swapped after loading must not get past the executor.
    folder, outside = tmp_path / "runbooks", tmp_path / "elsewhere.yml"
    folder.mkdir()
    ran = tmp_path / "ran"
    outside.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.file: {{path: {ran}, state: touch}}\n"
    )
    (folder / "play.yml").symlink_to(outside)
    executor = AnsibleExecutor(ExecutionOptions())

    for name in ("play.yml", "../elsewhere.yml", str(outside)):
        with pytest.raises(ExecutorError, match=r"outside the runbook.s folder|absolute path") as caught:
            executor.execute(LOCAL, AnsibleTask(AnsibleAction(playbook=name), None, folder), timeout=60)
        assert caught.value.host == "localhost"
    assert not ran.exists()


def test_a_command_flooding_its_output_is_cut_at_the_limit_in_the_result_and_the_artifacts(
    tmp_path: Path,
) -> None:
    artifacts = tmp_path / "artifacts"
    executor = AnsibleExecutor(ExecutionOptions(output_limit=1000))

    result = executor.execute(
        LOCAL, Shell("head -c 300000 /dev/zero | tr '\\0' x"), timeout=60, artifacts=artifacts
    )

    assert result.rc == 0
    assert result.stdout.startswith("x" * 1000 + "\n[… stdout truncated: 1,000 bytes kept of 293 KiB")
    assert "stdout_lines" not in result.data
    events = list(artifacts.glob("artifacts/*/job_events/*.json"))
    assert events and max(p.stat().st_size for p in events) < 20_000  # the event held all 300 kB
