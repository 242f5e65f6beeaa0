"""`cairn serve` against idle, slow and malformed clients: the real command on loopback, raw sockets.

Idle connections past the cap or the open-file limit cannot keep a real alert out; a request
head or body that drips in slower than its timeout is closed with a 408; a body nested 50,000
levels deep is a 400; and whatever a client sends, the answer is never a 5xx, the log does
not fill with one line per bad client, and ``/healthz`` keeps answering.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import select
import signal
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.serve.defaults import SERVE_DEFAULTS
from tests.cli.conftest import TOKEN, Served, alert, runs, wait_for, webhook
from tests.cli.test_cli_serve import WEB

pytestmark = pytest.mark.cli

FIRING = webhook(alert(alertname="HighLatency", severity="critical", instance="web-1:9100"))
"""A webhook the served runbook (``WEB``) runs for: detect and diagnose on web-1."""


def address(served: Served) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(served.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def log_lines(served: Served) -> list[str]:
    return served.stderr.read_text().splitlines()


def open_idle(served: Served, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing, each connected before the next (the server need not
    have accepted it yet: the kernel completes the handshake)."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(socket.create_connection(address(served), timeout=10))
    except OSError:
        for sock in opened:
            sock.close()
        raise
    for sock in opened:
        sock.setblocking(False)
    return opened


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset); never blocks."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def read_answer(sock: socket.socket, timeout: float = 20) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def healthy(served: Served) -> bool:
    return served.get("/healthz")[0] == 200


@contextlib.contextmanager
def open_files_limit(limit: int) -> Iterator[None]:
    """Lower this process's soft open-file limit while a child is started (it inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def an_alert_is_served_and_runs(served: Served) -> None:
    code, body = served.post(FIRING)
    assert code == 200, f"{body}\n{served.diagnosis()}"
    assert len(body["queued"]) == 1
    wait_for(
        lambda: [r for r in runs(served.journal) if r.status.value == "finished"],
        f"the alert's run to finish\n{served.diagnosis()}",
    )


# ---------------------------------------------------------------------------- idle connections


def test_idle_connections_past_the_cap_cannot_keep_an_alert_out(serve: Callable[..., Served]) -> None:
    served = serve(runbook=WEB)
    before = len(log_lines(served))
    cap = SERVE_DEFAULTS["max_connections"]
    idle = open_idle(served, cap + 60)
    try:
        wait_for(
            lambda: sum(closed_by_server(s) for s in idle) >= 60,
            "the server to close the oldest idle connections past its cap",
            timeout=30,
        )
        an_alert_is_served_and_runs(served)
    finally:
        for sock in idle:
            sock.close()
    said = log_lines(served)[before:]
    assert len(said) <= 2, "the cap is said once, not once per connection:\n" + "\n".join(said[:20])
    assert [line for line in said if "Traceback" in line] == []


def test_idle_connections_past_a_low_open_file_limit_cannot_keep_an_alert_out(
    serve: Callable[..., Served],
) -> None:
    with open_files_limit(256):
        served = serve(runbook=WEB)
    cap = SERVE_DEFAULTS["max_connections"]
    assert (
        f"at most 128 connections at once, not {cap} (--max-connections): half the open-file limit (256)"
        in (served.stderr.read_text())
    )
    before = len(log_lines(served))
    idle = open_idle(served, 400)
    try:
        an_alert_is_served_and_runs(served)
        assert healthy(served)
    finally:
        for sock in idle:
            sock.close()
    said = log_lines(served)[before:]
    assert [line for line in said if "Too many open files" in line] == [], "the cap kept it under the limit"
    assert len(said) <= 2, "\n".join(said[:20])


def test_when_file_descriptors_run_out_idle_connections_make_room_and_it_is_said_once(
    serve: Callable[..., Served],
) -> None:
    """The open-file limit lowered under a running server (below its connection cap): accept fails."""
    served = serve(runbook=WEB)
    resource.prlimit(served.process.pid, resource.RLIMIT_NOFILE, (150, 150))
    before = len(log_lines(served))
    idle = open_idle(served, 300)
    try:
        an_alert_is_served_and_runs(served)
        assert healthy(served)
    finally:
        for sock in idle:
            sock.close()
    said = log_lines(served)[before:]
    out_of_files = [line for line in said if "Too many open files" in line or "file descriptors" in line]
    assert 1 <= len(out_of_files) <= 2, "said once per interval:\n" + "\n".join(said[:20])
    assert len(said) <= 4, "\n".join(said[:20])
    assert [line for line in said if "Traceback" in line] == []


