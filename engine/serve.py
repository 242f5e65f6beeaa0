"""``cairn serve``: Alertmanager webhooks in; detect, diagnose and — where allowed — remediate out.

* ``POST /alertmanager`` (payload version 4): a bearer token compared in
  constant time (401 without it, before the body is read); a body over the size
  limit is a 413, one that is not a webhook a 400 naming what is wrong; wrong
  paths and methods 404/405. Never a 500 for bad input.
* Each alert is handled by its own ``status``: firing alerts are routed to the
  runbooks whose triggers match (:mod:`engine.alerts`) and queued in the
  journal's database (:mod:`engine.alert_queue`, deduplicated) **before** the
  200 is sent; resolved ones cancel queued work that has not started and work
  that waits for a human.
* A bounded pool of workers runs each queued entry on its target — the exact
  inventory host the trigger names, which must be one of the runbook's
  ``targets`` (a label value is never used as a host pattern: ``node="all"``
  runs nowhere). Detect and diagnose always run. Remediation runs only where
  :mod:`engine.policy` allows it (the runbook's ``automatic`` steps, a policy
  that automates the runbook, the circuit breaker and fleet budget) or a human
  approved the entry (``cairn approve RUN_ID``); otherwise the entry is
  escalated and waits. Runs are journaled with the alert as their trigger.
* ``GET /healthz``, ``GET /metrics`` (prometheus-client).
* SIGTERM: stop accepting, give running runs ``grace`` seconds, then cancel
  them (commands killed where they run); their entries go back to the queue and
  the next ``cairn serve`` resumes their runs without repeating finished steps.
  After a ``kill -9`` the same happens at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.alert_queue import WAITS_FOR_A_HUMAN, AlertQueue, Entry, EntryState, Intake
from engine.alerts import AlertStatus, Route, WebhookError, parse_webhook, route
from engine.errors import CairnError, JournalError
from engine.events import Event, StepFinished
from engine.executors import ExecutionOptions
from engine.model import Host, HostOutcome, Phase, ResumePoint, Runbook, RunReport, RunStatus, StepStatus
from engine.policy import AlertApprover, Policy

if TYPE_CHECKING:
    from engine.inventory import Inventory
    from engine.journal import Journal

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
    policy: Policy = field(default_factory=Policy)
    grace: float = 20.0
    """Seconds running runs get to finish at SIGTERM before they are cancelled and checkpointed."""
    runbook_dirs: tuple[Path, ...] = ()
    """Where ``runbooks`` came from: SIGHUP reads these folders again."""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each runbook's input values for alert-started runs (``--inputs ID:@FILE``); defaults fill the rest."""


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


