"""engine/core/outbox.py: the notices outbox as servers send it, on a real SQLite file and a real
PostgreSQL database (a throwaway cluster on loopback).

What the dispatcher of ``cairn serve`` (engine/serve/dispatch.py) relies on: each notice becomes one
delivery per sink that wants its kind, once, whoever expands it; deliveries are claimed oldest
first, an entry's notices one at a time per sink (a thread reply never before its message); a
claim holds for its time and then lapses to whoever claims next; two servers never hold the same
delivery; abandoned deliveries are counted and said. Clocks are given (``now=``) so that lapsing
is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine.core.alert_queue import AlertQueue, EntryState
from engine.core.approval_policy import ApprovalPolicy
from engine.core.notices import WEBHOOK_KINDS, NoticeKind, payload
from engine.core.outbox import Backlog, Delivery, Outbox, payload_text
from engine.core.store.location import locate
from engine.serve.dispatch import Dispatcher, backoff
from engine.serve.metrics import Metrics
from engine.serve.notify_settings import WebhookSettings
from engine.serve.sinks import DeliveryFailed, Sink
from engine.serve.takeover import Tenure
from engine.serve.webhooks import Webhook
from tests.engine.test_alert_queue import STORES, routed, store_at
from tests.postgres import PgCluster
from tests.webhook_receiver import WebhookReceiver

T0 = 2_000_000_000.0
"""A fixed clock for the deliveries (2033): each test moves it on by hand."""

SINKS = ["webhook:pager", "slack"]


def wants(sink: str, kind: NoticeKind) -> bool:
    """The pager takes the webhook kinds (no per-step chatter); Slack takes everything."""
    return sink == "slack" or kind in WEBHOOK_KINDS


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_at(request, tmp_path)


@pytest.fixture
def queue(store: str) -> Iterator[AlertQueue]:
    opened = AlertQueue(store)
    yield opened
    opened.close()


@pytest.fixture
def outbox(store: str) -> Iterator[Outbox]:
    opened = Outbox(store, holder="server-a")
    yield opened
    opened.close()


def tell(queue: AlertQueue, key: str, kind: NoticeKind = NoticeKind.ESCALATED, entry: int | None = 1) -> None:
    """Add one notice, as a change of ``entry`` would."""
    body = payload(kind, key=key, summary=f"{kind.value} of entry {entry}", entry={"id": entry}, at=T0)
    queue.add_notice(kind, body, entry_id=entry, run_id=None)


def claimed(outbox: Outbox, now: float = T0, limit: int = 50, hold: float = 30.0) -> list[tuple[str, str]]:
    """``(notice key, sink)`` of each delivery claimed."""
    return [(d.notice.key, d.sink) for d in outbox.claim(limit=limit, hold=hold, now=now)]


def test_each_notice_becomes_one_delivery_per_sink_that_wants_its_kind(
    queue: AlertQueue, outbox: Outbox
) -> None:
    tell(queue, "n1", NoticeKind.ESCALATED, entry=1)
    tell(queue, "n2", NoticeKind.STEP, entry=2)
    assert outbox.expand(SINKS, wants, now=T0) == 2
    assert outbox.expand(SINKS, wants, now=T0) == 0, "a notice is expanded once"
    assert sorted(claimed(outbox)) == [("n1", "slack"), ("n1", "webhook:pager"), ("n2", "slack")]


def test_the_same_key_added_twice_is_one_notice(queue: AlertQueue, outbox: Outbox) -> None:
    tell(queue, "entry:1:escalated")
    tell(queue, "entry:1:escalated")  # a retried transaction, a second server
    assert outbox.expand(SINKS, wants, now=T0) == 1
    assert len(claimed(outbox)) == 2


def test_a_claimed_delivery_carries_the_notice_as_it_was_written(queue: AlertQueue, outbox: Outbox) -> None:
    tell(queue, "n1")
    outbox.expand(["webhook:pager"], wants, now=T0)
    [delivery] = outbox.claim(now=T0)
    assert (delivery.sink, delivery.attempts, delivery.notice.entry_id) == ("webhook:pager", 0, 1)
    assert delivery.notice.kind is NoticeKind.ESCALATED
    assert delivery.notice.payload["id"] == "n1" and delivery.notice.payload["version"] == 1
    assert payload_text(delivery.notice).startswith('{"at":"2033-05-18T03:33:20Z"'), "sorted, compact JSON"


def test_an_entrys_notices_go_one_at_a_time_per_sink_in_order(queue: AlertQueue, outbox: Outbox) -> None:
    tell(queue, "e1-escalated", NoticeKind.ESCALATED, entry=1)
    tell(queue, "e1-approved", NoticeKind.APPROVED, entry=1)
    tell(queue, "e2-escalated", NoticeKind.ESCALATED, entry=2)
    outbox.expand(["slack"], wants, now=T0)
    first = outbox.claim(now=T0)
    assert [d.notice.key for d in first] == ["e1-escalated", "e2-escalated"], (
        "e1's second waits for its first"
    )
    assert claimed(outbox, now=T0 + 1) == [], "nothing else is due while those are held"

    by_key = {d.notice.key: d for d in first}
    outbox.failed(by_key["e1-escalated"].id, "Slack answered 500", retry_at=T0 + 10, now=T0 + 1)
    assert claimed(outbox, now=T0 + 2) == [], "a failed delivery still holds back its entry's later notices"
    outbox.delivered(by_key["e2-escalated"].id, now=T0 + 2)

    [again] = outbox.claim(now=T0 + 10)
    assert (again.notice.key, again.attempts) == ("e1-escalated", 1)
    outbox.delivered(again.id, now=T0 + 10)
    assert claimed(outbox, now=T0 + 10) == [("e1-approved", "slack")]


def test_an_abandoned_delivery_is_counted_and_no_longer_holds_its_entry_back(
    queue: AlertQueue, outbox: Outbox
) -> None:
    tell(queue, "e1-escalated", NoticeKind.ESCALATED, entry=1)
    tell(queue, "e1-declined", NoticeKind.DECLINED, entry=1)
    outbox.expand(["webhook:pager"], wants, now=T0)
    [first] = outbox.claim(now=T0)
    outbox.failed(first.id, "webhook:pager answered 404: no such hook", retry_at=None, now=T0)
    backlog = outbox.backlog(now=T0 + 5)
    assert (backlog.pending, backlog.abandoned) == (1, 1)
    assert backlog.last_error == "webhook:pager answered 404: no such hook"
    assert claimed(outbox, now=T0 + 5) == [("e1-declined", "webhook:pager")]


def test_the_backlog_says_how_long_the_oldest_pending_notice_has_waited(
    store: str, queue: AlertQueue, outbox: Outbox
) -> None:
    assert outbox.backlog() == Backlog(0, 0, 0.0, "")
    tell(queue, "n1")
    outbox.expand(SINKS, wants, now=T0)
    [created] = [d.notice.created_at for d in outbox.claim(limit=1, now=T0)]
    backlog = outbox.backlog(now=created + 42)
    assert (backlog.pending, backlog.abandoned) == (2, 0)
    assert backlog.oldest_pending_age == pytest.approx(42)
    for delivery in outbox.claim(now=T0 + 100):
        outbox.delivered(delivery.id)
    assert outbox.claim(now=T0 + 200) == []


def test_a_claim_holds_for_its_time_then_lapses_to_another_server(queue: AlertQueue, store: str) -> None:
    a, b = Outbox(store, holder="server-a"), Outbox(store, holder="server-b")
    try:
        tell(queue, "n1")
        assert a.expand(["webhook:pager"], wants, now=T0) == 1
        assert b.expand(["webhook:pager"], wants, now=T0) == 0, "the first to expand decides"
        assert claimed(a, now=T0, hold=30) == [("n1", "webhook:pager")]
        assert claimed(b, now=T0 + 29) == [], "server-a's claim holds"
        # server-a died with it: its claim lapses and server-b sends it (at least once)
        [taken] = b.claim(now=T0 + 31)
        assert (taken.notice.key, taken.attempts) == ("n1", 0)
        assert claimed(a, now=T0 + 32) == [], "server-b holds it now"
        b.delivered(taken.id, now=T0 + 32)
        assert claimed(a, now=T0 + 100) == [] and claimed(b, now=T0 + 100) == []
    finally:
        a.close()
        b.close()


def test_two_servers_claiming_at_once_never_hold_the_same_delivery(queue: AlertQueue, store: str) -> None:
    for number in range(60):
        tell(queue, f"n{number}", NoticeKind.ESCALATED, entry=number)
    outboxes = [Outbox(store, holder=f"server-{i}") for i in range(3)]
    start = threading.Barrier(len(outboxes))
    taken: list[list[int]] = [[] for _ in outboxes]
    failures: list[BaseException] = []

    def send(index: int) -> None:
        outbox = outboxes[index]
        start.wait()
        try:
            while True:
                outbox.expand(["webhook:pager"], wants, now=T0)
                batch = outbox.claim(limit=7, hold=300, now=T0)
                if not batch:
                    return
                taken[index] += [d.id for d in batch]
        except BaseException as exc:  # said by the test, not lost in a thread
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(outboxes))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        every = [delivery for mine in taken for delivery in mine]
        assert len(every) == 60 == len(set(every)), "each delivery claimed exactly once"
    finally:
        for outbox in outboxes:
            outbox.close()


def test_deliveries_wait_for_their_time_after_a_failure(queue: AlertQueue, outbox: Outbox) -> None:
    tell(queue, "n1", entry=None)
    outbox.expand(["webhook:pager"], wants, now=T0)
    [first] = outbox.claim(now=T0)
    outbox.failed(first.id, "webhook:pager: connection refused", retry_at=T0 + 8, now=T0)
    assert claimed(outbox, now=T0 + 7.9) == []
    [again] = outbox.claim(now=T0 + 8)
    assert again.attempts == 1
    assert outbox.backlog(now=T0 + 8).last_error == "webhook:pager: connection refused"
    outbox.delivered(again.id, now=T0 + 8)
    assert outbox.backlog(now=T0 + 9) == Backlog(0, 0, 0.0, "")


def test_the_store_clock_is_used_when_none_is_given(queue: AlertQueue, outbox: Outbox) -> None:
    tell(queue, "n1")
    assert outbox.expand(["slack"], wants) == 1
    [delivery] = outbox.claim()
    assert abs(delivery.notice.created_at - time.time()) < 600, "the database's clock, in epoch seconds"


# --------------------------------------------------------------------------- sending: the dispatcher


class HeldSink:
    """A sink that takes a delivery only once the test lets it (a Slack that hangs)."""

    name = "slack"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.delivered: list[str] = []

    def wants(self, kind: NoticeKind) -> bool:
        return True

    def deliver(self, delivery: Delivery) -> None:
        self.started.set()
        if not self.release.wait(60):
            raise DeliveryFailed("the test never let it through")
        self.delivered.append(delivery.notice.key)


@dataclass
class Sending:
    """A dispatcher on ``store`` as a server runs it: its own lease, metrics, and what it said."""

    dispatcher: Dispatcher
    tenure: Tenure
    said: list[str]

    def close(self) -> None:
        self.dispatcher.stop(5)
        self.dispatcher.close()
        self.tenure.release("the test is over")
        self.tenure.close()


@pytest.fixture
def sending(store: str) -> Iterator[Callable[..., Sending]]:
    made: list[Sending] = []

    def make(*sinks: Sink, start: bool = True) -> Sending:
        metrics = Metrics()
        said: list[str] = []
        metrics.health.say = said.append
        tenure = Tenure(locate(store), 30.0, metrics)
        tenure.start(wake=lambda: None)
        dispatcher = Dispatcher(locate(store), list(sinks), metrics, lambda: tenure)
        made.append(Sending(dispatcher, tenure, said))
        if start:
            dispatcher.start()
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver(secret="pager-secret").start()
    yield started
    started.close()


def pager(receiver: WebhookReceiver) -> Webhook:
    return Webhook(WebhookSettings("pager", receiver.url, secret=receiver.secret))


def test_retries_back_off_from_a_second_doubling_to_five_minutes_with_jitter() -> None:
    assert [backoff(n, jitter=lambda: 0.0) for n in (1, 2, 3, 4, 9, 10, 50)] == [1, 2, 4, 8, 256, 300, 300]
    assert backoff(3, jitter=lambda: 1.0) == 5.0, "up to a quarter more, so retries do not go in step"
    assert backoff(10, jitter=lambda: 1.0) == 300.0, "never past the cap"
    assert backoff(1, after=120.0, jitter=lambda: 0.0) == 120.0, "Retry-After is honoured"


def test_a_hanging_sink_delays_only_its_own_notices(
    queue: AlertQueue, sending: Callable[..., Sending], receiver: WebhookReceiver
) -> None:
    held = HeldSink()
    sent = sending(held, pager(receiver))
    tell(queue, "e1-escalated", NoticeKind.ESCALATED, entry=1)
    tell(queue, "e2-escalated", NoticeKind.ESCALATED, entry=2)
    sent.dispatcher.wake()
    assert held.started.wait(30), "Slack's delivery started"
    receiver.wait(lambda r: r.keys() == {"e1-escalated": 1, "e2-escalated": 1}, "the pager's notices")
    assert held.delivered == [], "Slack still hangs on its first"
    held.release.set()
    receiver.wait(lambda r: len(held.delivered) == 2, "Slack's notices once it answers")
    assert sorted(held.delivered) == ["e1-escalated", "e2-escalated"]


def test_a_delivery_for_a_sink_this_server_does_not_have_is_abandoned_saying_so(
    queue: AlertQueue, store: str, sending: Callable[..., Sending]
) -> None:
    elsewhere = Outbox(store, holder="server-with-teams")
    try:
        tell(queue, "n1")
        elsewhere.expand(["webhook:teams"], wants)  # a server whose config has it expanded the notice
    finally:
        elsewhere.close()
    sent = sending(start=False)
    assert sent.dispatcher.names == []
    sent.dispatcher.turn()
    assert sent.dispatcher.report()["pending"] == 1, "a server without sinks claims nothing"

    sent = sending(Webhook(WebhookSettings("pager", "http://127.0.0.1:9/never-called")), start=False)
    sent.dispatcher.turn()
    report = sent.dispatcher.report()
    assert (report["pending"], report["abandoned"]) == (0, 1)
    assert report["last_error"] == (
        f"webhook:teams: not configured on server {sent.tenure.id} (not in its config)"
    )
    assert sent.said == [
        f"webhook:teams: gave up on notice n1 (entry 1, escalated): not configured on server "
        f"{sent.tenure.id} (not in its config)"
    ]


def test_a_server_that_lost_its_lease_claims_nothing(
    queue: AlertQueue, store: str, sending: Callable[..., Sending], receiver: WebhookReceiver
) -> None:
    sent = sending(pager(receiver), start=False)
    sent.tenure.lease.release("taken away by the test")
    assert not sent.tenure.lease.renew() and sent.tenure.lost
    tell(queue, "n1")
    sent.dispatcher.turn()
    assert sent.dispatcher.report()["pending"] == 1, "expanded, not claimed"
    other = Outbox(store, holder="another-server")
    try:
        assert claimed(other, now=time.time() + 1) == [("n1", "webhook:pager")], "free for another server"
    finally:
        other.close()


def test_a_lapsed_approval_request_expires_with_its_notice_even_without_sinks(
    queue: AlertQueue, sending: Callable[..., Sending]
) -> None:
    [entry_id] = queue.accept([routed(target="web-1")]).queued
    holder = AlertQueue(queue.db.location, holder="server-x")
    try:
        assert holder.claim() is not None and holder.started(entry_id, "20330518-000000-aaaaaa")
        requirement = ApprovalPolicy().requirement("node-down", (), "critical", escalated_at=time.time() - 60)
        requirement = replace(requirement, expires_at=time.time() - 1)
        assert holder.escalate(entry_id, run_id=None, note="waits", requirement=requirement)
    finally:
        holder.close()
    sent = sending(start=False)
    sent.dispatcher.turn()
    entry = queue.entry(entry_id)
    assert entry.state is EntryState.EXPIRED
    assert sent.said == [f"entry {entry_id} (node-down on web-1): {entry.note}"]
    notice = Outbox(queue.db.location, holder="reader")
    try:
        expired = notice.notice(entry_id, NoticeKind.APPROVAL_EXPIRED)
    finally:
        notice.close()
    assert expired is not None and expired.payload["summary"].startswith(
        "node-down on web-1: approval expired"
    )


@pytest.mark.postgres
def test_the_dispatcher_waits_out_a_store_that_does_not_answer_then_delivers(
    own_pg_cluster: PgCluster, receiver: WebhookReceiver
) -> None:
    url = own_pg_cluster.create_database("notices")
    queue = AlertQueue(url)
    metrics = Metrics()
    said: list[str] = []
    metrics.health.say = said.append
    tenure = Tenure(locate(url), 30.0, metrics)
    tenure.start(wake=lambda: None)
    dispatcher = Dispatcher(locate(url), [pager(receiver)], metrics, lambda: tenure)
    try:
        receiver.down()
        dispatcher.start()
        tell(queue, "n1")
        receiver.wait(lambda r: any("webhook:pager: could not connect" in line for line in said), "a failure")
        own_pg_cluster.stop()
        receiver.up()
        receiver.wait(lambda r: any("notifications wait for the store" in line for line in said), "the wait")
        own_pg_cluster.start()
        receiver.wait(lambda r: r.keys() == {"n1": 1}, "the delivery once the store answers")
        receiver.wait(lambda r: dispatcher.report()["pending"] == 0, "the delivery recorded")
        assert "notifications: the store answers again" in said
        assert any(line.startswith("webhook:pager delivers again") for line in said)
    finally:
        dispatcher.stop(5)
        dispatcher.close()
        tenure.release("the test is over")
        tenure.close()
        queue.close()
