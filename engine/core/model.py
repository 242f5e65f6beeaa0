"""The runbook and run model: frozen dataclasses and enums, built only by the loader.

Everything after :mod:`engine.core.loader` sees these types, never raw YAML dicts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

# --------------------------------------------------------------------------- enums


class Severity(Enum):
    """How bad the pitfall is when present."""

    INFO = "info"
    """Worth knowing; nothing is broken yet."""
    WARNING = "warning"
    """Degrades service or will break something if left alone."""
    CRITICAL = "critical"
    """Causes or is an outage."""


class Phase(Enum):
    """The four phases of a runbook, in the order they run."""

    DETECT = "detect"
    """Is the pitfall present on this target? Read-only."""
    DIAGNOSE = "diagnose"
    """Gather evidence about why and how bad. Read-only."""
    REMEDIATE = "remediate"
    """Change the target to fix it; needs approval by default."""
    VERIFY = "verify"
    """Prove the fix worked; a remediation counts only when verify is clean."""


PHASE_ORDER: tuple[Phase, ...] = (Phase.DETECT, Phase.DIAGNOSE, Phase.REMEDIATE, Phase.VERIFY)


class StepKind(Enum):
    """What a step does."""

    RUN = "run"
    """A bash command on the target."""
    MANUAL = "manual"
    """Instructions a human follows, then confirms."""
    ANSIBLE = "ansible"
    """An Ansible module or playbook through ansible-runner."""


class OnTimeout(Enum):
    """What a step's timeout means."""

    ERROR = "error"
    """The check itself failed: the run cannot tell."""
    FINDING = "finding"
    """The hang is the symptom: the pitfall is present."""


class ParseKind(Enum):
    """How a step's stdout becomes the structured ``out`` value."""

    TEXT = "text"
    """No parsing: ``out`` is stdout with the trailing newline removed."""
    JSON = "json"
    """``out`` is the JSON document on stdout."""
    LINES = "lines"
    """``out`` is the list of non-empty lines."""
    TABLE = "table"
    """``out`` is a list of dicts, one per row, keyed by column name."""
    NUMBER = "number"
    """``out`` is the one number on stdout (int when integral)."""
    REGEX = "regex"
    """``out`` is the list of matches of a regular expression."""


class InputType(Enum):
    """The type of a runbook input; values given with ``-e`` are converted to it."""

    STRING = "string"
    """Any text."""
    INTEGER = "integer"
    """A whole number."""
    NUMBER = "number"
    """Any number."""
    BOOLEAN = "boolean"
    """true/false, yes/no, 1/0."""
    DURATION = "duration"
    """A duration like ``30m``; templates see it as seconds."""


class StepStatus(Enum):
    """The result of one step on one host."""

    OK = "ok"
    """Ran and everything is as expected."""
    FINDING = "finding"
    """The pitfall's symptom is present."""
    ERROR = "error"
    """The step itself failed (exit code, parse error, template error …)."""
    SKIPPED = "skipped"
    """Not needed or not wanted: its ``when`` was false, a human or the approver skipped it, or a dry
    run showed it without running it."""
    TIMEOUT = "timeout"
    """Did not finish in time and the runbook treats that as an error."""
    DECLINED = "declined"
    """A human refused it."""
    NOT_ASKED = "not_asked"
    """It needed a human's decision and nobody was there to ask: no terminal, an alert-started run,
    a manual step in a ``--yes`` run, a run interrupted before the answer. The message says why."""
    NOT_RUN = "not_run"
    """Never started: the run was interrupted first, an earlier remediation step failed, or a program
    it needs is missing on the host (preflight). The message says which."""
    CANCELLED = "cancelled"
    """Its command was killed because the run was cancelled (Ctrl-C, the TUI's cancel, a server
    shutting down)."""
    INTERRUPTED = "interrupted"
    """It was running when the run stopped under it: Ctrl-C on its own thread, or the process that
    ran it died (the journal finds such steps when it reconciles)."""

    @property
    def finished(self) -> bool:
        """Whether the step got to an end of its own: a resumed run reuses finished steps and runs the
        rest (not run, cancelled, interrupted) again — but an unattended run never starts again a
        remediation step that was cancelled or interrupted (:attr:`ResumePoint.in_doubt`)."""
        return self not in _UNFINISHED

    @property
    def failed(self) -> bool:
        """The step started and did not complete: error, timeout, or killed by a cancel or interrupt."""
        return self in _FAILED_STEP

    @property
    def label(self) -> str:
        """How the status reads to a human: ``not run``, ``not asked``, ``ok``."""
        return self.value.replace("_", " ")


_UNFINISHED = frozenset({StepStatus.NOT_RUN, StepStatus.CANCELLED, StepStatus.INTERRUPTED})
_FAILED_STEP = frozenset({StepStatus.ERROR, StepStatus.TIMEOUT, StepStatus.CANCELLED, StepStatus.INTERRUPTED})


