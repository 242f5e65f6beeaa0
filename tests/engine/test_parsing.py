"""A step's stdout -> the structured ``out`` its expressions read, for every ParseKind."""

from __future__ import annotations

import pytest

from engine.core.model import ParseKind, ParseSpec
from engine.core.parsing import ParseError, parse_output


def test_every_parse_kind_is_covered_here() -> None:
    # When a ParseKind is added, this file needs tests for it.
    assert {k.value for k in ParseKind} == {"text", "json", "lines", "number", "table", "regex"}


# --------------------------------------------------------------------------- text


def test_text_is_the_default_and_drops_the_trailing_newline() -> None:
    assert parse_output(ParseSpec(), "active\n") == "active"


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("one\ntwo\n", "one\ntwo"),
        ("  indented  \n", "  indented  "),
        ("no newline", "no newline"),
        ("", ""),
        ("\n\nlead", "\n\nlead"),
    ],
)
def test_text_keeps_everything_but_trailing_newlines(stdout: str, expected: str) -> None:
    assert parse_output(ParseSpec(kind=ParseKind.TEXT), stdout) == expected


# --------------------------------------------------------------------------- json


def test_json_document() -> None:
    stdout = '{"status": "ok", "pids": [1, 2], "ratio": 0.5, "up": true, "note": null}\n'

    assert parse_output(ParseSpec(kind=ParseKind.JSON), stdout) == {
        "status": "ok",
        "pids": [1, 2],
        "ratio": 0.5,
        "up": True,
        "note": None,
    }


@pytest.mark.parametrize(("stdout", "expected"), [("[]", []), ("3", 3), ('"x"', "x"), ("  [1]\n\n", [1])])
def test_json_any_document_type(stdout: str, expected: object) -> None:
    assert parse_output(ParseSpec(kind=ParseKind.JSON), stdout) == expected


@pytest.mark.parametrize("stdout", ["", "\n", "   \n\t\n"])
def test_json_of_empty_output_says_nothing_was_printed(stdout: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_output(ParseSpec(kind=ParseKind.JSON), stdout)

    assert str(caught.value) == "expected JSON, but the command printed nothing"


def test_json_invalid_names_line_and_column() -> None:
    stdout = '{\n  "a": 1,\n  "b": \n}\n'

    with pytest.raises(ParseError) as caught:
        parse_output(ParseSpec(kind=ParseKind.JSON), stdout)

    assert str(caught.value) == "expected JSON: Expecting value (line 4, column 1)"


def test_json_followed_by_other_text_is_invalid() -> None:
    with pytest.raises(ParseError, match=r"^expected JSON: Extra data \(line 2, column 1\)$"):
        parse_output(ParseSpec(kind=ParseKind.JSON), '{"a": 1}\ndone\n')


# --------------------------------------------------------------------------- lines


def test_lines_drop_blank_lines() -> None:
    stdout = "alpha\n\nbeta gamma\n   \n\t\ndelta\n"

    assert parse_output(ParseSpec(kind=ParseKind.LINES), stdout) == ["alpha", "beta gamma", "delta"]


def test_lines_keep_the_text_of_each_line() -> None:
    assert parse_output(ParseSpec(kind=ParseKind.LINES), "  a b  \nc") == ["  a b  ", "c"]


def test_lines_of_empty_output() -> None:
    assert parse_output(ParseSpec(kind=ParseKind.LINES), "") == []


# --------------------------------------------------------------------------- number


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [("42\n", 42), ("  -7  \n", -7), ("0", 0), ("3.25\n", 3.25), ("-0.5", -0.5), ("1e3", 1000.0)],
)
def test_number(stdout: str, expected: float) -> None:
    result = parse_output(ParseSpec(kind=ParseKind.NUMBER), stdout)

    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("stdout", ["abc\n", "", "\n", "12 34\n", "45%\n", "0x10"])
