"""An alert-queue entry's decisions as every front end shows them: what its approval needs, how far
the quorum has come, and every attempt, refused ones too, with who made it.

``cairn queue``, ``cairn approve``, ``cairn show-run`` and the TUI's Alerts screen read them here
(:func:`read_decisions`: one query for any number of entries) and give them as JSON here
(:func:`entry_data`, :func:`decisions_data`); the text is :mod:`engine.core.records`'. The queue
itself is :class:`~engine.core.queue_read.QueueReader`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.approval_policy import Attempt, Progress, Requirement
from engine.core.queue_read import ATTEMPT_COLUMNS, Entry, QueueReader, attempt_of
from engine.core.render import as_data

if TYPE_CHECKING:
    from engine.core.journal_read import RunRecord
    from engine.core.store.location import Location


@dataclass(frozen=True, slots=True)
class Decisions:
    """One entry's approval: what it needs (``None`` before it escalated), the quorum so far, and
    every attempt in order, each with the message it was answered with."""

    entry: Entry
    requirement: Requirement | None
    progress: Progress | None
    attempts: tuple[Attempt, ...]


def run_decisions(location: Location, run: RunRecord) -> Decisions | None:
    """The decisions on the queue entry an alert-started run worked on (``None``: none, or pruned since)."""
    from engine.core.errors import JournalError  # noqa: PLC0415

    entry_id = run.trigger.get("queue_entry")
    if run.trigger.get("kind") != "alert" or not isinstance(entry_id, int):
        return None
    queue = QueueReader(location)
    try:
        entry = queue.entry(entry_id)
        return read_decisions(queue, [entry])[entry.id]
    except JournalError:  # pruned since (`cairn journal prune`): the run still shows
        return None
    finally:
        queue.close()


def read_decisions(reader: QueueReader, entries: Iterable[Entry]) -> dict[int, Decisions]:
    """Each entry's :class:`Decisions`, by entry id (all read in one query)."""
    entries = list(entries)
    found: dict[int, list[Attempt]] = {e.id: [] for e in entries}
    if entries and "approval_attempts" in reader.db.tables():
        marks = ", ".join("?" * len(found))
        rows = reader.db.read(
            f"SELECT {ATTEMPT_COLUMNS} FROM approval_attempts"  # noqa: S608 (only ?s)
            f" WHERE entry_id IN ({marks}) ORDER BY id",
            tuple(found),
        )
        for row in rows:
            attempt = attempt_of(row)
            found[attempt.entry_id].append(attempt)
    out = {}
    for entry in entries:
        attempts = tuple(found[entry.id])
        requirement = entry.requirement
        out[entry.id] = Decisions(
            entry,
            requirement,
            requirement.progress(attempts) if requirement is not None else None,
            attempts,
        )
    return out


# ------------------------------------------------------------------ JSON


def progress_data(progress: Progress) -> dict[str, Any]:
    return {"approved": list(progress.approved), "quorum": progress.quorum, "describe": progress.describe()}


def attempt_data(attempt: Attempt) -> dict[str, Any]:
    """One attempt as ``--json`` gives it: ``who`` is the identity's label, ``identity`` all of it."""
    return {
        "at": attempt.at,
        "action": attempt.action.value,
        "outcome": attempt.outcome.value,
        "who": attempt.who.label,
        "identity": attempt.who.as_data(),
        "reason": attempt.reason,
        "message": attempt.message,
    }


def requirement_data(requirement: Requirement | None) -> dict[str, Any] | None:
    return (requirement.as_data() | {"describe": requirement.describe()}) if requirement else None


def decisions_data(decisions: Decisions) -> dict[str, Any]:
    """What the approval needs, the quorum so far and every attempt (``None`` parts stay ``None``)."""
    return {
        "requirement": requirement_data(decisions.requirement),
        "progress": progress_data(decisions.progress) if decisions.progress else None,
        "attempts": [attempt_data(a) for a in decisions.attempts],
    }


def entry_data(entry: Entry, decisions: Decisions | None = None) -> dict[str, Any]:
    """An entry as ``cairn queue --json`` and ``cairn approve --json`` give it: its columns, who asked
    (with the label), what its approval needs, and, given its ``decisions``, the progress and attempts."""
    data: dict[str, Any] = as_data(entry)
    asker = entry.requested_by
    data["requested_by"] = (asker.as_data() | {"label": asker.label}) if asker else None
    data["requirement"] = requirement_data(entry.requirement)
    if decisions is not None:
        data.update(decisions_data(decisions))
    return data
