"""This ``cairn serve`` as a holder of work in the store: its lease, the takeover loop, and the guard on its runs.

Several servers share one store (a PostgreSQL database, or one SQLite file on one machine), all
active. Each is a **holder** (:mod:`engine.core.store.leases`): at start it registers a lease, which
a heartbeat renews every third of ``--lease``; the entries it claims and the runs it starts carry
its id. Every heartbeat (and once at start) :class:`Tenure` looks for servers whose lease ran
out — killed, paused, cut off — and puts their work back in the queue (``AlertQueue.take_over``);
the workers are woken to claim it, and resume each run from the journal.

**Held, by this process's clock.** The store's fence refuses a remediation step of a server whose
lease lapsed, atomically with recording the step's start. Before that, this process also checks
its own clock: a renewal *asked* at T holds the lease until at least T + ``ttl`` by the store's
clock, so while the last renewal asked is younger than ``ttl`` the lease surely holds. A server
frozen (SIGSTOP, a paused VM) past its lease wakes up with an older one: its workers claim nothing
and its runs start no step (:class:`HeldPacer`) until the heartbeat has renewed the lease — or
found it lost.

**Lost** (the heartbeat's renewal refused, or the fence refused a step): whoever asked to hear it
(:meth:`Tenure.when_lost`) is told once, from the thread that found out — the workers stop
claiming and cancel their runs; the server hands back what it still holds and registers again
under a new lease (see :mod:`engine.serve.server`). A lost lease never holds again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core.alert_queue import AlertQueue
from engine.core.errors import JournalError, JournalUnwritable
from engine.core.pacing import Pace, PaceDecision, PaceRequest
from engine.core.store.leases import Lease, Takeover

if TYPE_CHECKING:
    from engine.core.store.location import Location
    from engine.serve.metrics import Metrics

log = logging.getLogger(__name__)


class _TimedLease(Lease):
    """A :class:`Lease` that also remembers when, by this process's monotonic clock, its last
    renewal that went through was asked (the clock keeps counting while the process is frozen)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.changed = threading.Condition()
        """Notified at each renewal that went through, and when the lease is lost."""
        self.renewal_asked = float("-inf")

    def start(self) -> None:
        asked = time.monotonic()
        super().start()
        self._renewed(asked)

    def renew(self) -> bool:
        asked = time.monotonic()
        held = super().renew()
        if held:
            self._renewed(asked)
        return held

    def _renewed(self, asked: float) -> None:
        with self.changed:
            self.renewal_asked = asked
            self.changed.notify_all()


class Tenure:
    """This server's lease in the store at ``location`` and the loop that takes over lapsed servers' work."""

    def __init__(self, location: Location, ttl: float, metrics: Metrics) -> None:
        self.metrics = metrics
        self.lease = _TimedLease(location, kind="serve", ttl=ttl, heartbeat=ttl / 3, on_lost=self._lost)
        self.ttl = ttl
        self.queue = AlertQueue(location, holder=self.lease.id)
        """The loop's own connection: a takeover never waits behind a worker's call in Python."""
        self._listeners: list[Callable[[str], None]] = []
        self._wake: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def id(self) -> str:
        """This server's holder id (``HOST:PID:RANDOM``): its entries, runs and ledger rows carry it."""
        return self.lease.id

    @property
    def lost(self) -> str:
        """Why the lease is lost ("" while it holds)."""
        return self.lease.lost

    def when_lost(self, listener: Callable[[str], None]) -> None:
        """Tell ``listener`` (why) once when the lease is lost, from the thread that found out: it must not block."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ life

    def start(self, wake: Callable[[], None]) -> Takeover:
        """Register the lease, take over what lapsed servers left (``wake`` the workers for it) and
        keep looking every heartbeat; what the first look found."""
        self._wake = wake
        self.lease.start()
        found = self.look()
        self._thread = threading.Thread(target=self._keep_looking, name="cairn-takeover", daemon=True)
        self._thread.start()
        return found

    def release(self, note: str) -> None:
        """The server stops and has handed its work back: its lease ends now (nobody waits for it)."""
        self.stop_looking()
        self.lease.release(note)

    def stop_looking(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.lease.heartbeat * 2)

    def close(self) -> None:
        self.stop_looking()
        self.lease.close()
        self.queue.close()

    # ------------------------------------------------------------------ takeovers

    def look(self) -> Takeover:
        """Take over the work of servers whose lease ran out (one transaction); wake the workers for it."""
        try:
            found = self.queue.take_over()
        except JournalError as exc:  # the store refuses or does not answer: the next heartbeat looks again
            if isinstance(exc, JournalUnwritable):
                self.metrics.health.journal_refused(exc)
            else:
                log.error("could not look for stopped servers: %s", exc)
            return Takeover()
        if found.holders:
            self.metrics.takeovers.inc(len(found.holders))
        if found.entries:
            self.metrics.entries_taken_over.inc(len(found.entries))
            self.metrics.health.say(
                f"took over from {', '.join(found.holders) or 'a stopped server'}: entries "
                f"{', '.join(map(str, found.entries))} queued again (their runs resume)"
            )
            self._wake()
        return found

    def _keep_looking(self) -> None:
        while not self._stop.wait(self.lease.heartbeat):
            if self.lost:
                return
            if self.holds():  # a server frozen past its lease takes nothing over before its renewal
                self.look()

    # ------------------------------------------------------------------ held?

    def holds(self) -> bool:
        """Whether the lease surely holds now: not lost, and its last renewal asked less than ``ttl`` ago."""
        return not self.lost and time.monotonic() - self.lease.renewal_asked < self.ttl

    def wait_held(self, timeout: float) -> bool:
        """:meth:`holds`, waiting up to ``timeout`` seconds for the heartbeat to renew the lease (or lose it)."""
        deadline = time.monotonic() + timeout
        with self.lease.changed:
            while not self.holds() and not self.lost:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lease.changed.wait(min(left, self.lease.heartbeat))
        return self.holds()

    def state(self) -> str:
        """``held``, or ``lost: why`` (``/healthz``)."""
        return f"lost: {self.lost}" if self.lost else "held"

    def _lost(self, why: str) -> None:
        with self.lease.changed:
            self.lease.changed.notify_all()
        self.metrics.health.say(
            f"this server ({self.id}) lost its lease: {why}; its runs are cancelled, what it still holds "
            "is handed back, and it registers again as a new server"
        )
        for listener in self._listeners:
            try:
                listener(why)
            except Exception:  # one listener's fault must not keep the others from hearing it
                log.exception("a lease-lost listener failed")


class HeldPacer:
    """Asked before every step of a run: the step starts only while the server holds its lease.

    When the lease does not surely hold (the process was frozen past it), the run waits for the
    heartbeat to settle it; lost (or still not renewed after a whole lease), the run is cancelled:
    the step and the rest are recorded not run, and the run ends interrupted.
    """

    def __init__(self, tenure: Tenure, cancel: threading.Event) -> None:
        self.tenure = tenure
        self.cancel = cancel

    def before(self, request: PaceRequest) -> PaceDecision:
        if not self.tenure.wait_held(self.tenure.ttl):
            self.cancel.set()  # the runner sees it at once: this step is not run
        return PaceDecision(Pace.RUN)
