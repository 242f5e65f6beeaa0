"""``cairn serve``'s Prometheus metrics (``GET /metrics``), in the server's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.core.events import Event, StepFinished


class Metrics:
    """The server's Prometheus metrics (its own registry)."""

    def __init__(self) -> None:
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
            "Alert-started runs, by result (healthy, remediated, escalated, present, failed, interrupted)",
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

    def step_finished(self, event: Event) -> None:
        """An event-bus subscriber: step durations by phase (steps reused from a resumed run do not count)."""
        if (
            isinstance(event, StepFinished)
            and event.result.duration
            and not event.result.message.startswith("from run ")
        ):
            self.step_seconds.labels(event.result.phase.value).observe(event.result.duration)
