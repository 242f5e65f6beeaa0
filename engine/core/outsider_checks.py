"""``cairn validate``'s checks on an outsider's text reaching a command line unquoted.

Whoever sends an alert sets its labels and annotations, and starts the run whose inputs then are
not a human's choice (docs/runbook-format.md §6). A step that puts ``alert`` — or ``inputs`` in a
runbook with ``triggers`` — into ``| unquoted`` (through variables, loops and macros too:
:attr:`engine.core.template_lint.TemplateCheck.unquoted_reads`), or into the arguments of a
shell or command module, must say why in ``allow_unquoted``; an alert-started run refuses it
otherwise (:mod:`engine.core.template_filters`).
"""

from __future__ import annotations

from typing import Any

from engine.core import expr
from engine.core.errors import Problem
from engine.core.yamlsource import Document, pointer, unescape_pointer_part

_OUTSIDERS = {
    "alert": "alert (its labels and annotations: whoever sends the alert sets them)",
    "inputs": "inputs (an alert can start this runbook, and then its inputs are not a human's choice)",
}


def check_outsiders(
    doc: Document, ptr: str, step: dict[str, Any], *, alerts: bool, warnings: list[Problem]
) -> None:
    """``| unquoted`` (or a shell module's argument) given text an outsider sets, unless the step says why."""
    outsider = {"alert"} | ({"inputs"} if alerts else set())
    allowed = isinstance(step.get("allow_unquoted"), str)
    needed = False
    run = step.get("run")
    if isinstance(run, str) and run.strip():
        reached = sorted(expr.check(run, expression=False).unquoted_reads & outsider)  # the cached check
        needed = bool(reached)
        if reached and not allowed:
            doc.add(
                f"{ptr}/run",
                f"template gives | unquoted {' and '.join(_OUTSIDERS[r] for r in reached)}: it would run "
                "as shell code; drop | unquoted (the value is then one quoted argument), or say why the "
                'step must in allow_unquoted: "<the reason>"',
            )
    ansible = step.get("ansible")
    module = ansible.get("module") if isinstance(ansible, dict) else None
    if isinstance(ansible, dict) and module in expr.SHELL_MODULES:
        for where, text in _strings(f"{ptr}/ansible/args", ansible.get("args")):
            reached = sorted(expr.check(text, expression=False).names & outsider) if "{" in text else []
            needed = needed or bool(reached)
            if reached and not allowed:
                doc.add(
                    where,
                    f"{module}'s arguments are a command line, and this one puts "
                    f"{' and '.join(_OUTSIDERS[r] for r in reached)} in it unquoted; pass the value where "
                    'it is not run as a command, or say why the step must in allow_unquoted: "<the reason>"',
                )
    if allowed and "manual" in step:
        doc.add(
            f"{ptr}/allow_unquoted",
            "allow_unquoted means nothing for a manual step (it runs no command); remove it",
            key=True,
        )
    elif allowed and not needed:
        warnings.append(
            doc.problem(
                f"{ptr}/allow_unquoted",
                "allow_unquoted is given, but nothing in this step puts an outsider's text unquoted "
                "into a command; remove it",
                key=True,
            )
        )


def _strings(ptr: str, value: Any) -> list[tuple[str, str]]:
    """Every string inside ``value`` with its pointer (an ansible step's args)."""
    if isinstance(value, str):
        return [(ptr, value)]
    if isinstance(value, dict):
        return [found for key, sub in value.items() for found in _strings(pointer((*_parts(ptr), key)), sub)]
    if isinstance(value, list):
        return [found for i, sub in enumerate(value) for found in _strings(f"{ptr}/{i}", sub)]
    return []


def _parts(ptr: str) -> tuple[str, ...]:
    return tuple(unescape_pointer_part(p) for p in ptr.split("/")[1:])
