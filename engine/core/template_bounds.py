"""How much one template render may take: time, output, what it builds; and who may stop it.

Every render (:mod:`engine.core.expr`: commands, text, ``when``/``expect``, reports, ansible args)
runs inside a :class:`Budget`: a deadline (:data:`MAX_RENDER_SECONDS`, never later than the step's
own timeout), the run's cancel event (set on Ctrl-C, SIGTERM, the TUI's cancel, a server stopping),
and the sizes below. The sandbox (:mod:`engine.core.template_sandbox`) checks them at every call,
filter, test, operator, slice, ``~`` and loop iteration, and refuses a size argument *before*
anything is allocated (``'a' * 10**9``, ``'%1000000000s' % x``, ``center(10**9)``). A step says what
it may do with :func:`rendering` (its timeout, the cancel event, ``allow_unquoted``) around its renders.

The limits, stated once (docs/runbook-format.md §6 says the same):
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Undefined
from jinja2.utils import Namespace

from engine.core.errors import TemplateError

MAX_RENDER_SECONDS = 2.0
"""Seconds of its own CPU time one template may take to render (less when the step's timeout is
shorter). CPU time, not the clock: a run on hundreds of hosts has as many threads taking turns at
the interpreter, and one of them rendering ``uname -r`` waited over 2 s for its turn (a 500-host
run failed a host that way); a loop that never ends burns CPU and is stopped all the same."""
MAX_RENDER_WAIT = 30.0
"""Seconds by the clock a render may last, waiting included, outside a step with a shorter timeout."""
MAX_OUTPUT_CHARS = 1 << 20
"""Characters a rendered text (instructions, report, ansible argument) may have: 1 MiB."""
MAX_COMMAND_BYTES = 64 << 10
"""Bytes (UTF-8) a rendered ``run`` command may have: 64 KiB. Linux refuses one argument over
128 KiB (``bash -c COMMAND`` is one, here and on an SSH host), and the SSH executor quotes it again."""
MAX_TEXT_CHARS = 8 << 20
"""Characters of any text a template builds on the way (as much as a step's captured output)."""
MAX_ITEMS = 1 << 18
"""Items of any list or dict a template builds (262144)."""
MAX_INT_BITS = 1 << 16
"""Bits of any integer a template computes (about 19,700 digits)."""
MAX_WORK = 128 << 20
"""All a render may build, in characters (a list item counts as 32): adding to a text in a loop
builds it again every time, so this bounds memory however the template goes about it."""
ITEM_COST = 32

_MiB = 1 << 20


def _amount(n: int, unit: str) -> str:
    return f"{n / _MiB:g} MiB" if n >= _MiB and unit == "characters" else f"{n:,} {unit}"


class TemplateRefusal(Exception):
    """The sandbox refused something a template does; the message says what and how to do it instead."""


class BoundExceeded(TemplateRefusal):
    """A template would build or render more than a limit allows."""


class Stopped(Exception):
    """The render must stop: its deadline passed or the run was cancelled (see :func:`stopped`)."""


class _DeadlinePassed(Stopped):
    pass


class _Cancelled(Stopped):
    pass


class RenderTimeout(TemplateError):
    """A render took longer than it may; ``step_timeout`` when the step's own timeout was the limit."""

    def __init__(self, message: str, *, step_id: str, field: str, step_timeout: bool) -> None:
        super().__init__(message, step_id=step_id, field=field)
        self.step_timeout = step_timeout


class RenderCancelled(TemplateError):
    """The run was cancelled (Ctrl-C, SIGTERM, the TUI's cancel) while a template rendered."""


@dataclass(frozen=True, slots=True)
class RenderPolicy:
    """What the step being rendered allows: its timeout, the run's cancel event, ``allow_unquoted``."""

    timeout: float = MAX_RENDER_SECONDS
    """The step's timeout: no render of it may take longer."""
    cancel: threading.Event | None = None
    allow_unquoted: bool = False
    """The step says why ``| unquoted`` may take untrusted text (``allow_unquoted: <reason>``)."""


@dataclass(slots=True)
class Budget:
    """One render's deadline and what it has built so far."""

    policy: RenderPolicy
    seconds: float
    """The time limit this render has (the smaller of the template's and the step's)."""
    by_step: bool
    """The step's timeout is the limit (else :data:`MAX_RENDER_SECONDS`)."""
    deadline: float
    """By the clock: the earliest moment the limit can have been spent (CPU time never runs ahead
    of the clock). Only past it is the thread's CPU time asked for (a system call)."""
    cpu_deadline: float
    """This thread's CPU time (:func:`time.thread_time`) at which the limit is spent."""
    wall_deadline: float
    """By the clock, waiting included: the step's timeout, else :data:`MAX_RENDER_WAIT`."""
    shell_text: bool = False
    """Text that becomes shell code (an ansible shell or command module's arguments)."""
    work: int = 0
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    """Marks untrusted words in a command until the render ends (see template_sandbox)."""

    def tick(self) -> None:
        """Stop the render when its time is up or the run is cancelled."""
        cancel = self.policy.cancel
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        now = time.monotonic()
        if now > self.deadline and (now > self.wall_deadline or time.thread_time() > self.cpu_deadline):
            raise _DeadlinePassed

    def spend(self, amount: int) -> None:
        """Count ``amount`` characters built; past :data:`MAX_WORK` the render is refused."""
        self.work += amount
        if self.work > MAX_WORK:
            raise BoundExceeded(
                f"the template builds more than {_amount(MAX_WORK, 'characters')} in all (the limit); "
                "adding to a text or list in a loop builds it again each time: use join, map or select"
            )


_DEFAULT = RenderPolicy()
_POLICY: ContextVar[RenderPolicy | None] = ContextVar("cairn_render_policy", default=None)
_BUDGET: ContextVar[Budget | None] = ContextVar("cairn_render_budget", default=None)


@contextmanager
def rendering(policy: RenderPolicy) -> Iterator[RenderPolicy]:
    """Renders in this block (this thread) follow ``policy``: a step's timeout, cancel and allowances."""
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def policy() -> RenderPolicy:
    """The policy renders follow here (the default outside a step)."""
    return _POLICY.get() or _DEFAULT


@contextmanager
def budget(*, shell_text: bool = False) -> Iterator[Budget]:
    """One render's budget, started now under the current policy."""
    rules = policy()
    seconds = min(MAX_RENDER_SECONDS, rules.timeout)
    by_step = rules.timeout < MAX_RENDER_SECONDS
    now = time.monotonic()
    wall = seconds if by_step else max(rules.timeout, MAX_RENDER_WAIT)
    started = Budget(
        rules, seconds, by_step, now + seconds, time.thread_time() + seconds, now + wall, shell_text
    )
    token = _BUDGET.set(started)
    try:
        yield started
    finally:
        _BUDGET.reset(token)


def current() -> Budget | None:
    """The budget of the render in progress on this thread (``None`` outside a render: compiling)."""
    return _BUDGET.get()


def tick() -> None:
    """Check the render's deadline and cancel (no-op outside a render)."""
    running = _BUDGET.get()
    if running is not None:
        running.tick()


def spend(amount: int) -> None:
    """Count what a render built (no-op outside a render)."""
    running = _BUDGET.get()
    if running is not None:
        running.spend(amount)


def stopped(exc: Stopped, running: Budget, *, step_id: str, field: str) -> TemplateError:
    """The error a step shows for a render its deadline or a cancel stopped."""
    if isinstance(exc, _Cancelled):
        return RenderCancelled("cancelled while rendering; nothing ran", step_id=step_id, field=field)
    limit = f"{running.seconds:g} s"
    if running.by_step:
        why = f"timed out after {limit} (the step's timeout) while rendering; nothing ran"
    else:
        why = (
            f"rendering took longer than {limit} (the limit for a template); nothing ran: look for a "
            "loop over a large range, loops inside loops, or a macro that calls itself"
        )
    return RenderTimeout(why, step_id=step_id, field=field, step_timeout=running.by_step)


# --------------------------------------------------------------------------- sizes


def size_of(value: Any, limit: int = MAX_TEXT_CHARS) -> int:
    """About how many characters ``str(value)`` has; counting stops soon after ``limit``.

    Walks containers without building anything (a list holding one big text many times counts it
    each time, as its text would), so it is safe to ask before converting a value to text."""
    total, stack, seen = 0, [value], 0
    while stack and total <= limit:
        item = stack.pop()
        seen += 1
        if seen & 0xFFF == 0:
            tick()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 30103 // 100000 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(k for pair in item.items() for k in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            attrs = object.__getattribute__(item, "_Namespace__attrs")
            total += 14 + 4 * len(attrs)
            stack.extend(k for pair in attrs.items() for k in pair)
        elif isinstance(item, Undefined):
            continue  # converting it fails with its own message
        else:
            total += 64
    return total


def check_text(chars: int, what: str) -> None:
    """Refuse building a text of ``chars`` characters when that is more than :data:`MAX_TEXT_CHARS`."""
    if chars > MAX_TEXT_CHARS:
        raise BoundExceeded(
            f"{what} would be {_amount(chars, 'characters')}, more than a template may build "
            f"({_amount(MAX_TEXT_CHARS, 'characters')})"
        )


def check_items(count: int, what: str) -> None:
    """Refuse building a list or dict of ``count`` items when that is more than :data:`MAX_ITEMS`."""
    if count > MAX_ITEMS:
        raise BoundExceeded(
            f"{what} would have {count:,} items, more than a template may build ({MAX_ITEMS:,})"
        )


def check_bits(bits: int, what: str) -> None:
    """Refuse computing an integer of ``bits`` bits when that is more than :data:`MAX_INT_BITS`."""
    if bits > MAX_INT_BITS:
        raise BoundExceeded(
            f"{what} would be a number of about {bits * 30103 // 100000:,} digits, more than a "
            f"template may compute ({MAX_INT_BITS * 30103 // 100000:,})"
        )


def settle(result: Any, sources: tuple[Any, ...], what: str) -> Any:
    """Check what an operation built (its size; charge it to the render) and give it back."""
    if any(result is s for s in sources):
        return result  # passed through: nothing new was built
    if isinstance(result, str | bytes | bytearray):
        check_text(len(result), what)
        spend(len(result))
    elif isinstance(result, list | tuple | dict | set | frozenset):
        check_items(len(result), what)
        spend(ITEM_COST * len(result))
    elif isinstance(result, int) and not isinstance(result, bool):
        check_bits(result.bit_length(), what)
    return result


# --------------------------------------------------------------------------- what an argument would build

_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsab%])")
_SPEC_NUMBER = re.compile(r"\d+")


def printf_size(fmt: str | bytes, args: Any) -> int:
    """About how long ``fmt % args`` is, counted without formatting (widths, precisions, values)."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    total, index = len(text), 0

    def take() -> Any:
        nonlocal index
        value = positional[index] if index < len(positional) else None
        index += 1
        return value

    for found in _PRINTF.finditer(text):
        key, width, precision, conversion = found.groups()
        if conversion == "%":
            continue
        sizes = [int(n) if n.isdigit() else _int_or_zero(take()) for n in (width, precision) if n]
        value = mapping.get(key) if mapping is not None and key is not None else take()
        total += max([*sizes, size_of(value)])
        if total > MAX_TEXT_CHARS:
            break
    return total


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def spec_width(spec: str) -> int:
    """The largest width or precision a format spec (``>10``, ``.3f``) asks for."""
    return max((int(n) for n in _SPEC_NUMBER.findall(spec)), default=0)
