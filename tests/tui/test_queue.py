"""The Alerts screen (F6) over a queue built by the engine's own AlertQueue, as `cairn serve` builds it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

import tui.screens.queue as queue_screen
from engine.core.alert_queue import Action, AlertQueue, Entry, EntryState
from engine.core.alerts import Alert, AlertStatus, Route
from engine.core.approval_policy import ApprovalPolicy
from engine.core.identity import Identity, Via, local_identity
from engine.core.store.location import locate
from tests.tui.conftest import screen_text, until
from tui.app import CairnApp
from tui.config import CairnConfig
from tui.screens.queue import QueueScreen
from tui.screens.queue_dialogs import ApproveScreen, DeclineScreen
from tui.screens.run_detail import RunDetailScreen

pytestmark = pytest.mark.tui

WAITS = "remediation waits for a human: policy says ask on prod hosts"
ME = local_identity(Via.TUI)
"""Who the TUI decides as: the account of the test process's uid (root, in CI)."""
BOB = Identity("unix", "bob", "bob", Via.CLI, groups=("sre",), uid=1001, machine="web-1")
"""Another approver, deciding with `cairn approve` elsewhere."""
FOUND = """
id: node-down
title: A node stops reporting ready
severity: critical
summary: The kubelet's marker is missing.
detect:
  - id: look
    title: Look for the kubelet's marker
    run: echo missing
    expect: out == 'present'
    report: "marker {{ out }}"
"""


def routed(
    target: str = "n1", runbook: str = "node-down", *, fingerprint: str = "", summary: str = ""
) -> Route:
    """A firing alert routed to ``runbook`` on ``target`` (what engine.core.alerts.route gives the server)."""
    alert = Alert(
        status=AlertStatus.FIRING,
        labels={"node": target, "alertname": "KubeNodeNotReady"},
        annotations={"summary": summary} if summary else {},
        fingerprint=fingerprint or f"fp-{runbook}-{target}",
        starts_at="2026-03-01T09:00:00Z",
    )
    return Route(alert, runbook, 0, target)


def run_through(queue: AlertQueue, route: Route, run_id: str, state: EntryState, note: str) -> int:
    """Queue ``route``, claim it as a worker does, record its run and how it ended (or that it escalated)."""
    [entry_id] = queue.accept([route]).queued
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    queue.started(entry_id, run_id)
    queue.finish(entry_id, state, run_id=run_id, note=note)
    return entry_id


def escalate_under(
    queue: AlertQueue,
    route: Route,
    run_id: str,
    rule: Mapping[str, Any],
    *,
    escalated_at: float | None = None,
) -> int:
    """Queue ``route``, claim it, start ``run_id`` and escalate it under the approval ``rule``, as serve does."""
    [entry_id] = queue.accept([route]).queued
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    queue.started(entry_id, run_id)
    requirement = ApprovalPolicy.of({"rules": [dict(rule)]}).requirement(
        route.runbook_id,
        [],
        "critical",
        escalated_at=time.time() if escalated_at is None else escalated_at,
        requested_by=claimed.requested_by,
    )
    assert queue.escalate(entry_id, run_id=run_id, note=WAITS, requirement=requirement)
    return entry_id


def read_back(journal_path: Path, entry_id: int) -> Entry:
    """The entry as a fresh connection to the database sees it (what `cairn serve` would see)."""
    queue = AlertQueue(journal_path)
    try:
        return queue.entry(entry_id)
    finally:
        queue.close()


@pytest.fixture
def queue(journal_path: Path) -> Iterator[AlertQueue]:
    opened = AlertQueue(journal_path)
    yield opened
    opened.close()


class NotedApp(CairnApp):
    """The app, keeping the text of every notification (toast) it shows, through the public ``App.notify``."""

    def __init__(self, config: CairnConfig) -> None:
        super().__init__(config)
        self.notes: list[str] = []

    def notify(self, message: str, **options: Any) -> None:
        self.notes.append(message)  # thread-safe, as App.notify is: a list's append is atomic
        super().notify(message, **options)


@pytest.fixture
def app(runbook_dir: Callable[..., Path], journal_path: Path) -> CairnApp:
    return NotedApp(CairnConfig(runbook_dirs=(runbook_dir(FOUND),), journal_path=journal_path, user="oncall"))


def screen(app: CairnApp) -> QueueScreen:
    shown = app.screen
    assert isinstance(shown, QueueScreen), f"the {type(shown).__name__} is shown, not the queue"
    return shown


