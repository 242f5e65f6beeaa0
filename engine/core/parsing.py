"""Turn a step's stdout into the structured ``out`` that expressions read."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from engine.core.model import ParseKind, ParseSpec


class ParseError(ValueError):
    """stdout does not have the shape the step's ``parse`` promised."""


def parse_output(spec: ParseSpec, stdout: str) -> Any:
    """``out`` for ``stdout`` per ``spec``; :class:`ParseError` with a readable reason."""
    match spec.kind:
        case ParseKind.TEXT:
            return stdout.rstrip("\n")
        case ParseKind.JSON:
            if not stdout.strip():
                raise ParseError("expected JSON, but the command printed nothing")
            try:
                return json.loads(stdout)
            except json.JSONDecodeError as exc:
                raise ParseError(f"expected JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
        case ParseKind.LINES:
            return [line for line in stdout.splitlines() if line.strip()]
        case ParseKind.NUMBER:
            return _number(stdout)
        case ParseKind.TABLE:
            return _table(spec, stdout)
        case ParseKind.REGEX:
            return _regex(spec.pattern, stdout)


_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(stdout: str) -> int | float:
    text = stdout.strip()
    if _INTEGER.fullmatch(text) and len(text) <= 100:
        return int(text)
    if _DECIMAL.fullmatch(text) and math.isfinite(value := float(text)):
        return value
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise ParseError(f"expected one number, got {shown!r}")


def _split(line: str, separator: str | None, parts: int) -> list[str]:
    if separator is None:
        cells = line.split(None, parts - 1) if parts > 0 else line.split()
    else:
        cells = line.split(separator, parts - 1) if parts > 0 else line.split(separator)
    return [c.strip() for c in cells]


def _table(spec: ParseSpec, stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    columns = list(spec.columns)
    if not columns:
        if not lines:
            return []
        header = _split(lines.pop(0), spec.separator, 0)
        columns = []
        for i, cell in enumerate(header):
            base = name = re.sub(r"\W+", "_", cell.strip()).strip("_").lower() or f"col{i}"
            n = 2
            while name in columns:  # two headers that normalise alike keep both columns
                name, n = f"{base}_{n}", n + 1
            columns.append(name)
    rows = []
    for line in lines:
        cells = _split(line, spec.separator, len(columns))
        cells += [""] * (len(columns) - len(cells))
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def _regex(pattern: str, stdout: str) -> list[Any]:
    compiled = re.compile(pattern, re.MULTILINE)
    matches: list[Any] = []
    for found in compiled.finditer(stdout):
        if compiled.groupindex:
            matches.append(found.groupdict())
        elif compiled.groups:
            matches.append(found.group(1))
        else:
            matches.append(found.group(0))
    return matches
