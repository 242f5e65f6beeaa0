"""Templates and expressions: Jinja2 in a bounded, immutable sandbox, with shell-quoting.

Three uses, one language (the one Ansible users already write):

* **commands** (``run:``): every ``{{ value }}`` is shell-quoted, so an alert
  label such as ``node1; rm -rf /`` stays one argument. Lists become several
  quoted arguments. ``{{ value | unquoted }}`` opts out, explicitly — for text an
  outsider set (an alert's, or an input of an alert-started run) only when the
  step says why (``allow_unquoted``); such text that starts with ``-`` may not
  begin a word (it would be read as an option). A secret input renders as
  ``"$CAIRN_SECRET_<NAME>"``, a variable of the command's own environment
  (:mod:`engine.core.template_values`), never as its value.
* **text** (``manual:`` instructions, reports, trigger targets, ansible arguments): rendered as is.
* **expressions** (``when:``, ``expect:``): evaluated to a Python value.

Every render is bounded (:mod:`engine.core.template_bounds`): its time (never past the step's
timeout; a cancel stops it), its output and all it builds, checked at every operation by the
sandbox (:mod:`engine.core.template_sandbox`). Undefined names are errors, never silently empty:
an empty string in a shell command is how ``rm -rf /{{ dir }}`` goes wrong. Errors at run time
say which value had which type and the filter that converts it (parsed output is text); values
in them are redacted with the run's Redactor, then cut to 40 characters. :func:`check` inspects
a template without running it, for ``cairn validate``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from jinja2 import Undefined

from engine.core.command_marks import secret_reference, settle_marks, word
from engine.core.errors import TemplateError
from engine.core.template_bounds import (
    MAX_COMMAND_BYTES,
    MAX_OUTPUT_CHARS,
    BoundExceeded,
    Budget,
    Stopped,
    budget,
    check_text,
    current,
    policy,
    size_of,
    stopped,
    tick,
)
from engine.core.template_errors import ExplainingUndefined, Redact, describe
from engine.core.template_filters import FILTERS, GLOBALS, TESTS, UntrustedRefused
from engine.core.template_sandbox import BoundedSandbox, refuse_secrets
from engine.core.template_sizes import materialize
from engine.core.template_values import Secret, SecretText, Unquoted, holds_untrusted

if TYPE_CHECKING:
    from engine.core.template_lint import TemplateCheck

__all__ = ["Unquoted", "check", "evaluate", "render_command", "render_data", "render_text", "shell_quote"]

# Names a template may use at the top level. Expectations also see the step's own output.
TEMPLATE_NAMES = frozenset({"target", "vars", "inputs", "steps", "alert", "run"})
EXPECT_NAMES = TEMPLATE_NAMES | {"out", "rc", "stdout", "stderr"}

SHELL_MODULES = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for name in ("shell", "command", "raw", "script")
)
"""Ansible modules whose arguments become a command line: untrusted text in them is refused as in
``| unquoted`` (the module does not quote it)."""

_WRAPPED = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)
_SHELL_ARGS_REFUSED = (
    "this module's arguments become a command line, and an alert's text (an outsider's) is in them "
    'unquoted; pass it where the module does not run it as a command, or say why in allow_unquoted: "<the reason>"'
)

T = TypeVar("T")


def shell_quote(value: Any) -> str:
    """One value as shell text: strings quoted, lists as several quoted words, secrets by reference."""
    if isinstance(value, Unquoted):
        return str(value)
    if isinstance(value, Secret):
        return secret_reference(value)
    if isinstance(value, SecretText):
        return value.quoted(secret_reference)
    if value is None:
        return "''"
    if isinstance(value, bool):
        return "true" if value else "false"  # as shells and YAML spell them, not Python's True
    if isinstance(value, list | tuple | Iterator):  # Iterator: map()/select() without | list
        words, total = [], 0
        for item in value:
            tick()
            words.append(shell_quote(item))
            total += len(words[-1]) + 1
            check_text(total, "the words of a list")
        return " ".join(words)
    if isinstance(value, str):
        return word(value)
    refuse_secrets([value], "a dict written out whole")  # its text would hold the value
    check_text(size_of(value), "the value")
    return shlex.quote(str(value))


def _plain(value: Any) -> Any:
    running = current()
    if running is not None and running.shell_text and holds_untrusted(value) and not policy().allow_unquoted:
        raise UntrustedRefused(_SHELL_ARGS_REFUSED)
    if isinstance(value, Iterator):
        value = materialize(value, "the list")
    if isinstance(value, bool):
        return "true" if value else "false"  # the same spelling as in commands
    if value is None:
        return ""
    if not isinstance(value, str):
        check_text(size_of(value), "the value")  # Jinja writes it with str(): a list in Python spelling
    return value


def _environment(finalize: Callable[[Any], Any], *, commands: bool) -> BoundedSandbox:
    env = BoundedSandbox(
        commands=commands,
        undefined=ExplainingUndefined,
        autoescape=False,
        keep_trailing_newline=True,  # as in Ansible: "line\n" stays a line with its newline
        trim_blocks=True,  # as in Ansible: {% for %} lines leave no blank lines behind
        lstrip_blocks=True,
        finalize=finalize,
    )
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals.update(GLOBALS)
    env.seal()
    return env


_COMMAND_ENV = _environment(shell_quote, commands=True)
_TEXT_ENV = _environment(_plain, commands=False)


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=2048)
def _compiled_command(source: str) -> Any:
    return _COMMAND_ENV.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_text(source: str) -> Any:
    return _TEXT_ENV.from_string(source)


@lru_cache(maxsize=2048)
def _compiled_expression(source: str) -> Any:
    return _TEXT_ENV.compile_expression(unwrap(source), undefined_to_none=False)


def unwrap(expression: str) -> str:
    """``{{ a == b }}`` -> ``a == b``; bare expressions pass unchanged."""
    wrapped = _WRAPPED.match(expression)
    if wrapped and "{{" not in wrapped.group(1) and "}}" not in wrapped.group(1):
        return wrapped.group(1).strip()
    return expression.strip()


def _render(
    work: Callable[[Budget], T], *, step_id: str, field: str, redact: Redact | None, shell_text: bool = False
) -> T:
    """``work`` within one render's budget; every failure a TemplateError naming the step and field."""
    try:
        with budget(shell_text=shell_text) as running:
            try:
                running.tick()  # a cancelled run starts no render
                return work(running)
            except Stopped as exc:
                raise stopped(exc, running, step_id=step_id, field=field) from None
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(describe(exc, redact), step_id=step_id, field=field) from exc