def dialog_text(app: CairnApp) -> str:
    """The modal dialog's text in one line: its rows between the borders, joined (long lines wrap)."""
    rows = [line.split("█")[1] for line in screen_text(app).splitlines() if line.count("█") >= 2]
    return " ".join(" ".join(rows).split())


def notified(app: CairnApp, phrase: str) -> bool:
    """A notification (a toast) said ``phrase``; toasts wrap, so their text is read whole."""
    assert isinstance(app, NotedApp)
    return any(phrase in note for note in app.notes)


async def open_queue(pilot: Pilot[None], count: int) -> QueueScreen:
    """F6, then wait until ``count`` entries are listed."""
    app = pilot.app
    assert isinstance(app, CairnApp)
    await pilot.press("f6")
    await until(
        pilot, lambda: isinstance(app.screen, QueueScreen) and len(app.screen.shown) == count, "the entries"
    )
    return screen(app)


async def test_what_waits_for_a_human_is_listed_first_with_why(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    run_through(queue, routed("n1"), "20260301-090000-aaaaaa", EntryState.DONE, "exit code 0")
    queue.accept([routed("n2")])
    assert queue.claim() is not None  # running: a worker took it
    waiting = run_through(
        queue,
        routed("n3", summary="Node n3 is not ready"),
        "20260301-091500-bbbbbb",
        EntryState.ESCALATED,
        WAITS,
    )
    run_through(queue, routed("n5"), "20260301-093000-cccccc", EntryState.FAILED, "runbook not loaded")
    queue.accept([routed("n4")])  # queued, not started
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        shown = await open_queue(pilot, 5)
        # Waiting for a human, then queued, then running (as `cairn queue`), then the ended ones newest first.
        assert [e.target for e in shown.shown] == ["n3", "n4", "n2", "n5", "n1"]
        assert shown.highlighted is not None and shown.highlighted.id == waiting
        text = screen_text(app)
        assert "1 waiting for a human · 1 queued · 1 running · 2 ended" in text
        lines = text.splitlines()
        rows = [
            next(i for i, line in enumerate(lines) if f" {node} " in line)
            for node in ("n3", "n4", "n2", "n5")
        ]
        assert rows == sorted(rows), "drawn top to bottom in that order"
        assert lines[rows[0]].lstrip().startswith("escalated")
        # The pane under the table: the note in full, the run, the alert's labels and summary.
        assert WAITS in text
        assert "run 20260301-091500-bbbbbb (Enter opens it)" in text
        assert "alertname: KubeNodeNotReady" in text and "summary: Node n3 is not ready" in text


async def test_approving_asks_first_then_queues_the_entry_again_as_this_account(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    waiting = run_through(queue, routed("n2"), "20260301-091500-bbbbbb", EntryState.ESCALATED, WAITS)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        for no in ("escape", "enter"):  # Enter is on Cancel: it must never approve by accident
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
            text = dialog_text(app)
            assert "Remediate node-down on n2?" in text and "checks again first" in text
            assert f"you are {ME.short} (uid {ME.uid}); needs 1 approver: any local account" in text
            assert "0 of 1 so far" in text
            await pilot.press(no)
            await until(pilot, lambda: isinstance(app.screen, QueueScreen), "the queue again")
            await app.workers.wait_for_complete()
            assert read_back(journal_path, waiting).state is EntryState.ESCALATED, f"{no} approved it"

        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
        await pilot.press("y")
        await until(
            pilot, lambda: read_back(journal_path, waiting).state is EntryState.QUEUED, "the approval"
        )
        entry = read_back(journal_path, waiting)
        assert entry.approved_by == ME.label, "the uid's account, not the config's user"
        assert entry.note == f"approved by {ME.short}: the next run checks again, then remediates"
        await until(pilot, lambda: screen(app).shown[0].state is EntryState.QUEUED, "the queue re-read")
        assert notified(app, "approved: node-down on n2 (entry 1) is queued again")
        assert f"approved by {ME.label}" in screen_text(app)


async def test_declining_ends_the_entry_with_the_reason(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    waiting = run_through(queue, routed("n2"), "20260301-091500-bbbbbb", EntryState.ESCALATED, WAITS)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DeclineScreen), "the decline dialog")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, QueueScreen), "the queue again")
        await app.workers.wait_for_complete()
        assert read_back(journal_path, waiting).state is EntryState.ESCALATED, "escape declined it"

        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DeclineScreen), "the decline dialog")
        await pilot.press(*"n2 is being drained")
        await pilot.press("enter")
        await until(
            pilot, lambda: read_back(journal_path, waiting).state is EntryState.DECLINED, "the decline"
        )
        assert read_back(journal_path, waiting).note == f"declined by {ME.short}: n2 is being drained"
        await until(
            pilot, lambda: f"declined by {ME.short}: n2 is being drained" in screen_text(app), "the note"
        )


