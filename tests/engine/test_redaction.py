"""Secrets never leave a run: one redaction point, :meth:`EventBus.emit`, that no event can bypass.

The every-event test builds each :class:`~engine.core.events.Event` subclass there is (found
by walking ``Event.__subclasses__()``, so a new one is covered the day it is written) with a
secret planted in every string its type hints allow, nested dataclasses, mappings (keys too)
and sequences included, emits it, and looks for the secret in everything a subscriber got.
A field of a type the planter does not know fails the test: teach it the type.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.errors import ExecutorError
from engine.core.events import NAMES, Event, EventBus, RunFinished, RunStarted, StepFinished
from engine.core.executors import ExecutorSet
from engine.core.inputs import REDACTED, Redactor
from engine.core.loader import check_text
from engine.core.model import CommandResult, Host, Phase, Runbook, RunReport, Step
from engine.core.render import as_data
from engine.core.runner import Runner
from engine.core.spec import RunSpec
from tests.fakes import HandlerExecutor, RecordingApprover

SECRET = "hunter2-one'\"\\b\t\u00e9\x1b[0m\nhunter2-two $x"
"""Quotes, a backslash, a tab, a non-ASCII letter, an escape sequence, a newline: every escaping differs.
Each line holds ``hunter2``, so any form of any part of it is found by looking for that."""
MARK = "hunter2"


def forms(secret: str) -> dict[str, str]:
    """The ways a value is written out by Python, the shell and JSON."""
    return {
        "raw": secret,
        "shell-quoted": shlex.quote(secret),
        "json-escaped": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        "repr": repr(secret)[1:-1],
        "ascii": ascii(secret)[1:-1],
        "repr in a larger text": repr(f'it\'s "{secret}"')[1:-1],
        "first line": secret.partition("\n")[0],
        "last line": secret.rpartition("\n")[2],
    }


# --------------------------------------------------------------------------- the Redactor's forms


@pytest.mark.parametrize("form", list(forms(SECRET)))
def test_the_redactor_removes_every_form_of_the_secret(form: str) -> None:
    text = f"before {forms(SECRET)[form]} after"

    redacted = Redactor([SECRET])(text)

    assert MARK not in redacted
    assert redacted.startswith("before ") and redacted.endswith(" after")
    assert REDACTED in redacted


def test_a_message_naming_the_secret_as_python_shows_it_is_redacted() -> None:
    """Jinja2's ``'dict object' has no attribute '…'`` shows the name with ``repr``."""
    message = f"'dict object' has no attribute {SECRET!r}; it is empty"

    assert Redactor([SECRET])(message) == "'dict object' has no attribute '***'; it is empty"


def test_short_lines_of_a_multi_line_secret_are_not_redacted_alone() -> None:
    """A line too short to be a secret by itself (``{``, ``ok``) would redact half of every output."""
    redact = Redactor(["{\nok\n  key-material-1234\n}"])

    assert redact("{ ok } key-material-1234") == "{ ok } ***"


def test_an_empty_redactor_changes_nothing_and_says_so() -> None:
    redact = Redactor([])

    assert not redact.active
    assert redact("text") == "text"
    assert Redactor([SECRET]).active


def test_redactor_data_redacts_keys_and_values_and_keeps_the_shapes() -> None:
    redact = Redactor([SECRET])
    step = dataclasses.replace(_step(), title=SECRET)
    value = {SECRET: [SECRET, (SECRET, 3)], "n": None, "steps": frozenset({SECRET}), "step": step}

    redacted = redact.data(value)

    assert MARK not in repr(redacted)
    assert redacted[REDACTED] == [REDACTED, (REDACTED, 3)]
    assert redacted["steps"] == frozenset({REDACTED})
    assert isinstance(redacted["step"], Step) and redacted["step"].title == REDACTED


def test_redactor_data_returns_the_same_object_when_there_is_nothing_to_redact() -> None:
    redact = Redactor([SECRET])
    value = {"rows": [("a", 1)], "step": _step()}

    assert redact.data(value) is value


def test_redactor_data_turns_an_object_it_cannot_look_into_into_redacted_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return f"opaque {SECRET}"

    assert Redactor([SECRET]).data({"x": Opaque()}) == {"x": f"opaque {REDACTED}"}


# --------------------------------------------------------------------------- every event


