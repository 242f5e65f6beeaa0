"""Privilege escalation for ``run`` steps, decided the way Ansible decides it.

A ``run`` step escalates when its ``become`` says so, else when the runbook's default
does; the host's ``ansible_become`` inventory variable decides over both, as Ansible's
connection variables override play and task keywords. As whom and how come from the
host's ``ansible_become_user`` (default root), ``ansible_become_method`` (sudo),
``ansible_become_flags`` and ``ansible_become_password`` (a secret: the executors give
it on stdin, the run's redactor takes it out of everything). :func:`become_for` is the
one place that reads those variables; the executors carry :class:`Become` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.core.model import Runbook, Step, StepKind

METHODS = ("sudo",)
"""Escalation methods the native executors carry out (``--via ansible`` has Ansible's own)."""
DEFAULT_USER = "root"
PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass")
_TRUE = frozenset({"true", "yes", "on", "1", "y"})


@dataclass(frozen=True, slots=True)
class Become:
    """How one step escalates on one host."""

    method: str = "sudo"
    user: str = DEFAULT_USER
    flags: str = ""
    """``ansible_become_flags``: extra options for the method (e.g. ``-H``), split like a shell would."""
    password: str | None = field(default=None, repr=False)
    """Given on stdin, never on a command line; ``None``: the method must not ask (``sudo -n``)."""

    @property
    def label(self) -> str:
        """``as root via sudo``: what plans, prompts and reports show beside the command."""
        return f"as {self.user} via {self.method}"


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def wants_become(step: Step, runbook: Runbook, host_vars: Mapping[str, Any]) -> bool:
    """Whether ``step`` escalates on a host with ``host_vars`` (a ``run`` step only)."""
    if step.kind is not StepKind.RUN:
        return False
    if "ansible_become" in host_vars:
        return _flag(host_vars["ansible_become"])
    return step.become if step.become is not None else runbook.become


def become_for(step: Step, runbook: Runbook, host_vars: Mapping[str, Any]) -> Become | None:
    """The escalation of ``step`` on a host with ``host_vars``; ``None`` when it runs as the login user."""
    if not wants_become(step, runbook, host_vars):
        return None
    password = next((host_vars[name] for name in PASSWORD_VARS if host_vars.get(name)), None)
    return Become(
        method=str(host_vars.get("ansible_become_method") or "sudo"),
        user=str(host_vars.get("ansible_become_user") or DEFAULT_USER),
        flags=str(host_vars.get("ansible_become_flags") or ""),
        password=str(password) if password is not None else None,
    )


def become_passwords(hosts_vars: list[Mapping[str, Any]]) -> list[str]:
    """Every become password of some hosts: secrets the run's redactor takes out of everything."""
    return [str(v[name]) for v in hosts_vars for name in PASSWORD_VARS if v.get(name)]
