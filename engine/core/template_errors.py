"""Template errors at run time, explained: which value had which type, and the filter that fixes it.

Parsed output is mostly text, so ``out | sum(attribute='count')`` or ``row.age > 3600`` fails in
Python's words ("unsupported operand type(s) for +: 'int' and 'str'"). :mod:`engine.core.expr` renders
in :class:`ExplainingSandbox` (its arithmetic errors keep both operands), with
:class:`ExplainingUndefined` (a missing key or element says what there is instead) and
:func:`sum_filter`; :func:`describe` turns any exception into the message the user reads. Values
are shown redacted with the run's Redactor, then cut to 40 characters, so a secret never shows.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, pass_environment
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from engine.core.template_bounds import TemplateRefusal

# Parsed output is mostly text, so `out | sum(attribute='count')` or `row.age > 3600` fails in
# Python's words ("unsupported operand type(s) for +: 'int' and 'str"). These messages say which
# value had which type and which filter converts it. Values are shown redacted, then cut.

Redact = Callable[[str], str]
Show = Callable[[Any], str]

_SHOWN = 40  # characters of a value a message shows
_TEXT = "values parsed from output (table cells, regex groups, lines) are text"
_TAKE_NUMBER = "regex_search('[0-9.]+') | float"  # the number out of text such as '12%' or '3s'
_NONE = "a step that did not run or failed has out none: guard with when: steps.<id>.ok"
_KINDS = {
    "str": "text (str)",
    "int": "a number (int)",
    "float": "a number (float)",
    "bool": "a boolean (bool)",
    "NoneType": "none",
    "list": "a list",
    "tuple": "a list (tuple)",
    "dict": "a dict",
}
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 4096  # strings whole, so a secret is redacted before the cut
_COMPARE = re.compile(r"'([<>]=?)' not supported between instances of '(\w+)' and '(\w+)'")
_FORMAT = re.compile(
    r"(?:a real number|an integer|a number) is required, not (\w+)"
    r"|must be real number, not (\w+)|Unknown format code '.' for object of type '(\w+)'"
)
_NONE_USED = re.compile(r"'NoneType' object is not iterable|of type 'NoneType' has no len")
_TEXT_USED = {  # Python's words -> an example of the conversion
    "'str' object cannot be interpreted as an integer": "range(value | int)",
    "type str doesn't define __round__": "value | float | round(1)",
}


class _Explained(Exception):
    """A runtime error whose message is built when the run's redactor is known."""

    def __init__(self, build: Callable[[Show], str]) -> None:
        super().__init__("template error")
        self.build = build


def _same(text: str) -> str:
    return text


def _kind(value: Any) -> str:
    name = "str" if isinstance(value, str) else type(value).__name__
    return _KINDS.get(name, name)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _show(value: Any, redact: Redact) -> str:
    """A value as a message shows it: secrets redacted first, then cut to 40 characters."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _cut(repr(redact(str(value))[: _SHOWN + 1]))
    return _cut(redact(_REPR.repr(value)))


def _number_filter(text: str) -> str | None:
    """``'int'`` or ``'float'``: the filter that reads ``text`` as it is; None if it is no number."""
    try:
        int(text)
    except ValueError:
        try:
            float(text)
        except ValueError:
            return None
        return "float"
    return "int"


def _odd_text(values: Iterable[Any], show: Show) -> str:
    odd = [v for v in values if isinstance(v, str) and _number_filter(v) is None]
    return f" (as written, {show(odd[0])} is no number: | int would make it 0)" if odd else ""


def _converted(value: Any, name: str, show: Show) -> str:
    """``value`` in an example: text as ``(name | int)``, anything else as itself."""
    if not isinstance(value, str):
        return show(value)
    return f"({name} | {_number_filter(value) or _TAKE_NUMBER})"


def _binop_message(op: str, left: Any, right: Any, exc: Exception, show: Show) -> str:
    what = f"cannot compute {show(left)} {op} {show(right)}"
    if isinstance(exc, ZeroDivisionError):
        return f"{what} ({type(exc).__name__}: {exc}): guard the divisor, e.g. (a {op} b) if b else 0"
    if op == "%" and isinstance(left, str) and _FORMAT.search(str(exc)):
        if isinstance(right, str):
            return f"cannot format {show(right)} with {show(left)}: {show(right)} is text (str), the format needs a number; {_TEXT}. Convert it first: {show(left)} % {_converted(right, 'value', show)}{_odd_text([right], show)}"
        return f"cannot format {show(right)} with {show(left)}: {exc}"
    if left is None or right is None:
        side = "both values are" if left is right else f"the {'left' if left is None else 'right'} value is"
        return f"{what}: {side} none; {_NONE}"
    pair = (left, right)
    texts_and_numbers = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in pair)
    if texts_and_numbers and any(isinstance(v, str) for v in pair):
        names = ("a", "b") if all(isinstance(v, str) for v in pair) else ("value", "value")
        example = f"{_converted(left, names[0], show)} {op} {_converted(right, names[1], show)}"
        kinds = ", ".join(f"{show(v)} is {_kind(v)}" for v in pair)
        odd = _odd_text(pair, show)
        join = "; to join text, use ~ instead of +" if op == "+" and odd else ""
        return f"{what}: {kinds}; {_TEXT}. Convert it first: {example}{odd}{join}"
    return f"{what}: {op} does not work on {_kind(left)} and {_kind(right)}"


def _sum_message(index: int, item: Any, attribute: str | int | None, show: Show) -> str:
    call = "sum" if attribute is None else f"sum(attribute={attribute!r})"
    which = (
        f"item {index} is {show(item)}" if attribute is None else f"item {index} has {attribute} {show(item)}"
    )
    pick = "" if attribute is None else f"map(attribute={attribute!r}) | "
    if item is None:
        return f"{call}: {which}, not a number; turn none into 0 first: {pick}map('default', 0, true) | sum"
    if isinstance(item, str):
        number = _number_filter(item)
        convert = f"map('{number}')" if number else "map('regex_search', '[0-9.]+') | map('float')"
        return f"{call}: {which}, text (str), not a number; {_TEXT}. Convert before summing: {pick}{convert} | sum{_odd_text([item], show)}"
    if isinstance(item, Mapping) and attribute is None:
        columns = ", ".join(_cut(str(key)) for key in islice(item, 10))
        return f"{call}: {which}, a row (dict), not a number: name the column to add, e.g. map(attribute='…') | map('int') | sum; this row has {columns}"
    return f"{call}: {which}, {_kind(item)}, not a number"


@pass_environment
def sum_filter(
    environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    """Jinja's ``sum``, whose error names the first item that is no number."""
    items = list(iterable if attribute is None else map(make_attrgetter(environment, attribute), iterable))
    try:
        return sum(items, start)
    except TypeError as exc:
        total = start
        for index, item in enumerate(items):
            try:
                total = total + item
            except TypeError:
                raise _Explained(partial(_sum_message, index, item, attribute)) from exc
        raise


