"""Lab files: ``DIR/ID.lab.yaml`` beside the runbook ``DIR/ID.yaml``, found, read and checked.

A lab file is YAML 1.2 read like a runbook (:mod:`engine.core.yamlsource`), checked against
``engine/core/schema/lab.schema.json`` and then against its runbook (inputs it names must
exist, templates must compile and read only ``lab``, its group must be the one the
runbook targets); every problem has a file, line, column and JSON pointer, as for
runbooks, and ``cairn validate`` lists them. A valid file becomes a
:class:`~engine.lab.declared.DeclaredLab` (this is the only place that reads its dict).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.errors import Problem
from engine.core.loader import LAB_SUFFIXES, PLAYBOOKS, RUNBOOK_SUFFIXES, LoadResult, check_file, unique_files
from engine.core.model import Runbook, parse_duration
from engine.core.schema import SCHEMA_PATH
from engine.core.yamlsource import Document, pointer, read_yaml_file
from engine.lab.base import LabError
from engine.lab.declared import (
    DEFAULT_GROUP,
    READY_TIMEOUT,
    SETUP_TIMEOUT,
    TEARDOWN_TIMEOUT,
    DeclaredLab,
    ProcessSpec,
)

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

    from engine.core.schema import SchemaIssue

LAB_SCHEMA_PATH = SCHEMA_PATH.with_name("lab.schema.json")
LAB_VARIABLES = ("dir", "ports", "healthy", "name")
"""What templates see under ``lab``."""
RESERVED_PROCESS_NAMES = frozenset({"setup", "teardown"})
"""Their logs are the setup's and the teardown's."""
_EMPTY_RUNBOOK = "file is empty: a runbook needs at least id, title, severity, summary and detect"
"""What :mod:`engine.core.yamlsource` says about an empty file; a lab file says it in its own terms."""
_INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLAIN_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LAB_ATTR = re.compile(r"\blab\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?")


@dataclass(frozen=True, slots=True)
class LabFileCheck:
    """One lab file checked: the lab when it is valid, else its problems."""

    path: str
    lab: DeclaredLab | None
    problems: tuple[Problem, ...]
    runbook_id: str
    """The id of the runbook beside it ("" when there is none)."""

    def as_load_result(self) -> LoadResult:
        """For ``cairn validate``, which lists runbook and lab files alike."""
        return LoadResult(self.path, None, self.problems, f"lab {self.runbook_id or _stem(Path(self.path))}")


# --------------------------------------------------------------------------- finding lab files


def is_lab_file(path: Path) -> bool:
    return path.name.endswith(LAB_SUFFIXES)


def _stem(lab_file: Path) -> str:
    name = lab_file.name
    for suffix in LAB_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def lab_files_beside(runbook_file: Path) -> list[Path]:
    """The lab files declared for ``runbook_file`` (``ID.lab.yaml`` first, then ``ID.lab.yml``)."""
    stem = runbook_file.name
    for suffix in RUNBOOK_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return [f for f in (runbook_file.with_name(stem + s) for s in LAB_SUFFIXES) if f.is_file()]


def runbook_file_for(lab_file: Path) -> Path | None:
    """The runbook a lab file is for: ``ID.yaml`` (or ``ID.yml``) beside ``ID.lab.yaml``."""
    stem = _stem(lab_file)
    return next((f for f in (lab_file.with_name(stem + s) for s in RUNBOOK_SUFFIXES) if f.is_file()), None)


def lab_files(paths: Iterable[Path]) -> list[Path]:
    """Lab files named by ``paths``: folders searched recursively, lab files as given, those beside runbook files."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if is_lab_file(p) and p.is_file() and PLAYBOOKS not in p.relative_to(path).parts
                )
            )
        elif is_lab_file(path):
            found.append(path)
        elif path.is_file():
            found.extend(lab_files_beside(path))
    return unique_files(found)


# --------------------------------------------------------------------------- checking


@cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - only when validating

    return Draft202012Validator(json.loads(LAB_SCHEMA_PATH.read_text(encoding="utf-8")))


def _schema_issues(data: Any) -> list[SchemaIssue]:
    # The runbook schema's translation of jsonschema errors into "what to fix" messages.
    from engine.core.schema import translate_error  # noqa: PLC0415

    issues: dict[SchemaIssue, None] = {}
    for error in _validator().iter_errors(data):
        issues.update(dict.fromkeys(translate_error(error)))
    return sorted(issues, key=lambda i: i.pointer)