def test_an_idle_connection_is_closed_after_the_idle_timeout(serve: Callable[..., Served]) -> None:
    served = serve("--idle-timeout", "1", runbook=WEB)
    connection = http.client.HTTPConnection(*address(served), timeout=10)
    [never_spoke] = open_idle(served, 1)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read()
        kept_alive = connection.sock
        assert kept_alive is not None, "HTTP/1.1 keeps the connection open after the answer"
        wait_for(lambda: closed_by_server(kept_alive), "the kept-alive connection to be closed", timeout=20)
        wait_for(lambda: closed_by_server(never_spoke), "the silent connection to be closed", timeout=20)
    finally:
        never_spoke.close()
        connection.close()


# ---------------------------------------------------------------------------- slow clients

SLOW_HEAD = (
    "POST /alertmanager HTTP/1.1\r\nHost: cairn\r\n"
    f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
    + "".join(f"X-Slow-{n}: {'x' * 20}\r\n" for n in range(40))
).encode()


def drip(sock: socket.socket, data: bytes, *, every: float, deadline: float = 20) -> bytes:
    """Send ``data`` a byte at a time, ``every`` seconds apart, until the server answers or closes.

    What the server sent (``b""`` if it closed without a word); fails if it let the client drip
    for ``deadline`` seconds.
    """
    for index in range(min(len(data), int(deadline / every))):
        try:
            sock.send(data[index : index + 1])
        except (BrokenPipeError, ConnectionResetError):
            return b""
        readable, _, _ = select.select([sock], [], [], every)  # the client's pace; wakes at once on an answer
        if readable:
            return read_answer(sock)
    raise AssertionError(f"the server let a client drip {len(data)} bytes over {deadline} s")


def test_a_request_head_sent_byte_by_byte_is_closed_after_the_header_timeout(
    serve: Callable[..., Served],
) -> None:
    served = serve("--header-timeout", "1", runbook=WEB)
    before = len(log_lines(served))
    with socket.create_connection(address(served), timeout=10) as slow:
        answer = drip(slow, SLOW_HEAD, every=0.2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert healthy(served)
    an_alert_is_served_and_runs(served)
    said = log_lines(served)[before:]
    assert [line for line in said if "Traceback" in line or "Error handling request" in line] == []


@pytest.mark.parametrize("how", ["stalls", "drips", "chunked"])
def test_a_request_body_that_stalls_or_drips_is_closed_after_the_body_timeout(
    serve: Callable[..., Served], how: str
) -> None:
    served = serve("--body-timeout", "1", runbook=WEB)
    before = len(log_lines(served))
    body = FIRING.encode()
    length = (
        "Transfer-Encoding: chunked\r\n" if how == "chunked" else f"Content-Length: {len(body)}\r\n"
    ).encode()
    head = b"POST /alertmanager HTTP/1.1\r\nHost: cairn\r\n" + length
    head += f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\r\n".encode()
    with socket.create_connection(address(served), timeout=10) as slow:
        if how == "chunked":
            slow.sendall(head + f"{len(body):x}\r\n".encode() + body[:10])
            answer = read_answer(slow)
        elif how == "stalls":
            slow.sendall(head + body[:10])
            answer = read_answer(slow)
        else:
            slow.sendall(head)
            answer = drip(slow, body, every=0.2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert healthy(served)
    an_alert_is_served_and_runs(served)
    said = log_lines(served)[before:]
    assert [line for line in said if "Traceback" in line or "Error handling request" in line] == []


def test_a_stalled_client_does_not_hold_up_sigterm(serve: Callable[..., Served]) -> None:
    served = serve(runbook=WEB)  # the default body timeout (30 s) is longer than the wait below
    head = f"POST /alertmanager HTTP/1.1\r\nHost: cairn\r\nAuthorization: Bearer {TOKEN}\r\n"
    with socket.create_connection(address(served), timeout=10) as stalled:
        stalled.sendall((head + "Content-Length: 100\r\n\r\n{").encode())
        # /healthz is answered after the stalled head is read: its bytes came first, on the same loop.
        wait_for(lambda: healthy(served), "the server to read the stalled request")
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=20) == 0
        answer = read_answer(stalled)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"cairn serve is stopping: send it again" in answer


# ---------------------------------------------------------------------------- malformed bodies


def test_json_nested_50000_levels_is_a_400_and_the_server_stays_healthy(serve: Callable[..., Served]) -> None:
    served = serve(runbook=WEB)
    before = len(log_lines(served))
    for deep in (
        "[" * 50_000 + "]" * 50_000,
        '{"version": "4", "alerts": [], "x": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}",
    ):
        code, body = served.post(deep)
        assert code == 400, body
        assert "nested deeper than" in body["error"]
    assert healthy(served)
    an_alert_is_served_and_runs(served)
    assert [line for line in log_lines(served)[before:] if "Traceback" in line] == []


# ---------------------------------------------------------------------------- fuzzing

ANSWERS = {200, 400, 401, 404, 405, 408, 413, 415, 417}
"""What a client may get: 200 (a valid webhook, /healthz, /metrics) or a 4xx, never a 5xx."""

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
maybe_text = st.text(max_size=20) | json_values
alert_shaped = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved"]) | json_values,
        "labels": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4) | json_values,
        "annotations": st.dictionaries(st.text(max_size=10), maybe_text, max_size=3) | json_values,
        "fingerprint": maybe_text,
        "startsAt": maybe_text,
        "endsAt": maybe_text,
        "generatorURL": maybe_text,
    },
)
webhook_shaped = st.fixed_dictionaries(
    {"version": st.just("4") | json_values},
    optional={
        "alerts": st.lists(alert_shaped, max_size=3) | json_values,
        "receiver": maybe_text,
        "groupKey": maybe_text,
        "truncatedAlerts": st.integers() | json_values,
        "groupLabels": json_values,
    },
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | webhook_shaped.map(lambda v: json.dumps(v).encode())
    | webhook_shaped.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
)
header_names = st.sampled_from(
    [
        "Content-Type",
        "Content-Encoding",
        "Transfer-Encoding",
        "Authorization",
        "Expect",
        "Connection",
        "X-Any",
    ]
) | st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z")
header_values = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"]),
        "path": st.sampled_from(
            ["/alertmanager", "/healthz", "/metrics", "/", "/alertmanager/x", "/%ff?a=%00"]
        ),
        "token": st.sampled_from([TOKEN, "wrong", None]),
        "body": bodies,
        "headers": st.lists(st.tuples(header_names, header_values), max_size=4),
        "length": st.sampled_from(["exact", "chunked", "none"]),
    }
)