async def test_keys_on_an_entry_nobody_waits_on_say_why_and_change_nothing(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    done = run_through(queue, routed("n1"), "20260301-090000-aaaaaa", EntryState.DONE, "exit code 0")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "not waiting for a human: nothing to approve"), "why not")
        await pilot.press("n")
        await until(pilot, lambda: notified(app, "not waiting for a human: nothing to decline"), "why not")
        assert isinstance(app.screen, QueueScreen), "no dialog for an entry nobody waits on"
        assert notified(app, "entry 1 is done") and notified(app, "(exit code 0)")
        await app.workers.wait_for_complete()
        entry = read_back(journal_path, done)
        assert (entry.state, entry.approved_by, entry.note) == (EntryState.DONE, None, "exit code 0")


async def test_an_escalation_without_a_run_says_there_is_nothing_to_approve(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    [entry_id] = queue.accept([routed("n8", runbook="gone")]).queued
    assert queue.claim() is not None
    # The queue's API allows it (an earlier `cairn serve` escalated what it could not run at all).
    queue.finish(entry_id, EntryState.ESCALATED, note="runbook 'gone' is not loaded")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        await pilot.press("y")
        await until(
            pilot, lambda: notified(app, "never got a run, so there is nothing to approve"), "why not"
        )
        await pilot.press("enter")
        await until(pilot, lambda: notified(app, "no run yet: runbook 'gone' is not loaded"), "why no run")
        assert isinstance(app.screen, QueueScreen)
        await app.workers.wait_for_complete()
        assert read_back(journal_path, entry_id).state is EntryState.ESCALATED


async def test_only_the_last_ended_entries_are_listed(app: CairnApp, queue: AlertQueue) -> None:
    for index in range(queue_screen.ENDED_SHOWN + 5):
        run_through(queue, routed(f"h{index}"), f"run-{index:03d}", EntryState.DONE, "exit code 0")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        shown = await open_queue(pilot, queue_screen.ENDED_SHOWN)
        assert shown.shown[0].target == f"h{queue_screen.ENDED_SHOWN + 4}", "newest first"
        assert f"{queue_screen.ENDED_SHOWN + 5} ended (last {queue_screen.ENDED_SHOWN} shown)" in screen_text(
            app
        )


async def test_an_entry_decided_elsewhere_meanwhile_is_not_approved(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    waiting = run_through(queue, routed("n2"), "20260301-091500-bbbbbb", EntryState.ESCALATED, WAITS)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
        # `cairn decline` in another terminal
        queue.decide("20260301-091500-bbbbbb", BOB, Action.DECLINE, reason="not tonight")
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "is not waiting for a human"), "the engine's refusal")
        assert notified(app, "refused: node-down on n2")
        entry = read_back(journal_path, waiting)
        assert (entry.state, entry.approved_by) == (EntryState.DECLINED, None)
        await until(pilot, lambda: screen(app).shown[0].state is EntryState.DECLINED, "the queue re-read")


async def test_a_new_alert_appears_on_refresh(
    app: CairnApp, queue: AlertQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_screen, "REFRESH_SECONDS", 3600.0)  # only F5 reads the queue again
    queue.accept([routed("n1")])
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        queue.accept([routed("n7", fingerprint="new")])  # `cairn serve` takes a webhook
        await pilot.press("f5")
        await until(pilot, lambda: len(screen(app).shown) == 2, "the new entry")
        await until(pilot, lambda: " n7 " in screen_text(app), "the new entry drawn")


async def test_the_queue_reads_itself_again_while_shown(
    app: CairnApp, queue: AlertQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_screen, "REFRESH_SECONDS", 0.05)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 0)
        run_through(queue, routed("n9"), "20260301-100000-cccccc", EntryState.ESCALATED, WAITS)
        await until(pilot, lambda: len(screen(app).shown) == 1, "the escalation, with no key pressed")
        assert "1 waiting for a human" in screen_text(app)


async def test_an_empty_queue_says_how_alerts_get_here(app: CairnApp) -> None:
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await open_queue(pilot, 0)
        await until(pilot, lambda: "No alerts in the queue." in screen_text(app), "the empty state")
        text = screen_text(app)
        assert "cairn serve" in text and "the queue is empty" in text
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "no entry to approve"), "why not")


