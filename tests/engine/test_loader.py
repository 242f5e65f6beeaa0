"""The loader on the fixture runbooks: valid ones build the model, invalid ones report exactly what is wrong.

Each ``tests/fixtures/runbooks/invalid/NN_*.yaml`` lists the problems it must produce in
``# expect: LINE:COL POINTER MESSAGE`` header lines (POINTER ``-`` is the root).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from engine.core.errors import Problem, RunbookInvalid, RunbookNotFound
from engine.core.inputs import resolve_inputs
from engine.core.loader import LoadResult, check_file, check_text, load_library
from engine.core.model import (
    DEFAULT_TIMEOUT,
    AnsibleAction,
    InputType,
    ManualAction,
    OnTimeout,
    ParseKind,
    ParseSpec,
    Phase,
    Reference,
    RunAction,
    Runbook,
    Severity,
    StepKind,
    Trigger,
)
from tests.conftest import FIXTURES, REPO

VALID = sorted((FIXTURES / "runbooks" / "valid").glob("*.yaml"))
INVALID = sorted((FIXTURES / "runbooks" / "invalid").glob("*.yaml"))
BUNDLED = sorted((REPO / "runbooks").glob("*.y*ml"))

_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+) (.+)$")


def expected_problems(path: Path) -> list[tuple[int, int, str, str]]:
    """The ``# expect:`` lines of a fixture as (line, column, pointer, message); never empty."""
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.startswith("# expect:"):
            continue
        match = _EXPECT.match(text)
        if match is None:
            raise ValueError(f"{path.name}:{number}: malformed expectation {text!r}")
        line, column, ptr, message = match.groups()
        found.append((int(line), int(column), "" if ptr == "-" else ptr, message))
    if not found:
        raise ValueError(f"{path.name} has no '# expect:' lines; an invalid fixture must list its problems")
    return found


def actual_problems(result: LoadResult) -> list[tuple[int, int, str, str]]:
    return [(p.line, p.column, p.pointer, p.message) for p in result.problems]


def load(name: str) -> Runbook:
    result = check_file(FIXTURES / "runbooks" / "valid" / name)
    assert result.problems == ()
    assert result.runbook is not None
    return result.runbook


# --------------------------------------------------------------------------- the fixture sets


def test_fixture_folders_are_populated() -> None:
    # An empty glob would parametrize nothing and pass silently.
    assert 6 <= len(VALID) <= 8
    assert 20 <= len(INVALID) <= 35
    assert BUNDLED


@pytest.mark.parametrize("path", VALID + BUNDLED, ids=lambda p: p.name)
def test_valid_runbook_loads_without_problems(path: Path) -> None:
    result = check_file(path)
    assert [str(p) for p in result.problems] == []
    assert result.runbook is not None
    assert result.runbook.id == result.declared_id
    assert "# expect:" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_runbook_reports_exactly_the_expected_problems(path: Path) -> None:
    expected = expected_problems(path)
    result = check_file(path)
    assert result.runbook is None
    assert actual_problems(result) == expected
    assert all(p.file == str(path) for p in result.problems)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_problems_come_in_line_order(path: Path) -> None:
    positions = [(p.line, p.column) for p in check_file(path).problems]
    assert positions == sorted(positions)


def test_a_fixture_without_expectations_fails_loudly(tmp_path: Path) -> None:
    bare = tmp_path / "99_forgot_header.yaml"
    bare.write_text("# a comment, but no expectations\nid: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no '# expect:' lines"):
        expected_problems(bare)


