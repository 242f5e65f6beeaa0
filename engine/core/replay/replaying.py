"""``cairn replay``: another version of a runbook against a journaled run, and what it decides differently.

The run is turned into a case in memory (:mod:`engine.core.replay.record`: its answers, its
decisions, its run id and inputs), the given runbook is played against it, and what it
concludes is compared with what the run concluded, step by step and host by host:
findings and outcomes that changed, remediations that would now run or no longer run,
and steps the new version runs that the recording has no output for — shown as such,
never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.journal_read import RunRecord
from engine.core.model import Runbook
from engine.core.replay.case import case_from_data
from engine.core.replay.compare import Change, changes, observed
from engine.core.replay.play import play
from engine.core.replay.record import VarsOf, case_from_run
from engine.core.replay.suite import manual_keys


@dataclass(frozen=True, slots=True)
class Replayed:
    """A recorded run replayed against a runbook."""

    run_id: str
    runbook_id: str
    same_text: bool
    """Whether the runbook replayed is the text the run used."""
    hosts: tuple[str, ...]
    changes: tuple[Change, ...]
    exit_before: int | None
    exit_after: int

    def text(self) -> str:
        """What a person reads: per host, what changed; or that nothing did."""
        version = "the same runbook text it ran" if self.same_text else "another version of the runbook"
        lines = [f"run {self.run_id} ({self.runbook_id}) replayed against {version}"]
        if not self.changes:
            lines.append(
                f"same decisions on every host ({', '.join(self.hosts)}); exit code {self.exit_after}"
            )
            return "\n".join(lines)
        for host in self.hosts:
            mine = [c for c in self.changes if c.host == host]
            lines.append(f"\n{host}:" + ("" if mine else " same decisions"))
            lines.extend(_host_lines(mine))
        if self.exit_before != self.exit_after:
            lines.append(f"\nexit code: {self.exit_before} → {self.exit_after}")
        hosts = len({c.host for c in self.changes})
        lines.append(
            f"\ndifferent decisions on {hosts} of {len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "runbook_id": self.runbook_id,
            "same_text": self.same_text,
            "same": not self.changes,
            "exit_before": self.exit_before,
            "exit_after": self.exit_after,
            "changes": [c.as_dict() for c in self.changes],
        }


def _host_lines(mine: list[Change]) -> list[str]:
    """One line per change; the steps no longer reached together in one."""
    lines = [f"  {c.text}" for c in mine if c.what != "unreached"]
    gone = [c.key for c in mine if c.what == "unreached"]
    if gone:
        lines.append(f"  no longer reached: {', '.join(gone)}")
    return lines


def replay_run(record: RunRecord, runbook: Runbook, *, vars_of: VarsOf | None = None) -> Replayed:
    """Replay ``record`` against ``runbook``; :class:`~engine.core.errors.CairnError` when it cannot be
    (not finished, another runbook, inputs the new version refuses)."""
    from engine.core.errors import CairnError  # noqa: PLC0415

    if runbook.id != record.runbook_id:
        raise CairnError(f"it ran runbook {record.runbook_id!r}, not {runbook.id!r}")
    data = case_from_run(record, vars_of=vars_of)
    case = case_from_data(data, f"<run {record.id}>")
    played = play(case, runbook)
    got = observed(played.report, played.decided, manual_keys(runbook))
    found = changes(case.expect, got, played.unrecorded)
    return Replayed(
        run_id=record.id,
        runbook_id=record.runbook_id,
        same_text=runbook.source_text == record.runbook_text,
        hosts=record.hosts,
        changes=tuple(found),
        exit_before=record.exit_code,
        exit_after=played.report.exit_code,
    )
