"""Templates and expressions: shell-quoting, the sandbox, Cairn's filters and tests, static checks."""

from __future__ import annotations

import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.context import marked_inputs
from engine.core.errors import TemplateError
from engine.core.executors import Shell
from engine.core.expr import check, evaluate, render_command, render_data, render_text
from engine.core.inputs import Redactor
from engine.core.loader import check_text
from engine.core.model import RunAction, Runbook, Step
from engine.core.template_bounds import RenderPolicy, rendering
from engine.core.template_values import Secret, mark_untrusted
from engine.core.verdict import render_task

# A shell function that prints how many arguments it got, then each one in <>,
# so a rendered command shows exactly how bash split the interpolated value.
SHOW = "show() { printf '%s\\n' \"$#\"; printf '<%s>\\n' \"$@\"; }; show "

HOSTILE = [
    "x; touch owned",
    "$(touch owned)",
    "`touch owned`",
    "'; touch owned; '",
    "it's",
    '"; touch owned; "',
    "a\ntouch owned",
    "x && touch owned",
    "x || touch owned",
    "x | touch owned",
    "> owned",
    "*",
    "~",
    "$HOME",
    "${IFS}touch${IFS}owned",
    "a  b\tc",
    "-n",
    "\\",
    "",
    "ünïcødé ✓",
]


def bash(command: str, cwd: Path) -> str:
    """Run ``command`` with bash in ``cwd``; its stdout (the test fails on a non-zero exit)."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder with a few files, so an unquoted glob would visibly expand."""
    folder = tmp_path / "work"
    folder.mkdir()
    for name in ("alpha", "beta"):
        (folder / name).write_text("", encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- render_command quoting


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_is_one_argument_and_runs_nothing(value: str, workdir: Path) -> None:
    command = render_command(SHOW + "{{ inputs.v }}", {"inputs": {"v": value}}, step_id="s")

    printed = bash(command, workdir)

    assert printed == f"1\n<{value}>\n"
    assert not (workdir / "owned").exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_printf_prints_hostile_value_back_exactly(value: str, workdir: Path) -> None:
    command = render_command("printf '%s\\n' {{ v }}", {"v": value})

    assert bash(command, workdir) == value + "\n"
    assert not (workdir / "owned").exists()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ v | lower }}", "x; touch owned"),
        ("{{ 'prefix-' ~ v }}", "prefix-x; touch owned"),
        ("{{ v if true else 'safe' }}", "x; touch owned"),
        ("{{ v[0:100] }}", "x; touch owned"),
        ("{{ v | replace('x', '$(touch owned)') }}", "$(touch owned); touch owned"),
        ("{{ v | unquoted | upper }}", "X; TOUCH OWNED"),
        ("{% for item in [v] %}{{ item }}{% endfor %}", "x; touch owned"),
    ],
)
def test_values_computed_from_a_hostile_value_are_quoted_too(
    template: str, expected: str, workdir: Path
) -> None:
    command = render_command(SHOW + template, {"v": "x; touch owned"})

    assert bash(command, workdir) == f"1\n<{expected}>\n"
    assert not (workdir / "owned").exists()


def test_numbers_and_booleans_render_as_one_word(workdir: Path) -> None:
    command = render_command(SHOW + "{{ n }} {{ f }} {{ b }}", {"n": 42, "f": 1.5, "b": True})

    assert bash(command, workdir) == "3\n<42>\n<1.5>\n<true>\n"


def test_list_becomes_several_quoted_words(workdir: Path) -> None:
    values = ["a b", "$(touch owned)", "*", "it's", ""]
    command = render_command(SHOW + "{{ items }}", {"items": values})

    assert bash(command, workdir) == "5\n" + "".join(f"<{v}>\n" for v in values)
    assert not (workdir / "owned").exists()


def test_tuple_becomes_several_quoted_words(workdir: Path) -> None:
    command = render_command(SHOW + "{{ items }}", {"items": ("one two", "three")})

    assert bash(command, workdir) == "2\n<one two>\n<three>\n"


def test_none_renders_as_one_empty_argument(workdir: Path) -> None:
    command = render_command(SHOW + "before {{ v }} after", {"v": None})

    assert bash(command, workdir) == "3\n<before>\n<>\n<after>\n"


def test_unquoted_opts_out_and_the_shell_text_then_runs(workdir: Path) -> None:
    command = render_command(SHOW + "{{ v | unquoted }}", {"v": "a b; touch owned"})

    assert command == SHOW.strip() + " a b; touch owned"
    assert bash(command, workdir) == "2\n<a>\n<b>\n"
    assert (workdir / "owned").exists()


def test_unquoted_glob_expands(workdir: Path) -> None:
    command = render_command(SHOW + "{{ v | unquoted }}", {"v": "*"})

    assert bash(command, workdir) == "2\n<alpha>\n<beta>\n"


def test_quote_filter_does_not_double_quote(workdir: Path) -> None:
    # Ansible users write `{{ path | quote }}` by habit; the value must still arrive as itself,
    # not wrapped in literal quote characters.
    command = render_command(SHOW + "{{ v | quote }}", {"v": "my file; rm x"})

    assert bash(command, workdir) == "1\n<my file; rm x>\n"


def test_template_text_itself_is_shell_code() -> None:
    # Only interpolated values are quoted; what the runbook author wrote is kept as written.
    command = render_command("ls -l {{ d }} | wc -l > out.txt", {"d": "/tmp/a b"})

    assert command == "ls -l '/tmp/a b' | wc -l > out.txt"


def test_render_command_strips_surrounding_whitespace() -> None:
    assert render_command("\n  echo {{ v }}  \n", {"v": "hi"}) == "echo hi"


# --------------------------------------------------------------------------- render_text


def test_render_text_does_not_quote() -> None:
    text = render_text(
        "Run `rm -rf {{ d }}` on {{ hosts }}, then {{ v }}.",
        {"d": "/tmp/a b", "hosts": ["web1", "web2"], "v": "x; y"},
    )

    assert text == "Run `rm -rf /tmp/a b` on ['web1', 'web2'], then x; y."


