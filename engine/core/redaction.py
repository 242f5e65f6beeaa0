"""Secret input values out of everything Cairn shows or keeps: the :class:`Redactor`.

A secret can be written out in more than one way before anyone sees it: as typed,
shell-quoted by a rendered command, JSON-escaped by parsed output, or as Python's
``repr`` (Jinja2's ``'dict object' has no attribute '…'`` names a key that way), and a
secret of several lines can reach an output event one line at a time. The redactor
knows every one of those forms and replaces each with ``***``.

:meth:`Redactor.data` redacts every string inside a value — dataclasses (events, step
results, reports), mappings (keys too), sequences and sets — and gives back the same
object when it held nothing to redact, so the event bus can run every event through it
(:meth:`engine.core.events.EventBus.emit`) for about the cost of looking.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Collection, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.core.model import Host, Runbook

REDACTED = "***"
LINE_AT_LEAST = 4
"""A line of a multi-line secret is redacted on its own from this many characters (stripped): shorter
ones (``{``, ``ok``) would take half of every output with them and tell little about the secret."""
_SCALARS = (bool, int, float, type(None), Enum)


def secret_forms(secret: str) -> set[str]:
    """Every way ``secret`` may be written out: raw, shell-quoted, JSON-escaped (ASCII or not), Python's
    ``repr`` and ``ascii`` (inside single or double quotes), each of those of its shell-quoted form, and
    the lines of a multi-line secret."""
    forms: set[str] = set()
    for base in (secret, shlex.quote(secret)):
        forms |= {
            base,
            json.dumps(base)[1:-1],
            json.dumps(base, ensure_ascii=False)[1:-1],
            repr(base + "'\"")[1:-4],  # in a repr quoted with ' (which then escapes ')
            ascii(base + "'\"")[1:-4],
        }
        if '"' not in base:  # a repr quoted with " (chosen when the text has ' and no ")
            forms |= {repr(base + "'")[1:-2], ascii(base + "'")[1:-2]}
    if "\n" in secret or "\r" in secret:
        forms |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= LINE_AT_LEAST}
    forms.discard("")
    return forms


class Redactor:
    """Replaces secret input values, in every form they may take, with ``***`` in any text or value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets: tuple[str, ...] = tuple(dict.fromkeys(s for s in secrets if s))
        forms = {form for s in self.secrets for form in secret_forms(s)}
        # Longest first, so a quoted form is replaced whole before the text inside it. str.replace per
        # form measured faster than one compiled alternation (bench in the Secrets section of
        # docs/architecture.md): it searches in C, and most texts hold none of them.
        self.forms: tuple[str, ...] = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        """Every literal text replaced, longest first (the line splitter never cuts inside one)."""

    @classmethod
    def for_inputs(cls, runbook: Runbook, values: Mapping[str, Any]) -> Redactor:
        """A redactor for the secret inputs of ``runbook``."""
        return cls(
            [str(values[i.name]) for i in runbook.inputs if i.secret and values.get(i.name) is not None]
        )

    @classmethod
    def for_run(cls, runbook: Runbook, values: Mapping[str, Any], hosts: Iterable[Host]) -> Redactor:
        """A redactor for a run: the secret inputs of ``runbook`` and the become passwords of ``hosts``."""
        from engine.core.become import become_passwords  # noqa: PLC0415

        inputs = cls.for_inputs(runbook, values)
        return inputs.joined(cls(become_passwords([h.vars for h in hosts])))

    @property
    def active(self) -> bool:
        """True when there is something to redact."""
        return bool(self.forms)

    def joined(self, other: Redactor) -> Redactor:
        """A redactor for the secrets of both."""
        if not other.secrets or set(other.secrets) <= set(self.secrets):
            return self
        return Redactor([*self.secrets, *other.secrets])

    def __call__(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, REDACTED)  # the same object back when the form is not there
        return text

    def inputs(self, runbook: Runbook, values: Mapping[str, Any]) -> dict[str, Any]:
        """Input values fit for the journal: secrets replaced."""
        secret = {i.name for i in runbook.inputs if i.secret}
        return {k: (REDACTED if k in secret else v) for k, v in values.items()}

    def data(
        self,
        value: Any,
        verbatim: Mapping[type, Collection[str]] | None = None,
        memo: dict[int, tuple[Any, Any]] | None = None,
    ) -> Any:
        """``value`` with every string inside it redacted: the same object when nothing changed.

        Dataclasses keep their class (a copy with the changed fields), mappings their keys'
        redacted text, tuples and sets stay tuples and sets; an object of any other kind whose
        text holds a secret becomes that text, redacted. ``verbatim`` names, per dataclass, the
        fields left as they are (the event bus keeps the names a run is keyed by). ``memo`` keeps
        each dataclass redacted, by identity, for the next call (a step's result comes again in
        its host's report and in the run's).
        """
        if not self.forms:
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # The value itself is not remembered (an event is seen once); what it holds may come again.
            return self._dataclass(value, verbatim or {}, {} if memo is None else memo)
        return self._value(value, verbatim or {}, {} if memo is None else memo)

    def _value(
        self, value: Any, verbatim: Mapping[type, Collection[str]], memo: dict[int, tuple[Any, Any]]
    ) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, _SCALARS):
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            known = memo.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
            copy = self._dataclass(value, verbatim, memo)
            memo[id(value)] = (value, copy)  # the original is kept too: its id is not reused meanwhile
            return copy
        if isinstance(value, Mapping):
            items = [
                (self._value(k, verbatim, memo), self._value(v, verbatim, memo)) for k, v in value.items()
            ]
            same = all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True))
            return value if same else dict(items)
        if isinstance(value, list | tuple | set | frozenset):
            parts = [self._value(v, verbatim, memo) for v in value]
            if all(r is v for r, v in zip(parts, value, strict=True)):
                return value
            if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
                return type(value)(*parts)
            return type(value)(parts)
        text = str(value)
        shown = self(text)
        return shown if shown != text else value

    def _dataclass(
        self, value: Any, verbatim: Mapping[type, Collection[str]], memo: dict[int, tuple[Any, Any]]
    ) -> Any:
        kept = verbatim.get(type(value), ())
        changed = {}
        for f in dataclasses.fields(value):
            if not f.init or f.name in kept:
                continue
            old = getattr(value, f.name)
            new = self._value(old, verbatim, memo)
            if new is not old:
                changed[f.name] = new
        return dataclasses.replace(value, **changed) if changed else value
