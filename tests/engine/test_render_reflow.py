"""``engine.core.render.reflow``: runbook prose with its author's line breaks taken out, its structure kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.core.loader import load_library
from engine.core.model import PHASE_ORDER, ManualAction
from engine.core.render import reflow
from tests.conftest import RUNBOOKS


def block(text: str) -> str:
    """A YAML block scalar's value as the loader gives it: dedented, one newline at the end."""
    return textwrap.dedent(text).lstrip("\n")


def test_the_lines_of_a_paragraph_are_joined_with_single_spaces() -> None:
    why = block("""
        Every other step compares branches against the trunk. A wrong `repo` or
          `trunk` input should fail here, loudly, not look like a clean
        repository.
        """)
    assert reflow(why) == (
        "Every other step compares branches against the trunk. A wrong `repo` or `trunk` input "
        "should fail here, loudly, not look like a clean repository."
    )


def test_blank_lines_stay_paragraph_breaks_one_between_two_paragraphs() -> None:
    text = "First paragraph\ncontinues.\n\n\n\nSecond\nparagraph.\n\n"
    assert reflow(text) == "First paragraph continues.\n\nSecond paragraph."


def test_each_list_item_is_one_line_with_its_continuation_lines_joined() -> None:
    text = block("""
        Either:

        - an API key, answered 401 when wrong
          (diagnose probes for exactly that); or
        - a signature over
        the body (a lazy continuation line).
        * a starred item
        + a plus item
        """)
    assert reflow(text).splitlines() == [
        "Either:",
        "",
        "- an API key, answered 401 when wrong (diagnose probes for exactly that); or",
        "- a signature over the body (a lazy continuation line).",
        "* a starred item",
        "+ a plus item",
    ]


def test_numbered_and_nested_list_items_keep_their_numbers_and_indentation() -> None:
    text = block("""
        1. Point the callers at the proxy.
        2. Add the proxy to the allow list,
           `nginx -t`, reload.
           - a nested item
             continued
        10) Tenth, with a parenthesis,
            continued.
        """)
    assert reflow(text).splitlines() == [
        "1. Point the callers at the proxy.",
        "2. Add the proxy to the allow list, `nginx -t`, reload.",
        "   - a nested item continued",
        "10) Tenth, with a parenthesis, continued.",
    ]


def test_a_paragraph_in_a_list_item_keeps_its_indentation_and_the_list_ends_at_a_lesser_one() -> None:
    text = "- item\n  text\n\n  more of the item,\n  joined\n\nafter\nthe list"
    assert reflow(text) == "- item text\n\n  more of the item, joined\n\nafter the list"


def test_indented_code_is_kept_line_by_line() -> None:
    text = block("""
        Restart it and read the log:
            systemctl restart kubelet
              --no-block

            journalctl -u kubelet
        then check
        again.
        - in a list item, code starts 4 columns past the item's text:
              cat /proc/cgroups
        """)
    assert reflow(text).splitlines() == [
        "Restart it and read the log:",
        "    systemctl restart kubelet",
        "      --no-block",
        "",
        "    journalctl -u kubelet",
        "then check again.",
        "- in a list item, code starts 4 columns past the item's text:",
        "      cat /proc/cgroups",
    ]


def test_a_tab_indents_code_as_four_columns() -> None:
    assert reflow("Run:\n\tmake check\n\tmake install") == "Run:\n\tmake check\n\tmake install"


def test_fenced_code_is_kept_exactly_blank_lines_and_indentation_included() -> None:
    text = block("""
        The log format:
        ```nginx
        log_format split '$status|$upstream_addr';


           access_log /var/log/nginx/access.log split;
        ~~~
        ```
        after
        the fence.
        ~~~~
        - a tilde fence
        ~~~~
        """)
    assert reflow(text).splitlines() == [
        "The log format:",
        "```nginx",
        "log_format split '$status|$upstream_addr';",
        "",
        "",
        "   access_log /var/log/nginx/access.log split;",
        "~~~",
        "```",
        "after the fence.",
        "~~~~",
        "- a tilde fence",
        "~~~~",
    ]


def test_table_rows_are_kept_line_by_line() -> None:
    text = block("""
        The weights:
        | platform | weight |
        |----------|-------:|
        | old      |     90 |
        | k8s      |     10 |
        Then the next
        paragraph.

        Without outer pipes:
        server | state
        --- | :---:
        web1 | up
        web2 | down
        """)
    assert reflow(text).splitlines() == [
        "The weights:",
        "| platform | weight |",
        "|----------|-------:|",
        "| old      |     90 |",
        "| k8s      |     10 |",
        "Then the next paragraph.",
        "",
        "Without outer pipes:",
        "server | state",
        "--- | :---:",
        "web1 | up",
        "web2 | down",
    ]


def test_headings_quotes_and_rules_are_not_joined_to_their_neighbours() -> None:
    text = "# Heading\ntext\nmore\n> a quote\n> on two lines\n---\n*emphasis* is\nnot a list"
    assert reflow(text).splitlines() == [
        "# Heading",
        "text more",
        "> a quote",
        "> on two lines",
        "---",
        "*emphasis* is not a list",
    ]


@pytest.mark.parametrize("text", ["", "\n", "   \n\n", "one line", "one line\n"])
def test_trivial_texts(text: str) -> None:
    assert reflow(text) == text.strip()


def test_every_bundled_runbook_text_reflows_to_a_fixed_point_and_loses_no_word() -> None:
    """Reflowing twice changes nothing more, and only whitespace changes (for every text of every runbook)."""
    library = load_library([Path(RUNBOOKS)])
    texts = []
    for runbook in library.runbooks:
        texts += [runbook.summary, runbook.cause]
        for phase in PHASE_ORDER:
            for step in runbook.steps(phase):
                instructions = step.action.instructions if isinstance(step.action, ManualAction) else ""
                texts += [step.why, step.tradeoff, instructions]
    assert len([t for t in texts if "\n" in t.strip()]) > 20, "the bundled runbooks have multi-line prose"
    for text in texts:
        flowed = reflow(text)
        assert reflow(flowed) == flowed
        assert flowed.split() == text.split()