class HostOutcome(Enum):
    """What a run concluded about one host."""

    HEALTHY = "healthy"
    """Detect found nothing."""
    REMEDIATED = "remediated"
    """The pitfall was present, was remediated, and verify came back clean."""
    PRESENT = "present"
    """The pitfall is present and was not (fully) remediated."""
    FAILED = "failed"
    """The run itself failed on this host: an error or timeout that was not a finding."""

    @property
    def exit_code(self) -> int:
        """The exit code ``cairn run`` uses for this outcome."""
        return _OUTCOME_EXIT[self]


_OUTCOME_EXIT = {
    HostOutcome.HEALTHY: 0,
    HostOutcome.REMEDIATED: 0,
    HostOutcome.PRESENT: 1,
    HostOutcome.FAILED: 2,
}


class RunStatus(Enum):
    """Lifecycle of a run in the journal."""

    RUNNING = "running"
    """A live process is executing it."""
    FINISHED = "finished"
    """Reached its end (whatever the outcome)."""
    INTERRUPTED = "interrupted"
    """Stopped before its end: cancelled, killed, or the machine went down."""


# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
"""The JSON-Schema pattern for duration strings, kept next to the parser."""


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a number of seconds, or text like ``30s``, ``5m``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            text = value.strip().replace(" ", "")
            if text.isdigit():
                seconds = float(text)
            elif _DURATION_RE.match(text):
                seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            else:
                raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h30m or 500ms")
    except OverflowError:
        raise ValueError("duration is too large") from None
    if not math.isfinite(seconds):
        raise (
            ValueError("duration is too large") if seconds > 0 else ValueError(f"{value!r} is not a duration")
        )
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


def duration_value(value: str | int | float) -> int | float:
    """A duration input's value as templates see it: seconds, an int when whole (1800, not 1800.0)."""
    seconds = parse_duration(value)
    return int(seconds) if seconds.is_integer() else seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``1.2s``, ``4m05s``, ``2h10m``."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# --------------------------------------------------------------------------- runbook

DEFAULT_TIMEOUT = 60.0
"""Seconds a step may take when it does not say; nothing waits forever."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A link to upstream material: an issue, a fix, a write-up."""

    title: str
    url: str


@dataclass(frozen=True, slots=True)
class Trigger:
    """Which alerts start this runbook and how the target host is derived."""

    matchers: tuple[str, ...]
    target: str


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A typed runbook parameter."""

    name: str
    type: InputType
    description: str = ""
    default: Any = None
    has_default: bool = False
    secret: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class ParseSpec:
    """How to turn stdout into ``out``."""

    kind: ParseKind = ParseKind.TEXT
    columns: tuple[str, ...] = ()
    """Table column names; empty means the first line is the header."""
    separator: str | None = None
    """Table cell separator; ``None`` splits on runs of whitespace."""
    pattern: str = ""
    """Regular expression for ``regex``."""


@dataclass(frozen=True, slots=True)
class RunAction:
    """A ``run`` step: a bash command on the target."""

    kind: ClassVar[StepKind] = StepKind.RUN
    command: str
    """The command template: each ``{{ … }}`` value is shell-quoted when it is rendered."""


@dataclass(frozen=True, slots=True)
class ManualAction:
    """A ``manual`` step: instructions a human follows, then confirms (no executor runs it)."""

    kind: ClassVar[StepKind] = StepKind.MANUAL
    instructions: str
    """What the human does; a template, not quoted."""


@dataclass(frozen=True, slots=True)
class AnsibleAction:
    """An ``ansible`` step: a module with arguments, or a playbook beside the runbook."""

    kind: ClassVar[StepKind] = StepKind.ANSIBLE
    module: str = ""
    args: Any = None
    """The module's arguments as written (string values are templates)."""
    playbook: str = ""
    become: bool = False


Action = RunAction | ManualAction | AnsibleAction
"""What a step does, one of its kinds; ``match step.action`` dispatches on it."""


@dataclass(frozen=True, slots=True)
class Step:
    """One executable step of a phase."""

    id: str
    title: str
    action: Action
    """What it does: a command, instructions for a human, or an Ansible module or playbook."""
    why: str = ""
    when: str = ""
    expect: str = ""
    report: str = ""
    """Template for a one-line summary of the result."""
    timeout: float = DEFAULT_TIMEOUT
    on_timeout: OnTimeout = OnTimeout.ERROR
    parse: ParseSpec = field(default_factory=ParseSpec)
    exit_codes: tuple[int, ...] = (0,)
    confirm: bool = False
    automatic: bool = False
    """Remediate only: may run without a human in an alert-started run when the policy automates the runbook."""
    tradeoff: str = ""
    serial: str = ""
    """Remediate only: hosts per rolling batch, ``"2"`` or ``"25%"``; ``""`` means no batching."""
    requires: tuple[str, ...] = ()
    """Programs (names, paths or templates) this step needs on the target, beyond the runbook's."""
    allow_unquoted: str = ""
    """Why ``| unquoted`` (or a shell module's argument) may take text an outsider set: an alert's, or an
    input of an alert-started run. ``""``: it may not (validate and the run refuse it)."""
    become: bool | None = None
    """A ``run`` step's privilege escalation (:mod:`engine.core.become`); ``None``: the runbook's default."""
    pointer: str = ""
    """Where the step is in its file (``/detect/2``), for messages."""
    line: int = 0

    @property
    def kind(self) -> StepKind:
        """What kind of step it is: the kind of its action."""
        return self.action.kind


