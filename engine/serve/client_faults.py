"""What a misbehaving HTTP client gets from ``cairn serve``: a 4xx, never a 5xx; and what the log gets: one line per interval.

:func:`refuse_client_faults` wraps aiohttp's request handler (outside the application, so it
sees what the application's own ``Expect`` handling and the webhook handler would choke on):

* a header whose bytes are not UTF-8 → 400 (aiohttp hands such bytes on as lone surrogates,
  which make ``str.encode`` fail wherever a handler compares or echoes them);
* an ``Expect`` other than ``100-continue`` → 417;
* a body that cannot be read (a broken chunk, a ``Content-Encoding`` that does not decode) → 400;
* a client gone before its body came (or closed by :mod:`engine.serve.connections`) → a 400
  nobody reads, instead of aiohttp's 500 and traceback.

aiohttp logs every request it cannot parse with a traceback; :class:`HttpLog` turns its
records into one line each, at most once per interval per kind (:class:`Throttle`): a client
sending garbage cannot fill the log. A fault of Cairn's own is said in one line too, with
the exception; ``cairn -vv serve`` shows the tracebacks.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

INTERVAL = 60.0
"""Seconds between two lines of the same kind."""

_NOT_UTF8 = re.compile("[\udc80-\udcff]")
"""What aiohttp makes of bytes that are not UTF-8 in a header (``surrogateescape``)."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Throttle:
    """Says each kind of thing at most once per ``interval``, with how many were held back since."""

    def __init__(
        self,
        say: Callable[[str], None],
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, line: str) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held:
            line += f" ({held} more like it in the last {now - (last or now):.0f} s)"
        self._say(line)


def refuse_client_faults(handler: Handler) -> Handler:
    """``handler``, with what a client got wrong answered 4xx before or instead of a 500."""

    async def refusing(request: web.BaseRequest) -> web.StreamResponse:
        refused = _header_problem(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except web.RequestPayloadError as exc:
            return _error(400, f"the request body could not be read: {_first_line(exc)}")
        except ConnectionResetError:  # nobody reads this answer: the connection is gone
            return _error(400, "the connection closed before the request body arrived")

    return refusing


def _header_problem(request: web.BaseRequest) -> web.Response | None:
    for name, value in request.headers.items():
        if _NOT_UTF8.search(name) or _NOT_UTF8.search(value):
            shown = _NOT_UTF8.sub("\N{REPLACEMENT CHARACTER}", name)[:40]
            return _error(400, f"the {shown} header is not UTF-8 text")
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None and expect.strip().lower() != "100-continue":
        return _error(417, "Expect: only 100-continue is understood")
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one short line: aiohttp's own message, without the bytes it quotes."""
    cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) and exc.__cause__ else exc
    text = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0].rstrip(":")[:200] if lines else type(cause).__name__


class HttpLog(logging.Handler):
    """aiohttp's server log (``RequestHandler(logger=…)``) as one line per kind per interval."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__(logging.INFO)
        self._throttle = throttle

    def emit(self, record: logging.LogRecord) -> None:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, HttpProcessingError | web.RequestPayloadError):
            self._throttle("bad-request", f"refused a request it could not read: {_first_line(failure)}")
        elif isinstance(failure, ConnectionError):
            return  # the client went away: nothing to say
        elif failure is not None:
            self._throttle(
                f"fault:{type(failure).__name__}",
                f"a fault in Cairn while answering a request: {type(failure).__name__}: "
                f"{_first_line(failure)} (`cairn -vv serve` shows the traceback)",
            )
        else:
            self._throttle(f"said:{record.msg}", record.getMessage().splitlines()[0][:300])


def http_logger(throttle: Throttle) -> logging.Logger:
    """The logger to give aiohttp's request handlers: its records go through :class:`HttpLog`.

    They also propagate, so ``cairn -vv`` (which configures the root logger) shows them whole.
    """
    logger = logging.getLogger("engine.serve.http")
    for old in [h for h in logger.handlers if isinstance(h, HttpLog)]:
        logger.removeHandler(old)
    logger.addHandler(HttpLog(throttle))
    return logger
