"""`cairn docs build`: every runbook as a page a newcomer can learn from, in Markdown and a static HTML site."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from engine.core.loader import load_library
from engine.core.model import ManualAction, RunAction
from engine.docs.site import DocsSite, build_site
from tests.chromium import Chromium
from tests.conftest import REPO, RUNBOOKS, CairnRunner

DISK = """\
# A runbook using every kind of step and every step option the docs explain.
id: disk-full
title: Disk fills up with old logs
severity: warning
tags: [linux, disk]
summary: |
  Old logs fill **/var/log** until writes fail.
symptoms:
  - "`No space left on device` in the application log."
  - Alerts fire for a full disk every night at 02:00.
cause: |
  Nobody rotates the logs: the cron job was dropped in the rebuild.
references:
  - title: "logrotate(8)"
    url: https://man7.org/linux/man-pages/man8/logrotate.8.html
targets: log_servers
inputs:
  log_dir:
    type: string
    default: /var/log
    description: Folder whose files are counted.
  max_age:
    type: duration
    default: 7d
    description: Files older than this may go.
  mode:
    type: string
    choices: [fast, thorough]
    default: fast
    description: How hard to look.
detect:
  - id: usage_percent
    title: Use of the file system holding the logs
    why: Above 90 % the next log burst fills it.
    run: |
      set -o pipefail
      df --output=pcent {{ inputs.log_dir }} | tail -n1 | tr -dc 0-9
    parse: number
    expect: out < 90
    report: "{{ out }} % used"
    timeout: 15s
  - id: df_answers
    title: df answers at all
    why: A hung NFS mount makes df hang; the hang itself is the symptom.
    run: df {{ inputs.log_dir }} > /dev/null
    timeout: 5s
    on_timeout: finding
    report: df answered
diagnose:
  - id: old_files
    title: Files older than the retention
    when: steps.usage_percent.finding
    why: These are what a clean-up would delete.
    run: find {{ inputs.log_dir }} -type f -mmin +{{ (inputs.max_age / 60) | int }} -printf '%s|%p\\n'
    parse:
      table: {columns: [bytes, path], separator: "|"}
    exit_codes: [0, 1]
    report: "{{ out | length }} old files"
    timeout: 1m
remediate:
  - id: ask_owner
    title: Ask the owner before deleting
    why: Some logs are evidence for an open incident.
    manual: |
      Ask the owner of {{ target }} whether the old logs may go.
    tradeoff: Takes someone's time at night.
  - id: delete_old
    title: Delete files older than the retention
    why: Frees the space at once.
    run: find {{ inputs.log_dir }} -type f -mmin +{{ (inputs.max_age / 60) | int }} -delete
    tradeoff: Deleted logs are gone for good; copy what an incident needs first.
    timeout: 2m
    serial: 2
  - id: install_rotation
    title: Install the rotation cron job
    why: Keeps it from coming back.
    ansible:
      module: ansible.builtin.cron
      args:
        name: rotate logs
        hour: "2"
        job: /usr/sbin/logrotate /etc/logrotate.conf
      become: true
    tradeoff: One more cron job to own.
  - id: run_playbook
    title: Apply the logging playbook
    why: The playbook sets the retention for every service.
    ansible:
      playbook: playbooks/logging.yml
    confirm: false
verify:
  - id: usage_after
    title: Use of the file system after the clean-up
    why: The clean-up counts when use is below the limit again.
    run: df --output=pcent {{ inputs.log_dir }} | tail -n1 | tr -dc 0-9
    parse: number
    expect: out < 90
    report: "{{ out }} % used"
    timeout: 15s
"""

PLAYBOOK = """\
- name: Set log retention (docs fixture)
  hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
"""

HOSTILE = """\
# Runbook text is Markdown, never HTML: every tag here must come out as text.
id: hostile-text
title: "Escaping <script>alert('title')</script> in titles"
severity: critical
tags: [linux]
summary: "Summary with <script>alert('summary')</script> and <img src=x onerror=alert(1)>."
symptoms:
  - "A symptom with <script>alert('symptom')</script> in it."
