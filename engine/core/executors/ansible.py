"""Run Ansible modules, playbooks and (with ``--via ansible``) plain commands through ansible-runner.

Every call is one ``ansible-playbook`` run, limited to one host, in a private data dir of
its own (the step's artifacts folder, or a temporary one): calls from many threads share
nothing.

- **A generated one-task playbook, never ad-hoc mode.** The arguments were rendered by
  Cairn already: strings that look like templates are tagged ``!unsafe`` so that Ansible
  does not render them again (an alert label holding ``{{ lookup('pipe', …) }}`` would
  otherwise run here). A shipped playbook runs as given.
- **The run's own inventory**, ``limit`` = the host, so group_vars, host_vars and connection
  variables mean what they mean to ``ansible``; none: this machine, ``ansible_connection=local``.
- **Host keys stay verified** (ansible-runner turns checking off unless told otherwise). An
  unreachable host raises :class:`ExecutorError` with ssh's own reason.
- **Timeout and cancel.** ansible-runner polls both (every ``POLL_SECONDS`` here; 5 s by
  default) and kills ansible-playbook's process group, but ansible-core's workers call
  ``setsid()`` and would finish the task: every process of the job carries an environment
  marker, and those left are killed too. Processes on an SSH host are beyond that, so a
  plain command runs under GNU ``timeout`` *there* (it dies at its deadline and its partial
  output comes back), with a marked ``argv[0]`` by which a second task kills it on cancel.
- **Secrets.** ``task_args`` and ``invocation`` are dropped from events, and ``redact`` applied,
  as they arrive (so the result is redacted too); afterwards every text file in the data dir
  goes through ``redact``, the generated playbook is deleted and the inherited environment is
  dropped from ansible-runner's ``command`` record.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.core.errors import ExecutorError
from engine.core.executors import AnsibleTask, ExecutionOptions, OutputCallback, Redact, Shell, Task
from engine.core.model import CommandResult, Host

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""How often ansible-runner checks the timeout and the cancel callback."""
KILL_AFTER = 2
"""Seconds between SIGTERM and SIGKILL (GNU ``timeout`` on the host; leftover processes here)."""
REMOTE_GRACE = 30.0
"""For plain commands, how long after the host-side deadline ansible-runner kills the job itself
(a hung connection): ansible-playbook's start-up and the result's way back take 2-3 s idle, but
over 10 s with a fan-out loading both cores."""
KILL_TASK_TIMEOUT = 20.0
"""Seconds the task that kills a cancelled command may take."""
PLAY_FILE = "project/cairn-step.yml"
"""The generated playbook in the data dir; deleted after the run, as it holds the arguments."""
_JOB_ENV = "CAIRN_ANSIBLE_JOB"
_MARK = "cairn-step-"
_TEMPLATE = re.compile(r"\{[{%#]")
_RESULTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped"}
_STALE = ("env/envvars", "env/settings", "env/extravars", "env/cmdline", PLAY_FILE)
_CAUSES = (  # (words in ssh's message, what they mean), first match wins
    (("identification has changed",), "the host key has CHANGED since known_hosts recorded it "
     "(reinstalled host, or someone in the middle)"),
    (("host key verification failed",), "host key verification failed, the host key is not known "
     "(add it to known_hosts, e.g. with ssh-keyscan, or use --accept-new-host-keys)"),
    (("permission denied",), "authentication failed (permission denied)"),
    (("connection refused",), "connection refused"),
    (("timed out",), "connection timed out"),
)  # fmt: skip


class _Unsafe(str):
    """A string Ansible must take literally (written as ``!unsafe``)."""

    __slots__ = ()


class _PlaybookDumper(yaml.SafeDumper):
    """Writes :class:`_Unsafe` strings with the ``!unsafe`` tag."""


_PlaybookDumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it, dict keys included."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {_map_strings(k, change): _map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(v, change) for v in value]
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _literal(text: str) -> str:
    # Only template-like strings: Ansible types an !unsafe scalar as if unquoted ("0644" -> 644),
    # and a string holding "{{", "{%" or "{#" can only be a string.
    return _Unsafe(text) if _TEMPLATE.search(text) else text


@dataclass
class _TaskResult:
    task: str
    status: str
    """ok, changed, failed or skipped."""
    res: dict[str, Any]
    text: str
    """Ansible's line for it, e.g. ``changed: [node1]``."""
    ignored: bool = False


