"""Text and data views of runbooks, plans, reports and journal records.

Pure functions returning strings or JSON-ready data; the CLI prints them, the
TUI and ``cairn docs`` reuse them. No I/O here.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from engine.model import InputType, Phase, Runbook, RunReport, Step, StepKind, StepResult, format_duration

if TYPE_CHECKING:
    from engine.alert_queue import Entry
    from engine.journal import RunRecord
    from engine.loader import LoadResult
    from engine.plan import HostPlan
    from engine.preflight import Preflight

STATUS_MARK = {
    "ok": "ok",
    "finding": "FINDING",
    "error": "ERROR",
    "timeout": "TIMEOUT",
    "skipped": "skipped",
    "declined": "declined",
    "not_asked": "not asked",
    "running": "running",
}


def as_data(value: Any) -> Any:
    """Dataclasses, enums and tuples -> JSON-ready dicts, strings and lists."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): as_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(v) for v in value]
    return value


def when(ts: float | None) -> str:
    """Local time of a timestamp, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of ``text`` prefixed."""
    return "\n".join(prefix + line for line in text.splitlines())


_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+(?=\S)")
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")
_TABLE_DELIMITER = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)+\|?[ \t]*")
_LINE_ON_ITS_OWN = re.compile(r" {0,3}(?:#{1,6}(?:\s|$)|>|\||(?:([-*_])[ \t]*)(?:\1[ \t]*){2,}$)")
"""A heading, a quote, a table row with its leading pipe, a rule (``---``): never joined to a neighbour."""


