"""What ``cairn validate`` learns from a template without rendering it.

:func:`check_template` parses a template (or an expression) once and reports: syntax errors,
unknown filters and tests, the variables, ``steps.<id>`` and ``inputs.<name>`` it reads; what is
certain to go past a render's bounds (:mod:`engine.core.template_bounds`) when it runs — a
constant ``'a' * 10**9``, ``center(10**9)``, a format width, loops over constant ranges that run
billions of times — as errors, and what may (loops nested three deep, a macro that calls itself)
as warnings; and which variables' values reach ``| unquoted`` (through ``{% set %}``, loops and
macro arguments), so validate can refuse an outsider's text there.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from engine.core import expr
from engine.core.template_bounds import MAX_RENDER_SECONDS, TemplateRefusal, check_text, spec_width
from engine.core.template_sizes import binop_precheck, call_precheck, filter_precheck

CERTAIN_ITERATIONS = 10**8
"""Loops over constant ranges that run this many times cannot end within a render's time."""
NESTED_WARNING = 3
"""Loops nested this deep get a warning: their work multiplies."""
SHORT_LIST = 16
"""A loop over a list written out with at most this many items does not add to the nesting."""


@dataclass(frozen=True, slots=True)
class TemplateCheck:
    """What :func:`check_template` learned about a template without rendering it."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """What may go past a render's bounds (it depends on the data)."""
    names: frozenset[str] = frozenset()
    """Top-level variables it reads."""
    step_refs: frozenset[str] = frozenset()
    """Step ids it reads through ``steps.<id>`` / ``steps['<id>']``."""
    input_refs: frozenset[str] = frozenset()
    unquoted_reads: frozenset[str] = frozenset()
    """Top-level variables whose values reach ``| unquoted`` (directly or through variables)."""


_NOTHING = TemplateCheck()
_DELIMITERS = ("{{", "{%", "{#")
_LOCALS_OF: dict[type, tuple[str, ...]] = {
    nodes.For: ("loop",),
    nodes.Macro: ("caller", "varargs", "kwargs"),
    nodes.CallBlock: ("caller",),
}
_UNKNOWN = object()
_COMPUTED = (nodes.BinExpr, nodes.Filter, nodes.Call)
_LOOKUPS = (nodes.Getattr, nodes.Getitem)
_OUTPUT = re.compile(r"\{\{(?![-+])([^{}'\"#]*?)(?<![-+])\}\}")
"""A ``{{ … }}`` whose expression holds no brace, quote or ``#`` (so its end is the first ``}}``) and no
whitespace control: the parts of templates :func:`_output_only` splits."""
_BINOPS: dict[type[nodes.BinExpr], str] = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Pow: "**",
    nodes.Mod: "%",
}


def check_template(source: str, *, expression: bool = False) -> TemplateCheck:
    """Parse a template (or an expression) and report what it uses and what is wrong (cached by :func:`expr.check`)."""
    if not expression and not any(d in source for d in _DELIMITERS):
        return _NOTHING  # plain text: nothing to parse (most instructions, many commands)
    if not expression and (parts := _output_only(source)) is not None:
        combined = _combined([expr.check(part, expression=True) for part in parts])
        if combined is not None:
            return combined
    text = "{{ " + expr.unwrap(source) + " }}" if expression else source
    try:
        return _check(text, expression)
    except RecursionError:
        return TemplateCheck(errors=("is nested too deeply to compile; simplify it",))


def _output_only(source: str) -> list[str] | None:
    """The expressions of a template that is only text and simple ``{{ … }}`` (no statement, comment or
    whitespace control); None for any other template."""
    pieces = _OUTPUT.split(source)
    if any(d in text for text in pieces[0::2] for d in _DELIMITERS):
        return None
    return pieces[1::2]


def _combined(parts: Sequence[TemplateCheck]) -> TemplateCheck | None:
    """What a template of text and these expressions is, from their checks (cached: the same few
    expressions recur across runbooks, so most are parsed once); None when any has an error or
    a warning, so that the whole template is parsed and they are reported as for any template."""
    if any(part.errors or part.warnings for part in parts):
        return None
    return TemplateCheck(
        names=frozenset().union(*(part.names for part in parts)),
        step_refs=frozenset().union(*(part.step_refs for part in parts)),
        input_refs=frozenset().union(*(part.input_refs for part in parts)),
        unquoted_reads=frozenset().union(*(part.unquoted_reads for part in parts)),
    )


def _children(node: nodes.Node) -> list[nodes.Node]:
    """``node.iter_child_nodes()`` as a list, in the same order, without its generic field filtering."""
    found: list[nodes.Node] = []
    for name in node.fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            found.extend(item for item in value if isinstance(item, nodes.Node))
        elif isinstance(value, nodes.Node):
            found.append(value)
    return found


