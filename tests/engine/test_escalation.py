"""engine/serve/escalation.py: what an escalation tells approvers, and a run's notices.

Real runs of a small runbook on this machine (bash, the local executor), journaled in a real
SQLite store whose queue holds the entry; the notices read back from the store's outbox as the
dispatcher would read them. The notice of an escalation must carry the exact command each
remediation step would run on the host, and never a secret.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.core.alert_queue import AlertQueue, Entry
from engine.core.alerts import Alert, AlertStatus, Route
from engine.core.approval import AssumeYes
from engine.core.approval_policy import ApprovalPolicy
from engine.core.errors import JournalUnwritable
from engine.core.events import HostFinished
from engine.core.journal import Journal
from engine.core.launch import prepare_run
from engine.core.loader import check_text
from engine.core.model import Host, Phase, ResumePoint, Runbook, RunReport, StepStatus
from engine.core.notices import NOTICE_COLUMNS, Notice, NoticeKind, notice_of
from engine.core.queue_read import EntryState
from engine.core.spec import RunSpec, Trigger, TriggerKind
from engine.core.store.database import Database
from engine.core.store.location import locate
from engine.serve.conclusions import Conclusion, escalating, recorded_results, resume_chain
from engine.serve.escalation import RunNotices, escalation_of, remediation_of

SECRET = "hunter2-Zq9"
RUNBOOK = """
id: stale-marker
title: A web host's marker is stale
severity: critical
tags: [web]
summary: The marker file is missing; touching it is the fix.
inputs:
  dir: {{type: string}}
  api_key: {{type: string, secret: true}}
triggers:
  - matchers: ['alertname = MarkerStale']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: look
    title: Is the marker there
    run: test -e {{{{ inputs.dir }}}}/{{{{ target }}}}.fixed && echo fixed || echo "stale $CAIRN_SECRET_API_KEY"
    expect: out == 'fixed'
    report: "{{{{ target }}}}: the marker says {{{{ out }}}}"
remediate:
  - id: fix
    title: Touch the marker
    why: The marker tells the web server it may serve.
    tradeoff: Nothing is restarted; a stale cache stays stale.
    run: {fix} && echo "key=$CAIRN_SECRET_API_KEY" --token {{{{ inputs.api_key }}}} --for {{{{ alert.labels.alertname }}}}
  - id: tell
    title: Say what fix printed
    run: echo {{{{ steps.fix.stdout }}}}
  - id: call
    title: Call the owner
    manual: Ring the web team.