class Server:
    """The webhook handler and its workers around one queue."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.queue = AlertQueue(config.journal_path, cooldown=config.cooldown)
        self._intake_queue = AlertQueue(config.journal_path, cooldown=config.cooldown)
        """The intake's own connection: a webhook never waits behind a worker's transaction in Python,
        only in SQLite (a worker stuck on a locked database cannot hold up the 503)."""
        self._forget_failed()
        self.metrics = Metrics()
        self._runbook_list = config.runbooks
        self._runbooks = {r.id: r for r in config.runbooks}
        self._work = threading.Event()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._inventory: Inventory | None = None
        self._targets: dict[str, dict[str, Host]] = {}
        """Each runbook ``targets`` pattern's hosts by name."""
        self._inventory_lock = threading.Lock()
        self._running: dict[int, threading.Event] = {}
        """Each running entry's cancel event (set at shutdown, after the grace period)."""
        self._running_lock = threading.Lock()
        self._cancelling = False
        self._pending: list[tuple[list[Route], asyncio.Future[Intake]]] = []
        """Webhooks waiting for the next intake commit (touched on the event loop only)."""
        self._committing = False
        self._commit_task: asyncio.Task[None] | None = None
        self._intake = ThreadPoolExecutor(1, thread_name_prefix="cairn-intake")

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
        routes: list[Route] = []
        unmatched = 0
        for alert in hook.alerts:
            self.metrics.alerts.labels(alert.status.value).inc()
            found = route(self._runbook_list, alert)
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
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    intakes = await loop.run_in_executor(
                        self._intake, self._intake_queue.accept_many, [routes for routes, _ in batch]
                    )
                except JournalError as exc:
                    for _, done in batch:
                        done.set_exception(exc)
                    continue
                for (_, done), intake in zip(batch, intakes, strict=True):
                    done.set_result(intake)
        finally:
            self._committing = False

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
        self.metrics.escalated.set(self.queue.count(EntryState.ESCALATED))
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def close(self) -> None:
        """After :meth:`stop_workers`: the intake thread and the queue's database."""
        self._intake.shutdown(wait=True)
        self._intake_queue.close()
        self.queue.close()

    # ------------------------------------------------------------------ workers

    def warm(self) -> None:
        """Read the inventory and each triggered runbook's target hosts now, before serving.

        A broken inventory stops ``cairn serve`` at start (not at the first alert), and the
        first alert finds its host by a lookup instead of waiting for Ansible's loader.
        """
        for runbook in self._runbook_list:
            if runbook.triggers and self.config.inventory_sources:
                self._hosts_of(runbook)

    def start_workers(self) -> None:
        """Re-queue what a previous server left running, then start the workers."""
        again = self.queue.recover()
        if again:
            log.warning("queued again after a restart (their runs resume): entries %s", again)
            self._work.set()
        for index in range(self.config.workers):
            thread = threading.Thread(target=self._serve_queue, name=f"cairn-serve-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop_workers(self, grace: float | None = None, cancelled_wait: float = 30.0) -> None:
        """Take no new entries; give running runs ``grace`` seconds, then cancel (checkpoint) them.

        A cancelled run's commands are killed where they run, the run is journaled as
        interrupted and its entry goes back to the queue: the next server resumes it.
        """
        self._stop.set()
        self._work.set()
        self._join(self.config.grace if grace is None else grace)
        with self._running_lock:
            self._cancelling = True  # a run registering from now on is cancelled at once
            running = list(self._running.values())
        for cancel in running:
            cancel.set()
        self._join(cancelled_wait)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve_queue(self) -> None:
        while not self._stop.is_set():
            try:
                entry = self.queue.claim()
            except JournalError as exc:  # locked or failing for now: the worker waits, never dies
                log.error("cannot read the alert queue: %s", exc)
                self._stop.wait(IDLE_WAIT)
                continue
            if entry is None:
                self._work.wait(IDLE_WAIT)
                self._work.clear()
                continue
            try:
                self.execute(entry)
            except Exception as exc:  # a fault of Cairn's: the entry says so, the worker goes on
                log.exception("entry %s failed", entry.id)
                with contextlib.suppress(JournalError):  # else recover() re-queues it at the next start
                    self.queue.finish(entry.id, EntryState.FAILED, note=f"{type(exc).__name__}: {exc}")
                self.metrics.runs.labels("error").inc()

    def execute(self, entry: Entry) -> None:
        """Run one entry on its target; the entry records the run and what it came to, or why there is none."""
        from engine.errors import InputError, InventoryError  # noqa: PLC0415
        from engine.inputs import resolve_inputs  # noqa: PLC0415
        from engine.journal import Journal  # noqa: PLC0415

        runbook = self._runbooks.get(entry.runbook_id)
        if runbook is None:
            self.queue.finish(entry.id, EntryState.FAILED, note=f"runbook {entry.runbook_id!r} is not loaded")
            self.metrics.runs.labels("failed").inc()
            return
        try:
            host = self.target_host(runbook, entry.target)
            inputs = resolve_inputs(runbook, self.config.inputs.get(runbook.id, {}))
        except (InventoryError, InputError) as exc:
            self.queue.finish(entry.id, EntryState.FAILED, note=str(exc))
            self.metrics.runs.labels("failed").inc()
            return
        journal = Journal(self.config.journal_path)
        try:
            self._execute(entry, runbook, host, inputs, journal)
        finally:
            journal.close()

    def _execute(
        self, entry: Entry, runbook: Runbook, host: Host, inputs: dict[str, Any], journal: Journal
    ) -> None:
        from engine.launch import prepare_run  # noqa: PLC0415

        resume = self._resume_point(entry, runbook, journal)
        if resume is None:
            return  # concluded from its earlier run, which had ended
        policy = self.config.policy
        automatic = entry.approved_by is None and not policy.why_not(runbook) and bool(runbook.remediate)
        remediates = entry.approved_by is not None or automatic
        approver = AlertApprover(
            self.queue,
            policy,
            runbook.id,
            approved_by=entry.approved_by,
            on_trip=lambda guard: self.metrics.trips.labels(guard).inc(),
        )
        trigger: dict[str, Any] = {
            "kind": "alert",
            "queue_entry": entry.id,
            "alert": entry.alert,
            "inventory": list(self.config.inventory_sources),
            "limit": host.name,
        }
        if resume.results:
            trigger["resumes"] = resume.run_id
        if entry.approved_by:
            trigger["approved_by"] = entry.approved_by
        runner = prepare_run(
            runbook,
            [host],
            inputs,
            journal=journal,
            approver=approver,
            options=replace(self.config.options, inventory_sources=self.config.inventory_sources),
            started_by="alertmanager",
            trigger=trigger,
            last_phase=Phase.VERIFY if remediates else Phase.DIAGNOSE,
            forks=1,
            resume=resume if resume.results else None,
            unattended=True,
        )
        runner.bus.subscribe(self.metrics.step_finished)
        self.queue.started(entry.id, runner.run_id)
        with self._running_lock:
            self._running[entry.id] = runner.cancel
            if self._cancelling:
                runner.cancel.set()
        try:
            with self.metrics.run_seconds.time():
                report = runner.run()
        finally:
            approver.close()
            with self._running_lock:
                self._running.pop(entry.id, None)
        if report.interrupted:
            self.queue.requeue(
                entry.id,
                f"checkpointed at shutdown: run {runner.run_id} was interrupted; "
                "the next cairn serve resumes it without repeating finished steps",
            )
            self.metrics.runs.labels("interrupted").inc()
            return
        state, note, result = conclude(report, runbook, policy, approver)
        self.queue.finish(entry.id, state, run_id=runner.run_id, note=note)
        self.metrics.runs.labels(result).inc()

    def _resume_point(self, entry: Entry, runbook: Runbook, journal: Journal) -> ResumePoint | None:
        """What to reuse from the entry's earlier run, if a server stopped while it went on.

        An interrupted run of the same runbook text is resumed (its finished steps reused); an
        earlier run that had ended concludes the entry at once (``None`` with the entry
        finished). An approved entry's earlier run is the one the human approved: a new run.
        """
        from engine.errors import JournalError  # noqa: PLC0415
        from engine.resume import resume_point  # noqa: PLC0415

        if not entry.run_id:
            return ResumePoint("", {})
        try:
            record = journal.get_run(entry.run_id)
        except JournalError:
            return ResumePoint("", {})
        if record.status is RunStatus.INTERRUPTED:
            if record.runbook_sha256 != runbook.sha256:
                return ResumePoint("", {})  # the runbook changed since: start again
            return resume_point(record)
        if entry.approved_by or record.status is RunStatus.RUNNING:
            return ResumePoint("", {})
        present = record.exit_code == 1 and bool(runbook.remediate)
        self.queue.finish(
            entry.id,
            EntryState.ESCALATED if present else EntryState.DONE,
            note=f"run {record.id} had ended (exit code {record.exit_code}) when the server stopped"
            + ("; remediation waits for a human" if present else ""),
        )
        return None

    def _forget_failed(self) -> None:
        """The inventory and runbooks are (re)read now: entries that failed before cool nothing down."""
        self.queue.failed_forgotten_before = self._intake_queue.failed_forgotten_before = time.time()

    def reload(self) -> list[str]:
        """SIGHUP: read the runbook folders and the inventory again; what it did, line by line.

        Runs in progress keep what they started with. A runbook file that no longer loads
        keeps the version loaded before; an inventory that no longer loads keeps everything
        as it was (a half-reload would leave runbooks pointing at hosts that are gone).
        """
        from engine.inventory import load_inventory  # noqa: PLC0415
        from engine.loader import load_library  # noqa: PLC0415

        said: list[str] = []
        runbooks = self._runbook_list
        if self.config.runbook_dirs:
            before = {r.source_path: r for r in self._runbook_list}
            fresh: list[Runbook] = []
            for result in load_library(self.config.runbook_dirs, jobs=1).results:
                if result.runbook is not None:
                    fresh.append(result.runbook)
                elif result.path in before:
                    fresh.append(before[result.path])
                    said.append(f"{result.problems[0]} — kept the version loaded before")
                else:
                    said += [f"skipping an invalid runbook: {problem}" for problem in result.problems[:1]]
            runbooks = tuple(fresh)
        inventory = None
        targets: dict[str, dict[str, Host]] = {}
        try:
            if self.config.inventory_sources:
                inventory = load_inventory(self.config.inventory_sources)
                for runbook in runbooks:
                    if runbook.triggers and runbook.targets not in targets:
                        targets[runbook.targets] = {h.name: h for h in inventory.hosts(runbook.targets)}
        except CairnError as exc:
            return [*said, f"reload refused, nothing changed: {exc}"]
        with self._inventory_lock:
            self._runbook_list = runbooks
            self._runbooks = {r.id: r for r in runbooks}
            self._inventory, self._targets = inventory, targets
        self._forget_failed()
        triggered = [r.id for r in runbooks if r.triggers]
        hosts = len({name for found in targets.values() for name in found})
        return [
            *said,
            f"reloaded: {len(triggered)} runbooks with triggers ({', '.join(triggered) or 'none'}), "
            f"{hosts} target hosts",
        ]

    def _hosts_of(self, runbook: Runbook) -> dict[str, Host]:
        """The hosts of ``runbook.targets`` by name: the inventory read once, each pattern once."""
        from engine.inventory import load_inventory  # noqa: PLC0415

        with self._inventory_lock:
            if self._inventory is None:
                self._inventory = load_inventory(self.config.inventory_sources)
            hosts = self._targets.get(runbook.targets)
            if hosts is None:
                hosts = self._targets[runbook.targets] = {
                    h.name: h for h in self._inventory.hosts(runbook.targets)
                }
            return hosts

    def target_host(self, runbook: Runbook, target: str) -> Host:
        """The inventory host named exactly ``target`` among the runbook's targets (never a pattern)."""
        from engine.errors import InventoryError  # noqa: PLC0415
        from engine.model import LOCALHOST  # noqa: PLC0415

        if not self.config.inventory_sources:
            if target in ("localhost", "127.0.0.1"):
                return LOCALHOST
            raise InventoryError(
                f"target {target!r}: without an inventory (-i) alerts can only name localhost"
            )
        hosts = self._hosts_of(runbook)
        if target in hosts:
            return hosts[target]
        raise InventoryError(
            f"target {target!r} is not a host of {runbook.targets!r} in the inventory; nothing was run"
        )


def conclude(
    report: RunReport, runbook: Runbook, policy: Policy, approver: AlertApprover
) -> tuple[EntryState, str, str]:
    """What an alert-started run comes to for its queue entry: (state, note, result for the metrics).

    The pitfall still present with a remediation nobody ran, or an automatic remediation
    that failed or did not verify, **escalates**: a human decides (``cairn approve``).
    """
    outcome = report.hosts[0].outcome if report.hosts else HostOutcome.FAILED
    reason = report.hosts[0].reason if report.hosts else "the run ended without a result"
    approved = approver.approved_by is not None
    if outcome is HostOutcome.HEALTHY:
        return EntryState.DONE, f"healthy: {reason}", "healthy"
    if outcome is HostOutcome.REMEDIATED:
        by = f"approved by {approver.approved_by}" if approved else "automatically"
        return EntryState.DONE, f"remediated {by}; verify is clean", "remediated"
    if approved:
        return EntryState.DONE, f"{outcome.value} after the approved remediation: {reason}", outcome.value
    if not runbook.remediate:
        return EntryState.DONE, f"{outcome.value}: {reason}", outcome.value
    attempted = any(
        r.phase is Phase.REMEDIATE
        and r.status not in (StepStatus.DECLINED, StepStatus.SKIPPED, StepStatus.NOT_ASKED)
        for h in report.hosts
        for r in h.results
    )
    if outcome is HostOutcome.FAILED and not attempted:
        return EntryState.DONE, f"failed: {reason}", "failed"
    why = approver.escalation or policy.why_not(runbook)
    if attempted:
        why = f"the automatic remediation did not fix it ({reason})" + (f"; {why}" if why else "")
    return EntryState.ESCALATED, f"{WAITS_FOR_A_HUMAN}{why or reason}", "escalated"


async def serve(
    config: ServeConfig, host: str, port: int, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve until cancelled (``cairn serve`` runs this in its event loop)."""
    server = Server(config)
    await asyncio.get_running_loop().run_in_executor(None, server.warm)
    server.start_workers()
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if on_ready is not None:  # listening: the inventory was read, the queue recovered
        on_ready()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        loop.run_in_executor(None, server.reload).add_done_callback(_say)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, server.stop_workers)
        server.close()


def _say(done: asyncio.Future[list[str]]) -> None:
    """Print what a SIGHUP reload did (or why it failed) on the server's stderr."""
    try:
        lines = done.result()
    except Exception as exc:  # a fault of Cairn's: say it, keep serving
        log.exception("reload failed")
        lines = [f"reload failed, nothing changed: {type(exc).__name__}: {exc}"]
    for line in lines:
        print(f"cairn serve: SIGHUP: {line}", file=sys.stderr, flush=True)


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


# --------------------------------------------------------------------------- the config file

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "listen": {"type": "string", "description": "HOST:PORT"},
        "token_file": {"type": "string"},
        "allow_no_token": {"type": "boolean"},
        "inventory": {"type": ["string", "array"], "items": {"type": "string"}},
        "runbooks": {"type": ["string", "array"], "items": {"type": "string"}},
        "journal": {"type": "string"},
        "known_hosts": {"type": "string"},
        "workers": {"type": "integer", "minimum": 1, "maximum": 500},
        "cooldown": {"type": ["number", "string"]},
        "grace": {"type": ["number", "string"]},
        "inputs": {
            "type": "object",
            "description": "runbook id -> its input values (a mapping) or a YAML/JSON file of them",
            "additionalProperties": {"type": ["object", "string"]},
        },
        "policy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "automate": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "breaker": {"type": "integer", "minimum": 1},
                "budget": {"type": "integer", "minimum": 1},
            },
        },
    },
}
"""What ``cairn serve --config FILE`` may say: the same settings as its options."""

