"""What an operation of a template would build, asked before it runs it.

The sandbox (:mod:`engine.core.template_sandbox`) and ``cairn validate``'s static checks
(:mod:`engine.core.template_lint`) ask the same questions of a filter's, a method's or an
operator's arguments: ``'a' * 10**9``, ``'x'.ljust(10**9)``, ``center(10**9)``, a printf or
format width, ``batch(10**9)``, a join of one big text many times. Each answer is a size in
characters or items, checked against :mod:`engine.core.template_bounds` before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.core.template_bounds import (
    MAX_ITEMS,
    check_bits,
    check_items,
    check_text,
    printf_size,
    size_of,
    tick,
)

_LISTS = frozenset({"list", "sort", "dictsort", "groupby"})
_EXPANDS = {  # filters whose text can be this many times what they are given
    "string": 1,
    "pprint": 2,
    "tojson": 6,
    "to_json": 6,
    "urlencode": 3,
    "xmlattr": 6,
    "escape": 6,
    "e": 6,
    "forceescape": 6,
    "urlize": 12,
}


def argument(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None
) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def materialize(items: Any, what: str) -> list[Any]:
    """An iterable's items in a list, ticking, at most :data:`MAX_ITEMS` of them."""
    found: list[Any] = []
    for item in items:
        tick()
        found.append(item)
        if len(found) > MAX_ITEMS:
            check_items(len(found), what)
    return found


def _joined_size(items: list[Any], separator: Any) -> int:
    sep = len(separator) if isinstance(separator, str) else 0
    return sum(size_of(item) for item in items) + sep * max(0, len(items) - 1)


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(text, str | bytes) and isinstance(old, str | bytes) and isinstance(new, str | bytes)):
        return 0
    growth = len(new) - len(old)
    if growth <= 0:
        return len(text)
    times = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * growth


def filter_precheck(name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """Refuse a filter's arguments that would build too much; the value to give it (``join`` lists it)."""
    what = f"the filter {name}"
    if name == "center":
        check_text(_int(argument(args, kwargs, 0, "width", 80)), what)
    elif name == "indent" and isinstance(value, str):
        width = argument(args, kwargs, 0, "width", 4)
        each = len(width) if isinstance(width, str) else _int(width)
        check_text(len(value) + (value.count("\n") + 1) * each, what)
    elif name == "format" and isinstance(value, str):
        check_text(printf_size(value, dict(kwargs) if kwargs else tuple(args)), what)
    elif name in ("batch", "slice"):
        check_items(_int(argument(args, kwargs, 0, "linecount" if name == "batch" else "slices")), what)
    elif name == "wordwrap" and isinstance(value, str):
        wrap = argument(args, kwargs, 3, "wrapstring") or "\n"
        width = max(1, _int(argument(args, kwargs, 0, "width", 79)))
        lines = len(value) // width + value.count("\n") + 1
        check_text(len(value) + lines * (len(wrap) if isinstance(wrap, str) else 1), what)
    elif name == "replace":
        check_text(
            _replace_size(
                value,
                argument(args, kwargs, 0, "old"),
                argument(args, kwargs, 1, "new"),
                argument(args, kwargs, 2, "count"),
            ),
            what,
        )
    elif name == "join" and argument(args, kwargs, 1, "attribute") is None:
        value = materialize(value, what) if not isinstance(value, str) else value
        check_text(_joined_size(list(value), argument(args, kwargs, 0, "d", "")), what)
    elif name in _LISTS and hasattr(value, "__len__") and not isinstance(value, Mapping):
        check_items(len(value), what)
    elif name in _EXPANDS:
        check_text(size_of(value) * _EXPANDS[name], what)
    return value


def call_precheck(owner: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call that would build too much; the arguments to call it with (``join`` listed)."""
    what = f"{name}()"
    if isinstance(owner, str | bytes):
        size = len(owner)
        if name in ("center", "ljust", "rjust", "zfill"):
            check_text(_int(argument(args, kwargs, 0, "width")), what)
        elif name == "expandtabs":
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
            check_text(size + tabs * _int(argument(args, kwargs, 0, "tabsize", 8)), what)
        elif name == "replace":
            check_text(
                _replace_size(
                    owner,
                    argument(args, kwargs, 0, "old"),
                    argument(args, kwargs, 1, "new"),
                    argument(args, kwargs, 2, "count"),
                ),
                what,
            )
        elif name == "join" and args:
            items = materialize(args[0], what)
            check_text(_joined_size(items, owner if isinstance(owner, str) else ""), what)
            return (items, *args[1:])
        elif name == "encode":
            check_text(size * 4, what)
        elif name == "translate" and isinstance(argument(args, kwargs, 0, "table"), Mapping):
            table = argument(args, kwargs, 0, "table")
            longest = max((len(v) for v in table.values() if isinstance(v, str | bytes)), default=1)
            check_text(size * max(1, longest), what)
        elif name in ("split", "rsplit", "splitlines"):
            sep = argument(args, kwargs, 0, "sep")
            same = isinstance(sep, str) if isinstance(owner, str) else isinstance(sep, bytes)
            parts = owner.count(sep) + 1 if same and sep else _words(owner)
            check_items(parts, what)
    elif isinstance(owner, int) and name == "to_bytes":
        check_text(_int(argument(args, kwargs, 0, "length", 1)), what)
    return args


def _words(text: str | bytes) -> int:
    """How many pieces splitting on whitespace (or lines) can give, counted up to just past the limit."""
    plain = text.decode("latin-1") if isinstance(text, bytes) else text
    count = 0
    for count, _ in enumerate(re.finditer(r"\S+", plain), 1):
        if count > MAX_ITEMS:
            break
    return count + plain.count("\n")


def shown(value: Any) -> str:
    """An operand as a refusal names it: numbers as they are, text and lists by their size."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = (
            str(value)
            if isinstance(value, float) or value.bit_length() < 64
            else f"a {value.bit_length()}-bit number"
        )
        return text
    if isinstance(value, str):
        return repr(value) if len(value) <= 12 else f"a text of {len(value):,} characters"
    if isinstance(value, list | tuple):
        return f"a list of {len(value):,} items"
    return type(value).__name__


def binop_precheck(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left operator right`` when its result would be too large, before computing it."""
    what = f"{shown(left)} {operator} {shown(right)}"
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
    if operator == "*":
        if numbers:
            check_bits(left.bit_length() + right.bit_length(), what)
            return
        for seq, times in ((left, right), (right, left)):
            if (
                isinstance(seq, str | bytes | list | tuple)
                and isinstance(times, int)
                and not isinstance(times, bool)
            ):
                count = len(seq) * max(times, 0)
                (check_text if isinstance(seq, str | bytes) else check_items)(count, what)
    elif operator == "**" and numbers and right > 0 and abs(left) > 1:
        check_bits(right * left.bit_length() if right < (1 << 40) else 1 << 62, what)
    elif operator == "%" and isinstance(left, str | bytes):
        check_text(printf_size(left, right), what)
    elif operator == "+" and isinstance(left, str) and isinstance(right, str):
        check_text(len(left) + len(right), what)
    elif operator == "+" and isinstance(left, list | tuple) and isinstance(right, list | tuple):
        check_items(len(left) + len(right), what)
