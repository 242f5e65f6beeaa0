"""A run in a child process, its questions answered by the process that started it.

Why: in one process, a 50-host fan-out puts 50 host workers (and, over SSH, 50
paramiko transport threads) beside a front end's own thread, and every chunk of
output they read is a turn at the GIL. The TUI's UI thread lost about half its
time to those turns: a key pressed while 50 hosts streamed took twice as long
to show as the same key on an idle run (``python -m bench tui``). In its own
process the run costs the front end only the events it receives, in batches.

The child runs exactly what ``cairn run`` runs: the same :class:`~engine.core.spec.RunSpec`,
given to :func:`engine.core.launch.prepare_run`, and journals it itself. It has
two questions for the human, both answered in the parent by the front end's own
objects: may this step run now (a :class:`~engine.core.stepping.StepPacer`),
and is this remediation approved (an :class:`~engine.core.approval.AskingApprover`).
So stepping, approvals and cancel behave as they would in one process.

Protocol: pickled messages over a socket pair (``multiprocessing.connection``
framing), child and parent both trusted (the parent started the child).

* parent → child: a :class:`RunOrder` (the spec and the journal), then ``("answer", n, value)`` for each
  question and ``("cancel",)`` once the human cancels.
* child → parent: ``("events", [Event, ...])`` in order and in batches,
  ``("pace", n, PaceRequest)``, ``("approve", n, ApprovalRequest)``,
  ``("crashed", text)``, and ``("done",)`` at the end.

If the parent goes away (the TUI quit or was killed), the child cancels the run:
steps in flight are killed where they run and the journal says ``interrupted``.
The child's own stdout and stderr go to a file, never to the terminal behind the
front end; their tail is shown if the child dies.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from engine.core.approval import Approval, ApprovalRequest, Decision
from engine.core.events import Event
from engine.core.pacing import Pace, PaceDecision, PaceRequest
from engine.core.redaction import Redactor
from engine.core.spec import RunSpec
from engine.core.store.location import Location

EVENT_BATCH_S = 0.03
"""Seconds the child gathers events before it sends them (the UI redraws ten times a second)."""
CANCEL_POLL_S = 0.2
"""How often the parent looks whether the human cancelled (the cancel is a ``threading.Event``)."""
ERROR_TAIL = 2000
"""Characters of the child's stderr shown when it dies."""
CHILD_MODULE = "engine.core.run_process"
"""What the child runs (``python -m``): this module."""


@dataclass(frozen=True)
class RunOrder:
    """What the child needs: the run, unchanged from the front end, and the journal to keep it in."""

    spec: RunSpec
    journal: Location | Path | None
    """The journal (a file, or a PostgreSQL database); ``None``: ``$CAIRN_JOURNAL`` or the default."""


# ---------------------------------------------------------------------------- parent


@dataclass(frozen=True)
class RunHandlers:
    """The parent's side of a run: who answers its questions and who hears from it."""

    pace: Callable[[PaceRequest], PaceDecision]
    """May this step run now? Called on its own thread: it blocks until the human decides."""
    approve: Callable[[ApprovalRequest], Approval]
    """Is this remediation approved? Called on its own thread, like ``pace``."""
    cancel: threading.Event
    """Set by the human to cancel the run; passed on to the child."""
    on_events: Callable[[Sequence[Event]], None]
    """The run's events, in order, in batches."""
    on_crash: Callable[[str], None]
    """What went wrong when the run could not start or its process died."""


def run_in_child(order: RunOrder, handlers: RunHandlers) -> None:
    """Run ``order`` in a child process until it ends; blocks, so call it in a worker thread."""
    with tempfile.TemporaryFile() as output:
        try:
            child, conn = spawn_child(output)
        except OSError as exc:
            handlers.on_crash(f"cannot start the run's process: {exc}")
            return
        with conn:
            ended = _ParentLink(conn).serve(order, handlers)
        code = child.wait()
        if not ended:
            output.seek(0)
            tail = output.read().decode("utf-8", "replace")[-ERROR_TAIL:].strip()
            handlers.on_crash(
                f"the run's process ended unexpectedly (exit code {code})" + (f":\n{tail}" if tail else "")
            )


def spawn_child(output: IO[bytes]) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a run process; its stdout and stderr go to ``output``. The connection is the parent's end."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        child = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # outside the terminal's job control: Ctrl-Z or a hangup is the parent's
        )
        return child, Connection(ours.detach())


class _ParentLink:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # the child is gone: its end says so
            self.conn.send(message)

    def serve(self, order: RunOrder, handlers: RunHandlers) -> bool:
        """Answer the child until it says it is done (``True``) or its end closes (``False``)."""
        self.send(order)
        finished = threading.Event()
        threading.Thread(target=self._forward_cancel, args=(handlers.cancel, finished), daemon=True).start()
        try:
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return False
                match message:
                    case ("events", list() as events):
                        handlers.on_events(events)
                    case ("pace", int() as n, PaceRequest() as request):
                        self._answer_later(n, handlers.pace, request)
                    case ("approve", int() as n, ApprovalRequest() as request):
                        self._answer_later(n, handlers.approve, request)
                    case ("crashed", str() as text):
                        handlers.on_crash(text)
                    case ("done",):
                        return True
        finally:
            finished.set()

    def _answer_later(self, n: int, ask: Callable[[Any], object], request: object) -> None:
        # One thread per question: each blocks until the human decides (a 50-host step asks 50 times).
        def answer() -> None:
            self.send(("answer", n, ask(request)))

        threading.Thread(target=answer, name=f"cairn-answer-{n}", daemon=True).start()

    def _forward_cancel(self, cancel: threading.Event, finished: threading.Event) -> None:
        while not finished.is_set():
            if cancel.wait(CANCEL_POLL_S):
                self.send(("cancel",))
                return


