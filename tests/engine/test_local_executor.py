"""LocalExecutor: exit codes, streamed output, timeouts and cancels that kill the whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.errors import ExecutorError
from engine.core.executors import AnsibleTask, ExecutionOptions, ExecutorSet, OutputCallback, Shell, Task
from engine.core.executors.ansible import AnsibleExecutor
from engine.core.executors.local import LocalExecutor
from engine.core.inputs import Redactor
from engine.core.model import LOCALHOST, AnsibleAction, CommandResult, Host
from tests.fakes import OutputRecorder


def processes_with(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # exited while we looked
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique ``sleep`` argument that finds this test's processes in /proc; kills leftovers after."""
    value = f"600.{uuid.uuid4().int % 10**12:012d}"
    yield value
    for pid in processes_with(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run(
    command: str,
    timeout: float = 30,
    on_output: OutputCallback | None = None,
    cancel: threading.Event | None = None,
) -> CommandResult:
    return LocalExecutor().execute(
        LOCALHOST, Shell(command), timeout=timeout, on_output=on_output, cancel=cancel
    )


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize("code", [0, 1, 3, 127])
def test_exit_code(code: int) -> None:
    result = run(f"exit {code}")

    assert result.rc == code
    assert not result.timed_out
    assert not result.cancelled


def test_command_not_found_is_rc_127_with_bash_message() -> None:
    result = run("no-such-command-for-cairn-tests")

    assert result.rc == 127
    assert "no-such-command-for-cairn-tests" in result.stderr


def test_stdout_and_stderr_are_kept_apart() -> None:
    recorder = OutputRecorder()

    result = run("echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 4", on_output=recorder)

    assert result.rc == 4
    assert result.stdout == "out1\nout2\n"
    assert result.stderr == "err1\nerr2\n"
    assert recorder.text("stdout") == "out1\nout2\n"
    assert recorder.text("stderr") == "err1\nerr2\n"
    assert not result.truncated


def test_runs_with_bash() -> None:
    result = run("echo ${BASH_VERSION:+bash}; [[ a == a ]] && echo ok")

    assert result.stdout == "bash\nok\n"


def test_output_is_streamed_as_it_arrives(tmp_path: Path) -> None:
    # The command prints a line, then waits for a file only the callback creates after seeing it.
    # If output reached the callback only at the end, the command would hang until its timeout.
    flag = tmp_path / "seen"
    recorder = OutputRecorder()

    def on_output(stream: str, text: str) -> None:
        recorder(stream, text)
        if "first" in text:
            flag.touch()

    result = run(
        f"echo first; while [ ! -e {flag} ]; do sleep 0.01; done; echo second",
        timeout=20,
        on_output=on_output,
    )

    assert not result.timed_out
    assert result.rc == 0
    assert result.stdout == "first\nsecond\n"
    assert recorder.chunks == [("stdout", "first\n"), ("stdout", "second\n")]


def test_a_line_every_10_ms_reaches_the_callback_in_fewer_larger_chunks() -> None:
    # 100 lines, one every 10 ms: read per line they were 100 callbacks (and 100 events per host);
    # the executor lets output gather after a small read, so each callback takes several lines.
    recorder = OutputRecorder()
    script = '$| = 1; for my $i (1 .. 100) { print "line $i\\n"; select(undef, undef, undef, 0.01) }'
    result = run(f"perl -e '{script}'", timeout=30, on_output=recorder)

    assert result.rc == 0
    assert "".join(text for _, text in recorder.chunks) == "".join(f"line {i}\n" for i in range(1, 101))
    assert len(recorder.chunks) <= 40, f"{len(recorder.chunks)} callbacks for 100 lines"


def test_utf8_character_split_across_reads_decodes(tmp_path: Path) -> None:
    # "€" is e2 82 ac: the first byte arrives with "a", the rest only after the callback saw "a".
    flag = tmp_path / "seen"
    recorder = OutputRecorder()

    def on_output(stream: str, text: str) -> None:
        recorder(stream, text)
        if text == "a":
            flag.touch()

    result = run(
        f"printf 'a\\xe2'; while [ ! -e {flag} ]; do sleep 0.01; done; printf '\\x82\\xac b\\n'",
        timeout=20,
        on_output=on_output,
    )

    assert result.rc == 0
    assert result.stdout == "a€ b\n"
    assert recorder.chunks == [("stdout", "a"), ("stdout", "€ b\n")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    result = run("printf 'ok \\xff\\xfe end\\n'")

    assert result.rc == 0
    assert result.stdout == "ok \ufffd\ufffd end\n"


def test_stdin_is_dev_null() -> None:
    result = run("readlink /proc/$$/fd/0; if read -r line; then echo got; else echo eof; fi", timeout=60)

    assert not result.timed_out
    assert result.stdout == "/dev/null\neof\n"


# --------------------------------------------------------------------------- timeout and cancel


def test_timeout_keeps_partial_output_and_kills_the_whole_group(marker: str) -> None:
    result = run(f"echo started; sleep {marker} & sleep {marker}; wait", timeout=2)

    assert result.timed_out
    assert result.rc is None
    assert not result.cancelled
    assert result.stdout == "started\n"
    assert processes_with(marker) == []


# Children that ignore SIGTERM (`trap '' TERM` is inherited), each printing its pid, so the test can
# look at exactly those processes the moment `run` returns.
STUBBORN = "trap '' TERM; for i in $(seq 40); do sleep {marker} & echo \"pid $!\"; done; echo started; wait"


def live_pids(stdout: str) -> list[int]:
    """Of the pids a STUBBORN command printed, those still running (zombies are dead)."""
    alive = []
    for line in stdout.splitlines():
        if not line.startswith("pid "):
            continue
        pid = int(line.split()[1])
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            alive.append(pid)
    return alive


def test_timeout_of_a_command_whose_children_ignore_sigterm(marker: str) -> None:
    result = run(STUBBORN.format(marker=marker), timeout=2)

    assert live_pids(result.stdout) == []
    assert processes_with(marker) == []
    assert result.timed_out
    assert result.rc is None
    assert result.stdout.endswith("started\n")
    assert result.stdout.count("pid ") == 40


def test_cancel_of_a_command_that_ignores_sigterm(marker: str) -> None:
    # Cancelling once "started" is seen makes sure the trap is in place before the group is
    # signalled, so only SIGKILL can end any of these processes.
    cancel = threading.Event()

    def on_output(stream: str, text: str) -> None:
        if "started" in text:
            cancel.set()

    result = run(STUBBORN.format(marker=marker), timeout=120, on_output=on_output, cancel=cancel)

    assert live_pids(result.stdout) == []
    assert processes_with(marker) == []
    assert result.cancelled
    assert result.rc is None
    assert not result.timed_out
    assert result.stdout.endswith("started\n")


def test_cancel_from_the_output_callback_stops_the_command(marker: str) -> None:
    cancel = threading.Event()

    def on_output(stream: str, text: str) -> None:
        if "started" in text:
            cancel.set()

    result = run(
        f"echo started; echo to-stderr >&2; sleep {marker} & sleep {marker}; wait",
        timeout=120,
        on_output=on_output,
        cancel=cancel,
    )

    assert result.cancelled
    assert not result.timed_out
    assert result.rc is None
    assert result.stdout == "started\n"
    assert processes_with(marker) == []


def test_cancel_set_before_the_run_kills_the_command(marker: str) -> None:
    cancel = threading.Event()
    cancel.set()

    result = run(f"sleep {marker}", timeout=120, cancel=cancel)

    assert result.cancelled
    assert result.rc is None
    assert processes_with(marker) == []


def test_background_child_holding_stdout_does_not_block_the_return(marker: str) -> None:
    result = run(f"sleep {marker} & echo parent done; exit 5", timeout=120)

    assert result.rc == 5
    assert not result.timed_out
    assert not result.cancelled
    assert result.stdout == "parent done\n"


def test_failing_output_callback_kills_the_command_and_raises(marker: str) -> None:
    def on_output(stream: str, text: str) -> None:
        raise RuntimeError("subscriber broke")

    with pytest.raises(RuntimeError, match="subscriber broke"):
        run(f"echo started; sleep {marker}", timeout=120, on_output=on_output)

    assert processes_with(marker) == []


# --------------------------------------------------------------------------- output limit


def limited(limit: int) -> LocalExecutor:
    return LocalExecutor(ExecutionOptions(output_limit=limit))


def test_output_beyond_the_limit_is_dropped_and_the_cut_is_marked_in_stream_and_result() -> None:
    # The journal's artifacts file is what the stream carries: it was unbounded (200 MB in, 200 MB on disk).
    recorder = OutputRecorder()
    total = 300_000

    result = limited(1000).execute(
        LOCALHOST, Shell(f"head -c {total} /dev/zero | tr '\\0' x"), timeout=30, on_output=recorder
    )

    assert result.rc == 0
    assert result.truncated
    marker = "\n[… stdout truncated: 1,000 bytes kept of 293 KiB; the rest was read and dropped"
    assert result.stdout.startswith("x" * 1000 + marker)
    assert recorder.text("stdout") == result.stdout  # the stream (so the artifacts) carries the same
    assert result.stdout.endswith(" …]\n")


def test_output_below_the_limit_is_complete() -> None:
    result = limited(1000).execute(
        LOCALHOST, Shell("printf '%s' \"$(head -c 500 /dev/zero | tr '\\0' y)\""), timeout=30
    )

    assert not result.truncated
    assert result.stdout == "y" * 500


def test_stderr_beyond_the_limit_is_marked_apart_from_stdout() -> None:
    result = limited(1000).execute(
        LOCALHOST, Shell("head -c 300000 /dev/zero | tr '\\0' e >&2; echo fine"), timeout=30
    )

    assert result.truncated
    assert result.stdout == "fine\n"
    assert "[… stderr truncated: 1,000 bytes kept of 293 KiB" in result.stderr


def test_the_limit_never_cuts_a_secret_in_half() -> None:
    # Cut at exactly the limit, the first half of a secret printed there was kept, and no redaction
    # can recognise half a secret.
    secret = "s3cr3t-value-0123456789"
    result = LocalExecutor(ExecutionOptions(output_limit=1000), redact=Redactor([secret])).execute(
        LOCALHOST, Shell(f"printf '%s' \"$(head -c 990 /dev/zero | tr '\\0' x)\" '{secret}' tail"), timeout=30
    )

    assert result.truncated
    assert result.stdout.startswith("x" * 990 + "\n[… stdout truncated")
    assert secret[:5] not in result.stdout


# --------------------------------------------------------------------------- ExecutorSet


def test_executor_set_gives_one_local_executor_for_local_hosts() -> None:
    executors = ExecutorSet()

    first = executors.for_host(LOCALHOST)
    second = executors.for_host(Host(name="other", connection="local"))

    assert isinstance(first, LocalExecutor)
    assert first is second
    executors.close()


def test_executor_set_refuses_a_connection_it_cannot_make_naming_the_host_and_the_fix() -> None:
    executors = ExecutorSet()

    with pytest.raises(ExecutorError) as caught:
        executors.for_host(Host(name="win1.example.com", connection="winrm"))

    message = str(caught.value)
    assert caught.value.host == "win1.example.com"
    assert message.startswith("win1.example.com: ")
    assert "ansible_connection=winrm is not supported natively (supported: local, ssh)" in message
    assert "--via ansible" in message


def test_executor_set_runs_a_shell_task_with_the_hosts_executor() -> None:
    executors = ExecutorSet()

    result = executors.execute(LOCALHOST, Shell("echo from $0"), timeout=10)

    assert (result.rc, result.stdout) == (0, "from /bin/bash\n")
    executors.close()


def test_executor_set_gives_ansible_tasks_to_the_ansible_executor_with_its_redactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the host's connection: ansible reaches it its own way; the redactor was given once."""
    seen: list[tuple[object, str, Task]] = []

    def execute(self: AnsibleExecutor, host: Host, task: Task, **kw: object) -> CommandResult:
        seen.append((self._redact, host.name, task))
        return CommandResult(0, "", "", 0.0)

    monkeypatch.setattr(AnsibleExecutor, "execute", execute)
    redact = str.upper
    executors = ExecutorSet(redact=redact)
    task = AnsibleTask(AnsibleAction(module="ansible.builtin.ping"), {}, Path("."))

    assert executors.execute(Host("win1", "winrm"), task, timeout=5).rc == 0
    assert seen == [(redact, "win1", task)]
    executors.close()


def test_via_ansible_reaches_every_host_through_the_ansible_executor() -> None:
    executors = ExecutorSet(options=ExecutionOptions(via="ansible"))

    assert isinstance(executors.for_host(Host("win1", "winrm")), AnsibleExecutor)
    assert executors.for_host(LOCALHOST) is executors.ansible()
    executors.close()


def test_each_executor_kind_says_how_it_reaches_a_host() -> None:
    native, via_ansible = ExecutorSet(), ExecutorSet(options=ExecutionOptions(via="ansible"))
    winrm = Host("win1", "winrm")

    assert native.describe(LOCALHOST) == "local: this machine"
    assert native.describe(winrm) == "not natively (ansible_connection=winrm): use --via ansible"
    assert via_ansible.describe(winrm) == "ansible-runner (ansible_connection=winrm)"
    native.close()
    via_ansible.close()


# --------------------------------------------------------------------------- secrets in the environment

SECRET_VALUE = 'p@ss w\'rd $(touch /tmp/cairn-owned) "quoted"\nsecond line'


def cmdlines_with(value: str) -> list[str]:
    """Every process's command line on this machine that contains ``value``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if value.encode() in cmdline or value.split("\n", maxsplit=1)[0].encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


class CmdlineWatch:
    """Once a process with ``marker`` on its command line runs, scan every command line for ``value``."""

    def __init__(self, marker: str, value: str) -> None:
        self.seen: list[str] | None = None
        self._thread = threading.Thread(target=self._watch, args=(marker, value), daemon=True)
        self._thread.start()

    def _watch(self, marker: str, value: str) -> None:
        deadline = time.monotonic() + 30
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        if processes_with(marker):
            self.seen = cmdlines_with(value)

    def result(self) -> list[str]:
        self._thread.join()
        assert self.seen is not None, "the command never ran"
        return self.seen


def test_a_secret_reaches_the_command_as_a_variable_and_no_command_line() -> None:
    sleeper = f"2.{uuid.uuid4().int % 10**9:09d}"
    watch = CmdlineWatch(sleeper, SECRET_VALUE)

    result = LocalExecutor().execute(
        LOCALHOST,
        Shell(
            f'printf "%s" "$CAIRN_SECRET_TOKEN"; sleep {sleeper}', env={"CAIRN_SECRET_TOKEN": SECRET_VALUE}
        ),
        timeout=30,
    )

    assert result.rc == 0, result.stderr
    assert result.stdout == SECRET_VALUE
    assert watch.result() == []
    assert not Path("/tmp/cairn-owned").exists()


def test_a_variable_name_that_is_not_a_name_is_refused() -> None:
    with pytest.raises(ExecutorError, match="not a valid environment variable name"):
        run_with_env({"BAD NAME": "x"})


def run_with_env(env: dict[str, str]) -> CommandResult:
    return LocalExecutor().execute(LOCALHOST, Shell("true", env=env), timeout=10)
