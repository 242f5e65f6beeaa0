"""The template context: what every template of a step sees, built in one place for runs and plans.

``target``, ``vars``, ``inputs``, ``steps``, ``alert`` and ``run`` (docs/runbook-format.md §6).
Values are marked here, once (:mod:`engine.core.template_values`), so a plan and a run cannot
differ in how they treat them:

* a secret input is a :class:`~engine.core.template_values.Secret`: its value in text, a
  reference to ``$CAIRN_SECRET_<NAME>`` in a command;
* in an alert-started run, every string of the alert and the string inputs are
  :class:`~engine.core.template_values.Untrusted`: an outsider (anyone holding the webhook
  token) chose them or the run they start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core.model import Host, Phase, Runbook
from engine.core.template_values import Secret, mark_untrusted


def template_context(
    runbook: Runbook,
    host: Host,
    inputs: Mapping[str, Any],
    *,
    alert: Mapping[str, Any] | None,
    run: Mapping[str, Any],
    steps: Mapping[str, Any],
) -> dict[str, Any]:
    """What templates see on ``host``: ``run`` is ``{id, phase, dry_run}``, ``steps`` the results so far."""
    return {
        "target": host.name,
        "vars": host.vars,
        "inputs": marked_inputs(runbook, inputs, untrusted=alert is not None),
        "steps": steps,
        "alert": mark_untrusted(dict(alert)) if alert is not None else None,
        "run": dict(run),
    }


def marked_inputs(runbook: Runbook, inputs: Mapping[str, Any], *, untrusted: bool) -> dict[str, Any]:
    """The input values, secrets as :class:`Secret` and (``untrusted``) text as untrusted."""
    secret = {spec.name for spec in runbook.inputs if spec.secret}
    marked: dict[str, Any] = {}
    for name, value in inputs.items():
        if name in secret and value is not None:
            marked[name] = Secret(_text(value), name)
        elif untrusted:
            marked[name] = mark_untrusted(value)
        else:
            marked[name] = value
    return marked


def run_info(run_id: str, phase: Phase, *, dry_run: bool) -> dict[str, Any]:
    """The ``run`` variable: the run's id, the phase being run, whether it is a dry run."""
    return {"id": run_id, "phase": phase.value, "dry_run": dry_run}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