def test_number_junk_is_a_parse_error_showing_the_text(stdout: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_output(ParseSpec(kind=ParseKind.NUMBER), stdout)

    assert str(caught.value) == f"expected one number, got {stdout.strip()!r}"


def test_number_error_shortens_long_output() -> None:
    stdout = "x" * 100

    with pytest.raises(ParseError) as caught:
        parse_output(ParseSpec(kind=ParseKind.NUMBER), stdout)

    assert str(caught.value) == f"expected one number, got {'x' * 37 + '...'!r}"


# --------------------------------------------------------------------------- table


def test_table_with_header_line_normalises_names() -> None:
    stdout = "PID  %CPU  Start-Time  USER\n101  0.5   10:00       root\n2002 12.0  11:30       www-data\n"

    rows = parse_output(ParseSpec(kind=ParseKind.TABLE), stdout)

    assert rows == [
        {"pid": "101", "cpu": "0.5", "start_time": "10:00", "user": "root"},
        {"pid": "2002", "cpu": "12.0", "start_time": "11:30", "user": "www-data"},
    ]


def test_table_header_that_is_only_punctuation_gets_a_positional_name() -> None:
    rows = parse_output(ParseSpec(kind=ParseKind.TABLE), "name % size\nroot 5 10\n")

    assert rows == [{"name": "root", "col1": "5", "size": "10"}]


def test_table_with_header_last_column_keeps_the_rest() -> None:
    rows = parse_output(ParseSpec(kind=ParseKind.TABLE), "PID COMMAND\n1 /sbin/init splash  quiet\n")

    assert rows == [{"pid": "1", "command": "/sbin/init splash  quiet"}]


def test_table_with_explicit_columns() -> None:
    spec = ParseSpec(kind=ParseKind.TABLE, columns=("pid", "user", "command"))
    stdout = "1 root /sbin/init  --log  level\n\n42 www-data\n7\n"

    rows = parse_output(spec, stdout)

    assert rows == [
        {"pid": "1", "user": "root", "command": "/sbin/init  --log  level"},
        {"pid": "42", "user": "www-data", "command": ""},
        {"pid": "7", "user": "", "command": ""},
    ]


def test_table_with_explicit_columns_does_not_treat_the_first_line_as_header() -> None:
    spec = ParseSpec(kind=ParseKind.TABLE, columns=("a", "b"))

    assert parse_output(spec, "x y\n") == [{"a": "x", "b": "y"}]


def test_table_with_separator() -> None:
    spec = ParseSpec(kind=ParseKind.TABLE, columns=("branch", "by"), separator="|")
    stdout = "release/daily/1 | release/daily/2\nrelease/a b|c|d\nlonely\n"

    rows = parse_output(spec, stdout)

    assert rows == [
        {"branch": "release/daily/1", "by": "release/daily/2"},
        {"branch": "release/a b", "by": "c|d"},
        {"branch": "lonely", "by": ""},
    ]


def test_table_with_separator_and_header() -> None:
    spec = ParseSpec(kind=ParseKind.TABLE, separator=",")

    rows = parse_output(spec, "Host Name,Free %\nweb 1, 12\n")

    assert rows == [{"host_name": "web 1", "free": "12"}]


def test_table_separator_keeps_empty_cells_in_place() -> None:
    spec = ParseSpec(kind=ParseKind.TABLE, columns=("a", "b", "c"), separator="|")

    assert parse_output(spec, "|middle|\n") == [{"a": "", "b": "middle", "c": ""}]


@pytest.mark.parametrize("columns", [(), ("a", "b")])
@pytest.mark.parametrize("stdout", ["", "\n\n", "  \n"])
def test_table_of_empty_output_has_no_rows(stdout: str, columns: tuple[str, ...]) -> None:
    assert parse_output(ParseSpec(kind=ParseKind.TABLE, columns=columns), stdout) == []


def test_table_with_only_a_header_has_no_rows() -> None:
    assert parse_output(ParseSpec(kind=ParseKind.TABLE), "NAME SIZE\n") == []


# --------------------------------------------------------------------------- regex

IFACES = "eth0: rx=10 tx=20\nlo: rx=5 tx=5\neth1: rx=3 tx=4\n"


def test_regex_with_named_groups_gives_dicts() -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"^(?P<dev>eth\d+): rx=(?P<rx>\d+)")

    assert parse_output(spec, IFACES) == [{"dev": "eth0", "rx": "10"}, {"dev": "eth1", "rx": "3"}]


def test_regex_with_an_optional_named_group_that_did_not_take_part() -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"^(?P<dev>\w+):(?P<err> err)?")

    assert parse_output(spec, "a: err\nb:\n") == [{"dev": "a", "err": " err"}, {"dev": "b", "err": None}]


def test_regex_with_one_group_gives_that_group() -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"tx=(\d+)")

    assert parse_output(spec, IFACES) == ["20", "5", "4"]


def test_regex_without_group_gives_the_whole_match() -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"eth\d+")

    assert parse_output(spec, IFACES) == ["eth0", "eth1"]


def test_regex_anchors_match_at_every_line() -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"^\w+(?=:)")

    assert parse_output(spec, IFACES) == ["eth0", "lo", "eth1"]


@pytest.mark.parametrize("stdout", [IFACES, ""])
def test_regex_without_a_match_is_an_empty_list(stdout: str) -> None:
    spec = ParseSpec(kind=ParseKind.REGEX, pattern=r"(?P<dev>wlan\d+)")

    assert parse_output(spec, stdout) == []
