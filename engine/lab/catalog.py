"""Which practice labs exist: the lab of each runbook in some folders, bundled or declared beside it.

A runbook's lab is the lab file beside it when there is one (``DIR/ID.lab.yaml``), else
the bundled lab of that id. Among several runbook folders the first runbook of an id
wins, as in the library. ``all`` means the labs of the runbooks Cairn reads (with the
default folders: the bundled runbooks, so the six bundled labs); a bundled lab can
still be named when its runbook is elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.lab import lifecycle
from engine.lab.base import LabDefinition, LabError, LabKind
from engine.lab.labfile import lab_files, lab_files_beside, load_lab, runbook_file_for

if TYPE_CHECKING:
    from engine.core.loader import LoadResult
    from engine.core.model import Runbook


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A lab that can be asked for by name; a declared one whose files have problems carries them."""

    name: str
    kind: LabKind
    source: str = ""
    """The lab file of a declared lab."""
    lab: LabDefinition | None = None
    """A declared lab, checked (bundled ones are imported only when they are built)."""
    problem: str = ""
    """Why a declared lab cannot be built (its lab file or its runbook has problems)."""

    def definition(self) -> LabDefinition:
        """The lab to build; LabError when its files have problems."""
        if self.problem:
            raise LabError(self.problem)
        return self.lab if self.lab is not None else lifecycle.bundled_lab(self.name)

    def summary(self) -> str:
        if self.problem:
            return f"(cannot be built: {self.source} has problems; `cairn validate` lists them)"
        return self.definition().summary


def declared_labs(
    runbook_dirs: Sequence[Path], results: Sequence[LoadResult] = ()
) -> dict[str, CatalogEntry]:
    """The labs declared beside the runbooks under ``runbook_dirs`` (missing folders are skipped), by runbook id.

    ``results``: the runbooks already checked (a library's), so they are not read again.
    """
    from engine.core.loader import check_file  # noqa: PLC0415

    checked = {Path(r.path).resolve(): r for r in results}
    found: dict[str, CatalogEntry] = {}
    for lab_file in lab_files([d for d in runbook_dirs if d.exists()]):
        runbook_file = runbook_file_for(lab_file)
        if runbook_file is None:
            continue  # a lab of no runbook: `cairn validate` says so
        result = checked.get(runbook_file.resolve()) or check_file(runbook_file)
        name = result.declared_id
        if name in found:
            continue
        try:
            lab = load_lab(lab_file, result.runbook)
        except LabError as exc:
            found[name] = CatalogEntry(name, LabKind.DECLARED, str(lab_file), problem=str(exc))
            continue
        found[name] = CatalogEntry(name, LabKind.DECLARED, str(lab_file), lab.definition())
    return found


def catalog(runbook_dirs: Sequence[Path]) -> dict[str, CatalogEntry]:
    """The lab of every runbook in ``runbook_dirs`` that has one: the lab file beside it, else the
    bundled lab of its id."""
    from engine.core.loader import load_library  # noqa: PLC0415

    library = load_library([d for d in runbook_dirs if d.exists()])
    declared = declared_labs(runbook_dirs, library.results)
    every: dict[str, CatalogEntry] = {}
    for result in library.results:
        name = result.declared_id
        if name in every:
            continue
        if name in declared:
            every[name] = declared[name]
        elif name in lifecycle.LABS:
            every[name] = CatalogEntry(name, LabKind.BUNDLED)
    # The bundled runbooks' labs in the registry's order (as the README lists them), then the others.
    order = [n for n in lifecycle.LABS if n in every] + [n for n in every if n not in lifecycle.LABS]
    return {name: every[name] for name in order}


def choose(names: Sequence[str], runbook_dirs: Sequence[Path]) -> list[CatalogEntry]:
    """The labs to start: ``all`` is the lab of every runbook in the folders; a name is the lab of that
    runbook (declared beside it, else bundled, also when its runbook is not in the folders). Each once;
    LabError naming an unknown one before anything starts."""
    if "all" in names:
        return list(catalog(runbook_dirs).values())
    declared = declared_labs(runbook_dirs)  # not every runbook: only those with a lab file are read
    chosen: dict[str, CatalogEntry] = {}
    for name in names:
        if name in declared:
            chosen[name] = declared[name]
        elif name in lifecycle.LABS:
            chosen[name] = CatalogEntry(name, LabKind.BUNDLED)
        else:
            known = [*lifecycle.LABS, *sorted(n for n in declared if n not in lifecycle.LABS)]
            where = ", ".join(str(d) for d in runbook_dirs)
            raise LabError(
                f"no lab named {name!r}; labs: {', '.join(known)} (or all). A runbook of yours gets one from a "
                f"lab file beside it (ID.lab.yaml, see docs/labs.md); runbook folders searched: {where}"
            )
    return list(chosen.values())


def lab_for(runbook: Runbook) -> LabDefinition | None:
    """The lab of a loaded runbook: the lab file beside it, else the bundled lab of its id, else None."""
    beside = lab_files_beside(Path(runbook.source_path)) if runbook.source_path else []
    if beside:
        return load_lab(beside[0], runbook).definition()
    if runbook.id in lifecycle.LABS:
        return lifecycle.bundled_lab(runbook.id)
    return None


def has_lab(runbook: Runbook) -> bool:
    """Whether ``runbook`` has a practice lab (without reading its lab file)."""
    return runbook.id in lifecycle.LABS or bool(
        runbook.source_path and lab_files_beside(Path(runbook.source_path))
    )
