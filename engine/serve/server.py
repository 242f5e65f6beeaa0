"""``cairn serve``: Alertmanager webhooks in; detect, diagnose and — where allowed — remediate out.

The server, put together from its parts:

* :mod:`engine.serve.settings` — what it runs with (options, ``--config``, defaults);
* :mod:`engine.serve.catalog` — the runbooks and inventory it has loaded, and SIGHUP's reload;
* :mod:`engine.serve.intake` — ``POST /alertmanager`` (alerts routed to the runbooks whose
  triggers match, :mod:`engine.core.alerts`, and queued in the store,
  :mod:`engine.core.alert_queue`, before the 200), ``GET /healthz``, ``GET /metrics``;
* :mod:`engine.serve.takeover` — this server's lease in the store, and the loop that takes over
  the work of servers whose lease ran out;
* :mod:`engine.serve.workers` — the bounded pool that runs each queued entry on its target,
  remediating only where :mod:`engine.core.policy` or a human allows it;
* :mod:`engine.serve.metrics` — the Prometheus metrics and ``/healthz``'s report;
* :mod:`engine.serve.dispatch` — the notices outbox sent to the webhooks (:mod:`engine.serve.webhooks`)
  and Slack (:mod:`engine.serve.slack`: also its ``POST /slack/actions`` and Socket Mode), and
  approval requests expired;
* :mod:`engine.serve.connections` — the HTTP side's limits: a cap on connections, timeouts for
  idle connections and for request heads and bodies that do not arrive;
* :mod:`engine.serve.client_faults` — a client's mistakes answered 4xx (never 5xx), and said
  in the log at most once a minute.

Several servers may share one store (``--journal postgresql://…``, or one SQLite file), all
active: Alertmanager may send each webhook to all of them; each alert is queued once.

SIGTERM **hands the server's work over**: stop accepting, give running runs ``grace`` seconds,
then cancel them (commands killed where they run); their entries go back to the queue (and
whatever else it still holds, :meth:`AlertQueue.hand_back`), then its lease is released: the
other servers resume the runs at once, without repeating finished steps. After a ``kill -9``
the others take the work over once its lease runs out (at once on the same machine: its
process is gone). SIGHUP: read the runbooks and the inventory again.

**A lost lease** (the server was frozen or cut off longer than ``--lease``, or its store did
not answer that long: its work may be another's now): it claims nothing more and cancels its runs
at once, writes nothing for the entries taken over, hands back what it still holds, and registers
again as a new server (a new holder id) — ``/healthz`` answers 503 meanwhile, and says which lease
was lost and why afterwards. Registering again rather than exiting keeps a lone server (one SQLite
file) serving after a lock or an outage longer than its lease; it is safe because the old lease
never holds again (the store refuses its renewal and fences its runs), so nothing of the old
tenure can start a step after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from engine.core.alert_queue import AlertQueue
from engine.core.errors import JournalError
from engine.core.model import Runbook
from engine.core.queue_read import QueueReader
from engine.serve.catalog import Catalog, load_runbooks
from engine.serve.client_faults import Throttle, http_logger, refuse_client_faults
from engine.serve.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from engine.serve.dispatch import Dispatcher, sinks_of
from engine.serve.intake import WebhookIntake
from engine.serve.metrics import Metrics
from engine.serve.settings import ServeSettings
from engine.serve.takeover import Tenure
from engine.serve.workers import Workers

log = logging.getLogger(__name__)


class Server:
    """The webhook intake and its workers over the loaded runbooks and inventory, holding its work in
    the store under its lease — a new lease (a new holder id) each time one is lost."""

    def __init__(self, config: ServeSettings, runbooks: Sequence[Runbook]) -> None:
        self.config = config
        self.metrics = Metrics()
        self._intake_queue = AlertQueue(config.journal, cooldown=config.cooldown)
        self._reader = QueueReader(config.journal)
        self.catalog = Catalog(config, runbooks, queues=(self._intake_queue,))
        self.catalog.forget_failed()
        self.lost_leases: list[LostLease] = []
        self._stopping = threading.Event()
        self._swap = threading.Lock()
        """Held while the tenure is swapped for a new one, and while SIGTERM stops the current one."""
        self._registering: threading.Thread | None = None
        self._registering_lock = threading.Lock()
        """Held only to start a registration, or to see none will start (never while waiting)."""
        self.tenure, self.queue, self.workers = self._new_tenure()
        self.metrics.health.describe_server(
            self._current_id, config.journal.shown, self._lease_state, self._last_lost
        )
        self.metrics.describe_server(lambda: not self.tenure.lost, lambda: self.workers.held)
        sinks, self.slack = sinks_of(config.notify, config.journal, self.metrics.health.say)
        self.dispatcher = Dispatcher(config.journal, sinks, self.metrics, lambda: self.tenure)
        self.intake = WebhookIntake(
            config,
            self.catalog,
            self.metrics,
            reader=self._reader,
            intake_queue=self._intake_queue,
            wake=self._wake,
            notifications=self.dispatcher.report,
        )

    @property
    def id(self) -> str:
        """This server's holder id in the store (a new one after a lost lease)."""
        return self.tenure.id

    def app(self) -> web.Application:
        """The aiohttp application: the webhook, ``/healthz``, ``/metrics`` (and Slack's ``/slack/actions``)."""
        app = self.intake.app()
        if self.slack is not None:
            app.add_routes(self.slack.routes())
        return app

    def warm(self) -> None:
        """Read the inventory and the triggered runbooks' target hosts before serving."""
        self.catalog.warm()

    def start(self) -> None:
        """Register the lease, take over what stopped servers left, then start the workers and the
        notices' dispatcher."""
        self.tenure.start(wake=self.workers.wake)
        self.metrics.server_id(self.tenure.id)
        self.workers.start()
        self.dispatcher.start()

    def stop(self, grace: float | None = None, cancelled_wait: float = 30.0) -> list[int]:
        """SIGTERM: take no new entries, give running runs ``grace`` seconds, then cancel (checkpoint)
        them; stop sending notices; hand back every entry still held and release the lease. The
        entries handed back."""
        with self._registering_lock:
            self._stopping.set()
            registering = self._registering
        if registering is not None:
            registering.join()
        with self._swap:
            self.workers.stop(grace, cancelled_wait)
            self.dispatcher.stop()  # what it did not send stays in the outbox for the next server
            return self._hand_back(self.tenure, self.queue)

    def reload(self) -> list[str]:
        """SIGHUP: read the runbook folders and the inventory again; what it did, line by line."""
        return self.catalog.reload()

    def close(self) -> None:
        """After :meth:`stop`: the intake thread, the queues' connections and the lease's, the sinks."""
        self.intake.close()
        self.dispatcher.close()
        if self.slack is not None:
            self.slack.close()
        self._intake_queue.close()
        self._reader.close()
        self.queue.close()
        self.tenure.close()

    # ------------------------------------------------------------------ tenures

    def _new_tenure(self) -> tuple[Tenure, AlertQueue, Workers]:
        """A lease (not registered yet), the workers' queue under its id, and the workers."""
        tenure = Tenure(self.config.journal, self.config.lease, self.metrics)
        try:
            queue = AlertQueue(self.config.journal, cooldown=self.config.cooldown, holder=tenure.id)
        except BaseException:
            tenure.close()
            raise
        workers = Workers(self.config, self.catalog, queue, self.metrics, tenure)
        tenure.when_lost(workers.lease_lost)
        tenure.when_lost(lambda why: self._lost(tenure, why))
        return tenure, queue, workers

    def _hand_back(self, tenure: Tenure, queue: AlertQueue) -> list[int]:
        """Every entry ``tenure`` still holds back to the queue, then its lease released (a lost one
        is over already)."""
        tenure.stop_looking()
        lost = tenure.lost
        how = (
            f"handed back by {tenure.id}, which lost its lease"
            if lost
            else f"handed over at shutdown by {tenure.id}"
        )
        handed: list[int] = []
        try:
            handed = queue.hand_back(f"{how}; its run resumes on another cairn serve")
        except JournalError as exc:  # they are taken over once the lease lapses
            log.warning("could not hand the entries back: %s", exc)
        if handed:
            self.metrics.health.say(f"{how}: entries {', '.join(map(str, handed))}")
        if not lost:
            tenure.release("stopped (SIGTERM): its work was handed over")
        return handed

    def _lost(self, tenure: Tenure, why: str) -> None:
        """A lease was lost (any thread; never blocks): register again, on a thread of its own."""
        self.lost_leases.append(LostLease(tenure.id, why, time.time()))
        self.metrics.lease_losses.inc()
        with self._registering_lock:
            if self._stopping.is_set():
                return  # stopping anyway: SIGTERM's path hands back what is left
            self._registering = threading.Thread(
                target=self._register_again, args=(tenure,), name="cairn-register", daemon=True
            )
            self._registering.start()

    def _register_again(self, old: Tenure) -> None:
        """Stop the old tenure's workers (their runs are cancelled), hand back what it still holds,
        then register a new lease and start new workers under it — every heartbeat until the store
        lets it."""
        old_queue, old_workers = self.queue, self.workers
        old_workers.stop(0.0)
        self._hand_back(old, old_queue)
        said = False
        while not self._stopping.is_set():
            try:
                tenure, queue, workers = self._new_tenure()
            except JournalError as exc:
                said = self._cannot_register(exc, said)
                self._stopping.wait(old.lease.heartbeat)
                continue
            try:
                tenure.start(wake=workers.wake)
            except JournalError as exc:
                queue.close()
                tenure.close()
                said = self._cannot_register(exc, said)
                self._stopping.wait(old.lease.heartbeat)
                continue
            with self._swap:
                if self._stopping.is_set():  # SIGTERM came meanwhile: nothing was claimed under it
                    tenure.release("stopped (SIGTERM) as it registered again")
                    queue.close()
                    tenure.close()
                    return
                self.tenure, self.queue, self.workers = tenure, queue, workers
                self.metrics.server_id(tenure.id)
                workers.start()
            old_queue.close()
            old.close()
            self.metrics.health.say(
                f"registered again as server {tenure.id} (the lease of {old.id} was lost)"
            )
            return

    def _cannot_register(self, exc: JournalError, said: bool) -> bool:
        if not said:
            self.metrics.health.say(f"cannot register again yet, it tries every heartbeat: {exc}")
        return True

    # The current tenure's, whichever it is when asked (a lost lease is replaced by a new one).
    def _current_id(self) -> str:
        return self.tenure.id

    def _lease_state(self) -> str:
        return self.tenure.state()

    def _wake(self) -> None:
        self.workers.wake()

    def _last_lost(self) -> dict[str, object] | None:
        """The last lease lost, for ``/healthz`` (``None``: none was)."""
        if not self.lost_leases:
            return None
        last = self.lost_leases[-1]
        return {"server": last.server, "why": last.why, "seconds_ago": round(time.time() - last.at, 1)}


