"""The incident report as Markdown (and :func:`render`, which picks Markdown or HTML).

Every value from the journal is text a host or an alert chose: in running text and tables it is
written with Markdown's punctuation backslash-escaped (``<script>`` stays text in any renderer,
a ``|`` cannot split a table cell), and commands and output go in fenced blocks whose fence is
longer than any run of backticks inside. Control characters are escapes already
(:mod:`engine.core.visible`). The HTML is :mod:`engine.core.incident_html`'s.
"""

from __future__ import annotations

import re
from typing import Literal

from engine.core.incident_report import Decision, Excerpt, IncidentReport, TimelineStep
from engine.core.incident_timing import DEFINITIONS, span_text
from engine.core.visible import visible_lines

Format = Literal["md", "html"]
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
"""What Markdown could read as markup: ``<`` (HTML), ``[``/``]`` (links), ``|`` (a table cell's end),
emphasis and code marks, ``&`` (entities); an underscore only where it could open or close emphasis
(``release_prefix`` stays as it is)."""


def render(report: IncidentReport, fmt: Format) -> str:
    """The report as ``md`` or ``html`` text."""
    if fmt == "html":
        from engine.core.incident_html import html_report  # noqa: PLC0415

        return html_report(report)
    return markdown_report(report)


def md_text(text: str) -> str:
    """``text`` for Markdown's running text and table cells: markup escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split("\n")))


def md_code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    shown = " ".join(text.split("\n"))
    longest = max((len(run) for run in re.findall(r"`+", shown)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{ticks}{pad}{shown}{pad}{ticks}"


def fenced(text: str, info: str = "") -> list[str]:
    """``text`` in a fenced code block, control characters as escapes, never closed early."""
    lines = visible_lines(text) or [""]
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", *lines, fence]


def status_text(status: str) -> str:
    """``not asked`` of ``not_asked``; a finding or failure in capitals, as ``cairn run`` prints them."""
    shown = status.replace("_", " ")
    return shown.upper() if status in {"finding", "error", "timeout", "cancelled", "interrupted"} else shown


def markdown_report(report: IncidentReport) -> str:
    """The whole report as Markdown."""
    out = [
        f"# Incident report: {md_text(report.runbook_id)}, run {md_text(report.run_id)}",
        "",
        f"Run **{report.status}**"
        + (f", exit {report.exit_code}" if report.exit_code is not None else "")
        + f" · started {report.started_at or '-'} · ended {report.finished_at or '-'}"
        + (" · **dry run**: remediation was not executed" if report.dry_run else ""),
        "",
        "## Trigger",
        "",
        *(f"- **{md_text(what)}**: {md_text(value)}" for what, value in report.trigger),
        "",
        "## Outcome",
        "",
        *_table(
            ["Host", "Outcome", "Verify", "Reason"],
            [[h.host, h.outcome, h.verify, h.reason] for h in report.hosts],
        ),
        "",
        "## Durations",
        "",
        f"Measured from {md_text(report.durations.origin)}.",
        "",
        *_table(
            ["Duration", "Length", "From", "To"],
            [[s.name, s.text, s.start or "-", s.end or "-"] for s in report.durations.spans],
        ),
        "",
        "## Timeline",
        "",
        *_timeline(report.steps),
        "",
        "## Steps",
        *(line for step in report.steps for line in _step(step)),
        "",
        "## Approvals",
        "",
        *_decisions(report.approvals, "no step needed an approval, or nobody decided one"),
    ]
    if report.queue_head or report.queue:
        out += [
            "",
            "## Queue decisions",
            "",
            md_text(report.queue_head),
            "",
            *_decisions(report.queue, "none"),
        ]
    if report.notes:
        out += ["", "## Notes", "", *(f"- {md_text(note)}" for note in report.notes)]
    out += ["", "---", "", *(f"- {md_text(line)}" for line in DEFINITIONS), ""]
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(md_text(cell) for cell in row) + " |" for row in rows),
    ]


def _timeline(steps: tuple[TimelineStep, ...]) -> list[str]:
    if not steps:
        return ["No step ran."]
    header = ["#", "Time (UTC)", "After start", "Host", "Phase", "Step", "Status", "Result"]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(
            f"| {s.number} | {s.at or '-'} | {s.offset or '-'} | {md_text(s.host)} | {s.phase} | "
            f"{md_code(s.step_id)} | {status_text(s.status)} | {md_text(s.message)} |"
            for s in steps
        ),
    ]


def _step(step: TimelineStep) -> list[str]:
    ran = [f"rc {step.rc}"] if step.rc is not None else []
    if step.took is not None:
        ran.append(span_text(step.took))
    at = f" at {step.at} ({step.offset})" if step.at else " (never started)"
    out = [
        "",
        f"### {step.number}. {md_text(step.host)} · {step.phase} · {md_code(step.step_id)}"
        + (f": {md_text(step.title)}" if step.title else ""),
        "",
        f"- **status**: {status_text(step.status)}" + (f" ({', '.join(ran)})" if ran else "") + at,
    ]
    if step.message:
        out.append(f"- **result**: {md_text(step.message)}")
    if step.approval:
        out.append(f"- **approval**: {md_text(step.approval)}")
    if step.become:
        out.append(f"- **become**: {md_text(step.become)}")
    if step.command:
        out += ["", "Command as run:", "", *fenced(step.command, "sh")]
    for excerpt in step.excerpts:
        out += ["", f"{excerpt_head(excerpt)}:", "", *fenced(excerpt_body(excerpt), "text")]
    return out


def excerpt_head(excerpt: Excerpt) -> str:
    """``stdout, last 10 of 250 lines (whole output: …)``."""
    shown = len(excerpt.lines)
    count = (
        f"all {excerpt.total} line{'s' if excerpt.total != 1 else ''}"
        if not excerpt.more
        else (f"last {shown} of {excerpt.total} lines")
    )
    where = f"whole output: {excerpt.whole}" if excerpt.complete else excerpt.whole
    return f"{excerpt.stream}, {count} ({where})"


def excerpt_body(excerpt: Excerpt) -> str:
    """The excerpt's lines, after ``… N more lines`` when there are more."""
    more = [f"… {excerpt.more} more line{'s' if excerpt.more != 1 else ''}"] if excerpt.more else []
    return "\n".join([*more, *excerpt.lines])


def _decisions(decisions: tuple[Decision, ...], none: str) -> list[str]:
    if not decisions:
        return [none[0].upper() + none[1:] + "."]
    return _table(
        ["When (UTC)", "Subject", "Decision", "By", "Note"],
        [[d.at, d.subject, d.what, d.by, d.note] for d in decisions],
    )
