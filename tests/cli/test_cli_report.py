"""`cairn report` and `cairn diff` through the real CLI, on real runs.

A practice lab (`cairn lab up branch-cleanup`, real git) run with the real `cairn run … --yes`
gives the report a real timeline; its bundle is unpacked with the real `tar` and checked with the
real `sha256sum -c`. A small runbook whose host prints HTML and a secret gives the page opened in
a real headless chromium (tests/chromium.py) and the secret looked for in every file written. An
alert-started run comes from a real `cairn serve` fed a webhook and approved with `cairn approve`.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.core.alert_queue import Entry, EntryState
from engine.core.identity import Via, local_identity
from engine.core.journal_read import JournalReader, RunRecord
from tests.chromium import Chromium
from tests.cli.conftest import Served, alert, entries, wait_for, webhook
from tests.conftest import RUNBOOKS, CairnRunner, Lab, LabStarter, RunbookDir
from tests.disks import SmallDisk

pytestmark = [pytest.mark.cli]

SECRET = "hunter2-7f3a9c1e55"
HOSTILE = """
id: hostile-output
title: A status page that prints HTML
severity: warning
summary: The host's output is text a stranger wrote.
inputs:
  token: {type: string, secret: true}
detect:
  - id: page
    title: Fetch the status page
    run: >-
      printf '%s\\n' '<script>document.title="pwned"</script>' '<img src=x onerror=document.title="pwned">';
      for i in $(seq 1 30); do echo "line $i"; done;
      echo token {{ inputs.token }}; echo "stderr has it too:" {{ inputs.token }} >&2
    expect: "'<img' not in stdout"
    report: "the page holds markup (token {{ inputs.token }})"
remediate:
  - id: fix
    title: Replace the page
    run: echo replaced with {{ inputs.token }}
verify: detect
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def read_run(journal: Path, run_id: str) -> RunRecord:
    reader = JournalReader(journal)
    try:
        return reader.get_run(run_id)
    finally:
        reader.close()


def ran(done: subprocess.CompletedProcess[str]) -> str:
    """The run id a `cairn run --json` printed."""
    assert done.stdout, done.stderr
    run_id: str = json.loads(done.stdout)["run_id"]
    return run_id


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error a command failed with: exit 2, one line on stderr, no traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cairn: error: "), done.stderr
    return lines[0]