def plant(hint: Any, text: str, where: str) -> Any:
    """A value of type ``hint`` with ``text`` in every string it can hold."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is str:
        return f"before {text} after"
    if hint is bool:
        return False
    if hint in (int, float):
        return hint(0)
    if hint is Any or hint is object:
        return {text: [text, (text, {f"key {text}": f"value {text}"})]}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return next(iter(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, text)
    if origin in (Union, types.UnionType):
        return plant(next(a for a in args if a is not type(None)), text, where)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (plant(args[0], text, where), plant(args[0], text, where))
        return tuple(plant(a, text, where) for a in args)
    if origin in (list, Sequence):
        return [plant(args[0], text, where)]
    if origin in (dict, Mapping):
        return {plant(args[0], text, where): plant(args[1], text, where)}
    raise AssertionError(
        f"{where}: the test cannot plant a secret in a {hint!r}; teach plant() this type, so "
        "that the new field is shown to be redacted"
    )


def build(cls: type[Any], text: str) -> Any:
    """An instance of the dataclass ``cls`` with ``text`` planted in every field."""
    hints = get_type_hints(cls)
    values = {
        f.name: plant(hints[f.name], text, f"{cls.__name__}.{f.name}")
        for f in dataclasses.fields(cls)
        if f.init
    }
    return cls(**values)


def every_event_class() -> list[type[Event]]:
    """Every subclass of :class:`Event`, at any depth, each once.

    ``@dataclass(slots=True)`` makes a new class and leaves the one it replaced among the
    subclasses until it is collected: of two classes with one name, the module's is kept."""
    found: dict[str, type[Event]] = {}
    waiting: list[type[Event]] = [Event]
    while waiting:
        for sub in waiting.pop().__subclasses__():
            waiting.append(sub)
            name = f"{sub.__module__}.{sub.__qualname__}"
            if name not in found or getattr(sys.modules[sub.__module__], sub.__qualname__, None) is sub:
                found[name] = sub
    return list(found.values())