@dataclass
class _Job:
    """One ansible-runner call: what its events said about our host (fed from its thread)."""

    host: str
    on_output: OutputCallback | None
    redact: Redact | None
    stream_events: bool
    """Forward every event's text; otherwise only the command's output, when the result arrives."""
    results: list[_TaskResult] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    unreachable: str | None = None
    failure: BaseException | None = None
    abort: threading.Event = field(default_factory=threading.Event)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's ``event_handler``; True: the (scrubbed) event is still written to artifacts."""
        try:
            self._handle(event)
        except Exception as exc:  # a failing subscriber: stop the job, re-raise in the caller's thread
            self.failure = self.failure or exc
            self.abort.set()
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        data = _dict(event.get("event_data"))
        data.pop("task_args", None)
        res = _dict(data.get("res"))
        for part in [res, *(r for r in res.get("results") or () if isinstance(r, dict))]:
            part.pop("invocation", None)
        if self.redact is not None:  # the handler's event is the one written to job_events
            for key in list(event):
                event[key] = _map_strings(event[key], self.redact)
            data = _dict(event.get("event_data"))
            res = _dict(data.get("res"))
        text = str(event.get("stdout") or "").replace("\r\n", "\n").strip("\n")
        if text:
            self.lines.append(text)
            if self.stream_events and self.on_output is not None:
                self.on_output("stdout", text + "\n")
        kind = event.get("event")
        if kind == "playbook_on_stats":
            self.stats = data
        elif data.get("host") != self.host:
            return
        elif kind == "runner_on_unreachable":
            self.unreachable = str(res.get("msg") or text)
        elif kind in _RESULTS:
            status = "changed" if kind == "runner_on_ok" and res.get("changed") else _RESULTS[kind]
            task = str(data.get("task", ""))
            self.results.append(_TaskResult(task, status, res, text, bool(data.get("ignore_errors"))))
            if self.stream_events or self.on_output is None:
                return
            for stream in ("stdout", "stderr"):
                if res.get(stream):
                    self.on_output(stream, str(res[stream]))


@dataclass(frozen=True)
class _Outcome:
    status: str
    """ansible-runner's: successful, failed, timeout or canceled."""
    rc: int | None
    duration: float


def _import_ansible_runner() -> None:
    """Import the ``ansible_runner`` package whole before any of its modules is used.

    Its ``__init__`` imports ``ansible_runner.runner`` (which imports the ``ansible_runner.plugins``
    subpackage, binding that name to the module) and only then sets ``ansible_runner.plugins`` to
    the dict of plugins that ``Runner.run`` iterates. A second host's thread importing
    ``ansible_runner.interface`` in between got the finished submodule without waiting for the
    package and failed with "'module' object is not iterable" (seen 1 in 3 runs of
    tests/cli/test_cli_fleet.py: two hosts via ansible in a fresh process). Importing the package
    itself waits for its ``__init__`` to finish.
    """
    import ansible_runner  # noqa: F401, PLC0415


