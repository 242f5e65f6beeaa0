"""Cairn's own filters and tests: Ansible's ``regex_*``, ``to_json``, ``duration``, ``version``; ``quote``
and ``unquoted``, which know untrusted text and secrets (:mod:`engine.core.template_values`).

The regular-expression filters build their result piece by piece, so a replacement or a match
list is bounded like everything else a template builds (:mod:`engine.core.template_bounds`).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from engine.core.command_marks import secret_reference
from engine.core.model import duration_value
from engine.core.template_bounds import (
    MAX_ITEMS,
    TemplateRefusal,
    check_items,
    check_text,
    policy,
    spend,
    tick,
)
from engine.core.template_errors import sum_filter
from engine.core.template_values import Secret, SecretText, Unquoted, holds_untrusted


class UntrustedRefused(TemplateRefusal):
    """``| unquoted`` (or a shell module's argument) given text an outsider set, without the step's allowance."""


UNQUOTED_REFUSED = (
    "| unquoted was given text an outsider set (an alert's label or annotation, or an input of an "
    "alert-started run): it would run as shell code; drop | unquoted (the value then is one quoted "
    'argument), or, if the step must, say why in allow_unquoted: "<the reason>"'
)


@pass_context
def unquoted(context: Context, value: Any) -> Unquoted:
    """The value as shell text; untrusted text only with the step's ``allow_unquoted``."""
    shell = getattr(context.environment, "commands", False)
    if shell and holds_untrusted(value) and not policy().allow_unquoted:
        raise UntrustedRefused(UNQUOTED_REFUSED)
    if shell and isinstance(value, bytes | bytearray):
        raise TemplateRefusal("| unquoted takes text, not bytes (Python would write b'…' into the command)")
    if shell and isinstance(value, Secret):
        return Unquoted(secret_reference(value))  # a reference that expands in the quoting it lands in
    if isinstance(value, SecretText):
        return Unquoted(value.bare(secret_reference))
    return Unquoted("" if value is None else value)


@pass_context
def quote(context: Context, value: Any) -> Unquoted:
    """Shell-quoted once (not quoted again in a command); a secret in a command by reference."""
    if getattr(context.environment, "commands", False) and isinstance(value, Secret):
        return Unquoted(secret_reference(value))
    if isinstance(value, SecretText):
        return Unquoted(value.quoted(secret_reference))
    return Unquoted(shlex.quote(str(value)))


def _regex_search(value: Any, pattern: str, group: int | str = 0) -> str | None:
    found = re.search(pattern, str(value), re.MULTILINE)
    return found.group(group) if found else None


def _regex_findall(value: Any, pattern: str) -> list[Any]:
    compiled = re.compile(pattern, re.MULTILINE)
    found: list[Any] = []
    for match in compiled.finditer(str(value)):
        tick()
        if compiled.groups == 0:
            found.append(match.group(0))
        elif compiled.groups == 1:
            found.append(match.group(1) or "")
        else:
            found.append(tuple(g or "" for g in match.groups()))
        if len(found) > MAX_ITEMS:
            check_items(len(found), "regex_findall")
    return found


def _regex_replace(value: Any, pattern: str, replacement: str = "") -> str:
    text = str(value)
    built = 0

    def expand(match: re.Match[str]) -> str:
        nonlocal built
        tick()
        piece = match.expand(replacement) if "\\" in replacement else replacement  # no group references
        built += len(piece)
        check_text(len(text) + built, "regex_replace")
        return piece

    return re.sub(pattern, expand, text, flags=re.MULTILINE)


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


def _from_json(text: Any) -> Any:
    spend(8 * len(text) if isinstance(text, str | bytes) else 0)  # what parsing it builds, about
    return json.loads(text)


FILTERS: dict[str, Any] = {
    "unquoted": unquoted,
    "quote": quote,
    "regex_search": _regex_search,
    "regex_findall": _regex_findall,
    "regex_replace": _regex_replace,
    "to_json": lambda v: json.dumps(v, sort_keys=True, default=str),
    "from_json": _from_json,
    "duration": _duration,
    "sum": sum_filter,
}
TESTS: dict[str, Any] = {"match": _test_match, "search": _test_search, "version": _test_version}
GLOBALS: dict[str, Any] = {"now": time.time}
