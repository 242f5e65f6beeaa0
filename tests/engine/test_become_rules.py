"""Who decides whether a step escalates, and how: the step, the runbook, then the inventory (as Ansible)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.become import Become, become_for
from engine.core.loader import check_text
from engine.core.model import Host, Runbook
from engine.core.redaction import Redactor

RUNBOOK = """\
id: rooty
title: Needs root
severity: warning
summary: s
become: {default}
detect:
  - {{id: look, title: look, run: "true"}}
  - {{id: plain, title: plain, run: "true", become: false}}
  - {{id: root, title: root, run: "true", become: true}}
"""


def runbook(default: bool = False) -> Runbook:
    loaded = check_text(RUNBOOK.format(default=str(default).lower()), "rooty.yaml")
    assert loaded.runbook is not None, loaded.problems
    return loaded.runbook


def escalation(rb: Runbook, step_id: str, host_vars: dict[str, Any]) -> Become | None:
    step = next(s for s in rb.detect if s.id == step_id)
    return become_for(step, rb, host_vars)


def test_the_step_decides_over_the_runbooks_default() -> None:
    assert escalation(runbook(False), "look", {}) is None
    assert escalation(runbook(False), "root", {}) == Become()
    assert escalation(runbook(True), "look", {}) == Become()
    assert escalation(runbook(True), "plain", {}) is None


@pytest.mark.parametrize("value", [False, "no", "false", "0"])
def test_the_inventorys_ansible_become_decides_over_both(value: object) -> None:
    assert escalation(runbook(True), "root", {"ansible_become": value}) is None
    assert escalation(runbook(False), "plain", {"ansible_become": True}) == Become()


def test_user_method_flags_and_password_come_from_the_inventory() -> None:
    found = escalation(
        runbook(),
        "root",
        {
            "ansible_become_user": "postgres",
            "ansible_become_method": "sudo",
            "ansible_become_flags": "-H",
            "ansible_become_password": "s3cret-Pw",
        },
    )
    assert found == Become("sudo", "postgres", "-H", "s3cret-Pw")
    assert found is not None and found.label == "as postgres via sudo"
    assert "s3cret-Pw" not in repr(found)


def test_a_become_password_is_a_secret_of_the_run() -> None:
    rb = runbook()
    hosts = [Host("web-1", vars={"ansible_become_pass": "hunter22"}), Host("web-2")]
    redact = Redactor.for_run(rb, {}, hosts)
    assert redact("sudo said hunter22") == "sudo said ***"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{id: m, title: m, manual: do it, become: true}", "'become' means nothing for a manual step"),
        (
            "{id: a, title: a, ansible: {module: ansible.builtin.ping}, become: true}",
            "an ansible step escalates with Ansible's own become",
        ),
    ],
)
def test_validate_refuses_become_where_it_cannot_apply(step: str, message: str) -> None:
    text = f"id: x\ntitle: x\nseverity: info\nsummary: s\ndetect:\n  - {{id: look, title: l, run: 'true'}}\nremediate:\n  - {step}\n"
    loaded = check_text(text, "x.yaml")
    assert loaded.runbook is None
    assert any(message in p.message for p in loaded.problems), loaded.problems
