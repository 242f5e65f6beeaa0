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

import math
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from engine.core.errors import Problem

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


def _scalar(node: ScalarNode) -> Any:
    """A resolved scalar's value (YAML 1.2 core schema), without PyYAML's generic constructor."""
    text = node.value
    match node.tag:
        case "tag:yaml.org,2002:str":
            return text
        case "tag:yaml.org,2002:int":
            if text.startswith(("0o", "0x")):
                return int(text, 0)
            return int(text, 10)  # "010" is ten, as in YAML 1.2 (PyYAML would read octal)
        case "tag:yaml.org,2002:float":
            special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
            return special.get(text.lower()) if text.lower() in special else float(text)
        case "tag:yaml.org,2002:bool":
            return text.lower() == "true"
        case _:  # null: the only other standard scalar tag
            return None


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


class _Loader(_Parser, _Resolver):
    """Composes nodes only; :func:`_scalar` turns scalars into values."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        _Resolver.__init__(self)


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
    """Plain data read from a YAML file, and the node tree that says where each value stands."""

    file: str
    text: str
    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    root: Node | None = None
    """The composed YAML nodes; positions are looked up in them only when a problem needs one."""
    broken: set[str] = field(default_factory=set)
    """Pointers whose value could not be read (already reported; later checks skip them)."""

    def where(self, ptr: str, *, key: bool = False) -> tuple[int, int]:
        """Position (1-based) of ``ptr``'s value, or its key; else of its nearest ancestor."""
        node = self.root
        if node is None:
            return (1, 1)
        found = _mark(node)
        for part in (unescape_pointer_part(p) for p in ptr.split("/")[1:]):
            child, key_node = _child(node, part)
            if child is None:
                break
            found = _mark(key_node) if key and key_node is not None else _mark(child)
            node = child
        return found

    def problem(self, ptr: str, message: str, *, key: bool = False) -> Problem:
        """A Problem located at ``ptr``."""
        line, col = self.where(ptr, key=key)
        return Problem(self.file, line, col, ptr, message)

    def add(self, ptr: str, message: str, *, key: bool = False) -> None:
        """Record a problem at ``ptr``."""
        self.problems.append(self.problem(ptr, message, key=key))


def unescape_pointer_part(part: str) -> str:
    """The key a JSON-pointer reference token names (RFC 6901)."""
    return part.replace("~1", "/").replace("~0", "~")


def _child(node: Node, part: str) -> tuple[Node | None, Node | None]:
    """The child of ``node`` named by one pointer token, with its key node (mappings)."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == part:
                return value_node, key_node
    elif isinstance(node, SequenceNode) and part.isdigit() and int(part) < len(node.value):
        return node.value[int(part)], None
    return None, None


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
    doc.root = root
    try:
        doc.data = _Builder(doc, loader).build(root, None, 0)
    except _TooBig:
        doc.data = None


class _TooBig(Exception):
    """The document is too large, too deep or recursive; the problem is already recorded."""


# A path is built as a linked list, (parent, key), so that no pointer string is made
# for the thousands of values that have no problem.
_Path = tuple[Any, str | int] | None


def _pointer_of(path: _Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, part = path
        parts.append(part)
    return pointer(tuple(reversed(parts)))


class _Builder:
    """Nodes -> plain data in one pass, counting values as aliases expand them."""

    def __init__(self, doc: Document, loader: _Loader) -> None:
        self.doc = doc
        self.loader = loader
        self.count = 0
        self.active: set[int] = set()  # container nodes on the current path: a repeat is recursion

    def fail(self, node: Node, message: str) -> None:
        line, col = _mark(node)
        self.doc.problems.append(Problem(self.doc.file, line, col, "", message))
        raise _TooBig

    def problem(self, node: Node, path: _Path, message: str, *, broken: bool = True) -> None:
        line, col = _mark(node)
        ptr = _pointer_of(path)
        self.doc.problems.append(Problem(self.doc.file, line, col, ptr, message))
        if broken:
            self.doc.broken.add(ptr)

    def build(self, node: Node, path: _Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(
                self.doc.root or node,
                f"document has more than {MAX_NODES:,} values with its YAML aliases expanded (an alias "
                "bomb?); a runbook has a few hundred: write the values out instead of aliasing them",
            )
        if depth >= MAX_DEPTH:  # depth 0 is the first level
            self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        if node.tag not in _STANDARD_TAGS:
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(node, path, f"YAML tag {shown} is not allowed in runbooks; remove it")
            return None
        if isinstance(node, ScalarNode):
            try:
                return _scalar(node)
            except ValueError:  # !!int on text, or more digits than Python converts
                shown = node.value if len(node.value) <= 20 else node.value[:20] + "…"
                self.problem(
                    node,
                    path,
                    f"value {shown!r} is not a number Cairn can read (too long or malformed); quote it if it is text",
                )
            return None
        if id(node) in self.active:
            self.fail(node, "recursive YAML alias: a value contains itself")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(child, (path, i), depth + 1) for i, child in enumerate(node.value)]
            return self.mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: Node, path: _Path, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        keys: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # The mapping lacks the merged keys: do not report their absence too (broken).
                self.problem(key_node, path, "YAML merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                self.problem(key_node, path, f"key {shown!r} must be a string; quote it", broken=False)
                continue
            key = key_node.value
            if key in keys:
                first = _mark(keys[key])[0]
                self.problem(
                    key_node,
                    (path, key),
                    f"duplicate key {key!r} (first at line {first}); keep one of them",
                    broken=False,
                )
                continue
            keys[key] = key_node
            result[key] = self.build(value_node, (path, key), depth + 1)
        return result
