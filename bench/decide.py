"""What a decision and a notice cost: ``cairn approve`` as a person waits for it, ``decide()`` itself,
and the outbox's store work per notice, on SQLite and on PostgreSQL.

No goal in the issue: these figures say what the approval path and the outbox add, beside the
floor of ``cairn --help`` measured in the same run.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.machine import REPO, tool
from bench.report import print_table, ratio
from bench.servers import fresh_database, postgres
from bench.timing import Stats, bench_env, time_command

DESCRIPTION = "cairn approve as a fresh process, decide() and the outbox per notice, on SQLite and PostgreSQL"
_ids = itertools.count()


class Waiting:
    """A store with a supply of escalated entries, each waiting for one approval."""

    def __init__(self, store: str) -> None:
        from engine.core.alert_queue import AlertQueue

        self.store = store
        self.queue = AlertQueue(store, holder="bench")

    def escalated(self) -> str:
        """A new escalated entry's run id (the default rule: one approver)."""
        from engine.core.alerts import Alert, AlertStatus, Route
        from engine.core.approval_policy import ApprovalPolicy
        from engine.core.notices import NoticeKind, payload

        number = next(_ids)
        alert = Alert(AlertStatus.FIRING, {"node": f"n{number}"}, {}, f"f{number}")
        [entry_id] = self.queue.accept([Route(alert, "node-down", 0, f"n{number}")]).queued
        claimed = self.queue.claim()
        assert claimed is not None and claimed.id == entry_id, "the bench's store holds only its own entries"
        run_id = f"20261207-000000-{number:06d}"
        self.queue.started(entry_id, run_id)
        requirement = ApprovalPolicy().requirement("node-down", [], "warning", escalated_at=time.time())
        body = payload(NoticeKind.ESCALATED, key=f"bench:{number}", summary="waits")
        assert self.queue.escalate(
            entry_id, run_id=run_id, note="waits", requirement=requirement, notice=body
        )
        return run_id

    def settle(self) -> None:
        """The approved entry's run, done: the queue is empty for the next one."""
        from engine.core.alert_queue import EntryState

        claimed = self.queue.claim()
        assert claimed is not None
        self.queue.finish(claimed.id, EntryState.DONE, note="bench")

    def close(self) -> None:
        self.queue.close()


def run(quick: bool) -> dict[str, Any]:
    runs = 5 if quick else 20
    cairn = tool("cairn")
    if cairn is None:
        raise RuntimeError("no `cairn` console script beside this interpreter or on PATH")
    results: dict[str, Any] = {
        "floor": time_command([cairn, "--help"], runs, cwd=REPO).as_dict(),
        "stores": {},
    }
    with tempfile.TemporaryDirectory(prefix="cairn-bench-decide-") as scratch, postgres() as cluster:
        for dialect in ("sqlite", "postgresql"):
            store = (
                str(Path(scratch) / "journal.db")
                if dialect == "sqlite"
                else fresh_database(cluster, "decide")
            )
            results["stores"][dialect] = _measure(cairn, store, runs)
    _print(results)
    return results


def _measure(cairn: str, store: str, runs: int) -> dict[str, Any]:
    with _waiting(store) as waiting:
        approve = _time_approvals(waiting, lambda run_id: _cli(cairn, run_id, store), runs)
        decide = _time_approvals(waiting, lambda run_id: _in_process(waiting, run_id), runs * 5)
        outbox = _outbox_per_notice(store, runs * 10)
    return {
        "cairn_approve": approve.as_dict(),
        "decide": decide.as_dict(),
        "outbox_per_notice": outbox.as_dict(),
    }


@contextlib.contextmanager
def _waiting(store: str) -> Iterator[Waiting]:
    waiting = Waiting(store)
    try:
        yield waiting
    finally:
        waiting.close()


def _time_approvals(waiting: Waiting, approve: Any, runs: int) -> Stats:
    """``approve(run_id)`` timed on ``runs`` freshly escalated entries (one warm-up first, not counted)."""
    times = []
    for index in range(runs + 1):
        run_id = waiting.escalated()
        start = time.perf_counter()
        approve(run_id)
        if index:
            times.append(time.perf_counter() - start)
        waiting.settle()
    return Stats(tuple(times))


def _cli(cairn: str, run_id: str, store: str) -> None:
    done = subprocess.run(
        [cairn, "approve", run_id, "--journal", store],
        env=bench_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cairn approve failed ({done.returncode}): {done.stderr.strip()}")


def _in_process(waiting: Waiting, run_id: str) -> None:
    from engine.core.alert_queue import Action
    from engine.core.identity import Via, local_identity

    decided = waiting.queue.decide(run_id, local_identity(Via.CLI), Action.APPROVE)
    if decided.refused:
        raise RuntimeError(decided.message)


def _outbox_per_notice(store: str, count: int) -> Stats:
    """The store's work to send one notice to one sink: expand, claim, delivered (the sink itself
    takes no time: what is timed is Cairn's bookkeeping, not a network)."""
    from engine.core.alert_queue import AlertQueue
    from engine.core.notices import NoticeKind, payload
    from engine.core.outbox import Outbox

    outbox, queue = Outbox(store, holder="bench"), AlertQueue(store)
    try:
        _send_all(outbox)  # the notices the approvals above added
        for number in range(count):
            body = payload(NoticeKind.REMEDIATED, key=f"bench:notice:{number}", summary="remediated")
            queue.add_notice(NoticeKind.REMEDIATED, body, entry_id=None, run_id=None)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            _send_all(outbox, limit=1)
            times.append(time.perf_counter() - start)
        return Stats(tuple(times))
    finally:
        outbox.close()
        queue.close()


def _send_all(outbox: Any, limit: int = 500) -> None:
    """Expand up to ``limit`` notices for one sink, and record each claimed delivery delivered."""
    outbox.expand(["null"], lambda sink, kind: True, limit=limit)
    for delivery in outbox.claim(limit=limit):
        outbox.delivered(delivery.id)


def _print(results: dict[str, Any]) -> None:
    floor = results["floor"]["median_s"]
    rows = []
    for dialect, measured in results["stores"].items():
        for name, label in (
            ("cairn_approve", "cairn approve (fresh process)"),
            ("decide", "AlertQueue.decide (in process)"),
            ("outbox_per_notice", "outbox: expand + claim + delivered, per notice"),
        ):
            stats = measured[name]
            rows.append(
                [
                    f"{label}, {dialect}",
                    _ms(stats["median_s"]),
                    _ms(stats["p90_s"]),
                    stats["n"],
                    ratio(stats["median_s"], floor) if name == "cairn_approve" else "-",
                ]
            )
    rows.append(
        [
            "cairn --help (floor)",
            _ms(floor),
            _ms(results["floor"]["p90_s"]),
            results["floor"]["n"],
            "1.00x",
        ]
    )
    print_table("decisions and notices", ["what", "median", "p90", "n", "x --help"], rows)


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"