def strings(value: Any, skip: Mapping[type, frozenset[str]] | None = None) -> Iterator[str]:
    """Every string a subscriber can read in ``value``: fields, keys, items, nested; but the fields ``skip``
    names per dataclass."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Enum):
        yield str(value.value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.name not in (skip or {}).get(type(value), ()):
                yield from strings(getattr(value, f.name), skip)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(key, skip)
            yield from strings(item, skip)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from strings(item, skip)
    elif value is not None and not isinstance(value, int | float):
        yield str(value)


def without_names(event: Any) -> Any:
    """``event`` with its :data:`NAMES` fields (kept verbatim by the bus) emptied, at any depth."""
    if isinstance(event, tuple | list):
        return type(event)(without_names(v) for v in event)
    if not (dataclasses.is_dataclass(event) and not isinstance(event, type)):
        return event
    kept = NAMES.get(type(event), frozenset())
    changed = {
        f.name: (type(getattr(event, f.name))() if f.name in kept else without_names(getattr(event, f.name)))
        for f in dataclasses.fields(event)
        if f.init
    }
    return dataclasses.replace(event, **changed)


def seen_by_subscriber(event: Event) -> str:
    """All a subscriber could write anywhere, but the names the bus keeps: every string, the event's repr,
    its JSON."""
    shown = without_names(event)
    return "\n".join([*strings(event, NAMES), repr(shown), json.dumps(as_data(shown), default=str)])


EVENT_CLASSES = every_event_class()


def test_the_event_classes_are_found() -> None:
    names = {cls.__name__ for cls in EVENT_CLASSES}
    assert {"RunStarted", "StepStarted", "StepOutput", "StepFinished", "HostFinished", "RunFinished"} <= names


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_the_planting_puts_the_secret_in_every_string_of_the_event(cls: type[Event]) -> None:
    """Without secrets to redact the bus delivers the planted event as built: the test below can fail."""
    got: list[Event] = []
    bus = EventBus("run-1")
    bus.subscribe(got.append)

    bus.emit(build(cls, SECRET))

    (event,) = got
    planted = [s for s in strings(event) if s not in ("run-1",)]
    assert planted, f"{cls.__name__} has no string for a secret to hide in"
    assert all(MARK in s for s in planted if s not in {m.value for m in _enum_values(event)})


@pytest.mark.parametrize("form", list(forms(SECRET)))
@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_no_subscriber_sees_a_secret_in_any_event(cls: type[Event], form: str) -> None:
    first: list[Event] = []
    second: list[Event] = []
    bus = EventBus("run-1", Redactor([SECRET]))
    bus.subscribe(first.append)
    bus.subscribe(second.append)  # every subscriber, not only the first

    returned = bus.emit(build(cls, forms(SECRET)[form]))

    assert len(first) == len(second) == 1
    for event in [*first, *second, returned]:
        assert type(event) is cls
        assert event.run_id == "run-1" and event.seq == 1
        shown = seen_by_subscriber(event)
        assert MARK not in shown, f"{cls.__name__} delivered the secret ({form}): {shown[:400]}"


def test_the_names_kept_verbatim_are_these_and_no_more() -> None:
    """A field added to NAMES skips redaction: it must be a name a run is keyed or resumed by, never a
    message, a command or output. Changing this list is changing what may carry a secret."""
    assert {cls.__name__: sorted(fields) for cls, fields in NAMES.items()} == {
        "RunStarted": sorted(
            ["runbook_id", "runbook_path", "runbook_sha256", "runbook_text", "hosts", "inputs", "trigger"]
        ),
        "PreflightChecked": ["host"],
        "StepStarted": ["host", "step_id"],
        "StepOutput": ["host", "step_id", "stream"],
        "ApprovalRequested": ["host", "step_id"],
        "StepApproval": ["host", "step_id"],
        "StepResult": ["host", "step_id"],
        "HostReport": ["host"],
        "RunReport": ["run_id", "runbook_id"],
    }


def test_a_one_letter_secret_does_not_rename_steps_hosts_or_change_the_inputs_a_resume_uses() -> None:
    started: RunStarted = build(RunStarted, "t")
    finished: StepFinished = build(StepFinished, "t")
    bus = EventBus("run-1", Redactor(["t"]))

    got_started, got_finished = bus.emit(started), bus.emit(finished)

    assert (got_started.hosts, got_started.inputs) == (started.hosts, started.inputs)
    assert got_started.runbook_text == started.runbook_text
    result = got_finished.result
    assert (result.host, result.step_id) == (finished.result.host, finished.result.step_id)
    assert result.message == "before *** af***er", "messages are redacted, however short the secret"


def test_a_bus_given_secrets_later_redacts_with_all_of_them() -> None:
    got: list[Event] = []
    bus = EventBus("run-1", Redactor(["first-secret"]))
    bus.subscribe(got.append)
    bus.protect(Redactor(["second-secret"]))

    bus.emit(build(StepFinished, "first-secret second-secret"))

    assert "secret" not in seen_by_subscriber(got[0]).replace("***", "")


def _enum_values(value: Any) -> Iterator[Enum]:
    if isinstance(value, Enum):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _enum_values(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _enum_values(item)


# --------------------------------------------------------------------------- through a real run

SECRET_RUNBOOK = """
    id: secrets
    title: t
    severity: info
    summary: s
    inputs:
      token: {type: string, secret: true}
    detect:
      - {id: look, title: look, run: "look {{ inputs.token }}", expect: "stdout == 'clean'"}
    remediate:
      - {id: fix, title: fix, run: "fix {{ inputs.token }}"}
    """


def _runbook(text: str = SECRET_RUNBOOK) -> Runbook:
    result = check_text(textwrap.dedent(text))
    assert result.runbook is not None, "\n".join(map(str, result.problems))
    return result.runbook


def _step() -> Step:
    return _runbook().steps(Phase.DETECT)[0]


def _run(answer: Callable[[str], CommandResult], approver: Any = None) -> tuple[list[Event], RunReport, Any]:
    """A real Runner on a plain ``EventBus`` (as tests and front ends build it), every command answered
    by ``answer(command)``."""
    events: list[Event] = []
    bus = EventBus("run-1")
    bus.subscribe(events.append)
    spec = RunSpec(runbook=_runbook(), hosts=(Host("node1"),), inputs={"token": SECRET}, started_by="t")
    executor = HandlerExecutor(lambda host, command, cancel: answer(command))
    approver = approver or RecordingApprover()
    report = Runner(
        spec, bus=bus, approver=approver, executors=ExecutorSet({"local": lambda: executor})
    ).run()
    return events, report, approver


def test_an_executor_error_naming_the_secret_reaches_nobody() -> None:
    def answer(command: str) -> CommandResult:
        raise ExecutorError("node1", f"connection lost while running {command!r}")

    events, report, _ = _run(answer)

    finished = [e for e in events if isinstance(e, StepFinished)]
    assert finished and "connection lost" in finished[0].result.message
    assert MARK not in seen_by_subscriber_all(events)
    assert MARK not in repr(report), "runner.run() returns what the subscribers saw"


def test_an_internal_error_naming_the_secret_fails_the_host_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(command: str) -> CommandResult:
        raise RuntimeError(f"bug while running {command}")

    events, report, _ = _run(answer)

    assert "internal error in Cairn: RuntimeError: bug while running look" in report.hosts[0].reason
    assert MARK not in seen_by_subscriber_all(events)
    assert MARK not in repr(report)
    logged = "\n".join(caplog.text.splitlines())
    assert "internal error on node1" in logged and "Traceback" in logged, "the traceback is logged"
    assert MARK not in logged, "... without the secret"


def test_the_approver_is_shown_the_command_without_the_secret() -> None:
    class Approves:
        def __init__(self) -> None:
            self.seen: list[ApprovalRequest] = []

        def decide(self, request: ApprovalRequest) -> Approval:
            self.seen.append(request)
            return Approval(Decision.APPROVED, "test", f"ok for {request.text}")

    calls: list[str] = []

    def answer(command: str) -> CommandResult:
        calls.append(command)
        return CommandResult(
            rc=0, stdout="dirty" if command.startswith("look") else "", stderr="", duration=0.0
        )

    events, _, approver = _run(answer, Approves())

    assert any(c.startswith("fix ") for c in calls), "the approved step ran"
    assert approver.seen, "the remediation step was asked about"
    assert MARK not in seen_by_subscriber_all(events)
    assert all(MARK not in r.text for r in approver.seen)


def seen_by_subscriber_all(events: list[Event]) -> str:
    return "\n".join(seen_by_subscriber(e) for e in events)


def test_run_finished_is_the_last_event_and_the_report_returned() -> None:
    events, report, _ = _run(lambda command: CommandResult(0, "clean", "", 0.0))

    assert isinstance(events[-1], RunFinished)
    assert events[-1].report == report
