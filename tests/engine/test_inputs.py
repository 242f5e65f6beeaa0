"""Runbook inputs: ``-e`` text -> typed values, required/unknown inputs, and secret redaction."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.core.errors import InputError
from engine.core.inputs import REDACTED, Redactor, convert, parse_extra_vars, resolve_inputs
from engine.core.loader import check_text
from engine.core.model import InputSpec, InputType, Runbook


def make_runbook(inputs_yaml: str) -> Runbook:
    """A minimal valid runbook declaring ``inputs_yaml`` (the body of its ``inputs:`` mapping)."""
    text = (
        "id: sample\n"
        "title: Sample\n"
        "severity: info\n"
        "summary: A runbook for input tests.\n"
        "inputs:\n" + textwrap.indent(textwrap.dedent(inputs_yaml).strip("\n"), "  ") + "\n"
        "detect:\n"
        "  - id: probe\n"
        "    title: Probe\n"
        "    run: 'true'\n"
    )
    result = check_text(text, "sample.yaml")
    assert result.runbook is not None, result.problems
    return result.runbook


# --------------------------------------------------------------------------- parse_extra_vars


def test_extra_vars_key_value_pairs() -> None:
    assert parse_extra_vars(["path=/var/log", "limit=90", "empty="]) == {
        "path": "/var/log",
        "limit": "90",
        "empty": "",
    }


def test_extra_vars_value_may_contain_equals_signs() -> None:
    assert parse_extra_vars(["query=a=1&b=2", "expr=x == y"]) == {"query": "a=1&b=2", "expr": "x == y"}


def test_extra_vars_later_values_win() -> None:
    assert parse_extra_vars(["a=1", "a=2"]) == {"a": "2"}


def test_extra_vars_from_yaml_file(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text("path: /srv/data\nlimit: 90\nforce: true\nwait: 30m\n", encoding="utf-8")

    values = parse_extra_vars([f"@{vars_file}"])

    assert values == {"path": "/srv/data", "limit": 90, "force": True, "wait": "30m"}


def test_extra_vars_from_json_file_merged_with_pairs_in_order(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"limit": 80, "path": "/from/file"}), encoding="utf-8")

    values = parse_extra_vars(["limit=70", f"@{vars_file}", "path=/from/cli"])

    assert values == {"limit": 80, "path": "/from/cli"}


@pytest.mark.parametrize("item", ["path", "=value", " =value", ""])
def test_extra_vars_without_a_key_and_equals_is_an_error_naming_it(item: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_extra_vars(["ok=1", item])

    assert str(caught.value) == f"-e {item!r}: expected key=value (or @FILE)"


def test_extra_vars_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(InputError) as caught:
        parse_extra_vars([f"@{missing}"])

    assert str(caught.value).startswith(f"-e @{missing}: cannot read it")
    assert "no such file" in str(caught.value)


@pytest.mark.parametrize("body", ["- a\n- b\n", "just text\n", "42\n", ""])
def test_extra_vars_file_that_is_not_a_mapping_is_an_error(tmp_path: Path, body: str) -> None:
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text(body, encoding="utf-8")

    with pytest.raises(InputError) as caught:
        parse_extra_vars([f"@{vars_file}"])

    assert str(caught.value) == f"-e @{vars_file}: expected a mapping of input names to values"


def test_extra_vars_file_with_bad_syntax_is_an_error(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text('{"a": [1, 2\n', encoding="utf-8")

    with pytest.raises(InputError) as caught:
        parse_extra_vars([f"@{vars_file}"])

    assert str(caught.value).startswith(f"-e @{vars_file}: not valid YAML/JSON")


# --------------------------------------------------------------------------- convert


def spec(kind: InputType, **extra: Any) -> InputSpec:
    return InputSpec(name="value", type=kind, **extra)


@pytest.mark.parametrize(
    ("kind", "given", "expected"),
    [
        (InputType.STRING, "  keep spaces  ", "  keep spaces  "),
        (InputType.STRING, 42, "42"),
        (InputType.INTEGER, "42", 42),
        (InputType.INTEGER, " -3 ", -3),
        (InputType.INTEGER, 7, 7),
        (InputType.NUMBER, "2.5", 2.5),
        (InputType.NUMBER, "3", 3),  # whole numbers stay whole: `-e n=3` renders as 3, not 3.0
        (InputType.NUMBER, 4, 4),
        (InputType.DURATION, "30m", 1800),  # seconds, whole when whole: renders as 1800
        (InputType.DURATION, "1h30m", 5400),
        (InputType.DURATION, "90s", 90),
        (InputType.DURATION, "500ms", 0.5),
        (InputType.DURATION, "120", 120),
        (InputType.DURATION, 45, 45),
    ],
)
def test_convert(kind: InputType, given: Any, expected: Any) -> None:
    result = convert(spec(kind), given)

    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("yes", True),
        ("no", False),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("YES", True),
        ("False", False),
        ("on", True),
        ("off", False),
        (" true ", True),
        (True, True),
        (False, False),
    ],
)
def test_convert_boolean(given: Any, expected: bool) -> None:
    assert convert(spec(InputType.BOOLEAN), given) is expected


@pytest.mark.parametrize(
    ("kind", "given", "expected_form"),
    [
        (InputType.INTEGER, "ten", "a whole number"),
        (InputType.INTEGER, "1.5", "a whole number"),
        (InputType.INTEGER, "", "a whole number"),
        (InputType.NUMBER, "lots", "a number"),
        (InputType.BOOLEAN, "maybe", "true or false"),
        (InputType.BOOLEAN, "2", "true or false"),
        (InputType.DURATION, "soon", "a duration like 30m or 90s"),
        (InputType.DURATION, "30 minutes", "a duration like 30m or 90s"),
        (InputType.DURATION, "-5", "a duration like 30m or 90s"),
        (InputType.DURATION, -5, "a duration like 30m or 90s"),
    ],
)
def test_convert_bad_value_names_the_input_and_the_expected_form(
    kind: InputType, given: Any, expected_form: str
) -> None:
    with pytest.raises(InputError) as caught:
        convert(InputSpec(name="threshold", type=kind), given)

    assert str(caught.value) == f"input 'threshold': expected {expected_form}, got {given!r}"


def test_convert_accepts_a_choice() -> None:
    assert convert(spec(InputType.STRING, choices=("fast", "slow")), "slow") == "slow"
    assert convert(spec(InputType.INTEGER, choices=(1, 2, 3)), "2") == 2


def test_convert_rejects_a_value_outside_the_choices() -> None:
    with pytest.raises(InputError) as caught:
        convert(InputSpec(name="mode", type=InputType.STRING, choices=("fast", "slow")), "medium")

    assert str(caught.value) == "input 'mode': 'medium' is not one of fast, slow"


def test_choices_of_a_loaded_runbook_are_enforced() -> None:
    runbook = make_runbook(
        """
        mode:
          type: string
          choices: [fast, slow]
          default: fast
        level:
          type: integer
          choices: [1, 2, 3]
          default: 1
        """
    )

    assert resolve_inputs(runbook, {"mode": "slow", "level": "3"}) == {"mode": "slow", "level": 3}
    with pytest.raises(InputError, match=r"^input 'level': 4 is not one of 1, 2, 3$"):
        resolve_inputs(runbook, {"level": "4"})


def test_duration_choices_accept_a_listed_duration() -> None:
    # The loader accepts `choices: [30m, 1h]` for a duration input; `-e wait=30m` is then a choice.
    runbook = make_runbook(
        """
        wait:
          type: duration
          choices: [30m, 1h]
        """
    )

    assert resolve_inputs(runbook, {"wait": "30m"}) == {"wait": 1800.0}
    with pytest.raises(InputError, match=r"^input 'wait': .* is not one of"):
        resolve_inputs(runbook, {"wait": "5m"})


# --------------------------------------------------------------------------- resolve_inputs

RUNBOOK_INPUTS = """
path:
  type: string
  description: Folder to check.
