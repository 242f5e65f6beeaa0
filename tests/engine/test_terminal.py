"""The terminal's live side: the approver (what it shows, what each answer means), the progress printers
(nothing they show can forge a line or drive the terminal), and the CLI's redacted output streams."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.cli.redacting import RedactingStream
from engine.cli.terminal import FanOutPrinter, ProgressPrinter, TerminalApprover
from engine.core.approval import ApprovalRequest, Decision
from engine.core.events import Event, HostFinished, RunFinished, StepFinished, StepOutput, StepStarted
from engine.core.inputs import Redactor
from engine.core.model import (
    HostOutcome,
    HostReport,
    ManualAction,
    Phase,
    RunAction,
    RunReport,
    Step,
    StepResult,
    StepStatus,
)
from engine.core.visible import visible, visible_lines
from tests.conftest import REPO

RESTART = Step(id="restart", title="Restart the shim", action=RunAction("x"), tradeoff="drops exec sessions")
DRAIN = Step(id="drain", title="Drain the node", action=RunAction("y"))
CHECKLIST = Step(id="probes", title="Switch probes to HTTP", action=ManualAction("z"))


def ask(answers: str) -> tuple[TerminalApprover, io.StringIO]:
    shown = io.StringIO()
    return TerminalApprover(stream=shown, read=io.StringIO(answers)), shown


def request(step: Step, host: str) -> ApprovalRequest:
    return ApprovalRequest("run-1", host, Phase.REMEDIATE, step, f"do {step.id} on {host}")


def test_the_prompt_shows_host_step_exact_command_and_trade_off() -> None:
    approver, shown = ask("y\n")

    decision = approver.decide(request(RESTART, "node7"))

    assert decision.decision is Decision.APPROVED
    text = shown.getvalue()
    assert "remediate step 'restart' on node7: Restart the shim" in text
    assert "$ do restart on node7" in text
    assert "trade-off: drops exec sessions" in text


def test_every_host_approves_that_step_on_later_hosts_but_still_asks_for_other_steps() -> None:
    approver, shown = ask("e\nn\n")

    first = approver.decide(request(RESTART, "node1"))
    second = approver.decide(request(RESTART, "node2"))
    other = approver.decide(request(DRAIN, "node2"))

    assert first.decision is second.decision is Decision.APPROVED
    assert second.note == "approved for every host"
    assert other.decision is Decision.DECLINED
    assert shown.getvalue().count("run it?") == 2  # node2's restart was not asked again


def test_quit_declines_every_remaining_command_but_manual_steps_still_ask() -> None:
    approver, _ = ask("q\ns\n")

    approver.decide(request(RESTART, "node1"))
    later = approver.decide(request(DRAIN, "node1"))
    manual = approver.decide(request(CHECKLIST, "node1"))

    assert later.decision is Decision.DECLINED
    assert manual.decision is Decision.SKIPPED


def test_end_of_input_declines() -> None:
    approver, _ = ask("")

    assert approver.decide(request(RESTART, "node1")).decision is Decision.DECLINED


# --------------------------------------------------------------------------- nothing shown can forge a line

FORGED = "echo 'x\n$ rm -rf /\r$ sudo reboot \x1b[2J\u202e'"
"""A command whose quoted value holds a newline, a carriage return, a screen clear and a bidi override."""


def printed(printer_class: type[ProgressPrinter] | type[FanOutPrinter], *events: Event) -> str:
    out = io.StringIO()
    printer = printer_class(out, verbose=True)
    for event in events:
        printer(event)
    return out.getvalue()


def started(command: str, host: str = "node1") -> StepStarted:
    return StepStarted(host=host, phase=Phase.DETECT, step_id="look", title="Look", command=command)


def test_visible_shows_every_control_character_but_a_tab_as_an_escape() -> None:
    assert visible("a\tb") == "a\tb"
    assert visible("a\nb\rc\x1b[0m\x07\x00\x7f\x9b\u202e\u2028d") == (
        "a\\nb\\rc\\x1b[0m\\x07\\x00\\x7f\\x9b\\u202e\\u2028d"
    )
    assert visible("plain text, é and 漢字") == "plain text, é and 漢字"


def test_visible_lines_split_at_newlines_only_and_take_crlf_as_a_line_end() -> None:
    assert visible_lines("one\r\ntwo\rstill two\x0bthree\n") == ["one", "two\\rstill two\\x0bthree"]
    assert visible_lines("") == []


@pytest.mark.parametrize("printer_class", [ProgressPrinter, FanOutPrinter])
def test_a_value_with_a_newline_cannot_forge_a_command_line(
    printer_class: type[ProgressPrinter] | type[FanOutPrinter],
) -> None:
    text = printed(printer_class, started(FORGED))

    dollar = [line for line in text.splitlines() if re.match(r"\s*(node1\s+)?\$ ", line)]
    assert dollar == [line for line in dollar if "echo 'x" in line] and len(dollar) == 1, text
    assert re.search(r"^\s*(node1\s+)?> \$ rm -rf /\\r\$ sudo reboot \\x1b\[2J\\u202e'$", text, re.M), text
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text


@pytest.mark.parametrize("printer_class", [ProgressPrinter, FanOutPrinter])
def test_output_lines_are_shown_one_by_one_with_their_control_characters_escaped(
    printer_class: type[ProgressPrinter] | type[FanOutPrinter],
) -> None:
    output = StepOutput(
        host="node1", phase=Phase.DETECT, step_id="look", stream="stdout", text="a\x1b[31mred\r\nb\rc\n"
    )

    text = printed(printer_class, output)

    lines = text.splitlines()
    assert len(lines) == 2, text
    assert lines[0].endswith("| a\\x1b[31mred") and lines[1].endswith("| b\\rc")


@pytest.mark.parametrize("printer_class", [ProgressPrinter, FanOutPrinter])
def test_a_step_message_and_a_host_reason_are_one_line_with_their_controls_escaped(
    printer_class: type[ProgressPrinter] | type[FanOutPrinter],
) -> None:
    result = StepResult(
        host="node1",
        phase=Phase.DETECT,
        step_id="look",
        status=StepStatus.ERROR,
        message="bad \x1b[2Jthing\rok",
    )
    report = HostReport("node1", HostOutcome.FAILED, (result,), reason="look: bad\n== node2 healthy \x1b[2J")

    text = printed(
        printer_class,
        StepFinished(result=result),
        HostFinished(report=report),
        RunFinished(report=RunReport("r", "rb", (report,))),
    )

    assert "\x1b" not in text and "\r" not in text
    assert "bad \\x1b[2Jthing\\rok" in text
    assert not any(line.lstrip().startswith("== node2") for line in text.splitlines()), text
    assert "look: bad\\n== node2 healthy \\x1b[2J" in text


def test_a_dry_run_command_cannot_forge_a_line_either() -> None:
    result = StepResult(
        host="node1",
        phase=Phase.REMEDIATE,
        step_id="fix",
        status=StepStatus.SKIPPED,
        message="dry run: not run",
        command=FORGED,
    )

    text = printed(ProgressPrinter, StepFinished(result=result))

    assert len([line for line in text.splitlines() if "would run $ " in line]) == 1, text
    assert "\x1b" not in text and "\r" not in text


def test_the_approval_prompt_shows_the_command_as_it_is_and_cannot_be_forged() -> None:
    approver, shown = ask("n\n")

    approver.decide(ApprovalRequest("run-1", "node1", Phase.REMEDIATE, RESTART, FORGED))

    text = shown.getvalue()
    assert len([line for line in text.splitlines() if line.startswith("  │ $ ")]) == 1, text
    assert "  │ > $ rm -rf /\\r$ sudo reboot \\x1b[2J\\u202e'" in text
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text


def test_manual_instructions_keep_their_lines_but_not_their_control_characters() -> None:
    approver, shown = ask("s\n")

    approver.decide(
        ApprovalRequest(
            "run-1", "node1", Phase.REMEDIATE, CHECKLIST, "Open the panel.\x1b[8m\n\nThen \rreboot."
        )
    )

    text = shown.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[8m" in text and "\\rreboot" in text


# --------------------------------------------------------------------------- the CLI's own output, redacted

SECRET = 'hunter2-tok"en'


def test_a_redacting_stream_redacts_whole_lines_even_when_written_in_pieces() -> None:
    out = io.StringIO()
    stream = RedactingStream(out, Redactor([SECRET]))

    stream.write("token: hunter2-")
    assert out.getvalue() == "", "half a line waits for the rest"
    stream.write('tok"en and more\nnext ')
    stream.flush()

    assert out.getvalue() == "token: *** and more\nnext "


def test_redact_output_covers_print_and_logging_of_the_cli_process(tmp_path: Path) -> None:
    """In a real process: stdout, stderr and a logging handler configured before the secrets were known."""
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(message)s")
        from engine.cli.redacting import redact_output
        from engine.core.inputs import Redactor
        redact_output(Redactor([{SECRET!r}]))
        redact_output(Redactor(["second-secret"]))
        print("out " + {SECRET!r})
        print("err second-secret", file=sys.stderr)
        try:
            raise RuntimeError({SECRET!r})
        except RuntimeError:
            logging.getLogger("engine.x").exception("failed with %s", {SECRET!r})
        print("half " + {SECRET[:5]!r}, end="")
        print({SECRET[5:]!r})
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=REPO, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "second-secret" not in done.stderr
    assert "out ***" in done.stdout and "half ***" in done.stdout
    assert "ERROR failed with ***" in done.stderr and "RuntimeError: ***" in done.stderr
    assert "err ***" in done.stderr
