"""Durations, outcomes and exit codes: the small values everything else relies on."""

from __future__ import annotations

import pytest

from engine.core.model import (
    HostOutcome,
    HostReport,
    Phase,
    RunReport,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("7d", 604800),
        ("1.5h", 5400),
        (90, 90),
        ("45", 45),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "m5", "", "-5s", True, -3, "5x"])
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 12, 245, 7800)] == ["0.2s", "12s", "4m05s", "2h10m"]


def test_the_worst_host_decides_the_exit_code() -> None:
    def report(*outcomes: HostOutcome, interrupted: bool = False) -> RunReport:
        hosts = tuple(HostReport(f"h{i}", o, ()) for i, o in enumerate(outcomes))
        return RunReport("r", "rb", hosts, interrupted=interrupted)

    assert report(HostOutcome.HEALTHY, HostOutcome.REMEDIATED).exit_code == 0
    assert report(HostOutcome.HEALTHY, HostOutcome.PRESENT).exit_code == 1
    assert report(HostOutcome.PRESENT, HostOutcome.FAILED, HostOutcome.HEALTHY).exit_code == 2
    assert report(HostOutcome.HEALTHY, interrupted=True).exit_code == 130
    assert report().exit_code == 2  # no host was run: nothing was checked


def test_phase_order_is_detect_diagnose_remediate_verify() -> None:
    assert [p.value for p in Phase] == ["detect", "diagnose", "remediate", "verify"]


def test_the_command_line_s_phase_names_are_the_model_s_phases_in_order() -> None:
    """engine/core/defaults.py states them without importing the model (for a cheap --help)."""
    from engine.core.defaults import PHASE_NAMES
    from engine.core.model import PHASE_ORDER, Phase

    assert tuple(p.value for p in Phase) == PHASE_NAMES
    assert tuple(p.value for p in PHASE_ORDER) == PHASE_NAMES