cause: "<iframe src=https://example.com></iframe> is text too."
detect:
  - id: fence_in_command
    title: A command holding a Markdown fence
    why: "<b>bold?</b> No: text."
    run: |
      cat <<'EOF'
      ```
      </code></pre><script>alert(1)</script>
      EOF
    report: "<script>alert('report')</script>"
    timeout: 10s
"""

# A runbook may be called `index`: its page must not replace the site's index.
INDEX = """\
id: index
title: A runbook called index
severity: info
summary: Its page lives beside the others, not over the site's index.
detect:
  - id: always_ok
    title: Exit zero
    run: "true"
    timeout: 5s
"""

BROKEN = """\
id: broken-one
title: Broken
severity: critcal
summary: The severity is misspelt.
detect:
  - id: check
    title: Check
    run: "true"
"""


@pytest.fixture
def fixture_runbooks(tmp_path: Path) -> Path:
    """A folder of runbooks: every step option, hostile text, one called `index`, and an invalid file."""
    folder = tmp_path / "runbooks"
    (folder / "playbooks").mkdir(parents=True)
    (folder / "playbooks" / "logging.yml").write_text(PLAYBOOK, encoding="utf-8")
    for name, text in {
        "disk-full": DISK,
        "hostile-text": HOSTILE,
        "index": INDEX,
        "broken-one": BROKEN,
    }.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def build(folder: Path, out: Path) -> DocsSite:
    return build_site(load_library([folder]), out)


# --------------------------------------------------------------------------- reading the HTML back


class Page(HTMLParser):
    """What a reader relies on in one HTML page: its title, headings, ids, links and every tag used."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (href, link text) of <a> elements
        self.stylesheets: list[str] = []
        self.headings: list[tuple[str, str]] = []  # (tag, text)
        self.title = ""
        self._open: list[list[str]] = []  # text collectors for title, headings and links
        self._kinds: list[tuple[str, str]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        self.attrs += list(values.items())
        if "id" in values:
            self.ids.add(values["id"])
        if tag in {"title", "h1", "h2", "h3", "a"}:
            self._open.append([])
            self._kinds.append((tag, values.get("href", "")))
        if tag == "link":
            self.stylesheets.append(values.get("href", ""))

    def handle_endtag(self, tag: str) -> None:
        if self._kinds and self._kinds[-1][0] == tag:
            kind, href = self._kinds.pop()
            text = " ".join("".join(self._open.pop()).split())
            if kind == "title":
                self.title = text
            elif kind == "a":
                self.links.append((href, text))
            else:
                self.headings.append((kind, text))

    def handle_data(self, data: str) -> None:
        for collector in self._open:
            collector.append(data)

    def h1(self) -> list[str]:
        return [text for tag, text in self.headings if tag == "h1"]


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def broken_links(html_root: Path) -> list[str]:
    """Every relative href in every page that names no existing file, or no element id in it."""
    pages = {p.resolve(): read_page(p) for p in html_root.rglob("*.html")}
    broken = []
    for path, page in pages.items():
        hrefs = [(href, "a") for href, _ in page.links] + [(href, "link") for href in page.stylesheets]
        for href, tag in hrefs:
            parts = urlsplit(href)
            if tag == "a" and parts.scheme in {"http", "https"}:
                continue  # a reference to upstream material: followed when clicked, never loaded
            assert not parts.scheme and not parts.netloc, f"{path}: link {href!r} leaves the site"
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.is_file():
                broken.append(f"{path.name}: {href} (no file {target})")
            elif parts.fragment and (target not in pages or parts.fragment not in pages[target].ids):
                broken.append(f"{path.name}: {href} (no id {parts.fragment!r} in {target.name})")
    return broken


# --------------------------------------------------------------------------- the fixture runbooks


def test_every_valid_runbook_gets_a_markdown_and_an_html_page(fixture_runbooks: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    site = build(fixture_runbooks, out)
    assert site.runbooks == ("disk-full", "hostile-text", "index")
    assert site.invalid == 1
    assert site.index_md == out / "md" / "index.md"
    assert site.index_html == out / "html" / "index.html"
    expected = [out / "md" / "index.md", *(out / "md" / "runbooks" / f"{r}.md" for r in site.runbooks)]
    expected += [
        out / "html" / "index.html",
        *(out / "html" / "runbooks" / f"{r}.html" for r in site.runbooks),
    ]
    assert list(site.pages) == expected
    assert all(p.is_file() for p in site.pages)
    # the runbook called `index` did not overwrite the site's index
    assert read_page(out / "html" / "index.html").h1() == ["Cairn knowledge base"]
    assert read_page(out / "html" / "runbooks" / "index.html").h1() == ["A runbook called index"]
    assert (out / "html" / "cairn.css").is_file()


def test_a_runbook_page_holds_its_knowledge_and_every_step_exactly(
    fixture_runbooks: Path, tmp_path: Path
) -> None:
    build(fixture_runbooks, tmp_path / "site")
    page = (tmp_path / "site" / "md" / "runbooks" / "disk-full.md").read_text(encoding="utf-8")
    runbook = load_library([fixture_runbooks]).get("disk-full")

    # knowledge first, in the order a newcomer reads it, then the phases
    order = [
        "# Disk fills up",
        "## Symptoms",
        "## Cause",
        "## References",
        "## Where it applies",
        "### Inputs",
    ]
    order += ["## How it runs", "## Detect", "## Diagnose", "## Remediate", "## Verify"]
    positions = [page.index(h) for h in order]
    assert positions == sorted(positions)
    assert "Old logs fill **/var/log** until writes fail." in page
    assert "- `No space left on device` in the application log." in page
    assert "[logrotate(8)](https://man7.org/linux/man-pages/man8/logrotate.8.html)" in page
    assert "Hosts matching `log_servers`" in page
    assert "- `max_age` *duration* (default `7d`): Files older than this may go." in page
    assert "(default `fast`) (one of `fast`, `thorough`)" in page
    assert "[linux](../index.md#tag-linux), [disk](../index.md#tag-disk)" in page
    assert (
        "**Practise it:** there is no practice lab for this runbook yet (docs/labs.md says how to write one "
        "beside it). `cairn plan disk-full`"
    ) in page

    # every step: its title, why, the command exactly as written, and how its result is read
    for step in (*runbook.detect, *runbook.diagnose, *runbook.remediate, *runbook.verify):
        assert f". {step.title}\n\n`{step.id}` · " in page
        assert step.why in page
        if isinstance(step.action, RunAction):
            assert f"```sh\n{step.action.command.strip()}\n```" in page
        if step.tradeoff:
            assert f"**Trade-off:** {step.tradeoff}" in page
    assert "each `{{ … }}` value is filled in and shell-quoted at run time" in page
    assert "- **Expect** `out < 90`: true is ok; false is a finding (the pitfall is present)." in page
    assert "- **Report** (the step's one-line message): `{{ out }} % used`" in page
    assert "- **Timeout** 15s; past it the command is killed and the step is an error" in page
    assert "- **Timeout** 5s; past it the command is killed and the step counts as a finding" in page
    assert "**Only when** `steps.usage_percent.finding`; otherwise the step is skipped." in page
    assert "cells separated by `|`" in page and "columns `bytes`, `path`" in page
    assert "- **Exit codes** meaning the command worked: 0, 1." in page
    assert "> Ask the owner of {{ target }} whether the old logs may go." in page
    assert "`--yes` never does it for you" in page
    assert "- **Rolling:** in batches of 2 host(s) (`serial: 2`)" in page
    assert "- **Approval:** asks before it runs (`--yes` approves it)." in page
    assert "- **Approval:** runs without asking (`confirm: false`)." in page
    assert (
        "**Ansible module** `ansible.builtin.cron`" in page
        and "It runs with privilege escalation (`become`)." in page
    )
    assert "```yaml\nname: rotate logs\nhour: '2'\njob: /usr/sbin/logrotate /etc/logrotate.conf\n```" in page
    assert "**Ansible playbook** `playbooks/logging.yml`" in page
    assert f"```yaml\n{PLAYBOOK.strip()}\n```" in page
    assert "Source: `runbooks/disk-full.yaml`" in page


def test_the_index_lists_runbooks_by_tag_and_by_symptom_and_the_invalid_files(
    fixture_runbooks: Path, tmp_path: Path
) -> None:
    build(fixture_runbooks, tmp_path / "site")
    index = (tmp_path / "site" / "md" / "index.md").read_text(encoding="utf-8")
    disk = "- [Disk fills up with old logs](runbooks/disk-full.md) — `disk-full`, warning"
    assert f"### Tag: disk\n\n{disk}\n\n### Tag: linux\n\n{disk}\n- [Escaping" in index
    assert "### No tag\n\n- [A runbook called index](runbooks/index.md) — `index`, info" in index
    assert (
        "- Alerts fire for a full disk every night at 02:00. → "
        "[Disk fills up with old logs](runbooks/disk-full.md#symptoms)"
    ) in index
    assert "- `broken-one.yaml`" not in index  # named as the reader knows it: folder and file
    assert "- `runbooks/broken-one.yaml` (id `broken-one`): 1 problem\n" in index
    assert "  - line 3, column 11 at `/severity`: 'severity' must be one of info, warning, critical" in index

    html_index = read_page(tmp_path / "site" / "html" / "index.html")
    assert ("runbooks/disk-full.html", "Disk fills up with old logs") in html_index.links  # by tag
    assert (
        "runbooks/disk-full.html#symptoms",
        "Disk fills up with old logs",
    ) in html_index.links  # by symptom
    assert {"tag-disk", "tag-linux", "by-symptom", "invalid-runbook-files"} <= html_index.ids


def test_every_relative_link_resolves_and_nothing_leaves_the_disk(
    fixture_runbooks: Path, tmp_path: Path
) -> None:
    build(fixture_runbooks, tmp_path / "site")
    html_root = tmp_path / "site" / "html"
    assert broken_links(html_root) == []
    for path in html_root.rglob("*.html"):
        page = read_page(path)
        assert "script" not in page.tags, f"{path.name} needs JavaScript"
        # one local stylesheet and nothing else loaded: no image, frame or font from anywhere
        assert page.stylesheets == ["cairn.css" if path.parent == html_root else "../cairn.css"]
        assert [name for name, _ in page.attrs if name == "src"] == [], path.name


def test_runbook_text_cannot_inject_html(fixture_runbooks: Path, tmp_path: Path) -> None:
    build(fixture_runbooks, tmp_path / "site")
    for path in (tmp_path / "site" / "html").rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        page = Page(text)
        assert not {"script", "img", "iframe", "b"} & set(page.tags), path.name
        assert not [name for name, _ in page.attrs if name.startswith("on")], path.name
    hostile = (tmp_path / "site" / "html" / "runbooks" / "hostile-text.html").read_text(encoding="utf-8")
    assert "Summary with &lt;script&gt;alert(" in hostile
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile
    assert "&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;" in hostile  # inside the command's code block
    assert "<title>Escaping &lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt; in titles" in hostile
    # the command holds a ``` line: the fence around it is longer, so the whole command stays code
    md = (tmp_path / "site" / "md" / "runbooks" / "hostile-text.md").read_text(encoding="utf-8")
    assert "````sh\ncat <<'EOF'\n```\n</code></pre><script>alert(1)</script>\nEOF\n````" in md
    assert read_page(tmp_path / "site" / "html" / "runbooks" / "hostile-text.html").h1() == [
        "Escaping <script>alert('title')</script> in titles"
    ]


