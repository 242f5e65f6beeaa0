"""The journal's disk fills: `cairn run`, `cairn history` and `cairn serve` say so and recover.

The journal lives on a small tmpfs the test mounts (tests/engine/test_disk_full.py's
``SmallDisk``), fills with a file and gives back by deleting it. `cairn run` stops at the
next step and says in one line what the journal holds; reading the journal (`history`,
`show-run`, `queue`) works on the full disk and changes no file; `cairn serve` answers 503
(Alertmanager retries), says it is unhealthy, keeps its workers and recovers by itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core.alert_queue import EntryState
from tests.cli.conftest import Served, alert, entries, runs, wait_for, webhook
from tests.conftest import CairnRunner, RunbookDir
from tests.disks import SmallDisk, files_of

pytestmark = pytest.mark.cli


@pytest.fixture
def journal_path(disk: SmallDisk) -> Path:
    """The journal on the small disk (the serve fixture's --journal, and --journal below)."""
    return disk.root / "cairn" / "journal.db"


FILLS = """
id: fills-the-disk
title: A step fills the journal's disk
severity: info
summary: The second step fills the file system the journal is on; the third must not run.
detect:
  - id: before
    title: Before
    run: echo before
  - id: fill
    title: Fill the disk
    run: "head -c 64M /dev/zero > {disk}/.filler 2>/dev/null; echo filled"
  - id: after
    title: After
    run: "touch {marks}/after-ran"
"""

QUIET = """
id: quiet
title: Nothing to see
severity: info
summary: One step that finds nothing.
detect:
  - id: look
    title: Look
    run: echo fine
"""


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return lines[0]


def test_a_run_whose_journal_fills_stops_says_so_in_one_line_and_the_history_still_reads(
    cairn: CairnRunner, runbook_dir: RunbookDir, disk: SmallDisk, journal_path: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = runbook_dir(FILLS.format(disk=disk.root, marks=marks), QUIET)
    journal = ["--journal", str(journal_path), "--runbooks", str(folder)]
    assert cairn("run", "quiet", *journal).returncode == 0  # a finished run already in the journal

    stopped = cairn("run", "fills-the-disk", *journal)

    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    said = one_line_error(stopped.stderr)
    assert said.startswith("cairn: error: the journal's disk is full"), said
    history = json.loads(cairn("history", "--json", "--journal", str(journal_path)).stdout)
    run_id = history[0]["id"]
    assert f"run {run_id}" in said
    assert "detect/before on localhost (1 step recorded)" in said, said
    assert "commands already started on hosts may have finished" in said, said
    assert not (marks / "after-ran").exists(), "no step starts once the journal cannot be written"

    before = files_of(disk.root)
    assert "cairn/journal.db" in before
    listed = cairn("history", "--journal", str(journal_path))
    shown = cairn("show-run", run_id, "--journal", str(journal_path))
    queued = cairn("queue", "--journal", str(journal_path))
    for done in (listed, shown, queued):
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
    assert [r["status"] for r in history] == ["interrupted", "finished"]
    assert f"{run_id}" in listed.stdout and "interrupted" in listed.stdout
    assert "before" in shown.stdout and "interrupted" in shown.stdout
    assert files_of(disk.root) == before, "reading the journal changed no file (db, -wal) and made none"

    disk.free()
    again = cairn("run", "quiet", *journal)
    assert again.returncode == 0, again.stderr


def test_a_run_on_a_full_disk_does_not_start_and_says_nothing_ran(
    cairn: CairnRunner, runbook_dir: RunbookDir, disk: SmallDisk, journal_path: Path
) -> None:
    folder = runbook_dir(QUIET)
    journal = ["--journal", str(journal_path), "--runbooks", str(folder)]
    assert cairn("run", "quiet", *journal).returncode == 0
    disk.fill()

    refused = cairn("run", "quiet", *journal)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = one_line_error(refused.stderr)
    assert said.startswith("cairn: error: the journal's disk is full"), said
    assert "did not start: nothing of it was recorded and nothing ran" in said, said
    history = cairn("history", "--json", "--journal", str(journal_path))
    assert [r["status"] for r in json.loads(history.stdout)] == ["finished"]


def test_a_journal_on_a_read_only_file_system_is_read_and_a_run_says_why_it_cannot_start(
    cairn: CairnRunner, runbook_dir: RunbookDir, disk: SmallDisk, journal_path: Path
) -> None:
    folder = runbook_dir(QUIET)
    assert cairn("run", "quiet", "--journal", str(journal_path), "--runbooks", str(folder)).returncode == 0
    view = disk.read_only_view() / "cairn" / "journal.db"

    refused = cairn("run", "quiet", "--journal", str(view), "--runbooks", str(folder))
    listed = cairn("history", "--journal", str(view))

    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = one_line_error(refused.stderr)
    assert said.startswith("cairn: error: the journal's file system is read-only"), said
    assert "did not start: nothing of it was recorded and nothing ran" in said, said
    assert listed.returncode == 0 and "quiet" in listed.stdout and "finished" in listed.stdout, listed.stderr


# --------------------------------------------------------------------------- cairn serve

GATED = """
id: gated
title: A run that waits for a go file
severity: warning
summary: Detect waits until the test says go, so the disk can fill while the run is going on.
triggers:
  - matchers: ['alertname = Gated']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: first
    title: Quick
    run: echo quick
  - id: wait
    title: Wait for the go file
    run: touch {marks}/waiting-{{{{ target }}}}; while [ ! -e {marks}/go ]; do sleep 0.05; done; echo fine
"""


def health(served: Served) -> tuple[int, dict[str, object]]:
    code, body = served.get("/healthz")
    assert isinstance(body, dict), body
    return code, body


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    """Where the gated runbook's command looks for its go file; whatever happens, it is there at the
    end (the server's commands run in sessions of their own and outlive a killed server)."""
    folder = tmp_path / "marks"
    folder.mkdir()
    try:
        yield folder
    finally:
        (folder / "go").touch()


def test_serve_answers_503_while_the_journal_is_full_keeps_its_workers_and_recovers(
    serve: Callable[..., Served], disk: SmallDisk, marks: Path
) -> None:
    served = serve("--workers", "2", runbook=GATED.format(marks=marks))
    first = webhook(alert(alertname="Gated", node="web-1", fingerprint="first"))
    second = webhook(alert(alertname="Gated", node="web-2", fingerprint="second"))
    code, body = served.post(first)
    assert code == 200 and len(body["queued"]) == 1, body
    wait_for((marks / "waiting-web-1").exists, "web-1's run to be going on")

    disk.fill()
    code, body = served.post(second)
    assert code == 503, body
    assert body["error"].startswith("could not persist the alerts: the journal's disk is full"), body
    code, said = health(served)
    assert code == 503 and said["ok"] is False, said
    assert str(said["journal"]).startswith("the journal's disk is full"), said
    assert said["workers"] == {"alive": 2, "of": 2}, said
    assert "cairn_journal_writable 0.0" in served.get("/metrics")[1]

    (marks / "go").touch()  # web-1's step ends: its result cannot be journaled, the run stops there
    wait_for(lambda: "entry 1" in served.stderr.read_text(), "the worker to say web-1's entry waits")
    code, body = served.post(second)
    assert code == 503, "still full: Alertmanager keeps retrying"
    assert health(served)[1]["workers"] == {"alive": 2, "of": 2}, "the worker lived through it"

    disk.free()
    wait_for(lambda: health(served)[0] == 200, "/healthz to be healthy again by itself")
    code, body = served.post(second)  # Alertmanager's retry
    assert code == 200 and len(body["queued"]) == 1, body

    def both_done() -> bool:
        states = {e.target: e.state for e in entries(served.journal)}
        return states == {"web-1": EntryState.DONE, "web-2": EntryState.DONE}

    try:
        wait_for(both_done, "both alerts to be run to their end")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{served.diagnosis()}") from None
    by_target = {e.target: e for e in entries(served.journal)}
    assert by_target["web-1"].note == "healthy: detect found nothing"
    finished = {r.hosts[0]: r for r in runs(served.journal) if r.status.value == "finished"}
    assert set(finished) == {"web-1", "web-2"}
    assert finished["web-1"].trigger.get("resumes"), "web-1's stopped run was resumed, not dropped"
    code, said = health(served)
    assert (code, said["ok"], said["workers"]) == (200, True, {"alive": 2, "of": 2}), said
    assert "cairn_journal_writable 1.0" in served.get("/metrics")[1]
    log = served.stderr.read_text()
    assert "Traceback" not in log and "cannot rollback" not in log, log
    assert "the journal's disk is full" in log and "the journal can be written again" in log, log
