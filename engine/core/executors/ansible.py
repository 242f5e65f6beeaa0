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
  output comes back), marked as the step's (``CAIRN_STEP``): after the deadline the wrapper
  ends what left the group (:func:`~engine.core.executors.process_trees.kill_script`), and on
  cancel a second task does.
- **become.** A plain command of a step with ``become`` runs with the task's ``become``,
  ``become_user``, ``become_method`` and ``become_flags`` (any method Ansible knows); the
  password is Ansible's own ``ansible_become_password`` from the run's inventory, never
  written here. A cancelled escalated command is killed by an escalated task, locally too.
- **Secrets.** A plain command's variables (:attr:`Shell.env`) go on its stdin (the shell
  module's ``stdin``), read by the wrapper before the command runs: ansible's ``environment:``
  would put them on the module's ``/bin/sh -c`` command line. ``task_args`` and ``invocation``
  are dropped from events, and ``redact`` applied, as they arrive (so the result is redacted
  too); afterwards every text file in the data dir goes through ``redact``, the generated
  playbook (which held the arguments, 0600) is deleted and the inherited environment is
  dropped from ansible-runner's ``command`` record.
- **Bounded output.** A module's stdout and stderr, each event's text and the lines kept are cut
  at the run's ``output_limit``, with a marker (ansible itself still holds a module's whole
  result while it runs).
- **Events** are read by :mod:`engine.core.executors.ansible_events` as they arrive.
- **A shipped playbook stays inside the runbook's folder** (:func:`engine.core.confine.inside`):
  one that leads out (``..``, an absolute path, a symlink swapped after loading) is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from pathlib import Path
from typing import Any

import yaml

from engine.core.become import Become
from engine.core.confine import OutsideFolder, inside
from engine.core.errors import ExecutorError
from engine.core.executors import AnsibleTask, ExecutionOptions, OutputCallback, Redact, Shell, Task
from engine.core.executors.ansible_events import (
    Job,
    Outcome,
    map_strings,
    playbook_result,
    seconds_of,
    task_result,
)
from engine.core.executors.process_trees import kill_script
from engine.core.executors.step_env import ENV_READER, STEP_ENV, checked_env, env_payload, mark, new_token
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
_TEMPLATE = re.compile(r"\{[{%#]")
_STALE = ("env/envvars", "env/settings", "env/extravars", "env/cmdline", PLAY_FILE)


class _Unsafe(str):
    """A string Ansible must take literally (written as ``!unsafe``)."""

    __slots__ = ()


class _PlaybookDumper(yaml.SafeDumper):
    """Writes :class:`_Unsafe` strings with the ``!unsafe`` tag."""


_PlaybookDumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