class AnsibleExecutor:
    """Runs Ansible modules, playbooks and (with --via ansible) plain commands through ansible-runner.

    It does every :data:`~engine.core.executors.Task` (an ``Executor[Task]``). ``redact`` is
    applied to the events as they arrive and to everything kept in the artifacts folder.
    """

    def __init__(self, options: ExecutionOptions, *, redact: Redact | None = None) -> None:
        self.options = options
        self._redact = redact
        self._path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
        ssh = ["-o", "ControlMaster=no", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"]
        if options.accept_new_host_keys:
            ssh[3] = "StrictHostKeyChecking=accept-new"
        if options.known_hosts is not None:
            ssh += ["-o", f"UserKnownHostsFile={os.path.abspath(options.known_hosts)}"]
        if options.ssh_config is not None:
            ssh += ["-F", os.path.abspath(options.ssh_config)]
        self._envvars = {
            "PATH": self._path,  # ansible-runner needs ansible-playbook on PATH, else "failed", rc 127
            "ANSIBLE_HOST_KEY_CHECKING": "True",  # ansible-runner's default is False
            "ANSIBLE_SSH_ARGS": shlex.join(ssh),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_TIMEOUT": str(max(1, math.ceil(options.connect_timeout))),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",  # keeps arguments out of the event text
        }
        self._ready = False
        self._lock = threading.Lock()

    def connect(self, host: Host) -> None:
        """Check that ansible-runner and ansible-playbook are installed (Ansible connects per task)."""
        with self._lock:
            if self._ready:
                return
            if importlib.util.find_spec("ansible_runner") is None:
                raise ExecutorError(host.name, "ansible-runner is not installed: pip install ansible-runner")
            if shutil.which("ansible-playbook", path=self._path) is None:
                raise ExecutorError(
                    host.name,
                    f"ansible-playbook not found in {Path(sys.executable).parent} or on PATH: "
                    "install ansible-core into Cairn's environment (pip install ansible-core)",
                )
            self._ready = True

    def describe(self, host: Host) -> str:
        """Ansible reaches the host its own way, by its ``ansible_connection``."""
        return f"ansible-runner (ansible_connection={host.connection})"

    def execute(
        self,
        host: Host,
        task: Task,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        cancel: threading.Event | None = None,
        artifacts: Path | None = None,
    ) -> CommandResult:
        """Run a shell command (``--via ansible``) or an ``ansible`` step's module or playbook on ``host``."""
        match task:
            case Shell(command):
                return self._shell(host, command, timeout, on_output, cancel, artifacts)
            case AnsibleTask():
                return self._action(host, task, timeout, on_output, cancel, artifacts)

    def _shell(
        self,
        host: Host,
        command: str,
        timeout: float,
        on_output: OutputCallback | None,
        cancel: threading.Event | None,
        artifacts: Path | None,
    ) -> CommandResult:
        """Run ``command`` with ``ansible.builtin.shell`` (bash) on ``host``, under ``timeout`` there too."""
        marker = f"{_MARK}{uuid.uuid4().hex}"
        # GNU timeout runs the command in a process group of its own and kills all of it at the
        # deadline; exec -a makes the marker its argv[0], which a cancel kills it by.
        wrapped = (
            f"exec -a {marker} timeout -k {KILL_AFTER} {timeout:.3f}s /bin/bash -c {shlex.quote(command)}"
        )
        shell = {"cmd": _Unsafe(wrapped), "executable": "/bin/bash", "strip_empty_ends": False}
        task = {"ansible.builtin.shell": shell}  # strip_empty_ends: output exactly as printed
        job = _Job(host.name, on_output, self._redact, stream_events=False)
        outcome = self._execute(host, job, task, False, timeout + REMOTE_GRACE, cancel, artifacts)
        if outcome.status == "canceled" and host.connection != "local":  # local ones died with the job
            self._kill_marked(host, marker)
        result = self._task_result(host, job, outcome, msg_in_stderr=False)
        if not isinstance(result.data, dict):
            return result
        result.data["cmd"] = command  # what the runbook ran, not the wrapper
        if result.rc in (124, 137) and _seconds(result.data.get("delta")) >= timeout - 0.05:
            # GNU timeout's exit status after the deadline (SIGTERM sufficed / SIGKILL was needed)
            return CommandResult(None, result.stdout, result.stderr, result.duration, True, data=result.data)
        return result

    def _action(
        self,
        host: Host,
        task: AnsibleTask,
        timeout: float,
        on_output: OutputCallback | None,
        cancel: threading.Event | None,
        artifacts: Path | None,
    ) -> CommandResult:
        """Run an ``ansible`` step: its module with the rendered arguments, or its playbook."""
        action, args = task.action, task.args
        job = _Job(host.name, on_output, self._redact, stream_events=True)
        if action.playbook:
            path = Path(task.base_dir, action.playbook).absolute()
            if not path.is_file():
                raise ExecutorError(
                    host.name,
                    f"playbook {action.playbook!r} not found in {task.base_dir}: ship it beside the runbook",
                )
            outcome = self._execute(host, job, path, action.become, timeout, cancel, artifacts)
            return self._playbook_result(host, job, outcome)
        if not action.module:
            raise ValueError("an ansible step needs a module or a playbook")
        play: dict[str, Any] = {action.module: _map_strings({} if args is None else args, _literal)}
        if action.become:
            play["become"] = True
        outcome = self._execute(host, job, play, False, timeout, cancel, artifacts)
        return self._task_result(host, job, outcome, msg_in_stderr=True)

    def close(self) -> None:
        """Nothing to release: every call is an ansible-playbook process of its own."""

    # ------------------------------------------------------------------ one ansible-playbook run

    def _execute(
        self,
        host: Host,
        job: _Job,
        play: dict[str, Any] | Path,
        become: bool,
        timeout: float,
        cancel: threading.Event | None,
        artifacts: Path | None,
    ) -> _Outcome:
        """Run a one-task play (``play`` is its task) or a shipped playbook (a path) on ``host``."""
        self.connect(host)
        _import_ansible_runner()
        from ansible_runner.interface import init_runner  # noqa: PLC0415 - heavy: loaded when first used

        data_dir = Path(artifacts) if artifacts else Path(tempfile.mkdtemp(prefix="cairn-ansible-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in _STALE:  # ansible-runner never overwrites env/* files: a rerun must not reuse them
            (data_dir / name).unlink(missing_ok=True)
        playbook = play if isinstance(play, Path) else data_dir / PLAY_FILE
        if isinstance(play, dict):
            playbook.parent.mkdir(exist_ok=True)
            document = [{"name": "cairn", "hosts": "all", "gather_facts": False, "tasks": [play]}]
            with os.fdopen(os.open(playbook, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                yaml.dump(document, out, Dumper=_PlaybookDumper, sort_keys=False)
        job_id, started = uuid.uuid4().hex, time.monotonic()
        crashed: list[BaseException] = []
        try:
            runner = init_runner(
                private_data_dir=str(data_dir),
                playbook=str(playbook),
                inventory=self._inventory(host),
                limit=host.name,
                envvars=self._envvars | {_JOB_ENV: job_id},
                settings={"pexpect_timeout": POLL_SECONDS},
                cmdline="--become" if become else None,
                quiet=True,  # ansible never writes to our stdout
                timeout=max(1, math.ceil(timeout)),  # ansible-runner truncates to int, and 0 means none
                event_handler=job.handle,
                cancel_callback=lambda: job.abort.is_set() or (cancel is not None and cancel.is_set()),
            )

            def work() -> None:
                try:
                    runner.run()
                except BaseException as exc:  # reported in the caller's thread
                    crashed.append(exc)

            # In a thread of its own so that Ctrl-C here stops the job instead of abandoning it.
            worker = threading.Thread(target=work, name=f"ansible-runner {host.name}", daemon=True)
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.2)
            finally:
                if worker.is_alive():
                    job.abort.set()
                    worker.join()
                if job.abort.is_set() or runner.status in ("timeout", "canceled"):
                    _kill_leftovers(job_id)
            if job.failure is not None:
                raise job.failure
            if crashed:
                raise ExecutorError(host.name, f"ansible-runner failed: {crashed[0]}") from crashed[0]
            log.debug("%s: ansible-playbook %s, rc %s", host.name, runner.status, runner.rc)
            return _Outcome(str(runner.status), runner.rc, time.monotonic() - started)
        finally:
            _seal(data_dir, job.redact, self._envvars, None if isinstance(play, Path) else playbook)
            if artifacts is None:
                shutil.rmtree(data_dir, ignore_errors=True)

    def _inventory(self, host: Host) -> list[str] | dict[str, Any]:
        if self.options.inventory_sources:  # absolute: ansible-playbook runs in the data dir
            return [
                s if "," in s and not os.path.exists(s) else os.path.abspath(s)
                for s in self.options.inventory_sources
            ]
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        local = {"ansible_connection": "local", "ansible_python_interpreter": python}
        return {"all": {"hosts": {host.name: local}}}

    def _kill_marked(self, host: Host, marker: str) -> None:
        """Kill a cancelled command on ``host``: GNU timeout passes SIGTERM on to its process group."""
        argv = ["pkill", "-TERM", "-f", f"^{marker} "]
        task = {"ansible.builtin.command": {"argv": argv}, "failed_when": False}
        job = _Job(host.name, None, None, stream_events=False)
        try:
            self._execute(host, job, task, False, KILL_TASK_TIMEOUT, None, None)
        except ExecutorError as exc:
            log.warning("%s: cancelled command not killed (it ends at its deadline): %s", host.name, exc)

    # ------------------------------------------------------------------ events -> CommandResult

    def _task_result(self, host: Host, job: _Job, outcome: _Outcome, *, msg_in_stderr: bool) -> CommandResult:
        _raise_for_host(host, job, outcome)
        ended = {"timed_out": outcome.status == "timeout", "cancelled": outcome.status == "canceled"}
        if not job.results:  # killed before the result, or ansible's own error (unknown module …)
            rc = None if any(ended.values()) else (outcome.rc or 0)
            return CommandResult(rc, "", "\n".join(job.lines) if rc else "", outcome.duration, **ended)
        result = job.results[-1]
        res = result.res
        has_rc = isinstance(res.get("rc"), int)
        stderr, msg = str(res.get("stderr") or ""), str(res.get("msg") or "")
        if result.status == "failed" and msg and (msg_in_stderr or not has_rc):
            stderr = f"{stderr.rstrip()}\n{msg}".lstrip("\n")
        data = {k: v for k, v in res.items() if not k.startswith("_ansible") and k != "invocation"}
        data["changed"] = bool(res.get("changed", False))
        rc = res["rc"] if has_rc else (2 if result.status == "failed" else 0)
        stdout = str(res["stdout"]) if "stdout" in res else result.text
        rc = None if any(ended.values()) else rc
        return CommandResult(rc, stdout, stderr, outcome.duration, data=data, **ended)

    def _playbook_result(self, host: Host, job: _Job, outcome: _Outcome) -> CommandResult:
        _raise_for_host(host, job, outcome)
        tasks: list[dict[str, Any]] = []
        failed: list[str] = []
        counts = {"ok": 0, "changed": 0, "failures": 0, "skipped": 0}
        for r in job.results:
            msg = str(r.res.get("msg", ""))
            tasks.append(
                {"task": r.task, "status": r.status, "msg": msg} | ({"ignored": True} if r.ignored else {})
            )
            failed += [f"{r.task}: {msg}"] if r.status == "failed" and not r.ignored else []
            for key, counted in (
                ("ok", r.status in ("ok", "changed") or r.ignored),  # as ansible's recap counts
                ("changed", r.status == "changed"),
                ("failures", r.status == "failed" and not r.ignored),
                ("skipped", r.status == "skipped"),
            ):
                counts[key] += counted
        if job.stats:  # ansible's own recap, when it got that far (its ok counts changed and ignored too)
            counts = {key: int(_dict(job.stats.get(key)).get(host.name, 0)) for key in counts}
        stdout = "\n".join(job.lines)
        rc: int | None = 2 if counts["failures"] else 0
        if outcome.status in ("timeout", "canceled"):
            rc = None
        elif not job.results and outcome.rc:  # ansible-playbook stopped before any task (syntax …)
            rc, failed = outcome.rc, [stdout]
        return CommandResult(
            rc,
            stdout,
            "\n".join(failed),
            outcome.duration,
            timed_out=outcome.status == "timeout",
            cancelled=outcome.status == "canceled",
            data={**counts, "tasks": tasks},
        )


def _raise_for_host(host: Host, job: _Job, outcome: _Outcome) -> None:
    """A host Ansible could not reach, or an ansible-playbook that did not start, is not a step result."""
    if job.unreachable is not None:
        raise ExecutorError(
            host.name, f"unreachable through Ansible: {describe_unreachable(job.unreachable)}"
        )
    if not job.results and outcome.status == "failed" and outcome.rc == 127:
        raise ExecutorError(host.name, f"ansible-playbook could not be started: {' '.join(job.lines)[-500:]}")


def describe_unreachable(message: str) -> str:
    """ssh's reason for an unreachable host (kept whole), led by what it means."""
    # ansible's wrapping ("Task failed: Data could not be sent to remote host …: ") adds nothing
    text = re.sub(r"^(?:Task failed: )?(?:.*?(?:via|over) ssh: )?", "", message, count=1, flags=re.S)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip() and "@@@" not in line)
    lower = text.lower()
    cause = next((meaning for words, meaning in _CAUSES if any(w in lower for w in words)), "")
    return f"{cause}; ssh said: {text[:800]}" if cause else text[:800]


def _kill_leftovers(job_id: str) -> None:
    """SIGKILL every process of the job still running: found by the environment marker they inherited."""
    needle = f"{_JOB_ENV}={job_id}".encode()
    deadline = time.monotonic() + KILL_AFTER
    while time.monotonic() < deadline:  # again until none is left: one may fork while we look
        found = []
        for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
            with contextlib.suppress(OSError):  # gone, or not ours to read
                if entry.name.isdigit() and needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))  # a zombie's environ reads empty: not found
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    log.warning("processes of ansible job %s survived SIGKILL", job_id)


def _seconds(delta: Any) -> float:
    """The command module's ``delta`` (``0:00:02.004``) in seconds; 0 when absent."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(delta or ""))
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else 0.0


def _seal(data_dir: Path, redact: Redact | None, envvars: dict[str, str], generated: Path | None) -> None:
    """Make the data dir fit to keep: no rendered arguments, no inherited environment, secrets redacted."""
    if generated is not None:
        generated.unlink(missing_ok=True)
    for record in data_dir.glob("artifacts/*/command"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            command = json.loads(record.read_text(encoding="utf-8"))
            # keep what the run set; drop what it inherited (the operator's tokens and keys …)
            env = command.get("env") or {}
            command["env"] = {k: v for k, v in env.items() if k in envvars or os.environ.get(k) != v}
            record.write_text(json.dumps(command, ensure_ascii=False), encoding="utf-8")
    if redact is None:
        return
    for path in data_dir.rglob("*"):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):  # a folder, or not text
            continue
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        new = redact(text)
        if isinstance(parsed, dict | list):  # JSON escapes could hide a secret from a plain replace
            redacted = _map_strings(parsed, redact)
            new = json.dumps(redacted, ensure_ascii=False) if redacted != parsed else new
        if new != text:
            path.write_text(new, encoding="utf-8")
