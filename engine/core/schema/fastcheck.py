"""A yes/no fast path for the runbook schema; jsonschema still explains every "no".

jsonschema builds an error object tree as it validates and costs ~4 ms for a
typical runbook; most runbooks are valid, and validating 1,000 of them is a
goal. This module compiles the schema once into plain closures that only
answer *valid or not*. When the answer is "not", :func:`engine.core.schema.validate`
runs jsonschema for the located, explained errors, so messages never come from
here. Only the keywords the runbook schema uses are supported; compiling a
schema with any other keyword fails loudly, so the fast path can never
silently ignore a constraint. Tests check that it agrees with jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
)


def _is_type(name: str, value: Any) -> bool:
    match name:
        case "string":
            return isinstance(value, str)
        case "integer":
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
        case "null":
            return value is None
    raise ValueError(f"unknown JSON Schema type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, and containers compare element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, target: str) -> Check:
        if target not in self.refs:
            if not target.startswith("#/"):
                raise ValueError(f"only local $refs are supported, not {target!r}")
            node: Any = self.root
            for part in target[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            self.refs[target] = lambda v: False  # placeholder while compiling (recursive refs)
            compiled = self.compile(node)
            self.refs[target] = compiled
        return lambda v: self.refs[target](v)  # noqa: PLW0108 - late binding: a recursive $ref is compiled after this closure

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        checks: list[Check] = []
        for keyword, rule in schema.items():
            if keyword in _ANNOTATIONS:
                continue
            checks.append(self._keyword(keyword, rule, schema))
        return lambda v: all(check(v) for check in checks)

    def _keyword(self, keyword: str, rule: Any, schema: dict[str, Any]) -> Check:
        match keyword:
            case "type":
                names = [rule] if isinstance(rule, str) else list(rule)
                return lambda v: any(_is_type(n, v) for n in names)
            case "enum":
                return lambda v: any(_equal(v, option) for option in rule)
            case "const":
                return lambda v: _equal(v, rule)
            case "pattern":
                rx = re.compile(rule)
                return lambda v: not isinstance(v, str) or rx.search(v) is not None
            case "minLength":
                return lambda v: not isinstance(v, str) or len(v) >= rule
            case "maxLength":
                return lambda v: not isinstance(v, str) or len(v) <= rule
            case "minimum":
                return lambda v: not _number(v) or v >= rule
            case "maximum":
                return lambda v: not _number(v) or v <= rule
            case "exclusiveMinimum":
                return lambda v: not _number(v) or v > rule
            case "minItems":
                return lambda v: not isinstance(v, list) or len(v) >= rule
            case "uniqueItems":
                if not rule:
                    return lambda v: True
                return lambda v: (
                    not isinstance(v, list)
                    or all(not _equal(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v)))
                )
            case "items":
                item = self.compile(rule)
                return lambda v: not isinstance(v, list) or all(item(x) for x in v)
            case "required":
                return lambda v: not isinstance(v, dict) or all(k in v for k in rule)
            case "minProperties":
                return lambda v: not isinstance(v, dict) or len(v) >= rule
            case "maxProperties":
                return lambda v: not isinstance(v, dict) or len(v) <= rule
            case "properties":
                props = {name: self.compile(sub) for name, sub in rule.items()}
                return lambda v: not isinstance(v, dict) or all(props[k](v[k]) for k in props if k in v)
            case "additionalProperties":
                known = set(schema.get("properties", {}))
                extra = self.compile(rule)
                return lambda v: not isinstance(v, dict) or all(extra(v[k]) for k in v if k not in known)
            case "propertyNames":
                name = self.compile(rule)
                return lambda v: not isinstance(v, dict) or all(name(k) for k in v)
            case "$ref":
                return self.ref(rule)
            case "anyOf":
                branches = [self.compile(b) for b in rule]
                return lambda v: any(b(v) for b in branches)
            case "oneOf":
                branches = [self.compile(b) for b in rule]
                return lambda v: sum(1 for b in branches if b(v)) == 1
            case "not":
                negated = self.compile(rule)
                return lambda v: not negated(v)
        raise ValueError(f"the fast schema check does not support {keyword!r}; add it (and a test) first")


def compile_schema(schema: dict[str, Any]) -> Check:
    """A predicate answering whether an instance is valid against ``schema``."""
    return _Compiler(schema).compile(schema)
