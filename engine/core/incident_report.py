"""The incident report of one journaled run: the timeline a postmortem starts from, as data.

:func:`build_report` turns a :class:`~engine.core.journal_read.RunRecord` (and, for an
alert-started run, the :class:`~engine.core.queue_decisions.Decisions` on its queue entry) into an
:class:`IncidentReport`: what started the run (:mod:`engine.core.incident_trigger`), every step in time order with its command, an
excerpt of its output and where the whole output is, every approval and queue decision, each
host's outcome and verify verdict, and the durations (:mod:`engine.core.incident_timing`).
:mod:`engine.core.incident_render` writes it as Markdown, :mod:`engine.core.incident_html` as HTML,
:mod:`engine.core.incident_bundle` to files and into a tarball; the artifacts folder is read by
:mod:`engine.core.incident_artifacts`. Everything comes from the journal and the run's artifacts folder, both already
redacted; nothing here writes, and the same run always gives the same report (no "now").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.incident_artifacts import ArtifactScan, output_path, scan_artifacts, tail_of
from engine.core.incident_become import DECLARED, declared_become
from engine.core.incident_timing import RAN, Durations, durations, iso_utc, offset_text
from engine.core.incident_trigger import trigger_lines
from engine.core.visible import visible, visible_lines

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord, StepRecord
    from engine.core.queue_decisions import Decisions
    from engine.core.store.location import Location

EXCERPT_LINES = 10
"""Lines of each stream's end a step shows; the rest is in the artifacts (or the bundle)."""
EXCERPT_WIDTH = 400
"""Characters of one excerpt line shown; an endless line is cut with how much more it holds."""


@dataclass(frozen=True, slots=True)
class Excerpt:
    """The end of one stream of a step's output."""

    stream: str
    lines: tuple[str, ...]
    """Its last lines, control characters shown as escapes."""
    more: int
    """How many lines come before them."""
    total: int
    whole: str
    """Where the whole output is (a path), or why it is not here."""
    complete: bool
    """Counted from the complete output (the artifacts); else from the journal's bounded copy."""


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """One step on one host, as the timeline shows it."""

    number: int
    at: str
    """Its start, UTC ISO 8601 (``""``: it never started)."""
    offset: str
    """Its start after the run's (``+1.234s``)."""
    host: str
    phase: str
    step_id: str
    title: str
    status: str
    message: str
    command: str
    rc: int | None
    took: float | None
    approval: str
    excerpts: tuple[Excerpt, ...]
    become: str = ""
    """What the runbook declared about running it as root (:data:`~engine.core.incident_become.DECLARED`);
    ``""``: it runs as the login user. How it ran is not journaled (the host's inventory decided)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One approval (the run's approvals table) or one attempt on its queue entry."""

    at: str
    what: str
    """``approved``, ``declined``; for queue attempts ``approve: counted``, ``decline: refused`` …"""
    by: str
    subject: str
    """The step (``git-lab remediate/delete_frozen``) or the queue entry."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """What the run concluded about one host, and what its verify steps said."""

    host: str
    outcome: str
    reason: str
    verify: str
    """``clean``, ``still present``, ``failed``, ``inconclusive`` or ``not run``."""


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """Everything the Markdown and HTML reports show, in the order they show it."""

    run_id: str
    runbook_id: str
    runbook_path: str
    runbook_sha256: str
    status: str
    exit_code: int | None
    dry_run: bool
    started_at: str
    finished_at: str
    trigger: tuple[tuple[str, str], ...]
    """(what, value) lines: how the run started, the alert and its labels, who, inventory, hosts, inputs."""
    steps: tuple[TimelineStep, ...]
    approvals: tuple[Decision, ...]
    queue_head: str
    """What the queue entry's approval needed and where it stands (``""``: no queue entry)."""
    queue: tuple[Decision, ...]
    hosts: tuple[HostVerdict, ...]
    durations: Durations
    artifacts: str
    """Where the artifacts are (the folder, or the bundle's ``artifacts/``)."""
    notes: tuple[str, ...]
    """What the reader should know: artifacts not found, links not followed."""


