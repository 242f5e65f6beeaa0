"""The incident report's parts, called directly: the timeline's order, verdicts, durations, escaping,
the artifacts folder read without following a link, the bundle's bytes, and two runs compared.

The runs here are journal records built in the test (an alert-started run needs no server to be
described); the real CLI on real runs is tests/cli/test_cli_report.py.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import replace
from pathlib import Path

from engine.core.incident_artifacts import open_artifact, scan_artifacts, tail_of
from engine.core.incident_bundle import write_bundle
from engine.core.incident_html import html_report
from engine.core.incident_render import fenced, markdown_report, md_text
from engine.core.incident_report import build_report, time_order, verify_verdict
from engine.core.incident_timing import iso_utc, offset_text, parse_alert_time, span_text
from engine.core.journal_read import ApprovalRecord, RunRecord, StepRecord
from engine.core.model import RunStatus
from engine.core.run_diff import diff_runs, diff_text

T0 = 1_800_000_000.0
"""2027-01-15T08:00:00Z."""
HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> | `tick` *bold* \x1b[2J"


def step(seq: int, phase: str, step_id: str, status: str, at: float | None, **more: object) -> StepRecord:
    fields: dict[str, object] = {
        "seq": seq,
        "host": "web-1",
        "phase": phase,
        "step_id": step_id,
        "title": step_id.replace("_", " "),
        "status": status,
        "message": "",
        "command": f"check {step_id}",
        "rc": 0 if at is not None else None,
        "stdout": "",
        "stderr": "",
        "out": None,
        "started_at": at,
        "duration": 0.5 if at is not None else None,
        "approval": "",
    } | more
    return StepRecord(**fields)  # type: ignore[arg-type]


def record(artifacts: Path | str = "", **more: object) -> RunRecord:
    fields: dict[str, object] = {
        "id": "20270115-080000-abc123",
        "runbook_id": "stale-marker",
        "runbook_path": "/srv/runbooks/stale-marker.yaml",
        "runbook_sha256": "ab" * 32,
        "runbook_text": "id: stale-marker\ndetect:\n  - id: look\n    run: check\n",
        "hosts": ("web-1",),
        "inputs": {"token": "***", "age": 604800},
        "started_by": "alertmanager",
        "trigger": {
            "kind": "alert",
            "inventory": ["hosts.yml"],
            "limit": None,
            "queue_entry": 7,
            "approved_by": "alice (unix uid 1000 on vm, via cli)",
            "alert": {
                "status": "firing",
                "labels": {"alertname": "MarkerStale", "node": "web-1", "severity": "critical"},
                "annotations": {"summary": "the marker is stale"},
                "startsAt": "2027-01-15T07:58:00.123456789Z",
                "fingerprint": "c0ffee",
            },
        },
        "dry_run": False,
        "last_phase": "verify",
        "status": RunStatus.FINISHED,
        "exit_code": 0,
        "outcomes": {"web-1": {"outcome": "remediated", "reason": "remediated; verify is clean"}},
        "started_at": T0,
        "finished_at": T0 + 9.0,
        "artifacts": str(artifacts),
        "steps": (
            step(1, "detect", "look", "finding", T0 + 1, message="the marker is stale"),
            step(2, "remediate", "ask_first", "not_asked", None, message="not asked: no terminal"),
            step(3, "remediate", "fix", "ok", T0 + 3, approval="alice"),
            step(4, "remediate", "touch", "ok", T0 + 4.5),
            step(5, "verify", "look", "ok", T0 + 6, message="the marker is fresh"),
        ),
        "approvals": (ApprovalRecord("web-1", "remediate", "fix", "fix it", True, "alice", "", T0 + 2.5),),
    } | more
    return RunRecord(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- times and order


def test_times_are_utc_iso_and_alertmanager_nanoseconds_are_read() -> None:
    assert iso_utc(T0) == "2027-01-15T08:00:00.000Z"
    assert iso_utc(None) == ""
    assert parse_alert_time("2027-01-15T07:58:00.123456789Z") == T0 - 120 + 0.123456
    assert parse_alert_time("2027-01-15T09:58:00+02:00") == T0 - 120
    assert parse_alert_time("0001-01-01T00:00:00Z") is None  # Go's zero time: no start known
    assert parse_alert_time("yesterday") is None
    assert [offset_text(s) for s in (0.0114, 65.5, 7322.0)] == ["+0.011s", "+1m05.500s", "+2h02m02s"]
    assert [span_text(s) for s in (0.025, 4.561, 245, 7322, 3 * 86400 + 3600)] == [
        "25 ms",
        "4.56 s",
        "4m05s",
        "2h02m02s",
        "3d01h00m",
    ]


def test_the_timeline_is_in_time_order_and_a_step_that_never_started_keeps_its_place() -> None:
    steps = (
        step(1, "detect", "a", "ok", T0 + 2, host="web-2"),
        step(2, "detect", "a", "ok", T0 + 1),
        step(3, "remediate", "b", "not_asked", None),
        step(4, "verify", "a", "ok", T0 + 3),
    )
    # web-1's step that was never asked follows web-1's step before it, ahead of web-2's later one
    assert [s.seq for s in time_order(steps)] == [2, 3, 1, 4]


def test_the_verify_verdict_reads_as_the_host_outcome_does() -> None:
    assert verify_verdict([]) == "not run"
    assert verify_verdict(["ok", "ok"]) == "clean"
    assert verify_verdict(["ok", "finding", "error"]) == "still present"
    assert verify_verdict(["ok", "timeout"]) == "failed"
    assert verify_verdict(["ok", "not_run"]) == "inconclusive (a verify step did not run)"


def test_an_alert_run_is_timed_from_the_alert_and_names_it_with_every_label() -> None:
    report = build_report(record("/nonexistent/run-folder"))
    trigger = dict(report.trigger)
    assert trigger["alert"] == "MarkerStale node=web-1 severity=critical (firing)"
    assert trigger["labels"] == "alertname=MarkerStale, node=web-1, severity=critical"
    assert trigger["annotation summary"] == "the marker is stale"
    assert trigger["alert started"] == "2027-01-15T07:58:00.123456789Z"
    assert trigger["inputs"] == "token=***, age=604800"
    assert trigger["runbook sha256"] == "ab" * 32
    assert trigger["approved by"] == "alice (unix uid 1000 on vm, via cli)"
    spans = {s.name: s for s in report.durations.spans}
    assert report.durations.origin == "the alert's startsAt (2027-01-15T07:58:00.123Z)"
    assert spans["time to detect"].text == "2m01s"  # 07:58:00.123 → the finding's end at 08:00:01.5
    assert (
        spans["time to remediate"].text == "2.00 s"
    )  # fix from +3 to touch's end at +5 (not asked: not counted)
    assert (spans["time to remediate"].start, spans["time to remediate"].end) == (
        "2027-01-15T08:00:03.000Z",
        "2027-01-15T08:00:05.000Z",
    )
    assert spans["time to verify"].text == "500 ms"
    assert spans["run"].text == "9.00 s"
    assert spans["total"].text == "2m08s"
    assert [(h.host, h.outcome, h.verify) for h in report.hosts] == [("web-1", "remediated", "clean")]
    assert report.notes == (
        "the run's artifacts folder /nonexistent/run-folder was not found on this machine: output "
        "excerpts come from the journal's bounded copy",
    )


def test_a_run_without_a_finding_says_so_and_a_cli_run_is_timed_from_its_start() -> None:
    run = record(
        trigger={"kind": "cli", "inventory": [], "limit": None},
        started_by="root@vm",
        steps=(step(1, "detect", "look", "ok", T0 + 1),),
        approvals=(),
        outcomes={"web-1": {"outcome": "healthy", "reason": "nothing found"}},
    )
    report = build_report(run)
    spans = {s.name: s.text for s in report.durations.spans}
    assert spans["time to detect"] == "no finding"
    assert spans["time to remediate"] == "no remediation step ran"
    assert spans["time to verify"] == "verify did not run"
    assert dict(report.trigger)["started"] == "by root@vm from the command line (cairn run)"
    assert dict(report.trigger)["inventory"] == "none (this machine)"
    assert report.hosts[0].verify == "not run"


# --------------------------------------------------------------------------- escaping


def test_hostile_text_stays_text_in_markdown_and_html(tmp_path: Path) -> None:
    run = record(
        tmp_path / "none",
        steps=(
            step(
                1,
                "detect",
                "look",
                "finding",
                T0 + 1,
                message=HOSTILE,
                stdout=f"{HOSTILE}\n```\nend\n",
                command="echo '```'",
                title=HOSTILE,
            ),
        ),
    )
    report = build_report(run)
    page = html_report(report)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt;" in page
    assert "\x1b" not in page and "\\x1b[2J" in page  # an escape sequence is shown, never sent
    markdown = markdown_report(report)
    assert "\x1b" not in markdown
    assert md_text(HOSTILE).startswith(
        r"\<script\>alert(1)\</script\> \<img src=x onerror=alert(2)\> \| \`tick\`"
    )
    assert fenced("a\n```\nb") == ["````", "a", "```", "b", "````"]  # the fence outlasts any inside


# --------------------------------------------------------------------------- the artifacts folder


def artifacts_folder(root: Path) -> Path:
    folder = root / "runs" / "20270115-080000-abc123"
    (folder / "web-1").mkdir(parents=True)
    (folder / "runbook.yaml").write_text("id: stale-marker\n")
    (folder / ".lock").write_bytes(b"")
    lines = "".join(f"line {n}\n" for n in range(1, 26))
    (folder / "web-1" / "detect.look.stdout").write_text(lines)
    return folder


def test_the_artifacts_scan_lists_regular_files_and_follows_no_link(tmp_path: Path) -> None:
    folder = artifacts_folder(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's\n")
    (folder / "web-1" / "planted").symlink_to(outside)
    (folder / "web-1" / "linked-folder").symlink_to(tmp_path)
    os.mkfifo(folder / "web-1" / "pipe")
    (folder / "web-1" / "two\nlines").write_text("x")
    scan = scan_artifacts(folder)
    assert [f.path for f in scan.files] == ["runbook.yaml", "web-1/detect.look.stdout"]  # not the lock
    assert scan.skipped == (
        f"web-1/linked-folder: a symbolic link (to {tmp_path}), not followed",
        "web-1/pipe: not a regular file (a FIFO, socket or device), not read",
        f"web-1/planted: a symbolic link (to {outside}), not followed",
        "web-1/two\\nlines: a name a manifest cannot hold (newline, backslash or not UTF-8)",
    )
    assert tail_of(folder, "web-1/detect.look.stdout", 3) == (["line 23", "line 24", "line 25"], 25)

    # A file swapped for a link after the scan is refused when it is opened.
    (folder / "web-1" / "detect.look.stdout").unlink()
    (folder / "web-1" / "detect.look.stdout").symlink_to(outside)
    try:
        fd, _ = open_artifact(folder, "web-1/detect.look.stdout")
    except OSError:
        pass
    else:
        os.close(fd)
        raise AssertionError("a symbolic link was opened")
    assert scan_artifacts(tmp_path / "nowhere").found is False


def test_an_excerpt_is_the_end_of_the_complete_output_and_says_where_the_rest_is(tmp_path: Path) -> None:
    folder = artifacts_folder(tmp_path)
    run = record(folder, steps=(step(1, "detect", "look", "finding", T0 + 1, stdout="line 25\n"),))
    [excerpt] = build_report(run).steps[0].excerpts
    assert excerpt.lines == tuple(f"line {n}" for n in range(16, 26))
    assert (excerpt.more, excerpt.total, excerpt.complete) == (15, 25, True)
    assert excerpt.whole == f"{folder}/web-1/detect.look.stdout"
    assert "… 15 more lines\nline 16" in markdown_report(build_report(run))


# --------------------------------------------------------------------------- the bundle


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_the_same_run_gives_the_same_bundle_and_its_manifest_holds_every_file(tmp_path: Path) -> None:
    run = record(artifacts_folder(tmp_path))
    first = write_bundle(run, None, tmp_path / "a.tar.gz")
    second = write_bundle(run, None, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert (tmp_path / "a.tar.gz").stat().st_mode & 0o777 == 0o600
    assert first.files == second.files
    held = members(tmp_path / "a.tar.gz")
    top = "cairn-run-20270115-080000-abc123"
    manifest = held[f"{top}/MANIFEST.sha256"].decode()
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in manifest.splitlines())}
    assert sorted(listed) == sorted(
        [
            "artifacts/runbook.yaml",
            "artifacts/web-1/detect.look.stdout",
            "report.md",
            "report.html",
            "run.json",
            "runbook.yaml",
        ]
    )
    for name, digest in listed.items():
        assert hashlib.sha256(held[f"{top}/{name}"]).hexdigest() == digest, name
    assert b"runbook_text" not in held[f"{top}/run.json"]
    assert held[f"{top}/runbook.yaml"] == run.runbook_text.encode()


def test_a_run_whose_artifacts_are_gone_still_bundles_and_says_so(tmp_path: Path) -> None:
    run = record(tmp_path / "gone")
    bundle = write_bundle(run, None, tmp_path / "r.tar.gz")
    assert sorted(bundle.files) == ["MANIFEST.sha256", "report.html", "report.md", "run.json", "runbook.yaml"]
    report = members(tmp_path / "r.tar.gz")[f"{bundle.top}/report.md"].decode()
    assert "was not found on this machine" in report
    assert "this bundle holds no artifacts" in report


# --------------------------------------------------------------------------- two runs compared


def test_two_runs_compared_name_what_changed() -> None:
    a = record()
    assert diff_runs(a, a).same
    assert "same runbook text" in diff_text(diff_runs(a, a))
    b = replace(
        a,
        id="20270116-080000-def456",
        runbook_text=a.runbook_text.replace("run: check", "run: check --harder"),
        runbook_sha256="cd" * 32,
        inputs={"token": "***", "age": 86400},
        steps=(*a.steps[:4], step(6, "verify", "look", "finding", T0 + 6, message="still stale")),
        outcomes={"web-1": {"outcome": "present", "reason": "verify still finds it: look"}},
    )
    diff = diff_runs(a, b)
    assert not diff.same
    text = diff_text(diff)
    assert f"--- {a.id}/runbook.yaml (sha256 abababababab…)" in text
    assert "-    run: check" in text and "+    run: check --harder" in text
    assert "  age: A 604800 · B 86400" in text
    assert [(c.kind, c.subject) for c in diff.decisions] == [
        ("outcome", "web-1"),
        ("step", "web-1 verify/look"),
    ]
    assert "    A: ok: the marker is fresh\n    B: FINDING: still stale" in text
