"""Three front ends race for one escalated entry: a Slack press, `cairn approve`, and the TUI.

A real `cairn serve` (its store a PostgreSQL database on loopback) escalates an entry whose policy
needs one approval and lets any of three people give it: ``@bob`` in Slack (a signed
`POST /slack/actions`, the stand-in of Slack on loopback), the Unix account ``cairn-t-alice``
running `cairn approve` as herself (tests/people.py), and the account this test runs as, in the
TUI's Alerts screen. The three are released together. Whatever the order the store serialises
them in, exactly one decides the entry; the two others are told, each in its own front end, that
it no longer waits for a human; all three attempts are journaled with who made them.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import EntryState
from engine.core.approval_policy import Outcome
from engine.core.identity import Via, local_identity
from engine.core.queue_read import QueueReader
from engine.core.store.database import Database
from engine.core.store.location import locate
from tests.cli.conftest import Served, Store, wait_for
from tests.cli.test_cli_serve_remediation import marker
from tests.cli.test_cli_serve_slack import attempts, config, escalated, post_action
from tests.conftest import CairnRunner, cairn_command
from tests.people import Person
from tests.slack_standin import SIGNING_SECRET, SlackStandIn, SlackUser, signed
from tests.tui.conftest import until
from tui.app import CairnApp
from tui.config import CairnConfig
from tui.screens.queue import QueueScreen
from tui.screens.queue_dialogs import ApproveScreen

pytestmark = [pytest.mark.cli, pytest.mark.postgres, pytest.mark.tui]

BOB = SlackUser("U0CAIRNBO2", "bob")
ME = local_identity(Via.TUI)


class NotingApp(CairnApp):
    """The TUI, keeping the text of every notification it shows (through the public ``App.notify``)."""

    def __init__(self, config: CairnConfig) -> None:
        super().__init__(config)
        self.notes: list[str] = []

    def notify(self, message: str, **options: Any) -> None:
        self.notes.append(message)
        super().notify(message, **options)


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn().start()
    yield standin
    standin.stop()


async def test_a_slack_press_cairn_approve_and_the_tui_race_and_exactly_one_decides(
    serve: Callable[..., Served],
    slack: SlackStandIn,
    people: dict[str, Person],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    alice = people["alice"]
    approvers = f"{{users: [{alice.account}, {ME.name}], slack_users: [{BOB.id}]}}"
    served = await asyncio.to_thread(
        serve,
        "--config",
        str(config(tmp_path, slack, approvers=approvers)),
        runbook=marker(tmp_path),
        journal=postgres_url,
    )
    entry, message = await asyncio.to_thread(escalated, served, slack)
    assert entry.run_id is not None
    run_id = entry.run_id

    press = signed(slack.click(message, "cairn_approve", BOB), SIGNING_SECRET)
    start = threading.Barrier(3)
    said: dict[str, Any] = {}

    def in_slack() -> None:
        start.wait()
        said["slack"] = post_action(served, *press)

    def in_the_cli() -> None:
        start.wait()
        said["cli"] = alice.run([*cairn_command(), "approve", run_id, "--journal", postgres_url])

    app = NotingApp(CairnConfig(runbook_dirs=(tmp_path / "rb",), journal=locate(postgres_url)))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("f6")
        await until(
            pilot,
            lambda: isinstance(app.screen, QueueScreen) and [e.id for e in app.screen.shown] == [entry.id],
            "the escalated entry in the Alerts screen",
        )
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, ApproveScreen), "the TUI's confirmation")
        racers = [threading.Thread(target=racer) for racer in (in_slack, in_the_cli)]
        for racer in racers:
            racer.start()
        await asyncio.to_thread(start.wait)  # all three go at once
        await pilot.press("y")
        await until(pilot, lambda: app.notes, "the TUI told what its approval came to", timeout=60)
        for racer in racers:
            await asyncio.to_thread(racer.join, 60)
    tui_said = app.notes[0]

    journaled = await asyncio.to_thread(
        wait_for,
        lambda: (found := attempts(postgres_url, entry.id)) and len(found) == 3 and found,
        "every attempt journaled (Slack's press is decided after its answer)",
    )
    [winner] = [a for a in journaled if a.outcome is Outcome.APPROVED]
    losers = [a for a in journaled if a is not winner]
    assert {a.who.kind + ":" + a.who.id for a in journaled} == {
        f"slack:{BOB.id}",
        f"unix:{alice.account}",
        f"unix:{ME.name}",
    }
    assert {a.who.via for a in journaled} == {Via.SLACK, Via.CLI, Via.TUI}
    not_waiting = f"is not waiting for a human: its queue entry {entry.id} is "
    for loser in losers:
        assert loser.outcome is Outcome.REFUSED
        assert not_waiting in _message(postgres_url, loser.id)

    cli: subprocess.CompletedProcess[str] = said["cli"]
    assert said["slack"] == (200, ""), "Slack is answered at once, whatever the decision comes to"
    if winner.who.via is Via.CLI:
        assert cli.returncode == 0, cli.stderr
        assert "approved (1 of 1 approval (cairn-t-alice))" in cli.stdout
    else:
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert f"cairn: refused: stale-marker on web-1 (queue entry {entry.id}): run " in cli.stderr
        assert not_waiting in cli.stderr
    if winner.who.via is Via.TUI:
        assert tui_said.startswith(f"approved: stale-marker on web-1 (entry {entry.id}) is queued again")
    else:
        assert tui_said.startswith(f"refused: stale-marker on web-1 (entry {entry.id}): run ")
        assert not_waiting in tui_said
    if winner.who.via is Via.SLACK:
        assert slack.calls_of("chat.postEphemeral") == []
    else:
        [told] = await asyncio.to_thread(
            slack.wait_for, "bob told", lambda: slack.calls_of("chat.postEphemeral")
        )
        assert told.args["user"] == BOB.id
        assert told.args["text"].startswith("Cairn did not take your decision: run ")
        assert not_waiting in told.args["text"]

    done = await asyncio.to_thread(
        wait_for,
        lambda: (e := _entry(postgres_url, entry.id)).state is EntryState.DONE and e,
        "the one approval's run",
    )
    assert done.note == f"remediated approved by {winner.who.short}; verify is clean"


def _message(store: str, attempt_id: int) -> str:
    """What an attempt was told, as the journal keeps it."""
    db = Database(locate(store), write=False, what="the journal")
    try:
        return str(db.read("SELECT message FROM approval_attempts WHERE id = ?", (attempt_id,))[0][0])
    finally:
        db.close()


def _entry(store: Store, entry_id: int) -> Any:
    reader = QueueReader(locate(store))
    try:
        return reader.entry(entry_id)
    finally:
        reader.close()


def test_a_decider_who_arrives_after_the_approved_run_started_is_told_it_no_longer_waits(
    serve: Callable[..., Served], slack: SlackStandIn, cairn: CairnRunner, tmp_path: Path
) -> None:
    """The slowest racer: the entry was approved and its next run (a new run id) already ran."""
    approvers = f"{{users: [{ME.name}], slack_users: [{BOB.id}]}}"
    served = serve("--config", str(config(tmp_path, slack, approvers=approvers)), runbook=marker(tmp_path))
    entry, message = escalated(served, slack)
    assert entry.run_id is not None
    stale = slack.click(message, "cairn_approve", BOB)  # pressed later, on a client not redrawn yet
    assert post_action(served, *signed(slack.click(message, "cairn_approve", BOB), SIGNING_SECRET)) == (
        200,
        "",
    )
    done = wait_for(
        lambda: (e := _entry(served.journal, entry.id)).state is EntryState.DONE and e, "the approved run"
    )
    assert done.run_id != entry.run_id, "the approval's run checked the host again, under its own id"

    late = cairn("approve", entry.run_id, "--journal", str(served.journal))
    assert late.returncode == 1, late.stderr
    assert f"is not waiting for a human: its queue entry {entry.id} is done" in late.stderr
    assert post_action(served, *signed(stale, SIGNING_SECRET)) == (200, "")
    [told] = slack.wait_for("bob told", lambda: slack.calls_of("chat.postEphemeral"))
    assert "is not waiting for a human" in told.args["text"]
    journaled = wait_for(
        lambda: len(found := attempts(served.journal, entry.id)) == 3 and found, "3 attempts"
    )
    assert [(a.who.via, a.outcome) for a in journaled] == [
        (Via.SLACK, Outcome.APPROVED),
        (Via.CLI, Outcome.REFUSED),
        (Via.SLACK, Outcome.REFUSED),
    ]