def read_incident(location: Location, run_id: str) -> tuple[RunRecord, Decisions | None]:
    """The run ``run_id`` names (a prefix, or ``last``) and the decisions on its queue entry."""
    from engine.core.journal_read import JournalReader  # noqa: PLC0415

    journal = JournalReader(location)
    try:
        run = journal.get_run(run_id)
    finally:
        journal.close()
    from engine.core.queue_decisions import run_decisions  # noqa: PLC0415

    return run, run_decisions(journal.location, run)


def build_report(
    run: RunRecord,
    decisions: Decisions | None = None,
    *,
    scan: ArtifactScan | None = None,
    output_base: str | None = None,
    notes: Sequence[str] = (),
) -> IncidentReport:
    """The report of ``run``. ``scan``: its artifacts folder as read (default: read it now);
    ``output_base``: where the reader finds the artifacts (default: the folder itself; a bundle
    says ``artifacts``); ``notes``: more for the reader."""
    scan = scan if scan is not None else scan_artifacts(run.artifacts)
    base = output_base if output_base is not None else run.artifacts
    ordered = time_order(run.steps)
    as_root = declared_become(run.runbook_text)
    return IncidentReport(
        run_id=visible(run.id),
        runbook_id=visible(run.runbook_id),
        runbook_path=visible(run.runbook_path),
        runbook_sha256=run.runbook_sha256,
        status=run.status.value,
        exit_code=run.exit_code,
        dry_run=run.dry_run,
        started_at=iso_utc(run.started_at),
        finished_at=iso_utc(run.finished_at),
        trigger=trigger_lines(run),
        steps=tuple(
            _timeline_step(number, step, run.started_at, scan, base, (step.phase, step.step_id) in as_root)
            for number, step in enumerate(ordered, start=1)
        ),
        approvals=tuple(
            Decision(
                at=iso_utc(a.at),
                what="approved" if a.approved else "declined",
                by=visible(a.decided_by),
                subject=f"{visible(a.host)} {a.phase}/{a.step_id}",
                note=visible(a.note),
            )
            for a in sorted(run.approvals, key=lambda a: a.at)
        ),
        queue_head=_queue_head(decisions),
        queue=_queue_attempts(decisions),
        hosts=host_verdicts(run),
        durations=durations(run, ordered),
        artifacts=visible(base),
        notes=(*notes, *_artifact_notes(scan)),
    )