def _comparison_message(op: str, left: str, right: str) -> str:
    what = f"cannot compare {_KINDS.get(left, left)} with {_KINDS.get(right, right)} using '{op}' (only their types are known, not their values)"
    if "NoneType" in (left, right):
        return f"{what}; {_NONE}"
    if "str" in (left, right) and {left, right} - {"str"} <= {"int", "float"}:
        example = f"(value | int) {op} limit" if left == "str" else f"limit {op} (value | int)"
        return f"{what}; {_TEXT}. Convert the text first: {example}, or | float for decimals"
    return what


def _explain(exc: Exception) -> str | None:
    """A plain message with a hint for common Python errors inside filters; None for others."""
    if not isinstance(exc, TypeError | ValueError):
        return None
    text, reason = str(exc), f"{type(exc).__name__}: {exc}"
    if found := _COMPARE.search(text):
        return _comparison_message(*found.groups())
    if found := _FORMAT.search(text):
        kind = next(group for group in found.groups() if group)
        if kind == "str":
            return f"the format needs a number, not text (str); {_TEXT}. Convert it first, e.g. '%.1f' | format(value | float) ({reason})"
    if _NONE_USED.search(text):
        return f"the value is none where a list or text is needed; {_NONE} ({reason})"
    for words, example in _TEXT_USED.items():
        if words in text:
            return (
                f"text (str) where a number is needed; {_TEXT}. Convert it first, e.g. {example} ({reason})"
            )
    return None


def _items(sequence: list[Any] | tuple[Any, ...]) -> str:
    return f"{len(sequence)} item{'' if len(sequence) == 1 else 's'}"


def _missing_hint(obj: Any, name: Any) -> str:
    """What an undefined element or attribute's container has instead."""
    if obj is None:
        return f": the value is none; {_NONE}"
    if isinstance(obj, list | tuple):
        if isinstance(name, str):
            return f"; it is a list of {_items(obj)}: take one ([0].{name}) or all (map(attribute={name!r}))"
        if not obj:
            return ": the list is empty (out is [] when the output has no rows, lines or matches); test it first (… | length > 0) or use … | first | default('')"
        return f": the list has {_items(obj)}, 0 to {len(obj) - 1} (-1 is the last)"
    if isinstance(obj, Mapping) and isinstance(name, str):
        if not obj:
            return "; it is empty"
        keys = ", ".join(_cut(str(key)) for key in islice(obj, 10))
        return f"; its keys are {keys}{', …' if len(obj) > 10 else ''}"
    if isinstance(obj, str) and isinstance(name, str):
        return "; it is text: a step's out is text unless the step has a parse (table, json, regex)"
    return ""


class ExplainingUndefined(StrictUndefined):
    """StrictUndefined whose message says what there is instead (the list's length, the dict's keys)."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        message = super()._undefined_message
        if self._undefined_hint or self._undefined_obj is missing:
            return message
        return message + _missing_hint(self._undefined_obj, self._undefined_name)


class ExplainingSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, whose arithmetic errors name their values."""

    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        try:
            return self.binop_table[operator](left, right)
        except (TypeError, ZeroDivisionError) as exc:
            raise _Explained(partial(_binop_message, operator, left, right, exc)) from exc


def describe(exc: Exception, redact: Redact | None) -> str:
    """The message a user reads for ``exc``, raised while rendering a template (redacted)."""
    if isinstance(exc, TemplateRefusal):
        message = str(exc)
    elif isinstance(exc, RecursionError):
        message = (
            "a macro or loop calls itself too deeply (RecursionError); it needs a condition that ends it"
        )
    elif isinstance(exc, _Explained):
        message = exc.build(lambda value: _show(value, redact or _same))
    elif isinstance(exc, SecurityError):
        message = f"not allowed in the sandbox: {exc}"
    elif isinstance(exc, JinjaTemplateError):
        message = str(exc.message or exc)
    else:
        message = _explain(exc) or f"{type(exc).__name__}: {exc}"
    return redact(message) if redact else message
