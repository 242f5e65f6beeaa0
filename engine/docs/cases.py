"""The training site's worked examples: a runbook's test cases shown as what a newcomer would see.

A test case (``ID.tests/NAME.yaml`` beside the runbook, :mod:`engine.core.replay.case`)
holds what every host answered to every step and what the runbook concludes. On the
runbook's page each becomes an example: per host, each step the case recorded (in the
runbook's phase order) with an excerpt of its answer and the result ``cairn test``
checks, then the conclusion (outcomes, exit code, the remediation that runs) and the
command that runs it. Expected results are the case's ``expect``, never recomputed;
every case is also played while the site is built (:class:`~engine.core.replay.suite.Suite`),
and one that does not pass is marked so instead of showing conclusions the runbook no
longer reaches. A case file with problems is listed with them (file:line:col) and
never stops the build. ``site.py`` calls :func:`collect` and :func:`section`.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.core.errors import Problem
from engine.core.model import HostOutcome, Phase, Runbook, Step
from engine.core.render import duration_text
from engine.core.replay.case import (
    Case,
    CaseHost,
    ExpectedHost,
    ExpectedStep,
    Recorded,
    read_case,
    tests_folder,
)
from engine.core.replay.case import case_files as find_case_files
from engine.core.replay.suite import Suite
from engine.core.visible import visible_lines
from engine.docs.site import PAGES, code, escape, fenced, slug

log = logging.getLogger(__name__)

HEADING = "Worked examples: what you see when the pitfall is there"
ANCHOR = slug(HEADING)
"""The section's anchor on a runbook page (the index links to it)."""
FIRST = ("present", "healthy")
"""Case files (by stem) shown before the others, in this order; the rest by file name."""
EXCERPT_LINES = 15
LINE_CHARS = 200
TESTING_GUIDE = "docs/testing-runbooks.md"

_OUTCOMES = {
    HostOutcome.HEALTHY: "detect found nothing",
    HostOutcome.PRESENT: "the pitfall is there and was not (fully) remediated",
    HostOutcome.REMEDIATED: "the pitfall was there; the remediation ran and verify came back clean",
    HostOutcome.FAILED: "the run could not decide on this host (an error, not a finding)",
}
_EXITS = {0: "healthy or remediated everywhere", 1: "the pitfall is present", 2: "the run failed"}


@dataclass(frozen=True, slots=True)
class Example:
    """One case file of a runbook: the case and whether it passes, or its problems."""

    label: str
    """The file as a reader names it: ``runbooks/ID.tests/NAME.yaml``."""
    case: Case | None
    problems: tuple[Problem, ...] = ()
    passes: bool = True
    """Whether ``cairn test`` passes it now (a failing case's expectations are not shown as fact)."""
    fault: str = ""
    """Why it could not be played at all while the site was built (an engine fault), if so."""

    @property
    def shown(self) -> bool:
        return self.case is not None and not self.problems


# --------------------------------------------------------------------------- reading and playing


def collect(runbook: Runbook, label_of: Callable[[str], str]) -> list[Example]:
    """Every case file of ``runbook``, read and played, present first and healthy second."""
    folder = tests_folder(Path(runbook.source_path))
    try:
        files = find_case_files([folder]) if folder.is_dir() else []
    except OSError as exc:  # a folder it cannot list is said, never taken for "no cases"
        why = f"cannot list the test cases: {exc.strerror or exc}"
        label = label_of(str(folder))
        return [Example(label, None, (Problem(label, 1, 1, "", why),))]
    suite = Suite(runbook=Path(runbook.source_path))
    return [_example(path, suite, label_of) for path in sorted(files, key=_show_order)]


def _relabelled(problems: Iterable[Problem], label_of: Callable[[str], str]) -> tuple[Problem, ...]:
    """Problems naming their file as a reader does (``runbooks/ID.tests/NAME.yaml``)."""
    return tuple(replace(p, file=label_of(p.file)) for p in problems)


def _show_order(path: Path) -> tuple[int, str]:
    return (FIRST.index(path.stem) if path.stem in FIRST else len(FIRST), path.name)