def test_render_text_shows_none_as_empty() -> None:
    assert render_text("[{{ v }}]", {"v": None}) == "[]"


# --------------------------------------------------------------------------- undefined names


@pytest.mark.parametrize(
    "template",
    ["rm -rf /{{ dir }}", "rm -rf /{{ inputs.dir }}", "rm -rf /{{ inputs['dir'] }}", "{{ steps.scan.out }}"],
)
def test_undefined_name_in_command_raises_naming_step_and_field(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_command(template, {"inputs": {"other": "x"}, "steps": {}}, step_id="wipe")

    assert caught.value.step_id == "wipe"
    assert caught.value.field == "run"
    assert str(caught.value).startswith("step 'wipe' run: ")
    assert "undefined" in str(caught.value) or "no attribute" in str(caught.value)


def test_undefined_name_in_text_raises_naming_step_and_field() -> None:
    with pytest.raises(TemplateError) as caught:
        render_text("Restart {{ service }}", {}, step_id="restart", field="manual")

    assert str(caught.value) == "step 'restart' manual: 'service' is undefined"


def test_undefined_name_in_a_condition_raises() -> None:
    with pytest.raises(TemplateError) as caught:
        render_command("{% if enabled %}echo on{% endif %}", {}, step_id="s")

    assert "'enabled' is undefined" in str(caught.value)


@pytest.mark.parametrize("expression", ["missing", "inputs.missing", "{{ inputs.missing }}", "inputs.a == 1"])
def test_undefined_name_in_expression_raises_naming_step_and_field(expression: str) -> None:
    with pytest.raises(TemplateError) as caught:
        evaluate(expression, {"inputs": {}}, step_id="gate", field="when")

    assert str(caught.value).startswith("step 'gate' when: ")


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ inputs.update({'v': 'changed'}) }}",
        "{{ inputs.pop('v') }}",
        "{{ inputs.clear() }}",
        "{{ items.append('more') }}",
        "{{ items.sort() }}",
    ],
)
def test_sandbox_refuses_internals_and_mutation(template: str) -> None:
    context: dict[str, Any] = {"inputs": {"v": "original"}, "items": ["b", "a"]}

    with pytest.raises(TemplateError) as caught:
        render_command(template, context, step_id="s")

    assert "not allowed in the sandbox" in str(caught.value)
    assert context == {"inputs": {"v": "original"}, "items": ["b", "a"]}


def test_sandbox_refusal_in_an_expression_is_a_template_error() -> None:
    context = {"inputs": {"v": "original"}}

    with pytest.raises(TemplateError, match="not allowed in the sandbox"):
        evaluate("inputs.update({'v': 'changed'})", context, step_id="s", field="expect")

    assert context == {"inputs": {"v": "original"}}


def test_sandbox_still_allows_reading_methods() -> None:
    assert evaluate("inputs.get('v', 'd') ~ inputs.get('w', 'd')", {"inputs": {"v": "x"}}) == "xd"
    assert evaluate("'a,b'.split(',')", {}) == ["a", "b"]


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rc == 0", True),
        ("rc != 0", False),
        ("out | length", 3),
        ("out | select('>', 1) | list", [2, 3]),
        ("out[0] + 0.5", 1.5),
        ("stdout | trim", "hello"),
        ("none", None),
        ("{'a': rc}", {"a": 0}),
    ],
)
def test_evaluate_returns_native_values(expression: str, expected: Any, wrapped: bool) -> None:
    source = "{{ " + expression + " }}" if wrapped else expression
    context = {"rc": 0, "out": [1, 2, 3], "stdout": " hello\n"}

    result = evaluate(source, context)

    assert result == expected
    assert type(result) is type(expected)


def test_evaluate_accepts_whitespace_around_the_braces() -> None:
    assert evaluate("  {{ 1 + 1 }}\n", {}) == 2


def test_evaluate_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError) as caught:
        evaluate("rc ==", {"rc": 0}, step_id="s", field="expect")

    assert str(caught.value).startswith("step 's' expect: ")


# --------------------------------------------------------------------------- Cairn's tests


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'4.19.113-300.el7' is version('4.19.113', '>=')", True),
        ("'4.19.9' is version('4.19.113', '<')", True),
        ("'4.19.9' is version('4.19.113', 'lt')", True),
        ("'4.19.113' is version('4.19.9', '<')", False),
        ("'5.2' is version('4.16', '>')", True),
        ("'5.2' is version('4.16', 'gt')", True),
        ("'4.16' is version('5.2', '>')", False),
        ("'1.10' is version('1.9', '>')", True),
        ("'2.0' is version('2.0')", True),
        ("'2.0' is version('2.0', '==')", True),
        ("'2.0' is version('2.1', 'ne')", True),
        ("'2.0' is version('2.0', '<=')", True),
        ("'2.0' is version('2.0', '!=')", False),
    ],
)
def test_version_test_compares_numerically(expression: str, expected: bool) -> None:
    assert evaluate(expression, {}) is expected


def test_version_test_with_unknown_operator_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="unknown operator '~'"):
        evaluate("'1.0' is version('2.0', '~')", {}, step_id="s", field="when")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'nginx: active' is match('nginx')", True),
        ("'nginx: active' is match('active')", False),  # match anchors at the start
        ("'nginx: active' is search('active')", True),
        ("'nginx: active' is search('^active')", False),
        ("'v1.2' is match('v\\\\d+\\\\.\\\\d+$')", True),
        ("42 is match('4')", True),  # non-strings are matched as text
    ],
)
def test_match_and_search_tests(expression: str, expected: bool) -> None:
    assert evaluate(expression, {}) is expected


# --------------------------------------------------------------------------- Cairn's filters


