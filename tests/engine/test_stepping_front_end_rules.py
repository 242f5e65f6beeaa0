"""What every front end takes from the core rather than restating it: the library loaded in batches,
a form's input values, the fork limit, one lock around ansible-core's inventory code."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.cli.options import forks
from engine.core import inventory
from engine.core.defaults import DEFAULT_FORKS, MAX_FORKS
from engine.core.errors import InputError
from engine.core.inputs import convert, entered_value, input_text, starting_value
from engine.core.loader import load_library, load_library_batches
from engine.core.model import LOCALHOST, InputSpec, InputType
from engine.core.spec import RunSpec
from tests.conftest import RunbookDir

RUNBOOK = """
id: {id}
title: Runbook {id}
severity: info
summary: s
detect:
  - id: look
    title: Look
    run: "true"
"""


def runbooks(runbook_dir: RunbookDir, count: int) -> Path:
    return runbook_dir(*(RUNBOOK.format(id=f"rb-{n:02}") for n in range(count)))


# ---------------------------------------------------------------------------- the library, in batches


def test_batches_come_after_the_first_files_then_the_whole_library_last(runbook_dir: RunbookDir) -> None:
    folder = runbooks(runbook_dir, 5)
    batches = list(load_library_batches([folder], first=2, every=3600))
    assert [(len(b.library.results), b.complete, b.total) for b in batches] == [(2, False, 5), (5, True, 5)]
    whole = load_library([folder])
    assert [r.path for r in batches[-1].library.results] == [r.path for r in whole.results]
    assert batches[-1].library.searched == whole.searched
    first, last = batches[0].library.results, batches[-1].library.results
    assert all(a is b for a, b in zip(first, last, strict=False)), "each result keeps its identity"


def test_batches_come_every_so_often_by_the_clock(runbook_dir: RunbookDir) -> None:
    folder = runbooks(runbook_dir, 4)
    ticks = iter(range(100))  # every reading of the clock is a second later
    batches = list(load_library_batches([folder], first=99, every=1.5, clock=lambda: float(next(ticks))))
    assert [b.complete for b in batches] == [False, False, True]


def test_duplicate_ids_are_problems_of_the_later_file_as_load_library_says(runbook_dir: RunbookDir) -> None:
    folder = runbook_dir(RUNBOOK.format(id="same"))
    (folder / "zz-copy.yaml").write_text((folder / "same.yaml").read_text())
    [batch] = list(load_library_batches([folder], first=99))
    assert [r.runbook is not None for r in batch.library.results] == [True, False]
    assert batch.library.results[1].problems == load_library([folder]).results[1].problems
    assert "already used by" in batch.library.results[1].problems[0].message


def test_cancelled_loading_stops_without_a_last_batch(runbook_dir: RunbookDir) -> None:
    folder = runbooks(runbook_dir, 3)
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 2

    assert list(load_library_batches([folder], first=99, cancelled=cancelled)) == []


# ---------------------------------------------------------------------------- a form's input values

DURATION = InputSpec("wait", InputType.DURATION, default=90.0, has_default=True)
REQUIRED = InputSpec("host", InputType.STRING, description="the host to look at")
FLAG = InputSpec("force", InputType.BOOLEAN, default=False, has_default=True)
LEVEL = InputSpec("level", InputType.INTEGER, choices=(1, 2, 3))


@pytest.mark.parametrize(
    ("spec", "value", "text"),
    [
        (DURATION, 5400.0, "1h30m"),
        (DURATION, 0.5, "500ms"),
        (FLAG, True, "true"),
        (FLAG, False, "false"),
        (LEVEL, 2, "2"),
        (REQUIRED, "web-1", "web-1"),
        (REQUIRED, None, ""),
    ],
)
def test_input_text_is_read_back_by_convert(spec: InputSpec, value: Any, text: str) -> None:
    assert input_text(spec, value) == text
    if value is not None:
        assert convert(spec, text) == value


def test_an_empty_field_takes_the_default_or_is_required() -> None:
    assert entered_value(DURATION, "") == 90.0
    assert entered_value(FLAG, "") is False
    with pytest.raises(InputError, match=r"^host is required \(the host to look at\)$"):
        entered_value(REQUIRED, "")
    with pytest.raises(InputError, match=r"^level is required \(integer\)$"):
        entered_value(LEVEL, "")


def test_an_entered_value_is_typed_and_checked_as_on_the_command_line() -> None:
    assert entered_value(DURATION, "2m") == 120
    assert entered_value(LEVEL, "3") == 3
    for spec, text in ((LEVEL, "4"), (LEVEL, "two"), (FLAG, "maybe"), (DURATION, "soon")):
        with pytest.raises(InputError) as entered:
            entered_value(spec, text)
        with pytest.raises(InputError) as given:
            convert(spec, text)
        assert str(entered.value) == str(given.value)


def test_a_form_starts_with_the_given_value_else_the_default() -> None:
    assert starting_value(DURATION, {}) == 90.0
    assert starting_value(DURATION, {"wait": 30}) == 30
    assert starting_value(REQUIRED, {}) is None
    assert starting_value(FLAG, {"force": True}) is True


# ---------------------------------------------------------------------------- the fork limit


def test_the_cli_takes_forks_up_to_the_engines_limit() -> None:
    assert forks("1") == 1
    assert forks(str(MAX_FORKS)) == MAX_FORKS
    for text in ("0", str(MAX_FORKS + 1)):
        with pytest.raises(argparse.ArgumentTypeError, match=f"between 1 and {MAX_FORKS}"):
            forks(text)


def test_a_run_spec_holds_forks_within_the_limit(runbook_dir: RunbookDir) -> None:
    [result] = load_library([runbook_dir(RUNBOOK.format(id="one"))]).results
    runbook = result.runbook
    assert runbook is not None

    def spec(n: int) -> RunSpec:
        return RunSpec(runbook=runbook, hosts=(LOCALHOST,), inputs={}, forks=n)

    assert spec(DEFAULT_FORKS).forks == DEFAULT_FORKS
    assert spec(MAX_FORKS).forks == MAX_FORKS
    for n in (0, MAX_FORKS + 1):
        with pytest.raises(ValueError, match=f"forks must be from 1 to {MAX_FORKS}"):
            spec(n)


# ---------------------------------------------------------------------------- one Ansible lock


@pytest.mark.inventory
def test_resolving_targets_waits_for_the_engines_one_ansible_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "CAIRN_NO_CACHE", "1"
    )  # every resolution goes into ansible-core (a cache hit never does)
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    web-1: {ansible_connection: local}\n")
    inventory.resolve_targets([str(hosts)], "all", None)  # ansible-core imported: a resolution takes ms now
    resolved: list[list[str]] = []

    def resolve() -> None:
        resolved.append([h.name for h in inventory.resolve_targets([str(hosts)], "all", None)])

    with inventory._ANSIBLE:  # someone else is inside ansible-core's inventory code
        other = threading.Thread(target=resolve)
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "the resolution waits for the lock"
    other.join(timeout=60)
    assert resolved == [["web-1"]]


@pytest.mark.inventory
def test_a_cached_resolution_never_enters_ansible_nor_waits_for_its_lock(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    web-1: {ansible_connection: local}\n")
    inventory.resolve_targets([str(hosts)], "all", None)  # ansible-core's answer, now cached
    resolved: list[list[str]] = []

    def resolve() -> None:
        resolved.append([h.name for h in inventory.resolve_targets([str(hosts)], "all", None)])

    with inventory._ANSIBLE:  # someone else is inside ansible-core's inventory code
        other = threading.Thread(target=resolve)
        other.start()
        other.join(timeout=60)
        assert not other.is_alive(), "a cached answer does not need ansible-core"
    assert resolved == [["web-1"]]
