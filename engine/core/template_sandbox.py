"""The guarded sandbox: every operation of a template checked against its render's bounds and marks.

Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` routes every call through
``environment.call``, intercepted operators through ``call_binop`` and subscripts through
``getitem``; filters and tests are called directly, and ``~``, slices and loops call nothing. So:

* every filter and test is wrapped (:func:`guard_filter`), and the code generator rewrites ``~``,
  slices and each ``for`` loop's iterable into calls of three internal filters
  (:data:`EACH`, :data:`JOIN`, :data:`SLICE`), so nothing a template does escapes a check;
* each check ticks the render's deadline and cancel (:mod:`engine.core.template_bounds`), refuses a
  size argument before anything is built (``'a' * 10**9``, ``center(10**9)``, a format width), and
  measures what was built;
* what is made from untrusted text is untrusted (:func:`engine.core.template_values.taint`), and in
  a command (``commands``) a secret may only be inserted whole: a filter, method, operator, slice or
  loop over it is refused, since its result would carry the value onto the command line.

``lipsum`` (a generator of filler text) is removed; Jinja's ``range`` is already limited.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import update_wrapper
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from engine.core.template_bounds import (
    MAX_ITEMS,
    TemplateRefusal,
    check_items,
    check_text,
    settle,
    size_of,
    spec_width,
    spend,
    tick,
)
from engine.core.template_errors import ExplainingSandbox
from engine.core.template_sizes import (
    argument,
    binop_precheck,
    call_precheck,
    filter_precheck,
    materialize,
    shown,
)
from engine.core.template_values import Secret, SecretText, Untrusted, is_untrusted, secrets_in, taint

EACH, JOIN, SLICE = "cairn_each", "cairn_join", "cairn_slice"
"""Internal filters the code generator puts around a loop's iterable, a ``~`` and a slice."""

SECRET_PASSES = frozenset({"default", "d", "quote", "unquoted"})
"""Filters that give a secret back whole (or as its reference): allowed on one in a command."""
_PATTERNS = frozenset({"regex_search", "regex_findall", "regex_replace", "match", "search"})


class SecretRefused(TemplateRefusal):
    """A command would carry a secret's value (not its reference)."""

    def __init__(self, secret: Secret, what: str) -> None:
        name = secret.input_name
        super().__init__(
            f"{what} is given the secret input {name!r}: in a command a secret is inserted whole, "
            f"{{{{ inputs.{name} }}}} becomes {secret.reference}, a variable of the command's own "
            f"environment, so the value is never on a command line; join text to it with ~ "
            f"('Bearer ' ~ inputs.{name}), or write {{{{ inputs.{name} }}}} inside the command's own quotes"
        )


def refuse_secrets(values: Iterable[Any], what: str) -> None:
    """Refuse ``what`` when it is given a secret (in a command)."""
    found = secrets_in(values)
    if found:
        raise SecretRefused(found[0], what)


