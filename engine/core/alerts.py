"""Alertmanager webhooks → runbook triggers: the payload, Alertmanager's matchers, the target.

What ``cairn serve`` reads (:mod:`engine.serve.server`): what an alert is, whether a
runbook's trigger matches it, and which inventory host it names. No HTTP, no
queue: :func:`parse_webhook` turns a request body into alerts or a
:class:`WebhookError` that says what is wrong (a 400 for the server), and
:func:`route` pairs each alert with the runbooks it starts.

Matchers follow Alertmanager's (``label op value``; ``=``, ``!=``, ``=~``,
``!~``): a value may be double-quoted (with ``\\"``, ``\\\\`` and ``\\n``
escapes) or bare; a regular expression must match the whole label value
(Alertmanager anchors it as ``^(?:re)$``); a label the alert does not have is
the empty string, so ``team!="db"`` holds for an alert without ``team``. The
regular expressions are Python's ``re``, not Go's RE2: the common syntax is the
same, RE2-only constructs are reported by ``cairn validate``.

A label value is data, never code: the target template renders it as text, and
every command that uses the target shell-quotes it (:func:`engine.core.expr.render_command`).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from engine.core import expr
from engine.core.errors import TemplateError
from engine.core.model import Runbook

WEBHOOK_VERSION = "4"
"""The Alertmanager webhook payload version Cairn reads."""

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


class Op(Enum):
    """A matcher's operator."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    """``label op value``, as Alertmanager reads it."""

    label: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Read ``text``; :class:`ValueError` says what is wrong with it."""
        found = _MATCHER.match(text)
        if not found:
            raise ValueError(f"{text!r} is not a matcher: write label = value (or !=, =~, !~)")
        label, op, raw = found.groups()
        value = _unquote(raw) if raw.startswith('"') else raw
        regex = None
        if op in (Op.REGEX.value, Op.NOT_REGEX.value):
            try:
                regex = re.compile(f"^(?:{value})$")
            except re.error as exc:
                raise ValueError(f"the regular expression {value!r} does not compile: {exc}") from exc
        return cls(label, Op(op), value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        have = labels.get(self.label, "")
        match self.op:
            case Op.EQUAL:
                return have == self.value
            case Op.NOT_EQUAL:
                return have != self.value
            case Op.REGEX:
                assert self._regex is not None
                return self._regex.match(have) is not None
            case Op.NOT_REGEX:
                assert self._regex is not None
                return self._regex.match(have) is None

    def __str__(self) -> str:
        return f"{self.label}{self.op.value}{json.dumps(self.value)}"


def _unquote(raw: str) -> str:
    """The value of a double-quoted matcher value; :class:`ValueError` if the quoting is wrong."""
    if len(raw) < 2 or not raw.endswith('"'):
        raise ValueError(f"the value {raw} opens a quote it does not close")
    out: list[str] = []
    body = raw[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 == len(body) or body[index + 1] not in _ESCAPES:
                raise ValueError(f'{raw}: only \\", \\\\ and \\n may follow a backslash')
            out.append(_ESCAPES[body[index + 1]])
            index += 2
            continue
        if char == '"':
            raise ValueError(f'{raw}: a quote inside a quoted value must be written \\"')
        out.append(char)
        index += 1
    return "".join(out)


# ---------------------------------------------------------------------------- the payload


class AlertStatus(Enum):
    """An alert's state in a webhook: each alert says its own (a group can carry both)."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook."""

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""

    def context(self) -> dict[str, Any]:
        """What a trigger's target template sees as ``alert``."""
        return {
            "status": self.status.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "fingerprint": self.fingerprint,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        }


@dataclass(frozen=True)
class Webhook:
    """A webhook's alerts and the group they came in."""

    receiver: str
    group_key: str
    alerts: tuple[Alert, ...]
    truncated: int = 0
    """Alerts Alertmanager left out (``max_alerts`` in its config)."""


class WebhookError(ValueError):
    """The request body is not an Alertmanager webhook Cairn can read; the message says why."""


MAX_DEPTH = 32
"""How deep a webhook's JSON may nest: Alertmanager's nests 3 levels (``{alerts: [{labels: {}}]}``).
Deeper is refused before the body is parsed, so a 50,000-level body costs one scan."""

MAX_DIGITS = 64
"""Digits a number in a webhook may have (Alertmanager's only number is ``truncatedAlerts``)."""

_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)  # possessive: no backtracking on a hostile body
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 2


def parse_webhook(body: bytes | str) -> Webhook:
    """Read an Alertmanager webhook (payload version 4) or raise :class:`WebhookError`.

    Whatever the body is, the outcome is a :class:`Webhook` or a :class:`WebhookError` that says
    what is wrong: not UTF-8, not JSON, nested too deep, a number too long, NaN, a key twice in
    one object, a field of the wrong type, text that is not text (a lone surrogate, a NUL).
    """
    data = _json(body)
    if not isinstance(data, dict):
        raise WebhookError("the body is not a JSON object (an Alertmanager webhook is one)")
    version = data.get("version")
    if version != WEBHOOK_VERSION:
        raise WebhookError(f'expected an Alertmanager webhook with "version": "4", got {_short(version)}')
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise WebhookError('"alerts" must be a list')
    alerts = tuple(_alert(i, raw) for i, raw in enumerate(raw_alerts))
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise WebhookError(f'"truncatedAlerts" must be a whole number of alerts, got {_short(truncated)}')
    return Webhook(
        receiver=_text(data, "receiver", "the webhook"),
        group_key=_text(data, "groupKey", "the webhook"),
        alerts=alerts,
        truncated=truncated,
    )


