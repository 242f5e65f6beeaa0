"""What every practice lab is built from: a folder, detached processes it can find again, free ports.

A lab reproduces one pitfall's symptoms on this machine (see :mod:`engine.lab.lifecycle`
for ``cairn lab up/status/down``). A bundled lab is a module that provides::

    RUNBOOK = "ip-whitelist-breakage"      # the runbook it is for; also the lab's name
    SUMMARY = "nginx allow list ..."      # one line for `cairn lab status`
    PROGRAMS = ("nginx",)                  # programs it needs here, checked before anything starts
    def up(ctx: LabContext) -> LabResult   # build it in ctx.dir; ctx.healthy: without the pitfall

A declared lab is a lab file beside its runbook (:mod:`engine.lab.labfile`, :mod:`engine.lab.declared`); both
become a :class:`LabDefinition`, which is all :class:`~engine.lab.lifecycle.LabRoot` needs.

Processes are started with :meth:`LabContext.spawn`: each in its own session, its
output in ``logs/NAME.log``, recorded (pid and kernel start time, so a recycled
pid is never killed) so that ``cairn lab down`` — a later, separate process — can
stop it and everything it started.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.lab.scripts import tail_text

if TYPE_CHECKING:
    from engine.lab.scripts import LabTeardown

LOOPBACK = "127.0.0.1"
_POLL = 0.01
# Lab processes this process started (a TUI or a test runs labs in-process): kept so that
# they are reaped when stopped, not left as zombies or warned about as still running.
_OWN_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LabError(Exception):
    """A lab could not be built, started or stopped; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class LabProcess:
    """A process a lab started: enough to find it again from another process."""

    name: str
    pid: int
    started: int  # field 22 of /proc/PID/stat: tells a recycled pid apart

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "started": self.started}


@dataclass(slots=True)
class LabResult:
    """What a lab gives its user: where to run the runbook, with which inputs, and what to try.

    ``hosts`` become the inventory group ``group`` (the runbook's ``targets``); a
    host without ``ansible_connection`` is reached locally. ``inputs`` are
    written to ``inputs.yaml`` for ``cairn run RUNBOOK -e @inputs.yaml``.
    """

    group: str
    hosts: dict[str, dict[str, Any]]
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class LabKind(Enum):
    """Where a lab comes from."""

    BUNDLED = "bundled"
    """Shipped with Cairn: a module registered in ``engine.lab.lifecycle.LABS``."""
    DECLARED = "declared"
    """A lab file (``ID.lab.yaml``) beside the runbook it is for."""


@dataclass(frozen=True, slots=True)
class LabDefinition:
    """A lab that can be built, whatever it is made of: all that ``LabRoot.up`` needs."""

    name: str
    """The runbook it is for, which is also the lab's name."""
    summary: str
    kind: LabKind
    build: Callable[[LabContext], LabResult]
    programs: tuple[str, ...] = ()
    """Programs it needs on this machine, checked before anything starts."""
    healthy_variant: bool = True
    """Whether it can be built without the pitfall (``--healthy``)."""
    source: str = ""
    """The lab file of a declared lab."""


class LabContext:
    """The folder and process book-keeping one lab is built with."""

    def __init__(self, name: str, directory: Path, *, healthy: bool = False) -> None:
        self.name = name
        self.dir = directory
        self.healthy = healthy
        self.processes: list[LabProcess] = []
        self.teardown: LabTeardown | None = None
        """Run by ``down``, and by ``up`` when the lab fails after its setup began."""
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def python(self) -> str:
        """The interpreter Cairn runs on (lab helper programs run on it too)."""
        return sys.executable

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start ``argv`` detached (own session, stdin /dev/null, output to its log); returns its pid."""
        if name in self._popen:
            raise LabError(f"lab {self.name}: two processes named {name!r}")
        log = self.log_path(name).open("ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.dir,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise LabError(f"lab {self.name}: cannot start {argv[0]}: {exc}") from exc
        finally:
            log.close()
        self._popen[name] = proc
        _OWN_CHILDREN[proc.pid] = proc
        self.processes.append(LabProcess(name, proc.pid, start_time(proc.pid) or 0))
        return proc.pid

    def adopt(self, pid: int, name: str) -> None:
        """Record a process this lab did not spawn (one its setup script left running) so it is stopped too."""
        started = start_time(pid)
        if started is None:
            return
        taken = {p.name for p in self.processes}
        unique, number = name, 2
        while unique in taken:
            unique, number = f"{name}#{number}", number + 1
        self.processes.append(LabProcess(unique, pid, started))

    def exited(self, name: str) -> int | None:
        """The exit code of a process started here, or None while it runs."""
        return self._popen[name].poll()

    def wait_for(
        self,
        ready: Callable[[], bool],
        what: str,
        *,
        timeout: float = 15.0,
        process: str = "",
        poll: float = _POLL,
    ) -> None:
        """Poll ``ready`` until true; fail with the process's log tail if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if process and (code := self.exited(process)) is not None:
                raise LabError(
                    f"lab {self.name}: {process} exited with {code} before {what}{self._tail(process)}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"lab {self.name}: {what} did not happen within {timeout:g} s{self._tail(process)}"
                )
            time.sleep(poll)

    def wait_for_port(
        self, port: int, *, address: str = LOOPBACK, process: str = "", timeout: float = 15.0
    ) -> None:
        self.wait_for(
            lambda: connects(address, port),
            f"{address}:{port} accepted connections",
            process=process,
            timeout=timeout,
        )

    def _tail(self, process: str) -> str:
        if not process:
            return ""
        return tail_text(self.log_path(process).read_text(encoding="utf-8", errors="replace"), "its log")


def reap(pid: int, timeout: float = 5.0) -> None:
    """Collect the exit status of a lab process this process started, once it has been stopped."""
    proc = _OWN_CHILDREN.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _OWN_CHILDREN[pid] = proc


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


def free_port(address: str = LOOPBACK) -> int:
    """An unprivileged port free on ``address`` right now, away from the ephemeral range."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)  # below Linux's ephemeral range (32768+)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return port
    raise LabError(f"no free port on {address} after 200 tries")


def connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def executable(path: Path, text: str) -> Path:
    """Write a script and make it executable (a lab's stand-in commands)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def lab_env(**extra: str) -> dict[str, str]:
    """The environment for lab processes: ours, with the repository importable."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env
