"""Runbook Markdown as plain text: what `cairn show`, approvals and plans print when not on a terminal."""

from __future__ import annotations

import io
import textwrap

from engine.cli.terminal import TerminalApprover, markdown_block
from engine.core.approval import ApprovalRequest
from engine.core.loader import check_text
from engine.core.model import Phase
from engine.core.plaintext import inline_text, markdown_to_text


def test_marks_go_and_the_words_stay() -> None:
    text = markdown_to_text("A **frozen** branch is `merged`; see [git docs](https://git-scm.com/docs).")
    assert text == "A frozen branch is merged; see git docs (https://git-scm.com/docs).\n"
    assert (
        inline_text("**id** `branch-cleanup` · [https://x.io](https://x.io)")
        == "id branch-cleanup · https://x.io"
    )


def test_a_yaml_block_s_line_breaks_are_reflowed_and_wrapped() -> None:
    why = textwrap.dedent(
        """\
        Release branches are named `<prefix>/<stream>/<YYYYMMDD>`; within a stream
        only the newest is live.

        Every older one was rebuilt.
        """
    )
    assert markdown_to_text(why, width=40) == (
        "Release branches are named\n"
        "<prefix>/<stream>/<YYYYMMDD>; within a\n"
        "stream only the newest is live.\n"
        "\n"
        "Every older one was rebuilt.\n"
    )


def test_lists_headings_and_code_blocks_keep_their_shape() -> None:
    markdown = textwrap.dedent(
        """\
        # Title

        ## Symptoms

        - one symptom that is long enough to need a second line at this width
        - two

        1. drain
        2. upgrade

        ```sh
        kubectl drain node1 --ignore-daemonsets
        ```
        """
    )
    assert markdown_to_text(markdown, width=40) == textwrap.dedent(
        """\
        Title
        =====

        Symptoms
        --------

        - one symptom that is long enough to
          need a second line at this width
        - two

        1. drain
        2. upgrade

            kubectl drain node1 --ignore-daemonsets
        """
    )
    assert not any(line != line.rstrip() for line in markdown_to_text(markdown).splitlines())


def test_the_approval_prompt_shows_why_and_trade_off_without_markdown_marks_off_a_terminal() -> None:
    runbook = check_text(
        textwrap.dedent(
            """\
            id: t
            title: t
            severity: info
            summary: s
            detect: [{id: d, title: d, run: "true"}]
            remediate:
              - id: fix
                title: Fix it
                why: |
                  Sends `SIGHUP`, which an **interactive** bash
                  obeys.
                run: kill -HUP 1
                tradeoff: The session is **lost**.
            """
        )
    ).runbook
    assert runbook is not None
    shown = io.StringIO()
    approver = TerminalApprover(stream=shown, read=io.StringIO("n\n"))
    approver.decide(ApprovalRequest("run-1", "node1", Phase.REMEDIATE, runbook.remediate[0], "kill -HUP 1"))
    text = shown.getvalue()
    assert "  │ Sends SIGHUP, which an interactive bash obeys." in text  # one paragraph, no marks
    assert "  │ trade-off: The session is lost." in text
    assert "`" not in text and "**" not in text


def test_on_a_terminal_markdown_is_rendered_not_printed_raw() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = markdown_block("Use `crictl ps`, **not** docker.", "  │ ", Terminal())
    assert shown.startswith("  │ ")
    assert "crictl ps" in shown and "`" not in shown and "**" not in shown
    assert "\x1b[" in shown  # styled for the terminal