def test_regex_search_returns_the_match_or_a_group() -> None:
    text = "kernel: 4.19.113\nuptime: 3 days\n"
    ctx = {"t": text}

    assert evaluate("t | regex_search('\\\\d+ days')", ctx) == "3 days"
    assert evaluate("t | regex_search('^uptime: (\\\\d+)', 1)", ctx) == "3"
    assert evaluate("t | regex_search('kernel: (?P<v>[\\\\d.]+)', 'v')", ctx) == "4.19.113"
    assert evaluate("t | regex_search('missing')", ctx) is None


def test_regex_findall_returns_every_match() -> None:
    ctx = {"t": "eth0 up\neth1 down\neth2 up\n"}

    assert evaluate("t | regex_findall('^(eth\\\\d) up$')", ctx) == ["eth0", "eth2"]
    assert evaluate("t | regex_findall('nothing')", ctx) == []


def test_regex_replace_replaces_every_match() -> None:
    ctx = {"t": "a1b22c333"}

    assert evaluate("t | regex_replace('\\\\d+', '#')", ctx) == "a#b#c#"
    assert evaluate("t | regex_replace('(\\\\d)+', '<\\\\1>')", ctx) == "a<1>b<2>c<3>"
    assert evaluate("t | regex_replace('\\\\d')", ctx) == "abc"


def test_to_json_is_sorted_and_round_trips_through_from_json() -> None:
    ctx = {"data": {"b": [1, 2], "a": "x"}}

    assert evaluate("data | to_json", ctx) == '{"a": "x", "b": [1, 2]}'
    assert evaluate("(data | to_json | from_json) == data", ctx) is True
    assert evaluate("'{\"n\": 3}' | from_json", {}) == {"n": 3}


def test_from_json_of_invalid_text_is_a_template_error() -> None:
    with pytest.raises(TemplateError) as caught:
        evaluate("stdout | from_json", {"stdout": "not json"}, step_id="s", field="expect")

    assert "JSONDecodeError" in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'30m' | duration", 1800.0),
        ("'1h30m' | duration", 5400.0),
        ("'500ms' | duration", 0.5),
        ("90 | duration", 90.0),
    ],
)
def test_duration_filter_gives_seconds(expression: str, expected: float) -> None:
    assert evaluate(expression, {}) == expected


def test_duration_filter_rejects_text_that_is_no_duration() -> None:
    with pytest.raises(TemplateError, match="not a duration"):
        evaluate("'soon' | duration", {}, step_id="s", field="when")


def test_cairn_filters_work_in_commands_and_stay_quoted(workdir: Path) -> None:
    command = render_command(SHOW + "{{ t | regex_findall('\\\\S+') }}", {"t": "a;b $(touch owned)"})

    assert bash(command, workdir) == "3\n<a;b>\n<$(touch>\n<owned)>\n"
    assert not (workdir / "owned").exists()


# --------------------------------------------------------------------------- check()


@pytest.mark.parametrize(
    ("source", "expression", "fragment"),
    [
        ("echo {{ inputs.x ", False, "does not compile"),
        ("{% if rc %}ok", False, "does not compile"),
        ("rc ==", True, "does not compile"),
        ("{{ a }} {{ b", True, "does not compile"),
    ],
)
def test_check_reports_syntax_errors(source: str, expression: bool, fragment: str) -> None:
    result = check(source, expression=expression)

    assert len(result.errors) == 1
    assert fragment in result.errors[0]


def test_check_syntax_error_names_the_template_line() -> None:
    result = check("echo one\necho two\necho {{ x | }}\n")

    assert result.errors[0].startswith("does not compile:")
    assert result.errors[0].endswith("(template line 3)")


def test_check_reports_unknown_filters_and_tests_with_a_suggestion() -> None:
    result = check("{{ out | regex_serch('x') }}{% if v is versoin('1', '<') %}{% endif %}{{ v | zzqqxx }}")

    assert sorted(result.errors) == [
        "uses unknown filter 'regex_serch'; did you mean 'regex_search'?",
        "uses unknown filter 'zzqqxx'",
        "uses unknown test 'versoin'; did you mean 'version'?",
    ]


def test_check_knows_cairn_and_jinja_filters_and_tests() -> None:
    source = (
        "{{ a | unquoted }}{{ a | regex_search('x') }}{{ a | regex_findall('x') }}"
        "{{ a | regex_replace('x', 'y') }}{{ a | to_json | from_json }}{{ a | duration }}"
        "{{ a | default('d') | join(',') | length }}"
        "{{ a is match('x') }}{{ a is search('x') }}{{ a is version('1', '<') }}{{ a is defined }}"
    )

    assert check(source).errors == ()


def test_check_reports_free_variables_only() -> None:
    result = check(
        "{% set total = 0 %}"
        "{% for row in steps.scan.out %}{{ row.name }} {{ loop.index }} {{ total }}{% endfor %}"
        "{% for k, v in vars.items() %}{{ k }}={{ v }}{% endfor %}"
        "{{ target }} {{ now() }}"
    )

    assert result.names == frozenset({"steps", "vars", "target"})


def test_check_knows_macros_defined_in_the_template() -> None:
    result = check("{% macro age(s) %}{{ s // 60 }} min{% endmacro %}{{ age(steps.x.out) }} {{ h(1) }}")

    assert result.names == frozenset({"steps", "h"})  # the macro and its parameter are defined; h is not


def test_check_expression_reports_free_variables() -> None:
    assert check("out | length > threshold", expression=True).names == frozenset({"out", "threshold"})
    assert check("{{ rc == 0 }}", expression=True).names == frozenset({"rc"})


def test_check_reports_step_and_input_references() -> None:
    result = check(
        "{{ steps.detect_disk.out }} {{ steps['find_pid'].rc }} "
        "{{ inputs.path }} {{ inputs['limit'] }} {% if steps.other.finding %}x{% endif %}"
    )

    assert result.step_refs == frozenset({"detect_disk", "find_pid", "other"})
    assert result.input_refs == frozenset({"path", "limit"})