def unpack(bundle: Path, into: Path) -> Path:
    """`tar xzf` the bundle; its one top folder."""
    into.mkdir()
    done = subprocess.run(["tar", "xzf", str(bundle)], cwd=into, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    [top] = list(into.iterdir())
    return top


def sha256sum_check(top: Path) -> str:
    done = subprocess.run(
        ["sha256sum", "--strict", "-c", "MANIFEST.sha256"],
        cwd=top,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --------------------------------------------------------------------------- a real lab run


@pytest.fixture
def lab_run(cairn: CairnRunner, lab: LabStarter, tmp_path: Path) -> tuple[Lab, Path, str]:
    """branch-cleanup's lab remediated by the real `cairn run … --yes`: (lab, journal, run id)."""
    lab_up = lab("branch-cleanup")
    journal = tmp_path / "journal.db"
    done = cairn(*lab_up.run_args("--yes", "--journal", str(journal), "--json"))
    assert done.returncode == 0, done.stdout + done.stderr
    return lab_up, journal, ran(done)


@pytest.mark.lab
@pytest.mark.git
def test_the_report_of_a_lab_run_holds_its_trigger_timeline_approvals_verdict_and_durations(
    cairn: CairnRunner, lab_run: tuple[Lab, Path, str]
) -> None:
    lab_up, journal, run_id = lab_run
    run = read_run(journal, run_id)
    done = cairn("report", run_id, "--journal", str(journal))
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert report.startswith(f"# Incident report: branch-cleanup, run {run_id}\n")
    me = local_identity(Via.CLI).name
    assert re.search(rf"^- \*\*started\*\*: by {me}@\S+ from the command line \(cairn run\)$", report, re.M)
    assert f"- **inventory**: {lab_up.inventory}" in report
    assert "- **hosts**: git-lab" in report
    assert f"- **runbook sha256**: {run.runbook_sha256}" in report

    # every step, in time order, with its host, time, offset and status
    rows = [line for line in report.splitlines() if re.match(r"^\| \d+ \| ", line)]
    assert len(rows) == len(run.steps) == 11
    for number, (row, step) in enumerate(
        zip(rows, sorted(run.steps, key=lambda s: s.started_at or 0), strict=True), 1
    ):
        assert step.started_at is not None
        status = step.status.replace("_", " ")
        status = status.upper() if step.status == "finding" else status
        assert row.startswith(
            f"| {number} | {iso(step.started_at)} | +{step.started_at - run.started_at:.3f}s | git-lab | "
            f"{step.phase} | `{step.step_id}` | {status} |"
        ), row
    assert "git -C " + lab_up.inputs["repo"] + " branch -D feature/export feature/login" in report
    assert "Deleted branch feature/export" in report  # the output excerpt

    # approvals (--yes), the verify verdict, the durations
    assert "| git-lab remediate/delete_superseded | approved | --yes |  |" in report
    assert "| git-lab remediate/delete_frozen | approved | --yes |  |" in report
    assert "| git-lab | remediated | clean | remediated; verify is clean |" in report
    durations = dict(
        re.findall(
            r"^\| (time to detect|time to remediate|time to verify|run|total) \| ([^|]+) \|", report, re.M
        )
    )
    assert set(durations) == {"time to detect", "time to remediate", "time to verify", "run", "total"}
    for name, length in durations.items():
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", length), (name, length)
    assert f"Measured from the run's start ({iso(run.started_at)})." in report
    assert "- Time to detect: from the trigger (the alert's startsAt when an alert started the run" in report

    again = cairn("report", "last", "--journal", str(journal))
    assert again.stdout == report, "the same run gives the same report"


@pytest.mark.lab
@pytest.mark.git
@pytest.mark.browser
def test_the_bundle_of_a_lab_run_verifies_with_sha256sum_and_follows_no_planted_link(
    cairn: CairnRunner, lab_run: tuple[Lab, Path, str], tmp_path: Path, chromium: Chromium
) -> None:
    _lab, journal, run_id = lab_run
    run = read_run(journal, run_id)
    folder = Path(run.artifacts)
    outside = tmp_path / "private.txt"
    outside.write_text("PRIVATE-KEY-MATERIAL of this machine\n")
    (folder / "git-lab" / "detect.planted.stdout").symlink_to(outside)
    (folder / "etc").symlink_to("/etc")
    expected = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != ".lock"
    )

    done = cairn("report", run_id, "--journal", str(journal), "--bundle", str(tmp_path / "incident.tar.gz"))
    assert done.returncode == 0, done.stderr
    assert "2 left out" in done.stderr and "sha256sum -c MANIFEST.sha256" in done.stderr
    bundle = tmp_path / "incident.tar.gz"
    assert bundle.stat().st_mode & 0o777 == 0o600
    top = unpack(bundle, tmp_path / "unpacked")
    assert top.name == f"cairn-run-{run_id}"
    checked = sha256sum_check(top)
    files = sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())
    assert files == sorted(
        [
            "MANIFEST.sha256",
            "report.md",
            "report.html",
            "run.json",
            "runbook.yaml",
            *(f"artifacts/{e}" for e in expected),
        ]
    )
    assert checked.count(": OK") == len(files) - 1  # every file but the manifest itself
    assert not any(p.is_symlink() for p in top.rglob("*"))
    assert all(b"PRIVATE-KEY-MATERIAL" not in p.read_bytes() for p in top.rglob("*") if p.is_file())
    assert not (top / "artifacts" / "etc").exists()

    report = (top / "report.md").read_text()
    assert "git-lab/detect.planted.stdout: a symbolic link (to " in report and "not followed" in report
    assert "etc: a symbolic link (to /etc), not followed" in report
    assert "whole output: artifacts/git-lab/remediate.delete_frozen.stdout" in report
    assert (top / "runbook.yaml").read_text() == run.runbook_text
    data = json.loads((top / "run.json").read_text())
    assert data["id"] == run_id and "runbook_text" not in data and data["runbook_file"] == "runbook.yaml"
    assert [s["step_id"] for s in data["steps"]] == [s.step_id for s in run.steps]
    with tarfile.open(bundle) as tar:
        assert {m.name.split("/")[0] for m in tar.getmembers()} == {top.name}, "one top folder"

    # The bundle's HTML report of the lab run, as a reader opens it from the unpacked folder.
    chromium.dom((top / "report.html").as_uri())
    assert chromium.evaluate("document.title") == f"Incident report: branch-cleanup, run {run_id}"
    rows = chromium.evaluate("document.querySelectorAll('#timeline-table tbody tr').length")
    assert rows == len(run.steps)
    assert chromium.evaluate("document.scripts.length") == 0


