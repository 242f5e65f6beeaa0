"""Fan-out: work on many hosts at once, with a bound, while approvals stay one at a time.

Hosts run in a pool of ``forks`` threads (the executors block on I/O, so
threads are the right tool), all started before any work is handed out.
Approvals are different: a human answers one question at a time, and a
terminal prompt must never interleave with another.
So a worker that needs a decision hands it to the :class:`ApprovalDesk`, and
the thread that started the run — the one a Ctrl-C arrives on — asks the
approver while it waits for the workers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from engine.core.approval import Approval, ApprovalRequest, Approver, Decision

log = logging.getLogger(__name__)

_SERVE_POLL = 0.5
"""Seconds between checks for finished work when nothing wakes the desk (it normally is woken)."""
INTERRUPTED = "not run: the run was interrupted before anyone answered"
"""The note of a step whose approval was never given because the run stopped (the step ends ``not run``,
so resume asks again)."""

T = TypeVar("T")
R = TypeVar("R")


class WorkerPool:
    """``size`` threads, every one started and tracked before any work is handed out.

    Not :class:`concurrent.futures.ThreadPoolExecutor`: it starts its threads inside
    ``submit``, and a Ctrl-C landing between starting one and recording it leaves a
    worker that shutdown does not wait for — a host would then finish after the run.
    Here a Ctrl-C can land anywhere in :meth:`submit` and :meth:`close` still waits
    for everything handed out.
    """

    def __init__(self, size: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[Any], Any], Any] | None]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        try:
            for number in range(1, size + 1):
                thread = threading.Thread(target=self._serve, name=f"{name}-{number}", daemon=True)
                self._threads.append(thread)
                thread.start()
        except BaseException:
            self.close()
            raise

    def submit(self, work: Callable[[T], R], item: T) -> Future[R]:
        """Queue ``work(item)``; the future holds its result or exception."""
        future: Future[R] = Future()
        self._work.put((future, work, item))
        return future

    def close(self) -> None:
        """Let the threads finish what was handed out, then end them (waits)."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while (job := self._work.get()) is not None:
            future, work, item = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = work(item)
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)


class ApprovalDesk:
    """Serialises approvals: workers :meth:`ask`, the run's own thread answers in :meth:`serve`."""

    def __init__(self, approver: Approver) -> None:
        self.approver = approver
        self.owner = threading.current_thread()
        self._queue: queue.Queue[tuple[ApprovalRequest, Future[Approval]] | None] = queue.Queue()
        self._closed: str = ""
        self._lock = threading.Lock()

    def ask(self, request: ApprovalRequest) -> Approval:
        """Called by a worker: wait for the decision on ``request``."""
        if threading.current_thread() is self.owner:
            return self.approver.decide(request)
        answer: Future[Approval] = Future()
        with self._lock:
            if self._closed:
                return Approval(Decision.NOT_ASKED, "cairn", self._closed)
            self._queue.put((request, answer))
        return answer.result()

    def serve(self, pending: Sequence[Future[T]]) -> None:
        """Answer approvals until every future in ``pending`` is done (on the run's own thread)."""
        while not all(f.done() for f in pending):
            try:
                item = self._queue.get(timeout=_SERVE_POLL)
            except queue.Empty:
                continue
            if item is None:  # a worker finished: look again
                continue
            request, answer = item
            try:
                answer.set_result(self.approver.decide(request))
            except BaseException as exc:  # Ctrl-C at the prompt: the worker must not wait forever
                answer.set_result(Approval(Decision.NOT_ASKED, "cairn", INTERRUPTED))
                if not isinstance(exc, Exception):
                    raise
                log.exception("the approver failed; %s is not asked", request.step.id)

    def wake(self) -> None:
        """Make :meth:`serve` look at its futures again (called as each one finishes)."""
        self._queue.put(None)

    def close(self, note: str) -> None:
        """Answer everything waiting and everything asked from now on: not asked, because of ``note``."""
        with self._lock:
            self._closed = note
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    continue
                _, answer = item
                answer.set_result(Approval(Decision.NOT_ASKED, "cairn", note))


def fan_out(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    pool: WorkerPool,
    desk: ApprovalDesk,
    on_interrupt: Callable[[], None],
) -> list[R]:
    """``work(item)`` for every item in the pool, results in the items' order.

    While waiting, the desk answers approvals. On Ctrl-C, ``on_interrupt`` runs
    (it cancels the running commands), pending approvals are declined, the
    workers are waited for, and the interrupt is re-raised.
    """
    futures: list[Future[R]] = []
    try:  # a Ctrl-C can land anywhere here, even while the work is still being handed out
        for item in items:
            future = pool.submit(work, item)
            futures.append(future)
            future.add_done_callback(lambda _: desk.wake())
        desk.serve(futures)
    except KeyboardInterrupt:
        on_interrupt()
        desk.close(INTERRUPTED)
        for future in futures:
            future.exception()  # wait: each worker sees the cancel and stops within seconds
        raise
    return [f.result() for f in futures]


def batches(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive groups of ``size`` (the last may be smaller)."""
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]