def _columns(line: str) -> int:
    """How far a line is indented, a tab counting as 4 columns."""
    stripped = line.lstrip(" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(4))


def reflow(text: str) -> str:
    """Runbook prose with each paragraph and list item on one line, for a screen that wraps at its own width.

    ``why``, ``summary``, ``cause``, ``tradeoff`` and the like are YAML block scalars that keep the
    author's line breaks; wrapped again at a narrower width they leave ragged, half-empty lines.
    The lines of a paragraph (or of a list item) are joined with single spaces; blank lines stay
    as paragraph breaks (one between two blocks); list items (``- ``, ``* ``, ``1. ``), fenced
    (```` ``` ````, ``~~~``) and indented code (4 columns past the text it belongs to), table rows,
    headings, quotes and rules are kept line by line, as written. Valid Markdown stays valid.
    """
    out: list[str] = []
    block: list[str] = []
    """The paragraph or list item being joined: its first line as written (indent, marker), then words."""
    item_text: int | None = None
    """Where the text of the list item we are in starts (its continuation lines' indent); None: no list."""
    fence = ""
    table = False

    def close() -> None:
        if block:
            out.append(" ".join(block))
            block.clear()

    for raw in text.splitlines():
        line = raw.rstrip()
        if fence:
            out.append(line)
            closing = _FENCE.fullmatch(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                fence = ""
            continue
        if not line:
            close()
            table = False
            if out and out[-1]:
                out.append("")
            continue
        depth = _columns(line)
        if item_text is not None and depth < item_text and not _LIST_ITEM.match(line) and not block:
            item_text = None  # a block after a blank line, less indented than the item: the list ended
        code_from = (item_text if item_text is not None and depth >= item_text else 0) + 4
        table = table and "|" in line
        opening = _FENCE.match(line)
        if opening:
            close()
            fence = opening.group(1)
            out.append(line)
        elif _TABLE_DELIMITER.fullmatch(line) and block and "|" in block[-1]:
            header = block.pop()  # the header row of a table without leading pipes
            close()
            out += [header, line]
            table = True
        elif table:
            out.append(line)
        elif depth >= code_from or _LINE_ON_ITS_OWN.match(line):  # code; a heading, quote, table row, rule
            close()
            out.append(line)
        elif item := _LIST_ITEM.match(line):
            close()
            block.append(line)
            item_text = len(item.group(0).expandtabs(4))
        elif block:
            block.append(line.strip())
        else:
            block.append(line)
    close()
    return "\n".join(out).strip("\n")


# --------------------------------------------------------------------------- validation


def problems_text(results: Iterable[LoadResult]) -> tuple[str, int, int]:
    """(report, files with problems, problem count) for ``cairn validate``."""
    lines: list[str] = []
    bad = count = 0
    for result in results:
        if result.problems:
            bad += 1
            count += len(result.problems)
            lines.extend(str(p) for p in result.problems)
        else:
            lines.append(f"{result.path}: ok ({result.declared_id})")
    return "\n".join(lines), bad, count


# --------------------------------------------------------------------------- knowledge


def knowledge_markdown(runbook: Runbook, *, brief: bool = False) -> str:
    """The runbook's knowledge and steps as Markdown: training material.

    ``brief``: only what the pitfall is and how it looks (title, summary, symptoms).
    """
    out = [f"# {runbook.title}", "", knowledge_meta(runbook), "", runbook.summary.strip(), ""]
    if runbook.symptoms:
        out += ["## Symptoms", "", *symptom_lines(runbook), ""]
    if brief:
        return "\n".join(out).rstrip() + "\n"
    if runbook.cause:
        out += ["## Cause", "", runbook.cause.strip(), ""]
    for phase in (Phase.DETECT, Phase.DIAGNOSE, Phase.REMEDIATE):
        steps = runbook.steps(phase)
        if steps:
            out += [f"## {phase.value.capitalize()}", ""]
            out += [_step_markdown(i, s) for i, s in enumerate(steps, 1)]
    out += ["## Verify", ""]
    if runbook.verify_is_detect:
        out += [VERIFY_IS_DETECT, ""]
    else:
        out += [_step_markdown(i, s) for i, s in enumerate(runbook.verify, 1)]
    if runbook.inputs:
        out += ["## Inputs", "", *input_lines(runbook), ""]
    if runbook.triggers:
        out += ["## Alerts that start it", "", *trigger_lines(runbook), ""]
    if runbook.references:
        out += ["## References", "", *reference_lines(runbook), ""]
    return "\n".join(out).rstrip() + "\n"


VERIFY_IS_DETECT = "Re-runs the detect steps; the remediation counts only when they come back clean."


def knowledge_meta(runbook: Runbook, tag: Callable[[str], str] = str) -> str:
    """The line under a runbook's title: id, severity, tags (each through ``tag``), targets."""
    meta = f"**id** `{runbook.id}` · **severity** {runbook.severity.value}"
    if runbook.tags:
        meta += " · **tags** " + ", ".join(tag(t) for t in runbook.tags)
    if runbook.targets != "all":
        meta += f" · **targets** `{runbook.targets}`"
    return meta


def symptom_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per symptom."""
    return [f"- {s.strip()}" for s in runbook.symptoms]


def input_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per input: name, type, default as an author writes it, choices, description."""
    lines = []
    for spec in runbook.inputs:
        shown = spec.default
        if spec.type is InputType.DURATION and isinstance(shown, int | float):
            shown = duration_text(shown)
        elif isinstance(shown, bool):
            shown = "true" if shown else "false"
        default = "" if not spec.has_default else f" (default `{shown}`)"
        if spec.choices:
            default += " (one of " + ", ".join(f"`{c}`" for c in spec.choices) + ")"
        secret = " — secret" if spec.secret else ""
        description = spec.description.strip().replace("\n", "\n  ")
        lines.append(f"- `{spec.name}` *{spec.type.value}*{default}{secret}: {description}".rstrip(": "))
    return lines


def duration_text(seconds: float) -> str:
    """``30s``, ``2m``, ``1h30m``, ``7d``, ``500ms``: a duration as a runbook author writes it."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def trigger_lines(runbook: Runbook) -> list[str]:
    """One Markdown list item per alert trigger: its matchers and target."""
    return [f"- `{', '.join(t.matchers)}` → target `{t.target}`" for t in runbook.triggers]


def reference_lines(runbook: Runbook) -> list[str]:
    """One Markdown link per reference."""
    return [f"- [{r.title}]({r.url})" for r in runbook.references]


def _step_markdown(number: int, step: Step) -> str:
    automatic = ", *automatic* when an alert starts the run and the policy allows" if step.automatic else ""
    lines = [f"{number}. **{step.title}** (`{step.id}`, {step.kind.value}{automatic})"]
    if step.why:  # its own paragraph: not run on from the title line
        lines += ["", indent(step.why.strip(), "   ")]
    if step.kind is StepKind.RUN:
        lines += ["", "   ```sh", indent(step.run.strip(), "   "), "   ```"]
    elif step.kind is StepKind.MANUAL:
        lines += ["", indent(step.instructions.strip(), "   > ")]
    if step.tradeoff:
        lines += ["", indent(f"*Trade-off:* {step.tradeoff.strip()}", "   ")]
    return "\n".join(lines) + "\n"


def list_text(runbooks: list[Runbook], invalid: list[LoadResult]) -> str:
    """``cairn list`` as text."""
    rows = [[rb.id, rb.severity.value, rb.title, ", ".join(rb.tags)] for rb in runbooks]
    text = table(rows, ["ID", "SEVERITY", "TITLE", "TAGS"]) if rows else "no valid runbooks"
    for result in invalid:
        n = len(result.problems)
        text += (
            f"\nINVALID {result.path}: {n} problem{'s' if n != 1 else ''}; see `cairn validate {result.path}`"
        )
    return text


def runbook_summary(runbook: Runbook) -> dict[str, Any]:
    """A runbook's identity for ``cairn list --json``."""
    return {
        "id": runbook.id,
        "title": runbook.title,
        "severity": runbook.severity.value,
        "tags": list(runbook.tags),
        "path": runbook.source_path,
        "steps": {p.value: [s.id for s in runbook.steps(p)] for p in Phase},
    }


# --------------------------------------------------------------------------- plan


def plan_text(
    runbook: Runbook, plans: list[HostPlan], preflights: Mapping[str, Preflight] | None = None
) -> str:
    """``cairn plan`` as text (with each host's preflight when it was checked)."""
    noun = "host" if len(plans) == 1 else "hosts"
    probe = " but the preflight probe" if preflights else ""
    out = [f"Plan for {runbook.id} on {len(plans)} {noun} — nothing is run{probe}"]
    for host_plan in plans:
        out.append(f"\n{host_plan.host.name} (connection: {host_plan.host.connection})")
        preflight = (preflights or {}).get(host_plan.host.name)
        if preflight is not None:
            mark = "" if preflight.ok else "PROBLEM: "
            out.append(f"  preflight: {mark}{preflight.summary(runbook)}")
        phase: Phase | None = None
        for planned in host_plan.steps:
            if planned.phase is not phase:
                phase = planned.phase
                suffix = " (re-runs detect)" if phase is Phase.VERIFY and runbook.verify_is_detect else ""
                out.append(f"  {phase.value}{suffix}")
            notes = []
            if planned.step.confirm or planned.step.kind is StepKind.MANUAL:
                notes.append("needs approval" if planned.step.kind is not StepKind.MANUAL else "manual")
            if planned.condition == "skip":
                notes.append(f"skipped: when is false ({planned.step.when})")
            elif planned.condition:
                notes.append(f"only if: {planned.step.when}")
            note = f"  [{'; '.join(notes)}]" if notes else ""
            out.append(f"    {planned.step.id}: {planned.step.title}{note}")
            if planned.error:
                out.append(f"      ! cannot render: {planned.error}")
            elif planned.deferred:
                out.append(f"      (rendered at run time: {planned.deferred})")
                out.append(indent(planned.text.strip(), "      | "))
            elif planned.step.kind is StepKind.MANUAL:
                out.append(indent(planned.text.strip(), "      > "))
            else:
                out.append(indent(planned.text.strip(), "      $ "))
    return "\n".join(out)


def plan_data(
    runbook: Runbook, plans: list[HostPlan], preflights: Mapping[str, Preflight] | None = None
) -> dict[str, Any]:
    """``cairn plan --json``."""
    return {
        "runbook": runbook.id,
        "hosts": [
            {
                "host": p.host.name,
                "connection": p.host.connection,
                "preflight": _preflight_data(runbook, (preflights or {}).get(p.host.name)),
                "steps": [
                    {
                        "phase": s.phase.value,
                        "id": s.step.id,
                        "title": s.step.title,
                        "kind": s.step.kind.value,
                        "text": s.text,
                        "deferred": s.deferred,
                        "condition": s.condition,
                        "confirm": s.step.confirm or s.step.kind is StepKind.MANUAL,
                        "timeout": s.step.timeout,
                        "error": s.error,
                    }
                    for s in p.steps
                ],
            }
            for p in plans
        ],
    }


def _preflight_data(runbook: Runbook, preflight: Preflight | None) -> dict[str, Any] | None:
    if preflight is None:
        return None
    return {
        "ok": preflight.ok,
        "summary": preflight.summary(runbook),
        "found": dict(preflight.found),
        "missing": list(preflight.missing),
        "error": preflight.error or None,
        "blocked_steps": {
            step.id: preflight.lacking(step)
            for phase in Phase
            for step in runbook.steps(phase)
            if preflight.lacking(step)
        },
    }


# --------------------------------------------------------------------------- runs


STEP_ID_WIDTH = 24
"""The step id column's usual width; a runbook with longer ids widens it (up to 64, the longest allowed)."""


def step_id_width(step_ids: Iterable[str]) -> int:
    """The width of the step id column that keeps every row of these steps in line."""
    return max([STEP_ID_WIDTH, *(len(s) for s in step_ids)])


def runbook_step_width(runbook: Runbook) -> int:
    """:func:`step_id_width` over every step of ``runbook``."""
    return step_id_width(s.id for phase in Phase for s in runbook.steps(phase))


def step_line(result: StepResult, width: int = STEP_ID_WIDTH) -> str:
    """One line for a finished step: id, status, time, message; columns in line for ids up to ``width``."""
    mark = STATUS_MARK.get(result.status.value, result.status.value)
    took = format_duration(result.duration) if result.duration else ""
    message = result.message.splitlines()[0] if result.message else ""
    return f"{result.step_id:<{width}} {mark:<9} {took:>6}  {message}".rstrip()


def summary_rows(report: RunReport) -> list[dict[str, Any]]:
    """Per host: the last phase it reached, what the run concluded, and its steps counted by status."""
    rows = []
    for h in report.hosts:
        counts: dict[str, int] = {}
        for r in h.results:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        reached = h.results[-1].phase.value if h.results else "connect"
        rows.append(
            {
                "host": h.host,
                "phase": reached,
                "outcome": h.outcome.value,
                "reason": h.reason,
                "steps": counts,
            }
        )
    return rows


def summary_text(report: RunReport) -> str:
    """The end-of-run table: host, the phase it reached, outcome, steps, reason; then the totals."""
    rows = summary_rows(report)
    if not rows:
        return "no host was run" + ("\nthe run was interrupted" if report.interrupted else "")
    text = table(
        [
            [
                r["host"],
                r["phase"],
                r["outcome"],
                " ".join(f"{n} {STATUS_MARK.get(s, s).lower()}" for s, n in r["steps"].items()),
                r["reason"],
            ]
            for r in rows
        ],
        ["HOST", "PHASE", "OUTCOME", "STEPS", "REASON"],
    )
    if len(rows) > 1:
        totals: dict[str, int] = {}
        for r in rows:
            totals[r["outcome"]] = totals.get(r["outcome"], 0) + 1
        text += f"\n{len(rows)} hosts: " + ", ".join(f"{n} {o}" for o, n in sorted(totals.items()))
    if report.interrupted:
        text += "\nthe run was interrupted"
    return text


def inventory_text(rows: list[dict[str, Any]]) -> str:
    """``cairn inventory`` as a table: host, how it is reached, its groups."""
    return (
        table(
            [[r["host"], r["reached_by"], ", ".join(r["groups"]) or "-"] for r in rows],
            ["HOST", "REACHED BY", "GROUPS"],
        )
        + f"\n{len(rows)} host{'s' if len(rows) != 1 else ''}"
    )


def history_text(runs: list[RunRecord]) -> str:
    """``cairn history`` as text."""
    if not runs:
        return "no runs yet; start one with `cairn run ID`"
    rows = []
    for run in runs:
        outcomes = ", ".join(sorted({o["outcome"] for o in run.outcomes.values()})) or "-"
        status = run.status.value + (" (dry run)" if run.dry_run else "")
        rows.append(
            [
                run.id,
                when(run.started_at),
                run.runbook_id,
                _hosts(run.hosts),
                status,
                outcomes,
                started_by_text(run),
            ]
        )
    return table(rows, ["RUN", "STARTED", "RUNBOOK", "TARGETS", "STATUS", "OUTCOME", "STARTED BY"])


def _hosts(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts) if len(hosts) <= 3 else f"{', '.join(hosts[:2])} +{len(hosts) - 2}"


def started_by_text(run: RunRecord) -> str:
    """Who or what started a run: ``alice@host``, ``tui: tui:alice``, ``alert KubeNodeNotReady node=n1``."""
    kind = run.trigger.get("kind", "cli")
    alert = run.trigger.get("alert")
    if kind == "alert" and isinstance(alert, dict) and alert.get("labels"):
        return f"alert {alert_summary(alert)}"
    return run.started_by if kind == "cli" else f"{kind}: {run.started_by}"


def alert_summary(alert: dict[str, Any]) -> str:
    """An alert in one line: its name, then its other labels (``KubeNodeNotReady node=n1``)."""
    labels = dict(alert.get("labels") or {})
    name = str(labels.pop("alertname", "")) or "(no alertname)"
    rest = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{name} {rest}".strip()


def queue_text(entries: list[Entry], *, waiting_only: bool) -> str:
    """``cairn queue`` as text: what waits for a human first, with why."""
    if not entries:
        return (
            "nothing waits for a human, nothing is queued or running"
            if waiting_only
            else "the alert queue is empty: `cairn serve` fills it from Alertmanager webhooks"
        )
    order = {"escalated": 0, "queued": 1, "running": 2}
    rows = [
        [
            e.run_id or "-",
            e.state.value.upper() if e.state.value == "escalated" else e.state.value,
            when(e.received_at),
            e.runbook_id,
            e.target,
            alert_summary(e.alert),
        ]
        for e in sorted(entries, key=lambda e: (order.get(e.state.value, 3), e.id))
    ]
    text = table(rows, ["RUN", "STATE", "RECEIVED", "RUNBOOK", "TARGET", "ALERT"])
    notes = [f"  {e.run_id or f'entry {e.id}'}: {e.note}" for e in entries if e.note]
    waiting = [e for e in entries if e.state.value == "escalated"]
    hint = (
        [
            "",
            f"{len(waiting)} waiting for a human: `cairn show-run RUN` to see what the run found, "
            "then `cairn approve RUN` or `cairn decline RUN --reason …`",
        ]
        if waiting
        else []
    )
    return "\n".join([text, *(["", "why:", *notes] if notes else []), *hint])


def run_text(run: RunRecord, *, full_output: bool = False) -> str:
    """``cairn show-run`` as text."""
    out = [
        f"run {run.id}: {run.runbook_id} — {run.status.value}"
        + (f", exit {run.exit_code}" if run.exit_code is not None else ""),
        f"  started   {when(run.started_at)} by {started_by_text(run)}",
        f"  finished  {when(run.finished_at)}",
        f"  targets   {', '.join(run.hosts)}",
        f"  inputs    {', '.join(f'{k}={v}' for k, v in run.inputs.items()) or '-'}",
        f"  runbook   {run.runbook_path} (sha256 {run.runbook_sha256[:12]})",
        f"  artifacts {run.artifacts}",
    ]
    alert = run.trigger.get("alert") if run.trigger.get("kind") == "alert" else None
    if alert:
        out.append(
            f"  alert     {alert.get('status', '?')} since {alert.get('startsAt') or '-'} "
            f"(fingerprint {alert.get('fingerprint') or '-'})"
        )
        for key, value in sorted((alert.get("annotations") or {}).items()):
            out.append(f"            {key}: {value}")
        for key in ("approved_by", "resumes"):
            if run.trigger.get(key):
                out.append(f"  {key.replace('_', ' '):<9} {run.trigger[key]}")
    if run.dry_run:
        out.append("  dry run: remediation was not executed")
    for name, outcome in run.outcomes.items():
        out.append(f"  {name}: {outcome['outcome']} — {outcome['reason']}")
    host: str | None = None
    phase: str | None = None
    width = step_id_width(s.step_id for s in run.steps)
    for step in run.steps:
        if step.host != host:
            host, phase = step.host, None
            out.append(f"\n{host}")
        if step.phase != phase:
            phase = step.phase
            out.append(f"  {phase}")
        mark = STATUS_MARK.get(step.status, step.status)
        took = format_duration(step.duration) if step.duration else ""
        rc = f" rc={step.rc}" if step.rc is not None else ""
        out.append(f"    {step.step_id:<{width}} {mark:<9} {took:>6}{rc}  {step.message}".rstrip())
        if step.command:
            out.append(indent(step.command.strip(), "      $ "))
        if step.approval:
            out.append(f"      approval: {step.approval}")
        for name, text in (("stdout", step.stdout), ("stderr", step.stderr)):
            if text.strip():
                shown = text if full_output else _tail(text, 10)
                out.append(f"      {name}:")
                out.append(indent(shown.rstrip(), "        "))
    if run.approvals:
        out.append("\napprovals")
        for a in run.approvals:
            verdict = "approved" if a.approved else "declined"
            note = f" — {a.note}" if a.note else ""
            out.append(f"  {when(a.at)} {a.host} {a.phase}/{a.step_id}: {verdict} by {a.decided_by}{note}")
    return "\n".join(out)


def _tail(text: str, lines: int) -> str:
    all_lines = text.rstrip().splitlines()
    if len(all_lines) <= lines:
        return text
    return f"[… {len(all_lines) - lines} earlier lines; --output shows all …]\n" + "\n".join(
        all_lines[-lines:]
    )
