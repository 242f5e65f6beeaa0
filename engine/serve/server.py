"""``cairn serve``: Alertmanager webhooks in; detect, diagnose and — where allowed — remediate out.

The server, put together from its parts:

* :mod:`engine.serve.settings` — what it runs with (options, ``--config``, defaults);
* :mod:`engine.serve.catalog` — the runbooks and inventory it has loaded, and SIGHUP's reload;
* :mod:`engine.serve.intake` — ``POST /alertmanager`` (alerts routed to the runbooks whose
  triggers match, :mod:`engine.core.alerts`, and queued in the journal's database,
  :mod:`engine.core.alert_queue`, before the 200), ``GET /healthz``, ``GET /metrics``;
* :mod:`engine.serve.workers` — the bounded pool that runs each queued entry on its target,
  remediating only where :mod:`engine.core.policy` or a human allows it;
* :mod:`engine.serve.metrics` — the Prometheus metrics;
* :mod:`engine.serve.connections` — the HTTP side's limits: a cap on connections, timeouts for
  idle connections and for request heads and bodies that do not arrive;
* :mod:`engine.serve.client_faults` — a client's mistakes answered 4xx (never 5xx), and said
  in the log at most once a minute.

SIGTERM: stop accepting, give running runs ``grace`` seconds, then cancel them (commands
killed where they run); their entries go back to the queue and the next ``cairn serve``
resumes their runs without repeating finished steps. After a ``kill -9`` the same happens
at the next start. SIGHUP: read the runbooks and the inventory again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from engine.core.alert_queue import AlertQueue
from engine.core.model import Runbook
from engine.serve.catalog import Catalog, load_runbooks
from engine.serve.client_faults import Throttle, http_logger, refuse_client_faults
from engine.serve.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from engine.serve.intake import WebhookIntake
from engine.serve.metrics import Metrics
from engine.serve.settings import ServeSettings
from engine.serve.workers import Workers

log = logging.getLogger(__name__)


class Server:
    """The webhook intake and its workers around one queue, over the loaded runbooks and inventory."""

    def __init__(self, config: ServeSettings, runbooks: Sequence[Runbook]) -> None:
        self.config = config
        self.queue = AlertQueue(config.journal_path, cooldown=config.cooldown)
        self._intake_queue = AlertQueue(config.journal_path, cooldown=config.cooldown)
        self.catalog = Catalog(config, runbooks, queues=(self.queue, self._intake_queue))
        self.catalog.forget_failed()
        self.metrics = Metrics()
        self.workers = Workers(config, self.catalog, self.queue, self.metrics)
        self.intake = WebhookIntake(
            config,
            self.catalog,
            self.metrics,
            queue=self.queue,
            intake_queue=self._intake_queue,
            wake=self.workers.wake,
        )

    def app(self) -> web.Application:
        """The aiohttp application: the webhook, ``/healthz``, ``/metrics``."""
        return self.intake.app()

    def warm(self) -> None:
        """Read the inventory and the triggered runbooks' target hosts before serving."""
        self.catalog.warm()

    def start_workers(self) -> None:
        """Re-queue what a previous server left running, then start the workers."""
        self.workers.start()

    def stop_workers(self, grace: float | None = None, cancelled_wait: float = 30.0) -> None:
        """Take no new entries; give running runs ``grace`` seconds, then cancel (checkpoint) them."""
        self.workers.stop(grace, cancelled_wait)

    def reload(self) -> list[str]:
        """SIGHUP: read the runbook folders and the inventory again; what it did, line by line."""
        return self.catalog.reload()

    def close(self) -> None:
        """After :meth:`stop_workers`: the intake thread and the queue's database."""
        self.intake.close()
        self._intake_queue.close()
        self.queue.close()


async def serve(
    config: ServeSettings, runbooks: Sequence[Runbook], on_ready: Callable[[], None] | None = None
) -> None:
    """Serve until cancelled (:func:`run` runs this in its event loop)."""
    server = Server(config, runbooks)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.warm)
    server.start_workers()
    runner, guard = await _listen(server, config)
    if on_ready is not None:  # listening: the inventory was read, the queue recovered
        on_ready()

    def reload() -> None:
        loop.run_in_executor(None, server.reload).add_done_callback(_say)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await asyncio.Event().wait()
    finally:
        guard.stop()
        await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, server.stop_workers)
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

    def listening() -> None:
        print(
            f"cairn serve: http://{settings.listen}/alertmanager · {len(with_triggers)} runbooks with "
            f"triggers ({', '.join(with_triggers) or 'none'}) · journal {settings.journal_path} · "
            f"{settings.policy.describe()}",
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
        print("cairn serve: stopped (SIGTERM)", file=sys.stderr)
    return 0
