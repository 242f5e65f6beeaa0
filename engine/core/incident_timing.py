"""The incident report's clock: times in UTC ISO 8601, offsets from the run's start, and durations.

The durations, as the report's footer and docs/incident-reports.md define them (all over every
host of the run):

- **time to detect**: from the trigger — the alert's ``startsAt`` when an alert started the run,
  else the run's start — to the end of the first detect step that reported a finding;
  "no finding" when none did;
- **time to remediate**: from the start of the first remediation step that ran to the end of the
  last one (steps skipped, declined, not asked or not run did not run);
- **time to verify**: from the start of the first verify step that ran to the end of the last one;
- **run**: from the run's start to its end;
- **total**: from the trigger (as for time to detect) to the run's end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord, StepRecord

RAN = frozenset({"ok", "finding", "error", "timeout", "cancelled", "interrupted"})
"""The statuses of a step whose command ran (skipped, declined, not asked and not run ones did not)."""
DEFINITIONS = (
    "Durations span every host of the run.",
    "Time to detect: from the trigger (the alert's startsAt when an alert started the run, else the "
    "run's start) to the end of the first detect step that reported a finding; no finding when none did.",
    "Time to remediate: from the start of the first remediation step that ran to the end of the last "
    "one (skipped, declined, not asked and not run steps did not run).",
    "Time to verify: from the start of the first verify step that ran to the end of the last one.",
    "Run: from the run's start to its end. Total: from the trigger to the run's end.",
    "Times are UTC (ISO 8601); +offsets count from the run's start.",
)
"""The footer of every report: what each duration measures."""
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


@dataclass(frozen=True, slots=True)
class Span:
    """One duration: its name, its length (``None``: it did not happen), and from when to when."""

    name: str
    seconds: float | None
    text: str
    """``1.23 s``, ``4m05s``; or why there is none (``no finding``)."""
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class Durations:
    """The run's durations, measured from :attr:`origin`."""

    origin: str
    """Where time to detect and total start: ``the alert's startsAt (2026-…)`` or ``the run's start``."""
    spans: tuple[Span, ...]


def iso_utc(ts: float | None) -> str:
    """``2026-12-07T09:22:09.175Z``; ``""`` for no time."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_alert_time(text: object) -> float | None:
    """Alertmanager's ``startsAt`` (RFC 3339, nanoseconds too) as a timestamp; ``None`` for none or
    Go's zero time (``0001-01-01T00:00:00Z``)."""
    match = _ISO.fullmatch(str(text or "").strip())
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        moment = datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None
    return moment.timestamp() if moment.year > 1970 else None


def offset_text(seconds: float) -> str:
    """``+0.011s``, ``+4m05.123s``, ``+2h10m05s``: how long after the run's start."""
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{sign}{int(minutes)}m{rest:06.3f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{sign}{hours}h{minutes:02d}m{int(rest):02d}s"


def span_text(seconds: float) -> str:
    """``25 ms``, ``4.56 s``, ``4m05s``, ``2h10m05s``, ``3d04h10m``."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.2f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s"


def step_end(step: StepRecord) -> float | None:
    """When a step ended: its start plus its duration (``None`` when it has neither)."""
    if step.started_at is None:
        return None
    return step.started_at + (step.duration or 0.0)


def durations(run: RunRecord, steps: Sequence[StepRecord]) -> Durations:
    """The run's durations (see the module's docstring), from its steps in time order."""
    alert = run.trigger.get("alert") if run.trigger.get("kind") == "alert" else None
    alert_start = parse_alert_time(alert.get("startsAt")) if isinstance(alert, dict) else None
    origin = alert_start if alert_start is not None else run.started_at
    said = (
        f"the alert's startsAt ({iso_utc(alert_start)})"
        if alert_start is not None
        else f"the run's start ({iso_utc(run.started_at)})"
    )
    end = run.finished_at if run.finished_at is not None else _last_end(steps)
    findings = [s for s in steps if s.phase == "detect" and s.status == "finding"]
    first_finding = step_end(findings[0]) if findings else None
    return Durations(
        origin=said,
        spans=(
            _span("time to detect", origin, first_finding, "no finding"),
            _phase_span("time to remediate", steps, "remediate", "no remediation step ran"),
            _phase_span("time to verify", steps, "verify", "verify did not run"),
            _span("run", run.started_at, end, "the run has no end recorded"),
            _span("total", origin, end, "the run has no end recorded"),
        ),
    )


def _phase_span(name: str, steps: Sequence[StepRecord], phase: str, none: str) -> Span:
    ran = [s for s in steps if s.phase == phase and s.status in RAN and s.started_at is not None]
    if not ran:
        return _span(name, None, None, none)
    starts = [s.started_at for s in ran if s.started_at is not None]
    ends = [e for s in ran if (e := step_end(s)) is not None]
    return _span(name, min(starts), max(ends), none)


def _last_end(steps: Sequence[StepRecord]) -> float | None:
    ends = [e for s in steps if (e := step_end(s)) is not None]
    return max(ends) if ends else None


def _span(name: str, start: float | None, end: float | None, none: str) -> Span:
    if start is None or end is None:
        return Span(name, None, none, iso_utc(start), iso_utc(end))
    return Span(name, end - start, span_text(end - start), iso_utc(start), iso_utc(end))
