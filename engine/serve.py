"""``cairn serve``: Alertmanager webhooks in, detect and diagnose out (issue 6, third part).

Built so far:

* ``POST /alertmanager`` (payload version 4): a bearer token compared in
  constant time (401 without it, before the body is read); a body over the size
  limit is a 413, one that is not a webhook a 400 naming what is wrong; wrong
  paths and methods 404/405. Never a 500 for bad input.
* Each alert is handled by its own ``status``: firing alerts are routed to the
  runbooks whose triggers match (:mod:`engine.alerts`) and queued in the
  journal's database (:mod:`engine.alert_queue`, deduplicated) **before** the
  200 is sent; resolved ones cancel queued work that has not started.
* A bounded pool of workers runs **detect and diagnose** for each queued entry
  on its target — the exact inventory host the trigger names, which must be
  one of the runbook's ``targets`` (a label value is never used as a host
  pattern: ``node="all"`` runs nowhere). Runs are journaled with the alert as
  their trigger, so ``cairn history`` shows them; remediation never runs here.
* ``GET /healthz``, ``GET /metrics`` (prometheus-client).

Not built yet (issue 6 goes on): remediation by policy or approval
(``cairn approve``/``decline``), circuit breaker and fleet budget, SIGTERM
checkpointing, the TUI's queue screen.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.alert_queue import AlertQueue, Entry, EntryState
from engine.alerts import AlertStatus, WebhookError, parse_webhook, route
from engine.approval import NobodyToAsk
from engine.errors import CairnError
from engine.executors import ExecutionOptions
from engine.model import Host, Phase, Runbook

if TYPE_CHECKING:
    from engine.inventory import Inventory

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""Bytes a webhook may have (Alertmanager's groups are far smaller): more is a 413."""
IDLE_WAIT = 1.0
"""Seconds a worker waits for new work before it looks at the queue again."""


@dataclass(frozen=True)
class ServeConfig:
    """What ``cairn serve`` was told."""

    runbooks: tuple[Runbook, ...]
    journal_path: Path
    token: str | None
    """The bearer token Alertmanager must send; ``None`` only when told to run without one on loopback."""
    inventory_sources: tuple[str, ...] = ()
    options: ExecutionOptions = field(default_factory=ExecutionOptions)
    max_body: int = MAX_BODY
    cooldown: float = 300.0
    workers: int = 8


def check_listen(host: str, token: str | None, allow_no_token: bool) -> None:
    """Refuse to serve without a token, except on loopback when told to; :class:`CairnError` says why."""
    if token:
        return
    if not allow_no_token:
        raise CairnError(
            "no webhook token: give one with --token-file PATH or $CAIRN_WEBHOOK_TOKEN "
            "(Alertmanager sends it with http_config.authorization); --allow-no-token works on loopback only"
        )
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise CairnError(f"--allow-no-token is for loopback addresses only, not {host!r}: give a token")


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
            "cairn_runs", "Runs started by alerts, by result", ["result"], registry=self.registry
        )
        self.depth = Gauge("cairn_queue_depth", "Queued entries waiting to start", registry=self.registry)
        self.step_seconds = Histogram(
            "cairn_run_seconds",
            "Seconds an alert-started run took (detect and diagnose)",
            registry=self.registry,
        )