# ---------------------------------------------------------------------------- child


class _Slot:
    """A question the child waits on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None


class _ChildLink:
    """The child's end: sends events in batches, asks questions, hears answers and the cancel."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cancel = threading.Event()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._wake = threading.Event()
        self._slots: dict[int, _Slot] = {}
        self._numbers = itertools.count(1)
        self._gone = False
        self._stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._hear, name="cairn-hear", daemon=True).start()
        threading.Thread(target=self._batch, name="cairn-events", daemon=True).start()

    def event(self, event: Event) -> None:
        """An event-bus subscriber: keep ``event`` for the next batch."""
        with self._lock:
            self._events.append(event)
            first = len(self._events) == 1
        if first:
            self._wake.set()

    def flush(self) -> None:
        """Send every kept event now (before a question, so the parent sees what led to it)."""
        with self._send_lock:
            with self._lock:
                events, self._events = self._events, []
            if events:
                self._send_locked(("events", events))

    def send(self, message: object) -> None:
        with self._send_lock:
            self._send_locked(message)

    def _send_locked(self, message: object) -> None:
        if self._gone:
            return
        try:
            self.conn.send(message)
        except OSError:
            self._parent_gone()

    def ask(self, kind: str, request: object, fallback: object) -> object:
        """Ask the parent; ``fallback`` if it is gone (a cancelled run: see the module docstring)."""
        slot = _Slot()
        with self._lock:
            if self._gone:
                return fallback
            n = next(self._numbers)
            self._slots[n] = slot
        self.flush()
        self.send((kind, n, request))
        slot.done.wait()
        with self._lock:
            self._slots.pop(n, None)
        return slot.value if slot.value is not None else fallback

    def stop(self) -> None:
        """The run is over: send what is left, then ``done``."""
        self._stopped.set()
        self._wake.set()
        self.flush()
        self.send(("done",))

    def _batch(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait()
            self._wake.clear()
            time.sleep(EVENT_BATCH_S)
            self.flush()

    def _hear(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._parent_gone()
                return
            match message:
                case ("answer", int() as n, value):
                    with self._lock:
                        slot = self._slots.get(n)
                    if slot is not None:
                        slot.value = value
                        slot.done.set()
                case ("cancel",):
                    self.cancel.set()

    def _parent_gone(self) -> None:
        """Nobody is left to answer: cancel the run and let every waiting question go."""
        self.cancel.set()
        with self._lock:
            self._gone = True
            slots = list(self._slots.values())
        for slot in slots:
            slot.done.set()


class _RemotePacer:
    def __init__(self, link: _ChildLink) -> None:
        self.link = link

    def before(self, request: PaceRequest) -> PaceDecision:
        # Without a parent the step "runs": the runner sees the cancel first and ends it as interrupted.
        answer = self.link.ask("pace", request, PaceDecision(Pace.RUN))
        return answer if isinstance(answer, PaceDecision) else PaceDecision(Pace.RUN)


GONE = "not run: the front end that started the run went away before anyone answered"


class _RemoteApprover:
    def __init__(self, link: _ChildLink) -> None:
        self.link = link

    def decide(self, request: ApprovalRequest) -> Approval:
        gone = Approval(Decision.NOT_ASKED, "cairn", GONE)
        answer = self.link.ask("approve", request, gone)
        return answer if isinstance(answer, Approval) else gone


def child_main(fd: int) -> int:
    """The child: read the order, run it, report; the exit code says whether it could report."""
    from engine.core.journal import journal_for_a_run  # noqa: PLC0415
    from engine.core.launch import prepare_run  # noqa: PLC0415

    conn = Connection(fd)
    try:
        order = conn.recv()
    except (EOFError, OSError):
        print("cairn: the parent closed before it sent the run", file=sys.stderr)
        return 1
    if not isinstance(order, RunOrder):
        print(f"cairn: expected a run order from the parent, got {type(order).__name__}", file=sys.stderr)
        return 2
    link = _ChildLink(conn)
    link.start()
    try:
        journal = journal_for_a_run(order.journal)
    except Exception as exc:  # said to the human, as the in-process run did
        link.send(("crashed", str(exc)))
        link.stop()
        return 0
    try:
        runner = prepare_run(
            order.spec,
            journal=journal,
            approver=_RemoteApprover(link),
            pacer=_RemotePacer(link),
            cancel=link.cancel,
        )
        runner.bus.subscribe(link.event)
        with contextlib.suppress(KeyboardInterrupt):  # interrupted: RunFinished has said so
            runner.run()
    except Exception as exc:  # a fault of Cairn's: shown by the front end, never a silent exit
        redact = Redactor.for_run(order.spec.runbook, order.spec.inputs, order.spec.hosts)
        link.send(("crashed", redact(f"{type(exc).__name__}: {exc}")))
    finally:
        journal.close()
        link.stop()
        conn.close()
    return 0


if __name__ == "__main__":
    # Run the imported module's code, not this __main__ copy: the order unpickles as
    # engine.core.run_process.RunOrder.
    from engine.core.run_process import child_main as _child_main

    sys.exit(_child_main(int(sys.argv[1])))