def _check(text: str, expression: bool) -> TemplateCheck:
    env = expr.text_environment()
    try:
        ast = env.parse(text)
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
    stored: set[str] = set(env.globals)
    refs: dict[str, set[str]] = {"steps": set(), "inputs": set()}
    stack: list[nodes.Node] = [ast]
    computed: list[nodes.Node] = []  # what _Bounds looks at: operators, filters, calls
    kinds: set[type] = set()
    while stack:
        node = stack.pop()
        stack.extend(_children(node))
        kinds.add(type(node))
        if isinstance(node, _COMPUTED):
            computed.append(node)
        if isinstance(node, nodes.Name):
            (stored if node.ctx in ("store", "param") else loaded).add(node.name)
        elif isinstance(node, nodes.Filter) and node.name not in env.filters:
            errors.append(f"uses unknown filter {node.name!r}{_suggest(node.name, env.filters)}")
        elif isinstance(node, nodes.Test) and node.name not in env.tests:
            errors.append(f"uses unknown test {node.name!r}{_suggest(node.name, env.tests)}")
        elif isinstance(node, _LOOKUPS):
            inner = node.node
            if isinstance(inner, nodes.Name) and inner.name in refs:
                key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
                if isinstance(key, str):
                    refs[inner.name].add(key)
        else:
            stored.update(_LOCALS_OF.get(type(node), ()))
            if isinstance(node, nodes.Macro):  # {% macro h(x) %} defines h
                stored.add(node.name)
    bounds = _Bounds()
    if not errors:
        errors.extend(bounds.errors(ast, computed, loops=nodes.For in kinds))
    return TemplateCheck(
        errors=tuple(sorted(set(errors), key=errors.index)),
        warnings=tuple(_warnings(ast, kinds, bounds.deepest)),
        names=frozenset(loaded - stored),
        step_refs=frozenset(refs["steps"]),
        input_refs=frozenset(refs["inputs"]),
        unquoted_reads=frozenset(_unquoted_reads(ast) if "unquoted" in text else ()),
    )


def _suggest(name: str, known: Iterable[str]) -> str:
    close = get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- bounds, statically