@pytest.mark.lab
@pytest.mark.git
def test_diff_of_two_runs_of_the_same_runbook_and_of_an_edited_copy(
    cairn: CairnRunner, lab: LabStarter, tmp_path: Path
) -> None:
    lab_up = lab("branch-cleanup")
    journal = str(tmp_path / "journal.db")
    first = ran(cairn(*lab_up.run_args("--journal", journal, "--json")))  # nobody to ask: nothing is deleted
    second = ran(cairn(*lab_up.run_args("--journal", journal, "--json")))
    same = cairn("diff", first, second, "--journal", journal)
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"same runbook text (sha256 {read_run(Path(journal), first).runbook_sha256[:12]}…)" in same.stdout
    assert "same decisions" in same.stdout

    edited = tmp_path / "edited"
    edited.mkdir()
    text = (RUNBOOKS / "branch-cleanup.yaml").read_text()
    assert text.count("default: 7d") == 1
    (edited / "branch-cleanup.yaml").write_text(text.replace("default: 7d", "default: 25d"))
    third = ran(cairn(*lab_up.run_args("--runbooks", str(edited), "--journal", journal, "--json")))
    changed = cairn("diff", first, third, "--journal", journal)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    out = changed.stdout
    assert f"--- {first}/runbook.yaml (sha256 " in out and f"+++ {third}/runbook.yaml (sha256 " in out
    assert "-    default: 7d\n+    default: 25d" in out
    assert "  frozen_age: A 604800 · B 2160000" in out
    assert (
        "  step git-lab detect/frozen_features\n"
        "    A: FINDING: 2 frozen longer than 7 days: feature/export (20d), feature/login (30d)\n"
        "    B: FINDING: 1 frozen longer than 25 days: feature/login (30d)"
    ) in out
    repo = lab_up.inputs["repo"]
    assert (
        "  command git-lab remediate/delete_frozen\n"
        f"    A: git -C {repo} branch -D feature/export feature/login\n"
        f"    B: git -C {repo} branch -D feature/login"
    ) in out  # what the remediation would now delete
    assert "2 decisions differ:" in out

    as_json = cairn("diff", first, third, "--journal", journal, "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert (data["same"], data["same_text"]) == (False, False)
    assert {"kind": "step", "subject": "git-lab detect/frozen_features"}.items() <= data["changes"][1].items()

    for args in (("diff", first, "20991231-nope"), ("report", "20991231-nope")):
        said = one_line_error(cairn(*args, "--journal", journal))
        assert "no run '20991231-nope'" in said


# --------------------------------------------------------------------------- hostile output, secrets, chromium


@pytest.fixture
def hostile_run(cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path) -> tuple[Path, str]:
    folder = runbook_dir(HOSTILE)
    journal = tmp_path / "journal.db"
    done = cairn(
        "run", "hostile-output", "--runbooks", str(folder), "-e", f"token={SECRET}", "--yes",
        "--journal", str(journal), "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # verify still finds the markup
    return journal, ran(done)


@pytest.mark.browser
def test_the_html_report_opens_in_chromium_and_the_hosts_markup_stays_text(
    cairn: CairnRunner, hostile_run: tuple[Path, str], chromium: Chromium, tmp_path: Path
) -> None:
    journal, run_id = hostile_run
    page = tmp_path / "report.html"
    done = cairn("report", run_id, "--journal", str(journal), "--format", "html", "-o", str(page))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == f"wrote {page}\n"
    chromium.dom(page.as_uri())
    assert chromium.evaluate("document.title") == f"Incident report: hostile-output, run {run_id}"
    assert chromium.evaluate("document.querySelectorAll('#timeline-table tbody tr').length") == 3
    assert chromium.evaluate(
        "[...document.querySelectorAll('#timeline-table tbody tr')].map(r => r.cells[4].textContent + '/' + r.cells[5].textContent)"
    ) == ["detect/page", "remediate/fix", "verify/page"]
    assert chromium.evaluate("document.scripts.length") == 0
    assert chromium.evaluate("document.images.length") == 0
    assert chromium.evaluate("document.querySelectorAll('script, img, iframe, object').length") == 0
    shown = chromium.evaluate("document.body.innerText")
    assert '<img src=x onerror=document.title="pwned">' in shown
    assert '<script>document.title="pwned"</script>' in shown
    assert "… 23 more lines" in shown  # 33 lines of stdout, the last 10 shown
    assert chromium.evaluate("getComputedStyle(document.querySelector('table')).borderCollapse") == "collapse"
    assert SECRET not in page.read_text() and "token ***" in shown


def test_a_secret_reaches_no_file_of_the_bundle_nor_the_report(
    cairn: CairnRunner, hostile_run: tuple[Path, str], tmp_path: Path
) -> None:
    journal, run_id = hostile_run
    bundle = tmp_path / "b.tar.gz"
    done = cairn(
        "report", run_id, "--journal", str(journal), "--bundle", str(bundle), "-o", str(tmp_path / "r.md")
    )
    assert done.returncode == 0, done.stderr
    top = unpack(bundle, tmp_path / "unpacked")
    sha256sum_check(top)
    written = sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())
    assert written == [
        "MANIFEST.sha256",
        "artifacts/localhost/detect.page.stderr",
        "artifacts/localhost/detect.page.stdout",
        "artifacts/localhost/remediate.fix.stdout",
        "artifacts/localhost/verify.page.stderr",
        "artifacts/localhost/verify.page.stdout",
        "artifacts/runbook.yaml",
        "report.html",
        "report.md",
        "run.json",
        "runbook.yaml",
    ]
    for path in [*(top / name for name in written), tmp_path / "r.md"]:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET.encode() not in gzip.decompress(bundle.read_bytes())
    assert "stderr has it too: ***" in (top / "report.md").read_text()
    assert json.loads((top / "run.json").read_text())["inputs"] == {"token": "***"}


# --------------------------------------------------------------------------- files that cannot be written


def test_an_output_that_cannot_be_written_is_one_line(
    cairn: CairnRunner, hostile_run: tuple[Path, str], disk: SmallDisk, tmp_path: Path
) -> None:
    journal, run_id = hostile_run
    base = ("report", run_id, "--journal", str(journal))
    missing = tmp_path / "no-such-folder"
    said = one_line_error(cairn(*base, "-o", str(missing / "r.md")))
    assert said == f"cairn: error: cannot write {missing}/r.md: the folder {missing} does not exist"
    said = one_line_error(cairn(*base, "--bundle", str(missing / "b.tar.gz")))
    assert said.endswith(f"the folder {missing} does not exist")

    read_only = disk.read_only_view()
    said = one_line_error(cairn(*base, "--format", "html", "-o", str(read_only / "r.html")))
    assert said == f"cairn: error: cannot write {read_only}/r.html: the file system is read-only"

    disk.fill()
    for extra in (("-o", str(disk.root / "r.md")), ("--bundle", str(disk.root / "b.tar.gz"))):
        said = one_line_error(cairn(*base, *extra))
        assert said.endswith("the disk is full (No space left on device)"), said
    assert sorted(p.name for p in disk.root.iterdir()) == [".filler"], "no half-written file is left"
    disk.free()
    done = cairn(*base, "--bundle", str(disk.root / "b.tar.gz"))
    assert done.returncode == 0, done.stderr


def test_a_run_whose_artifacts_folder_is_gone_still_bundles(
    cairn: CairnRunner, hostile_run: tuple[Path, str], tmp_path: Path
) -> None:
    journal, run_id = hostile_run
    folder = Path(read_run(journal, run_id).artifacts)
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    bundle = tmp_path / "b.tar.gz"
    done = cairn("report", run_id, "--journal", str(journal), "--bundle", str(bundle))
    assert done.returncode == 0, done.stderr
    top = unpack(bundle, tmp_path / "unpacked")
    assert sorted(p.name for p in top.iterdir()) == [
        "MANIFEST.sha256", "report.html", "report.md", "run.json", "runbook.yaml"
    ]  # fmt: skip
    sha256sum_check(top)
    report = (top / "report.md").read_text()
    assert f"the run's artifacts folder {folder} was not found on this machine" in report
    assert "not in the artifacts: the journal keeps its first 16 KiB and last 48 KiB" in report


# --------------------------------------------------------------------------- an alert-started run

MARKER = """
id: stale-marker
title: A web host's marker is stale
severity: warning
summary: The marker file is missing; touching it is the fix.
triggers:
  - matchers: ['alertname = MarkerStale']
    target: "{{{{ alert.labels.node }}}}"
targets: web
detect:
  - id: look
    title: Is the marker there
    run: test -e {dir}/{{{{ target }}}}.fixed && echo fixed || echo stale
    expect: out == 'fixed'
remediate:
  - id: fix
    title: Touch the marker
    run: touch {dir}/{{{{ target }}}}.fixed
"""


def test_the_report_of_an_alert_run_names_the_alert_and_who_approved_it(
    serve: Callable[..., Served], cairn: CairnRunner, tmp_path: Path
) -> None:
    served = serve(runbook=MARKER.format(dir=tmp_path))
    fired = alert(alertname="MarkerStale", node="web-1")
    code, body = served.post(webhook(fired))
    assert code == 200 and len(body["queued"]) == 1, body

    def settled(*states: EntryState) -> Callable[[], Entry | None]:
        """A condition: the newest entry is in one of ``states``."""

        def check() -> Entry | None:
            found = entries(served.journal)
            return found[-1] if found and found[-1].state in states else None

        return check

    escalated = wait_for(settled(EntryState.ESCALATED), "the escalation")
    assert escalated.run_id is not None
    approved = cairn("approve", escalated.run_id, "--journal", str(served.journal))
    assert approved.returncode == 0, approved.stderr
    done = wait_for(settled(EntryState.DONE), "the approved run", timeout=90)
    me = local_identity(Via.CLI)

    report = cairn("report", str(done.run_id), "--journal", str(served.journal))
    assert report.returncode == 0, report.stderr
    text = report.stdout
    assert "- **alert**: MarkerStale node=web-1 (firing)" in text
    assert "- **labels**: alertname=MarkerStale, node=web-1" in text
    assert fired["annotations"]["summary"] == "p99 latency > 2s"
    assert "- **annotation summary**: p99 latency \\> 2s" in text  # Markdown's > escaped
    assert f"- **alert started**: {fired['startsAt']}" in text
    assert f"- **queue entry**: {escalated.id}" in text
    assert f"- **approved by**: {me.label}" in text
    assert "Measured from the alert's startsAt (2026-11-28T01:04:51.284Z)." in text
    assert "## Queue decisions" in text
    assert f"| queue entry {escalated.id} | approve: approved | {me.label} |" in text
    assert f"| web-1 remediate/fix | approved | {me.label} |" in text
    assert "| web-1 | remediated | clean |" in text