@dataclass(frozen=True)
class LostLease:
    """A lease this process lost: whose it was, why, when (``time.time()``)."""

    server: str
    why: str
    at: float


async def serve(
    config: ServeSettings, runbooks: Sequence[Runbook], on_ready: Callable[[Server], None] | None = None
) -> None:
    """Serve until cancelled (:func:`run` runs this in its event loop; SIGTERM cancels it)."""
    loop = asyncio.get_running_loop()
    server = await loop.run_in_executor(None, Server, config, runbooks)
    try:
        await loop.run_in_executor(None, server.warm)
        await loop.run_in_executor(None, server.start)
        runner, guard = await _listen(server, config)
    except BaseException:
        await loop.run_in_executor(None, _abandon, server)
        raise
    await _connect_slack(server)
    if on_ready is not None:  # listening: the inventory was read, the lease registered
        on_ready(server)

    def reload() -> None:
        loop.run_in_executor(None, server.reload).add_done_callback(_say)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await asyncio.Event().wait()
    finally:
        guard.stop()
        await runner.cleanup()
        if server.slack is not None:  # no more button presses: SIGTERM hands the work over
            await server.slack.stop()
        await loop.run_in_executor(None, server.stop)
        server.close()


async def _connect_slack(server: Server) -> None:
    """Slack's Socket Mode (when configured); one that cannot connect is said, and serving goes on:
    notices are still sent, and decisions taken in the CLI and the TUI."""
    if server.slack is None:
        return
    try:
        await server.slack.start()
    except Exception as exc:  # Slack's side: the alerts, runs and approvals do not need it
        log.exception("Slack did not start")
        server.metrics.health.say(
            f"slack: could not connect Socket Mode, serving goes on: {type(exc).__name__}"
        )


