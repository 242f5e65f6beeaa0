"""The bridge between the run and the UI, without a screen: events in batches, coalesced wake-ups.

Pacing and approvals are the engine's (tests/engine/test_stepping.py)."""

from __future__ import annotations

import pytest

from engine.core.events import StepOutput
from engine.core.model import LOCALHOST, InputSpec, InputType, Phase, RunAction, Runbook, Severity, Step
from tui.bridge import Doorbell, EventForwarder, planned_commands

pytestmark = pytest.mark.tui


def test_forwarder_wakes_the_ui_once_per_batch_and_keeps_the_order() -> None:
    wakes: list[int] = []
    forward = EventForwarder(lambda: wakes.append(1))
    events = [
        StepOutput(
            run_id="r",
            seq=n,
            at=0.0,
            host="h",
            phase=Phase.DETECT,
            step_id="one",
            stream="stdout",
            text=f"{n}\n",
        )
        for n in range(5)
    ]
    for event in events[:3]:
        forward(event)
    assert len(wakes) == 1, "one wake-up while the UI has not drained"
    assert forward.drain() == events[:3]
    for event in events[3:]:
        forward(event)
    assert len(wakes) == 2
    assert forward.drain() == events[3:]
    assert forward.drain() == []


def test_doorbell_wakes_the_ui_once_until_it_looks() -> None:
    rings: list[int] = []
    bell = Doorbell(lambda: rings.append(1))
    bell.ring()
    bell.ring()
    assert len(rings) == 1, "rung twice before the UI looked: one wake-up"
    bell.answer()
    bell.ring()
    assert len(rings) == 2


def test_planned_commands_are_the_plans_rendering_of_each_step() -> None:
    runbook = Runbook(
        id="rb",
        title="A runbook",
        severity=Severity.INFO,
        summary="",
        inputs=(InputSpec("word", InputType.STRING),),
        detect=(
            Step(id="one", title="One", action=RunAction("echo {{ inputs.word }}")),
            Step(id="two", title="Two", action=RunAction("echo {{ steps.one.stdout }}")),
        ),
    )
    commands = planned_commands(runbook, [LOCALHOST], {"word": "hi"}, Phase.DETECT)
    assert commands[((Phase.DETECT, "one"), LOCALHOST.name)] == "echo hi"
    assert ((Phase.DETECT, "two"), LOCALHOST.name) not in commands, (
        "it reads an earlier result: rendered when it runs"
    )
