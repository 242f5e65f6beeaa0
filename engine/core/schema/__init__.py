"""The runbook format's contract: the JSON Schema, and its errors in plain words.

``runbook.schema.json`` beside this file is the single source of truth for the
shape of a runbook; editors read it through the ``yaml-language-server``
modeline. This module turns jsonschema's errors into messages that say what to
fix, using the schema's own descriptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.model import DURATION_PATTERN
from engine.core.schema.fastcheck import Check, compile_schema
from engine.core.yamlsource import pointer
from engine.core.yamlsource import yaml_repr as _short

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_PATH = Path(__file__).with_name("runbook.schema.json")
SCHEMA_ID = "https://cairn.dev/schemas/runbook/v1.schema.json"
_KINDS = ("run", "manual", "ansible")


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """A schema violation: where (pointer), what to fix, and whether it points at a key."""

    pointer: str
    message: str
    at_key: bool = False


@cache
def schema() -> dict[str, Any]:
    """The runbook JSON Schema as a dict."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def schema_text() -> str:
    """The schema file, exactly as shipped."""
    return SCHEMA_PATH.read_text(encoding="utf-8")


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - 0.15 s import, only when validating

    return Draft202012Validator(schema())


@cache
def _fast() -> Check:
    return compile_schema(schema())


def validate(data: Any) -> list[SchemaIssue]:
    """Every schema violation in ``data``, in document order."""
    if _fast()(data):
        return []  # valid: no need for jsonschema's slower, explaining pass
    issues: dict[SchemaIssue, None] = {}  # ordered and de-duplicated
    for error in _validator().iter_errors(data):
        issues.update(dict.fromkeys(translate_error(error)))
    return sorted(issues, key=lambda i: i.pointer)


def _label(path: tuple[str | int, ...]) -> str:
    if not path:
        return "the runbook"
    last = path[-1]
    if isinstance(last, int):
        parent = path[-2] if len(path) > 1 else "item"
        return f"{parent}[{last}]"
    return f"{last!r}"


def _kind_of(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "empty",
    }.get(type(value), type(value).__name__)


def _expected(types: str | list[str]) -> str:
    names = {
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "array": "a list",
        "object": "a mapping",
        "null": "null",
    }
    listed = [types] if isinstance(types, str) else types
    return " or ".join(names.get(t, t) for t in listed)


def _is_duration(subschema: dict[str, Any]) -> bool:
    return subschema.get("pattern") == DURATION_PATTERN


def _described(error: ValidationError) -> str:
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f" — {description}" if description else ""