async def test_enter_opens_the_entrys_run(app: CairnApp, queue: AlertQueue, journal_path: Path) -> None:
    from engine.core.approval import NobodyToAsk
    from engine.core.journal import Journal
    from engine.core.launch import prepare_run
    from engine.core.loader import check_text
    from engine.core.model import LOCALHOST, Phase
    from engine.core.spec import RunSpec, Trigger, TriggerKind

    runbook = check_text(FOUND.lstrip()).runbook
    assert runbook is not None
    journal = Journal(journal_path)
    try:  # detect and diagnose, as `cairn serve` runs for an alert
        spec = RunSpec(
            runbook=runbook,
            hosts=(LOCALHOST,),
            inputs={},
            trigger=Trigger(kind=TriggerKind.ALERT),
            alert={"status": "firing", "labels": {"alertname": "Test"}},
            last_phase=Phase.DIAGNOSE,
            unattended=True,
            started_by="alertmanager",
        )
        runner = prepare_run(spec, journal=journal, approver=NobodyToAsk())
        runner.run()
    finally:
        journal.close()
    run_id = runner.bus.run_id
    run_through(queue, routed("localhost"), run_id, EntryState.ESCALATED, WAITS)
    queue.accept([routed("n3")])  # queued: no run yet
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        shown = await open_queue(pilot, 2)
        await pilot.press("down")
        await until(pilot, lambda: shown.highlighted is not None and shown.highlighted.target == "n3", "n3")
        await pilot.press("enter")
        await until(pilot, lambda: notified(app, "has no run yet"), "why no run opens")
        assert isinstance(app.screen, QueueScreen)

        await pilot.press("up", "enter")
        await until(
            pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run, "the run's details"
        )
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.run_id == run_id
        await until(pilot, lambda: "marker missing" in screen_text(app), "what the run found")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, QueueScreen), "the queue again")


def test_an_entry_decided_between_two_reads_is_listed_once_as_it_is_now(queue: AlertQueue) -> None:
    """The screen reads the waiting entries, then the ended ones; a decline committed in between
    returned the entry from both reads, and the table refused the second row (a crash seen in CI)."""
    waiting = run_through(queue, routed("n2"), "20260301-091500-bbbbbb", EntryState.ESCALATED, WAITS)
    before = queue.entry(waiting)
    assert before.run_id is not None
    queue.decide(before.run_id, BOB, Action.DECLINE, reason="n2 is being drained")
    after = queue.entry(waiting)
    shown = queue_screen.listed([before, after])
    assert [(e.id, e.state) for e in shown] == [(waiting, EntryState.DECLINED)]


async def test_a_running_entry_says_which_server_holds_it(app: CairnApp, journal_path: Path) -> None:
    server = AlertQueue(journal_path, holder="web-2:4242:abcdef")  # as a `cairn serve` claims
    try:
        server.accept([routed("n7")])
        assert server.claim() is not None
        async with app.run_test(size=(120, 40)) as pilot:
            shown = await open_queue(pilot, 1)
            assert shown.highlighted is not None and shown.highlighted.holder == "web-2:4242:abcdef"
            assert "held by server web-2:4242:abcdef (it runs it)" in screen_text(app)
    finally:
        server.close()


@pytest.mark.postgres
async def test_the_queue_of_a_postgresql_store_is_listed_and_approved(
    runbook_dir: Callable[..., Path], postgres_url: str
) -> None:
    server = AlertQueue(postgres_url, holder="web-1:10:aaaaaa")
    try:
        waiting = run_through(server, routed("n3"), "20260301-091500-bbbbbb", EntryState.ESCALATED, WAITS)
        server.accept([routed("n4")])
        assert server.claim() is not None
        config = CairnConfig(runbook_dirs=(runbook_dir(FOUND),), journal=locate(postgres_url), user="oncall")
        app = NotedApp(config)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            shown = await open_queue(pilot, 2)
            assert [e.target for e in shown.shown] == ["n3", "n4"]
            assert "1 waiting for a human · 0 queued · 1 running" in screen_text(app)
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the approval dialog")
            await pilot.press("y")
            await until(pilot, lambda: notified(app, "is queued again"), "the approval")
        entry = server.entry(waiting)
        assert (entry.state, entry.approved_by, entry.holder) == (
            EntryState.QUEUED,
            ME.with_role("postgres").label,
            None,
        )
    finally:
        server.close()


# ------------------------------------------------------------------ the approval policy in the TUI


