"""Reading the run journal — runs, their steps and approvals — without writing a byte.

:class:`JournalReader` opens the store to read only (:class:`~engine.core.store.database.Database`
with ``write=False``: a SQLite file read-only, never created; a PostgreSQL connection read-only
at the server): ``cairn history``, ``cairn show-run``, the TUI and ``cairn resume``'s look at
the run read through it, on a full or read-only disk too. A run whose process is gone still
says ``running`` in the store; it is *shown* as interrupted — exit code 130, its unfinished
steps interrupted — and only a writer records that
(:meth:`engine.core.journal.Journal.reconcile`). Whether its process is gone is said by its
holder's lease or its lock file (:mod:`engine.core.run_liveness`).

A journal of an earlier schema is read as it is, the way this version reads it: a SQLite file
the first release wrote (no ``alembic_version``, no ``trigger_kind`` column, no
``host_outcomes`` or ``holders`` table; its step statuses of version 1 told apart by their
messages) is read without upgrading it; only a writer upgrades it
(:func:`engine.core.store.migrate.ensure_current`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.core.errors import JournalError
from engine.core.model import RunStatus
from engine.core.run_liveness import alive, held_sql, lock_held
from engine.core.store.database import Database
from engine.core.store.location import Location, locate

__all__ = [
    "INTERRUPTED_EXIT",
    "INTERRUPTED_STEP",
    "LAST",
    "ApprovalRecord",
    "JournalReader",
    "RunRecord",
    "StepRecord",
    "default_journal_path",
    "default_location",
    "like_prefix",
    "lock_held",
]

LAST = "last"
"""Stands for the newest run wherever a run id is asked for (``cairn show-run last``)."""
SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a first-release SQLite journal: 1 for its first version; 2: unfinished
steps have their own statuses (not_run, cancelled, interrupted). A store with a recorded schema
revision is of version 2."""
STATES_FROM_WORDS = (
    ("interrupted", "error", "interrupted:"),
    ("cancelled", "error", "cancelled"),
    ("not_run", "error", "not run:"),
    ("not_run", "skipped", "not run:"),
    ("not_run", "not_asked", "not run:"),
)
"""(status now, status in version 1, how its message starts): version 1 told unfinished steps by
their message's first words; version 2 records it as the status."""
INTERRUPTED_STEP = "interrupted: the run stopped before this step finished"
"""The message of a step whose run's process went away while it ran."""
INTERRUPTED_EXIT = 130


def default_location() -> Location:
    """``$CAIRN_JOURNAL`` (a file or a ``postgresql://`` URL), else ``$XDG_STATE_HOME/cairn/journal.db``."""
    return locate(None)


