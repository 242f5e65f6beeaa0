"""Through the real `cairn` command: a secret input shows nowhere, whatever path a message takes.

A secret that reaches a template error (Jinja2 names a missing key with ``repr``), an
``expect`` error, a ``report``, the output (split over two output events) and the host's
outcome is looked for in everything a user or a script can read afterwards: ``cairn run``
with ``-v`` and with ``--json``, ``cairn show-run`` and ``cairn history`` (text and JSON),
the journal's database file and the run's artifacts folder, byte for byte.

And what ``-v`` shows cannot be forged: a value with a newline, a carriage return or an
escape sequence cannot print a second ``$`` command line or rewrite the terminal.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import CairnRunner, RunbookDir

SECRET = "hunter2-one'\"\\b\t\u00e9\x1b[0m\nhunter2-two $x"
"""Quotes, a backslash, a tab, a non-ASCII letter, an escape sequence and a newline: every escaping
of it differs. Each of its lines holds ``hunter2``: any form of any part of it contains that."""
MARK = "hunter2"

SECRET_PATHS = r"""
    id: secret-paths
    title: A secret on every path a message takes
    severity: info
    summary: The secret reaches template errors, an expect error, a report and the output.
    inputs:
      token: {type: string, secret: true}
    detect:
      - id: lookup
        title: a key that is the secret (expect)
        run: "true"
        expect: "vars[inputs.token] == 1"
      - id: command
        title: a key that is the secret (run)
        run: "echo {{ vars[inputs.token] }}"
      - id: arith
        title: arithmetic on the secret (expect)
        run: "true"
        expect: "inputs.token + 1 > 0"
      - id: told
        title: the secret in a report
        run: "true"
        report: "token is {{ inputs.token }}"
      - id: printed
        title: the secret printed, one line at a time
        run: >-
          printf '%s\n' {{ inputs.token }} |
          { IFS= read -r first; printf '%s\n' "$first"; sleep 0.3; cat; }
        expect: "out == 'nothing'"
    """


def leaked_forms(secret: str) -> dict[str, str]:
    return {
        "raw": secret,
        "shell-quoted": shlex.quote(secret),
        "json-escaped": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        "repr": repr(secret)[1:-1],
        "first line": secret.partition("\n")[0],
        "last line": secret.rpartition("\n")[2],
    }


def assert_nowhere(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert MARK.encode() not in data, f"the secret shows in {where}: {_around(data)}"
    for name, form in leaked_forms(SECRET).items():
        assert form.encode() not in data, f"the secret ({name}) shows in {where}"


def _around(data: bytes) -> str:
    at = data.find(MARK.encode())
    return repr(data[max(0, at - 200) : at + 200])


@pytest.fixture
def secret_run(cairn: CairnRunner, runbook_dir: RunbookDir) -> tuple[CairnRunner, Path]:
    return cairn, runbook_dir(SECRET_PATHS)


def test_a_secret_reaches_no_output_no_journal_and_no_artifact(
    secret_run: tuple[CairnRunner, Path], isolated_state: Path
) -> None:
    cairn, folder = secret_run

    verbose = cairn("run", "secret-paths", "--runbooks", str(folder), "-e", f"token={SECRET}", "-v")
    as_json = cairn("run", "secret-paths", "--runbooks", str(folder), "-e", f"token={SECRET}", "--json")

    assert verbose.returncode == 1, verbose.stdout + verbose.stderr  # present: `printed` found it
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    lines = {
        line.split()[0]: line
        for line in verbose.stdout.splitlines()
        if line.startswith("   ") and line.split()
    }
    assert "has no attribute '***'" in lines["lookup"], "the step says what is wrong, without the value"
    assert "has no attribute '***'" in lines["command"]
    assert "token is ***" in lines["told"]
    assert "     | ***" in verbose.stdout, "the printed secret is redacted line by line"
    report = json.loads(as_json.stdout)
    messages = {r["step_id"]: r["message"] for h in report["hosts"] for r in h["results"]}
    assert "has no attribute '***'" in messages["lookup"]
    outputs = {
        "run -v stdout": verbose.stdout,
        "run -v stderr": verbose.stderr,
        "run --json stdout": as_json.stdout,
        "run --json stderr": as_json.stderr,
    }
    for run_id in ("last", report["run_id"]):
        for extra in ((), ("--json",)):
            shown = cairn("show-run", run_id, *extra)
            assert shown.returncode == 0, shown.stderr
            outputs[f"show-run {run_id} {extra}"] = shown.stdout + shown.stderr
    for extra in ((), ("--json",)):
        listed = cairn("history", *extra)
        assert listed.returncode == 0, listed.stderr
        outputs[f"history {extra}"] = listed.stdout + listed.stderr
    for where, text in outputs.items():
        assert_nowhere(text, where)
    stored = [path for path in isolated_state.rglob("*") if path.is_file()]
    assert any(path.name.startswith("journal.db") for path in stored)
    assert any(path.name.endswith(".stdout") for path in stored), "the artifacts hold the output"
    for path in stored:
        assert_nowhere(path.read_bytes(), str(path.relative_to(isolated_state)))


def test_a_secret_integer_input_that_does_not_convert_is_not_shown(
    cairn: CairnRunner, runbook_dir: RunbookDir
) -> None:
    folder = runbook_dir(
        """
        id: pin
        title: t
        severity: info
        summary: s
        inputs:
          pin: {type: integer, secret: true}
        detect:
          - {id: check, title: c, run: "true"}
        """
    )

    done = cairn("run", "pin", "--runbooks", str(folder), "-e", "pin=hunter2-not-a-number")

    assert done.returncode == 2
    assert "input 'pin': expected a whole number" in done.stderr
    assert_nowhere(done.stdout + done.stderr, "the input error")


# --------------------------------------------------------------------------- -v cannot be forged

FORGE = r"""
    id: forge
    title: Values that try to forge lines
    severity: info
    summary: A value with a newline, a carriage return and escape sequences.
    inputs:
      note: {type: string}
    detect:
      - id: shout
        title: echo the note
        run: "echo {{ inputs.note }}"
      - id: paint
        title: output with escape sequences
        run: "printf 'ok\\033[2J\\rgone\\n'"
    """
NOTE = "x\n$ rm -rf / \u202e\x1b]0;owned\x07\r$ sudo reboot"


@pytest.mark.parametrize("extra", [(), ("-i", "inventory")], ids=["one host", "many hosts"])
def test_verbose_output_shows_control_characters_and_cannot_forge_a_command_line(
    cairn: CairnRunner, runbook_dir: RunbookDir, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    folder = runbook_dir(FORGE)
    (tmp_path / "inventory").write_text(
        "all:\n  hosts:\n    web-1: {ansible_connection: local}\n    web-2: {ansible_connection: local}\n"
    )

    done = cairn("run", "forge", "--runbooks", str(folder), "-e", f"note={NOTE}", "-v", *extra)

    assert done.returncode == 0, done.stdout + done.stderr
    for control in ("\x1b", "\r", "\x07", "\u202e"):
        assert control not in done.stdout, f"{control!r} reached the terminal"
    commands = [line for line in done.stdout.splitlines() if re.match(r"\s*([\w.-]+\s+)?\$ ", line)]
    assert len(commands) == (2 if not extra else 4), "one `$` line per step and host:\n" + done.stdout
    assert all(("echo" in line or "printf" in line) for line in commands), commands
    continued = [line for line in done.stdout.splitlines() if re.match(r"\s*([\w.-]+\s+)?> ", line)]
    assert continued and all("rm -rf" in line for line in continued), (
        "the value's second line is shown as such"
    )
    assert "\\x1b]0;owned\\x07\\r$ sudo reboot" in done.stdout
    assert "\\u202e" in done.stdout
    assert "ok\\x1b[2J\\rgone" in done.stdout, "the host's output, escape sequences shown, not obeyed"
