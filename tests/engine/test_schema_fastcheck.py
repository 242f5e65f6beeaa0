"""The fast yes/no schema check must agree with jsonschema on every document."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.core import schema
from engine.core.schema.fastcheck import compile_schema
from engine.core.yamlsource import read_yaml_file
from tests.conftest import FIXTURES, RUNBOOKS

FAST = compile_schema(schema.schema())
REFERENCE = Draft202012Validator(schema.schema())
DOCUMENTS = sorted((FIXTURES / "runbooks").rglob("*.yaml")) + sorted(RUNBOOKS.glob("*.yaml"))
BASE = read_yaml_file(RUNBOOKS / "branch-cleanup.yaml").data

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "detect", "json", "table", "30s", "0s", "info", "run", "x-y", "Bad Id", "a" * 70]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "title",
                    "run",
                    "manual",
                    "ansible",
                    "module",
                    "playbook",
                    "parse",
                    "table",
                    "regex",
                    "columns",
                    "timeout",
                    "when",
                    "type",
                    "default",
                    "extra",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)


def agree(data: Any) -> None:
    assert FAST(data) == REFERENCE.is_valid(data), list(REFERENCE.iter_errors(data))[:3]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_agrees_on_every_fixture_and_bundled_runbook(path: Path) -> None:
    data = read_yaml_file(path).data
    if data is not None:
        agree(data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += _paths(sub, (*prefix, index))
    return found


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.data())
def test_agrees_on_mutations_of_a_real_runbook(data: st.DataObject) -> None:
    document = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(document)[1:]
        path = data.draw(st.sampled_from(paths))
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSONISH)
    agree(document)


@given(JSONISH)
@settings(max_examples=300, deadline=None, database=None)
def test_agrees_on_arbitrary_values(value: Any) -> None:
    agree(value)


def test_an_unsupported_keyword_fails_loudly() -> None:
    with pytest.raises(ValueError, match="does not support 'patternProperties'"):
        compile_schema({"type": "object", "patternProperties": {"^x": {"type": "string"}}})


REPLACEMENTS: list[Any] = [None, True, 0, -1, 1.5, "", "a" * 300, "Bad Id", [], [""], {}, {"x": 1}]


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "runbooks" / "valid").glob("*.yaml")), ids=lambda p: p.name
)
def test_agrees_on_every_single_replacement_or_deletion(path: Path) -> None:
    """Every value of a valid runbook, replaced by each of a few typed values or deleted."""
    base = read_yaml_file(path).data
    for where in _paths(base)[1:]:
        for replacement in [*REPLACEMENTS, KeyError]:
            document = copy.deepcopy(base)
            parent: Any = document
            for part in where[:-1]:
                parent = parent[part]
            if replacement is KeyError:
                if not isinstance(parent, dict):
                    continue
                del parent[where[-1]]
            else:
                parent[where[-1]] = copy.deepcopy(replacement)
            agree(document)