def _refuse_untrusted_pattern(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if name in _PATTERNS and isinstance(argument(args, kwargs, 0, "pattern"), Untrusted):
        raise TemplateRefusal(
            f"{name}: the regular expression comes from an alert (untrusted): an outsider's pattern "
            "could run for ever; match the value against a pattern the runbook writes"
        )


def _invoke(
    func: Callable[..., Any],
    pass_arg: _PassArg | None,
    context: Context,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if pass_arg is _PassArg.context:
        return func(context, *args, **kwargs)
    if pass_arg is _PassArg.eval_context:
        return func(context.eval_ctx, *args, **kwargs)
    if pass_arg is _PassArg.environment:
        return func(context.environment, *args, **kwargs)
    return func(*args, **kwargs)


def _items_of(iterator: Iterator[Any], tainted: bool, what: str) -> Iterator[Any]:
    """A filter's lazy result, each item ticking and counted (and marked when made from untrusted text)."""
    for count, item in enumerate(iterator, 1):
        tick()
        if count > MAX_ITEMS:
            check_items(count, what)
        yield taint(item) if tainted and isinstance(item, str | list | tuple | dict) else item


def _settled(result: Any, sources: tuple[Any, ...], what: str, tainted: bool) -> Any:
    if isinstance(result, Iterator) and not isinstance(result, str | bytes):
        return _items_of(result, tainted, what)
    settle(result, sources, what)
    return taint(result) if tainted else result


def guard_filter(name: str, func: Callable[..., Any], *, is_test: bool = False) -> Callable[..., Any]:
    """``func`` (a filter or test) checked: deadline, sizes, untrusted patterns, secrets in a command."""
    pass_arg = _PassArg.from_obj(func)
    what = f"the {'test' if is_test else 'filter'} {name}"

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        sources = (value, *args, *kwargs.values())
        _refuse_untrusted_pattern(name, args, kwargs)
        if is_test:
            return _invoke(func, pass_arg, context, (value, *args), kwargs)
        if getattr(context.environment, "commands", False) and name not in SECRET_PASSES:
            refuse_secrets(sources, what)
        value = filter_precheck(name, value, args, kwargs)  # join lists a lazy value: look at its items
        result = _invoke(func, pass_arg, context, (value, *args), kwargs)
        return _settled(result, (value, *sources), what, any(is_untrusted(s) for s in (value, *sources)))

    guarded.__name__ = guarded.__qualname__ = f"guarded_{name}"
    return guarded


# --------------------------------------------------------------------------- the internal filters


class _Each:
    """A loop's iterable: each item ticks the deadline (marked when iterating untrusted text)."""

    __slots__ = ("_items",)

    def __init__(self, items: Any) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)  # TypeError when unsized: LoopContext then counts by iterating

    def __iter__(self) -> Iterator[Any]:
        mark = isinstance(self._items, Untrusted)
        for item in self._items:
            tick()
            yield Untrusted(item) if mark else item


@pass_context
def _each(context: Context, items: Any) -> _Each:
    tick()
    if getattr(context.environment, "commands", False):
        refuse_secrets([items] if isinstance(items, Secret | SecretText) else [], "a loop")
    return _Each(items)


@pass_context
def _join(context: Context, parts: list[Any]) -> Any:
    """``a ~ b``: text joined, bounded; with a secret in a command, one word that refers to it."""
    tick()
    if getattr(context.environment, "commands", False) and secrets_in(
        p for p in parts if isinstance(p, Secret | SecretText)
    ):
        return _secret_join(parts)
    texts = []
    commands = getattr(context.environment, "commands", False)
    for part in parts:
        if not isinstance(part, str):
            if commands:
                refuse_secrets([part], "~")  # the text of a list or dict would hold the value
            check_text(size_of(part), "text joined with ~")
        texts.append(part if isinstance(part, str) else str(part))
    total = sum(len(t) for t in texts)
    check_text(total, "text joined with ~")
    spend(total)
    joined = "".join(texts)
    return Untrusted(joined) if any(is_untrusted(p) for p in parts) else joined


def _secret_join(parts: list[Any]) -> SecretText:
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, SecretText):
            pieces.extend(part.parts)
        elif isinstance(part, str):
            pieces.append(part)
        else:
            check_text(size_of(part), "text joined with ~")
            pieces.append(str(part))
    check_text(sum(len(p) for p in pieces), "text joined with ~")
    return SecretText(tuple(pieces))


@pass_context
def _slice(context: Context, value: Any, start: Any, stop: Any, step: Any) -> Any:
    tick()
    if getattr(context.environment, "commands", False):
        refuse_secrets([value] if isinstance(value, Secret | SecretText) else [], "a slice")
    result = value[slice(start, stop, step)]
    return _settled(result, (value,), "a slice", is_untrusted(value))