limit:
  type: integer
  default: 90
wait:
  type: duration
  default: 30m
force:
  type: boolean
  default: false
"""


def test_resolve_converts_given_values_and_fills_defaults() -> None:
    runbook = make_runbook(RUNBOOK_INPUTS)

    values = resolve_inputs(runbook, {"path": "/srv", "force": "yes"})

    assert values == {"path": "/srv", "limit": 90, "wait": 1800.0, "force": True}


def test_resolve_given_value_overrides_default() -> None:
    runbook = make_runbook(RUNBOOK_INPUTS)

    values = resolve_inputs(runbook, {"path": "/srv", "limit": "75", "wait": "2h"})

    assert values["limit"] == 75
    assert values["wait"] == 7200.0


def test_resolve_lists_unknown_inputs_and_the_declared_ones() -> None:
    runbook = make_runbook(RUNBOOK_INPUTS)

    with pytest.raises(InputError) as caught:
        resolve_inputs(runbook, {"path": "/srv", "pth": "/x", "limt": "1"})

    assert str(caught.value) == (
        "runbook 'sample' has no input 'limt', 'pth' (its inputs: path, limit, wait, force)"
    )


def test_resolve_missing_required_input_names_the_fix() -> None:
    runbook = make_runbook(RUNBOOK_INPUTS)

    with pytest.raises(InputError) as caught:
        resolve_inputs(runbook, {})

    assert str(caught.value) == "input 'path' is required (Folder to check.); give it with -e path=VALUE"


def test_resolve_asks_for_missing_required_inputs_only() -> None:
    runbook = make_runbook(
        RUNBOOK_INPUTS
        + """
