"""The incident report as one self-contained HTML page: one inline stylesheet, no script, no link out.

Built element by element with every value from the journal passed through :func:`html.escape`
(a step's output is the host's text: ``<script>`` or ``<img onerror=…>`` in it is shown, never
parsed), so the page needs no Markdown library and the core imports no front end. Class names
come from fixed tables, never from the journal. The same report gives the same bytes.
"""

from __future__ import annotations

import re
from html import escape

from engine.core.incident_render import excerpt_body, excerpt_head, status_text
from engine.core.incident_report import Decision, IncidentReport, TimelineStep
from engine.core.incident_timing import DEFINITIONS, span_text
from engine.core.visible import visible_lines

STYLE = """
:root { --text: #1f2328; --muted: #59636e; --line: #d1d9e0; --code: #f6f8fa; --ok: #1a7f37;
  --finding: #9a6700; --error: #cf222e; --quiet: #59636e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 0 1.25rem 2rem; color: var(--text);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
h1 { font-size: 1.7rem; margin: 1.5rem 0 0.5rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 0.6rem; padding-bottom: 0.25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 0.4rem; }
table { border-collapse: collapse; margin: 0.75rem 0; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: var(--code); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font: 0.85em/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: var(--code); padding: 0.6rem 0.9rem; border-radius: 6px; white-space: pre-wrap;
  overflow-wrap: anywhere; margin: 0.3rem 0 0.8rem; }
.status { font-weight: 600; white-space: nowrap; }
#timeline-table td:nth-child(-n+5), td time { white-space: nowrap; }
.ok, .clean, .healthy, .remediated { color: var(--ok); }
.finding, .present, .still-present { color: var(--finding); }
.error, .timeout, .cancelled, .interrupted, .failed { color: var(--error); }
.skipped, .declined, .not-asked, .not-run, .running, .other { color: var(--quiet); }
.muted, footer { color: var(--muted); }
footer { margin-top: 2.5rem; padding-top: 0.75rem; border-top: 1px solid var(--line); font-size: 0.85rem; }
@media print { pre { white-space: pre-wrap; } }
""".strip()
"""The page's one stylesheet, inline: the file opens anywhere, from disk or a mail attachment."""
_CLASSES = frozenset(
    {"ok", "finding", "error", "timeout", "skipped", "declined", "not-asked", "not-run", "cancelled",
     "interrupted", "running", "clean", "still-present", "failed", "healthy", "present", "remediated"}
)  # fmt: skip


def html_report(report: IncidentReport) -> str:
    """The report as one HTML page."""
    title = f"Incident report: {report.runbook_id}, run {report.run_id}"
    exit_code = f", exit {report.exit_code}" if report.exit_code is not None else ""
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p>Run <span class="status {css(report.status)}">{escape(report.status)}</span>{exit_code}'
        f" · started {_time(report.started_at)} · ended {_time(report.finished_at)}"
        + (" · <strong>dry run</strong>: remediation was not executed" if report.dry_run else "")
        + "</p>",
        '<h2 id="trigger">Trigger</h2>',
        "<dl>",
        *(f"<dt>{escape(what)}</dt><dd>{escape(value)}</dd>" for what, value in report.trigger),
        "</dl>",
        '<h2 id="outcome">Outcome</h2>',
        _table(
            "outcome-table",
            ["Host", "Outcome", "Verify", "Reason"],
            [[escape(h.host), _status(h.outcome), _status(h.verify), escape(h.reason)] for h in report.hosts],
        ),
        '<h2 id="durations">Durations</h2>',
        f"<p>Measured from {escape(report.durations.origin)}.</p>",
        _table(
            "durations-table",
            ["Duration", "Length", "From", "To"],
            [[escape(s.name), escape(s.text), _time(s.start), _time(s.end)] for s in report.durations.spans],
        ),
        '<h2 id="timeline">Timeline</h2>',
        _timeline(report.steps),
        '<h2 id="steps">Steps</h2>',
        *(_step(step) for step in report.steps),
        '<h2 id="approvals">Approvals</h2>',
        _decisions("approvals-table", report.approvals, "No step needed an approval, or nobody decided one."),
    ]
    if report.queue_head or report.queue:
        body += [
            '<h2 id="queue">Queue decisions</h2>',
            f"<p>{escape(report.queue_head)}</p>",
            _decisions("queue-table", report.queue, "None."),
        ]
    if report.notes:
        body += [
            '<h2 id="notes">Notes</h2>',
            "<ul>",
            *(f"<li>{escape(note)}</li>" for note in report.notes),
            "</ul>",
        ]
    body += ["<footer>", "<ul>", *(f"<li>{escape(line)}</li>" for line in DEFINITIONS), "</ul>", "</footer>"]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="cairn report">',
            f"<title>{escape(title)}</title>",
            f"<style>\n{STYLE}\n</style>",
            "</head>",
            "<body>",
            "<main>",
            *body,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