def test_a_malformed_expectation_fails_loudly(tmp_path: Path) -> None:
    sloppy = tmp_path / "98_sloppy.yaml"
    sloppy.write_text("# expect: line 3 something is wrong\nid: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="malformed expectation"):
        expected_problems(sloppy)


def test_problem_text_names_file_position_and_pointer() -> None:
    path = FIXTURES / "runbooks" / "invalid" / "06_bad_severity.yaml"
    (problem,) = check_file(path, display="bad.yaml").problems
    assert str(problem) == (
        "bad.yaml:6:11: [/severity] 'severity' must be one of info, warning, critical, "
        "not 'critcal'; did you mean 'critical'?"
    )
    assert problem.as_dict() == {
        "file": "bad.yaml",
        "line": 6,
        "column": 11,
        "pointer": "/severity",
        "message": "'severity' must be one of info, warning, critical, not 'critcal'; did you mean 'critical'?",
    }


# --------------------------------------------------------------------------- the model built from valid files


def test_minimal_runbook_gets_the_defaults() -> None:
    runbook = load("01_minimal.yaml")
    assert (runbook.id, runbook.severity, runbook.targets) == ("minimal", Severity.INFO, "all")
    assert runbook.verify_is_detect
    assert runbook.verify == ()
    assert runbook.steps(Phase.VERIFY) == runbook.detect
    (step,) = runbook.detect
    assert step.kind is StepKind.RUN
    assert step.action == RunAction("true")
    assert step.timeout == DEFAULT_TIMEOUT
    assert step.on_timeout is OnTimeout.ERROR
    assert step.parse == ParseSpec(kind=ParseKind.TEXT)
    assert step.exit_codes == (0,)
    assert step.confirm is False
    assert (step.pointer, step.line) == ("/detect/0", 8)
    assert runbook.source_path.endswith("01_minimal.yaml")
    assert len(runbook.sha256) == 64


def test_knowledge_fields_reach_the_model() -> None:
    runbook = load("02_knowledge.yaml")
    assert runbook.severity is Severity.WARNING
    assert runbook.tags == ("linux", "logrotate", "disk.usage", "var_log")
    assert runbook.symptoms[0] == "`df -h /var` is above 90%."
    assert runbook.summary.startswith("**logrotate** renames logs")
    assert runbook.cause.startswith("The package's logrotate snippet")
    assert runbook.references == (
        Reference("logrotate(8) manual", "https://man7.org/linux/man-pages/man8/logrotate.8.html"),
        Reference("Plain http link", "http://example.com/logrotate"),
    )
    assert runbook.targets == "web_servers"
    assert runbook.detect[0].why == "Shows how full /var is, in percent."


def test_inputs_are_typed_and_durations_are_seconds() -> None:
    runbook = load("03_inputs.yaml")
    specs = {spec.name: spec for spec in runbook.inputs}
    assert {name: spec.type for name, spec in specs.items()} == {
        "path": InputType.STRING,
        "max_files": InputType.INTEGER,
        "ratio": InputType.NUMBER,
        "dry_run": InputType.BOOLEAN,
        "max_age": InputType.DURATION,
        "grace": InputType.DURATION,
        "mode": InputType.STRING,
        "level": InputType.INTEGER,
        "window": InputType.DURATION,
        "api_token": InputType.STRING,
    }
    assert specs["path"].default == "/var/log"
    assert specs["path"].description == "Folder to inspect."
    assert specs["max_files"].default == 100
    assert specs["ratio"].default == 0.75
    assert specs["dry_run"].default is True
    assert specs["max_age"].default == 5400.0  # 1h30m
    assert specs["grace"].default == 90.0  # a bare number is seconds
    assert specs["mode"].choices == ("fast", "thorough")
    assert specs["level"].choices == (1, 2, 3)
    assert not specs["level"].has_default
    token = specs["api_token"]
    assert token.secret
    assert not token.has_default
    assert token.default is None
    assert runbook.detect[1].timeout == 150.0  # 2m30s


def test_duration_choices_are_seconds_like_the_default() -> None:
    # `-e window=1h` is converted to 3600.0 and must then be found among the choices.
    runbook = load("03_inputs.yaml")
    window = runbook.input("window")
    assert window is not None
    assert window.default == 1800.0
    assert window.choices == (1800.0, 3600.0)
    given = {"api_token": "t0ken", "level": "2", "window": "1h"}
    assert resolve_inputs(runbook, given)["window"] == 3600.0


def test_every_parse_form() -> None:
    runbook = load("04_parse_forms.yaml")
    assert {step.id: step.parse for step in runbook.detect} == {
        "as_json": ParseSpec(kind=ParseKind.JSON),
        "as_lines": ParseSpec(kind=ParseKind.LINES),
        "as_table": ParseSpec(kind=ParseKind.TABLE),
        "as_table_columns": ParseSpec(kind=ParseKind.TABLE, columns=("name", "count"), separator="|"),
        "as_table_columns_only": ParseSpec(kind=ParseKind.TABLE, columns=("name", "count")),
        "as_number": ParseSpec(kind=ParseKind.NUMBER),
        "as_regex": ParseSpec(kind=ParseKind.REGEX, pattern=r"^(?P<major>\d+)\.(?P<minor>\d+)"),
        "as_text": ParseSpec(kind=ParseKind.TEXT),
    }
    assert runbook.detect[0].action == RunAction("""echo '{"pods": []}'""")


def test_confirm_defaults_to_true_in_remediate_only() -> None:
    runbook = load("05_phases_manual_confirm.yaml")
    confirm = {(phase.value, step.id): step.confirm for phase in Phase for step in runbook.steps(phase)}
    assert confirm == {
        ("detect", "shims"): False,
        ("diagnose", "shim_list"): False,
        ("diagnose", "look_at_logs"): False,  # a manual step outside remediate
        ("remediate", "drain"): True,
        ("remediate", "restart_runtime"): True,
        ("remediate", "note"): False,  # said so explicitly
        ("verify", "shims_after"): False,
        ("verify", "ask_human"): True,  # said so explicitly
    }


def test_explicit_verify_list_and_step_fields() -> None:
    runbook = load("05_phases_manual_confirm.yaml")
    assert not runbook.verify_is_detect
    assert [s.id for s in runbook.steps(Phase.VERIFY)] == ["shims_after", "ask_human"]
    shims = runbook.detect[0]
    assert (shims.timeout, shims.on_timeout, shims.exit_codes) == (30.0, OnTimeout.FINDING, (0, 1))
    assert shims.report == "{{ out }} shims"
    shim_list, look = runbook.diagnose
    assert shim_list.when == "steps.shims.finding"
    assert look.kind is StepKind.MANUAL
    assert isinstance(look.action, ManualAction)
    assert look.action.instructions.startswith("Open `journalctl -u kubelet` on {{ target }}")
    restart = runbook.remediate[1]
    assert (restart.timeout, restart.tradeoff) == (120.0, "Pods on the node restart.")
    assert runbook.verify[0].expect == "out < steps.shims.out"
    assert runbook.verify[0].pointer == "/verify/0"


def test_triggers_and_ansible_steps() -> None:
    runbook = load("06_triggers_ansible.yaml")
    assert runbook.triggers == (
        Trigger(
            ("alertname = BackupMissing", 'severity =~ "critical|warning"', "env != test", 'team!~"db.*"'),
            "{{ alert.labels.instance }}",
        ),
    )
    assert runbook.verify_is_detect  # `verify: detect` said explicitly
    module, key_value, playbook = runbook.remediate
    assert all(step.kind is StepKind.ANSIBLE for step in runbook.remediate)
    assert module.action == AnsibleAction(
        module="ansible.builtin.cron",
        args={
            "name": "nightly backup",
            "hour": "{{ inputs.hour }}",
            "job": "/usr/local/bin/backup.sh",
            "weekdays": ["{{ inputs.hour }}", "3"],
        },
        become=True,
    )
    assert key_value.action == AnsibleAction(
        module="ansible.builtin.file", args="path=/var/run/backup-fixed state=touch"
    )
    assert playbook.action == AnsibleAction(playbook="playbooks/backup.yml")
    assert all(step.confirm for step in runbook.remediate)


def test_anchors_and_aliases_expand_to_equal_values() -> None:
    runbook = load("07_anchors.yaml")
    assert runbook.tags == runbook.symptoms == ("yaml", "anchors")
    (check,) = runbook.detect
    (again,) = runbook.verify
    assert check.id != again.id
    for field in ("action", "parse", "expect", "exit_codes", "timeout"):
        assert getattr(check, field) == getattr(again, field), field
    assert check.timeout == 15.0


# --------------------------------------------------------------------------- cases the fixtures cannot pin down

BASE = "id: probe\ntitle: t\nseverity: info\nsummary: s\n"


def problems_at(text: str, ptr: str) -> list[Problem]:
    result = check_text(text)
    if result.runbook is not None:
        pytest.fail(f"this runbook was accepted, but it is invalid:\n{text}")
    return [p for p in result.problems if p.pointer == ptr]


@pytest.mark.parametrize("timeout", ["0s", "0ms", "0m0s"])
def test_a_zero_timeout_written_as_text_is_rejected(timeout: str) -> None:
    # `timeout: 0` is rejected ("must be at least 1"); the same zero as text must be too.
    text = BASE + f"detect:\n  - {{id: a, title: t, run: x, timeout: {timeout}}}\n"
    assert problems_at(text, "/detect/0/timeout")


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_a_duration_input_default_must_be_finite(value: str) -> None:
    text = (
        BASE
        + f"inputs:\n  wait: {{type: duration, default: {value}}}\ndetect:\n  - {{id: a, title: t, run: x}}\n"
    )
    assert problems_at(text, "/inputs/wait/default")


def test_an_empty_verify_list_says_it_needs_a_step() -> None:
    text = BASE + "detect:\n  - {id: a, title: t, run: x}\nverify: []\n"
    (problem,) = problems_at(text, "/verify")
    assert "at least 1" in problem.message


def test_two_parsers_in_one_step_says_to_pick_one() -> None:
    text = BASE + "detect:\n  - {id: a, title: t, run: x, parse: {regex: x, table: {}}}\n"
    (problem,) = problems_at(text, "/detect/0/parse")
    assert "exactly one" in problem.message
    assert "regex" in problem.message
    assert "table" in problem.message


@pytest.mark.parametrize("ansible", ["{}", "{args: {a: b}}", "{become: true}"])
def test_an_ansible_step_without_module_or_playbook_says_what_is_missing(ansible: str) -> None:
    text = BASE + f"detect:\n  - {{id: a, title: t, ansible: {ansible}}}\n"
    (problem,) = problems_at(text, "/detect/0/ansible")
    assert "not both" not in problem.message  # there is not even one
    assert "module" in problem.message
    assert "playbook" in problem.message


@pytest.mark.parametrize("name", ["steps", "target", "vars"])
def test_a_trigger_target_lists_what_it_can_use(name: str) -> None:
    # A trigger target sees alert and inputs only; the hint must not send the author to expect/report.
    text = (
        BASE
        + f"triggers:\n  - matchers: ['a = b']\n    target: '{{{{ {name}.a }}}}'\n"
        + "detect:\n  - {id: a, title: t, run: x}\n"
    )
    (problem,) = problems_at(text, "/triggers/0/target")
    assert f"unknown variable {name!r}" in problem.message
    assert "expect and report" not in problem.message
    assert "alert" in problem.message
    assert "inputs" in problem.message


# --------------------------------------------------------------------------- an outsider's text, bounds (issue 15)

TRIGGERED = (
    BASE
    + "triggers:\n  - {matchers: ['a = b'], target: '{{ alert.labels.host }}'}\ninputs:\n  x: {type: string}\n"
)


@pytest.mark.parametrize(
    ("step", "reads"),
    [
        ("run: 'echo {{ alert.labels.x | unquoted }}'", "alert (its labels"),
        ("run: 'echo {{ inputs.x | unquoted }}'", "inputs (an alert can start this runbook"),
        ("run: '{% set y = alert.labels.x %}echo {{ y | unquoted }}'", "alert (its labels"),
        ("run: '{% for l in alert.labels.values() %}{{ l | unquoted }}{% endfor %}'", "alert (its labels"),
        (
            "run: '{% macro m(v) %}{{ v | unquoted }}{% endmacro %}{{ m(alert.labels.x) }}'",
            "alert (its labels",
        ),
    ],
)
def test_unquoted_on_an_outsiders_text_is_refused_without_a_reason(step: str, reads: str) -> None:
    text = TRIGGERED + f"detect:\n  - id: a\n    title: t\n    {step}\n"
    (problem,) = problems_at(text, "/detect/0/run")
    assert problem.message.startswith(f"template gives | unquoted {reads}")
    assert 'say why the step must in allow_unquoted: "<the reason>"' in problem.message
    allowed = check_text(text + "    allow_unquoted: the label is a job id the matcher checks\n")
    assert allowed.problems == ()
    assert allowed.runbook is not None
    assert allowed.runbook.detect[0].allow_unquoted == "the label is a job id the matcher checks"


def test_inputs_are_an_outsiders_text_only_where_an_alert_can_start_the_runbook() -> None:
    text = (
        BASE
        + "inputs:\n  x: {type: string}\ndetect:\n  - {id: a, title: t, run: 'echo {{ inputs.x | unquoted }}'}\n"
    )
    assert check_text(text).problems == ()


def test_a_shell_modules_arguments_may_not_carry_an_outsiders_text() -> None:
    text = (
        TRIGGERED
        + "detect:\n  - id: a\n    title: t\n    ansible: {module: ansible.builtin.shell, args: {cmd: 'rm {{ alert.labels.x }}'}}\n"
    )
    (problem,) = problems_at(text, "/detect/0/ansible/args/cmd")
    assert problem.message.startswith("ansible.builtin.shell's arguments are a command line")
    assert check_text(text + "    allow_unquoted: reviewed\n").problems == ()


def test_allow_unquoted_on_a_manual_step_is_refused_and_an_unneeded_one_is_a_warning() -> None:
    manual = TRIGGERED + "detect:\n  - {id: a, title: t, manual: do it, allow_unquoted: why}\n"
    (problem,) = problems_at(manual, "/detect/0/allow_unquoted")
    assert problem.message == "allow_unquoted means nothing for a manual step (it runs no command); remove it"
    unneeded = check_text(
        TRIGGERED + "detect:\n  - {id: a, title: t, run: 'echo {{ alert.labels.x }}', allow_unquoted: why}\n"
    )
    assert unneeded.problems == ()
    (warning,) = unneeded.warnings
    assert (warning.pointer, warning.line) == ("/detect/0/allow_unquoted", 10)
    assert "nothing in this step puts an outsider's text unquoted into a command" in warning.message


@pytest.mark.parametrize("reason", ["''", "'   '", "3", "true"])
def test_allow_unquoted_needs_a_reason_in_words(reason: str) -> None:
    text = (
        TRIGGERED
        + f"detect:\n  - {{id: a, title: t, run: 'echo {{{{ alert.labels.x | unquoted }}}}', allow_unquoted: {reason}}}\n"
    )
    assert problems_at(text, "/detect/0/allow_unquoted")


@pytest.mark.parametrize(
    ("run", "words"),
    [
        (
            "echo {{ ('a' * 10**9) | length }}",
            "template builds too much when it runs: 'a' * 1000000000 would be 953.674 MiB",
        ),
        ("echo {{ 'x' | center(10**9) }}", "the filter center would be 953.674 MiB"),
        ("echo {{ 'x'.ljust(10**9) }}", "ljust() would be 953.674 MiB"),
        ("echo {{ '{:1000000000}'.format(1) }}", "a formatted field would be 953.674 MiB"),
        ("echo {{ '%1000000000s' % 1 }}", "would be 953.674 MiB"),
        ("echo {{ lipsum(5) }}", "uses unknown variable 'lipsum'"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "has loops that would run 10,000,000,000 times (range(100000) inside range(100000))",
        ),
    ],
)
def test_what_is_certain_to_go_past_a_renders_bounds_is_a_problem(run: str, words: str) -> None:
    text = BASE + f'detect:\n  - id: a\n    title: t\n    run: "{run}"\n'
    (problem,) = problems_at(text, "/detect/0/run")
    assert words in problem.message
    assert problem.line == 8


def test_what_may_go_past_a_renders_bounds_is_a_warning() -> None:
    loops = "{% for a in steps.s.out %}{% for b in a %}{% for c in b %}{{ c }}{% endfor %}{% endfor %}{% endfor %}"
    macro = "{% macro f(n) %}{{ f(n - 1) if n else 0 }}{% endmacro %}{{ f(3) }}"
    text = (
        BASE
        + f"detect:\n  - {{id: s, title: t, run: x}}\n  - {{id: a, title: t, run: '{loops}'}}\n  - {{id: b, title: t, manual: '{macro}'}}\n"
    )
    result = check_text(text)
    assert result.problems == ()
    assert [(w.pointer, w.line) for w in result.warnings] == [("/detect/1/run", 7), ("/detect/2/manual", 8)]
    assert "has loops nested 3 deep" in result.warnings[0].message
    assert "macro 'f' calls itself" in result.warnings[1].message


# --------------------------------------------------------------------------- the library


def copy_fixture(name: str, dest: Path, kind: str = "valid") -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "runbooks" / kind / name, dest)
    return dest