def test_the_same_runbooks_give_the_same_bytes_and_stale_pages_go(
    fixture_runbooks: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    build(fixture_runbooks, first)
    build(fixture_runbooks, second)
    tree = {p.relative_to(first): p.read_bytes() for p in sorted(first.rglob("*")) if p.is_file()}
    assert tree == {p.relative_to(second): p.read_bytes() for p in sorted(second.rglob("*")) if p.is_file()}

    # the runbook `index` is deleted: its pages go, a file somebody else put there stays
    notes = first / "md" / "runbooks" / "notes.md"
    notes.write_text("# my notes\n", encoding="utf-8")
    (fixture_runbooks / "index.yaml").unlink()
    site = build(fixture_runbooks, first)
    assert site.runbooks == ("disk-full", "hostile-text")
    assert not (first / "md" / "runbooks" / "index.md").exists()
    assert not (first / "html" / "runbooks" / "index.html").exists()
    assert notes.read_text(encoding="utf-8") == "# my notes\n"
    assert (first / "html" / "index.html").is_file()


# --------------------------------------------------------------------------- the bundled runbooks


def test_every_bundled_runbook_gets_a_page_with_its_commands(tmp_path: Path) -> None:
    library = load_library([RUNBOOKS])
    site = build_site(library, tmp_path / "site")
    assert list(site.runbooks) == [rb.id for rb in library.runbooks] and site.runbooks
    assert site.invalid == len(library.invalid)
    index = (tmp_path / "site" / "md" / "index.md").read_text(encoding="utf-8")
    for rb in library.runbooks:
        page = (tmp_path / "site" / "md" / "runbooks" / f"{rb.id}.md").read_text(encoding="utf-8")
        assert f"(runbooks/{rb.id}.md)" in index
        assert read_page(tmp_path / "site" / "html" / "runbooks" / f"{rb.id}.html").h1()
        for step in (*rb.detect, *rb.diagnose, *rb.remediate, *rb.verify):
            match step.action:
                case RunAction(command=command):
                    assert f"\n{command.strip()}\n```" in page, f"{rb.id}: {step.id}"
                case ManualAction(instructions=instructions):
                    assert instructions.strip().splitlines()[0] in page, f"{rb.id}: {step.id}"
    for result in library.invalid:  # an invalid file is listed, not hidden
        assert f"`runbooks/{Path(result.path).name}`" in index
    assert broken_links(tmp_path / "site" / "html") == []


# --------------------------------------------------------------------------- through the real CLI


@pytest.mark.cli
def test_cairn_docs_build(cairn: CairnRunner, fixture_runbooks: Path, tmp_path: Path) -> None:
    done = cairn("docs", "build", "out", "--runbooks", str(fixture_runbooks))
    assert done.returncode == 0, done.stderr
    assert "3 runbook pages in out/ (Markdown and HTML)" in done.stdout
    assert "1 invalid runbook file(s) listed on the index with their problems" in done.stdout
    assert f"open {(tmp_path / 'out' / 'html' / 'index.html').as_uri()}" in done.stdout

    done = cairn("docs", "build", str(tmp_path / "again"), "--runbooks", str(fixture_runbooks), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["index"] == str(tmp_path / "again" / "html" / "index.html")
    assert str(tmp_path / "again" / "md" / "runbooks" / "disk-full.md") in data["pages"]
    assert all(Path(p).is_file() for p in data["pages"])
    assert (tmp_path / "out" / "html" / "index.html").read_bytes() == Path(data["index"]).read_bytes()

    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    done = cairn("docs", "build", str(tmp_path / "a-file"), "--runbooks", str(fixture_runbooks))
    assert done.returncode == 2
    assert f"cannot write the docs to {tmp_path / 'a-file'}" in done.stderr
    assert "internal error" not in done.stderr


def test_a_lab_declared_beside_a_runbook_is_in_its_training_page(cairn: CairnRunner, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("stale-lock-files.yaml", "stale-lock-files.lab.yaml"):
        (folder / name).write_text((REPO / "docs" / "examples" / name).read_text(encoding="utf-8"))
    done = cairn("docs", "build", str(tmp_path / "site"), "--runbooks", str(folder))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "site" / "md" / "runbooks" / "stale-lock-files.md").read_text(encoding="utf-8")
    assert (
        "**Practise it:** `cairn lab up stale-lock-files` reproduces this pitfall on this machine (the lab: "
        "three lock files of workers that died, and one a live worker holds (it must stay))"
    ) in page


# --------------------------------------------------------------------------- in a real browser


@pytest.mark.browser
def test_the_site_opens_from_disk_in_chromium(
    fixture_runbooks: Path, tmp_path: Path, chromium: Chromium
) -> None:
    site = build(fixture_runbooks, tmp_path / "site")
    index = Page(chromium.dom(site.index_html.as_uri()))
    assert index.title == "Cairn knowledge base"
    assert index.h1() == ["Cairn knowledge base"]
    assert [text for tag, text in index.headings if tag == "h2"] == [
        "Runbooks",
        "By tag",
        "By symptom",
        "Invalid runbook files",
    ]
    # the stylesheet loaded from disk: chromium applied it
    assert (
        chromium.evaluate("getComputedStyle(document.querySelector('pre, table')).borderCollapse")
        == "collapse"
    )

    # follow every link to a runbook page, as a reader clicking through the index would
    pages = sorted({href for href, _ in index.links if href.startswith("runbooks/") and "#" not in href})
    assert pages == ["runbooks/disk-full.html", "runbooks/hostile-text.html", "runbooks/index.html"]
    titles = {rb.id: rb.title for rb in load_library([fixture_runbooks]).runbooks}
    for href in pages:
        page = Page(chromium.dom((site.index_html.parent / href).as_uri()))
        title = titles[Path(href).stem]
        assert page.h1() == [title], href
        assert page.title == f"{title} — runbook {Path(href).stem}"
        assert "script" not in page.tags, href  # the hostile text stayed text in the browser's DOM too
        assert ("../index.html", "Cairn knowledge base") in page.links
        assert chromium.evaluate("document.scripts.length") == 0


def test_fixture_yaml_is_what_the_tests_say(fixture_runbooks: Path) -> None:
    """The fixtures load as intended: three valid runbooks and one file invalid for its severity only."""
    library = load_library([fixture_runbooks])
    assert [rb.id for rb in library.runbooks] == ["disk-full", "hostile-text", "index"]
    assert [[p.pointer for p in r.problems] for r in library.invalid] == [["/severity"]]
