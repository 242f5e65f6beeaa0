"""Templates and expressions: shell-quoting, the sandbox, Cairn's filters and tests, static checks."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TemplateError
from engine.expr import check, evaluate, render_command, render_text

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
