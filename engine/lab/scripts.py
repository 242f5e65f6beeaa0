"""Bash scripts of declared labs: each in a session of its own, with a deadline, and what it leaves behind.

A lab's ``setup`` and ``teardown`` scripts (:mod:`engine.lab.declared`) run through
:func:`run_script`: a new session (so the whole script can be killed, and what it left
running found again by :func:`session_members`), stdin from ``/dev/null``, output to a
file. :class:`LabTeardown` is what ``labs.json`` keeps of a teardown, so that ``cairn lab
down`` runs it without the lab file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class TeardownOutcome:
    """How a lab's teardown script ended."""

    exit_code: int | None
    """``None`` when it did not finish (timed out, or could not start)."""
    output: str
    problem: str = ""
    """Why it did not finish, when it did not."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        """One line (and the output's last lines) for a human."""
        what = self.problem or f"exited with {self.exit_code}"
        return f"teardown {what}{tail_text(self.output)}"

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "ok": self.ok, "problem": self.problem, "output": self.output}


@dataclass(frozen=True, slots=True)
class LabTeardown:
    """A bash script ``cairn lab down`` runs before it stops the lab's processes.

    Only the ``LAB_*`` variables are kept (written to ``labs.json``); the script runs with
    the environment of whoever runs ``down``, plus those.
    """

    script: str
    env: Mapping[str, str]
    timeout: float

    def run(self, directory: Path) -> TeardownOutcome:
        """Run it in ``directory`` (or, if that is gone, its parent); never raises for the script's faults."""
        cwd = next((d for d in (directory, directory.parent) if d.is_dir()), Path("/"))
        with tempfile.TemporaryFile() as out:
            proc, problem = run_script(
                ["-c", self.script],
                cwd=cwd,
                env=dict(os.environ) | dict(self.env),
                out=out,
                timeout=self.timeout,
            )
            if proc is not None:
                kill_session_leftovers(proc.pid)
            out.seek(0)
            text = out.read()[-8192:].decode("utf-8", errors="replace")
        code = proc.returncode if proc is not None and not problem else None
        return TeardownOutcome(code, text, problem)

    def as_dict(self) -> dict[str, Any]:
        return {"script": self.script, "env": dict(self.env), "timeout": self.timeout}


def tail_text(text: str, what: str = "its output") -> str:
    lines = text.splitlines()[-8:]
    return (f"; {what} ends:\n  " + "\n  ".join(lines)) if lines else ""


def bash() -> str:
    """The bash that lab scripts run with."""
    return shutil.which("bash") or "/bin/bash"


def run_script(
    bash_args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    out: IO[bytes],
    timeout: float,
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Run ``bash ARGS`` in a new session, its output to ``out``; (the finished process, why it did not finish).

    The process is ``None`` when bash could not start. On timeout (or Ctrl-C) its whole process
    group is killed; what it started in other groups of its session is left for the caller
    (:func:`session_members`) to adopt or kill.
    """
    try:
        proc = subprocess.Popen(
            [bash(), *bash_args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return None, f"could not start: {exc}"
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return proc, f"did not finish within {timeout:g} s"
    except BaseException:
        _kill_group(proc)
        raise
    return proc, ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def session_members(sid: int) -> list[int]:
    """Live processes (not zombies) of the session ``sid``, other than its leader."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == sid:
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def kill_session_leftovers(sid: int) -> None:
    """SIGKILL what a finished script left running in its session (a teardown must not leave any)."""
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def process_name(pid: int, *, forked_from: Sequence[str] = (), timeout: float = 1.0) -> str:
    """The kernel's name of ``pid`` (``comm``), or ``process`` if it is gone.

    A process just forked by a script (``server &``) is still a copy of the script's bash for a
    moment before it execs its program: while its command line is ``forked_from`` (the script's),
    wait up to ``timeout`` for the exec, so that it is named after its program (a subshell that
    never execs is named bash).
    """
    deadline = time.monotonic() + timeout
    while forked_from and _cmdline(pid) == list(forked_from) and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip() or "process"
    except OSError:
        return "process"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", errors="replace").split("\0")[:-1]