def time_order(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """The steps by start time; one that never started (not asked, not run) follows the step of its
    host journaled before it."""
    keyed = []
    last: dict[str, float] = {}
    for step in sorted(steps, key=lambda s: s.seq):
        if step.started_at is not None:
            last[step.host] = step.started_at
        keyed.append((last.get(step.host, float("-inf")), step.seq, step))
    return [step for _, _, step in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _timeline_step(
    number: int, step: StepRecord, run_start: float, scan: ArtifactScan, base: str, as_root: bool
) -> TimelineStep:
    return TimelineStep(
        number=number,
        at=iso_utc(step.started_at),
        offset=offset_text(step.started_at - run_start) if step.started_at is not None else "",
        host=visible(step.host),
        phase=step.phase,
        step_id=step.step_id,
        title=visible(step.title),
        status=step.status,
        message=visible(step.message),
        command=step.command,
        rc=step.rc,
        took=step.duration if step.status in RAN else None,
        approval=visible(step.approval),
        excerpts=tuple(
            excerpt
            for stream, text in (("stdout", step.stdout), ("stderr", step.stderr))
            if (excerpt := _excerpt(step, stream, text, scan, base)) is not None
        ),
        become=DECLARED if as_root else "",
    )


def _excerpt(step: StepRecord, stream: str, journaled: str, scan: ArtifactScan, base: str) -> Excerpt | None:
    """The end of one stream: from the complete output in the artifacts when it is there, else from
    the journal's bounded copy (its first 16 KiB and last 48 KiB)."""
    path = output_path(step.host, step.phase, step.step_id, stream)
    if scan.has(path):
        try:
            last, total = tail_of(scan.folder, path, EXCERPT_LINES)
        except OSError:
            pass  # swapped for a link or removed since the scan: the journal's copy says what it can
        else:
            if total == 0:
                return None
            whole = visible(f"{base.rstrip('/')}/{path}" if base else path)
            return Excerpt(stream, _shown(last), total - len(last), total, whole, complete=True)
    if not journaled.strip():
        return None
    lines = journaled.removesuffix("\n").split("\n")
    last = lines[-EXCERPT_LINES:]
    why = "not in the artifacts: the journal keeps its first 16 KiB and last 48 KiB"
    return Excerpt(stream, _shown(last), len(lines) - len(last), len(lines), why, complete=False)


def _shown(lines: list[str]) -> tuple[str, ...]:
    """Each line as one visible line, an endless one cut at :data:`EXCERPT_WIDTH` characters."""
    out = []
    for line in lines:
        text = "".join(visible_lines(line)) if line else ""
        if len(text) > EXCERPT_WIDTH:
            text = f"{text[:EXCERPT_WIDTH]} … ({len(text) - EXCERPT_WIDTH:,} more characters)"
        out.append(text)
    return tuple(out)


def host_verdicts(run: RunRecord) -> tuple[HostVerdict, ...]:
    """Each host's outcome and reason (as journaled) and its verify verdict."""
    verdicts = []
    for host in dict.fromkeys([*run.hosts, *run.outcomes]):
        outcome = run.outcomes.get(host, {})
        verify = [s.status for s in run.steps if s.host == host and s.phase == "verify"]
        verdicts.append(
            HostVerdict(
                host=visible(host),
                outcome=outcome.get("outcome", "") or "no outcome recorded",
                reason=visible(outcome.get("reason", "")),
                verify=verify_verdict(verify),
            )
        )
    return tuple(verdicts)


def verify_verdict(statuses: Sequence[str]) -> str:
    """What verify said, as the host outcome reads it: a finding wins (``still present``), then a
    failure (``failed``); all ok is ``clean``; a check that did not run proves nothing."""
    if not statuses:
        return "not run"
    if "finding" in statuses:
        return "still present"
    if any(s in ("error", "timeout", "cancelled", "interrupted") for s in statuses):
        return "failed"
    if all(s == "ok" for s in statuses):
        return "clean"
    return "inconclusive (a verify step did not run)"


def _queue_head(decisions: Decisions | None) -> str:
    if decisions is None or (decisions.requirement is None and not decisions.attempts):
        return ""
    entry = decisions.entry
    head = f"queue entry {entry.id} ({entry.runbook_id} on {visible(entry.target)}), now {entry.state.value}"
    if decisions.requirement is not None and decisions.progress is not None:
        head += f": {decisions.requirement.describe()}; {decisions.progress.describe()}"
    if entry.requested_by is not None:
        head += f"; asked by {visible(entry.requested_by.label)}"
    return head


def _queue_attempts(decisions: Decisions | None) -> tuple[Decision, ...]:
    if decisions is None:
        return ()
    out = []
    for attempt in decisions.attempts:
        why = [attempt.message] if attempt.outcome.value == "refused" and attempt.message else []
        if attempt.reason:
            why.append(f"reason: {attempt.reason}")
        out.append(
            Decision(
                at=iso_utc(attempt.at),
                what=f"{attempt.action.value}: {attempt.outcome.value}",
                by=visible(attempt.who.label),
                subject=f"queue entry {attempt.entry_id}",
                note=visible("; ".join(why)),
            )
        )
    return tuple(out)


def _artifact_notes(scan: ArtifactScan) -> list[str]:
    if not scan.found:
        return [
            f"the run's artifacts folder {visible(scan.folder) or '(none recorded)'} was not found on this "
            "machine: output excerpts come from the journal's bounded copy"
        ]
    notes = [f"the artifacts folder could not be read: {visible(scan.problem)}"] if scan.problem else []
    return notes + [f"not taken from the artifacts: {line}" for line in scan.skipped]