def default_journal_path() -> Path:
    """The default journal *file* (``$CAIRN_JOURNAL`` read as a path, else
    ``$XDG_STATE_HOME/cairn/journal.db``); for callers that only know SQLite — see :func:`default_location`."""
    location = default_location()
    return location.path if location.path is not None else Path(location.url)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A step as the journal holds it."""

    seq: int
    host: str
    phase: str
    step_id: str
    title: str
    status: str
    message: str
    command: str
    rc: int | None
    stdout: str
    stderr: str
    out: Any
    started_at: float | None
    duration: float | None
    approval: str


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A decision on a step."""

    host: str
    phase: str
    step_id: str
    command: str
    approved: bool
    decided_by: str
    note: str
    at: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as the journal holds it; ``steps``/``approvals`` are filled by :meth:`JournalReader.get_run`."""

    id: str
    runbook_id: str
    runbook_path: str
    runbook_sha256: str
    runbook_text: str
    hosts: tuple[str, ...]
    inputs: dict[str, Any]
    started_by: str
    trigger: dict[str, Any]
    dry_run: bool
    last_phase: str
    status: RunStatus
    exit_code: int | None
    outcomes: dict[str, dict[str, str]]
    started_at: float
    finished_at: float | None
    artifacts: str
    steps: tuple[StepRecord, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()


class JournalReader:
    """The journal, read-only: :meth:`list_runs` and :meth:`get_run` (a missing file has no runs).

    ``location``: a :class:`~engine.core.store.location.Location`, a file, a ``postgresql://`` URL,
    or ``None`` for ``$CAIRN_JOURNAL`` or the default file."""

    def __init__(self, location: Location | Path | str | None = None) -> None:
        self.location = locate(location)
        self.db = self._open(self.location)
        try:
            self._learn_schema()
        except BaseException:
            self.db.close()
            raise

    def _open(self, location: Location) -> Database:
        return Database(location, write=False, what="the journal")

    def _learn_schema(self) -> None:
        """What this store has: read once, so a first-release file is read as it is."""
        tables = self.db.tables()
        self._has_runs = "runs" in tables
        columns = self.db.columns("runs") if self._has_runs else set()
        self._has_kind = "trigger_kind" in columns
        self._has_holders = "holder" in columns and "holders" in tables
        self._has_host_outcomes = "host_outcomes" in tables
        self._version = SCHEMA_VERSION
        if self.db.dialect == "sqlite" and "alembic_version" not in tables and self.db.exists:
            self._version = int(self.db.read("PRAGMA user_version")[0][0])

    @property
    def where(self) -> str:
        """The journal as messages name it (a file, or a URL without its password)."""
        return self.db.where

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # ----------------------------------------------------------------- runs

    def list_runs(
        self, *, limit: int = 20, runbook_id: str | None = None, trigger_kind: str | None = None
    ) -> list[RunRecord]:
        """Most recent runs first; ``trigger_kind="alert"``: only those an alert started."""
        where: list[str] = []
        params: list[Any] = []
        if runbook_id:
            where.append("r.runbook_id = ?")
            params.append(runbook_id)
        if trigger_kind:
            # A first-release file has no trigger_kind column; it is SQLite, which reads the JSON.
            where.append("r.trigger_kind = ?" if self._has_kind else "json_extract(r.trigger, '$.kind') = ?")
            params.append(trigger_kind)
        condition = " WHERE " + " AND ".join(where) if where else ""
        rows = self._runs(f"{condition} ORDER BY r.started_at DESC, r.id DESC LIMIT ?", [*params, limit])
        outcomes = self._host_outcomes([row["id"] for row in rows])
        return [self._run(row, outcomes.get(row["id"], {})) for row in rows]

    def get_run(self, run_id: str) -> RunRecord:
        """The run whose id is ``run_id`` or starts with it (``last``: the newest run), with its steps and approvals."""
        row = self._find(run_id)
        steps = tuple(
            self._step(s)
            for s in self.db.read_dicts("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", [row["id"]])
        )
        approvals = tuple(
            ApprovalRecord(
                host=a["host"],
                phase=a["phase"],
                step_id=a["step_id"],
                command=a["command"],
                approved=bool(a["approved"]),
                decided_by=a["decided_by"],
                note=a["note"],
                at=a["at"],
            )
            for a in self.db.read_dicts("SELECT * FROM approvals WHERE run_id = ? ORDER BY seq", [row["id"]])
        )
        outcomes = self._host_outcomes([row["id"]]).get(row["id"], {})
        return self._run(row, outcomes, steps, approvals)

    # ----------------------------------------------------------------- inside

    def _find(self, run_id: str) -> dict[str, Any]:
        """The row of the run ``run_id`` names: itself, the newest (``last``), or the one its id starts with."""
        if run_id == LAST:
            rows = self._runs(" ORDER BY r.started_at DESC, r.id DESC LIMIT 1", [])
            if not rows:
                raise JournalError(f"no run yet in {self.where}; start one with `cairn run ID`")
            return rows[0]
        exact = self._runs(" WHERE r.id = ?", [run_id])  # the key's index, whatever the database's collation
        if exact:
            return exact[0]
        rows = self._runs(" WHERE r.id LIKE ? ESCAPE '\\' ORDER BY r.id LIMIT 6", [like_prefix(run_id)])
        if not rows:
            raise JournalError(f"no run {run_id!r} in {self.where}; `cairn history` lists the runs")
        if len(rows) > 1:
            listed = ", ".join(r["id"] for r in rows[:5])
            raise JournalError(f"run id {run_id!r} is ambiguous: {listed}; give more of it")
        return rows[0]

    def _runs(self, rest: str, params: list[Any]) -> list[dict[str, Any]]:
        """Rows of ``runs r`` (then ``rest``: WHERE, ORDER BY, LIMIT), each with ``held``: whether
        its holder's lease holds (``None``: it has no holder)."""
        if not self._has_runs:
            return []  # no journal yet: no runs
        if self._has_holders:
            held = held_sql(self.db)
            query = f"SELECT r.*, {held} AS held FROM runs r LEFT JOIN holders h ON h.id = r.holder{rest}"  # noqa: S608
        else:
            query = f"SELECT r.*, NULL AS held FROM runs r{rest}"  # noqa: S608 (rest: constants and ?s)
        return self.db.read_dicts(query, params)

    def _host_outcomes(self, run_ids: list[str]) -> dict[str, dict[str, dict[str, str]]]:
        """Each run's hosts' outcomes, from ``host_outcomes`` (a first-release file keeps them in the
        run's row instead)."""
        if not run_ids or not self._has_host_outcomes:
            return {}
        marks = ", ".join("?" * len(run_ids))
        found: dict[str, dict[str, dict[str, str]]] = {}
        for run_id, host, outcome, reason in self.db.read(
            f"SELECT run_id, host, outcome, reason FROM host_outcomes WHERE run_id IN ({marks})",  # noqa: S608
            run_ids,
        ):
            found.setdefault(run_id, {})[host] = {"outcome": outcome, "reason": reason}
        return found

    def _alive(self, row: dict[str, Any]) -> bool:
        """Whether the process running the run of ``row`` is still there."""
        return alive(row["held"], row["artifacts"])

    def _step(self, s: dict[str, Any]) -> StepRecord:
        status = s["status"] if self._version >= 2 else _status_in_version_1(s["status"], s["message"])
        return StepRecord(
            seq=s["seq"],
            host=s["host"],
            phase=s["phase"],
            step_id=s["step_id"],
            title=s["title"],
            status=status,
            message=s["message"],
            command=s["command"],
            rc=s["rc"],
            stdout=s["stdout"],
            stderr=s["stderr"],
            out=json.loads(s["out"]) if s["out"] else None,
            started_at=s["started_at"],
            duration=s["duration"],
            approval=s["approval"],
        )

    def _run(
        self,
        row: dict[str, Any],
        host_outcomes: dict[str, dict[str, str]],
        steps: tuple[StepRecord, ...] = (),
        approvals: tuple[ApprovalRecord, ...] = (),
    ) -> RunRecord:
        status = RunStatus(row["status"])
        exit_code = row["exit_code"]
        if status is RunStatus.RUNNING and not self._alive(row):
            status, exit_code = RunStatus.INTERRUPTED, INTERRUPTED_EXIT  # as reconcile() would record it
            steps = tuple(
                replace(s, status="interrupted", message=INTERRUPTED_STEP) if s.status == "running" else s
                for s in steps
            )
        hosts = tuple(json.loads(row["hosts"]))
        return RunRecord(
            id=row["id"],
            runbook_id=row["runbook_id"],
            runbook_path=row["runbook_path"],
            runbook_sha256=row["runbook_sha256"],
            runbook_text=row["runbook_text"],
            hosts=hosts,
            inputs=json.loads(row["inputs"]),
            started_by=row["started_by"],
            trigger=json.loads(row["trigger"]),
            dry_run=bool(row["dry_run"]),
            last_phase=row["last_phase"],
            status=status,
            exit_code=exit_code,
            outcomes=_outcomes(json.loads(row["outcomes"] or "{}"), host_outcomes, hosts),
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            artifacts=row["artifacts"],
            steps=steps,
            approvals=approvals,
        )


def _outcomes(
    legacy: dict[str, dict[str, str]], rows: dict[str, dict[str, str]], hosts: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """Each host's outcome: the rows over what a first-release run kept in its own row, in the run's
    host order (hosts it does not name after them)."""
    merged = legacy | rows
    order = {host: index for index, host in enumerate(hosts)}
    return dict(sorted(merged.items(), key=lambda item: order.get(item[0], len(order))))


def _status_in_version_1(status: str, message: str) -> str:
    """A step's status as version 2 records it, from a version-1 journal's status and message."""
    for now, then, words in STATES_FROM_WORDS:
        if status == then and message.startswith(words):
            return now
    return status


def like_prefix(prefix: str) -> str:
    """``prefix`` as a LIKE pattern (ESCAPE '\\') that matches it literally, then anything."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