async def test_a_quorum_of_two_counts_this_account_once_and_says_how_far_it_is(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    rule = {"name": "pair", "approvers": {"users": [ME.name, "bob"]}, "quorum": 2}
    waiting = escalate_under(queue, routed("n2"), "20260301-091500-bbbbbb", rule)
    needs = f"needs 2 approvers from users {ME.name}, bob"
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        text = screen_text(app)
        assert f"approval 0 of 2 approvals · {needs}" in text and "expires in 23h59m" in text

        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
        assert f"you are {ME.short} (uid {ME.uid}); {needs}; 0 of 2 so far" in dialog_text(app)
        await pilot.press("y")
        await until(
            pilot, lambda: notified(app, f"approval counted: 1 of 2 approvals ({ME.short})"), "1 of 2"
        )
        assert notified(app, f"node-down on n2 (entry {waiting}): approval counted")
        await until(pilot, lambda: f"approval 1 of 2 approvals ({ME.short})" in screen_text(app), "progress")
        assert f"{ME.short} approve: counted" in screen_text(app), "the attempt, in the detail"
        assert read_back(journal_path, waiting).state is EntryState.ESCALATED

        await pilot.press("y")  # again: the dialog says the policy will refuse it, and it does
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
        text = dialog_text(app)
        assert f"1 of 2 so far ({ME.short})" in text
        assert "the approval policy will refuse it:" in text and f"{ME.short} already approved" in text
        await pilot.press("y")
        await until(
            pilot, lambda: notified(app, f"refused: node-down on n2 (entry {waiting})"), "the refusal"
        )
        assert notified(app, f"{needs}; {ME.short} already approved; 1 of 2 so far ({ME.short})")

        decided = queue.decide("20260301-091500-bbbbbb", BOB, Action.APPROVE)  # bob, in his terminal
        assert decided.entry.state is EntryState.QUEUED
        await pilot.press("f5")
        await until(pilot, lambda: screen(app).shown[0].state is EntryState.QUEUED, "the queue re-read")
        assert f"approval 2 of 2 approvals ({ME.short}, bob)" in screen_text(app)
    assert [(a.who.name, a.outcome.value) for a in queue.attempts(waiting)] == [
        (ME.name, "counted"),
        (ME.name, "refused"),
        ("bob", "approved"),
    ]


async def test_an_account_the_policy_does_not_name_is_refused_with_the_reason(
    app: CairnApp, queue: AlertQueue, journal_path: Path
) -> None:
    rule = {"name": "sre", "approvers": {"groups": ["cairn-t-nobody-here"]}, "quorum": 1}
    waiting = escalate_under(queue, routed("n2"), "20260301-091500-bbbbbb", rule)
    refusal = f"{ME.short} may not approve this: needs 1 approver from group cairn-t-nobody-here"
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await open_queue(pilot, 1)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the confirmation")
        assert f"the approval policy will refuse it: {refusal}" in dialog_text(app)
        await pilot.press("y")
        await until(pilot, lambda: notified(app, refusal), "the refusal")
        attempt_shown = f"{ME.short} approve: refused — {ME.short} may not approve this"
        await until(pilot, lambda: attempt_shown in screen_text(app), "the attempt, in the detail")
    entry = read_back(journal_path, waiting)
    assert (entry.state, entry.approved_by) == (EntryState.ESCALATED, None)
    [attempt] = queue.attempts(waiting)
    assert (attempt.who.label, attempt.outcome.value) == (ME.label, "refused")


async def test_an_expired_request_is_listed_among_the_ended_with_who_asked(
    app: CairnApp, queue: AlertQueue
) -> None:
    asked = queue.request("node-down", "n4", BOB, "disk filling")
    claimed = queue.claim()
    assert claimed is not None and claimed.id == asked.id
    queue.started(asked.id, "20260301-080000-aaaaaa")
    requirement = ApprovalPolicy.of({"expires": "1h"}).requirement(
        "node-down", [], "critical", escalated_at=time.time() - 7200, requested_by=claimed.requested_by
    )
    assert queue.escalate(asked.id, run_id="20260301-080000-aaaaaa", note=WAITS, requirement=requirement)
    assert [e.id for e in queue.expire()] == [asked.id]
    queue.accept([routed("n1")])  # queued: listed first, the expired entry among the ended below it
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        shown = await open_queue(pilot, 2)
        assert [(e.target, e.state) for e in shown.shown] == [
            ("n1", EntryState.QUEUED),
            ("n4", EntryState.EXPIRED),
        ]
        assert "1 ended" in screen_text(app)
        await pilot.press("down")
        await until(
            pilot, lambda: "approval expired (0 of 1 approval)" in screen_text(app), "the expired entry"
        )
        text = screen_text(app)
        assert "asked by bob (unix uid 1001 on web-1, via cli) (they cannot approve it)" in text
        await pilot.press("y")
        await until(pilot, lambda: notified(app, "is expired, not waiting for a human"), "why not")