def test_check_expression_reports_references() -> None:
    result = check("steps.scan.finding and inputs.force", expression=True)

    assert result.step_refs == frozenset({"scan"})
    assert result.input_refs == frozenset({"force"})


def test_check_of_a_clean_template_has_no_errors() -> None:
    result = check("df -P {{ inputs.path }} | awk 'NR == 2 { print $5 }'")

    assert result.errors == ()
    assert result.names == frozenset({"inputs"})
    assert result.input_refs == frozenset({"path"})


# --------------------------------------------------------------------------- runtime errors, explained

TEXT_NOTE = "values parsed from output (table cells, regex groups, lines) are text"


def failure(expression: str, context: dict[str, Any], **kwargs: Any) -> str:
    """The message a step shows when ``expression`` fails as an ``expect`` of step 's'."""
    with pytest.raises(TemplateError) as caught:
        evaluate(expression, context, step_id="s", field="expect", **kwargs)
    return str(caught.value)


def test_adding_text_to_a_number_names_the_value_its_type_and_the_filter() -> None:
    message = failure("out[0].seconds + 3", {"out": [{"seconds": "12"}]})

    assert message == (
        "step 's' expect: cannot compute '12' + 3: '12' is text (str), 3 is a number (int); "
        f"{TEXT_NOTE}. Convert it first: (value | int) + 3"
    )


def test_text_that_is_no_number_gets_the_number_taken_out_and_the_join_operator() -> None:
    message = failure("'node' + 1", {})

    assert "cannot compute 'node' + 1: 'node' is text (str), 1 is a number (int)" in message
    assert "(value | regex_search('[0-9.]+') | float) + 1" in message
    assert "as written, 'node' is no number: | int would make it 0" in message
    assert message.endswith("; to join text, use ~ instead of +")
    assert evaluate("'node' | int", {}) == 0  # what the message says | int would do


def test_arithmetic_on_two_texts_converts_both() -> None:
    message = failure("a - b", {"a": "5", "b": "3"})

    assert "cannot compute '5' - '3': '5' is text (str), '3' is text (str)" in message
    assert "Convert it first: (a | int) - (b | int)" in message


def test_a_decimal_in_text_is_converted_with_float() -> None:
    assert "Convert it first: (value | float) * 1.5" in failure("load * 1.5", {"load": "0.75"})
    assert (
        evaluate("load * 2", {"load": "0.75"}) == "0.750.75"
    )  # text times a whole number repeats it: no error


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("none + 1", "cannot compute none + 1: the left value is none; a step that did not run or failed"),
        ("1 - steps.x.rc", "cannot compute 1 - none: the right value is none"),
    ],
)
def test_arithmetic_with_none_says_which_side_is_none(expression: str, expected: str) -> None:
    message = failure(expression, {"steps": {"x": {"rc": None}}})

    assert expected in message
    assert message.endswith("guard with when: steps.<id>.ok")


def test_arithmetic_on_other_types_names_them_without_a_text_hint() -> None:
    message = failure("out + 3", {"out": [1, 2]})

    assert (
        message == "step 's' expect: cannot compute [1, 2] + 3: + does not work on a list and a number (int)"
    )


def test_shown_values_are_cut_to_40_characters() -> None:
    message = failure("long + 1", {"long": "x" * 100})

    assert "cannot compute '" + "x" * 38 + "… + 1" in message
    assert "x" * 39 not in message


@pytest.mark.parametrize(
    ("expression", "op"),
    [("10 / out", "/"), ("10 // out", "//"), ("10 % out", "%"), ("10.0 / out", "/")],
)
def test_division_by_zero_shows_the_values_and_keeps_python_s_reason(expression: str, op: str) -> None:
    message = failure(expression, {"out": 0})

    assert f"cannot compute {expression.split(maxsplit=1)[0]} {op} 0 (ZeroDivisionError: " in message
    assert message.endswith(f"guard the divisor, e.g. (a {op} b) if b else 0")


def test_sum_of_a_text_column_names_the_item_and_the_conversion() -> None:
    rows = [{"user": "alice", "count": "3"}, {"user": "bob", "count": "12"}]

    message = failure("out | sum(attribute='count') < 10", {"out": rows})

    assert message == (
        "step 's' expect: sum(attribute='count'): item 0 has count '3', text (str), not a number; "
        f"{TEXT_NOTE}. Convert before summing: map(attribute='count') | map('int') | sum"
    )
    assert "TypeError" not in message
    assert "unsupported operand" not in message


def test_sum_names_the_first_item_that_is_no_number() -> None:
    rows = [{"count": 3}, {"count": 4}, {"count": "12"}, {"count": "x"}]

    assert "item 2 has count '12'" in failure("out | sum(attribute='count')", {"out": rows})


def test_sum_after_map_suggests_map_int() -> None:
    message = failure("out | map(attribute='age') | sum", {"out": [{"age": "30"}, {"age": "4"}]})

    assert message.startswith("step 's' expect: sum: item 0 is '30', text (str), not a number;")
    assert message.endswith("Convert before summing: map('int') | sum")


@pytest.mark.parametrize(
    ("cells", "total"),
    [(["3", "12"], 15), (["0.5", "1.25"], 1.75), (["12%", "7%"], 19.0)],
)
def test_the_suggested_conversion_for_sum_gives_the_total(cells: list[str], total: float) -> None:
    rows = [{"use": cell} for cell in cells]
    message = failure("out | sum(attribute='use')", {"out": rows})

    suggested = message.split("Convert before summing: ")[1].split(" (as written")[0]

    assert evaluate("out | " + suggested, {"out": rows}) == total


def test_sum_of_cells_with_a_unit_says_int_would_make_them_0() -> None:
    message = failure("out | sum(attribute='use')", {"out": [{"use": "12%"}]})

    assert "map(attribute='use') | map('regex_search', '[0-9.]+') | map('float') | sum" in message
    assert message.endswith("(as written, '12%' is no number: | int would make it 0)")


