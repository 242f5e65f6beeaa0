"""Which steps the runbook as journaled runs as root (``become``), for the incident report.

The journal records each step's command, not how it escalated: the host's inventory had the last word
(``ansible_become``, ``ansible_become_user``), and the inventory is not journaled. So the report says
what the runbook declared — read from the runbook text the journal keeps, by the rule of
:func:`engine.core.become.wants_become` with no inventory — and says that the inventory decided. The
text is read as plain data (:func:`~engine.core.yamlsource.parse_yaml_bytes`, bounded as for any
runbook): a runbook whose files are gone (a playbook beside it) still says what it declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DECLARED = (
    "runs as root via sudo when the host's inventory allows it (the runbook's become; "
    "the journal does not record how it ran)"
)
"""What the report says of a step the runbook runs as root."""
_PHASES = ("detect", "diagnose", "remediate", "verify")


def declared_become(runbook_text: str) -> frozenset[tuple[str, str]]:
    """``(phase, step id)`` of every ``run`` step the runbook runs as root; none if the text cannot be read."""
    from engine.core.yamlsource import parse_yaml_bytes  # noqa: PLC0415

    data = parse_yaml_bytes(runbook_text.encode("utf-8", "surrogatepass"), "runbook").data
    if not isinstance(data, Mapping):
        return frozenset()
    default = data.get("become") is True
    found = set()
    for phase in _PHASES:
        again = phase == "verify" and data.get("verify", "detect") == "detect"  # verify re-runs detect
        steps = data.get("detect") if again else data.get(phase)
        for step in steps if isinstance(steps, list) else ():
            if _escalates(step, default=default):
                found.add((phase, str(step["id"])))
    return frozenset(found)


def _escalates(step: Any, *, default: bool) -> bool:
    if not isinstance(step, Mapping) or "run" not in step or "id" not in step:
        return False  # only a run step escalates with become (an ansible step has Ansible's own)
    own = step.get("become")
    return own if isinstance(own, bool) else default
