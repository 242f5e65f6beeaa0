"""Cairn's exceptions: faults in the engine's *inputs*, never a failing step.

A step that exits non-zero, times out or finds the pitfall is a ``StepResult``,
not an exception. Exceptions are for things a human must fix before anything
can run: a bad runbook, inventory, input value, template or journal.

    CairnError
     ├── RunbookInvalid        a runbook file has problems (carries every Problem)
     ├── RunbookNotFound       no runbook with that id in the searched folders
     ├── InputError            an -e value is unknown, missing or of the wrong type
     ├── TemplateError         a template or expression failed to render/evaluate
     ├── InventoryError        the inventory is malformed or a pattern matches nothing
     ├── ExecutorError         a host cannot be reached the way it asks to be
     └── JournalError          the run journal cannot be opened or has no such run
          ├── JournalUnwritable  its file system refuses writes: full, read-only or failing
          │    └── JournalUnreachable  its database server does not answer (PostgreSQL)
          └── LeaseLost            this server's lease lapsed: its work may be another's now

Every error's ``str()`` names the thing and says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a runbook file, located precisely."""

    file: str
    line: int
    column: int
    pointer: str
    """JSON pointer into the document, e.g. ``/detect/0/timeout``; ``""`` is the root."""
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        at = f" [{self.pointer}]" if self.pointer else ""
        return f"{where}:{at} {self.message}"

    def as_warning(self) -> str:
        """The problem as a warning line: ``file:line:col: warning: [pointer] message``."""
        at = f" [{self.pointer}]" if self.pointer else ""
        return f"{self.file}:{self.line}:{self.column}: warning:{at} {self.message}"

    def as_dict(self) -> dict[str, object]:
        """The problem as plain data, for ``--json`` output."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "message": self.message,
        }


class CairnError(Exception):
    """Root of every error Cairn raises on purpose."""


class RunbookInvalid(CairnError):
    """A runbook file failed to load; ``problems`` lists every reason."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        count = "1 problem; fix it" if len(problems) == 1 else f"{len(problems)} problems; fix them"
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{file}: {count} and retry:\n{lines}")


class RunbookNotFound(CairnError):
    """No runbook has the requested id."""

    def __init__(self, runbook_id: str, searched: list[str], known: list[str]) -> None:
        self.runbook_id = runbook_id
        hint = f" Known ids: {', '.join(sorted(known))}." if known else ""
        where = ", ".join(searched) or "(no folders)"
        super().__init__(
            f"no runbook with id {runbook_id!r} in {where}.{hint} "
            "Use `cairn list` to see them, or --runbooks DIR to look elsewhere."
        )


class InputError(CairnError):
    """A runbook input was given a bad value, an unknown name, or none at all."""


class TemplateError(CairnError):
    """A template or expression failed; names the step and field it came from."""

    def __init__(self, message: str, *, step_id: str = "", field: str = "") -> None:
        self.step_id = step_id
        self.field = field
        where = f"step {step_id!r} {field}: " if step_id else (f"{field}: " if field else "")
        super().__init__(f"{where}{message}")


class InventoryError(CairnError):
    """The inventory cannot be read, or a host pattern selects no host."""


class ExecutorError(CairnError):
    """A host cannot be reached: unsupported connection, refused, bad host key …"""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class JournalError(CairnError):
    """The journal cannot be opened or written, or a run id is unknown."""


class JournalUnwritable(JournalError):
    """The journal's file system refuses a write: it is full, read-only, or failing (I/O errors).

    Every write of the journal and of the alert queue in its file says these faults as this one
    error: ``problem`` is what a human reads first (``the journal's disk is full``), ``detail``
    what the system said, ``context`` what it means for the work in hand (which run, what was
    recorded), added by whoever knows it (:meth:`about`).
    """

    def __init__(
        self, problem: str, path: str, detail: str, *, context: str = "", recorded: bool = True
    ) -> None:
        self.problem = problem
        self.path = path
        self.detail = detail
        self.context = context
        self.recorded = recorded
        """False when nothing of the run in hand reached the journal (it did not start)."""
        super().__init__(f"{problem} ({path}: {detail})" + (f"; {context}" if context else ""))

    def about(self, context: str, *, recorded: bool = True) -> JournalUnwritable:
        """The same fault, saying what it means for the work in hand."""
        return type(self)(self.problem, self.path, self.detail, context=context, recorded=recorded)


class JournalUnreachable(JournalUnwritable):
    """The journal's database server cannot be reached (PostgreSQL down, restarting, the network):
    like a full disk, the work waits and goes on once it answers again."""


class LeaseLost(JournalError):
    """This process's lease on its work lapsed (it was paused or cut off longer than the lease):
    another server may have taken the work over, so nothing more of it may start here."""