@dataclass(frozen=True, slots=True)
class Runbook:
    """A pitfall: its knowledge and its executable steps."""

    id: str
    title: str
    severity: Severity
    summary: str
    detect: tuple[Step, ...]
    tags: tuple[str, ...] = ()
    symptoms: tuple[str, ...] = ()
    cause: str = ""
    references: tuple[Reference, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    targets: str = "all"
    requires: tuple[str, ...] = ()
    """Programs (names, paths or templates) every step needs on the target: preflight checks them."""
    become: bool = False
    """The default ``become`` of its ``run`` steps."""
    diagnose: tuple[Step, ...] = ()
    remediate: tuple[Step, ...] = ()
    verify: tuple[Step, ...] = ()
    verify_is_detect: bool = True
    """True when verify re-runs the detect steps (the default)."""
    source_path: str = ""
    source_text: str = ""
    sha256: str = ""

    def steps(self, phase: Phase) -> tuple[Step, ...]:
        """The steps of ``phase``, in order (verify resolved to detect when so declared)."""
        match phase:
            case Phase.DETECT:
                return self.detect
            case Phase.DIAGNOSE:
                return self.diagnose
            case Phase.REMEDIATE:
                return self.remediate
            case Phase.VERIFY:
                return self.detect if self.verify_is_detect else self.verify

    def batch_size(self, targets: int) -> int | None:
        """Hosts per rolling remediation batch over ``targets`` hosts: the smallest ``serial`` of
        the remediate steps, at least 1; ``None`` when no step asks for batches."""
        sizes = []
        for step in self.remediate:
            if step.serial.endswith("%"):
                sizes.append(max(1, targets * int(step.serial[:-1]) // 100))
            elif step.serial:
                sizes.append(int(step.serial))
        return min(sizes) if sizes else None

    @property
    def automatic(self) -> bool:
        """True when some remediation step may run without a human (``automatic: true``)."""
        return any(step.automatic for step in self.remediate)

    def programs(self, step: Step) -> tuple[str, ...]:
        """What ``step`` needs on its target: the runbook's ``requires`` and its own (a manual step: none)."""
        if step.kind is StepKind.MANUAL:
            return ()
        return tuple(dict.fromkeys((*self.requires, *step.requires)))

    @property
    def has_requirements(self) -> bool:
        """True when some step needs a program (so preflight has something to check)."""
        return bool(self.requires) or any(s.requires for p in PHASE_ORDER for s in self.steps(p))

    def input(self, name: str) -> InputSpec | None:
        """The input called ``name``, if the runbook declares one."""
        return next((i for i in self.inputs if i.name == name), None)


# --------------------------------------------------------------------------- targets and results


@dataclass(frozen=True, slots=True)
class Host:
    """A target as the executors see it."""

    name: str
    connection: str = "local"
    """``local`` or ``ssh`` (Ansible's ``ansible_connection``)."""
    vars: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


LOCALHOST = Host(name="localhost", connection="local")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What an executor observed running one command."""

    rc: int | None
    """Exit code; ``None`` when the command was killed (timeout or cancel)."""
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    """True when output beyond the in-memory cap was dropped (artifacts hold it all)."""
    data: Any = None
    """Structured result, when the executor has one (an Ansible module's result dict)."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step on one host; a value, never an exception."""

    host: str
    phase: Phase
    step_id: str
    status: StepStatus
    message: str = ""
    command: str = ""
    """The rendered command or instructions, with secrets redacted."""
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    out: Any = None
    """Parsed stdout (per the step's ``parse``)."""
    started_at: float = 0.0
    duration: float = 0.0
    approval: str = ""
    """Who approved it (``tty:alice``, ``--yes``), or why it was declined."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """What an interrupted run finished, reused instead of run again when it is resumed, and the
    remediation steps it started whose end is unknown."""

    run_id: str
    """The interrupted run."""
    results: Mapping[tuple[str, Phase, str], StepResult]
    """Its final step results by (host, phase, step id)."""
    in_doubt: Mapping[tuple[str, Phase, str], StepResult] = field(default_factory=dict)
    """Remediation steps it started and did not finish (running, interrupted or cancelled when it
    stopped), by (host, phase, step id): they may have changed the host half-way. An unattended run
    never starts one again (at most once per remediation step); a human's resume asks again."""


@dataclass(frozen=True, slots=True)
class HostReport:
    """Every step result on one host and what they add up to."""

    host: str
    outcome: HostOutcome
    results: tuple[StepResult, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunReport:
    """The end of a run: one report per host."""

    run_id: str
    runbook_id: str
    hosts: tuple[HostReport, ...]
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 healthy or remediated, 1 present, 2 failed; the worst host decides; 130 interrupted."""
        if self.interrupted:
            return 130
        return max((h.outcome.exit_code for h in self.hosts), default=2)


def host_folder(name: str) -> str:
    """A host's (or any name's) folder under a run's artifacts: letters, digits, ``._-``; the rest ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"