def _generate(template: Any, context: Mapping[str, Any], limit: int, what: str) -> str:
    """The template's text, piece by piece: it stops as soon as the text is longer than ``limit``."""
    pieces, total = [], 0
    for piece in template.generate(context):
        tick()
        total += len(piece)
        if total > limit:
            raise _too_long(limit, what)
        pieces.append(piece)
    return "".join(pieces)


def _too_long(limit: int, what: str) -> BoundExceeded:
    unit = "bytes" if what == "command" else "characters"
    return BoundExceeded(
        f"the rendered {what} is longer than {limit:,} {unit} (the limit for a {what}); "
        "pass large data through a file or a step's output, not the template"
    )


# ``redact`` (the run's Redactor): error messages may show values, secrets among them.


def render_command(
    source: str, context: Mapping[str, Any], *, step_id: str = "", redact: Redact | None = None
) -> str:
    """Render a ``run:`` command, shell-quoting every interpolated value."""

    def work(running: Budget) -> str:
        text = _generate(_compiled_command(source), context, MAX_COMMAND_BYTES, "command")
        command = settle_marks(text, running.nonce).strip()
        if len(command.encode("utf-8", "surrogatepass")) > MAX_COMMAND_BYTES:
            raise _too_long(MAX_COMMAND_BYTES, "command")
        return command

    return _render(work, step_id=step_id, field="run", redact=redact)


def render_text(
    source: str,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
    shell_text: bool = False,
) -> str:
    """Render text for humans or non-shell consumers (no quoting)."""
    return _render(
        lambda _: _generate(_compiled_text(source), context, MAX_OUTPUT_CHARS, "text"),
        step_id=step_id,
        field=field,
        redact=redact,
        shell_text=shell_text,
    )


def evaluate(
    expression: str,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
) -> Any:
    """Evaluate a ``when``/``expect`` expression to a Python value."""

    def work(_: Budget) -> Any:
        value = _compiled_expression(expression)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()  # a bare undefined name: say so, never "false"
        return value

    return _render(work, step_id=step_id, field=field, redact=redact)


def render_data(
    value: Any,
    context: Mapping[str, Any],
    *,
    step_id: str = "",
    field: str = "",
    redact: Redact | None = None,
    shell_text: bool = False,
) -> Any:
    """Render every string inside a nested structure (ansible args); ``shell_text``: they become a command line."""
    if isinstance(value, str):
        return render_text(value, context, step_id=step_id, field=field, redact=redact, shell_text=shell_text)
    if isinstance(value, Mapping):
        return {
            k: render_data(v, context, step_id=step_id, field=field, redact=redact, shell_text=shell_text)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            render_data(v, context, step_id=step_id, field=field, redact=redact, shell_text=shell_text)
            for v in value
        ]
    return value


# --------------------------------------------------------------------------- static checks


@lru_cache(maxsize=16384)
def check(source: str, *, expression: bool = False) -> TemplateCheck:
    """Parse a template (or an expression) and report what it uses and what is wrong (``cairn validate``)."""
    from engine.core.template_lint import check_template  # noqa: PLC0415 - it builds on this module

    return check_template(source, expression=expression)


def text_environment() -> BoundedSandbox:
    """The environment text and expressions render in (its filters, tests and globals are what a template may use)."""
    return _TEXT_ENV