def _json(body: bytes | str) -> Any:
    """The body's JSON value; :class:`WebhookError` for anything a webhook's JSON cannot be."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")  # a byte-order mark is ignored, as RFC 8259 allows
        except UnicodeDecodeError as exc:
            raise WebhookError(
                f"the body is not JSON in UTF-8: byte {exc.start} (0x{body[exc.start]:02x}) is not UTF-8"
            ) from None
    if _too_deep(body):
        raise WebhookError(
            f"the body is nested deeper than {MAX_DEPTH} levels; an Alertmanager webhook nests 3"
        )
    try:
        return json.loads(
            body,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_int=_integer,
            parse_float=_float,
        )
    except json.JSONDecodeError as exc:
        raise WebhookError(f"the body is not JSON: {exc}") from None
    except RecursionError:  # cannot happen under MAX_DEPTH; never a 500 if it did
        raise WebhookError(f"the body is nested deeper than {MAX_DEPTH} levels") from None


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests its arrays and objects deeper than :data:`MAX_DEPTH`, without parsing it.

    Strings are dropped (brackets in them are text), then each pass removes the innermost empty
    pairs: the depth is the number of passes that make progress. Each pass is one ``str.replace``.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH + 1):
        if not brackets:
            return False
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if inner == brackets:
            return False  # brackets that do not pair: not JSON, which the parser says
        brackets = inner
    return True


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise WebhookError(f"the key {_short(twice)} appears twice in one object")
    return found


def _constant(name: str) -> Any:
    raise WebhookError(f"the body is not JSON: {name} is not a JSON number")


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise WebhookError(f"a number in the body has {len(digits)} digits (at most {MAX_DIGITS})")
    return int(digits)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 4 * MAX_DIGITS:
        raise WebhookError(f"a number in the body is too large: {_short(text)}")
    return value


def _short(value: Any) -> str:
    """``value`` for a message: its repr, cut to about 60 characters (and 2 levels deep)."""
    return _SHORT.repr(value)


def _name(key: str) -> str:
    """A label's name for a message: as it is if it is short and printable, else its cut repr."""
    return key if len(key) <= 60 and key.isprintable() else _short(key)


def _alert(index: int, raw: Any) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise WebhookError(f"{where} is not an object")
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise WebhookError(f'{where}.status must be "firing" or "resolved", got {_short(status)}')
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise WebhookError(f"{where}.fingerprint must be a non-empty string")
    return Alert(
        status=AlertStatus(status),
        labels=_string_map(raw.get("labels"), f"{where}.labels", required=True),
        annotations=_string_map(raw.get("annotations", {}), f"{where}.annotations", required=False),
        fingerprint=_clean(fingerprint, f"{where}.fingerprint"),
        starts_at=_text(raw, "startsAt", where),
        ends_at=_text(raw, "endsAt", where),
        generator_url=_text(raw, "generatorURL", where),
    )


def _string_map(value: Any, where: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise WebhookError(f"{where} must be an object of strings")
    for key, item in value.items():
        _clean(key, f"a key of {where}")
        if not isinstance(item, str):
            raise WebhookError(f"{where}.{_name(key)} must be a string, got {_short(item)}")
        _clean(item, f"{where}.{_name(key)}")
    return dict(value)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise WebhookError(f"{where}.{key} must be a string")
    return _clean(value, f"{where}.{key}")


def _clean(value: str, where: str) -> str:
    """``value``, if it is text a journal, a template and a command line can hold; else :class:`WebhookError`."""
    found = _NOT_TEXT.search(value)
    if found is None:
        return value
    what = "a NUL character" if found.group() == "\x00" else f"a lone surrogate (\\u{ord(found.group()):04x})"
    raise WebhookError(f"{where} holds {what}, which is not text")


# ---------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """An alert that starts a runbook on a target (or says why it cannot)."""

    alert: Alert
    runbook_id: str
    trigger: int
    """Which of the runbook's triggers matched (index)."""
    target: str
    problem: str = ""
    """Why the target could not be worked out (the template failed or rendered nothing); empty when fine."""

    @property
    def key(self) -> tuple[str, str]:
        """(runbook, target): at most one run at a time per key."""
        return (self.runbook_id, self.target)


def trigger_matchers(runbook: Runbook) -> list[list[Matcher]]:
    """Each trigger's matchers, parsed (a runbook that passed ``cairn validate`` parses)."""
    return [[Matcher.parse(text) for text in trigger.matchers] for trigger in runbook.triggers]


def route(runbooks: Iterable[Runbook], alert: Alert) -> list[Route]:
    """Every (runbook, trigger) whose matchers all hold for ``alert``, with the target it names.

    A runbook with several matching triggers starts once per distinct target."""
    routes: list[Route] = []
    for runbook in runbooks:
        seen: set[str] = set()
        for index, (trigger, matchers) in enumerate(
            zip(runbook.triggers, trigger_matchers(runbook), strict=True)
        ):
            if not all(m.matches(alert.labels) for m in matchers):
                continue
            target, problem = _target(trigger.target, alert)
            if target in seen and not problem:
                continue
            seen.add(target)
            routes.append(Route(alert, runbook.id, index, target, problem))
    return routes


def _target(template: str, alert: Alert) -> tuple[str, str]:
    try:
        target = expr.render_text(template, {"alert": alert.context(), "inputs": {}}, field="target").strip()
    except TemplateError as exc:
        return (
            "",
            f"the trigger's target {template!r} cannot be rendered for this alert ({exc}); its labels: {alert.labels}",
        )
    if not target:
        return "", f"the trigger's target {template!r} is empty for this alert (labels: {alert.labels})"
    return target, ""