class _Bounds:
    """Constant parts of a template evaluated with the sandbox's own pre-checks: what is certain to fail."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.deepest = 0
        """How deep loops nest (a loop over a short list written out does not count)."""
        self.known: dict[int, Any] = {}
        """Values worked out so far, by node: each node is evaluated once."""

    def errors(self, ast: nodes.Node, computed: list[nodes.Node], *, loops: bool) -> list[str]:
        for node in computed:
            self.value(node)
        if loops:
            self.deepest = self.loops(ast, 1, [], 0)
        return self.found

    def refuse(self, exc: TemplateRefusal) -> object:
        self.found.append(f"builds too much when it runs: {exc}")
        return _UNKNOWN

    def value(self, node: nodes.Node) -> Any:
        """The node's value when it is constant and within bounds; else _UNKNOWN (and an error if it is out)."""
        if id(node) not in self.known:
            self.known[id(node)] = self.evaluate(node)
        return self.known[id(node)]

    def evaluate(self, node: nodes.Node) -> Any:
        try:
            if isinstance(node, nodes.Const):
                return node.value
            if isinstance(node, nodes.List | nodes.Tuple):
                items = [self.value(item) for item in node.items]
                return (
                    _UNKNOWN
                    if _UNKNOWN in items
                    else (items if isinstance(node, nodes.List) else tuple(items))
                )
            if isinstance(node, nodes.Neg):
                inner = self.value(node.node)
                return -inner if isinstance(inner, int | float) else _UNKNOWN
            if isinstance(node, nodes.BinExpr) and type(node) in _BINOPS:
                return self.binop(_BINOPS[type(node)], node)
            if isinstance(node, nodes.Filter) and node.node is not None:
                return self.filter(node)
            if isinstance(node, nodes.Call):
                self.call(node)
        except TemplateRefusal as exc:
            return self.refuse(exc)
        except Exception:
            return _UNKNOWN
        return _UNKNOWN

    def binop(self, op: str, node: nodes.BinExpr) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        if _UNKNOWN in (left, right):
            return _UNKNOWN
        binop_precheck(op, left, right)
        return expr.text_environment().binop_table[op](left, right)

    def arguments(self, node: nodes.Filter | nodes.Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Constant arguments by value, the others as None."""
        args = tuple(None if (v := self.value(a)) is _UNKNOWN else v for a in node.args)
        kwargs = {}
        for keyword in node.kwargs:  # Keyword nodes (key, value), whatever the annotations say
            value = self.value(getattr(keyword, "value", None) or nodes.Const(None))
            kwargs[str(getattr(keyword, "key", ""))] = None if value is _UNKNOWN else value
        return args, kwargs

    def filter(self, node: nodes.Filter) -> Any:
        assert node.node is not None
        args, kwargs = self.arguments(node)
        value = self.value(node.node)
        filter_precheck(node.name, "" if value is _UNKNOWN else value, args, kwargs)
        return _UNKNOWN

    def call(self, node: nodes.Call) -> None:
        args, kwargs = self.arguments(node)
        if isinstance(node.node, nodes.Getattr):
            owner = self.value(node.node.node)
            if owner is not _UNKNOWN:
                call_precheck(owner, node.node.attr, args, kwargs)
                if node.node.attr in ("format", "format_map") and isinstance(owner, str):
                    for _, _, spec, _ in string.Formatter().parse(owner):
                        check_text(spec_width(spec or ""), "a formatted field")

    def loops(self, node: nodes.Node, runs: int, path: list[str], depth: int) -> int:
        """Loops inside each other: how many times the innermost body runs (over constant ranges),
        and how deep they nest; the deepest nesting under ``node``."""
        deepest = depth
        for child in _children(node):
            if not isinstance(child, nodes.For):
                deepest = max(deepest, self.loops(child, runs, path, depth))
                continue
            count, shown = self.iterations(child.iter)
            total = runs * count
            if total > CERTAIN_ITERATIONS:
                nested = " inside ".join(reversed([*path, shown]))
                self.found.append(
                    f"has loops that would run {total:,} times ({nested}): more than a template can in "
                    f"{MAX_RENDER_SECONDS:g} s; loop over what the step needs, not a large range"
                )
                continue
            iterable = child.iter
            written = isinstance(iterable, nodes.List | nodes.Tuple) and len(iterable.items) <= SHORT_LIST
            deepest = max(deepest, self.loops(child, total, [*path, shown], depth + (0 if written else 1)))
        return deepest

    def iterations(self, node: nodes.Node) -> tuple[int, str]:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
            args = [self.value(a) for a in node.args]
            if args and all(isinstance(a, int) and not isinstance(a, bool) for a in args) and not node.kwargs:
                try:
                    count = len(range(*args))
                except (ValueError, OverflowError):
                    return 1, "range(…)"
                return count, f"range({', '.join(map(str, args))})"
        value = self.value(node)
        if isinstance(value, list | tuple | str):
            return len(value), f"a list of {len(value)}"
        return 1, "a loop"


def _warnings(ast: nodes.Node, kinds: set[type], deepest: int) -> list[str]:
    warnings: list[str] = []
    if deepest >= NESTED_WARNING:
        warnings.append(
            f"has loops nested {deepest} deep: their work multiplies, and a template has "
            f"{MAX_RENDER_SECONDS:g} s to render; make sure the data they go over stays small"
        )
    for macro in ast.find_all(nodes.Macro) if nodes.Macro in kinds else ():
        calls = (c for c in macro.find_all(nodes.Call) if isinstance(c.node, nodes.Name))
        if any(c.node.name == macro.name for c in calls):  # type: ignore[attr-defined]
            warnings.append(
                f"macro {macro.name!r} calls itself: make sure the recursion ends soon, a template has "
                f"{MAX_RENDER_SECONDS:g} s to render"
            )
    return warnings


# --------------------------------------------------------------------------- what reaches | unquoted


def _unquoted_reads(ast: nodes.Node) -> set[str]:
    """Top-level names whose values reach ``| unquoted``: directly, or through ``{% set %}``, loop
    variables and macro arguments (a coarse flow: any assignment anywhere counts)."""
    flows: dict[str, set[str]] = {}

    def store(target: nodes.Node, source: Iterable[nodes.Node]) -> None:
        read = {n.name for s in source for n in _names(s)}
        if isinstance(target, nodes.NSRef):  # {% set ns.x = … %}: ns holds it
            flows.setdefault(target.name, set()).update(read)
        for name in target.find_all(nodes.Name) if not isinstance(target, nodes.Name) else [target]:
            flows.setdefault(name.name, set()).update(read)

    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Call, nodes.With)):
        if isinstance(node, nodes.Assign):
            store(node.target, [node.node])
        elif isinstance(node, nodes.AssignBlock):
            store(node.target, node.body)
        elif isinstance(node, nodes.For):
            store(node.target, [node.iter])
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values, strict=False):
                store(target, [value])
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in macros:
            for param in macros[node.node.name].args:
                store(param, [*node.args, *(k.value for k in node.kwargs)])
    sinks: list[nodes.Node] = []
    for node in ast.find_all((nodes.Filter, nodes.FilterBlock)):
        if isinstance(node, nodes.FilterBlock):
            if node.filter.name == "unquoted":
                sinks.extend(node.body)
        elif isinstance(node, nodes.Filter) and node.node is not None and _is_unquoted(node):
            sinks.append(node.node)
    return {root for sink in sinks for n in _names(sink) for root in _roots(n.name, flows, set())}


def _is_unquoted(node: nodes.Filter) -> bool:
    if node.name == "unquoted":
        return True
    first = node.args[0] if node.args else None
    return node.name == "map" and isinstance(first, nodes.Const) and first.value == "unquoted"


def _names(node: nodes.Node) -> list[nodes.Name]:
    found = [node] if isinstance(node, nodes.Name) else []
    return [*found, *(n for n in node.find_all(nodes.Name) if n.ctx == "load")]


def _roots(name: str, flows: dict[str, set[str]], seen: set[str]) -> set[str]:
    if name not in flows:
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    return {root for source in flows[name] for root in _roots(source, flows, seen)}
