"""``cairn serve``'s dispatcher: the store's notices sent to the configured sinks, and lapsed approval
requests expired.

One thread per server (``cairn-notices``) wakes every :data:`TICK` seconds, or at once when told
(:meth:`Dispatcher.wake`), and

* every :data:`EXPIRE_EVERY` seconds expires escalated entries whose approval request lapsed
  (:meth:`~engine.core.alert_queue.AlertQueue.expire`: each becomes ``expired`` with its
  ``approval_expired`` notice) — on every server, sinks or not: the store serialises them;
* with sinks configured, gives new notices their deliveries (:meth:`~engine.core.outbox.Outbox.expand`;
  a server without sinks never expands, so it cannot take notices away from one that has them)
  and claims the due ones as this server (its lease's holder id; nothing is claimed while the
  lease does not surely hold, see :mod:`engine.serve.takeover`).

Each sink has its own thread and queue (:class:`SinkWorker`): a Slack that is down or slow delays
only Slack's notices, never a pager's webhook, a run, the intake or a decision (those use their own
connections; this one has its own). A delivery is started only while its claim has at least
:data:`~engine.serve.webhooks.LONGEST_DELIVERY` seconds left (a sink's delivery never takes longer),
else it is left to lapse and is claimed again: two servers never send one at once.

What a delivery comes to: taken → ``delivered``; :class:`~engine.serve.sinks.DeliveryFailed` →
tried again after :func:`backoff` (1 s doubling up to 5 min, with jitter; ``Retry-After``
honoured), or abandoned when the sink says trying again cannot help (``retry=False``), when it
was not delivered within :data:`GIVE_UP_AFTER` of its notice being made, or when its sink is not
configured on this server. Each abandonment is said on the log and counted in ``/healthz``; a
sink that starts failing, and one that recovers, are said once each. A store that refuses
writes or does not answer (a full disk, PostgreSQL down) makes the dispatcher wait and try
again, never stop; a crash between a sink taking a notice and ``delivered`` being written sends it
again once the claim lapses: at least once, each with its idempotency key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.alert_queue import AlertQueue
from engine.core.errors import JournalError, JournalUnwritable
from engine.core.notices import NoticeKind
from engine.core.outbox import Delivery, Outbox
from engine.serve.sinks import DeliveryFailed, Sink
from engine.serve.webhooks import LONGEST_DELIVERY, Webhook

if TYPE_CHECKING:
    from engine.core.store.location import Location
    from engine.serve.metrics import Metrics
    from engine.serve.notify_settings import NotifySettings
    from engine.serve.slack import Slack
    from engine.serve.takeover import Tenure

log = logging.getLogger(__name__)

TICK = 0.5
"""Seconds between two looks at the outbox when nobody says there is something new."""
EXPIRE_EVERY = 2.0
"""Seconds between two looks for lapsed approval requests."""
CLAIM_BATCH = 20
"""Deliveries claimed at once (the next batch is claimed at once when a batch was full)."""
CLAIM_HOLD = 2 * LONGEST_DELIVERY
"""Seconds a claim holds a delivery for this server: it lapses to another server after that."""
FIRST_RETRY = 1.0
LONGEST_RETRY = 300.0
GIVE_UP_AFTER = 24 * 3600.0
"""Seconds after its notice was made that a delivery not taken yet is abandoned."""
STORE_RETRY = 1.0
"""Seconds between two tries while the store refuses or does not answer."""


def backoff(attempts: int, after: float | None = None, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``attempts`` failed tries: 1 s doubling, capped at 5 min, plus up to a
    quarter more at random (servers and sinks do not retry in step); never less than ``after``
    (the sink's ``Retry-After``)."""
    base = FIRST_RETRY * 2.0 ** min(max(attempts - 1, 0), 20)
    delay = min(LONGEST_RETRY, base * (1 + 0.25 * jitter()))
    return delay if after is None else max(delay, after)


def sinks_of(
    notify: NotifySettings, store: Location, say: Callable[[str], None]
) -> tuple[list[Sink], Slack | None]:
    """The sinks ``notify`` configures (every webhook, then Slack), and Slack apart (its routes and
    Socket Mode are the server's to start). slack_sdk is imported only when Slack is configured."""
    sinks: list[Sink] = [Webhook(webhook) for webhook in notify.webhooks]
    if notify.slack is None:
        return sinks, None
    from engine.serve.slack import Slack  # noqa: PLC0415

    slack = Slack(notify.slack, store, say=say)
    return [*sinks, slack], slack


@dataclass
class _Claimed:
    delivery: Delivery
    lapses: float
    """When its claim lapses, by this process's monotonic clock."""


