"""Runbooks as text: their knowledge as Markdown, listings, and what ``cairn validate`` found.

Pure functions returning strings or JSON-ready data; ``cairn show``, ``cairn list``, ``cairn validate``,
the TUI and ``cairn docs`` use them. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.become import wants_become
from engine.core.model import (
    AnsibleAction,
    InputType,
    ManualAction,
    Phase,
    RunAction,
    Runbook,
    Step,
)
from engine.core.render import duration_text, indent, table

if TYPE_CHECKING:
    from engine.core.loader import LoadResult


# --------------------------------------------------------------------------- a step's prose


@dataclass(frozen=True, slots=True)
class StepNote:
    """One piece of a step's prose that people read before it runs."""

    label: str
    """``Why``, ``Trade-off``: how a front end that labels its notes names it."""
    text: str
    """Runbook Markdown, stripped."""
    lead: bool = False
    """It leads the step: shown before the command (and unlabelled in Markdown); the rest after it."""
    caution: bool = False
    """Shown as something to weigh (the trade-off: the TUI colours it, the terminal prefixes it)."""


BECOME_NOTE = StepNote(
    "Privilege",
    "runs as root via sudo when the host allows it (become): the host's inventory decides with "
    "`ansible_become`, and may name another user or method with `ansible_become_user` and "
    "`ansible_become_method`",
    caution=True,
)
"""What a step that escalates says where no host is known: ``cairn show``, the docs site."""


def step_notes(step: Step, runbook: Runbook | None = None) -> tuple[StepNote, ...]:
    """A step's prose, in reading order: the one list the terminal's approval prompt, the TUI's approval
    dialog and step detail, ``cairn show`` and the docs site show. A new prose field of a step is added
    here (and in the model, the loader and the schema), nowhere else.

    ``runbook``: where no host is known (``cairn show``, the docs site), a step that escalates by the
    runbook says so (:data:`BECOME_NOTE`); front ends that know the host show its exact escalation
    beside the command instead."""
    notes = []
    if step.why:
        notes.append(StepNote("Why", step.why.strip(), lead=True))
    if step.tradeoff:
        notes.append(StepNote("Trade-off", step.tradeoff.strip(), caution=True))
    if step.allow_unquoted:  # an approver should know an outsider's text may run as shell here, and why
        notes.append(StepNote("Runs an outsider's text as shell", step.allow_unquoted.strip(), caution=True))
    if runbook is not None and wants_become(step, runbook, {}):
        notes.append(BECOME_NOTE)
    return tuple(notes)


# --------------------------------------------------------------------------- validation


def problems_text(results: Iterable[LoadResult]) -> tuple[str, int, int]:
    """(report, files with problems, problem count) for ``cairn validate``; warnings (what may go
    wrong: a loop nested three deep, a macro that calls itself …) follow each file's verdict."""
    lines: list[str] = []
    bad = count = 0
    for result in results:
        if result.problems:
            bad += 1
            count += len(result.problems)
            lines.extend(str(p) for p in result.problems)
        else:
            lines.append(f"{result.path}: ok ({result.declared_id})")
        lines.extend(w.as_warning() for w in getattr(result, "warnings", ()))
    return "\n".join(lines), bad, count


# --------------------------------------------------------------------------- knowledge


def knowledge_markdown(runbook: Runbook, *, brief: bool = False) -> str:
    """The runbook's knowledge and steps as Markdown: training material.

    ``brief``: only what the pitfall is and how it looks (title, summary, symptoms).
    """
    out = [f"# {runbook.title}", "", knowledge_meta(runbook), "", runbook.summary.strip(), ""]
    if runbook.symptoms:
        out += ["## Symptoms", "", *symptom_lines(runbook), ""]
    if brief:
        return "\n".join(out).rstrip() + "\n"
    if runbook.cause:
        out += ["## Cause", "", runbook.cause.strip(), ""]
    for phase in (Phase.DETECT, Phase.DIAGNOSE, Phase.REMEDIATE):
        steps = runbook.steps(phase)
        if steps:
            out += [f"## {phase.value.capitalize()}", ""]
            out += [_step_markdown(i, s, runbook) for i, s in enumerate(steps, 1)]
    out += ["## Verify", ""]
    if runbook.verify_is_detect:
        out += [VERIFY_IS_DETECT, ""]
    else:
        out += [_step_markdown(i, s, runbook) for i, s in enumerate(runbook.verify, 1)]
    if runbook.inputs:
        out += ["## Inputs", "", *input_lines(runbook), ""]
    if runbook.triggers:
        out += ["## Alerts that start it", "", *trigger_lines(runbook), ""]
    if runbook.references:
        out += ["## References", "", *reference_lines(runbook), ""]
    return "\n".join(out).rstrip() + "\n"