def check_lab_file(
    path: Path, runbook: Runbook | None, *, runbook_file: Path | None, display: str | None = None
) -> LabFileCheck:
    """Check a lab file against the schema and its runbook (``None``: the runbook is invalid or missing)."""
    doc = read_yaml_file(path, display=display)
    runbook_id = runbook.id if runbook is not None else ""
    if [p.message for p in doc.problems] == [_EMPTY_RUNBOOK]:  # the reader speaks of runbooks
        doc.problems[:] = [
            Problem(doc.file, 1, 1, "", "file is empty: a lab needs at least summary and setup")
        ]
    elif isinstance(doc.data, dict):
        for issue in _schema_issues(doc.data):
            doc.add(issue.pointer, issue.message, key=issue.at_key)
        _check_meaning(doc, doc.data, runbook)
    elif not doc.problems:
        doc.add(
            "", f"a lab file is a mapping of keys (summary, setup, …), but this file holds {_kind(doc.data)}"
        )
    if runbook_file is None:
        stem = _stem(path)
        doc.add(
            "",
            f"no runbook beside this lab file: a lab file is named after its runbook's file ({stem}.yaml or {stem}.yml)",
        )
    elif (
        path.name.endswith(".lab.yml") and path.with_name(path.name.removesuffix(".yml") + ".yaml").is_file()
    ):
        doc.add(
            "",
            f"{path.name.removesuffix('.yml')}.yaml beside it already declares this runbook's lab; keep one",
        )
    problems = tuple(sorted(doc.problems, key=lambda p: (p.line, p.column, p.message)))
    if problems or runbook is None or not isinstance(doc.data, dict):
        return LabFileCheck(doc.file, None, problems, runbook_id)
    return LabFileCheck(doc.file, _build(doc.data, path, runbook), (), runbook_id)


def _check_meaning(doc: Document, data: dict[str, Any], runbook: Runbook | None) -> None:
    """What the schema cannot say: unique process names, templates, inputs and the group against the runbook."""
    seen: set[str] = set()
    processes = data.get("processes")
    for index, process in enumerate(processes if isinstance(processes, list) else []):
        name = process.get("name") if isinstance(process, dict) else None
        if not isinstance(name, str):
            continue
        where = f"/processes/{index}/name"
        if name in RESERVED_PROCESS_NAMES:
            doc.add(where, f"process name {name!r} is taken by the lab's own logs/{name}.log; choose another")
        elif name in seen:
            doc.add(
                where,
                f"process name {name!r} is used twice; each process needs its own (it names logs/{name}.log)",
            )
        seen.add(name)
    listed = data.get("ports")
    ports = [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []
    for key in ("inputs", "hosts", "notes"):
        if key in data:
            _check_templates(doc, data[key], (key,), ports)
    if runbook is None:
        return
    inputs = data.get("inputs")
    declared = [i.name for i in runbook.inputs]
    for name in inputs if isinstance(inputs, dict) else {}:
        if _INPUT_NAME.match(name) and name not in declared:  # an ill-formed name is the schema's
            close = difflib.get_close_matches(name, declared, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f" (declared: {', '.join(declared)})" if declared else " (it declares none)")
            )
            doc.add(
                pointer(("inputs", name)),
                f"the runbook {runbook.id} declares no input {name!r}{hint}",
                key=True,
            )
    group = data.get("group")
    if isinstance(group, str):
        if group in ("all", "ungrouped"):
            doc.add("/group", f"group {group!r} is Ansible's own; name the group the runbook targets")
        elif (needed := _targets_group(runbook.targets)) is not None and group != needed:
            doc.add(
                "/group",
                f"the runbook {runbook.id} targets {runbook.targets!r}: a run on the lab's inventory would "
                f"select no host of group {group!r}; use group: {runbook.targets} (or leave group out)",
            )