class SinkWorker:
    """One sink's deliveries, one at a time in the order claimed, on a thread of its own."""

    def __init__(self, sink: Sink, dispatcher: Dispatcher) -> None:
        self.sink = sink
        self.dispatcher = dispatcher
        self._waiting: dict[int, _Claimed] = {}
        self._current: int | None = None
        self._changed = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.delivered = self.retried = self.abandoned = 0
        self.failing_since: float | None = None
        self.last_error = ""

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._serve, name=f"cairn-notify-{self.sink.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def offer(self, delivery: Delivery, lapses: float) -> None:
        """A delivery claimed for this sink (claimed again: its claim's new end)."""
        with self._changed:
            if delivery.id != self._current:
                self._waiting[delivery.id] = _Claimed(delivery, lapses)
                self._changed.notify_all()

    def report(self) -> dict[str, Any]:
        """This sink in ``/healthz``."""
        failing = self.failing_since
        return {
            "name": self.sink.name,
            "state": "failing" if failing is not None else "ok",
            "failing_for": round(time.monotonic() - failing, 1) if failing is not None else 0.0,
            "waiting": len(self._waiting) + (self._current is not None),
            "delivered": self.delivered,
            "retried": self.retried,
            "abandoned": self.abandoned,
            "last_error": self.last_error,
        }

    def _next(self) -> _Claimed | None:
        with self._changed:
            while not self._waiting and not self._stop:
                self._changed.wait()
            if self._stop:
                return None
            first = next(iter(self._waiting))
            claimed = self._waiting.pop(first)
            self._current = first
            return claimed

    def _serve(self) -> None:
        while (claimed := self._next()) is not None:
            try:
                if claimed.lapses - time.monotonic() >= LONGEST_DELIVERY:
                    self._deliver(claimed)
                # else: too little of its claim is left to finish; it lapses and is claimed again
            except Exception as exc:  # a fault of Cairn's: said, and the sink goes on
                log.exception("%s: a delivery failed", self.sink.name)
                self.dispatcher.say(f"{self.sink.name}: a delivery failed, it goes on: {type(exc).__name__}")
            finally:
                with self._changed:
                    self._current = None

    def _deliver(self, claimed: _Claimed) -> None:
        delivery = claimed.delivery
        try:
            self.sink.deliver(delivery)
        except DeliveryFailed as failed:
            self._failed(claimed, str(failed), failed.retry, failed.after)
            return
        except Exception as exc:  # a sink's own fault: kept apart from its answer, tried again
            log.exception("%s could not deliver notice %s", self.sink.name, delivery.notice.key)
            self._failed(claimed, f"a fault of Cairn's: {type(exc).__name__}", True, None)
            return
        self.dispatcher.record(claimed, lambda: self.dispatcher.outbox.delivered(delivery.id))
        self.delivered += 1
        self.dispatcher.counted(self.sink.name, "delivered")
        if self.failing_since is not None:
            failed_for = time.monotonic() - self.failing_since
            self.failing_since = None
            self.dispatcher.say(f"{self.sink.name} delivers again (it had failed for {failed_for:.0f} s)")

    def _failed(self, claimed: _Claimed, why: str, retry: bool, after: float | None) -> None:
        delivery = claimed.delivery
        self.last_error = why
        tries = delivery.attempts + 1
        delay = backoff(tries, after)
        retry_at = self.dispatcher.store_now() + delay
        if retry and retry_at > delivery.notice.created_at + GIVE_UP_AFTER:
            retry, why = False, f"not delivered within 24 h ({tries} tries); the last: {why}"
        if not retry:
            self.abandoned += 1
            if self.failing_since is None:
                self.failing_since = time.monotonic()  # said by abandon(): no second line for it
            self.dispatcher.abandon(claimed, self.sink.name, why)
            return
        error = f"{self.sink.name}: {why}"
        self.dispatcher.record(claimed, lambda: self.dispatcher.outbox.failed(delivery.id, error, retry_at))
        self.retried += 1
        self.dispatcher.counted(self.sink.name, "retried")
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            self.dispatcher.say(f"{error}; its notices are kept and tried again (next in {delay:.0f} s)")