def _example(path: Path, suite: Suite, label_of: Callable[[str], str]) -> Example:
    label = label_of(str(path))
    fault = ""
    try:
        result = suite.one(path)
        problems, passes = result.problems, result.state == "passed"
    except Exception as exc:  # a fault in the replay must not stop the site: the case is marked
        log.warning("docs: %s could not be played: %s", label, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        problems, passes, fault = (), False, f"{type(exc).__name__}: {exc}"
    if problems:
        return Example(label, None, _relabelled(problems, label_of))
    read = read_case(path)
    if read.case is None:  # it changed on disk since it was played
        return Example(label, None, _relabelled(read.problems, label_of))
    return Example(label, read.case, passes=passes, fault=fault)


# --------------------------------------------------------------------------- the pages


def index_cell(runbook_id: str, examples: list[Example]) -> str:
    """The index's count of a runbook's worked examples (linking to them), and of its broken case files."""
    shown = sum(1 for e in examples if e.shown)
    broken = len(examples) - shown
    cell = f"[{shown}]({PAGES}/{runbook_id}.md#{ANCHOR})" if shown else "none"
    return cell + (f" ({broken} broken)" if broken else "")


def section(runbook: Runbook, examples: list[Example], label_of: Callable[[str], str]) -> list[str]:
    """The worked-examples section of ``runbook``'s page, as Markdown lines (``label_of``: a path as a
    reader names it, ``runbooks/…``)."""
    folder_label = label_of(str(tests_folder(Path(runbook.source_path))))
    guide = f"the *Testing runbooks* guide ({code(TESTING_GUIDE)} in Cairn's source)"
    out = [f"## {HEADING}", ""]
    shown = [e for e in examples if e.shown]
    if not examples:
        record = code(f"cairn record RUN_ID -o {shlex.quote(folder_label + '/present.yaml')}")
        out += [
            f"This runbook has no test cases yet. A case is a YAML file in {code(folder_label + '/')}: "
            "what each host answered to each step, and what the runbook concludes from it. Turn a lab run "
            f"into one with {record}, or write it by hand: {guide} says how.",
            "",
        ]
    elif not shown:
        out += [f"No example can be shown: every case file in {code(folder_label + '/')} has problems.", ""]
    else:
        out += [
            f"Each example is one of this runbook's test cases ({code(folder_label + '/')}): what every "
            "host answered to every step, recorded from a lab or a real run, and what the runbook concludes "
            "from it. `cairn test` replays them against the runbook without touching any host; the expected "
            f"results shown are the ones it checks. {guide[0].upper()}{guide[1:]} says how to write or "
            "record one.",
            "",
        ]
        for number, example in enumerate(shown, 1):
            out += _example_markdown(runbook, number, example)
        out += [f"Run them all: {code('cairn test ' + shlex.quote(folder_label + '/'))}", ""]
    broken = [e for e in examples if not e.shown]
    if broken:
        out += _broken_markdown(broken)
    return out


def _example_markdown(runbook: Runbook, number: int, example: Example) -> list[str]:
    case = example.case
    assert case is not None  # only shown examples get here
    out = [f"### Example {number}: {escape(case.name)}", ""]
    if case.about.strip():
        out += [case.about.strip(), ""]
    setting = _setting(case)
    if setting:
        out += [setting, ""]
    if example.fault:
        out += [
            f"**This example could not be played while the site was built** ({escape(example.fault)}). "
            "What each host answered is shown; the expected results are not.",
            "",
        ]
    elif not example.passes:
        out += [
            "**This example currently fails `cairn test`**: the runbook no longer concludes what the case "
            "expects, or runs a step the recording has no answer for. What each host answered is shown; "
            f"the expected results are not. {code('cairn test ' + shlex.quote(example.label))} shows the "
            "difference.",
            "",
        ]
    for host in case.hosts:
        expected = case.expect.hosts.get(host.name) if example.passes else None
        out += _host_markdown(runbook, host, expected, show_expected=example.passes)
    if example.passes:
        out += _conclusion(case)
    out += [f"Run it: {code('cairn test ' + shlex.quote(example.label))}", ""]
    return out


def _setting(case: Case) -> str:
    """How the case's run was started: inputs, last phase, an alert, where it was recorded."""
    parts = []
    if case.inputs:
        given = (f"-e {name}={v if isinstance(v, str) else json.dumps(v)}" for name, v in case.inputs.items())
        parts.append("inputs " + ", ".join(code(text) for text in given))
    if case.phase is not Phase.VERIFY:
        parts.append(f"the run stops after {case.phase.value} (as {code('--phase ' + case.phase.value)})")
    if case.alert is not None:
        parts.append("started by an alert, unattended (as `cairn serve` runs it)")
    if case.recorded_from:
        parts.append(f"recorded from {code(case.recorded_from)}")
    return ("*" + "; ".join(parts) + ".*") if parts else ""


def _host_markdown(
    runbook: Runbook, host: CaseHost, expected: ExpectedHost | None, *, show_expected: bool
) -> list[str]:
    out = [f"#### On {code(host.name)}", ""]
    if host.unreachable is not None:
        out += [f"{code(host.name)} could not be reached: {escape(host.unreachable)}", ""]
    if host.missing:
        programs = ", ".join(code(p) for p in host.missing)
        out += [f"Programs missing on {code(host.name)} (preflight finds them absent): {programs}.", ""]
    wanted = expected.steps if expected is not None else {}
    for key in _step_keys(runbook, [*host.steps, *wanted]):
        out += _step_heading(runbook, key)
        recorded = host.steps.get(key)
        if recorded is not None:
            out += _answer(recorded, _step_of(runbook, key))
        else:
            out += ["No output recorded: its command did not run on this host.", ""]
        if key in host.decisions:
            out += [f"Decision recorded: **{host.decisions[key]}**", ""]
        if show_expected:
            out += [_expected_line(wanted.get(key)), ""]
    return out


def _step_keys(runbook: Runbook, keys: Iterable[str]) -> list[str]:
    """``phase.step`` keys in the runbook's phase order; keys of no step of it last, as given."""
    given = dict.fromkeys(keys)
    ordered = [f"{p.value}.{s.id}" for p in Phase for s in runbook.steps(p)]
    return [k for k in ordered if k in given] + [k for k in given if k not in ordered]


def _step_of(runbook: Runbook, key: str) -> Step | None:
    phase, _, step_id = key.partition(".")
    try:
        steps = runbook.steps(Phase(phase))
    except ValueError:
        return None
    return next((s for s in steps if s.id == step_id), None)


def _step_heading(runbook: Runbook, key: str) -> list[str]:
    step = _step_of(runbook, key)
    if step is None:
        return [f"**{code(key)}**: not a step of this runbook (`cairn test -v` lists it as unused)", ""]
    phase = key.partition(".")[0]
    return [f"**{phase.capitalize()} · {code(step.id)}** — {step.title}", ""]


def _answer(recorded: Recorded, step: Step | None) -> list[str]:
    """What the host answered, as a reader sees it: how the command ended, then its output (excerpts)."""
    if recorded.error is not None:
        return [f"The executor could not run it: {escape(recorded.error)}", ""]
    streams = [
        (name, text) for name, text in (("stdout", recorded.stdout), ("stderr", recorded.stderr)) if text
    ]
    if recorded.hang:
        within = f" ({duration_text(step.timeout)})" if step is not None else ""
        ended = f"It did not finish within its timeout{within} and was killed."
        ended += " Before that," if streams else " It printed nothing before."
    elif recorded.rc is None:
        ended = "It ended without an exit code." + ("" if streams else " No output.")
    else:
        ended = f"Exit code {recorded.rc}." + ("" if streams else " No output.")
    if not streams:
        return [ended, ""]
    out: list[str] = []
    for index, (name, text) in enumerate(streams):
        lead = f"{ended} {name}:" if index == 0 else f"{name}:"
        out += [lead, "", *_excerpt(text)]
    return out


def _excerpt(text: str) -> list[str]:
    """The first lines of an output in a fenced block (control characters shown as escapes), and how many
    more the case holds."""
    lines = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…" for line in visible_lines(text)]
    out = [*fenced("\n".join(lines[:EXCERPT_LINES]) or " ", "text"), ""]
    more = len(lines) - EXCERPT_LINES
    if more > 0:
        out += [f"*… {more} more line{'s' if more != 1 else ''} (the case file has them all).*", ""]
    return out


def _expected_line(step: ExpectedStep | None) -> str:
    if step is None:
        return "Expected: not stated (`cairn test` does not check this step in this case)."
    report = f" — {escape(step.report)}" if step.report else ""
    return f"Expected: **{escape(step.status.value)}**{report}"


def _conclusion(case: Case) -> list[str]:
    out = ["**What the runbook concludes**", ""]
    for host in case.hosts:
        expected = case.expect.hosts.get(host.name)
        if expected is None or (expected.outcome is None and expected.remediation is None):
            out.append(f"- {code(host.name)}: not stated by the case")
            continue
        parts = []
        if expected.outcome is not None:
            parts.append(f"**{expected.outcome.value}** — {_OUTCOMES[expected.outcome]}")
        if expected.reason:
            parts.append(f"reason: {escape(expected.reason)}")
        if expected.remediation is not None:
            ran = ", ".join(code(s) for s in expected.remediation) or "none"
            parts.append(f"remediation that runs: {ran}")
        out.append(f"- {code(host.name)}: " + "; ".join(parts) + ".")
    out.append("")
    if case.expect.exit is not None:
        meaning = _EXITS.get(case.expect.exit, "")
        out += [f"`cairn run` exits **{case.expect.exit}**" + (f" ({meaning})." if meaning else "."), ""]
    return out


def _broken_markdown(broken: list[Example]) -> list[str]:
    out = [
        "### Case files with problems",
        "",
        "These case files cannot be read or run, so they are not shown above; "
        "`cairn test PATH` reports the same problems.",
        "",
    ]
    for example in broken:
        count = len(example.problems)
        out.append(f"- {code(example.label)}: {count} problem{'s' if count != 1 else ''}")
        out += [f"  - {_problem(p)}" for p in example.problems]
    out.append("")
    return out


def _problem(problem: Problem) -> str:
    where = code(f"{problem.file}:{problem.line}:{problem.column}")
    at = f" at {code(problem.pointer)}" if problem.pointer else ""
    return f"{where}{at}: {escape(problem.message)}"