def test_sum_of_rows_asks_for_a_column() -> None:
    message = failure("out | sum", {"out": [{"user": "alice", "count": "3"}]})

    assert "sum: item 0 is {'count': '3', 'user': 'alice'}, a row (dict), not a number" in message
    assert message.endswith("this row has user, count")


def test_sum_with_a_none_item_suggests_a_default() -> None:
    message = failure("out | sum", {"out": [1, None]})

    assert message.endswith(
        "item 1 is none, not a number; turn none into 0 first: map('default', 0, true) | sum"
    )
    assert evaluate("out | map('default', 0, true) | sum", {"out": [1, None]}) == 1


def test_sum_still_sums_numbers_attributes_and_a_start() -> None:
    assert evaluate("[1, 2, 3] | sum", {}) == 6
    assert evaluate("out | sum(attribute='n', start=10)", {"out": [{"n": 1}, {"n": 2.5}]}) == 13.5
    assert evaluate("[] | sum", {}) == 0


@pytest.mark.parametrize(
    ("expression", "compared", "example"),
    [
        ("out[0].seconds > 3", "text (str) with a number (int) using '>'", "(value | int) > limit"),
        (
            "out | selectattr('seconds', 'gt', 3) | list",
            "text (str) with a number (int) using '>'",
            "(value | int) > limit",
        ),
        ("3 <= out[0].seconds", "a number (int) with text (str) using '<='", "limit <= (value | int)"),
    ],
)
def test_comparing_text_with_a_number_names_both_types_but_no_invented_values(
    expression: str, compared: str, example: str
) -> None:
    message = failure(expression, {"out": [{"seconds": "12"}]})

    assert f"cannot compare {compared} (only their types are known, not their values)" in message
    assert TEXT_NOTE in message
    assert message.endswith(f"Convert the text first: {example}, or | float for decimals")
    assert "'12'" not in message  # Jinja does not hand Cairn the values of a comparison
    assert "not supported between instances" not in message


def test_comparing_none_says_where_none_comes_from() -> None:
    message = failure("steps.x.out > 1", {"steps": {"x": {"out": None}}})

    assert "cannot compare none with a number (int) using '>'" in message
    assert message.endswith("a step that did not run or failed has out none: guard with when: steps.<id>.ok")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "out[0]",
            "list object has no element 0: the list is empty (out is [] when the output has no rows, lines or matches); test it first (… | length > 0) or use … | first | default('')",
        ),
        ("lines[5]", "list object has no element 5: the list has 2 items, 0 to 1 (-1 is the last)"),
        ("rows[0].pid", "'dict object' has no attribute 'pid'; its keys are user, count"),
        ("vars.rack", "'dict object' has no attribute 'rack'; it is empty"),
        (
            "rows.user",
            "'list object' has no attribute 'user'; it is a list of 1 item: take one ([0].user) or all (map(attribute='user'))",
        ),
        (
            "steps.x.out[0]",
            "None has no element 0: the value is none; a step that did not run or failed has out none: guard with when: steps.<id>.ok",
        ),
        (
            "stdout.pid",
            "'str object' has no attribute 'pid'; it is text: a step's out is text unless the step has a parse (table, json, regex)",
        ),
    ],
)
def test_missing_elements_and_keys_say_what_there_is_instead(expression: str, expected: str) -> None:
    context = {
        "out": [],
        "lines": ["a", "b"],
        "rows": [{"user": "alice", "count": "3"}],
        "vars": {},
        "steps": {"x": {"out": None}},
        "stdout": "PID STAT\n7 Z",
    }

    assert failure(expression, context) == f"step 's' expect: {expected}"


def test_missing_elements_still_test_as_undefined() -> None:
    assert evaluate("out[5] is defined or vars.rack is defined", {"out": [], "vars": {}}) is False
    assert evaluate("out[0] | default('none found')", {"out": []}) == "none found"


@pytest.mark.parametrize(
    ("expression", "hint", "reason"),
    [
        (
            "steps.x.out | length",
            "the value is none where a list or text is needed; a step that did not run or failed has out none",
            "(TypeError: object of type 'NoneType' has no len())",
        ),
        (
            "steps.x.out | join(',')",
            "the value is none where a list or text is needed",
            "(TypeError: 'NoneType' object is not iterable)",
        ),
        (
            "range(n)",
            f"text (str) where a number is needed; {TEXT_NOTE}. Convert it first, e.g. range(value | int)",
            "(TypeError: 'str' object cannot be interpreted as an integer)",
        ),
        (
            "n | round",
            "Convert it first, e.g. value | float | round(1)",
            "(TypeError: type str doesn't define __round__ method)",
        ),
        (
            "'%.1f' | format(n)",
            f"the format needs a number, not text (str); {TEXT_NOTE}. Convert it first, e.g. '%.1f' | format(value | float)",
            "(TypeError: must be real number, not str)",
        ),
        (
            "'{:.1f}'.format(n)",
            "the format needs a number, not text (str)",
            "(ValueError: Unknown format code 'f' for object of type 'str')",
        ),
    ],
)
def test_common_python_errors_get_a_hint_and_keep_their_reason(
    expression: str, hint: str, reason: str
) -> None:
    message = failure(expression, {"steps": {"x": {"out": None}}, "n": "3"})

    assert hint in message
    assert message.endswith(reason)


def test_formatting_text_with_percent_shows_the_value_and_the_conversion() -> None:
    message = failure("'%.1f' % out", {"out": "3.25"})

    assert message == (
        "step 's' expect: cannot format '3.25' with '%.1f': '3.25' is text (str), the format needs a number; "
        f"{TEXT_NOTE}. Convert it first: '%.1f' % (value | float)"
    )
    assert evaluate("'%.1f' % (value | float)", {"value": "3.25"}) == "3.2"


def test_other_errors_keep_python_s_words() -> None:
    assert failure("stdout | from_json", {"stdout": "{"}).startswith("step 's' expect: JSONDecodeError: ")