VERIFY_IS_DETECT = "Re-runs the detect steps; the remediation counts only when they come back clean."


def knowledge_meta(runbook: Runbook, tag: Callable[[str], str] = str) -> str:
    """The line under a runbook's title: id, severity, tags (each through ``tag``), targets."""
    meta = f"**id** `{runbook.id}` · **severity** {runbook.severity.value}"
    if runbook.tags:
        meta += " · **tags** " + ", ".join(tag(t) for t in runbook.tags)
    if runbook.targets != "all":
        meta += f" · **targets** `{runbook.targets}`"
    return meta


def symptom_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per symptom."""
    return [f"- {s.strip()}" for s in runbook.symptoms]


def input_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per input: name, type, default as an author writes it, choices, description."""
    lines = []
    for spec in runbook.inputs:
        shown = spec.default
        if spec.type is InputType.DURATION and isinstance(shown, int | float):
            shown = duration_text(shown)
        elif isinstance(shown, bool):
            shown = "true" if shown else "false"
        default = "" if not spec.has_default else f" (default `{shown}`)"
        if spec.choices:
            default += " (one of " + ", ".join(f"`{c}`" for c in spec.choices) + ")"
        secret = " — secret" if spec.secret else ""
        description = spec.description.strip().replace("\n", "\n  ")
        lines.append(f"- `{spec.name}` *{spec.type.value}*{default}{secret}: {description}".rstrip(": "))
    return lines


def trigger_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per alert trigger: its matchers and target."""
    return [f"- `{', '.join(t.matchers)}` → target `{t.target}`" for t in runbook.triggers]


def reference_lines(runbook: Runbook) -> list[str]:
    """One Markdown link per reference."""
    return [f"- [{r.title}]({r.url})" for r in runbook.references]


def _step_markdown(number: int, step: Step, runbook: Runbook) -> str:
    automatic = ", *automatic* when an alert starts the run and the policy allows" if step.automatic else ""
    lines = [f"{number}. **{step.title}** (`{step.id}`, {step.kind.value}{automatic})"]
    notes = step_notes(step, runbook)
    for note in notes:  # its own paragraph: not run on from the title line
        if note.lead:
            lines += ["", indent(note.text, "   ")]
    match step.action:
        case RunAction(command=command):
            lines += ["", "   ```sh", indent(command.strip(), "   "), "   ```"]
        case ManualAction(instructions=instructions):
            lines += ["", indent(instructions.strip(), "   > ")]
        case AnsibleAction():
            pass  # no body: the title says what it does
    for note in notes:
        if not note.lead:
            lines += ["", indent(f"*{note.label}:* {note.text}", "   ")]
    return "\n".join(lines) + "\n"


def list_text(runbooks: list[Runbook], invalid: list[LoadResult]) -> str:
    """``cairn list`` as text."""
    rows = [[rb.id, rb.severity.value, rb.title, ", ".join(rb.tags)] for rb in runbooks]
    text = table(rows, ["ID", "SEVERITY", "TITLE", "TAGS"]) if rows else "no valid runbooks"
    for result in invalid:
        n = len(result.problems)
        text += (
            f"\nINVALID {result.path}: {n} problem{'s' if n != 1 else ''}; see `cairn validate {result.path}`"
        )
    return text


def runbook_summary(runbook: Runbook) -> dict[str, Any]:
    """A runbook's identity for ``cairn list --json``."""
    return {
        "id": runbook.id,
        "title": runbook.title,
        "severity": runbook.severity.value,
        "tags": list(runbook.tags),
        "path": runbook.source_path,
        "steps": {p.value: [s.id for s in runbook.steps(p)] for p in Phase},
    }