"""


def runbook(folder: Path, fix: str = "") -> Runbook:
    text = RUNBOOK.format(fix=fix or f"touch {folder}/{{{{ target }}}}.fixed")
    loaded = check_text(text, "stale-marker.yaml")
    assert loaded.runbook is not None, loaded.problems
    return loaded.runbook


LABELS = {"alertname": "MarkerStale", "node": "web-1"}
ALERT = {"status": "firing", "labels": LABELS, "annotations": {}}


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


@pytest.fixture
def queue(store: str) -> Iterator[AlertQueue]:
    opened = AlertQueue(store, holder="server-1")
    yield opened
    opened.close()


def claimed(queue: AlertQueue) -> Entry:
    alert = Alert(AlertStatus.FIRING, LABELS, {}, fingerprint="fp-1")
    [entry_id] = queue.accept([Route(alert, "stale-marker", 0, "web-1")]).queued
    entry = queue.claim()
    assert entry is not None and entry.id == entry_id
    return entry


def run(
    store: str,
    book: Runbook,
    inputs: dict[str, Any],
    *,
    last: Phase,
    entry: Entry | None = None,
    queue: AlertQueue | None = None,
    resumes: str | None = None,
    approved_by: str | None = None,
) -> RunReport:
    """A real run of ``book`` on web-1 (this machine), journaled; its notices added when ``queue`` is given."""
    spec = RunSpec(
        runbook=book,
        hosts=(Host("web-1"),),
        inputs=inputs,
        trigger=Trigger(kind=TriggerKind.ALERT, limit="web-1", resumes=resumes),
        alert=ALERT,
        last_phase=last,
        unattended=True,
    )
    journal = Journal(store)
    try:
        runner = prepare_run(spec, journal=journal, approver=AssumeYes())
        if queue is not None and entry is not None:
            runner.bus.subscribe(
                RunNotices(
                    queue,
                    entry,
                    book,
                    chain=resumes or runner.run_id,
                    approved_by=approved_by,
                    cancel=runner.cancel,
                )
            )
        return runner.run()
    finally:
        journal.close()


def notices(store: str) -> list[Notice]:
    db = Database(locate(store), write=False, what="the outbox")
    try:
        return [notice_of(row) for row in db.read(f"SELECT {NOTICE_COLUMNS} FROM notices ORDER BY id")]
    finally:
        db.close()


POLICY = ApprovalPolicy.of(
    {"rules": [{"severity": ["critical"], "approvers": {"groups": ["sre"]}, "quorum": 2, "expires": "30m"}]}
)


def test_an_escalation_tells_the_exact_commands_for_the_host_and_no_secret(
    tmp_path: Path, store: str, queue: AlertQueue
) -> None:
    book = runbook(tmp_path)
    inputs = {"dir": str(tmp_path), "api_key": SECRET}
    entry = claimed(queue)
    report = run(store, book, inputs, last=Phase.DIAGNOSE)
    assert queue.started(entry.id, report.run_id)
    escalation = escalation_of(
        entry,
        book,
        Host("web-1"),
        inputs,
        run_id=report.run_id,
        note="remediation waits for a human: runbook 'stale-marker' marks no remediation step automatic",
        results=report.hosts[0].results,
    )
    assert escalation.write(queue, POLICY, run_id=report.run_id, note=escalation.note)

    [notice] = notices(store)
    body = notice.payload
    assert (notice.kind, notice.entry_id, notice.run_id) == (NoticeKind.ESCALATED, entry.id, report.run_id)
    assert body["summary"] == "stale-marker on web-1: remediation waits for 2 approvers from group sre"
    assert body["runbook"] == {
        "id": "stale-marker",
        "title": "A web host's marker is stale",
        "severity": "critical",
    }
    assert body["host"] == "web-1"
    assert (body["entry"]["id"], body["entry"]["state"], body["entry"]["run_id"]) == (
        entry.id,
        "escalated",
        report.run_id,
    )
    details = body["details"]
    assert details["reason"] == "runbook 'stale-marker' marks no remediation step automatic"
    assert details["findings"] == [
        {"step": "look", "host": "web-1", "report": "web-1: the marker says stale ***"}
    ]
    fix, tell, call = details["remediation"]
    assert fix["command"] == (
        f'touch {tmp_path}/web-1.fixed && echo "key=$CAIRN_SECRET_API_KEY" --token "$CAIRN_SECRET_API_KEY" '
        "--for MarkerStale"
    ), "the command as it would run on web-1: its template filled for this host and this alert"
    assert (fix["deferred"], fix["why"], fix["tradeoff"], fix["kind"]) == (
        "",
        "The marker tells the web server it may serve.",
        "Nothing is restarted; a stale cache stays stale.",
        "run",
    )
    assert tell["command"] == "echo {{ steps.fix.stdout }}"
    assert tell["deferred"] == "rendered at run time: it reads steps.fix"
    assert (call["kind"], call["command"]) == ("manual", "Ring the web team.")
    requirement = details["requirement"]
    assert (requirement["quorum"], requirement["approvers"]["groups"], requirement["description"]) == (
        2,
        ["sre"],
        "needs 2 approvers from group sre",
    )
    assert details["decide"]["approve"] == f"cairn approve {report.run_id}"
    assert SECRET not in json.dumps(body), "no secret in any form"

    [after] = queue.entries(EntryState.ESCALATED)
    assert after.requirement is not None and after.requirement.quorum == 2
    assert after.expires_at is not None
    assert after.expires_at == details["expires_at"] == body["entry"]["expires_at"]
    assert 29 * 60 < after.expires_at - after.updated_at <= 30 * 60 + 1, "expires 30m after it escalated"


def test_a_remediation_tells_its_start_each_step_and_the_verdict_once_per_resume_chain(
    tmp_path: Path, store: str, queue: AlertQueue
) -> None:
    book = runbook(tmp_path)
    book = replace(book, remediate=book.remediate[:2])  # no manual step: the run remediates to the end
    entry = claimed(queue)
    inputs = {"dir": str(tmp_path), "api_key": SECRET}
    report = run(store, book, inputs, last=Phase.VERIFY, entry=entry, queue=queue, approved_by="alice (unix)")
    assert report.hosts[0].outcome.value == "remediated"
    told = notices(store)
    assert [(n.kind, n.payload["id"]) for n in told] == [
        (NoticeKind.REMEDIATION_STARTED, f"run:{report.run_id}:remediation_started:web-1"),
        (NoticeKind.STEP, f"run:{report.run_id}:step:web-1:remediate:fix"),
        (NoticeKind.STEP, f"run:{report.run_id}:step:web-1:remediate:tell"),
        (NoticeKind.STEP, f"run:{report.run_id}:step:web-1:verify:look"),
        (NoticeKind.REMEDIATED, f"run:{report.run_id}:verdict:web-1"),
    ]
    started, fix, _, verify, verdict = (n.payload for n in told)
    assert started["details"]["automatic"] is False and started["details"]["approved_by"] == "alice (unix)"
    assert fix["details"] | {"report": ""} == {
        "run_id": report.run_id,
        "phase": "remediate",
        "step": "fix",
        "title": "Touch the marker",
        "status": "ok",
        "report": "",
        "exit_code": 0,
    }
    assert fix["details"]["report"] == "key=*** --token *** --for MarkerStale", (
        "its first output line, redacted"
    )
    assert verify["details"]["report"] == "web-1: the marker says fixed"
    assert verdict["summary"] == "stale-marker on web-1: remediated; verify is clean"
    assert SECRET not in json.dumps([n.payload for n in told])

    # A run resuming this one (same chain) repeats its finished steps: it adds none of them again.
    (tmp_path / "web-1.fixed").unlink()
    again = run(
        store,
        book,
        inputs,
        last=Phase.VERIFY,
        entry=entry,
        queue=queue,
        resumes=report.run_id,
        approved_by="x",
    )
    assert again.run_id != report.run_id
    assert len(notices(store)) == len(told)


def test_a_remediation_that_does_not_fix_it_says_verify_failed(
    tmp_path: Path, store: str, queue: AlertQueue
) -> None:
    book = runbook(tmp_path, fix="true")
    book = replace(book, remediate=book.remediate[:1])
    entry = claimed(queue)
    report = run(
        store, book, {"dir": str(tmp_path), "api_key": SECRET}, last=Phase.VERIFY, entry=entry, queue=queue
    )
    [*_, verdict] = notices(store)
    assert verdict.kind is NoticeKind.VERIFY_FAILED
    assert verdict.payload["details"]["outcome"] == "present"
    assert verdict.payload["details"]["verify"] == [
        {"step": "look", "status": "finding", "report": "web-1: the marker says stale ***"}
    ]
    assert verdict.payload["summary"] == (
        f"stale-marker on web-1: not fixed (present): {report.hosts[0].reason}"
    )
    started = next(n for n in notices(store) if n.kind is NoticeKind.REMEDIATION_STARTED)
    assert started.payload["details"] == {"run_id": report.run_id, "automatic": True, "approved_by": ""}


def test_a_notice_the_store_refuses_is_logged_and_the_run_goes_on(
    tmp_path: Path,
    store: str,
    queue: AlertQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = replace(runbook(tmp_path), remediate=runbook(tmp_path).remediate[:1])
    entry = claimed(queue)

    def refuse(*args: object, **kwargs: object) -> None:
        raise JournalUnwritable("the journal's disk is full", store, "No space left on device")

    monkeypatch.setattr(queue, "add_notice", refuse)
    with caplog.at_level(logging.WARNING, logger="engine.serve.escalation"):
        report = run(
            store,
            book,
            {"dir": str(tmp_path), "api_key": SECRET},
            last=Phase.VERIFY,
            entry=entry,
            queue=queue,
        )
    assert report.hosts[0].outcome.value == "remediated", "the run did not notice"
    assert [r.status for r in report.hosts[0].results if r.phase is Phase.REMEDIATE] == [StepStatus.OK]
    assert "could not add the remediation_started notice" in caplog.text
    assert notices(store) == []


def test_a_cancelled_run_gives_no_verdict_the_run_resuming_it_does(
    tmp_path: Path, store: str, queue: AlertQueue
) -> None:
    book = replace(runbook(tmp_path), remediate=runbook(tmp_path).remediate[:1])
    entry = claimed(queue)
    cancel = threading.Event()
    cancel.set()
    notices_of = RunNotices(queue, entry, book, chain="r1", approved_by=None, cancel=cancel)
    report = run(store, book, {"dir": str(tmp_path), "api_key": SECRET}, last=Phase.VERIFY)
    notices_of(HostFinished(run_id=report.run_id, report=report.hosts[0]))
    assert notices(store) == []


def test_the_chain_of_a_resumed_run_is_the_first_run_it_goes_back_to(tmp_path: Path, store: str) -> None:
    book = runbook(tmp_path)
    inputs = {"dir": str(tmp_path), "api_key": SECRET}
    first = run(store, book, inputs, last=Phase.DETECT)
    second = run(store, book, inputs, last=Phase.DETECT, resumes=first.run_id)
    third = run(store, book, inputs, last=Phase.DETECT, resumes=second.run_id)
    finished = {(r.host, r.phase, r.step_id): r for r in third.hosts[0].results}
    journal = Journal(store)
    try:
        assert resume_chain(ResumePoint(third.run_id, finished), journal, "next") == first.run_id
        assert resume_chain(ResumePoint("", {}), journal, "next") == "next", "resuming nothing: its own"
    finally:
        journal.close()


def test_an_escalation_concluded_from_an_earlier_run_takes_its_findings_from_the_journal(
    tmp_path: Path, store: str, queue: AlertQueue
) -> None:
    """A server stopped after the run ended and before it wrote the entry: the next one concludes the
    entry from the journal's record of that run, findings included."""
    book = runbook(tmp_path)
    inputs = {"dir": str(tmp_path), "api_key": SECRET}
    entry = claimed(queue)
    earlier = run(store, book, inputs, last=Phase.DIAGNOSE)
    concluded = Conclusion(EntryState.ESCALATED, "run had ended; remediation waits for a human")
    journal = Journal(store)
    try:
        results = recorded_results(journal, earlier.run_id)
    finally:
        journal.close()
    escalated = escalating(
        concluded, replace(entry, run_id=earlier.run_id), book, Host("web-1"), inputs, results
    )
    assert escalated.escalation is not None
    notice = escalated.escalation.notice(
        POLICY.requirement("stale-marker", ["web"], "critical", escalated_at=0)
    )
    assert notice["details"]["findings"] == [
        {"step": "look", "host": "web-1", "report": "web-1: the marker says stale ***"}
    ]
    assert notice["details"]["run_id"] == earlier.run_id
    done = Conclusion(EntryState.DONE, "healthy")
    assert escalating(done, entry, book, Host("web-1"), inputs, results) is done


def test_an_escalation_says_which_steps_would_run_as_root(tmp_path: Path) -> None:
    book = runbook(tmp_path)
    inputs = {"dir": str(tmp_path), "api_key": SECRET}
    escalated = remediation_of(book, Host("web-1", vars={"ansible_become": True}), inputs, None)
    fix, tell, call = escalated
    assert tell["as_user"] == "root", "every run step escalates where the inventory says ansible_become"
    assert (fix["as_user"], fix["become"]) == ("root", "as root via sudo")
    assert (call["kind"], call["as_user"]) == ("manual", ""), "a human's step runs as nobody's login"
    plain = remediation_of(book, Host("web-1"), inputs, None)
    assert [s["as_user"] for s in plain] == ["", "", ""]
