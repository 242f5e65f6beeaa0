"""A lab declared beside its runbook, as a model, and how it is built (the lab file itself: :mod:`engine.lab.labfile`).

For the runbook ``DIR/ID.yaml``, ``DIR/ID.lab.yaml`` declares its lab; once checked it is a
:class:`DeclaredLab`, which builds the lab the way the bundled modules do:

1. free loopback ports are picked (``ports``);
2. ``setup`` runs once with ``bash -euo pipefail`` in the lab's folder, its output in
   ``logs/setup.log``; processes it leaves running in its session are adopted (recorded
   and stopped like the others);
3. each of ``processes`` is started with :meth:`LabContext.spawn` and, if it has
   ``ready``, waited for;
4. ``inputs``, ``hosts`` variables and ``notes`` are rendered as templates that see
   ``lab.dir``, ``lab.ports.<name>``, ``lab.healthy`` and ``lab.name``.

``teardown`` is recorded (script, ``LAB_*`` variables, timeout) in ``labs.json`` so that
``cairn lab down`` can run it without the lab file. docs/labs.md describes every key.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import TemplateError
from engine.lab.base import LabContext, LabDefinition, LabError, LabKind, LabResult, free_port
from engine.lab.scripts import LabTeardown, bash, process_name, run_script, session_members

DEFAULT_GROUP = "lab"
DEFAULT_HOST = "lab"
SETUP_TIMEOUT = 120.0
TEARDOWN_TIMEOUT = 30.0
READY_TIMEOUT = 15.0
READY_POLL = 0.05
"""Seconds between two runs of a process's ``ready`` command (each is a bash)."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One of a lab file's ``processes``."""

    name: str
    run: str
    ready: str = ""
    ready_timeout: float = READY_TIMEOUT


@dataclass(frozen=True, slots=True)
class DeclaredLab:
    """A checked lab file: everything ``up`` needs, with each default applied."""

    name: str
    """The runbook's id, which names the lab."""
    path: Path
    """The lab file (absolute)."""
    summary: str
    setup: str
    setup_timeout: float = SETUP_TIMEOUT
    healthy: bool = False
    requires: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    processes: tuple[ProcessSpec, ...] = ()
    teardown: str = ""
    teardown_timeout: float = TEARDOWN_TIMEOUT
    group: str = DEFAULT_GROUP
    hosts: Mapping[str, Mapping[str, Any]] | None = None
    """``None``: one host, ``lab``."""
    inputs: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def definition(self) -> LabDefinition:
        """The lab as ``LabRoot.up`` takes it."""
        return LabDefinition(
            name=self.name,
            summary=self.summary,
            kind=LabKind.DECLARED,
            build=self.build,
            programs=("bash", *(p for p in self.requires if p != "bash")),
            healthy_variant=self.healthy,
            source=str(self.path),
        )

    def build(self, ctx: LabContext) -> LabResult:
        """Pick the ports, run the setup, start the processes, render inputs, hosts and notes."""
        ports = _pick_ports(self.ports)
        variables = {
            "LAB_DIR": str(ctx.dir),
            "LAB_HEALTHY": "1" if ctx.healthy else "0",
            "LAB_NAME": self.name,
            "LAB_SOURCE_DIR": str(self.path.parent),
        } | {f"LAB_PORT_{name.upper()}": str(port) for name, port in ports.items()}
        env = dict(os.environ) | variables
        if self.teardown:  # recorded before setup starts: a setup that fails half-way is undone too
            ctx.teardown = LabTeardown(self.teardown, variables, self.teardown_timeout)
        self._run_setup(ctx, env)
        for spec in self.processes:
            self._start(ctx, spec, env)
        for spec in self.processes:
            if (code := ctx.exited(spec.name)) is not None:
                raise LabError(
                    f"lab {self.name}: process {spec.name} exited with {code} right after it started"
                    f"{_log_tail(ctx.log_path(spec.name))}"
                )
        context = {"lab": {"dir": str(ctx.dir), "ports": ports, "healthy": ctx.healthy, "name": self.name}}
        hosts = self.hosts if self.hosts is not None else {DEFAULT_HOST: {}}
        return LabResult(
            group=self.group,
            hosts={
                host: dict(self._render(hvars, context, f"hosts.{host}")) for host, hvars in hosts.items()
            },
            inputs=dict(self._render(self.inputs or {}, context, "inputs")),
            notes=[str(self._render(note, context, f"notes[{i}]")) for i, note in enumerate(self.notes)],
        )

    def _run_setup(self, ctx: LabContext, env: Mapping[str, str]) -> None:
        log = ctx.log_path("setup")
        arguments = ["-euo", "pipefail", "-c", self.setup]
        with log.open("ab") as out:
            proc, problem = run_script(arguments, cwd=ctx.dir, env=env, out=out, timeout=self.setup_timeout)
        if proc is not None:  # what it left running (`server &`) belongs to the lab from now on
            for pid in session_members(proc.pid):
                ctx.adopt(pid, f"setup:{process_name(pid, forked_from=[bash(), *arguments])}")
        if proc is None or problem or proc.returncode != 0:
            what = problem or f"exited with {proc.returncode if proc else '?'}"
            raise LabError(f"lab {self.name}: setup {what}{_log_tail(log, 'logs/setup.log')}")

    def _start(self, ctx: LabContext, spec: ProcessSpec, env: Mapping[str, str]) -> None:
        ctx.spawn([bash(), "-c", spec.run], name=spec.name, env=env, cwd=ctx.dir)
        if not spec.ready:
            return
        deadline = time.monotonic() + spec.ready_timeout

        def ready() -> bool:
            try:
                done = subprocess.run(
                    [bash(), "-c", spec.ready],
                    cwd=ctx.dir,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return False
            return done.returncode == 0

        ctx.wait_for(
            ready,
            f"process {spec.name} was ready (`{spec.ready}` exited 0)",
            timeout=spec.ready_timeout,
            process=spec.name,
            poll=READY_POLL,
        )

    def _render(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        """Strings rendered as templates; one that is a single ``{{ expression }}`` keeps its type."""
        from engine.core.expr import evaluate, render_text  # noqa: PLC0415 - jinja2 only when building

        try:
            if isinstance(value, str):
                single = _single_expression(value)
                if single is not None:
                    return evaluate(single, context, field=where)
                return render_text(value, context, field=where)
        except TemplateError as exc:
            raise LabError(f"lab {self.name}: {exc} (in {self.path})") from exc
        if isinstance(value, Mapping):
            return {k: self._render(v, context, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
        return value


def _pick_ports(names: Sequence[str]) -> dict[str, int]:
    picked: dict[str, int] = {}
    for name in names:
        port = free_port()
        while port in picked.values():
            port = free_port()
        picked[name] = port
    return picked


def _single_expression(text: str) -> str | None:
    """The expression of a string that is exactly one ``{{ expression }}``, else None."""
    inner = text.strip()
    if not (inner.startswith("{{") and inner.endswith("}}")):
        return None
    inner = inner[2:-2]
    if any(mark in inner for mark in ("{{", "}}", "{%", "{#")):
        return None
    return inner.strip()


def _log_tail(log: Path, what: str = "its log") -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
    except OSError:
        return ""
    return (f"; {what} ends:\n  " + "\n  ".join(lines)) if lines else f"; {what} is empty"