def translate_error(error: ValidationError) -> Iterator[SchemaIssue]:
    """One jsonschema error as the messages a runbook (or lab file) author reads: what to fix, where."""
    path = tuple(error.absolute_path)
    ptr = pointer(path)
    label = _label(path)
    value = error.instance
    rule: Any = error.validator_value
    subschema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    match error.validator:
        case "required":
            missing = [k for k in rule if not isinstance(value, dict) or k not in value]
            props = subschema.get("properties", {})
            for key in missing:
                hint = props.get(key, {}).get("description", "")
                where = "" if not path else f" in {label}"
                yield SchemaIssue(
                    ptr, f"missing required key {key!r}{where}; add it" + (f" ({hint})" if hint else "")
                )
        case "additionalProperties":
            allowed = sorted(subschema.get("properties", {}))
            extras = [k for k in value if k not in allowed] if isinstance(value, dict) else []
            for key in extras:
                close = get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                yield SchemaIssue(
                    pointer((*path, key)),
                    f"unknown key {key!r}; {hint}allowed here: {', '.join(allowed)}",
                    at_key=True,
                )
        case "type":
            hint = ""
            if rule == "string" and isinstance(value, bool | int | float):
                hint = " (put it in quotes to make it text)"
            elif _is_duration(subschema) and isinstance(value, float):
                hint = " (write fractions with a unit, e.g. 1500ms)"
            yield SchemaIssue(
                ptr,
                f"{label} must be {_expected(rule)}, not {_kind_of(value)} ({_short(value)}){hint}",
            )
        case "enum":
            options = [str(o) for o in rule]
            close = get_close_matches(str(value), options, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            yield SchemaIssue(ptr, f"{label} must be one of {', '.join(options)}, not {_short(value)}{hint}")
        case "const":
            yield SchemaIssue(ptr, f"{label} must be {rule!r}, not {_short(value)}")
        case "pattern" if "propertyNames" in error.relative_schema_path:
            yield SchemaIssue(
                pointer((*path, str(value))), f"name {value!r} is not valid{_described(error)}", at_key=True
            )
        case "pattern":
            yield SchemaIssue(ptr, f"{label} has an invalid value {_short(value)}{_described(error)}")
        case "minLength":
            yield SchemaIssue(ptr, f"{label} must not be empty")
        case "maxLength":
            yield SchemaIssue(ptr, f"{label} is too long (at most {rule} characters)")
        case "minItems":
            n = rule
            yield SchemaIssue(ptr, f"{label} needs at least {n} item{'s' if n != 1 else ''}")
        case "uniqueItems":
            yield SchemaIssue(ptr, f"{label} lists the same item twice; remove the duplicate")
        case "minimum" | "exclusiveMinimum":
            unit = " second" if _is_duration(subschema) else ""
            yield SchemaIssue(ptr, f"{label} must be at least {rule}{unit}, not {_short(value)}")
        case "maximum":
            yield SchemaIssue(ptr, f"{label} must be at most {rule}, not {_short(value)}")
        case "minProperties" | "maxProperties":
            keys = sorted(subschema.get("properties", {}))
            yield SchemaIssue(ptr, f"{label} must have exactly one of: {', '.join(keys)}")
        case "oneOf" if _is_step_kind(error):
            yield _step_kind_issue(ptr, label, value)
        case "oneOf" if path and path[-1] == "ansible":
            yield _ansible_issue(ptr, value)
        case "anyOf" | "oneOf":
            yield from _alternatives(error, path, ptr, label, value)
        case _:
            yield SchemaIssue(ptr, f"{label}: {error.message}")


def _is_step_kind(error: ValidationError) -> bool:
    branches = error.validator_value
    return isinstance(branches, list) and all(
        list(b) == ["required"] and b["required"][0] in _KINDS for b in branches
    )


def _step_kind_issue(ptr: str, label: str, value: Any) -> SchemaIssue:
    present = [k for k in _KINDS if isinstance(value, dict) and k in value]
    if not present:
        return SchemaIssue(
            ptr, f"{label} does nothing: give it one of run (a command), manual (instructions) or ansible"
        )
    return SchemaIssue(
        ptr,
        f"{label} has {' and '.join(present)}; a step has exactly one of run, manual or ansible: split it into several steps",
    )


def _ansible_issue(ptr: str, value: Any) -> SchemaIssue:
    keys = set(value) if isinstance(value, dict) else set()
    if "module" in keys and "playbook" in keys:
        return SchemaIssue(ptr, "an ansible step takes either module (with args) or playbook, not both")
    if "playbook" in keys:
        return SchemaIssue(ptr, "args go with module, not with playbook (put variables in the playbook)")
    return SchemaIssue(ptr, "an ansible step needs module (with args) or playbook; neither is given")


def _alternatives(
    error: ValidationError, path: tuple[str | int, ...], ptr: str, label: str, value: Any
) -> Iterator[SchemaIssue]:
    from jsonschema.exceptions import best_match  # noqa: PLC0415

    context = list(error.context or [])
    deeper = [e for e in context if len(e.absolute_path) > len(path)]
    if deeper:
        yield from translate_error(best_match(deeper))
        return
    # Errors from the alternatives whose *type* fits the value say what is wrong with it.
    fitting = [e for e in context if e.validator != "type"]
    specific = [e for e in fitting if e.validator not in ("const", "enum")]
    if specific:
        yield from translate_error(best_match(specific))
        return
    options: list[str] = []
    for e in fitting:
        allowed: Any = e.validator_value
        options.extend(str(o) for o in (allowed if e.validator == "enum" else [allowed]))
    close = get_close_matches(str(value), options, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    yield SchemaIssue(ptr, f"{label} has an invalid value {_short(value)}{hint}{_described(error)}")
