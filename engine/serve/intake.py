"""``cairn serve``'s HTTP side (aiohttp): the Alertmanager webhook, ``/healthz`` and ``/metrics``.

``POST /alertmanager`` (payload version 4): a bearer token compared in constant time (401
without it, before the body is read); a body over the size limit is a 413, one that is not
a webhook a 400 naming what is wrong; wrong paths and methods 404/405. Never a 500 for bad
input. Firing alerts are routed to the runbooks whose triggers match and queued in the
store **before** the 200 is sent (group commit on the intake's own thread and connection,
each commit durable); resolved ones cancel queued work that has not started and work that
waits for a human. Several servers given the same webhook queue each alert once (the store
refuses the second). A store that cannot take the commit — locked past the busy timeout, a
disk that refuses it (full, read-only, failing), a PostgreSQL that does not answer — is a 503:
Alertmanager sends the webhook again. Every webhook is answered, whatever the commit did.

``GET /healthz`` is 200 with ``"ok": true`` while this server holds its lease, the store takes
writes and answers, and every worker thread is alive, else 503 with what is wrong
(:class:`~engine.serve.metrics.ServeHealth`); it names the server (its holder id), its lease
(``held`` or ``lost: why``) and the store (never its password), and ``notifications``: the
outbox's backlog (pending, abandoned, the oldest pending one's age, the last error) and each
sink's state — a failing sink is said there without making the server unhealthy (runs and
approvals go on without it). The store is read off the event loop: a PostgreSQL that does not
answer holds no webhook up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.core.alert_queue import AlertQueue, EntryState, Intake
from engine.core.alerts import AlertStatus, Route, WebhookError, parse_webhook, route
from engine.core.errors import JournalError, JournalUnwritable
from engine.core.queue_read import QueueReader

if TYPE_CHECKING:
    from engine.serve.catalog import Catalog
    from engine.serve.metrics import Metrics
    from engine.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class WebhookIntake:
    """The HTTP handlers around the alert queue: alerts in, queued entries out."""

    def __init__(
        self,
        config: ServeSettings,
        catalog: Catalog,
        metrics: Metrics,
        *,
        reader: QueueReader,
        intake_queue: AlertQueue,
        wake: Callable[[], None],
        notifications: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.metrics = metrics
        self.queue = reader
        """A connection that only reads: ``/healthz`` and ``/metrics`` read the queue's depth with it."""
        self._intake_queue = intake_queue
        """The intake's own connection: a webhook never waits behind a worker's transaction in Python,
        only in SQLite (a worker stuck on a locked database cannot hold up the 503)."""
        self._wake = wake
        """Tells the workers new entries are queued."""
        self._notifications = notifications
        """Reads the notices' backlog and each sink's state (blocking: run off the event loop)."""
        self._pending: list[tuple[list[Route], asyncio.Future[Intake]]] = []
        """Webhooks waiting for the next intake commit (touched on the event loop only)."""
        self._committing = False
        self._commit_task: asyncio.Task[None] | None = None
        self._intake = ThreadPoolExecutor(1, thread_name_prefix="cairn-intake")

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
        routes: list[Route] = []
        unmatched = 0
        runbooks = self.catalog.runbooks
        for alert in hook.alerts:
            self.metrics.alerts.labels(alert.status.value).inc()
            found = route(runbooks, alert)
            unmatched += not found
            routes += found
        problems = [
            {"runbook": r.runbook_id, "fingerprint": r.alert.fingerprint, "problem": r.problem}
            for r in routes
            if r.problem
        ]
        try:
            intake = await self._commit(routes)
        except JournalError as exc:  # the disk, not the request: Alertmanager retries a 5xx
            log.error("could not queue a webhook: %s", exc)
            return self._answer(503, {"error": f"could not persist the alerts: {exc}"})
        self.metrics.queued.inc(len(intake.queued))
        self.metrics.duplicates.inc(len(intake.duplicates))
        self.metrics.cancelled.inc(len(intake.cancelled))
        if intake.queued:
            self._wake()
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

    async def _commit(self, routes: list[Route]) -> Intake:
        """Persist one webhook's routes: group commit with the webhooks that arrive meanwhile.

        The first webhook starts a commit on the intake thread; webhooks that arrive while it
        runs wait together and go in the next transaction. Each is answered only after the
        transaction holding it committed.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Intake] = loop.create_future()
        self._pending.append((routes, done))
        if not self._committing:
            self._committing = True
            self._commit_task = loop.create_task(self._commit_pending())
        return await done

    async def _commit_pending(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[tuple[list[Route], asyncio.Future[Intake]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    intakes = await loop.run_in_executor(
                        self._intake, self._intake_queue.accept_many, [routes for routes, _ in batch]
                    )
                except Exception as exc:  # whatever failed, each webhook of the batch is answered
                    if isinstance(exc, JournalUnwritable):
                        self.metrics.health.journal_refused(exc)
                    _fail(batch, exc)
                    continue
                for (_, done), intake in zip(batch, intakes, strict=True):
                    done.set_result(intake)
        finally:  # normally nothing is left; cancelled (the server stops), nobody is left waiting
            self._committing = False
            stopped = JournalError("the server is stopping: the alerts were not committed")
            _fail(batch, stopped)
            _fail(self._pending, stopped)
            self._pending = []

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "surrogateescape"), token.encode()
        )

    def _answer(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.webhooks.labels(str(code)).inc()
        return web.json_response(body, status=code, headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        """200 ``{"ok": true, …}`` while the server can work, else 503 saying what is wrong."""
        report = self.metrics.health.report()
        loop = asyncio.get_running_loop()
        try:
            report["queued"] = await loop.run_in_executor(None, self.queue.depth)
        except JournalError as exc:  # a check that cannot look is not "ok"
            report["ok"], report["queue"] = False, str(exc)
        if self._notifications is not None:
            try:  # a failing sink is said here but leaves "ok" alone: runs and approvals do not need it
                report["notifications"] = await loop.run_in_executor(None, self._notifications)
            except JournalError as exc:
                report["ok"], report["notifications"] = False, {"error": str(exc)}
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        with contextlib.suppress(JournalError):  # the other metrics still say what they know
            await asyncio.get_running_loop().run_in_executor(None, self._read_queue_metrics)
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def _read_queue_metrics(self) -> None:
        self.metrics.depth.set(self.queue.depth())
        self.metrics.escalated.set(self.queue.count(EntryState.ESCALATED))
        if self._notifications is not None:
            self._notifications()  # sets the notices' gauges

    def close(self) -> None:
        """After the workers stopped: the intake thread (its queue connection is the server's to close)."""
        self._intake.shutdown(wait=True)


def _fail(batch: list[tuple[list[Route], asyncio.Future[Intake]]], exc: BaseException) -> None:
    """Answer every webhook of ``batch`` not answered yet with ``exc``."""
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)