def send_raw(served: Served, request: dict[str, object] | bytes) -> bytes:
    """One request written by hand (any header bytes), ``Connection: close``; the server's answer.

    ``bytes``: sent as they are, then an empty line (whatever they are, a request head ends there).
    """
    if isinstance(request, bytes):
        with socket.create_connection(address(served), timeout=10) as sock:
            sock.sendall(request + b"\r\n\r\n")
            return read_answer(sock, timeout=10)
    body = request["body"]
    assert isinstance(body, bytes)
    lines = [f"{request['method']} {request['path']} HTTP/1.1".encode(), b"Host: cairn", b"Connection: close"]
    if request["token"] is not None:
        lines.append(f"Authorization: Bearer {request['token']}".encode())
    for name, value in request["headers"]:  # type: ignore[attr-defined]
        lines.append(name.encode() + b": " + value)
    if request["length"] == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    else:
        if request["length"] == "exact":
            lines.append(f"Content-Length: {len(body)}".encode())
        payload = body
    with socket.create_connection(address(served), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
        return read_answer(sock, timeout=10)


def test_whatever_a_client_sends_the_answer_is_never_a_5xx(serve: Callable[..., Served]) -> None:
    # A head or body the fuzz leaves open (an empty request, a Content-Length too long) gets a 408.
    served = serve("--header-timeout", "2", "--body-timeout", "2", runbook=WEB)
    before = len(log_lines(served))
    seen: set[int] = set()

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        requests | st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"POST / HTTP/1.1\r\n" + b)
    )
    def answered_without_a_fault(request: dict[str, object] | bytes) -> None:
        answer = send_raw(served, request)
        status = _STATUS.match(answer)
        assert status is not None, f"every request is answered, never dropped: {answer[:200]!r}"
        code = int(status.group(1))
        seen.add(code)
        assert code in ANSWERS, answer[:500]
        assert served.process.poll() is None, served.diagnosis()

    answered_without_a_fault()
    assert healthy(served)
    assert {200, 400} <= seen, f"the fuzz reached the webhook's checks, not only aiohttp's: {seen}"
    said = log_lines(served)[before:]
    assert [line for line in said if "Traceback" in line] == [], "\n".join(said[:40])
    assert len(said) <= 5, "bad clients are said at most once per interval:\n" + "\n".join(said[:40])


def test_the_limits_are_in_help(cairn: Callable[..., object], tmp_path: Path) -> None:
    result = cairn("serve", "--help")
    text = " ".join(result.stdout.split())  # type: ignore[attr-defined]
    for option in ("--max-connections", "--header-timeout", "--body-timeout", "--idle-timeout"):
        assert option in text
    assert f"default {SERVE_DEFAULTS['max_connections']}" in text