def _abandon(server: Server) -> None:
    """The start failed half-way: stop what started, hand back what it holds, close."""
    server.stop(0.0, cancelled_wait=5.0)
    server.close()


async def _listen(server: Server, config: ServeSettings) -> tuple[web.AppRunner, ConnectionGuard]:
    """The HTTP side, listening: aiohttp behind the connection guard and the answers to client faults."""
    say = Throttle(lambda line: print(f"cairn serve: {line}", file=sys.stderr, flush=True))
    limits = ConnectionLimits(
        config.max_connections, config.header_timeout, config.body_timeout, config.idle_timeout
    )
    guard = ConnectionGuard(limits, say)
    asyncio.get_running_loop().set_exception_handler(guard.on_loop_exception)  # a failed accept, said once
    runner = web.AppRunner(
        server.app(), access_log=None, keepalive_timeout=config.idle_timeout, logger=http_logger(say)
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.request_handler = guard.guard_handler(refuse_client_faults(runner.server.request_handler))
    await GuardedSite(runner, config.host, config.port, guard).start()
    if guard.cap < config.max_connections:
        print(
            f"cairn serve: at most {guard.cap} connections at once, not {config.max_connections} "
            f"(--max-connections): half the open-file limit ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]})",
            file=sys.stderr,
        )
    return runner, guard


def _say(done: asyncio.Future[list[str]]) -> None:
    """Print what a SIGHUP reload did (or why it failed) on the server's stderr."""
    try:
        lines = done.result()
    except Exception as exc:  # a fault of Cairn's: say it, keep serving
        log.exception("reload failed")
        lines = [f"reload failed, nothing changed: {type(exc).__name__}: {exc}"]
    for line in lines:
        print(f"cairn serve: SIGHUP: {line}", file=sys.stderr, flush=True)


def run(settings: ServeSettings, *, jobs: int = 1) -> int:
    """``cairn serve``: load the runbooks (``jobs`` processes), serve until SIGTERM; the exit code.

    What is wrong with the runbooks, or with the settings about them, is said on stderr and
    serving goes on without it; a :class:`~engine.core.errors.CairnError` stops the start.
    """
    runbooks, said = load_runbooks(settings, jobs=jobs)
    for line in said:
        print(f"cairn serve: {line}", file=sys.stderr)
    with_triggers = [r.id for r in runbooks if r.triggers]

    def listening(server: Server) -> None:
        print(
            f"cairn serve: http://{settings.listen}/alertmanager · {len(with_triggers)} runbooks with "
            f"triggers ({', '.join(with_triggers) or 'none'}) · journal {settings.journal.shown} · "
            f"server {server.id} · {settings.policy.describe()} · {settings.notify.approvals.describe()} · "
            f"notifies {', '.join(server.dispatcher.names) or 'nobody (no webhooks: or slack: configured)'}",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await serve(settings, runbooks, on_ready=listening)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        print("cairn serve: stopped (SIGTERM): its work was handed over", file=sys.stderr)
    return 0