@pytest.mark.parametrize("field", ["run", "report", "when", "expect"])
def test_every_kind_of_template_explains_arithmetic_on_text(field: str) -> None:
    context = {"out": [{"pid": "7"}]}
    with pytest.raises(TemplateError) as caught:
        if field == "run":
            render_command("kill {{ out[0].pid + 1 }}", context, step_id="s")
        elif field == "report":
            render_text("next pid {{ out[0].pid + 1 }}", context, step_id="s", field=field)
        else:
            evaluate("out[0].pid + 1 > 7", context, step_id="s", field=field)

    assert str(caught.value).startswith(f"step 's' {field}: cannot compute '7' + 1: '7' is text (str)")


# --------------------------------------------------------------------------- secrets in messages

SECRET = "hunter2-9f8e7d6c5b4a39281706f5e4d3c2b1a0-tail"  # longer than the 40 characters shown


@pytest.mark.parametrize(
    "call",
    [
        lambda redact: evaluate("inputs.token + 1", {"inputs": {"token": SECRET}}, redact=redact),
        lambda redact: evaluate("[inputs.token] + 1", {"inputs": {"token": SECRET}}, redact=redact),
        lambda redact: evaluate(
            "vars[inputs.token]", {"inputs": {"token": SECRET}, "vars": {}}, redact=redact
        ),
        lambda redact: evaluate("[inputs.token] | sum", {"inputs": {"token": SECRET}}, redact=redact),
        lambda redact: render_command(
            "echo {{ inputs.token * 1.5 }}", {"inputs": {"token": SECRET}}, redact=redact
        ),
        lambda redact: render_text("{{ '%d' % inputs.token }}", {"inputs": {"token": SECRET}}, redact=redact),
    ],
)
def test_values_in_messages_are_redacted_before_they_are_cut(call: Callable[[Redactor], object]) -> None:
    with pytest.raises(TemplateError) as caught:
        call(Redactor([SECRET]))

    assert "***" in str(caught.value)
    assert SECRET[:8] not in str(caught.value)  # not even the part a 40-character cut would keep


def test_without_a_redactor_the_value_is_shown() -> None:
    with pytest.raises(TemplateError, match="cannot compute 'hunter2-9f8e7d6c5b"):
        evaluate("inputs.token + 1", {"inputs": {"token": SECRET}})


# --------------------------------------------------------------------------- through the CLI

SUM_A_COLUMN = """
    id: session-count
    title: Too many sessions
    severity: warning
    summary: Sums a table column without converting it.
    detect:
      - id: sessions
        title: Count sessions per user
        run: "printf 'USER COUNT\\\\nalice 3\\\\nbob 12\\\\n'"
        parse: table
        expect: out | sum(attribute='count') < 10
    """


def test_cli_step_line_explains_a_sum_over_a_text_column(
    cairn: Callable[..., subprocess.CompletedProcess[str]], runbook_dir: Callable[..., Path]
) -> None:
    folder = runbook_dir(SUM_A_COLUMN)

    done = cairn("run", "session-count", "--runbooks", str(folder))

    assert done.returncode == 2, done.stdout + done.stderr
    step_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("sessions"))
    assert "ERROR" in step_line
    assert (
        "step 'sessions' expect: sum(attribute='count'): item 0 has count '3', text (str), not a number; "
        f"{TEXT_NOTE}. Convert before summing: map(attribute='count') | map('int') | sum"
    ) in step_line
    assert "TypeError" not in done.stdout
    assert "unsupported operand" not in done.stdout


SECRET_IN_TEMPLATES = """
    id: secret-errors
    title: Secrets in failing templates
    severity: info
    summary: Every kind of template fails on a secret value.
    inputs:
      token: {type: string, secret: true}
    detect:
      - id: gate
        title: when
        when: inputs.token + 1 > 0
        run: "true"
      - id: check
        title: expect
        run: "true"
        expect: inputs.token * 2.5
      - id: summary
        title: report
        run: "true"
        report: "{{ inputs.token - 1 }}"
      - id: command
        title: run
        run: "echo {{ inputs.token / 2 }}"
      - id: lookup
        title: key
        run: "true"
        expect: "vars[inputs.token] == 1"
    """


def test_cli_redacts_secrets_in_template_errors_on_screen_and_in_the_journal(
    cairn: Callable[..., subprocess.CompletedProcess[str]],
    runbook_dir: Callable[..., Path],
    isolated_state: Path,
) -> None:
    folder = runbook_dir(SECRET_IN_TEMPLATES)

    done = cairn("run", "secret-errors", "--runbooks", str(folder), "-e", f"token={SECRET}")

    assert done.returncode == 2, done.stdout + done.stderr
    for step in ("gate", "check", "summary", "lookup"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(step))
        assert "'***'" in line, line
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("command"))
    assert "the operator / is given the secret input 'token'" in line, "a command only inserts it whole"
    shown = cairn("show-run", "last")
    stored = b"".join(path.read_bytes() for path in isolated_state.rglob("*") if path.is_file())
    for text in (done.stdout, done.stderr, shown.stdout):
        assert SECRET[:8] not in text
    assert SECRET[:8].encode() not in stored


# --------------------------------------------------------------------------- an outsider's text (issue 15)

HOSTILE_LABEL = "x; touch owned"


def _runbook_with_inputs() -> Runbook:
    runbook = check_text(
        "id: with-inputs\ntitle: t\nseverity: info\nsummary: s\n"
        "inputs:\n  token: {type: string, secret: true}\n  cmd: {type: string, default: ls}\n"
        "detect:\n  - {id: a, title: a, run: 'true'}\n"
    ).runbook
    assert runbook is not None
    return runbook


RUNBOOK_WITH_INPUTS = _runbook_with_inputs()


def alert_context(label: str = HOSTILE_LABEL) -> dict[str, Any]:
    """What an alert-started run's templates see: the alert's strings marked as an outsider's."""
    return {"alert": mark_untrusted({"labels": {"x": label, "job": "web"}, "annotations": {}}), "inputs": {}}


