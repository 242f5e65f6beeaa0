"""``cairn serve``'s Prometheus metrics (``GET /metrics``), in the server's own registry, and the health
that ``GET /healthz`` and some of those metrics report (:class:`ServeHealth`).

Several servers may share one store: each has its own metrics and health, about itself — which
server it is (``cairn_server_info{id=…}``), whether it holds its lease, the entries it holds,
the takeovers it made, the notices it delivered (the outbox's backlog is the store's, shared).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from engine.core.errors import JournalUnwritable
from engine.core.events import Event, StepFinished


def _say_on_stderr(line: str) -> None:
    print(f"cairn serve: {line}", file=sys.stderr, flush=True)


class ServeHealth:
    """Whether the server can do its work: it holds its lease, the journal takes writes, every worker
    thread is alive.

    The intake and the workers report a journal the disk refuses (:meth:`journal_refused`); only
    the workers' probe, a real write that went through, says it is writable again
    (:meth:`journal_writable`). Each change is said once on stderr.
    """

    def __init__(self, say: Callable[[str], None] = _say_on_stderr) -> None:
        self.say = say
        self._lock = threading.Lock()
        self._fault: JournalUnwritable | None = None
        self._since = 0.0
        self._workers: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self._server: Callable[[], str] = lambda: ""
        self._store = ""
        self._lease: Callable[[], str] = lambda: "held"
        self._lease_lost: Callable[[], dict[str, object] | None] = lambda: None

    @property
    def journal_fault(self) -> JournalUnwritable | None:
        """Why the journal cannot be written now (``None``: it can)."""
        return self._fault

    def journal_refused(self, fault: JournalUnwritable) -> None:
        """A write was refused by the disk: unhealthy until a probe writes again."""
        with self._lock:
            first, self._fault = self._fault is None, fault.about("")
            if first:
                self._since = time.time()
        if first:
            self.say(
                f"{self._fault}; webhooks are answered 503 and runs wait until the journal can be written"
            )

    def journal_writable(self) -> None:
        """A probe wrote to the journal's database and its folder: healthy again."""
        with self._lock:
            was, self._fault = self._fault, None
        if was is not None:
            self.say(f"the journal can be written again (it could not for {time.time() - self._since:.0f} s)")

    def count_workers(self, workers: Callable[[], tuple[int, int]]) -> None:
        """How to count the worker threads: (alive, started)."""
        self._workers = workers

    def describe_server(
        self,
        server: Callable[[], str],
        store: str,
        lease: Callable[[], str],
        lease_lost: Callable[[], dict[str, object] | None],
    ) -> None:
        """How to ask which server this is (its holder id: a new one after a lost lease), its store as
        shown to humans, its lease (``held``, or ``lost: why``) and the last lease it lost."""
        self._server, self._store, self._lease, self._lease_lost = server, store, lease, lease_lost

    def report(self) -> dict[str, Any]:
        """``/healthz``'s body: ``ok`` and, when not, what is wrong."""
        fault = self._fault
        alive, of = self._workers()
        lease = self._lease()
        report: dict[str, Any] = {
            "ok": fault is None and alive == of and lease == "held",
            "server": self._server(),
            "lease": lease,
            "store": self._store,
            "journal": str(fault) if fault is not None else "writable",
            "workers": {"alive": alive, "of": of},
        }
        lost = self._lease_lost()
        if lost is not None:
            report["lease_lost"] = lost
        return report