def test_duplicate_runbook_id_is_a_problem_of_the_later_file(tmp_path: Path) -> None:
    first = copy_fixture("01_minimal.yaml", tmp_path / "a" / "one.yaml")
    second = copy_fixture("01_minimal.yaml", tmp_path / "b" / "two.yml")
    library = load_library([tmp_path])
    assert [rb.source_path for rb in library.runbooks] == [str(first)]
    (invalid,) = library.invalid
    assert invalid.path == str(second)
    assert invalid.declared_id == "minimal"
    assert invalid.problems == (
        Problem(
            str(second),
            3,
            1,
            "/id",
            f"runbook id 'minimal' is already used by {first}; ids must be unique",
        ),
    )
    assert library.get("minimal").source_path == str(first)


def test_a_file_named_twice_is_not_its_own_duplicate(tmp_path: Path) -> None:
    # `cairn validate runbooks runbooks/x.yaml` names the same file twice.
    only = copy_fixture("01_minimal.yaml", tmp_path / "rb" / "one.yaml")
    library = load_library([tmp_path / "rb", only])
    assert [str(p) for r in library.invalid for p in r.problems] == []
    assert [rb.id for rb in library.runbooks] == ["minimal"]


def test_library_get_unknown_id_names_what_it_searched_and_knows(tmp_path: Path) -> None:
    copy_fixture("01_minimal.yaml", tmp_path / "rb" / "one.yaml")
    copy_fixture("02_knowledge.yaml", tmp_path / "rb" / "two.yaml")
    library = load_library([tmp_path / "rb"])
    with pytest.raises(RunbookNotFound) as caught:
        library.get("disk-ful")
    text = str(caught.value)
    assert caught.value.runbook_id == "disk-ful"
    assert "no runbook with id 'disk-ful'" in text
    assert str(tmp_path / "rb") in text
    assert "Known ids: knowledge-fields, minimal." in text
    assert "cairn list" in text


def test_library_get_of_an_invalid_runbook_lists_its_problems(tmp_path: Path) -> None:
    broken = copy_fixture("06_bad_severity.yaml", tmp_path / "rb" / "broken.yaml", kind="invalid")
    copy_fixture("01_minimal.yaml", tmp_path / "rb" / "ok.yaml")
    library = load_library([tmp_path / "rb"])
    with pytest.raises(RunbookInvalid) as caught:
        library.get("bad-severity")
    error = caught.value
    assert error.file == str(broken)
    assert [(p.line, p.pointer) for p in error.problems] == [(6, "/severity")]
    text = str(error)
    assert text.startswith(f"{broken}: 1 problem;")
    assert f"{broken}:6:11: [/severity] 'severity' must be one of info, warning, critical" in text
    assert "did you mean 'critical'?" in text