@pytest.mark.parametrize(
    "template",
    [
        "{{ alert.labels.x | unquoted }}",
        "{{ alert.labels.x | lower | unquoted }}",
        "{{ alert.labels.x | replace('a', 'b') | unquoted }}",
        "{{ alert.labels.x | regex_replace('a', 'b') | unquoted }}",
        "{{ ('' ~ alert.labels.x) | unquoted }}",
        "{{ alert.labels.x[0:] | unquoted }}",
        "{{ alert.labels.x.strip() | unquoted }}",
        "{{ '%s' | format(alert.labels.x) | unquoted }}",
        "{{ ('%s' % alert.labels.x) | unquoted }}",
        "{{ '{}'.format(alert.labels.x) | unquoted }}",
        "{{ alert.labels.x.split(';') | join(';') | unquoted }}",
        "{{ [alert.labels.x] | first | unquoted }}",
        "{{ alert.labels.values() | list | sort | last | unquoted }}",
        "{{ alert.labels | dictsort | map('last') | join(' ') | unquoted }}",
        "{% set y = alert.labels.x %}{{ y | unquoted }}",
        "{% for c in alert.labels.x %}{{ c | unquoted }}{% endfor %}",
        "{% macro m(v) %}{{ v | unquoted }}{% endmacro %}{{ m(alert.labels.x) }}",
        "{{ alert.labels | map('unquoted') | join }}",
        "{{ [[alert.labels.x]] | unquoted }}",
        "{{ alert.labels.x | list | batch(2) | list | unquoted }}",
        "{{ {'k': [alert.labels.x]} | unquoted }}",
    ],
)
def test_unquoted_refuses_an_outsiders_text_however_it_was_made(template: str, workdir: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        render_command("echo " + template, alert_context(), step_id="s")
    assert "| unquoted was given text an outsider set" in str(caught.value)
    assert 'allow_unquoted: "<the reason>"' in str(caught.value)


def test_unquoted_refuses_bytes_whose_python_spelling_could_open_double_quotes() -> None:
    with pytest.raises(TemplateError, match="takes text, not bytes"):
        render_command("echo {{ 'x'.encode() | unquoted }}", {})
    with pytest.raises(TemplateError, match="takes text, not bytes"):  # bytes cannot carry the mark
        render_command("echo {{ alert.labels.x.encode() | unquoted }}", alert_context("'$(touch owned)"))


def test_unquoted_takes_an_outsiders_text_when_the_step_says_why(workdir: Path) -> None:
    with rendering(RenderPolicy(allow_unquoted=True)):
        command = render_command("echo {{ alert.labels.job | unquoted }}", alert_context(), step_id="s")
    assert command == "echo web"


def test_an_outsiders_text_is_still_quoted_without_unquoted(workdir: Path) -> None:
    command = render_command(SHOW + "{{ alert.labels.x }} {{ alert.labels.x | upper }}", alert_context())
    assert bash(command, workdir) == "2\n<x; touch owned>\n<X; TOUCH OWNED>\n"
    assert not (workdir / "owned").exists()


def test_a_human_runs_text_is_not_an_outsiders() -> None:
    context = {"alert": None, "inputs": marked_inputs(RUNBOOK_WITH_INPUTS, {"cmd": "ls -l"}, untrusted=False)}
    assert render_command("{{ inputs.cmd | unquoted }}", context) == "ls -l"
    untrusted = {"inputs": marked_inputs(RUNBOOK_WITH_INPUTS, {"cmd": "ls -l"}, untrusted=True)}
    with pytest.raises(TemplateError, match="outsider"):
        render_command("{{ inputs.cmd | unquoted }}", untrusted)


@pytest.mark.parametrize(
    "template",
    [
        "rm {{ alert.labels.x }}",
        "rm -f {{ alert.labels.x }}",
        "rm {{ alert.labels.x }}/tmp",
        "echo ok; rm {{ alert.labels.x }}",
        "rm -- a; rm {{ alert.labels.x }}",
        "rm {{ [alert.labels.x] }}",
        'rm "{{ alert.labels.x }}"',
        "x=$(rm {{ alert.labels.x }})",
    ],
)
def test_an_outsiders_text_starting_with_a_dash_may_not_begin_a_word(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_command(template, alert_context("-rf"), step_id="clean")
    assert str(caught.value).startswith("step 'clean' run: -rf comes from an alert")
    assert "would read it as an option; put -- before it" in str(caught.value)


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("rm -- {{ alert.labels.x }}", "rm -- -rf"),
        ("rm -f -- {{ alert.labels.x }}", "rm -f -- -rf"),
        ("grep --regexp={{ alert.labels.x }} f", "grep --regexp=-rf f"),
        ("echo x{{ alert.labels.x }}", "echo x-rf"),
        ("echo {{ alert.labels.job }}", "echo web"),
    ],
)
def test_a_dash_is_fine_after_double_dash_or_inside_a_word(template: str, rendered: str) -> None:
    assert render_command(template, alert_context("-rf")) == rendered


def test_a_dash_from_a_human_is_the_humans_business() -> None:
    assert render_command("rm {{ inputs.x }}", {"inputs": {"x": "-rf"}}) == "rm -rf"


def test_an_outsiders_pattern_is_refused() -> None:
    with pytest.raises(TemplateError, match="the regular expression comes from an alert"):
        evaluate("'aaa' is match(alert.labels.x)", alert_context("(a+)+$"))


def test_a_shell_modules_arguments_refuse_an_outsiders_text() -> None:
    with pytest.raises(TemplateError, match="arguments become a command line"):
        render_data(
            {"cmd": "rm {{ alert.labels.x }}"},
            alert_context(),
            step_id="s",
            field="ansible.args",
            shell_text=True,
        )
    assert render_data({"path": "/x/{{ alert.labels.job }}"}, alert_context(), shell_text=False) == {
        "path": "/x/web"
    }


# --------------------------------------------------------------------------- secrets never on a command line


