"""Marks a command template leaves in its text, settled once the whole command is known.

While a ``run`` command renders, a value cannot see where it lands. Two things depend on that,
so the renderer leaves a mark (made unguessable by the render's nonce) and :func:`settle_marks`
decides on the finished text:

* **an outsider's word that starts with ``-``** (:func:`word`): refused where it begins a shell
  word, unless ``--`` came before it in the same command (there it would be read as an option);
* **a secret** (:func:`secret_reference`; ``{{ inputs.token }}``, with ``quote`` or ``unquoted``):
  ``"$CAIRN_SECRET_X"`` where it stands bare, ``${CAIRN_SECRET_X}`` inside the author's double
  quotes, ``'"$CAIRN_SECRET_X"'`` inside single quotes (closed, the variable expanded, reopened),
  so it expands to the value, as one word, wherever it is written.
"""

from __future__ import annotations

import re
import shlex

from engine.core.template_bounds import TemplateRefusal, current
from engine.core.template_values import Secret, Untrusted

_SEPARATORS = frozenset(";&|()`\n")
_DOUBLE_DASH = re.compile(r"(?:^|\s)--(?:\s|$)")
_COMMAND_BREAK = re.compile(r"[;&|()`\n]")


class OptionRefused(TemplateRefusal):
    """An outsider's text starting with ``-`` would begin a word of a command: an option."""


def word(text: str) -> str:
    """``text`` quoted as one word; an outsider's that starts with ``-`` marked for :func:`settle_marks`."""
    quoted = shlex.quote(text)
    running = current()
    if running is not None and isinstance(text, Untrusted) and text.startswith("-"):
        return f"\x00{running.nonce}<{quoted}\x00{running.nonce}>"
    return quoted


def secret_reference(secret: Secret) -> str:
    """A secret in a command: a mark :func:`settle_marks` turns into the reference its quoting needs."""
    running = current()
    if running is None:
        return secret.reference
    return f"\x00{running.nonce}={secret.env_name}\x00"


def settle_marks(text: str, nonce: str) -> str:
    """The command without marks: secrets referred to as their quoting needs, options refused."""
    if f"\x00{nonce}" not in text:
        return text
    marks = re.compile(re.escape(f"\x00{nonce}") + r"(?:(<)|(>)|=([A-Za-z0-9_]+)\x00)")
    out: list[str] = []
    quoting = ""
    position = 0
    for found in marks.finditer(text):
        piece = text[position : found.start()]
        out.append(piece)
        quoting = _quoting_after(piece, quoting)
        position = found.end()
        opens, _, secret = found.groups()
        if opens:
            _refuse_option(text, found.end(), "".join(out), nonce)
        elif secret:
            out.append({"": f'"${secret}"', '"': "${" + secret + "}", "'": f"'\"${secret}\"'"}[quoting])
    out.append(text[position:])
    return "".join(out)


def _refuse_option(text: str, at: int, before: str, nonce: str) -> None:
    if not _begins_word(before) or _DOUBLE_DASH.search(_COMMAND_BREAK.split(before)[-1]):
        return
    close = text.find(f"\x00{nonce}>", at)
    value = text[at : close if close >= 0 else len(text)]
    shown = value if len(value) <= 40 else value[:39] + "…"
    raise OptionRefused(
        f"{shown} comes from an alert (an outsider's text) and starts with '-': where it begins a "
        "word the command would read it as an option; put -- before it (rm -- {{ … }}) or join "
        "it to its option (--name={{ … }})"
    )


def _begins_word(before: str) -> bool:
    """Whether text placed after ``before`` starts a shell word (quotes opening it count as its start)."""
    stripped = before.rstrip("'\"")
    return not stripped or stripped[-1].isspace() or stripped[-1] in _SEPARATORS


def _quoting_after(text: str, quoting: str) -> str:
    """The quoting (``''`` none, ``'`` or ``"``) after ``text``, starting in ``quoting``."""
    index = 0
    while index < len(text):
        char = text[index]
        if quoting == "'":
            quoting = "" if char == "'" else quoting
        elif char == "\\":
            index += 1  # an escaped character, outside or inside double quotes
        elif quoting == '"':
            quoting = "" if char == '"' else quoting
        elif char in "'\"":
            quoting = char
        index += 1
    return quoting
