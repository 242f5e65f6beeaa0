"""The training site's worked examples: each runbook test case on its runbook's page, as a newcomer reads it."""

from __future__ import annotations

import re
import shlex
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.core.loader import load_library
from engine.docs.site import DocsSite, build_site
from tests.chromium import Chromium
from tests.conftest import FIXTURES, RUNBOOKS, CairnRunner

FIXTURE = FIXTURES / "docs_cases"
RUNBOOK_ID = "full-log-disk"
HEADING = "## Worked examples: what you see when the pitfall is there"


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    """A runbooks folder: full-log-disk.yaml, and three cases and one broken case file in full-log-disk.tests/."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "runbooks"))


def build(folder: Path, out: Path) -> DocsSite:
    return build_site(load_library([folder]), out)


def md_page(out: Path, runbook_id: str = RUNBOOK_ID) -> str:
    return (out / "md" / "runbooks" / f"{runbook_id}.md").read_text(encoding="utf-8")


def examples_part(page: str) -> str:
    """The worked-examples section of a Markdown page (up to the page's footer)."""
    assert HEADING in page
    return page[page.index(HEADING) : page.rindex("\n---\n")]


class Visible(HTMLParser):
    """The text a browser shows for an HTML page, and every tag and attribute it holds."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.chunks: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def html_page(out: Path, runbook_id: str = RUNBOOK_ID) -> Visible:
    return Visible((out / "html" / "runbooks" / f"{runbook_id}.html").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- a runbook with cases


def test_each_case_is_a_worked_example_in_order_with_what_each_host_answered(
    runbooks: Path, tmp_path: Path
) -> None:
    build(runbooks, tmp_path / "site")
    part = examples_part(md_page(tmp_path / "site"))

    # present first, healthy second, then the others by file name (cannot-look.yaml sorts first on disk)
    names = ["the log disk is full", "plenty of room", "the check cannot look"]
    headings = re.findall(r"^### Example \d+: (.*)$", part, re.MULTILINE)
    assert headings == names
    present = part[: part.index("### Example 2")]

    # the case's own words, as Markdown
    assert "On **web-1** the log file system is at 97 %: detect finds it" in present
    # each recorded step, in the runbook's phase order, with the step's title from the runbook
    order = [
        "#### On `web-1`",
        "**Detect · `usage`** — Use of the log file system",
        "**Detect · `df_answers`** — df answers at all",
        "**Diagnose · `biggest`** — The biggest files under /var/log",
        "**Remediate · `delete_old`** — Delete logs older than a week",
        "**Verify · `usage`** — Use of the log file system",
        "#### On `web-2`",
    ]
    positions = [present.index(line) for line in order]
    assert positions == sorted(positions)
    # what the host answered: an excerpt of 15 lines, and how many more the case holds
    assert "```text\n8123456\t/var/log\n5000000\t/var/log/app\n" in present
    assert "60000\t/var/log/app/app.log.14" not in present
    assert "*… 5 more lines (the case file has them all).*" in present
    # what `cairn test` checks: the status and report line from the case's expect
    assert "Expected: **finding** — 97 % used" in present
    assert "Expected: **ok** — 41 % used" in present
    assert "Expected: **declined**" in present
    # a hang is the evidence: said as such, with the step's timeout
    assert "It did not finish within its timeout (5s) and was killed." in present
    assert "Decision recorded: **decline**" in present
    # the conclusion: outcomes, the remediation that runs, the exit code
    assert "- `web-1`: **remediated**" in present and "remediation that runs: `delete_old`" in present
    assert "- `web-2`: **present**" in present and "remediation that runs: none" in present
    assert "`cairn run` exits **1**" in present
    # how to run it
    assert "`cairn test runbooks/full-log-disk.tests/present.yaml`" in present
    assert "docs/testing-runbooks.md" in part

    cannot = part[part.index("### Example 3") :]
    assert "`db-1` could not be reached: connect to db-1:22: connection refused" in cannot
    assert "Programs missing on `db-2` (preflight finds them absent): `df`." in cannot
    assert "The executor could not run it: the SSH connection dropped" in cannot
    assert "Exit code 1. stderr:\n\n```text\ndf: /var/log: Input/output error\n```" in cannot
    assert "Expected: **not_run** — not run: df is not installed on db-2" in cannot
    assert "`cairn run` exits **2**" in cannot

    healthy = part[part.index("### Example 2") : part.index("### Example 3")]
    assert "- `web-1`: **healthy** — detect found nothing; remediation that runs: none." in healthy
    assert "`cairn run` exits **0**" in healthy


def test_a_recorded_output_is_text_in_the_html_never_markup(runbooks: Path, tmp_path: Path) -> None:
    build(runbooks, tmp_path / "site")
    raw = (tmp_path / "site" / "html" / "runbooks" / f"{RUNBOOK_ID}.html").read_text(encoding="utf-8")
    page = Visible(raw)
    assert not {"script", "img", "iframe"} & set(page.tags)
    assert not [name for name in page.attrs if name.startswith("on") or name == "src"]
    # a reader sees the hostile line as it was printed
    assert "<script>alert('stdout')</script>\n<img src=x onerror=alert(2)>" in page.text
    assert "&lt;script&gt;alert('stdout')&lt;/script&gt;" in raw
    assert (
        "<img src=x onerror=alert(3)> in a case's text stays text." in page.text
    )  # `about` is Markdown, not HTML
    assert "Worked examples: what you see when the pitfall is there" in page.text
    assert "Expected: finding — 97 % used" in page.text
    assert "cairn test runbooks/full-log-disk.tests/present.yaml" in page.text


def test_a_broken_case_file_is_listed_with_its_problems_and_the_build_goes_on(
    runbooks: Path, tmp_path: Path
) -> None:
    site = build(runbooks, tmp_path / "site")
    assert site.runbooks == (RUNBOOK_ID,)
    part = examples_part(md_page(tmp_path / "site"))
    assert "### Case files with problems" in part
    assert "- `runbooks/full-log-disk.tests/broken.yaml`: 1 problem" in part
    assert (
        "  - `runbooks/full-log-disk.tests/broken.yaml:6:38` at `/hosts/web-1/steps/detect.usage/exit`: "
        "unknown key 'exit'"
    ) in part
    assert "a case with a typo" not in part  # not shown as an example
    assert "runbooks/full-log-disk.tests/broken.yaml:6:38" in html_page(tmp_path / "site").text


def test_a_case_the_runbook_no_longer_passes_is_marked_and_its_expectations_not_shown(
    runbooks: Path, tmp_path: Path
) -> None:
    runbook = runbooks / f"{RUNBOOK_ID}.yaml"
    runbook.write_text(runbook.read_text(encoding="utf-8").replace("out < 90", "out < 99"), encoding="utf-8")
    build(runbooks, tmp_path / "site")
    part = examples_part(md_page(tmp_path / "site"))
    present = part[: part.index("### Example 2")]
    assert "**This example currently fails `cairn test`**" in present
    assert "Expected: **finding** — 97 % used" not in present  # no longer what the runbook concludes
    assert "- `web-1`: **remediated**" not in present
    assert "```text\n97\n```" in present  # what the host answered is still shown
    healthy = part[part.index("### Example 2") : part.index("### Example 3")]
    assert "currently fails" not in healthy and "Expected: **ok** — 41 % used" in healthy


def test_a_runbook_without_cases_says_so_and_the_index_counts_cases(runbooks: Path, tmp_path: Path) -> None:
    other = (runbooks / f"{RUNBOOK_ID}.yaml").read_text(encoding="utf-8").replace(RUNBOOK_ID, "no-cases")
    (runbooks / "no-cases.yaml").write_text(other, encoding="utf-8")
    build(runbooks, tmp_path / "site")
    part = examples_part(md_page(tmp_path / "site", "no-cases"))
    assert "This runbook has no test cases yet." in part
    assert "`runbooks/no-cases.tests/`" in part

    index = (tmp_path / "site" / "md" / "index.md").read_text(encoding="utf-8")
    anchor = "worked-examples-what-you-see-when-the-pitfall-is-there"
    assert (
        f"| `{RUNBOOK_ID}` | warning | linux, disk | [3](runbooks/{RUNBOOK_ID}.md#{anchor}) (1 broken) |"
        in index
    )
    assert "| `no-cases` | warning | linux, disk | none |" in index
    # the link lands on the section in the HTML too
    html_index = (tmp_path / "site" / "html" / "index.html").read_text(encoding="utf-8")
    assert f'href="runbooks/{RUNBOOK_ID}.html#{anchor}"' in html_index
    assert f'id="{anchor}"' in (tmp_path / "site" / "html" / "runbooks" / f"{RUNBOOK_ID}.html").read_text(
        encoding="utf-8"
    )


def test_the_same_cases_give_the_same_bytes(runbooks: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    build(runbooks, first)
    build(runbooks, second)
    tree = {p.relative_to(first): p.read_bytes() for p in sorted(first.rglob("*")) if p.is_file()}
    assert tree == {p.relative_to(second): p.read_bytes() for p in sorted(second.rglob("*")) if p.is_file()}
    assert HEADING in md_page(first)


@pytest.mark.cli
def test_the_cairn_test_line_a_page_shows_runs_the_case(
    cairn: CairnRunner, runbooks: Path, tmp_path: Path
) -> None:
    """Run from the folder holding runbooks/, the command the page gives passes: the page tells the truth."""
    done = cairn("docs", "build", "site", "--runbooks", "runbooks")
    assert done.returncode == 0, done.stderr
    page = md_page(tmp_path / "site")
    commands = re.findall(r"^Run it: `(cairn test [^`]+)`", page, re.MULTILINE)
    assert len(commands) == 3
    for command in commands:
        ran = cairn(*shlex.split(command)[1:])
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "1 case: 1 passed" in ran.stdout


# --------------------------------------------------------------------------- in a real browser


@pytest.mark.browser
def test_a_reader_follows_the_index_to_the_examples_and_sees_the_output_as_text(
    runbooks: Path, tmp_path: Path, chromium: Chromium
) -> None:
    site = build(runbooks, tmp_path / "site")
    chromium.dom(site.index_html.as_uri())
    href = chromium.evaluate("document.querySelector('a[href*=\"#worked-examples\"]').href")
    assert href == (site.index_html.parent / "runbooks" / f"{RUNBOOK_ID}.html").as_uri() + (
        "#worked-examples-what-you-see-when-the-pitfall-is-there"
    )
    chromium.dom(href)
    assert chromium.evaluate("document.scripts.length + document.images.length") == 0
    heading = "document.getElementById('worked-examples-what-you-see-when-the-pitfall-is-there').textContent"
    assert chromium.evaluate(heading) == "Worked examples: what you see when the pitfall is there"
    examples = chromium.evaluate("[...document.querySelectorAll('h3')].map(h => h.textContent)")
    assert examples[-4:] == [
        "Example 1: the log disk is full",
        "Example 2: plenty of room",
        "Example 3: the check cannot look",
        "Case files with problems",
    ]
    outputs = chromium.evaluate("[...document.querySelectorAll('pre code')].map(c => c.textContent)")
    hostile = [text for text in outputs if "onerror" in text]
    assert (
        len(hostile) == 1 and "<script>alert('stdout')</script>\n<img src=x onerror=alert(2)>" in hostile[0]
    )
    text = chromium.evaluate("document.body.innerText")
    assert "Expected: finding — 97 % used" in text
    assert "cairn test runbooks/full-log-disk.tests/present.yaml" in text


# --------------------------------------------------------------------------- the bundled runbooks


@pytest.mark.cli
def test_every_bundled_case_file_shows_up_on_its_runbooks_page(cairn: CairnRunner, tmp_path: Path) -> None:
    done = cairn("docs", "build", str(tmp_path / "site"), "--runbooks", str(RUNBOOKS))
    assert done.returncode == 0, done.stderr
    library = load_library([RUNBOOKS])
    for rb in library.runbooks:
        assert HEADING in md_page(tmp_path / "site", rb.id), rb.id
    on_disk = sorted(
        p for p in RUNBOOKS.glob("*.tests/*") if p.is_file() and p.suffix in {".yaml", ".yml"}
    )  # whatever cases exist when the test runs
    for case_file in on_disk:
        runbook_id = case_file.parent.name.removesuffix(".tests")
        page = md_page(tmp_path / "site", runbook_id)
        label = f"runbooks/{case_file.parent.name}/{case_file.name}"
        assert label in examples_part(page), f"{label} is not on the page of {runbook_id}"
        assert label in html_page(tmp_path / "site", runbook_id).text