def secret_context(value: str = "hunter2 with 'quotes' and $HOME") -> dict[str, Any]:
    return {"inputs": marked_inputs(RUNBOOK_WITH_INPUTS, {"token": value, "cmd": "ls"}, untrusted=False)}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("curl -H {{ inputs.token }}", 'curl -H "$CAIRN_SECRET_TOKEN"'),
        ("curl -H {{ inputs.token | quote }}", 'curl -H "$CAIRN_SECRET_TOKEN"'),
        ("curl -H {{ inputs.token | default('') }}", 'curl -H "$CAIRN_SECRET_TOKEN"'),
        ("curl -H {{ 'Bearer ' ~ inputs.token }}", "curl -H 'Bearer '\"$CAIRN_SECRET_TOKEN\""),
        ('curl -H "Bearer {{ inputs.token | unquoted }}"', 'curl -H "Bearer ${CAIRN_SECRET_TOKEN}"'),
        ("curl -H 'Bearer {{ inputs.token | unquoted }}'", "curl -H 'Bearer '\"$CAIRN_SECRET_TOKEN\"''"),
        ("curl -u me:{{ inputs.token | unquoted }}", 'curl -u me:"$CAIRN_SECRET_TOKEN"'),
        ("echo \"it's\" '{{ inputs.token | unquoted }}'", "echo \"it's\" ''\"$CAIRN_SECRET_TOKEN\"''"),
        ("{% if inputs.token %}yes{% endif %}", "yes"),
        ('echo "token {{ inputs.token }}"', 'echo "token ${CAIRN_SECRET_TOKEN}"'),
        ("echo 'token {{ inputs.token }}'", "echo 'token '\"$CAIRN_SECRET_TOKEN\"''"),
    ],
)
def test_a_secret_renders_as_a_reference_to_its_variable(template: str, rendered: str) -> None:
    assert render_command(template, secret_context()) == rendered


def test_the_reference_gives_the_program_the_value_through_its_environment(workdir: Path) -> None:
    secret = "hunter2 with 'quotes' and $HOME"
    command = render_command(
        SHOW + "{{ inputs.token }} {{ 'Bearer ' ~ inputs.token }} \"B {{ inputs.token | unquoted }}\" "
        "'B {{ inputs.token | unquoted }}' B{{ inputs.token | unquoted }} \"B {{ inputs.token }}\"",
        secret_context(secret),
    )
    assert secret not in command
    done = subprocess.run(
        ["bash", "-c", command],
        env={"PATH": "/usr/bin:/bin", "CAIRN_SECRET_TOKEN": secret},
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        done.stdout
        == f"6\n<{secret}>\n<Bearer {secret}>\n<B {secret}>\n<B {secret}>\n<B{secret}>\n<B {secret}>\n"
    )


@pytest.mark.parametrize(
    "template",
    [
        "echo {{ inputs.token | upper }}",
        "echo {{ inputs.token[0:3] }}",
        "echo {{ inputs.token[0] }}",
        "echo {{ inputs.token.upper() }}",
        "echo {{ '%s' % inputs.token }}",
        "echo {{ inputs.token + 'x' }}",
        "echo {{ '{}'.format(inputs.token) }}",
        "echo {% for c in inputs.token %}{{ c }}{% endfor %}",
        "echo {{ inputs.token | replace('h', 'H') }}",
        "echo {{ [inputs.token] | join }}",
        "echo {{ inputs.token | to_json }}",
        "echo {{ {'t': inputs.token} }}",
        "echo {{ [[inputs.token]] | join }}",
        "echo {{ 'x' ~ [inputs.token] }}",
    ],
)
def test_anything_but_inserting_a_secret_whole_is_refused_in_a_command(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_command(template, secret_context(), step_id="call")
    assert "secret input 'token'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_text_templates_keep_the_secrets_value() -> None:
    context = secret_context("hunter2")
    assert render_text("token {{ inputs.token | upper }}", context) == "token HUNTER2"
    assert evaluate("inputs.token == 'hunter2'", context) is True


def test_a_secret_is_a_secret_however_it_is_marked() -> None:
    secret = Secret("v", "api_key")
    assert (secret.env_name, secret.reference, str(secret)) == (
        "CAIRN_SECRET_API_KEY",
        '"$CAIRN_SECRET_API_KEY"',
        "v",
    )
    assert pickle.loads(pickle.dumps(secret)).input_name == "api_key"


def test_the_last_guard_refuses_a_command_that_still_holds_a_secrets_value() -> None:
    step = Step("call", "c", RunAction("x"))
    context = secret_context("hunter2")
    with pytest.raises(TemplateError) as caught:
        render_task(step, "curl -u me:hunter2 api", context, base_dir=Path("."))
    assert str(caught.value) == (
        "step 'call' run: the value of secret input 'token' would be on the command line, where every user "
        'of the host can read it; write {{ inputs.token }} on its own (it becomes "$CAIRN_SECRET_TOKEN", a '
        "variable of the command's environment), or join text to it with ~"
    )
    task = render_task(step, 'curl -u me:"$CAIRN_SECRET_TOKEN" api', context, base_dir=Path("."))
    assert isinstance(task, Shell)
    assert task.env == {"CAIRN_SECRET_TOKEN": "hunter2"}
    assert "hunter2" not in repr(task)


def test_a_short_secret_is_not_searched_for_in_ordinary_text() -> None:
    context = secret_context("t")
    command = render_command("cat /etc/hostname; echo {{ inputs.token }}", context, step_id="s")
    task = render_task(Step("s", "s", RunAction("x")), command, context, base_dir=Path("."))
    assert isinstance(task, Shell)
    assert (task.command, task.env) == (
        'cat /etc/hostname; echo "$CAIRN_SECRET_TOKEN"',
        {"CAIRN_SECRET_TOKEN": "t"},
    )
    with pytest.raises(TemplateError, match="a dict written out whole is given the secret input 'token'"):
        render_command("echo {{ {'k': inputs.token} }}", context)
