"""Templates and expressions: Jinja2 in an immutable sandbox, with shell-quoting.

Three uses, one language (the one Ansible users already write):

* **commands** (``run:``): every ``{{ value }}`` is shell-quoted, so an alert
  label such as ``node1; rm -rf /`` stays one argument. Lists become several
  quoted arguments. ``{{ value | unquoted }}`` opts out, explicitly.
* **text** (``manual:`` instructions, trigger targets): rendered as is.
* **expressions** (``when:``, ``expect:``): evaluated to a Python value.

Undefined names are errors, never silently empty: an empty string in a shell
command is how ``rm -rf /{{ dir }}`` goes wrong. Errors at run time say which
value had which type and the filter that converts it (parsed output is text);
values in them are redacted with the run's Redactor, then cut to 40 characters.
:func:`check` inspects a template without running it, for ``cairn validate``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.core.errors import TemplateError
from engine.core.model import duration_value
from engine.core.template_errors import ExplainingSandbox, ExplainingUndefined, Redact, describe, sum_filter

# Names a template may use at the top level. Expectations also see the step's own output.
TEMPLATE_NAMES = frozenset({"target", "vars", "inputs", "steps", "alert", "run"})
EXPECT_NAMES = TEMPLATE_NAMES | {"out", "rc", "stdout", "stderr"}

_WRAPPED = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class Unquoted(str):
    """A string the template author marked as trusted shell text (``| unquoted``)."""

    __slots__ = ()


def shell_quote(value: Any) -> str:
    """One value as shell text: strings quoted, lists as several quoted words."""
    if isinstance(value, Unquoted):
        return str(value)
    if value is None:
        return "''"
    if isinstance(value, bool):
        return "true" if value else "false"  # as shells and YAML spell them, not Python's True
    if isinstance(value, list | tuple | Iterator):  # Iterator: map()/select() without | list
        return " ".join(shell_quote(v) for v in value)
    return shlex.quote(str(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Iterator):
        return list(value)
    if isinstance(value, bool):
        return "true" if value else "false"  # the same spelling as in commands
    return "" if value is None else value


# --------------------------------------------------------------------------- filters and tests


def _unquoted(value: Any) -> Unquoted:
    return Unquoted("" if value is None else value)


def _regex_search(value: Any, pattern: str, group: int | str = 0) -> str | None:
    found = re.search(pattern, str(value), re.MULTILINE)
    return found.group(group) if found else None


def _regex_findall(value: Any, pattern: str) -> list[Any]:
    return re.findall(pattern, str(value), re.MULTILINE)


def _regex_replace(value: Any, pattern: str, replacement: str = "") -> str:
    return re.sub(pattern, replacement, str(value), flags=re.MULTILINE)


def _test_match(value: Any, pattern: str) -> bool:
    return re.match(pattern, str(value)) is not None


def _test_search(value: Any, pattern: str) -> bool:
    return re.search(pattern, str(value)) is not None


def _version_key(text: str) -> tuple[tuple[int, str], ...]:
    # "4.19.113-300.el7" -> ((4,''), (19,''), (113,''), (300,''), (0,'el'), (7,'')):
    # numbers compare as numbers, so 4.19.113 > 4.19.9.
    return tuple(
        (int(part), "") if part.isdigit() else (0, part) for part in re.findall(r"\d+|[A-Za-z]+", text)
    )


_VERSION_OPS = {
    "<": lambda a, b: a < b,
    "lt": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "le": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "gt": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "ge": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "eq": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "ne": lambda a, b: a != b,
}


def _test_version(value: Any, other: str, operator: str = "==") -> bool:
    """Ansible's ``version`` test: ``kernel is version('4.19.113', '<')``."""
    if operator not in _VERSION_OPS:
        raise ValueError(f"version test: unknown operator {operator!r}")
    return bool(_VERSION_OPS[operator](_version_key(str(value)), _version_key(str(other))))


def _duration(value: Any) -> int | float:
    return duration_value(value)


FILTERS: dict[str, Any] = {
    "unquoted": _unquoted,
    "quote": lambda v: Unquoted(shlex.quote(str(v))),  # already quoted: not quoted again
    "regex_search": _regex_search,
    "regex_findall": _regex_findall,
    "regex_replace": _regex_replace,
    "to_json": lambda v: json.dumps(v, sort_keys=True, default=str),
    "from_json": json.loads,
    "duration": _duration,
    "sum": sum_filter,
}
TESTS: dict[str, Any] = {"match": _test_match, "search": _test_search, "version": _test_version}
GLOBALS: dict[str, Any] = {"now": time.time}


def _environment(finalize: Any) -> ImmutableSandboxedEnvironment:
    env = ExplainingSandbox(
        undefined=ExplainingUndefined,
        autoescape=False,
        keep_trailing_newline=True,  # as in Ansible: "line\n" stays a line with its newline
        trim_blocks=True,  # as in Ansible: {% for %} lines leave no blank lines behind
        lstrip_blocks=True,
        finalize=finalize,
    )
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals.update(GLOBALS)
    return env


_COMMAND_ENV = _environment(shell_quote)
_TEXT_ENV = _environment(_plain)


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=2048)
def _compiled_command(source: str) -> Any:
    return _COMMAND_ENV.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_text(source: str) -> Any:
    return _TEXT_ENV.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_expression(source: str) -> Any:
    return _TEXT_ENV.compile_expression(unwrap(source), undefined_to_none=False)


