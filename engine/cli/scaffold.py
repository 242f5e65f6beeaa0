"""``cairn new`` and ``cairn schema --write``: a runbook to start from, and editor support in any folder.

A new runbook is written with every phase and comments that teach the format;
it is valid as written (``cairn validate`` passes) and runs anywhere (it checks
how full a file system is), so a newcomer can run it before changing a line.
Its first line names the schema for editors (the ``yaml-language-server``
modeline): the repository's copy when the folder is the repository's
``runbooks/``, else a copy written beside it (``runbook.schema.json``), which
``cairn schema --write DIR`` refreshes after an upgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import CairnError
from engine.core.schema import SCHEMA_PATH

RUNBOOK_SCHEMA = "runbook.schema.json"
LAB_SCHEMA = "lab.schema.json"
CASE_SCHEMA = "case.schema.json"
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class Written:
    """What ``cairn new`` wrote."""

    runbook: Path
    schemas: tuple[Path, ...]
    modeline: str
    lab: Path | None = None


def schema_files() -> dict[str, Path]:
    """The JSON Schemas Cairn ships, by the file name they are written under."""
    files = {RUNBOOK_SCHEMA: SCHEMA_PATH}
    for name in (LAB_SCHEMA, CASE_SCHEMA):
        shipped = SCHEMA_PATH.with_name(name)
        if shipped.is_file():
            files[name] = shipped
    return files


def case_modeline(case_file: Path) -> str:
    """The modeline a test case written to ``case_file`` (in ``DIR/ID.tests/``) should carry: the
    repository's schema from its ``runbooks/``, a copy in ``DIR`` (``cairn schema --write DIR``), or none."""
    runbooks = case_file.resolve().parent.parent
    shipped = runbooks.parent / "engine" / "core" / "schema" / CASE_SCHEMA
    if shipped.is_file() and shipped.resolve() == SCHEMA_PATH.with_name(CASE_SCHEMA).resolve():
        return f"# yaml-language-server: $schema=../../engine/core/schema/{CASE_SCHEMA}"
    if (runbooks / CASE_SCHEMA).is_file():
        return f"# yaml-language-server: $schema=../{CASE_SCHEMA}"
    return ""


def write_schemas(folder: Path) -> list[Path]:
    """Copy the schemas into ``folder`` (created), so a modeline ``$schema=runbook.schema.json`` works there."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in schema_files().items():
        target = folder / name
        target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        written.append(target)
    return written


def modeline_for(folder: Path) -> tuple[str, bool]:
    """The schema reference a runbook in ``folder`` should name, and whether a copy must be written there.

    The repository's ``runbooks/`` names ``../engine/core/schema/runbook.schema.json`` (kept current by the
    checkout); anywhere else a copy beside the runbook is the one path that always resolves.
    """
    shipped = folder.resolve().parent / "engine" / "core" / "schema" / RUNBOOK_SCHEMA
    if shipped.is_file() and shipped.resolve() == SCHEMA_PATH.resolve():
        return f"../engine/core/schema/{RUNBOOK_SCHEMA}", False
    return RUNBOOK_SCHEMA, True


def new_runbook(runbook_id: str, folder: Path, *, force: bool = False, lab: bool = False) -> Written:
    """Write ``folder/ID.yaml`` from the skeleton (and the schemas beside it when needed); ``lab``: also
    ``folder/ID.lab.yaml``, a practice lab for it (docs/labs.md)."""
    if not _ID.match(runbook_id) or len(runbook_id) > 64:
        raise CairnError(
            f"{runbook_id!r} is not a runbook id: use kebab-case, lower-case letters, digits and '-' "
            "(e.g. disk-almost-full), at most 64 characters"
        )
    path = folder / f"{runbook_id}.yaml"
    lab_path = folder / f"{runbook_id}.lab.yaml"
    for target in (path, lab_path) if lab else (path,):
        if target.exists() and not force:
            raise CairnError(f"{target} already exists; choose another id, or --force to overwrite it")
    reference, copy = modeline_for(folder)
    folder.mkdir(parents=True, exist_ok=True)
    schemas = tuple(write_schemas(folder)) if copy else ()
    path.write_text(runbook_skeleton(runbook_id, reference), encoding="utf-8")
    if lab:
        lab_reference = reference.replace(RUNBOOK_SCHEMA, LAB_SCHEMA)
        lab_path.write_text(lab_skeleton(runbook_id, lab_reference), encoding="utf-8")
    return Written(path, schemas, f"# yaml-language-server: $schema={reference}", lab_path if lab else None)


def lab_skeleton(runbook_id: str, schema_reference: str = LAB_SCHEMA) -> str:
    """A practice lab for the skeleton runbook of ``runbook_id``: valid, and it reproduces "too full"."""
    return f"""\