class Server:
    """The webhook handler and its workers around one queue."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.queue = AlertQueue(config.journal_path, cooldown=config.cooldown)
        self.metrics = Metrics()
        self._runbooks = {r.id: r for r in config.runbooks}
        self._work = threading.Event()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._inventory: Inventory | None = None
        self._targets: dict[str, dict[str, Host]] = {}
        """Each runbook ``targets`` pattern's hosts by name."""
        self._inventory_lock = threading.Lock()

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        app.router.add_post("/alertmanager", self.alertmanager)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    async def alertmanager(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._answer(
                401,
                {"error": "missing or wrong bearer token"},
                headers={"WWW-Authenticate": 'Bearer realm="cairn"'},
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(413, {"error": f"the body is larger than {self.config.max_body} bytes"})
        try:
            hook = parse_webhook(body)
        except WebhookError as exc:
            return self._answer(400, {"error": str(exc)})
        routes = []
        unmatched = 0
        for alert in hook.alerts:
            self.metrics.alerts.labels(alert.status.value).inc()
            found = route(self.config.runbooks, alert)
            unmatched += not found
            routes += found
        problems = [
            {"runbook": r.runbook_id, "fingerprint": r.alert.fingerprint, "problem": r.problem}
            for r in routes
            if r.problem
        ]
        intake = await asyncio.get_running_loop().run_in_executor(None, self.queue.accept, routes)
        self.metrics.queued.inc(len(intake.queued))
        self.metrics.duplicates.inc(len(intake.duplicates))
        self.metrics.cancelled.inc(len(intake.cancelled))
        if intake.queued:
            self._work.set()
        return self._answer(
            200,
            {
                "queued": intake.queued,
                "duplicates": [{"runbook": r, "target": t, "why": w} for r, t, w in intake.duplicates],
                "cancelled": intake.cancelled,
                "unmatched": unmatched,
                "problems": problems,
                "resolved": sum(a.status is AlertStatus.RESOLVED for a in hook.alerts),
            },
        )

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _answer(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.webhooks.labels(str(code)).inc()
        return web.json_response(body, status=code, headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "queued": self.queue.depth()})

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.depth.set(self.queue.depth())
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # ------------------------------------------------------------------ workers

    def start_workers(self) -> None:
        """Re-queue what a previous server left running, then start the workers."""
        again = self.queue.recover()
        if again:
            log.warning("queued again after a restart: entries %s", again)
            self._work.set()
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._serve_queue, name=f"cairn-serve-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop_workers(self, timeout: float = 30.0) -> None:
        """Take no new entries; wait up to ``timeout`` seconds in all for the runs in progress."""
        self._stop.set()
        self._work.set()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve_queue(self) -> None:
        while not self._stop.is_set():
            entry = self.queue.claim()
            if entry is None:
                self._work.wait(IDLE_WAIT)
                self._work.clear()
                continue
            try:
                self.execute(entry)
            except Exception as exc:  # a fault of Cairn's: the entry says so, the worker goes on
                log.exception("entry %s failed", entry.id)
                self.queue.finish(entry.id, EntryState.ESCALATED, note=f"{type(exc).__name__}: {exc}")
                self.metrics.runs.labels("error").inc()

    def execute(self, entry: Entry) -> None:
        """Detect and diagnose for one entry on its target; the entry records the run or why there is none."""
        from engine.errors import InputError, InventoryError  # noqa: PLC0415
        from engine.inputs import resolve_inputs  # noqa: PLC0415
        from engine.journal import Journal  # noqa: PLC0415
        from engine.launch import prepare_run  # noqa: PLC0415

        runbook = self._runbooks.get(entry.runbook_id)
        if runbook is None:
            self.queue.finish(
                entry.id, EntryState.ESCALATED, note=f"runbook {entry.runbook_id!r} is not loaded"
            )
            return
        try:
            host = self.target_host(runbook, entry.target)
            inputs = resolve_inputs(runbook, {})
        except (InventoryError, InputError) as exc:
            self.queue.finish(entry.id, EntryState.ESCALATED, note=str(exc))
            self.metrics.runs.labels("escalated").inc()
            return
        journal = Journal(self.config.journal_path)
        try:
            runner = prepare_run(
                runbook,
                [host],
                inputs,
                journal=journal,
                approver=NobodyToAsk(),
                options=replace(self.config.options, inventory_sources=self.config.inventory_sources),
                started_by="alertmanager",
                trigger={
                    "kind": "alert",
                    "queue_entry": entry.id,
                    "alert": entry.alert,
                    "inventory": list(self.config.inventory_sources),
                    "limit": host.name,
                },
                last_phase=Phase.DIAGNOSE,
                forks=1,
            )
            with self.metrics.step_seconds.time():
                report = runner.run()
        finally:
            journal.close()
        self.queue.finish(
            entry.id, EntryState.DONE, run_id=runner.bus.run_id, note=f"exit code {report.exit_code}"
        )
        self.metrics.runs.labels(
            "pitfall" if report.exit_code == 1 else "healthy" if report.exit_code == 0 else "failed"
        ).inc()

    def target_host(self, runbook: Runbook, target: str) -> Host:
        """The inventory host named exactly ``target`` among the runbook's targets (never a pattern)."""
        from engine.errors import InventoryError  # noqa: PLC0415
        from engine.inventory import load_inventory  # noqa: PLC0415
        from engine.model import LOCALHOST  # noqa: PLC0415

        if not self.config.inventory_sources:
            if target in ("localhost", "127.0.0.1"):
                return LOCALHOST
            raise InventoryError(
                f"target {target!r}: without an inventory (-i) alerts can only name localhost"
            )
        with self._inventory_lock:  # read once, and each runbook's hosts once: an alert is then a lookup
            if self._inventory is None:
                self._inventory = load_inventory(self.config.inventory_sources)
            hosts = self._targets.get(runbook.targets)
            if hosts is None:
                hosts = self._targets[runbook.targets] = {
                    h.name: h for h in self._inventory.hosts(runbook.targets)
                }
        if target in hosts:
            return hosts[target]
        raise InventoryError(
            f"target {target!r} is not a host of {runbook.targets!r} in the inventory; nothing was run"
        )


async def serve(config: ServeConfig, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Serve until cancelled (``cairn serve`` runs this in its event loop)."""
    server = Server(config)
    server.start_workers()
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, server.stop_workers)
        server.queue.close()


def read_token(path: str | None, environ: dict[str, str]) -> str | None:
    """The token from ``--token-file`` (first line) or ``$CAIRN_WEBHOOK_TOKEN``; ``None`` if neither."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CairnError(f"cannot read the token file {path}: {exc.strerror}") from exc
        if not text:
            raise CairnError(f"the token file {path} is empty")
        return text
    return environ.get("CAIRN_WEBHOOK_TOKEN") or None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); :class:`CairnError` if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CairnError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:9095")
    return host.strip("[]"), int(port)
