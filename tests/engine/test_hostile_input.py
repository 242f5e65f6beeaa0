"""Hostile runbook text: the loader returns problems a user can act on; it never raises or hangs.

Runbooks are untrusted (an alert can name one, a colleague can send one), so every
way YAML, Jinja or a regular expression can blow up must come back as a ``Problem``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import Problem, TemplateError
from engine.core.expr import render_text
from engine.core.loader import LoadResult, check_file, check_text
from engine.core.yamlsource import MAX_BYTES, MAX_DEPTH
from tests.conftest import FIXTURES, RUNBOOKS
from tests.engine.test_template_bounds import finish

BRANCH_CLEANUP = (RUNBOOKS / "branch-cleanup.yaml").read_text(encoding="utf-8")
MINIMAL = (FIXTURES / "runbooks" / "valid" / "01_minimal.yaml").read_text(encoding="utf-8")
HEAD = "id: probe\ntitle: t\nseverity: info\nsummary: s\n"


def rejected(source: str | bytes) -> list[Problem]:
    """The problems of ``source``, which must be rejected (and must not raise)."""
    result = check_text(source)
    assert isinstance(result, LoadResult)
    assert result.runbook is None
    assert result.problems, "a rejected runbook must say why"
    return list(result.problems)


def only(source: str | bytes) -> Problem:
    """The one problem of ``source`` besides the required keys a fragment naturally lacks."""
    problems = [p for p in rejected(source) if not p.message.startswith("missing required key")]
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def is_consistent(result: LoadResult) -> bool:
    """A runbook, or at least one problem; never both, never neither."""
    return isinstance(result, LoadResult) and (result.runbook is None) == bool(result.problems)


# --------------------------------------------------------------------------- not YAML, not text, nothing at all


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("id: [unclosed\ntitle: {\n", 2, 6, "did not find expected ',' or ']'"),
        ("id: x\ntitle: key: value\n", 2, 11, "mapping values are not allowed"),
        ("id: x\n\ttitle: y\n", 2, 1, "tab character"),
        ('id: "open\n', 2, 1, "found unexpected end of stream"),
    ],
)
def test_not_yaml_is_an_invalid_yaml_problem_at_its_line(
    text: str, line: int, column: int, words: str
) -> None:
    problem = only(text)
    assert problem.message.startswith("invalid YAML: ")
    assert words in problem.message
    assert (problem.line, problem.column, problem.pointer) == (line, column, "")


def test_binary_junk_with_nul_bytes() -> None:
    problem = only(bytes(range(256)) * 4)
    assert problem.message == "binary data (a NUL byte): a runbook is UTF-8 YAML text"
    assert problem.line == 1


def test_a_nul_byte_is_reported_on_its_line() -> None:
    problem = only(b"id: x\ntitle: y\nsummary: \x00\x01\x02")
    assert "binary data (a NUL byte)" in problem.message
    assert problem.line == 3


def test_invalid_utf8_names_the_byte_and_the_fix() -> None:
    problem = only("id: x\ntitle: Café\n".encode("latin-1"))
    assert problem.message == "not UTF-8 text (byte 0xe9); save it as UTF-8"
    assert problem.line == 2


def test_lone_surrogates_in_text_are_a_problem_not_a_crash() -> None:
    # What stdin decoded with errors="surrogateescape" holds for a Latin-1 file.
    problem = only("id: x\ntitle: caf\udce9\n")
    assert "UTF-8" in problem.message


@pytest.mark.parametrize("source", ["", b"", "   \n\n\t\n", "# just a comment\n  # another\n", "\ufeff"])
def test_empty_or_comment_only_files_say_what_a_runbook_needs(source: str | bytes) -> None:
    problem = only(source)
    assert problem.message == (
        "file is empty: a runbook needs at least id, title, severity, summary and detect"
    )
    assert (problem.line, problem.column, problem.pointer) == (1, 1, "")


def test_empty_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    (problem,) = check_file(path).problems
    assert problem.file == str(path)
    assert problem.message.startswith("file is empty")


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("- id: x\n- id: y\n", "a list"),
        ("hello\n", "a single string"),
        ("'quoted'\n", "a single string"),
    ],
)
def test_a_runbook_must_be_a_mapping(text: str, holds: str) -> None:
    problem = only(text)
    assert problem.message == (
        f"a runbook is a mapping of keys (id, title, severity, …), but this file holds {holds}"
    )
    assert (problem.line, problem.pointer) == (1, "")


@pytest.mark.parametrize("text", ["~\n", "null\n"])
def test_a_top_level_null_is_described_in_yaml_words(text: str) -> None:
    message = only(text).message
    assert message.startswith("a runbook is a mapping of keys")
    assert "NoneType" not in message  # the author wrote YAML, not Python


# --------------------------------------------------------------------------- YAML features turned against the loader


def test_duplicate_keys_name_the_key_and_both_lines() -> None:
    problem = only("id: first\ntitle: t\nid: second\n")
    assert problem.message == "duplicate key 'id' (first at line 1); keep one of them"
    assert (problem.line, problem.column, problem.pointer) == (3, 1, "/id")


def billion_laughs(levels: int = 10, width: int = 10) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_expansion() -> None:
    # 10 levels of 10 aliases: 10**10 values once expanded; must come back at once.
    problem = only(billion_laughs())
    assert "alias bomb" in problem.message
    assert "write the values out" in problem.message
    assert problem.line == 1


def test_legitimate_aliases_still_load() -> None:
    text = MINIMAL + "tags: &t [a, b]\nsymptoms: *t\n"
    runbook = check_text(text).runbook
    assert runbook is not None
    assert runbook.tags == runbook.symptoms == ("a", "b")


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: &a [*a]\n", 1), ("&a {x: *a}\n", 1), ("id: x\nsteps: &s\n  - *s\n", 2)],
)
def test_recursive_alias(text: str, line: int) -> None:
    problem = only(text)
    assert problem.message == "recursive YAML alias: a value contains itself"
    assert problem.line == line


def test_undefined_alias() -> None:
    problem = only("id: *nowhere\n")
    assert problem.message.startswith("undefined YAML alias *nowhere:")
    assert problem.line == 1


@pytest.mark.parametrize(
    "text",
    ["[" * 10_000 + "]" * 10_000 + "\n", "- " * 10_000 + "x\n", "a: " + "{b: " * 10_000 + "c" + "}" * 10_000],
    ids=["flow-sequences", "block-sequences", "flow-mappings"],
)
def test_nesting_past_libyaml_limit(text: str) -> None:
    problem = only(text)
    assert problem.message.startswith("invalid YAML")
    assert "depth" in problem.message
    assert problem.line == 1


def test_nesting_past_max_depth() -> None:
    problem = only("[" * 100 + "]" * 100 + "\n")
    assert problem.message == f"nested more than {MAX_DEPTH} levels deep"
    assert problem.line == 1


def test_nesting_past_max_depth_in_block_style_points_at_the_deep_line() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "leaf\n"
    problem = only(text)
    assert problem.message == f"nested more than {MAX_DEPTH} levels deep"
    assert problem.line == MAX_DEPTH + 1


def test_a_file_over_max_bytes_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    filler = "# " + "x" * 78 + "\n"
    path.write_text(MINIMAL + filler * (MAX_BYTES // len(filler) + 1), encoding="utf-8")
    (problem,) = check_file(path).problems
    size = path.stat().st_size
    assert size > MAX_BYTES
    assert problem.message == f"file is {size:,} bytes; runbooks are limited to {MAX_BYTES:,} bytes"
    assert (problem.line, problem.pointer) == (1, "")


def test_text_over_max_bytes_is_not_parsed() -> None:
    problem = only(b"#" * (MAX_BYTES + 1))
    assert f"{MAX_BYTES:,} bytes" in problem.message


def test_an_unreadable_path_is_a_problem(tmp_path: Path) -> None:
    for path, message in (
        (tmp_path / "missing.yaml", "cannot read file: "),
        (tmp_path, "not a regular file"),
    ):
        result = check_file(path)
        assert result.runbook is None
        (problem,) = result.problems
        assert problem.message.startswith(message)


def test_several_documents() -> None:
    problem = only(MINIMAL + "---\n" + MINIMAL)
    assert problem.message == "several YAML documents (---) in one file: put one runbook per file"
    assert problem.line == MINIMAL.count("\n") + 1


def test_a_leading_document_marker_is_one_document() -> None:
    assert check_text("---\n" + MINIMAL).runbook is not None


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object:os.system {}",
        "!!python/object/apply:os.system ['touch MARKER']",
        "!!python/name:os.system ''",
    ],
)
def test_python_tags_are_refused_and_never_run(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "pwned"
    problem = only(f"id: {value.replace('MARKER', str(marker))}\ntitle: t\n")
    assert "is not allowed in runbooks; remove it" in problem.message
    assert "python/" in problem.message
    assert (problem.line, problem.pointer) == (1, "/id")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "tag"), [("!vault |\n  $ANSIBLE_VAULT;1.1", "!vault"), ("!include other.yaml", "!include")]
)
def test_custom_tags_are_refused(value: str, tag: str) -> None:
    problem = only(f"id: x\ntitle: {value}\n")
    assert problem.message == f"YAML tag {tag} is not allowed in runbooks; remove it"
    assert (problem.line, problem.pointer) == (2, "/title")


def test_merge_keys_are_refused() -> None:
    text = "x-defaults: &d {title: t, run: x}\ndetect:\n  - <<: *d\n    id: a\n"
    problems = [
        p
        for p in rejected(text)
        if not p.message.startswith(("missing required key", "unknown key 'x-defaults'"))
    ]
    # The step lost its merged keys: nothing more is said about it than the merge key itself.
    assert len(problems) == 1, [str(p) for p in problems]
    (problem,) = problems
    assert problem.message == "YAML merge keys (<<) are not supported; write the keys out"
    assert (problem.line, problem.column) == (3, 5)


@pytest.mark.parametrize(
    ("text", "shown", "line"),
    [
        ("1: a\n", "1", 1),
        ("id: x\ntrue: b\n", "true", 2),
        ("null: d\n", "null", 1),
        ("? [a, b]\n: c\n", "a collection", 1),
    ],
)
def test_non_string_keys(text: str, shown: str, line: int) -> None:
    problem = only(text)
    assert problem.message == f"key {shown!r} must be a string; quote it"
    assert problem.line == line


def test_a_byte_order_mark_loads_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BRANCH_CLEANUP.encode("utf-8"))
    result = check_file(path)
    assert result.problems == ()
    assert result.runbook is not None
    assert result.runbook.id == "branch-cleanup"
    assert not result.runbook.source_text.startswith("\ufeff")
    assert check_text("\ufeff" + MINIMAL).runbook is not None


# --------------------------------------------------------------------------- values that overflow the tools behind the loader


def test_an_integer_too_long_to_convert() -> None:
    # Python refuses int("1" * 5000) (CVE-2020-10735 limit); the loader must say so, not crash.
    problems = rejected("id: x\ntitle: " + "1" * 5000 + "\n")
    assert any(p.line == 2 for p in problems)


def test_a_timeout_too_large_for_a_float() -> None:
    text = HEAD + "detect:\n  - {id: a, title: t, run: x, timeout: " + "9" * 400 + "}\n"
    problems = rejected(text)
    assert any(p.pointer == "/detect/0/timeout" for p in problems)


@pytest.mark.parametrize(
    "pattern", ["a{99999999999}", "(" * 5000 + ")" * 5000], ids=["huge-repeat", "deep-groups"]
)
def test_a_regex_the_re_module_cannot_compile(pattern: str) -> None:
    text = HEAD + f"detect:\n  - {{id: a, title: t, run: x, parse: {{regex: '{pattern}'}}}}\n"
    problem = only(text)
    assert problem.pointer == "/detect/0/parse/regex"
    assert problem.message.startswith("regular expression does not compile")


@pytest.mark.parametrize(
    ("field", "step"),
    [
        ("expect", "run: x, expect: '" + "(" * 1000 + "out" + ")" * 1000 + " == 1'"),
        ("when", "run: x, when: '" + "not " * 1000 + "true'"),
        ("run", "run: '" + "{% if true %}" * 1000 + "x" + "{% endif %}" * 1000 + "'"),
    ],
    ids=["expect-parentheses", "when-not-not", "run-nested-ifs"],
)
def test_a_deeply_nested_template(field: str, step: str) -> None:
    # Jinja's parser recurses once per level; a few hundred levels exhaust Python's stack.
    problems = rejected(HEAD + f"detect:\n  - {{id: a, title: t, {step}}}\n")
    assert any(p.pointer == f"/detect/0/{field}" for p in problems)


# --------------------------------------------------------------------------- arbitrary input

FUZZ = settings(deadline=None, max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert is_consistent(check_text(raw))


@FUZZ
@given(st.text(max_size=4096))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert is_consistent(check_text(text))


YAML_BITS = st.sampled_from(
    [
        ":",
        ": ",
        "-",
        "- ",
        "\n",
        "  ",
        "\t",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "!!python/object ",
        "!x ",
        "<<: ",
        "? ",
        "|",
        ">-",
        "#",
        "'",
        '"',
        "---\n",
        "...",
        "%YAML 1.1\n",
        "{{",
        "}}",
        "{%",
        "%}",
        "steps.",
        "inputs.",
        "out",
        "~",
        "null",
        "true",
        "0x",
        "1e9",
        "\ufeff",
        "\x00",
    ]
)
INSERTION = st.one_of(YAML_BITS, st.text(max_size=12))


@st.composite
def mutated_branch_cleanup(draw: st.DrawFn) -> str:
    """branch-cleanup.yaml with a few random deletions and insertions."""
    text = BRANCH_CLEANUP
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if draw(st.booleans()):
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=40)) :]
        else:
            text = text[:at] + draw(INSERTION) + text[at:]
    return text


@FUZZ
@given(mutated_branch_cleanup())
def test_mutated_runbook_never_raises(text: str) -> None:
    assert is_consistent(check_text(text))


@FUZZ
@given(mutated_branch_cleanup())
def test_problems_point_inside_the_file(text: str) -> None:
    result = check_text(text)
    lines = max(1, text.count("\n") + 1)
    for problem in result.problems:
        assert 1 <= problem.line <= lines, str(problem)
        assert problem.column >= 1, str(problem)
        assert problem.message


# --------------------------------------------------------------------------- hostile templates (issue 15)

AMPLIFIERS = st.sampled_from(
    [
        "'ab' * N",
        "[1, 2] * N",
        "N ** N",
        "'%Ns' % 'x'",
        "'{:N}'.format('x')",
        "'x' | center(N)",
        "'x'.ljust(N)",
        "range(N) | list",
        "'ab' | list | batch(N, 0) | list",
        "('ab' * 1000) | replace('a', 'a' * N)",
        "'x\ny' | indent(N)",
        "(1).to_bytes(N, 'big')",
        "lipsum(N)",
        "'a\tb'.expandtabs(N)",
        "(['y' * 1000] * N) | join",
        "('y' * 1000) | regex_replace('', 'z' * N)",
        "(['y' * 1000] * N) | string",
    ]
)
SIZES = st.sampled_from(["1", "7", "1000", "100000", "10**6", "10**9", "10**12", "2**40"])


@st.composite
def hostile_template(draw: st.DrawFn) -> str:
    """An amplifying expression, maybe inside loops; its sizes from small to absurd."""
    fragment = draw(AMPLIFIERS).replace("N", f"({draw(SIZES)})")
    body = "{{ (" + fragment + ") | length }}"
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        body = "{% for i in range(" + draw(SIZES) + ") %}" + body + "{% endfor %}"
    return body


@settings(deadline=None, max_examples=60, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_template())
def test_a_hostile_template_ends_soon_with_its_text_or_a_template_error(source: str) -> None:
    result = finish(lambda: render_text(source, {}, step_id="s", field="manual"))
    assert isinstance(result, str | TemplateError), f"{type(result).__name__}: {result}"
    if isinstance(result, TemplateError):
        assert str(result).startswith("step 's' manual: ")
        assert "Traceback" not in str(result)
    assert is_consistent(check_text(HEAD + f"detect:\n  - id: a\n    title: t\n    manual: {source!r}\n"))
    assert not isinstance(result, str) or len(result) <= 1 << 20