def unwrap(expression: str) -> str:
    """``{{ a == b }}`` -> ``a == b``; bare expressions pass unchanged."""
    wrapped = _WRAPPED.match(expression)
    if wrapped and "{{" not in wrapped.group(1) and "}}" not in wrapped.group(1):
        return wrapped.group(1).strip()
    return expression.strip()


# ``redact`` (the run's Redactor): error messages may show values, secrets among them.


def render_command(
    source: str, context: Mapping[str, Any], *, step_id: str = "", redact: Redact | None = None
) -> str:
    """Render a ``run:`` command, shell-quoting every interpolated value."""
    try:
        return str(_compiled_command(source).render(context)).strip()
    except Exception as exc:
        raise TemplateError(describe(exc, redact), step_id=step_id, field="run") from exc


def render_text(
    source: str,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
) -> str:
    """Render text for humans or non-shell consumers (no quoting)."""
    try:
        return str(_compiled_text(source).render(context))
    except Exception as exc:
        raise TemplateError(describe(exc, redact), step_id=step_id, field=field) from exc


def evaluate(
    expression: str,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
) -> Any:
    """Evaluate a ``when``/``expect`` expression to a Python value."""
    try:
        value = _compiled_expression(expression)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()  # a bare undefined name: say so, never "false"
        return value
    except Exception as exc:
        raise TemplateError(describe(exc, redact), step_id=step_id, field=field) from exc


def render_data(
    value: Any,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
) -> Any:
    """Render every string inside a nested structure (ansible args)."""
    if isinstance(value, str):
        return render_text(value, context, step_id=step_id, field=field, redact=redact)
    if isinstance(value, Mapping):
        return {
            k: render_data(v, context, step_id=step_id, field=field, redact=redact) for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_data(v, context, step_id=step_id, field=field, redact=redact) for v in value]
    return value


# --------------------------------------------------------------------------- static checks


@dataclass(frozen=True, slots=True)
class TemplateCheck:
    """What :func:`check` learned about a template without rendering it."""

    errors: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()
    """Top-level variables it reads."""
    step_refs: frozenset[str] = frozenset()
    """Step ids it reads through ``steps.<id>`` / ``steps['<id>']``."""
    input_refs: frozenset[str] = frozenset()


_NOTHING = TemplateCheck()
_DELIMITERS = ("{{", "{%", "{#")
_LOCALS_OF: dict[type, tuple[str, ...]] = {
    nodes.For: ("loop",),
    nodes.Macro: ("caller", "varargs", "kwargs"),
    nodes.CallBlock: ("caller",),
}


@lru_cache(maxsize=16384)
def check(source: str, *, expression: bool = False) -> TemplateCheck:
    """Parse a template (or an expression) and report what it uses and what is wrong."""
    if not expression and not any(d in source for d in _DELIMITERS):
        return _NOTHING  # plain text: nothing to parse (most instructions, many commands)
    text = "{{ " + unwrap(source) + " }}" if expression else source
    try:
        return _check(text, expression)
    except RecursionError:
        return TemplateCheck(errors=("is nested too deeply to compile; simplify it",))


def _check(text: str, expression: bool) -> TemplateCheck:
    try:
        ast = _TEXT_ENV.parse(text)
    except TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if not expression and exc.lineno > 1 else ""
        message = str(exc.message or exc)
        if expression:  # the expression is parsed inside {{ }}: say it in the author's terms
            message = message.replace("'end of print statement'", "end of the expression")
        return TemplateCheck(errors=(f"does not compile: {message}{where}",))
    # One walk over the tree. Names read but never assigned (loop variables, {% set %})
    # anywhere in the template are free: coarser than jinja2.meta's scoping, but it needs
    # no code generation, so it is fast and cannot fail on a template with other errors.
    errors: list[str] = []
    loaded: set[str] = set()
    stored: set[str] = set(_TEXT_ENV.globals)
    refs: dict[str, set[str]] = {"steps": set(), "inputs": set()}
    stack: list[nodes.Node] = [ast]
    while stack:
        node = stack.pop()
        stack.extend(node.iter_child_nodes())
        if isinstance(node, nodes.Name):
            (stored if node.ctx in ("store", "param") else loaded).add(node.name)
        elif isinstance(node, nodes.Filter) and node.name not in _TEXT_ENV.filters:
            errors.append(f"uses unknown filter {node.name!r}{_suggest(node.name, _TEXT_ENV.filters)}")
        elif isinstance(node, nodes.Test) and node.name not in _TEXT_ENV.tests:
            errors.append(f"uses unknown test {node.name!r}{_suggest(node.name, _TEXT_ENV.tests)}")
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            inner = node.node
            if isinstance(inner, nodes.Name) and inner.name in refs:
                key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
                if isinstance(key, str):
                    refs[inner.name].add(key)
        else:
            stored.update(_LOCALS_OF.get(type(node), ()))
            if isinstance(node, nodes.Macro):  # {% macro h(x) %} defines h
                stored.add(node.name)
    return TemplateCheck(
        errors=tuple(sorted(set(errors), key=errors.index)),
        names=frozenset(loaded - stored),
        step_refs=frozenset(refs["steps"]),
        input_refs=frozenset(refs["inputs"]),
    )


def _suggest(name: str, known: Iterable[str]) -> str:
    from difflib import get_close_matches  # noqa: PLC0415 - only on the error path

    close = get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
