"""Runbook inputs: ``-e key=value`` text (or a form's fields) -> typed values.

The rules are stated once, here, for every front end: a value not given takes the
input's default, an input without a default is required, text is typed by
:func:`convert` (and shown back by :func:`input_text`), choices are checked. An
error about a secret input never shows the value. The :class:`Redactor` (secrets out
of everything shown or kept) lives in :mod:`engine.core.redaction`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import InputError
from engine.core.model import InputSpec, InputType, Runbook, duration_value
from engine.core.redaction import REDACTED, Redactor
from engine.core.yamlsource import yaml_repr

__all__ = [
    "REDACTED",
    "Redactor",
    "convert",
    "entered_value",
    "input_text",
    "parse_extra_vars",
    "resolve_inputs",
]
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_extra_vars(items: list[str]) -> dict[str, Any]:
    """``["a=1", "@vars.yaml"]`` -> ``{"a": "1", ...}``; ``@FILE`` reads YAML or JSON, like Ansible."""
    values: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            values.update(_read_vars_file(Path(item[1:])))
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"-e {item!r}: expected key=value (or @FILE)")
        values[key.strip()] = value
    return values


def _read_vars_file(path: Path) -> dict[str, Any]:
    from engine.core.yamlsource import read_yaml_file  # noqa: PLC0415 - the same YAML rules as runbooks

    if not path.exists():
        raise InputError(f"-e @{path}: cannot read it: no such file")
    doc = read_yaml_file(path)
    if doc.problems and doc.text.strip():
        raise InputError(f"-e @{path}: not valid YAML/JSON: {doc.problems[0]}")
    if not isinstance(doc.data, dict):
        raise InputError(f"-e @{path}: expected a mapping of input names to values")
    return {str(k): v for k, v in doc.data.items()}


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def convert(spec: InputSpec, value: Any) -> Any:
    """``value`` (text from the command line, or YAML data) as ``spec.type``."""
    if value is None:
        raise InputError(f"input {spec.name!r} is empty; give it a value")
    if isinstance(value, bool) and spec.type in (InputType.INTEGER, InputType.NUMBER, InputType.DURATION):
        raise InputError(f"input {spec.name!r}: expected a number{_got(spec, str(value).lower())}")
    text = str(value).strip() if not isinstance(value, bool) else value
    try:
        match spec.type:
            case InputType.STRING:
                converted: Any = str(value)
            case InputType.INTEGER:
                converted = int(text) if isinstance(text, str) else int(value)
            case InputType.NUMBER:
                converted = _number(text) if isinstance(text, str) else value
                if not isinstance(converted, int | float):
                    raise ValueError
            case InputType.BOOLEAN:
                if isinstance(value, bool):
                    converted = value
                elif str(text).lower() in _TRUE:
                    converted = True
                elif str(text).lower() in _FALSE:
                    converted = False
                else:
                    raise ValueError
            case InputType.DURATION:
                converted = duration_value(value if not isinstance(value, str) else text)
    except (ValueError, TypeError):
        shown = {
            InputType.INTEGER: "a whole number",
            InputType.NUMBER: "a number",
            InputType.BOOLEAN: "true or false",
            InputType.DURATION: "a duration like 30m or 90s",
            InputType.STRING: "text",
        }[spec.type]
        raise InputError(f"input {spec.name!r}: expected {shown}{_got(spec, yaml_repr(value))}") from None
    if spec.choices and converted not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        given = "the value given (secret: not shown)" if spec.secret else yaml_repr(converted)
        raise InputError(f"input {spec.name!r}: {given} is not one of {allowed}")
    return converted


def _got(spec: InputSpec, shown: str) -> str:
    """What an error says was given: the value, unless the input is secret (errors are printed and logged)."""
    return " (the value given is secret: not shown)" if spec.secret else f", got {shown}"


def input_text(spec: InputSpec, value: Any) -> str:
    """A value as it is typed, so that :func:`convert` reads it back: ``1h30m`` for durations,
    ``true`` for booleans, ``""`` for none."""
    from engine.core.render import duration_text  # noqa: PLC0415

    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec.type is InputType.DURATION and isinstance(value, int | float):
        return duration_text(value)
    return str(value)


def starting_value(spec: InputSpec, given: Mapping[str, Any]) -> Any:
    """What a form shows for ``spec`` before anyone types: the value given, else the default, else ``None``."""
    if spec.name in given:
        return given[spec.name]
    return spec.default if spec.has_default else None


def entered_value(spec: InputSpec, text: str) -> Any:
    """The typed value of what someone entered for ``spec`` in a form's field (the TUI's setup screen).

    An empty field is an input not given: it takes the default, as on the command line, and
    an input without one is required. :class:`InputError` says what is wrong."""
    if text == "":
        if spec.has_default:
            return spec.default
        raise InputError(f"{spec.name} is required ({spec.description or spec.type.value})")
    return convert(spec, text)


def resolve_inputs(
    runbook: Runbook,
    given: Mapping[str, Any],
    ask: Callable[[InputSpec], str | None] | None = None,
) -> dict[str, Any]:
    """Typed values for every input: given, else default, else ``ask`` (a terminal prompt)."""
    unknown = sorted(set(given) - {i.name for i in runbook.inputs})
    if unknown:
        declared = ", ".join(i.name for i in runbook.inputs) or "none"
        raise InputError(
            f"runbook {runbook.id!r} has no input {', '.join(repr(u) for u in unknown)} (its inputs: {declared})"
        )
    values: dict[str, Any] = {}
    for spec in runbook.inputs:
        if spec.name in given:
            values[spec.name] = convert(spec, given[spec.name])
        elif spec.has_default:
            values[spec.name] = spec.default
        else:
            answer = ask(spec) if ask else None
            if answer is None:
                raise InputError(
                    f"input {spec.name!r} is required ({spec.description or spec.type.value}); "
                    f"give it with -e {spec.name}=VALUE"
                )
            values[spec.name] = convert(spec, answer)
    return values