class _Guards(NodeTransformer):
    """Rewrites a template's tree so loops, ``~`` and slices call the internal filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, EACH, [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(parts, JOIN, [], [], None, None, lineno=node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        bounds = [part or nodes.Const(None) for part in (node.arg.start, node.arg.stop, node.arg.step)]
        return nodes.Filter(node.node, SLICE, bounds, [], None, None, lineno=node.lineno)


class GuardedCodeGenerator(CodeGenerator):
    """Jinja's code generator, on the tree :class:`_Guards` rewrote."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Guards().visit(node)
        node.set_environment(self.environment)
        super().visit_Template(node, frame)


# --------------------------------------------------------------------------- the sandbox


class _BoundedFields:
    """A str.format formatter whose fields are bounded: their width and all they add up to."""

    _built = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        tick()
        check_text(max(spec_width(format_spec), size_of(value)), "a formatted field")
        text = super().format_field(value, format_spec)  # type: ignore[misc]
        self._built += len(text)
        check_text(self._built, "the formatted text")
        return text


class _BoundedFormatter(_BoundedFields, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFields, SandboxedEscapeFormatter):
    pass


def _owner(obj: Any) -> Any:
    """The object a bound method belongs to (``'x'`` for ``'x'.center``); None for functions."""
    owner = getattr(obj, "__self__", None)
    if owner is None and hasattr(obj, "__wrapped__"):
        owner = getattr(obj.__wrapped__, "__self__", None)
    return None if isinstance(owner, types.ModuleType) else owner


class BoundedSandbox(ExplainingSandbox):
    """The explaining sandbox with every operation bounded and marked (see the module docstring)."""

    code_generator_class = GuardedCodeGenerator

    def __init__(self, *, commands: bool, **options: Any) -> None:
        super().__init__(**options)
        self.commands = commands
        """Renders commands: a secret only by reference, untrusted words checked."""
        self.globals.pop("lipsum", None)

    def seal(self) -> None:
        """Wrap every filter and test (call once, after adding Cairn's own)."""
        self.filters = {name: guard_filter(name, f) for name, f in self.filters.items()}
        tests: dict[str, Any] = {**self.tests}  # typeshed gives jinja's tests a bare "function" type
        self.tests = {name: guard_filter(name, f, is_test=True) for name, f in tests.items()}
        self.filters.update({EACH: _each, JOIN: _join, SLICE: _slice})

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        owner = _owner(__obj)
        sources = (owner, *args, *kwargs.values())
        if __self.commands and not isinstance(__obj, Macro):
            refuse_secrets(sources, f"{getattr(__obj, '__name__', 'a call')}()")
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_Each(args[0]), *args[1:])
        args = call_precheck(owner, getattr(__obj, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return _settled(
            result,
            sources,
            f"{getattr(__obj, '__name__', 'a call')}()",
            any(is_untrusted(s) for s in sources),
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        if self.commands:
            refuse_secrets((left, right), f"the operator {operator}")
        binop_precheck(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return _settled(
            result,
            (left, right),
            f"{shown(left)} {operator} {shown(right)}",
            is_untrusted(left) or is_untrusted(right),
        )

    def getitem(self, obj: Any, argument: Any) -> Any:
        if self.commands and isinstance(obj, Secret | SecretText):
            refuse_secrets([obj], "a subscript")
        result = super().getitem(obj, argument)
        return taint(result) if isinstance(obj, Untrusted) and isinstance(result, str) else result

    def concat(self, pieces: Iterable[str]) -> str:
        """Joins what a block, a macro or a filter block rendered: bounded, counted."""
        parts = pieces if isinstance(pieces, list) else materialize(pieces, "rendered text")
        total = sum(len(p) for p in parts)
        check_text(total, "the text a block or macro renders")
        spend(total)
        return "".join(parts)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through a bounded formatter (Jinja's own, sandboxed)."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        kind = type(owner)
        formatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _BoundedFormatter(self)
        )
        mapping = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if mapping:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument, a mapping")
                kwargs, args = args[0], ()
            return kind(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)
