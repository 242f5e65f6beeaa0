"""Preflight: are the programs a runbook's steps need on each target, before anything runs there?

A runbook (``requires:``) and each step (``requires:``) name the programs they
need on their targets. Before a host's first step, the runner asks the host
once — one small bash script, through the host's own executor, so over SSH it
is the remote PATH that counts — which of them it can find (``command -v``).
Then:

* a detect, diagnose or verify step whose program is missing is an **error**
  ("not run: needs kubectl, …"): a check that cannot look never says "healthy";
* a remediation that would need a missing program **does not start** on that
  host: no step of it runs, so nothing is half-changed, and the host's outcome
  says which step needs what and where it comes from (``engine.core.doctor``'s
  package hints).

When a step that may run on the host escalates (``become``: :mod:`engine.core.become`), the
probe checks the escalation too, before anything changes: the programs those steps need are
looked for *through the same sudo* (as root, with sudo's PATH), so a host where sudo is
missing, asks for a password nobody gave, or refuses, says so in one line ("sudo on web-3
asks for a password: set ansible_become_password, or allow NOPASSWD for alice"), its escalating
checks end ``not run`` with that line and no remediation starts there, as for a missing
program.

``cairn plan`` runs the same probe and shows what is missing per host.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.core import expr
from engine.core.become import Become, become_for
from engine.core.doctor import package_hint
from engine.core.errors import ExecutorError, TemplateError
from engine.core.executors import ExecutionOptions, Executor, Shell
from engine.core.model import PHASE_ORDER, Host, Phase, Runbook, Step, StepKind

PROBE_TIMEOUT = 30.0
"""Seconds the probe may take on a host (it only runs ``command -v``)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One program as a step declares it, rendered for one host."""

    declared: str
    """As written in the runbook (``{{ inputs.crictl }}``)."""
    program: str
    """Rendered for the host (``/opt/lab/bin/crictl``); ``""`` when it could not be rendered."""
    error: str = ""
    """Why it could not be rendered."""


@dataclass(frozen=True, slots=True)
class Preflight:
    """What one host has of the programs its steps need."""

    host: str
    found: Mapping[str, str] = field(default_factory=dict)
    """Program → where the host found it."""
    missing: tuple[str, ...] = ()
    """Programs the host does not have (or that are not executable there)."""
    needs: Mapping[str, tuple[Requirement, ...]] = field(default_factory=dict)
    """Step id → what it needs, rendered."""
    error: str = ""
    """Why the probe itself failed ("" when it ran): then every program counts as unknown."""
    escalates: tuple[str, ...] = ()
    """Steps that run as another user on this host (``become``)."""
    escalation: str = ""
    """Why they cannot here, in one line ("" when they can, or none escalates)."""
    become: Become | None = None
    """How they escalate (the label says it: ``as root via sudo``)."""
    missing_escalated: tuple[str, ...] = ()
    """Programs the escalating steps need that the host does not have for the user they run as
    (sudo's PATH); also in :attr:`missing`."""

    def lacking(self, step: Step) -> list[str]:
        """Why ``step`` cannot run here: one phrase per missing or unrenderable program, and the
        escalation that fails ([] when it can)."""
        reasons = []
        if self.escalation and step.id in self.escalates:
            reasons.append(self.escalation)
        for need in self.needs.get(step.id, ()):
            if need.error:
                reasons.append(f"its requirement {need.declared!r} could not be rendered: {need.error}")
            elif self.escalation and step.id in self.escalates:
                continue  # looked for through sudo, which failed: said above
            elif self.error:
                reasons.append(f"{need.program} could not be looked for ({self.error})")
            elif need.program in self._missing_for(step):
                reasons.append(missing_text(need.program, self.host))
        return reasons

    def _missing_for(self, step: Step) -> tuple[str, ...]:
        """The programs ``step`` needs that the user it runs as does not have here."""
        absent = self.missing_escalated if step.id in self.escalates else self._missing_plain
        return tuple(n.program for n in self.needs.get(step.id, ()) if n.program in absent)

    @property
    def _missing_plain(self) -> tuple[str, ...]:
        """What the login user's probe did not find (a program only escalating steps need is not asked)."""
        plain = {n.program for sid, needs in self.needs.items() if sid not in self.escalates for n in needs}
        return tuple(p for p in self.missing if p in plain)

    @property
    def ok(self) -> bool:
        """True when every program was found and every escalation works."""
        rendered = all(not n.error for needs in self.needs.values() for n in needs)
        return not self.missing and not self.error and rendered and not self.escalation

    def summary(self, runbook: Runbook) -> str:
        """One line: ``all 3 programs found``, or what is missing and which steps it stops; and
        whether the steps that escalate can."""
        parts = [self._programs_summary(runbook)]
        if self.escalates and self.escalation:
            stopped = [s for s in _steps(runbook) if s.id in self.escalates]
            steps = ", ".join(f"{_phase_of(runbook, s)} {s.id}" for s in stopped)
            parts.append(f"{self.escalation}: {steps} cannot run")
        elif self.escalates and self.become is not None:
            parts.append(f"{self.become.method} as {self.become.user} works")
        return "; ".join(p for p in parts if p)

    def _looked_for(self) -> set[str]:
        """The programs the probes looked for (not those of steps whose escalation failed)."""
        blocked = set(self.escalates) if self.escalation else set()
        return {
            n.program for sid, needs in self.needs.items() if sid not in blocked for n in needs if n.program
        }

    def _programs_summary(self, runbook: Runbook) -> str:
        programs = self._looked_for()
        if self.error:
            return f"could not look for {', '.join(sorted(programs))}: {self.error}"
        rendered = all(not n.error for needs in self.needs.values() for n in needs)
        if not self.missing and rendered:
            if not programs and self.escalates:
                return ""  # nothing but the escalation to say
            return f"all {len(programs)} program{'s' if len(programs) != 1 else ''} found"
        parts = []
        for program in self.missing:
            users = [s for s in _steps(runbook) if program in self._missing_for(s)]
            hint = package_hint(program)
            parts.append(
                f"{program} not found{f' ({hint})' if hint else ''}: "
                f"{', '.join(f'{_phase_of(runbook, s)} {s.id}' for s in users)} cannot run"
            )
        broken = [n for needs in self.needs.values() for n in needs if n.error]
        parts.extend(f"{n.declared!r} could not be rendered: {n.error}" for n in broken)
        return "; ".join(parts)


def missing_text(program: str, host: str) -> str:
    """``crontab is not installed on node1 (Debian package cron)``."""
    hint = package_hint(program)
    return f"{program} is not installed on {host}" + (f" ({hint})" if hint else "")


def requirements(runbook: Runbook, context: Mapping[str, Any]) -> dict[str, tuple[Requirement, ...]]:
    """Every step's programs rendered with ``context`` (target, vars, inputs, alert, run)."""
    rendered: dict[str, Requirement] = {}
    needs: dict[str, tuple[Requirement, ...]] = {}
    for step in _steps(runbook):
        reqs = []
        for declared in runbook.programs(step):
            if declared not in rendered:
                rendered[declared] = _render(declared, context, step.id)
            reqs.append(rendered[declared])
        if reqs:
            needs[step.id] = tuple(reqs)
    return needs


def _render(declared: str, context: Mapping[str, Any], step_id: str) -> Requirement:
    if "{" not in declared:
        return Requirement(declared, declared)
    try:
        program = expr.render_text(declared, context, step_id=step_id, field="requires").strip()
    except TemplateError as exc:
        return Requirement(declared, "", str(exc))
    if not program or any(c.isspace() for c in program):
        return Requirement(declared, "", f"it rendered to {program!r}, not a program name or path")
    return Requirement(declared, program)


def probe_command(programs: list[str]) -> str:
    """A bash script printing ``PROGRAM<TAB>PATH`` per program (PATH empty when not found)."""
    words = " ".join(shlex.quote(p) for p in programs)
    return f'for p in {words}; do printf \'%s\\t%s\\n\' "$p" "$(command -v -- "$p")"; done'


def probed_programs(command: str) -> list[str]:
    """The programs a :func:`probe_command` asks for (what a recording answers it from)."""
    head, found, rest = command.partition("for p in ")
    words, done, _ = rest.partition("; do ")
    if head or not found or not done:
        return []
    return shlex.split(words)


def parse_probe(stdout: str, programs: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(found: program → path, missing) from the probe's output; a program it did not print is missing."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        name, _, path = line.partition("\t")
        if name in programs and path.strip():
            found[name] = path.strip()
    return found, tuple(p for p in programs if p not in found)


def needs_preflight(runbook: Runbook, host: Host) -> bool:
    """True when ``host`` must be asked before its first step: some step needs a program, or
    escalates there."""
    return runbook.has_requirements or bool(escalating_steps(runbook, host)[1])


def escalating_steps(runbook: Runbook, host: Host) -> tuple[Become | None, tuple[str, ...]]:
    """How steps escalate on ``host`` (the host's variables say it the same way for every step),
    and which steps do."""
    found: Become | None = None
    ids = []
    for step in _steps(runbook):
        become = become_for(step, runbook, host.vars)
        if become is not None:
            found = found or become
            ids.append(step.id)
    return found, tuple(ids)


def check_host(
    executor: Executor[Shell], host: Host, runbook: Runbook, context: Mapping[str, Any]
) -> Preflight:
    """Ask ``host`` which programs its steps need it has, and whether the steps that escalate can:
    one command through its executor for the steps that run as the login user, one through sudo
    for those that escalate."""
    needs = requirements(runbook, context)
    become, escalates = escalating_steps(runbook, host)
    plain = _programs(needs, lambda step_id: step_id not in escalates)
    found: dict[str, str] = {}
    missing: tuple[str, ...] = ()
    error = ""
    if plain:
        try:
            found, missing = _probe(executor, host, plain, None)
        except _ProbeFailed as exc:
            error = str(exc)
    escalation = ""
    absent: tuple[str, ...] = ()
    if become is not None:
        escalated = _programs(needs, lambda step_id: step_id in escalates)
        try:
            more, absent = _probe(executor, host, escalated, become)
        except _ProbeFailed as exc:
            escalation = (
                str(exc) if exc.escalation else f"escalation ({become.label}) failed on {host.name}: {exc}"
            )
        else:
            found = more | found  # where the login user finds it, when both do
            missing += tuple(p for p in absent if p not in missing)
    return Preflight(host.name, found, missing, needs, error, escalates, escalation, become, absent)


class _ProbeFailed(Exception):
    """The probe did not answer: the reason, in words (``escalation``: sudo's own one-line reason)."""

    def __init__(self, reason: str, *, escalation: bool = False) -> None:
        super().__init__(reason)
        self.escalation = escalation


def _programs(needs: Mapping[str, tuple[Requirement, ...]], wanted: Any) -> list[str]:
    return sorted(
        {n.program for step_id, reqs in needs.items() if wanted(step_id) for n in reqs if n.program}
    )


def _probe(
    executor: Executor[Shell], host: Host, programs: list[str], become: Become | None
) -> tuple[dict[str, str], tuple[str, ...]]:
    """(found, missing) of ``programs`` on ``host``, looked for as the user ``become`` says.

    Escalated, the probe runs even with no program to look for: then it only proves that sudo
    lets it run (``true`` is looked for, and not reported)."""
    from engine.core.executors.escalation import EscalationFailed  # noqa: PLC0415

    asked = programs or ["true"]
    try:
        result = executor.execute(host, Shell(probe_command(asked), become=become), timeout=PROBE_TIMEOUT)
    except EscalationFailed as exc:
        raise _ProbeFailed(exc.reason, escalation=True) from None
    except ExecutorError as exc:
        raise _ProbeFailed(str(exc)) from None
    if result.rc != 0 or result.timed_out or result.cancelled:
        detail = (result.stderr.strip().splitlines() or [f"exit code {result.rc}"])[-1][:200]
        raise _ProbeFailed(f"the probe failed: {detail}")
    found, missing = parse_probe(result.stdout, asked)
    return ({p: w for p, w in found.items() if p in programs}, tuple(p for p in missing if p in programs))


def check_hosts(
    runbook: Runbook,
    hosts: list[Host],
    inputs: Mapping[str, Any],
    options: ExecutionOptions | None = None,
    *,
    forks: int = 5,
) -> dict[str, Preflight]:
    """Preflight of every host, ``forks`` at a time (``cairn plan``): a host that cannot be reached says so."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from engine.core.executors import ExecutorSet  # noqa: PLC0415

    executors = ExecutorSet(options=options) if options is not None else ExecutorSet()

    def one(host: Host) -> Preflight:
        context = {"target": host.name, "vars": host.vars, "inputs": dict(inputs), "steps": {}, "alert": None}
        context["run"] = {"id": "(plan)", "phase": Phase.DETECT.value, "dry_run": True}
        try:
            executor = executors.for_host(host)
            executor.connect(host)
        except ExecutorError as exc:
            return Preflight(host.name, needs=requirements(runbook, context), error=f"cannot reach it: {exc}")
        return check_host(executor, host, runbook, context)

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
            return {p.host: p for p in pool.map(one, hosts)}
    finally:
        executors.close()


def blocked_remediation(preflight: Preflight, runbook: Runbook, state_context: Mapping[str, Any]) -> str:
    """Why the remediation cannot start on this host ("" when it can).

    A remediation step is counted when it could run: its ``when`` is true now, or
    cannot be decided yet (it reads a remediation step's result). Manual steps need no
    program.
    """
    reasons = []
    for step in runbook.remediate:
        if step.kind is StepKind.MANUAL:
            continue
        lacking = preflight.lacking(step)
        if not lacking or not _may_run(step, state_context):
            continue
        reasons.append(f"{step.id}: {'; '.join(lacking)}")
    if not reasons:
        return ""
    return f"remediation cannot run on {preflight.host} ({'; '.join(reasons)}); nothing was changed"


def _may_run(step: Step, context: Mapping[str, Any]) -> bool:
    if not step.when:
        return True
    try:
        return bool(expr.evaluate(step.when, context, step_id=step.id, field="when"))
    except TemplateError:
        return True  # it reads what only a remediation step will tell: assume it runs


def _steps(runbook: Runbook) -> list[Step]:
    seen: dict[str, Step] = {}
    for phase in PHASE_ORDER:
        for step in runbook.steps(phase):
            seen.setdefault(step.id, step)
    return list(seen.values())


def _phase_of(runbook: Runbook, step: Step) -> str:
    for phase in PHASE_ORDER:
        if any(s is step for s in runbook.steps(phase)):
            return str(phase.value)
    return ""