class Metrics:
    """The server's Prometheus metrics (its own registry) and its :class:`ServeHealth`."""

    def __init__(self) -> None:
        self.health = ServeHealth()
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "cairn_alerts_received",
            "Alerts received in webhooks, by status",
            ["status"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "cairn_webhooks", "Webhook requests, by HTTP status", ["code"], registry=self.registry
        )
        self.queued = Counter("cairn_alerts_queued", "Alerts queued for a run", registry=self.registry)
        self.duplicates = Counter(
            "cairn_alerts_duplicate",
            "Firing alerts not queued again (queued, running or cooling down)",
            registry=self.registry,
        )
        self.cancelled = Counter(
            "cairn_queue_cancelled", "Queued entries cancelled by a resolved alert", registry=self.registry
        )
        self.runs = Counter(
            "cairn_runs",
            "Alert-started runs, by result (healthy, remediated, escalated, present, failed, interrupted, "
            "journal: stopped because the journal could not be written, error)",
            ["result"],
            registry=self.registry,
        )
        self.depth = Gauge("cairn_queue_depth", "Queued entries waiting to start", registry=self.registry)
        self.escalated = Gauge(
            "cairn_queue_escalated", "Entries waiting for a human (cairn approve)", registry=self.registry
        )
        self.trips = Counter(
            "cairn_guardrail_trips",
            "Automatic remediations held back for a human, by guardrail (breaker, budget)",
            ["guard"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "cairn_run_seconds", "Seconds an alert-started run took", registry=self.registry
        )
        self.step_seconds = Histogram(
            "cairn_step_seconds",
            "Seconds each step of an alert-started run took, by phase",
            ["phase"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        writable = Gauge(
            "cairn_journal_writable",
            "1 when the journal takes writes; 0 while its disk refuses them (full, read-only, failing)",
            registry=self.registry,
        )
        writable.set_function(lambda: 0.0 if self.health.journal_fault else 1.0)
        alive = Gauge("cairn_workers_alive", "Worker threads alive (of --workers)", registry=self.registry)
        alive.set_function(lambda: float(self.health.report()["workers"]["alive"]))
        self.takeovers = Counter(
            "cairn_takeovers",
            "Servers whose lease ran out and whose work this server put back in the queue",
            registry=self.registry,
        )
        self.entries_taken_over = Counter(
            "cairn_entries_taken_over",
            "Entries of stopped servers this server put back in the queue (their runs resume)",
            registry=self.registry,
        )
        self._server = Info(
            "cairn_server",
            "This server: its holder id in the store (a new one after a lost lease)",
            registry=self.registry,
        )
        self.lease_losses = Counter(
            "cairn_lease_losses",
            "Leases this server lost (frozen, cut off or without its store longer than --lease); it "
            "registered again under a new holder id each time",
            registry=self.registry,
        )
        self._lease_held = Gauge(
            "cairn_lease_held",
            "1 while this server holds its lease; 0 once it is lost",
            registry=self.registry,
        )
        self._entries_held = Gauge(
            "cairn_entries_held",
            "Queue entries this server holds (claimed, not concluded)",
            registry=self.registry,
        )
        self.notices_pending = Gauge(
            "cairn_notices_pending",
            "Notice deliveries (to a webhook or Slack) not delivered yet, in the whole store",
            registry=self.registry,
        )
        self.notices_abandoned = Gauge(
            "cairn_notices_abandoned",
            "Notice deliveries given up (a receiver that refused them, or 24 h without delivering), in the store",
            registry=self.registry,
        )
        self.notice_deliveries = Counter(
            "cairn_notice_deliveries",
            "Notice delivery attempts this server made, by sink and result (delivered, retried, abandoned)",
            ["sink", "result"],
            registry=self.registry,
        )

    def server_id(self, server: str) -> None:
        """Which server this is now (``cairn_server_info{id=…}``)."""
        self._server.info({"id": server})

    def describe_server(self, lease_held: Callable[[], bool], entries_held: Callable[[], int]) -> None:
        """How to count what this server holds: its lease, its entries."""
        self._lease_held.set_function(lambda: 1.0 if lease_held() else 0.0)
        self._entries_held.set_function(lambda: float(entries_held()))

    def step_finished(self, event: Event) -> None:
        """An event-bus subscriber: step durations by phase (steps reused from a resumed run do not count)."""
        if (
            isinstance(event, StepFinished)
            and event.result.duration
            and not event.result.message.startswith("from run ")
        ):
            self.step_seconds.labels(event.result.phase.value).observe(event.result.duration)
