"""Values a template must treat with care: text an outsider set, and secret inputs.

The template context (:mod:`engine.core.context`) marks them, once, for every use:

* :class:`Untrusted`: every string of an alert (labels, annotations, their names …) and the string
  inputs of an alert-started run. Anyone holding the webhook token chooses them, so ``| unquoted``
  refuses them unless the step says why it may (``allow_unquoted``), and in a command one that
  starts with ``-`` may not begin a word (it would be read as an option). The mark survives what a
  template does to the value: the sandbox (:mod:`engine.core.template_sandbox`) marks whatever a
  filter, method, operator, slice or loop makes from it.
* :class:`Secret`: a secret input's value. In text (instructions, reports, conditions) it is the
  value; in a ``run`` command it renders as ``"$CAIRN_SECRET_<NAME>"``, a variable of the command's
  own environment, so the value never lands on a command line. :class:`SecretText` is a secret
  joined with text by ``~`` in a command: one shell word, the text quoted, the secret a variable.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SECRET_ENV_PREFIX = "CAIRN_SECRET_"  # noqa: S105 - the prefix of a variable name, no password


class Untrusted(str):
    """Text an outsider set: an alert's strings, the inputs of an alert-started run."""

    __slots__ = ()


class Unquoted(str):
    """A string the template author marked as shell text (``| unquoted``), or already quoted (``| quote``)."""

    __slots__ = ()


class Secret(str):
    """A secret input's value; ``input_name`` says which input it is."""

    input_name: str

    def __new__(cls, value: str, input_name: str) -> Secret:
        made = super().__new__(cls, value)
        made.input_name = input_name
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (str(self), self.input_name))

    @property
    def env_name(self) -> str:
        """The environment variable a command reads it from."""
        return secret_env_name(self.input_name)

    @property
    def reference(self) -> str:
        """How a command refers to it, as one shell word: ``"$CAIRN_SECRET_TOKEN"``."""
        return f'"${self.env_name}"'


@dataclass(frozen=True, slots=True)
class SecretText:
    """Text and secrets joined with ``~`` in a command: one shell word, the secrets by reference."""

    parts: tuple[str, ...]
    """Plain text and :class:`Secret` values, in order."""

    def quoted(self, reference: Callable[[Secret], str]) -> str:
        """One shell word: ``'Bearer '"$CAIRN_SECRET_TOKEN"`` (each secret as ``reference`` gives it)."""
        return "".join(reference(p) if isinstance(p, Secret) else shlex.quote(p) for p in self.parts if p)

    def bare(self, reference: Callable[[Secret], str]) -> str:
        """For ``| unquoted``: the text as it is, each secret as ``reference`` gives it."""
        return "".join(reference(p) if isinstance(p, Secret) else p for p in self.parts)

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """The secrets it holds."""
        return tuple(p for p in self.parts if isinstance(p, Secret))


def secret_env_name(input_name: str) -> str:
    """``CAIRN_SECRET_`` and the input's name, upper-cased, anything but letters and digits as ``_``."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", input_name).upper()


def mark_untrusted(value: Any) -> Any:
    """``value`` with every string in it (keys too) marked :class:`Untrusted`; a copy."""
    if isinstance(value, Secret):
        return value  # a secret is rendered by reference: quoting it is not the concern
    if isinstance(value, str):
        return value if isinstance(value, Untrusted) else Untrusted(value)
    if isinstance(value, Mapping):
        return {mark_untrusted(k): mark_untrusted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_untrusted(v) for v in value]
    return value


def is_untrusted(value: Any) -> bool:
    """Whether ``value`` is, or directly holds (a list's items, a dict's keys and values), untrusted text."""
    if isinstance(value, Untrusted):
        return True
    if isinstance(value, SecretText):
        return any(isinstance(p, Untrusted) for p in value.parts)
    if isinstance(value, list | tuple):
        return any(isinstance(v, Untrusted) for v in value)
    if isinstance(value, Mapping):
        return any(isinstance(v, Untrusted) for pair in value.items() for v in pair)
    return False


def holds_untrusted(value: Any, *, limit: int = 10_000) -> bool:
    """Whether untrusted text is anywhere in ``value`` (looking at no more than ``limit`` values)."""
    stack = [value]
    while stack and limit > 0:
        limit -= 1
        item = stack.pop()
        if isinstance(item, Untrusted) or (isinstance(item, SecretText) and is_untrusted(item)):
            return True
        if isinstance(item, Mapping):
            stack.extend(v for pair in item.items() for v in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return bool(stack)  # not looked at to the end: assume the worst


def taint(value: Any) -> Any:
    """What a template made from untrusted text is untrusted too: strings marked, containers' strings too."""
    if isinstance(value, str):
        return value if isinstance(value, Untrusted | Secret | Unquoted) else Untrusted(value)
    if isinstance(value, list):
        return [taint(v) if isinstance(v, str) else v for v in value]
    if isinstance(value, tuple):
        return tuple(taint(v) if isinstance(v, str) else v for v in value)
    if isinstance(value, dict):
        return {
            taint(k) if isinstance(k, str) else k: taint(v) if isinstance(v, str) else v
            for k, v in value.items()
        }
    return value


def secrets_in(values: Iterable[Any], *, limit: int = 10_000) -> list[Secret]:
    """The secrets among ``values`` and anywhere inside them (lists, dicts, joined text), looking
    at no more than ``limit`` values: a secret in a container would be written out by its text."""
    found: list[Secret] = []
    stack = list(values)
    while stack and limit > 0:
        limit -= 1
        value = stack.pop()
        if isinstance(value, Secret):
            found.append(value)
        elif isinstance(value, SecretText):
            found.extend(value.secrets)
        elif isinstance(value, str):
            continue
        elif isinstance(value, Mapping):
            stack.extend(v for pair in value.items() for v in pair)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
    return found
