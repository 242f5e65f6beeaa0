"""``cairn lab up/status/down``: practice labs that reproduce each pitfall on this machine.

A lab is named after the runbook it is for. ``up`` builds it in ``ROOT/NAME/``
(``ROOT``: ``--dir``, else ``$CAIRN_LAB_DIR``, else ``$XDG_STATE_HOME/cairn/lab``)
and writes, beside what it started:

* ``inventory.yml`` — the lab's hosts in the runbook's ``targets`` group;
* ``inputs.yaml`` — the runbook inputs that point it at the lab (``-e @inputs.yaml``);
* ``ROOT/labs.json`` — every lab that is up and the processes it started, so
  that ``down`` (a later process) stops exactly those, and ``status`` can tell
  whether they still run.

A lab that fails while starting is torn down before the error is reported.
Labs only use loopback and unprivileged ports picked at random, so several
roots (a practice lab and a test-suite) run side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from engine.lab.base import LabContext, LabError, LabProcess, LabResult, reap, start_time

# Runbook id -> the module that builds its lab.
LABS: dict[str, str] = {
    "node-notready-zombie-shim": "engine.lab.zombie_shim",
    "kubelet-cpu-memcg": "engine.lab.memcg",
    "platform-adoption": "engine.lab.adoption",
    "ip-whitelist-breakage": "engine.lab.whitelist",
    "dual-platform-deploy": "engine.lab.dual_platform",
    "branch-cleanup": "engine.lab.git_branches",
}
STATE = "labs.json"
STOP_TIMEOUT = 5.0


def default_root() -> Path:
    explicit = os.environ.get("CAIRN_LAB_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cairn" / "lab"


def lab_module(name: str) -> ModuleType:
    if name not in LABS:
        raise LabError(f"no lab named {name!r}; labs: {', '.join(LABS)} (or all)")
    return importlib.import_module(LABS[name])


def resolve_names(names: list[str]) -> list[str]:
    """``all`` or lab names, validated, in the registry's order, each once."""
    if not names or "all" in names:
        return list(LABS)
    unknown = [n for n in names if n not in LABS]
    if unknown:
        raise LabError(f"no lab named {unknown[0]!r}; labs: {', '.join(LABS)} (or all)")
    return [n for n in LABS if n in names]


@dataclass(frozen=True, slots=True)
class LabInfo:
    """A lab that is up, as recorded in ``labs.json``."""

    name: str
    directory: Path
    healthy: bool
    processes: tuple[LabProcess, ...]
    notes: tuple[str, ...]
    started_at: float

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.yml"

    @property
    def inputs(self) -> Path:
        return self.directory / "inputs.yaml"

    def command(self) -> str:
        return f"cairn run {self.name} -i {self.inventory} -e @{self.inputs}"

    def running(self) -> dict[str, bool]:
        return {p.name: _same_process(p) for p in self.processes}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "up": True,
            "runbook": self.name,
            "dir": str(self.directory),
            "healthy": self.healthy,
            "inventory": str(self.inventory),
            "inputs": str(self.inputs),
            "command": self.command(),
            "processes": [p.as_dict() | {"running": _same_process(p)} for p in self.processes],
            "notes": list(self.notes),
            "started_at": self.started_at,
        }


class LabRoot:
    """The labs under one root folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).resolve()

    # ------------------------------------------------------------------ public

    def up(self, name: str, *, healthy: bool = False) -> LabInfo:
        """Build and start one lab; on any failure, stop what it started and remove its folder."""
        module = lab_module(name)
        with self._locked() as state:
            if name in state:
                raise LabError(f"lab {name} is already up in {self.root}; `cairn lab down {name}` first")
            directory = self.root / name
            if directory.exists():
                shutil.rmtree(directory)
            ctx = LabContext(name, directory, healthy=healthy)
            try:
                result: LabResult = module.up(ctx)
                self._write_files(name, directory, result)
            except BaseException as exc:
                _stop(ctx.processes)
                shutil.rmtree(directory, ignore_errors=True)
                if isinstance(exc, LabError | KeyboardInterrupt):
                    raise
                raise LabError(f"lab {name} failed to start: {type(exc).__name__}: {exc}") from exc
            info = LabInfo(name, directory, healthy, tuple(ctx.processes), tuple(result.notes), time.time())
            state[name] = info
            return info

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop the named labs (default: all that are up) and remove their folders; returns those stopped."""
        with self._locked() as state:
            chosen = [n for n in (names or list(state)) if n in state]
            for name in chosen:
                info = state.pop(name)
                _stop(info.processes)
                shutil.rmtree(info.directory, ignore_errors=True)
            return chosen

    def status(self) -> list[LabInfo]:
        with self._locked() as state:
            return list(state.values())

    def get(self, name: str) -> LabInfo | None:
        return next((i for i in self.status() if i.name == name), None)

    # ------------------------------------------------------------------ files

    def _write_files(self, name: str, directory: Path, result: LabResult) -> None:
        hosts = {host: {"ansible_connection": "local"} | dict(hvars) for host, hvars in result.hosts.items()}
        inventory = {"all": {"children": {result.group: {"hosts": hosts}}}}
        header = f"# Written by `cairn lab up {name}`; removed by `cairn lab down {name}`.\n"
        (directory / "inventory.yml").write_text(
            header + yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8"
        )
        (directory / "inputs.yaml").write_text(
            header + yaml.safe_dump(result.inputs, sort_keys=False, width=1000), encoding="utf-8"
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, LabInfo]]:
        """``labs.json`` under an exclusive lock, written back when the block ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.root / STATE
            state = _read_state(path)
            try:
                yield state
            finally:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(
                    json.dumps({n: _info_dict(i) for n, i in state.items()}, indent=2), encoding="utf-8"
                )
                tmp.replace(path)


def _info_dict(info: LabInfo) -> dict[str, Any]:
    return {
        "dir": str(info.directory),
        "healthy": info.healthy,
        "processes": [p.as_dict() for p in info.processes],
        "notes": list(info.notes),
        "started_at": info.started_at,
    }


def _read_state(path: Path) -> dict[str, LabInfo]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LabError(
            f"cannot read {path}: {exc}; remove it after stopping the lab processes by hand"
        ) from exc
    return {
        name: LabInfo(
            name,
            Path(entry["dir"]),
            bool(entry.get("healthy")),
            tuple(
                LabProcess(p["name"], int(p["pid"]), int(p["started"])) for p in entry.get("processes", [])
            ),
            tuple(entry.get("notes", [])),
            float(entry.get("started_at", 0)),
        )
        for name, entry in raw.items()
    }


def _same_process(proc: LabProcess) -> bool:
    """Is the recorded process still running (same pid *and* same start time, not a zombie)?"""
    try:
        text = Path(f"/proc/{proc.pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    state = text[text.rindex(")") + 2 :].split()[0]
    return state not in ("Z", "X") and start_time(proc.pid) == proc.started


def _stop(processes: tuple[LabProcess, ...] | list[LabProcess]) -> None:
    """SIGTERM each recorded process's session, then SIGKILL what is left of it and its descendants."""
    from engine.lab.ssh_fleet import _kill_trees  # noqa: PLC0415

    live = [p for p in processes if _same_process(p)]
    for proc in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)  # each was started as a session (and group) leader
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(_same_process(p) for p in live):
        time.sleep(0.02)
    _kill_trees(p.pid for p in live if _same_process(p))
    for proc in live:  # what the group leader left behind in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in processes:
        reap(proc.pid)
