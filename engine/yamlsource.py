"""Hostile-input-safe YAML reading that remembers where every value came from.

Runbooks are untrusted text (an alert can name one, a colleague can send one).
This module turns bytes into plain Python data plus a map from JSON pointer to
``(line, column)``, and turns every way YAML can go wrong into a ``Problem``:
size limit, binary data, bad UTF-8, syntax errors, several documents, duplicate
keys, non-string keys, tags, recursive aliases and alias bombs
("billion laughs") — detected on the node graph *before* anything is expanded.

Scalars follow YAML 1.2's core schema, as editors do: ``yes``/``no``/``on``/``off``
are strings, and dates stay strings.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from engine.errors import Problem

MAX_BYTES = 1024 * 1024
"""Largest runbook file read (1 MiB); real runbooks are a few KiB."""
MAX_NODES = 50_000
"""Largest document after alias expansion; an alias bomb is far beyond it."""
MAX_DEPTH = 64
"""Deepest nesting accepted; runbooks nest about six levels."""

_STANDARD_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _Resolver(Resolver):
    """YAML 1.2 core-schema scalars, as editors read them.

    PyYAML follows YAML 1.1, where ``no`` is false, ``010`` is 8, ``1:30`` is 90 and
    ``2021-11-02`` is a date; in a runbook each of those is a surprise.
    """


_REPLACED = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}
_Resolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _int_12(loader: Any, node: Node) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # "010" is ten, as in YAML 1.2 (PyYAML would read octal)


try:  # libyaml is ~10x faster; the pure-Python parser is the fallback.
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)


class _Loader(_Parser, SafeConstructor, _Resolver):
    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        SafeConstructor.__init__(self)
        _Resolver.__init__(self)


_Loader.add_constructor("tag:yaml.org,2002:int", _int_12)


def yaml_repr(value: Any) -> str:
    """A value as it looks in YAML (true, null, [a, b]), shortened for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(yaml_repr(v) for v in value[:5]) + (", …]" if len(value) > 5 else "]")
    elif isinstance(value, dict):
        items = ", ".join(f"{k}: {yaml_repr(v)}" for k, v in list(value.items())[:5])
        text = "{" + items + (", …}" if len(value) > 5 else "}")
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def escape_pointer_part(part: str | int) -> str:
    """One JSON-pointer reference token (RFC 6901)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer(path: tuple[str | int, ...]) -> str:
    """``("detect", 0, "run")`` -> ``/detect/0/run``."""
    return "".join("/" + escape_pointer_part(p) for p in path)


@dataclass
class Document:
    """Plain data read from a YAML file and where each value stands in it."""

    file: str
    text: str
    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """JSON pointer of a value -> (line, column) where it starts, 1-based."""
    key_positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """JSON pointer of a value -> (line, column) of its key."""
    broken: set[str] = field(default_factory=set)
    """Pointers whose value could not be read (already reported; later checks skip them)."""

    def where(self, ptr: str, *, key: bool = False) -> tuple[int, int]:
        """Best known position for ``ptr``: itself, else its nearest ancestor."""
        probe = ptr
        while True:
            if key and probe in self.key_positions:
                return self.key_positions[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return (1, 1)
            probe = probe.rsplit("/", 1)[0]

    def problem(self, ptr: str, message: str, *, key: bool = False) -> Problem:
        """A Problem located at ``ptr``."""
        line, col = self.where(ptr, key=key)
        return Problem(self.file, line, col, ptr, message)

    def add(self, ptr: str, message: str, *, key: bool = False) -> None:
        """Record a problem at ``ptr``."""
        self.problems.append(self.problem(ptr, message, key=key))


def read_yaml_file(path: Path, *, display: str | None = None) -> Document:
    """Read and parse ``path``; never raises for bad content, only records problems."""
    name = display or str(path)
    doc = Document(file=name, text="")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            doc.add("", "not a regular file (a folder, FIFO or device); name a runbook file")
            return doc
        size = info.st_size
        if size > MAX_BYTES:
            doc.add("", f"file is {size:,} bytes; runbooks are limited to {MAX_BYTES:,} bytes")
            return doc
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        doc.add("", f"cannot read file: {exc.strerror or exc}")
        return doc
    return parse_yaml_bytes(raw, name)


def parse_yaml_bytes(raw: bytes, name: str) -> Document:
    """Parse bytes that claim to be one YAML document."""
    doc = Document(file=name, text="")
    if len(raw) > MAX_BYTES:
        doc.add("", f"file is larger than {MAX_BYTES:,} bytes, the limit for runbooks")
        return doc
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        doc.problems.append(
            Problem(name, line, 1, "", "binary data (a NUL byte): a runbook is UTF-8 YAML text")
        )
        return doc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        doc.problems.append(
            Problem(name, line, 1, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8")
        )
        return doc
    doc.text = text.removeprefix("\ufeff")
    if not doc.text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in doc.text.splitlines()
    ):
        doc.add("", "file is empty: a runbook needs at least id, title, severity, summary and detect")
        return doc
    _compose(doc)
    return doc


def _mark(node: Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _error_position(doc: Document, mark: Any) -> tuple[int, int]:
    """1-based position of a parser error, kept inside the file (libyaml may point past its end)."""
    if mark is None:
        return (1, 1)
    lines = doc.text.split("\n")
    line = min(mark.line + 1, len(lines))
    column = mark.column + 1 if mark.line + 1 <= len(lines) else len(lines[-1]) + 1
    return (line, column)


def _compose(doc: Document) -> None:
    loader = _Loader(doc.text)
    try:
        root = loader.get_single_node()
    except yaml.composer.ComposerError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _error_position(doc, mark)
        if "expected a single document" in str(exc):
            message = "several YAML documents (---) in one file: put one runbook per file"
        elif "undefined alias" in str(exc) and mark is not None:
            alias = re.match(r"\*?([^\s,\]}]*)", doc.text[mark.index :])
            name = alias.group(1) if alias else ""
            message = (
                f"undefined YAML alias *{name}: there is no anchor &{name} before it; define the anchor first"
            )
        else:
            message = f"YAML: {exc.problem or exc}"
        doc.problems.append(Problem(doc.file, line, col, "", message))
        return
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _error_position(doc, mark)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        if "mapping values are not allowed" in what:
            what += " (a value that contains ': ' must be put in quotes)"
        doc.problems.append(Problem(doc.file, line, col, "", f"invalid YAML: {what}"))
        return
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        doc.add("", f"invalid YAML: {exc}")
        return
    finally:
        loader.dispose()
    if root is None:
        doc.add("", "file is empty: a runbook needs at least id, title, severity, summary and detect")
        return
    size = _expanded_size(root, doc)
    if size is None:
        return
    if size > MAX_NODES:
        doc.add(
            "",
            f"document expands to more than {MAX_NODES:,} values through YAML aliases "
            "(an alias bomb?); write the values out instead of aliasing them",
        )
        return
    doc.data = _build(root, (), doc, loader, 0)


def _expanded_size(root: Node, doc: Document) -> int | None:
    """Values the document would have once aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, depth: int) -> int | None:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            line, col = _mark(node)
            doc.problems.append(Problem(doc.file, line, col, "", f"nested more than {MAX_DEPTH} levels deep"))
            return None
        if key in active:
            line, col = _mark(node)
            doc.problems.append(
                Problem(doc.file, line, col, "", "recursive YAML alias: a value contains itself")
            )
            return None
        active.add(key)
        total = 1
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            sub = size(child, depth + 1)
            if sub is None:
                return None
            total += sub
            if total > MAX_NODES:
                break  # no need to count further; the caller reports it
        active.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def _build(node: Node, path: tuple[str | int, ...], doc: Document, loader: _Loader, depth: int) -> Any:
    ptr = pointer(path)
    doc.positions.setdefault(ptr, _mark(node))
    tag = node.tag
    if tag not in _STANDARD_TAGS:
        line, col = _mark(node)
        shown = tag.replace("tag:yaml.org,2002:", "!!")
        doc.problems.append(
            Problem(doc.file, line, col, ptr, f"YAML tag {shown} is not allowed in runbooks; remove it")
        )
        doc.broken.add(ptr)
        return None
    if isinstance(node, ScalarNode):
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            doc.add(ptr, f"invalid value: {getattr(exc, 'problem', None) or exc}")
        except ValueError:  # e.g. an integer with more digits than Python converts
            doc.add(ptr, f"value {node.value[:20]!r}… is too long a number; quote it if it is text")
        doc.broken.add(ptr)
        return None
    if isinstance(node, SequenceNode):
        return [_build(child, (*path, i), doc, loader, depth + 1) for i, child in enumerate(node.value)]
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            line, col = _mark(key_node)
            doc.problems.append(
                Problem(
                    doc.file, line, col, ptr, "YAML merge keys (<<) are not supported; write the keys out"
                )
            )
            doc.broken.add(ptr)  # the mapping lacks the merged keys: do not report their absence
            continue
        if not isinstance(key_node, ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            line, col = _mark(key_node)
            shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
            doc.problems.append(
                Problem(doc.file, line, col, ptr, f"key {shown!r} must be a string; quote it")
            )
            continue
        key = key_node.value
        child_ptr = pointer((*path, key))
        if key in result:
            first = doc.key_positions[child_ptr][0]
            line, col = _mark(key_node)
            doc.problems.append(
                Problem(
                    doc.file,
                    line,
                    col,
                    child_ptr,
                    f"duplicate key {key!r} (first at line {first}); keep one of them",
                )
            )
            continue
        doc.key_positions[child_ptr] = _mark(key_node)
        result[key] = _build(value_node, (*path, key), doc, loader, depth + 1)
    return result