count:
  type: integer
"""
    )
    asked: list[str] = []

    def ask(input_spec: InputSpec) -> str | None:
        asked.append(input_spec.name)
        return {"path": "/answered", "count": "12"}[input_spec.name]

    values = resolve_inputs(runbook, {"limit": "5"}, ask=ask)

    assert asked == ["path", "count"]
    assert values == {"path": "/answered", "limit": 5, "wait": 1800.0, "force": False, "count": 12}


def test_resolve_when_ask_gives_no_answer_is_an_error() -> None:
    runbook = make_runbook(RUNBOOK_INPUTS)

    with pytest.raises(InputError, match=r"give it with -e path=VALUE$"):
        resolve_inputs(runbook, {}, ask=lambda _spec: None)


def test_resolve_checks_the_answer_given_to_ask() -> None:
    runbook = make_runbook("count:\n  type: integer\n")

    with pytest.raises(InputError, match=r"^input 'count': expected a whole number, got 'many'$"):
        resolve_inputs(runbook, {}, ask=lambda _spec: "many")


def test_resolve_with_no_declared_inputs() -> None:
    result = check_text(
        "id: bare\ntitle: Bare\nseverity: info\nsummary: s\ndetect:\n  - id: a\n    title: A\n    run: 'true'\n"
    )
    assert result.runbook is not None

    assert resolve_inputs(result.runbook, {}) == {}
    with pytest.raises(InputError, match=r"\(its inputs: none\)$"):
        resolve_inputs(result.runbook, {"x": "1"})


# --------------------------------------------------------------------------- Redactor

SECRET = 'it\'s "a\\b" $x'


@pytest.mark.parametrize(
    "shown",
    [
        SECRET,
        shlex.quote(SECRET),
        json.dumps(SECRET)[1:-1],
    ],
    ids=["raw", "shell-quoted", "json-escaped"],
)
def test_redactor_replaces_every_form_of_the_secret(shown: str) -> None:
    redact = Redactor([SECRET])

    assert redact(f"before {shown} after") == f"before {REDACTED} after"


def test_redactor_replaces_the_secret_in_a_rendered_command_and_in_json() -> None:
    redact = Redactor([SECRET])
    command = f"curl -u admin:{shlex.quote(SECRET)} https://example"
    document = json.dumps({"token": SECRET, "other": "kept"})

    assert redact(command) == f"curl -u admin:{REDACTED} https://example"
    assert SECRET not in redact(document)
    assert json.loads(redact(document)) == {"token": REDACTED, "other": "kept"}


def test_redactor_replaces_every_occurrence_and_several_secrets() -> None:
    redact = Redactor(["hunter2", "s3cr3t"])

    assert redact("hunter2 s3cr3t hunter2") == f"{REDACTED} {REDACTED} {REDACTED}"


def test_redactor_ignores_empty_secrets() -> None:
    assert Redactor([""])("unchanged text") == "unchanged text"


def test_redactor_for_inputs_redacts_secret_inputs_only() -> None:
    runbook = make_runbook(
        """
        token:
          type: string
          secret: true
        user:
          type: string
        """
    )
    redact = Redactor.for_inputs(runbook, {"token": "tok-123", "user": "alice"})

    assert redact("alice used tok-123") == f"alice used {REDACTED}"


def test_redactor_inputs_masks_secret_inputs_only() -> None:
    runbook = make_runbook(
        """
        token:
          type: string
          secret: true
        user:
          type: string
        limit:
          type: integer
          default: 3
        """
    )
    values = {"token": "tok-123", "user": "alice", "limit": 3}
    redact = Redactor.for_inputs(runbook, values)

    assert redact.inputs(runbook, values) == {"token": REDACTED, "user": "alice", "limit": 3}


def test_redactor_data_redacts_nested_output() -> None:
    redact = Redactor(["tok-123"])

    assert redact.data({"rows": [{"line": "key=tok-123"}, 5], "n": None}) == {
        "rows": [{"line": f"key={REDACTED}"}, 5],
        "n": None,
    }


@pytest.mark.parametrize(
    ("declared", "said"),
    [
        ("{type: integer, secret: true}", "expected a whole number (the value given is secret: not shown)"),
        ("{type: boolean, secret: true}", "expected true or false (the value given is secret: not shown)"),
        (
            "{type: string, secret: true, choices: [a, b]}",
            "the value given (secret: not shown) is not one of a, b",
        ),
    ],
    ids=["integer", "boolean", "choices"],
)
def test_an_input_error_never_shows_a_secret_value(declared: str, said: str) -> None:
    runbook = make_runbook(f"pin: {declared}")

    with pytest.raises(InputError) as caught:
        resolve_inputs(runbook, {"pin": "hunter2-pin"})

    assert str(caught.value) == f"input 'pin': {said}"
