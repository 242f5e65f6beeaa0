"""``cairn lab up/status/down``: practice labs that reproduce each pitfall on this machine.

A lab is named after the runbook it is for. ``up`` builds it in ``ROOT/NAME/``
(``ROOT``: ``--dir``, else ``$CAIRN_LAB_DIR``, else ``$XDG_STATE_HOME/cairn/lab``)
and writes, beside what it started:

* ``inventory.yml`` — the lab's hosts in the runbook's ``targets`` group, each with
  ``ansible_become: false`` (a lab's files are the user's own: a runbook's ``become`` needs no sudo);
* ``inputs.yaml`` — the runbook inputs that point it at the lab (``-e @inputs.yaml``);
* ``ROOT/labs.json`` — every lab that is up and the processes it started, so
  that ``down`` (a later process) stops exactly those, and ``status`` can tell
  whether they still run.

A lab is either bundled (a module registered in :data:`LABS`) or declared in a lab
file beside its runbook (:mod:`engine.lab.labfile`, :mod:`engine.lab.declared`; :mod:`engine.lab.catalog` finds
both); ``up`` takes either as a :class:`~engine.lab.base.LabDefinition`. The
programs a lab needs are checked before anything starts. A lab that fails while
starting is torn down (its teardown script, its processes, its folder) before the
error is reported. Labs only use loopback and unprivileged ports picked at random,
so several roots (a practice lab and a test-suite) run side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shlex
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from engine.lab.base import (
    LabContext,
    LabDefinition,
    LabError,
    LabKind,
    LabProcess,
    LabResult,
    reap,
    start_time,
)
from engine.lab.scripts import LabTeardown, TeardownOutcome

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


def bundled_lab(name: str) -> LabDefinition:
    """The bundled lab ``name`` (a module in :data:`LABS`)."""
    module = lab_module(name)
    return LabDefinition(
        name=name,
        summary=str(module.SUMMARY),
        kind=LabKind.BUNDLED,
        build=module.up,
        programs=tuple(getattr(module, "PROGRAMS", ())),
    )


def check_programs(lab: LabDefinition) -> None:
    """Fail, naming each missing program and its package, unless every program ``lab`` needs is here."""
    from engine.core.doctor import find_program  # noqa: PLC0415 - standard library only; cheap

    missing = [p for p in lab.programs if find_program(p) is None]
    if not missing:
        return
    from engine.core.doctor import debian_package, package_hint  # noqa: PLC0415 - only when something is missing

    named, packages = [], []
    for program in missing:
        hint = package_hint(program)
        named.append(f"{program} ({hint})" if hint else program)
        package = debian_package(program)
        if package and package not in packages:
            packages.append(package)
    which = "which is" if len(missing) == 1 else "which are"
    install = f": apt-get install {' '.join(packages)}" if packages else ""
    where = f" (its lab file: {lab.source})" if lab.source else ""
    raise LabError(
        f"lab {lab.name} needs {_and(named)}, {which} not installed{install}; "
        f"`cairn doctor` lists everything missing{where}"
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


LAB_HOST_VARS: dict[str, Any] = {"ansible_connection": "local", "ansible_become": False}
"""What every lab host starts from (the lab's own vars win): reached on this machine, and never escalated —
the inventory's ``ansible_become`` decides over a runbook's ``become``, as in Ansible."""
LAB_BECOME_COMMENT = "# ansible_become: false: the lab's files are the user's own: no sudo needed.\n"


@dataclass(frozen=True, slots=True)
class LabInfo:
    """A lab that is up, as recorded in ``labs.json``."""

    name: str
    directory: Path
    healthy: bool
    processes: tuple[LabProcess, ...]
    notes: tuple[str, ...]
    started_at: float
    kind: LabKind = LabKind.BUNDLED
    source: str = ""
    """The lab file of a declared lab (informational: ``down`` never reads it)."""
    teardown: LabTeardown | None = None

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.yml"

    @property
    def inputs(self) -> Path:
        return self.directory / "inputs.yaml"

    def command(self) -> str:
        """The ``cairn run`` that practises the runbook here (a declared lab's names its runbook folder)."""
        folder = f" --runbooks {shlex.quote(str(Path(self.source).parent))}" if self.source else ""
        inventory, inputs = shlex.quote(str(self.inventory)), shlex.quote(f"@{self.inputs}")
        return f"cairn run {self.name}{folder} -i {inventory} -e {inputs}"

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
            "kind": self.kind.value,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class StoppedLab:
    """A lab ``down`` stopped, and how its teardown script (if it has one) ended."""

    name: str
    teardown: TeardownOutcome | None = None


class LabRoot:
    """The labs under one root folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).resolve()

    # ------------------------------------------------------------------ public

    def up(self, lab: LabDefinition | str, *, healthy: bool = False) -> LabInfo:
        """Build and start one lab (a definition, or a bundled lab's name).

        Its programs are checked first; on any later failure its teardown runs, what it
        started is stopped and its folder removed before the error is raised.
        """
        definition = lab if isinstance(lab, LabDefinition) else bundled_lab(lab)
        name = definition.name
        if healthy and not definition.healthy_variant:
            raise LabError(
                f"lab {name} has no healthy variant: its lab file {definition.source} does not say "
                "`healthy: true` (its setup must then build the lab without the pitfall when LAB_HEALTHY=1)"
            )
        check_programs(definition)
        with self._locked() as state:
            if name in state:
                raise LabError(f"lab {name} is already up in {self.root}; `cairn lab down {name}` first")
            directory = self.root / name
            if directory.exists():
                shutil.rmtree(directory)
            ctx = LabContext(name, directory, healthy=healthy)
            try:
                result: LabResult = definition.build(ctx)
                self._write_files(name, directory, result)
            except BaseException as exc:
                undone = ctx.teardown.run(directory) if ctx.teardown is not None else None
                _stop(ctx.processes)
                shutil.rmtree(directory, ignore_errors=True)
                also = f"\n(and its {undone.describe()})" if undone is not None and not undone.ok else ""
                if isinstance(exc, KeyboardInterrupt):
                    raise
                if isinstance(exc, LabError):
                    if also:
                        raise LabError(f"{exc}{also}") from exc
                    raise
                raise LabError(f"lab {name} failed to start: {type(exc).__name__}: {exc}{also}") from exc
            info = LabInfo(
                name,
                directory,
                healthy,
                tuple(ctx.processes),
                tuple(result.notes),
                time.time(),
                definition.kind,
                definition.source,
                ctx.teardown,
            )
            state[name] = info
            return info

    def down(self, names: list[str] | None = None) -> list[StoppedLab]:
        """Stop the named labs (default: all that are up) and remove their folders.

        For each: its teardown script runs first (declared labs), then its processes are
        stopped. Needs nothing but ``labs.json``: not the runbook, not the lab file.
        """
        stopped = []
        with self._locked() as state:
            chosen = [n for n in (names or list(state)) if n in state]
            for name in chosen:
                info = state.pop(name)
                outcome = info.teardown.run(info.directory) if info.teardown is not None else None
                _stop(info.processes)
                shutil.rmtree(info.directory, ignore_errors=True)
                stopped.append(StoppedLab(name, outcome))
        return stopped

    def status(self) -> list[LabInfo]:
        with self._locked() as state:
            return list(state.values())

    def get(self, name: str) -> LabInfo | None:
        return next((i for i in self.status() if i.name == name), None)

    # ------------------------------------------------------------------ files

    def _write_files(self, name: str, directory: Path, result: LabResult) -> None:
        hosts = {host: LAB_HOST_VARS | dict(hvars) for host, hvars in result.hosts.items()}
        inventory = {"all": {"children": {result.group: {"hosts": hosts}}}}
        header = f"# Written by `cairn lab up {name}`; removed by `cairn lab down {name}`.\n"
        (directory / "inventory.yml").write_text(
            header + LAB_BECOME_COMMENT + yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8"
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
        "kind": info.kind.value,
        "source": info.source,
        "teardown": info.teardown.as_dict() if info.teardown is not None else None,
    }


def _teardown_of(raw: Any) -> LabTeardown | None:
    if not isinstance(raw, dict):
        return None
    return LabTeardown(str(raw["script"]), dict(raw.get("env", {})), float(raw.get("timeout", 30)))


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
            LabKind(entry.get("kind", LabKind.BUNDLED.value)),
            str(entry.get("source", "")),
            _teardown_of(entry.get("teardown")),
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
    """SIGTERM each recorded process's session, then SIGKILL what is left of it and its descendants.

    Returns once nothing of those process groups is alive: signals are delivered asynchronously,
    and a ``down`` that returned while a lab's child still ran (it had been sent SIGKILL, not yet
    scheduled) was seen by a test under load, and would be by a user who starts the lab again.
    """
    from engine.core.executors.local import group_alive  # noqa: PLC0415
    from engine.lab.ssh_fleet import _kill_trees  # noqa: PLC0415

    live = [p for p in processes if _same_process(p)]
    groups = [p.pid for p in live]  # spawned processes lead their own group; others' "group" is empty

    def running() -> bool:
        return any(_same_process(p) for p in live) or any(group_alive(g) for g in groups)

    for proc in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # spawned ones lead their own session (and group)
            except ProcessLookupError:
                os.kill(proc.pid, signal.SIGTERM)  # one a setup script left running leads no group
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and running():
        time.sleep(0.02)
    _kill_trees(p.pid for p in live if _same_process(p))
    for proc in live:  # what the group leader left behind in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and running():
        time.sleep(0.01)
    for proc in processes:
        reap(proc.pid)