class Dispatcher:
    """The outbox of the store at ``location``, sent to ``sinks`` by this server (whichever
    ``tenure()`` is now: a lost lease is replaced by a new one), and the expiry of approval requests."""

    def __init__(
        self, location: Location, sinks: Sequence[Sink], metrics: Metrics, tenure: Callable[[], Tenure]
    ) -> None:
        self.metrics = metrics
        self.sinks = {sink.name: sink for sink in sinks}
        self._tenure = tenure
        self.outbox = Outbox(location, holder=tenure().id)
        try:
            self.queue = AlertQueue(location)
        except BaseException:
            self.outbox.close()
            raise
        """Its own connection: expiring never waits behind a worker's or a decision's call in Python."""
        self._workers = {name: SinkWorker(sink, self) for name, sink in self.sinks.items()}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock_offset = 0.0
        """The store's clock minus this machine's, as last read (retries are set by the store's clock)."""
        self._store_fault = ""

    @property
    def names(self) -> list[str]:
        return list(self.sinks)

    def say(self, line: str) -> None:
        self.metrics.health.say(line)

    def start(self) -> None:
        for worker in self._workers.values():
            worker.start()
        self._thread = threading.Thread(target=self._serve, name="cairn-notices", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something new may be in the outbox (a decision this server made): look now."""
        self._wake.set()

    def stop(self, timeout: float = LONGEST_DELIVERY) -> None:
        """Claim nothing more; let a delivery under way end (``timeout``). What is left stays in the
        outbox: its claims lapse and another server (or this one, restarted) sends it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            worker.stop(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.outbox.close()
        self.queue.close()

    def report(self) -> dict[str, Any]:
        """``/healthz``'s ``notifications`` (and the backlog's gauges); :class:`JournalError` when the
        store cannot be read."""
        backlog = self.outbox.backlog()
        self.metrics.notices_pending.set(backlog.pending)
        self.metrics.notices_abandoned.set(backlog.abandoned)
        return {
            "pending": backlog.pending,
            "abandoned": backlog.abandoned,
            "oldest_pending_age": round(backlog.oldest_pending_age, 1),
            "last_error": backlog.last_error,
            "sinks": [worker.report() for worker in self._workers.values()],
        }

    # ------------------------------------------------------------------ what the sink workers call

    def store_now(self) -> float:
        """The store's clock now, as last measured against this machine's."""
        return time.time() + self._clock_offset

    def counted(self, sink: str, result: str) -> None:
        self.metrics.notice_deliveries.labels(sink, result).inc()

    def abandon(self, claimed: _Claimed, sink: str, why: str) -> None:
        """Give ``claimed`` up for good, saying so."""
        notice = claimed.delivery.notice
        about = f"entry {notice.entry_id}, " if notice.entry_id is not None else ""
        self.record(claimed, lambda: self.outbox.failed(claimed.delivery.id, f"{sink}: {why}", None))
        self.counted(sink, "abandoned")
        self.say(f"{sink}: gave up on notice {notice.key} ({about}{notice.kind.value}): {why}")

    def record(self, claimed: _Claimed, write: Callable[[], None]) -> None:
        """Write what a delivery came to; while the store refuses, try again every second until its
        claim lapses (then it is sent again: at least once)."""
        while True:
            try:
                write()
                return
            except JournalError as exc:
                self._store_refused(exc)
                if time.monotonic() + STORE_RETRY >= claimed.lapses or self._stop.wait(STORE_RETRY):
                    return

    # ------------------------------------------------------------------ the loop

    def turn(self, expire: bool = True) -> bool:
        """One look: expire lapsed requests (``expire``), then expand, claim and hand out one batch;
        whether a full batch was claimed (more may be due). :class:`JournalError` when the store
        refuses or does not answer."""
        if expire:
            for entry in self.queue.expire():
                self.say(f"entry {entry.id} ({entry.runbook_id} on {entry.target}): {entry.note}")
        more = bool(self.sinks) and self._send()
        self._store_answers()
        return more

    def _serve(self) -> None:
        next_expiry = 0.0
        while not self._stop.is_set():
            try:
                expire = time.monotonic() >= next_expiry
                more = self.turn(expire)
                if expire:
                    next_expiry = time.monotonic() + EXPIRE_EVERY
            except JournalError as exc:  # refused or unreachable for now: wait, never die
                self._store_refused(exc)
                self._stop.wait(STORE_RETRY)
                continue
            except Exception as exc:  # a fault of Cairn's: said, and the dispatcher goes on
                log.exception("the notices dispatcher's turn failed")
                self.say(f"the notices dispatcher's turn failed, it goes on: {type(exc).__name__}: {exc}")
                self._stop.wait(STORE_RETRY)
                continue
            if not more:
                self._wake.wait(TICK)
                self._wake.clear()

    def _send(self) -> bool:
        """Expand, claim and hand out one batch; whether a full batch was claimed (more may be due)."""
        self.outbox.expand(self.names, self._wants)
        tenure = self._tenure()
        if not tenure.holds():  # frozen past the lease, or lost: claim nothing under it
            return False
        self.outbox.holder = tenure.id  # a new lease after a lost one: claims carry the current id
        asked = time.monotonic()
        batch = self.outbox.claim(limit=CLAIM_BATCH, hold=CLAIM_HOLD)
        if not batch:
            return False
        self._clock_offset = float(self.outbox.db.read(f"SELECT {self.outbox.db.now}")[0][0]) - time.time()
        for delivery in batch:
            claimed = _Claimed(delivery, asked + CLAIM_HOLD)
            worker = self._workers.get(delivery.sink)
            if worker is None:
                self.abandon(
                    claimed, delivery.sink, f"not configured on server {tenure.id} (not in its config)"
                )
            elif self.store_now() > delivery.notice.created_at + GIVE_UP_AFTER:
                self.abandon(claimed, delivery.sink, "not sent: its notice was made more than 24 h ago")
            else:
                worker.offer(delivery, claimed.lapses)
        return len(batch) == CLAIM_BATCH

    def _wants(self, sink: str, kind: NoticeKind) -> bool:
        return self.sinks[sink].wants(kind)

    def _store_refused(self, exc: JournalError) -> None:
        if isinstance(exc, JournalUnwritable):
            self.metrics.health.journal_refused(exc)  # unhealthy until the workers' probe writes again
        if not self._store_fault:
            self._store_fault = str(exc)
            self.say(f"notifications wait for the store, and are sent once it answers: {exc}")

    def _store_answers(self) -> None:
        if self._store_fault:
            self._store_fault = ""
            self.say("notifications: the store answers again")