def _literal(text: str) -> str:
    # Only template-like strings: Ansible types an !unsafe scalar as if unquoted ("0644" -> 644),
    # and a string holding "{{", "{%" or "{#" can only be a string.
    return _Unsafe(text) if _TEMPLATE.search(text) else text


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
            case Shell():
                return self._shell(host, task, timeout, on_output, cancel, artifacts)
            case AnsibleTask():
                return self._action(host, task, timeout, on_output, cancel, artifacts)

    def _shell(
        self,
        host: Host,
        shell_task: Shell,
        timeout: float,
        on_output: OutputCallback | None,
        cancel: threading.Event | None,
        artifacts: Path | None,
    ) -> CommandResult:
        """Run a command with ``ansible.builtin.shell`` (bash) on ``host``, under ``timeout`` there too."""
        command, env = shell_task.command, checked_env(host.name, shell_task.env)
        token = new_token()
        shell: dict[str, Any] = {"cmd": _Unsafe(_wrap(command, token, timeout, bool(env)))}
        shell |= {"executable": "/bin/bash", "strip_empty_ends": False}  # output exactly as printed
        if env:  # in the module's arguments, which travel on ssh's stdin (pipelining), not argv
            shell["stdin"] = _Unsafe(env_payload(env).decode())
        become = shell_task.become
        task = {"ansible.builtin.shell": shell} | _become_keywords(become)
        job = Job(host.name, on_output, self._redact, stream_events=False, limit=self.options.output_limit)
        outcome = self._execute(host, job, task, False, timeout + REMOTE_GRACE, cancel, artifacts)
        left = ""
        # Local commands died with the job, unless they run as another user: not ours to signal.
        if outcome.status == "canceled" and (host.connection != "local" or become is not None):
            left = self._kill_marked(host, token, become)
        result = task_result(host, job, outcome, msg_in_stderr=False)
        if left:
            result = dataclasses.replace(result, stderr=f"{result.stderr}{left}")
        if not isinstance(result.data, dict):
            return result
        result.data["cmd"] = command  # what the runbook ran, not the wrapper
        if result.rc in (124, 137) and seconds_of(result.data.get("delta")) >= timeout - 0.05:
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
        job = Job(host.name, on_output, self._redact, stream_events=True, limit=self.options.output_limit)
        if action.playbook:
            try:  # checked again here: a symlink may have been swapped since the runbook loaded
                path = inside(task.base_dir, action.playbook)
            except OutsideFolder as exc:
                raise ExecutorError(host.name, f"playbook refused: {exc}") from None
            if not path.is_file():
                raise ExecutorError(
                    host.name,
                    f"playbook {action.playbook!r} not found in {task.base_dir}: ship it beside the runbook",
                )
            outcome = self._execute(host, job, path, action.become, timeout, cancel, artifacts)
            return playbook_result(host, job, outcome)
        if not action.module:
            raise ValueError("an ansible step needs a module or a playbook")
        play: dict[str, Any] = {action.module: map_strings({} if args is None else args, _literal)}
        if action.become:
            play["become"] = True
        outcome = self._execute(host, job, play, False, timeout, cancel, artifacts)
        return task_result(host, job, outcome, msg_in_stderr=True)

    def close(self) -> None:
        """Nothing to release: every call is an ansible-playbook process of its own."""

    # ------------------------------------------------------------------ one ansible-playbook run

    def _execute(
        self,
        host: Host,
        job: Job,
        play: dict[str, Any] | Path,
        become: bool,
        timeout: float,
        cancel: threading.Event | None,
        artifacts: Path | None,
    ) -> Outcome:
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
            return Outcome(str(runner.status), runner.rc, time.monotonic() - started)
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

    def _kill_marked(self, host: Host, token: str, become: Become | None = None) -> str:
        """Kill a cancelled command on ``host``, and all it started: every process with its mark
        (as the user it ran as). Returns what the host said could not be killed."""
        task = {"ansible.builtin.command": {"argv": ["/bin/sh", "-c", kill_script(token, None)]}}
        task |= _become_keywords(become)
        job = Job(host.name, None, None, stream_events=False)
        try:
            self._execute(host, job, task | {"failed_when": False}, False, KILL_TASK_TIMEOUT, None, None)
        except ExecutorError as exc:
            log.warning("%s: cancelled command not killed (it ends at its deadline): %s", host.name, exc)
            return (
                f"cairn: could not reach {host.name} to kill the step's processes; they end at the deadline\n"
            )
        said = str(job.results[-1].res.get("stdout") or "") if job.results else ""
        return f"{said}\n" if said else ""


def _become_keywords(become: Become | None) -> dict[str, Any]:
    """A task's become keywords for a step with ``become`` (none without). The password is not
    among them: Ansible reads ``ansible_become_password`` from the run's inventory itself, so it
    is never written into the generated playbook, nor into extravars."""
    if become is None:
        return {}
    keywords: dict[str, Any] = {"become": True, "become_user": _literal(become.user)}
    keywords["become_method"] = _literal(become.method)
    if become.flags:
        keywords["become_flags"] = _literal(become.flags)
    return keywords


def _wrap(command: str, token: str, timeout: float, with_env: bool) -> str:
    """The module's bash: read the step's variables (if any) from stdin, mark the step, run the
    command under GNU timeout (which ends its process group at the deadline), then end what left
    the group if the deadline came (``SECONDS``: a command that exits 124 itself keeps its daemons)."""
    run = f"timeout -k {KILL_AFTER} {timeout:.3f}s /bin/bash -c {shlex.quote(command)}"
    after = (
        f'if {{ [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }} && [ $((SECONDS - started)) -ge {int(timeout)} ]; '
        f"then unset {STEP_ENV}; ( {kill_script(token, None)}\n) >&2; fi"
    )
    reader = ENV_READER if with_env else ""
    return f'{reader}{mark(token)}started=$SECONDS; {run}; rc=$?\n{after}\nexit "$rc"'


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
            redacted = map_strings(parsed, redact)
            new = json.dumps(redacted, ensure_ascii=False) if redacted != parsed else new
        if new != text:
            path.write_text(new, encoding="utf-8")