_PATH_KEYS = ("token_file", "inventory", "runbooks", "journal", "known_hosts")


def read_config(path: Path) -> dict[str, Any]:
    """``cairn serve --config FILE``: its settings by option name (``automate``, ``breaker`` … flattened).

    Relative paths are relative to the file's folder. Every problem is reported at once,
    with file:line, as a :class:`CairnError`.
    """
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    from engine.model import parse_duration  # noqa: PLC0415
    from engine.yamlsource import pointer, read_yaml_file  # noqa: PLC0415

    doc = read_yaml_file(path)
    if not doc.problems and not isinstance(doc.data, dict):
        doc.add("", "a cairn serve config is a mapping of settings, e.g. 'listen: 127.0.0.1:9095'")
    if not doc.problems:
        for error in Draft202012Validator(CONFIG_SCHEMA).iter_errors(doc.data):
            where = pointer(tuple(error.absolute_path))
            if error.validator == "additionalProperties":
                known = ", ".join(sorted(error.schema.get("properties", {})))
                doc.add(where, f"{error.message}; the settings are: {known}")
            else:
                doc.add(where, error.message)
    settings: dict[str, Any] = {}
    if isinstance(doc.data, dict):
        for key in ("cooldown", "grace"):
            if isinstance(doc.data.get(key), int | float | str) and not isinstance(doc.data[key], bool):
                try:
                    settings[key] = parse_duration(doc.data[key])
                except ValueError as exc:
                    doc.add(f"/{key}", str(exc))
    if not doc.problems:
        data = dict(doc.data)
        policy = data.pop("policy", {}) or {}
        settings = data | policy | settings
        for key in _PATH_KEYS:
            value = settings.get(key)
            if isinstance(value, str) and key in ("inventory", "runbooks"):
                value = settings[key] = [value]
            if isinstance(value, list):
                settings[key] = [str(path.parent / Path(v).expanduser()) for v in value]
            elif isinstance(value, str):
                settings[key] = str(path.parent / Path(value).expanduser())
        for runbook_id, given in dict(settings.get("inputs") or {}).items():
            if isinstance(given, str):
                settings["inputs"][runbook_id] = str(path.parent / Path(given.lstrip("@")).expanduser())
    if doc.problems:
        raise CairnError("the config file has problems:\n" + "\n".join(f"  {p}" for p in doc.problems))
    return settings


def runbook_inputs(items: list[str], from_config: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``--inputs ID:@FILE`` / ``--inputs ID:KEY=VALUE`` (and the config's ``inputs``) by runbook id."""
    from engine.inputs import parse_extra_vars  # noqa: PLC0415

    found: dict[str, dict[str, Any]] = {}
    for runbook_id, given in (from_config or {}).items():
        values = given if isinstance(given, dict) else parse_extra_vars([f"@{given}"])
        found.setdefault(runbook_id, {}).update(values)
    for item in items:
        runbook_id, sep, rest = item.partition(":")
        if not sep or not runbook_id or not rest:
            raise CairnError(f"--inputs {item!r}: write RUNBOOK:@FILE or RUNBOOK:KEY=VALUE")
        found.setdefault(runbook_id, {}).update(parse_extra_vars([rest]))
    return found
