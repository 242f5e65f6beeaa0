"""The runbook JSON Schema: valid, strict, self-describing, and what editors and `cairn schema` see."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from engine.core.loader import PLAYBOOKS, TESTS_SUFFIX
from engine.core.model import DURATION_PATTERN, InputType, OnTimeout, ParseKind, Severity
from engine.core.schema import SCHEMA_ID, SCHEMA_PATH, schema, schema_text
from tests.conftest import FIXTURES, RUNBOOKS, CairnRunner

SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
RUNBOOK_FILES = sorted(
    p
    for p in RUNBOOKS.rglob("*.y*ml")
    if PLAYBOOKS not in p.relative_to(RUNBOOKS).parts
    and not any(part.endswith(TESTS_SUFFIX) for part in p.relative_to(RUNBOOKS).parts[:-1])
)
CASE_FILES = sorted(RUNBOOKS.glob(f"*{TESTS_SUFFIX}/*.y*ml"))
FIXTURE_FILES = sorted((FIXTURES / "runbooks").rglob("*.yaml"))


def subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema inside ``node`` (following the keywords that hold schemas), with its JSON pointer."""
    if not isinstance(node, dict):
        return
    yield path, node
    for keyword in ("properties", "$defs"):
        for name, sub in node.get(keyword, {}).items():
            yield from subschemas(sub, f"{path}/{keyword}/{name}")
    for keyword in ("items", "additionalProperties", "propertyNames", "not"):
        yield from subschemas(node.get(keyword), f"{path}/{keyword}")
    for keyword in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(keyword, [])):
            yield from subschemas(sub, f"{path}/{keyword}/{i}")


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A bare ``{"$ref": "#/$defs/x"}`` -> the $defs entry it names (editors show that one's description)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    target: dict[str, Any] = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
    return target


PROPERTIES = [
    (f"{path}/properties/{name}", prop)
    for path, node in subschemas(SCHEMA)
    for name, prop in node.get("properties", {}).items()
]
OBJECTS_WITH_PROPERTIES = [(path, node) for path, node in subschemas(SCHEMA) if "properties" in node]


def test_the_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_the_schema_id_is_the_published_one() -> None:
    assert SCHEMA["$id"] == SCHEMA_ID
    assert schema() == SCHEMA
    assert schema_text() == SCHEMA_PATH.read_text(encoding="utf-8")


def test_the_walk_sees_the_whole_schema() -> None:
    # Guards the checks below against a walker that silently visits nothing.
    names = {path.rsplit("/", 1)[1] for path, _ in PROPERTIES}
    assert {
        "id",
        "detect",
        "verify",
        "timeout",
        "on_timeout",
        "columns",
        "regex",
        "playbook",
        "secret",
    } <= names
    assert len(OBJECTS_WITH_PROPERTIES) >= 7


@pytest.mark.parametrize(
    ("path", "node"), OBJECTS_WITH_PROPERTIES, ids=[p for p, _ in OBJECTS_WITH_PROPERTIES]
)
def test_objects_reject_unknown_keys(path: str, node: dict[str, Any]) -> None:
    # Unknown keys are typos (`runn:`, `expcet:`); the schema must catch them, not ignore them.
    extra = node.get("additionalProperties")
    assert extra is False or isinstance(extra, dict), f"{path} accepts any extra key"


@pytest.mark.parametrize(("path", "prop"), PROPERTIES, ids=[p for p, _ in PROPERTIES])
def test_every_property_has_a_description(path: str, prop: dict[str, Any]) -> None:
    # Editors show it on hover and the loader quotes it in messages.
    description = resolve(prop).get("description", "")
    assert isinstance(description, str)
    assert description.strip(), f"{path} has no description"


@pytest.mark.parametrize("name", sorted(SCHEMA["$defs"]))
def test_every_definition_has_a_description(name: str) -> None:
    assert SCHEMA["$defs"][name].get("description", "").strip()


def test_enums_match_the_model() -> None:
    defs, step = SCHEMA["$defs"], SCHEMA["$defs"]["step"]["properties"]
    assert SCHEMA["properties"]["severity"]["enum"] == [s.value for s in Severity]
    assert defs["input"]["properties"]["type"]["enum"] == [t.value for t in InputType]
    assert step["on_timeout"]["enum"] == [o.value for o in OnTimeout]
    plain_parsers = set(defs["parse"]["anyOf"][0]["enum"])
    parsers_with_options = set(defs["parse"]["anyOf"][1]["properties"])
    assert plain_parsers | parsers_with_options == {k.value for k in ParseKind}
    assert defs["duration"]["pattern"] == DURATION_PATTERN


# --------------------------------------------------------------------------- what editors see


@pytest.mark.parametrize(
    "path",
    RUNBOOK_FILES + FIXTURE_FILES,
    ids=[str(p.relative_to(RUNBOOKS.parent)) for p in RUNBOOK_FILES + FIXTURE_FILES],
)
def test_modeline_points_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path.name} must start with '# yaml-language-server: $schema=…'"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_PATH.resolve()


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_bundled_case_names_the_case_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path.name} must start with '# yaml-language-server: $schema=…'"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_PATH.with_name("case.schema.json").resolve()


def test_there_are_runbooks_to_check() -> None:
    assert RUNBOOK_FILES
    assert len(FIXTURE_FILES) >= 26


@pytest.mark.parametrize(
    "path",
    RUNBOOK_FILES + sorted((FIXTURES / "runbooks" / "valid").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_valid_runbooks_satisfy_the_schema_alone(path: Path) -> None:
    # What an editor checks, with no help from the loader's semantic checks.
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(data)]
    assert errors == []


# --------------------------------------------------------------------------- the command


@pytest.mark.cli
def test_cairn_schema_prints_the_schema(cairn: CairnRunner) -> None:
    done = cairn("schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == SCHEMA
    assert done.stdout == SCHEMA_PATH.read_text(encoding="utf-8")


def test_allow_unquoted_is_a_step_reason_in_words() -> None:
    prop = SCHEMA["$defs"]["step"]["properties"]["allow_unquoted"]
    assert (prop["type"], prop["minLength"]) == ("string", 1)
    step = {"id": "a", "title": "t", "run": "x"}
    runbook = {"id": "r", "title": "t", "severity": "info", "summary": "s"}
    assert (
        list(
            Draft202012Validator(SCHEMA).iter_errors(runbook | {"detect": [step | {"allow_unquoted": "why"}]})
        )
        == []
    )
    for bad in ("", "   ", 1, True):
        assert list(
            Draft202012Validator(SCHEMA).iter_errors(runbook | {"detect": [step | {"allow_unquoted": bad}]})
        )