def _check_templates(doc: Document, value: Any, path: tuple[str | int, ...], ports: Sequence[str]) -> None:
    from engine.core.expr import check  # noqa: PLC0415 - jinja2 only when a file is checked

    if isinstance(value, dict):
        for key, item in value.items():
            _check_templates(doc, item, (*path, key), ports)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_templates(doc, item, (*path, index), ports)
        return
    if not isinstance(value, str):
        return
    where = pointer(path)
    found = check(value)
    for error in found.errors:
        doc.add(where, f"template {error}")
    for name in sorted(found.names - {"lab"}):
        doc.add(
            where,
            f"template reads {name!r}; lab templates see only lab (lab.dir, lab.ports.<name>, lab.healthy, lab.name)",
        )
    if "lab" not in found.names:
        return
    for attribute, port in _LAB_ATTR.findall(value):
        if attribute not in LAB_VARIABLES:
            close = difflib.get_close_matches(attribute, LAB_VARIABLES, n=1)
            hint = f"; did you mean 'lab.{close[0]}'?" if close else ""
            doc.add(
                where,
                f"template reads lab.{attribute}, which does not exist{hint} (lab has: {', '.join(LAB_VARIABLES)})",
            )
        elif attribute == "ports" and port and port not in ports:
            listed = f" (declared: {', '.join(ports)})" if ports else "; list it under ports"
            doc.add(where, f"template reads lab.ports.{port}, but the lab declares no port {port!r}{listed}")


def _build(data: dict[str, Any], path: Path, runbook: Runbook) -> DeclaredLab:
    """The model of a valid lab file, with every default applied (the only place that reads its dict)."""
    hosts = data.get("hosts")
    return DeclaredLab(
        name=runbook.id,
        path=path.resolve(),
        summary=data["summary"],
        setup=data["setup"],
        setup_timeout=parse_duration(data.get("setup_timeout", SETUP_TIMEOUT)),
        healthy=bool(data.get("healthy", False)),
        requires=tuple(data.get("requires", ())),
        ports=tuple(data.get("ports", ())),
        processes=tuple(
            ProcessSpec(
                p["name"], p["run"], p.get("ready", ""), parse_duration(p.get("ready_timeout", READY_TIMEOUT))
            )
            for p in data.get("processes", ())
        ),
        teardown=data.get("teardown", ""),
        teardown_timeout=parse_duration(data.get("teardown_timeout", TEARDOWN_TIMEOUT)),
        group=data.get("group", _default_group(runbook.targets)),
        hosts={h: dict(v or {}) for h, v in hosts.items()} if hosts is not None else None,
        inputs=dict(data.get("inputs", {})),
        notes=tuple(data.get("notes", ())),
    )


def load_lab(lab_file: Path, runbook: Runbook | None = None) -> DeclaredLab:
    """The lab ``lab_file`` declares (its runbook read from beside it unless given); LabError with every problem."""
    runbook_file = runbook_file_for(lab_file)
    if runbook is None and runbook_file is not None:
        result = check_file(runbook_file)
        if result.runbook is None:
            raise LabError(
                f"the runbook beside the lab file {lab_file} has problems; fix them and retry:\n"
                + "\n".join(f"  {p}" for p in result.problems)
            )
        runbook = result.runbook
    checked = check_lab_file(lab_file, runbook, runbook_file=runbook_file)
    if checked.lab is None:
        count = (
            "1 problem; fix it"
            if len(checked.problems) == 1
            else f"{len(checked.problems)} problems; fix them"
        )
        raise LabError(
            f"{checked.path}: {count} and retry:\n" + "\n".join(f"  {p}" for p in checked.problems)
        )
    return checked.lab


def validate_lab_files(paths: Iterable[Path], results: Sequence[LoadResult]) -> list[LoadResult]:
    """``cairn validate``: the lab files under or beside ``paths``, each against its runbook in ``results``."""
    by_file = {Path(r.path).resolve(): r for r in results}
    checked = []
    for lab_file in lab_files(paths):
        runbook_file = runbook_file_for(lab_file)
        runbook = None
        if runbook_file is not None:
            result = by_file.get(runbook_file.resolve()) or check_file(runbook_file)
            runbook = result.runbook
        checked.append(check_lab_file(lab_file, runbook, runbook_file=runbook_file).as_load_result())
    return checked


# --------------------------------------------------------------------------- helpers


def _targets_group(targets: str) -> str | None:
    """The group a runbook's ``targets`` names when it is a plain group name (not Ansible's ``all``)."""
    return targets if _PLAIN_GROUP.match(targets) and targets not in ("all", "ungrouped") else None


def _default_group(targets: str) -> str:
    return _targets_group(targets) or DEFAULT_GROUP


def _kind(value: Any) -> str:
    return {
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
