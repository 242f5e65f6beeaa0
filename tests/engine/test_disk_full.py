"""A journal on a disk that fills and empties: a small tmpfs, filled with a file and given back.

Every write path of the journal and the alert queue says a full disk as one typed error
(:class:`~engine.core.errors.JournalUnwritable`), leaves no transaction half done and works
again once space returns; reading the journal writes nothing. The front ends' side of this
(``cairn run``, ``cairn history``, ``cairn serve``) is tests/cli/test_cli_disk_full.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.alert_queue import Action, AlertQueue, EntryState
from engine.core.errors import JournalUnwritable
from engine.core.events import EventBus, RunStarted, StepFinished, StepOutput, StepStarted
from engine.core.journal import Journal
from engine.core.journal_read import JournalReader
from engine.core.model import Phase, RunStatus, StepResult, StepStatus
from engine.core.queue_read import QueueReader
from tests.disks import SmallDisk, files_of
from tests.engine.test_alert_queue import person, routed

# --------------------------------------------------------------------------- the alert queue

WAITING_RUN = "20260101-000000-aaaaaa"


def _entry_running(queue: AlertQueue) -> int:
    [entry_id] = queue.accept([routed(target="n9", fingerprint="f9")]).queued
    claimed = queue.claim()
    assert claimed is not None and claimed.id == entry_id
    queue.started(entry_id, WAITING_RUN)
    return entry_id


def _escalated(queue: AlertQueue) -> int:
    entry_id = _entry_running(queue)
    queue.finish(entry_id, EntryState.ESCALATED, note="remediation waits for a human: policy")
    return entry_id


def _ledger_row(queue: AlertQueue) -> int:
    guard = queue.begin_remediation("n1", "rb", "r1", automatic=True, breaker=5, budget=5)
    assert guard.ledger_id is not None
    return guard.ledger_id


QUEUE_WRITES: dict[str, tuple[Callable[[AlertQueue], object], Callable[[AlertQueue, object], object]]] = {
    "accept": (lambda q: None, lambda q, _: q.accept([routed(target="n1", fingerprint="f1")])),
    "claim": (lambda q: q.accept([routed(target="n2", fingerprint="f2")]), lambda q, _: q.claim()),
    "started": (_entry_running, lambda q, e: q.started(int(str(e)), "20260101-000000-bbbbbb")),
    "finish": (_entry_running, lambda q, e: q.finish(int(str(e)), EntryState.DONE, note="healthy")),
    "requeue": (_entry_running, lambda q, e: q.requeue(int(str(e)), "checkpointed")),
    "take_over": (_entry_running, lambda q, _: q.take_over()),
    "hand_back": (_entry_running, lambda q, _: q.hand_back("stopping")),
    "approve": (_escalated, lambda q, _: q.decide(WAITING_RUN, person("alice"), Action.APPROVE)),
    "decline": (_escalated, lambda q, _: q.decide(WAITING_RUN, person("alice"), Action.DECLINE)),
    "begin_remediation": (lambda q: None, lambda q, _: _ledger_row(q)),
    "end_remediation": (_ledger_row, lambda q, ledger: q.end_remediation(int(str(ledger)))),
    "probe": (lambda q: None, lambda q, _: q.probe()),
}


@pytest.mark.parametrize("write", list(QUEUE_WRITES))
def test_every_queue_write_on_a_full_disk_is_one_typed_error_and_works_once_space_returns(
    disk: SmallDisk, write: str
) -> None:
    prepare, act = QUEUE_WRITES[write]
    queue = AlertQueue(disk.root / "journal.db")
    try:
        made = prepare(queue)
        disk.fill()
        with pytest.raises(JournalUnwritable) as full:
            act(queue, made)
        assert str(full.value).startswith("the journal's disk is full"), str(full.value)
        assert str(disk.root / "journal.db") in str(full.value)
        assert not queue.in_transaction, "nothing is left half done"
        disk.free()
        act(queue, made)  # the same connection writes again once space returns
    finally:
        queue.close()


def test_a_queue_on_a_full_disk_still_opens_reads_and_says_so_when_it_writes(disk: SmallDisk) -> None:
    path = disk.root / "journal.db"
    first = AlertQueue(path)
    first.accept([routed(target="n1", fingerprint="f1")])
    disk.fill()
    queue = AlertQueue(path)  # a second connection, as `cairn serve` has (its intake's own)
    try:
        assert [e.target for e in queue.entries()] == ["n1"]
        with pytest.raises(JournalUnwritable):
            queue.accept([routed(target="n2", fingerprint="f2")])
    finally:
        queue.close()
        first.close()


def test_a_read_only_file_system_is_said_as_such_and_still_reads(disk: SmallDisk) -> None:
    queue = AlertQueue(disk.root / "journal.db")
    queue.accept([routed(target="n1", fingerprint="f1")])
    queue.close()
    view = disk.read_only_view()

    with pytest.raises(JournalUnwritable) as refused:
        AlertQueue(view / "journal.db").accept([routed(target="n2", fingerprint="f2")])
    assert str(refused.value).startswith("the journal's file system is read-only"), str(refused.value)
    listed = QueueReader(view / "journal.db")
    try:
        assert [e.target for e in listed.entries()] == ["n1"]
    finally:
        listed.close()


# --------------------------------------------------------------------------- the run journal

RUNBOOK_TEXT = "id: disk-full\ntitle: Disk full\nseverity: warning\nsummary: s\ndetect: []\n"


def run_started(journal: Journal, run_id: str) -> EventBus:
    bus = EventBus(run_id)
    bus.subscribe(journal.record)
    bus.emit(
        RunStarted(
            runbook_id="disk-full",
            runbook_path="/srv/runbooks/disk-full.yaml",
            runbook_sha256=hashlib.sha256(RUNBOOK_TEXT.encode()).hexdigest(),
            runbook_text=RUNBOOK_TEXT,
            hosts=("web1",),
            inputs={},
            started_by="alice",
        )
    )
    return bus


def step(bus: EventBus, step_id: str, *, output: str = "") -> None:
    bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id=step_id, title=step_id, command="true"))
    if output:
        bus.emit(StepOutput(host="web1", phase=Phase.DETECT, step_id=step_id, stream="stdout", text=output))
    bus.emit(
        StepFinished(
            result=StepResult(
                host="web1",
                phase=Phase.DETECT,
                step_id=step_id,
                status=StepStatus.OK,
                message="",
                stdout=output,
            )
        )
    )


def test_a_run_journal_that_fills_refuses_the_next_step_and_says_what_it_holds(disk: SmallDisk) -> None:
    journal = Journal(disk.root / "journal.db")
    bus = run_started(journal, "20260101-000000-000001")
    step(bus, "first", output="one\n")
    disk.fill()
    with pytest.raises(JournalUnwritable) as full:
        step(bus, "second", output="two\n" * 2000)  # its output cannot be kept: the step is not recorded
    message = str(full.value)
    assert message.startswith("the journal's disk is full"), message
    assert "run 20260101-000000-000001" in message
    assert "detect/first on web1 (1 step recorded)" in message, message
    with pytest.raises(JournalUnwritable):  # the run stays stopped: nothing after the failure is written
        bus.emit(StepStarted(host="web1", phase=Phase.DETECT, step_id="third", title="", command="true"))
    journal.close()
    disk.free()

    reader = JournalReader(disk.root / "journal.db")
    try:
        run = reader.get_run("last")
    finally:
        reader.close()
    assert run.status is RunStatus.INTERRUPTED, "its process let go of it: read as interrupted"
    assert [(s.step_id, s.status) for s in run.steps] == [("first", "ok")]


def test_a_journal_that_cannot_even_start_a_run_says_nothing_was_recorded(disk: SmallDisk) -> None:
    journal = Journal(disk.root / "journal.db")
    run_started(journal, "20260101-000000-000001")
    disk.fill()
    try:
        with pytest.raises(JournalUnwritable) as full:
            run_started(journal, "20260101-000000-000002")
    finally:
        journal.close()
    assert "run 20260101-000000-000002 did not start: nothing of it was recorded and nothing ran" in str(
        full.value
    )


def test_reading_a_journal_on_a_full_disk_changes_no_file(disk: SmallDisk) -> None:
    path = disk.root / "journal.db"
    writer = Journal(path)
    step(run_started(writer, "20260101-000000-000001"), "first")
    queue = AlertQueue(path)
    queue.accept([routed(target="n1", fingerprint="f1")])
    writer.close()  # its run never finished: a dead run, shown as interrupted, still `running` in the file
    disk.fill()
    before = files_of(disk.root)

    reader = JournalReader(path)
    try:
        [listed] = reader.list_runs()
        shown = reader.get_run(listed.id)
    finally:
        reader.close()
    queued = QueueReader(path)
    try:
        [entry] = queued.entries()
    finally:
        queued.close()

    assert (listed.status, shown.status, shown.exit_code) == (RunStatus.INTERRUPTED,) * 2 + (130,)
    assert entry.target == "n1"
    assert files_of(disk.root) == before, "reading wrote nothing: no file changed, none was created"
    queue.close()


def test_reading_a_journal_nobody_has_open_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    writer = Journal(path)
    step(run_started(writer, "20260101-000000-000001"), "first")
    writer.close()
    before = files_of(tmp_path)
    assert not (tmp_path / "journal.db-wal").exists(), "the last writer to close folded its WAL in"

    reader = JournalReader(path)
    try:
        assert [r.id for r in reader.list_runs()] == ["20260101-000000-000001"]
    finally:
        reader.close()

    assert files_of(tmp_path) == before, "no -wal or -shm left behind by a reader"


def test_reading_a_journal_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "journal.db"
    reader = JournalReader(path)
    try:
        assert reader.list_runs() == []
    finally:
        reader.close()
    queue = QueueReader(path)
    try:
        assert queue.entries() == []
    finally:
        queue.close()
    assert not path.parent.exists()