# yaml-language-server: $schema={schema_reference}
# The practice lab of {runbook_id}.yaml (beside it), written by `cairn new {runbook_id} --lab`:
# `cairn lab up {runbook_id}` builds it, `cairn lab down` removes it; ./scripts/try path/to/{runbook_id}.yaml
# runs the runbook on it. Every key is explained in docs/labs.md.
summary: "TODO: what the lab reproduces, in one line (here: a file system over the runbook's limit)"
healthy: true  # the setup handles LAB_HEALTHY=1: the same lab without the pitfall (detect finds nothing)
requires: [df]  # programs the lab needs on this machine: checked before anything starts
setup: |
  # Runs once in the lab's own folder ($LAB_DIR) with bash -euo pipefail. Build the pitfall here and
  # only here. TODO: reproduce yours; this one makes a folder for df, and the inputs below set the
  # limit so that any file system is "too full" (0 %) — or not, in the healthy variant (100 %).
  mkdir -p data
  echo "lab {runbook_id}: data/ is on a file system $(df --output=pcent data | tail -n1 | tr -d ' ') full"
# ports: [web]  # free loopback ports: LAB_PORT_WEB in scripts, {{{{ lab.ports.web }}}} in inputs
# processes:    # long-lived processes the pitfall needs; `cairn lab down` stops them and what they start
#   - name: web
#     run: exec python3 -m http.server "$LAB_PORT_WEB" --bind 127.0.0.1
#     ready: curl -sf "http://127.0.0.1:$LAB_PORT_WEB/" > /dev/null
inputs:  # the runbook's inputs for a run against the lab; templates see lab.dir, lab.ports, lab.healthy
  path: "{{{{ lab.dir }}}}/data"
  max_percent: "{{{{ 100 if lab.healthy else 0 }}}}"
notes:
  - "TODO: what to look at, and what to try, once the lab is up"
"""


def runbook_skeleton(runbook_id: str, schema_reference: str = RUNBOOK_SCHEMA) -> str:
    """A complete, valid runbook for ``runbook_id`` whose comments teach the format."""
    title = runbook_id.replace("-", " ").capitalize()
    return f"""\
# yaml-language-server: $schema={schema_reference}
# Written by `cairn new {runbook_id}`: a runbook to make your own. It is valid and runs as it is
# (it checks how full a file system is); change every TODO. Each key is explained in
# docs/runbook-format.md; `cairn validate` checks the file, and so does your editor through the
# line above (the YAML extension, yaml-language-server, reads it).
id: {runbook_id}
title: "{title} — TODO: the pitfall in one line, as on-call would search for it"
severity: warning  # info | warning | critical: how bad it is when present
tags: [todo]
summary: |
  TODO: what the pitfall is and what it does, in a few sentences. This is the
  first thing read at 3 a.m.; Markdown (`code`, **bold**) is rendered.
symptoms:  # what someone notices, one item each: the alert, the exact error message
  - "TODO: `df` shows the file system holding /var/log more than 90 % full."
cause: |
  TODO: the mechanism, deep enough that a newcomer could have predicted it;
  name the versions involved.
references:  # upstream issues, fixes, write-ups
  - title: "TODO: df(1), the command the detect step runs"
    url: https://man7.org/linux/man-pages/man1/df.1.html
targets: all  # the inventory hosts it applies to (-i INVENTORY); without one: this machine
requires: [df]  # programs every step needs on its targets: checked on each host before anything runs

inputs:  # typed parameters: -e name=value, -e @file.yaml; templates read inputs.<name>
  path:
    type: string
    default: /
    description: A path on the file system to check.
  max_percent:
    type: integer
    default: 90
    description: More than this percentage used is the pitfall.

detect:  # read-only steps: is the pitfall present? Any finding means yes.
  - id: usage  # snake_case; later steps read its result as steps.usage
    title: How full the file system holding the path is
    why: |
      TODO: why this step exists and how to read its result; it is shown
      beside the step and in the training material.
    # `set -o pipefail`: if df fails (a path that does not exist), the step is an error,
    # never an empty "nothing found". Every {{{{ value }}}} is shell-quoted for you.
    run: |
      set -o pipefail
      df --output=pcent -- {{{{ inputs.path }}}} | tail -n1 | tr -dc 0-9
    parse: number  # stdout -> out: text, lines, number, json, table, {{regex: ...}}
    expect: out <= inputs.max_percent  # true: ok; false: a finding
    report: "{{{{ inputs.path }}}} is on a file system {{{{ out }}}} % full (limit {{{{ inputs.max_percent }}}} %)"
    timeout: 10s

diagnose:  # read-only evidence, only when detect found the pitfall
  - id: biggest
    title: The largest folders under the path
    when: steps.usage.finding
    run: du -xh --max-depth=1 -- {{{{ inputs.path }}}} 2>/dev/null | sort -rh | head -n 6
    exit_codes: [0]  # the last command's (head's); add codes a tool uses for "found", decide in expect
    parse:
      table: {{columns: [size, folder]}}  # no header line: name the columns; the last takes the rest
    report: "{{% for row in out %}}{{{{ row.folder }}}} {{{{ row.size }}}}{{{{ ', ' if not loop.last }}}}{{% endfor %}}"
    timeout: 2m

remediate:  # changes: each asks for approval (a terminal, --yes, or the alert policy)
  - id: free_space
    title: Free space on the file system
    when: steps.usage.finding
    why: TODO why this fix, and what it touches.
    manual: |
      TODO: what a human does, step by step; or replace `manual:` by `run:`
      with the command that fixes it (it then asks for approval first).
      What takes the space: {{{{ steps.biggest.message }}}}.
    tradeoff: TODO what the fix costs or does not fix, for the approver to weigh.

verify: detect  # the detect steps again: the fix counts only when they come back clean
"""