def css(value: str) -> str:
    """The class of a status or outcome (``not_asked`` → ``not-asked``); ``other`` for any it does not know."""
    name = re.sub(r"[^a-z]+", "-", value.lower()).strip("-")
    return name if name in _CLASSES else "other"


def _status(value: str) -> str:
    return f'<span class="status {css(value)}">{escape(value)}</span>'


def _time(iso: str) -> str:
    return f'<time datetime="{escape(iso)}">{escape(iso)}</time>' if iso else "-"


def _table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are HTML already (each value escaped by the caller)."""
    if not rows:
        return '<p class="muted">(none)</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = [f'<table id="{table_id}">', f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    lines += ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _timeline(steps: tuple[TimelineStep, ...]) -> str:
    if not steps:
        return '<p class="muted">No step ran.</p>'
    header = ["#", "Time (UTC)", "After start", "Host", "Phase", "Step", "Status", "Result"]
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = [
        f'<tr class="step" id="row-{s.number}">'
        f'<td><a href="#step-{s.number}">{s.number}</a></td><td>{_time(s.at)}</td>'
        f"<td>{escape(s.offset) or '-'}</td><td>{escape(s.host)}</td><td>{escape(s.phase)}</td>"
        f"<td><code>{escape(s.step_id)}</code></td>"
        f'<td><span class="status {css(s.status)}">{escape(status_text(s.status))}</span></td>'
        f"<td>{escape(s.message)}</td></tr>"
        for s in steps
    ]
    return "\n".join(
        [
            '<table id="timeline-table">',
            f"<thead><tr>{head}</tr></thead>",
            "<tbody>",
            *rows,
            "</tbody>",
            "</table>",
        ]
    )


def _step(step: TimelineStep) -> str:
    ran = [f"rc {step.rc}"] if step.rc is not None else []
    if step.took is not None:
        ran.append(span_text(step.took))
    at = f" at {_time(step.at)} ({escape(step.offset)})" if step.at else " (never started)"
    facts = [
        "<dt>status</dt>"
        f'<dd><span class="status {css(step.status)}">{escape(status_text(step.status))}</span>'
        + (f" ({escape(', '.join(ran))})" if ran else "")
        + f"{at}</dd>"
    ]
    if step.message:
        facts.append(f"<dt>result</dt><dd>{escape(step.message)}</dd>")
    if step.approval:
        facts.append(f"<dt>approval</dt><dd>{escape(step.approval)}</dd>")
    if step.become:
        facts.append(f"<dt>become</dt><dd>{escape(step.become)}</dd>")
    parts = [
        f'<section class="step" id="step-{step.number}">',
        f"<h3>{step.number}. {escape(step.host)} · {escape(step.phase)} · <code>{escape(step.step_id)}</code>"
        + (f": {escape(step.title)}" if step.title else "")
        + "</h3>",
        "<dl>",
        *facts,
        "</dl>",
    ]
    if step.command:
        parts += ["<p>Command as run:</p>", f'<pre class="command">{escape(_lines(step.command))}</pre>']
    for excerpt in step.excerpts:
        parts += [
            f"<p>{escape(excerpt_head(excerpt))}:</p>",
            f'<pre class="output {escape(excerpt.stream)}">{escape(excerpt_body(excerpt))}</pre>',
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _lines(text: str) -> str:
    """``text`` with every control character but newlines and tabs shown as an escape."""
    return "\n".join(visible_lines(text))


def _decisions(table_id: str, decisions: tuple[Decision, ...], none: str) -> str:
    if not decisions:
        return f'<p class="muted">{escape(none)}</p>'
    return _table(
        table_id,
        ["When (UTC)", "Subject", "Decision", "By", "Note"],
        [[_time(d.at), escape(d.subject), escape(d.what), escape(d.by), escape(d.note)] for d in decisions],
    )
