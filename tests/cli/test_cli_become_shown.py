"""`become` shown wherever a command is shown, through the real `cairn` command.

A step that escalates shows ``(as root via sudo)`` — the label of its escalation on that host — in
`cairn plan` (text, and `become: {user, method}` in --json), in `cairn run --dry-run`, in the
terminal's approval prompt (a real terminal under tmux) and, from the runbook alone, in `cairn show`.
A host whose inventory says ``ansible_become: false`` shows no label for it, and the become password
of the inventory appears nowhere. Nothing here runs a command as root: the escalated step is only
planned, dry-run or declined at the prompt.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from engine.cli.terminal import FanOutPrinter, ProgressPrinter
from engine.core.events import StepStarted
from engine.core.journal import Journal
from engine.core.model import Phase
from tests.conftest import CairnRunner, LabStarter, cairn_command
from tests.terminal import EXITED, Terminal, tmux_terminal

pytestmark = pytest.mark.cli

PASSWORD = "Pw-4-sudo-9x"
"""The become password of the inventory: never shown, anywhere."""
LABEL = "(as root via sudo)"

ROOTY = """
id: rooty
title: A cache that only root may drop
severity: warning
summary: The cache is full; dropping it needs root.
inputs:
  target: {type: string}
detect:
  - id: fill
    title: How full the cache is
    run: echo 97
    parse: number
    expect: out < 90
    report: "{{ out }}% full"
remediate:
  - id: drop
    title: Drop the cache
    why: Only the kernel's control file frees it.
    become: true
    run: echo 3 > {{ inputs.target }}
  - id: note
    title: Write down that it was dropped
    run: echo dropped >> {{ inputs.target }}.log
"""

INVENTORY = f"""
all:
  hosts:
    node1:
      ansible_connection: local
      ansible_become_password: {PASSWORD}
    node2:
      ansible_connection: local
      ansible_become: false
    node3:
      ansible_connection: local
      ansible_become_user: postgres
"""
"""node1 escalates as the runbook says; node2's inventory turns it off; node3 escalates as another user."""


@pytest.fixture
def rooty(runbook_dir: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """The runbook's folder, the inventory, and the file the remediation would write (never written)."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    return runbook_dir(ROOTY), inventory, tmp_path / "drop_caches"


def args_for(rooty: tuple[Path, Path, Path], *more: str) -> list[str]:
    folder, inventory, target = rooty
    return ["--runbooks", str(folder), "-i", str(inventory), "-e", f"target={target}", *more]


def host_section(text: str, host: str) -> str:
    """The lines of ``cairn plan``'s text for one host."""
    found = re.search(rf"^{host} \(connection: .*?(?=^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, f"no section for {host} in:\n{text}"
    return found[0]


def test_plan_shows_the_escalation_per_host(cairn: CairnRunner, rooty: tuple[Path, Path, Path]) -> None:
    done = cairn("plan", "rooty", *args_for(rooty))
    assert done.returncode == 0, done.stderr
    out = done.stdout

    node1 = host_section(out, "node1")
    assert f"drop: Drop the cache {LABEL}" in node1, node1
    assert f"note: Write down that it was dropped {LABEL}" not in node1, "only the step that says become"
    assert f"$ echo 3 > {rooty[2]}" in node1, "the command itself is unchanged"
    node2 = host_section(out, "node2")
    assert "drop: Drop the cache" in node2 and "as root" not in node2, "ansible_become: false removes it"
    node3 = host_section(out, "node3")
    assert "drop: Drop the cache (as postgres via sudo)" in node3, "ansible_become_user names the user"
    assert PASSWORD not in out + done.stderr


def test_plan_json_has_the_become_of_each_step_and_host(
    cairn: CairnRunner, rooty: tuple[Path, Path, Path]
) -> None:
    done = cairn("plan", "rooty", *args_for(rooty, "--json"))
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    data = json.loads(done.stdout)
    become = {(h["host"], s["id"]): s["become"] for h in data["hosts"] for s in h["steps"]}
    assert become == {
        ("node1", "fill"): None,
        ("node1", "drop"): {"user": "root", "method": "sudo"},
        ("node1", "note"): None,
        ("node2", "fill"): None,
        ("node2", "drop"): None,
        ("node2", "note"): None,
        ("node3", "fill"): None,
        ("node3", "drop"): {"user": "postgres", "method": "sudo"},
        ("node3", "note"): None,
    }


def test_a_dry_run_says_the_remediation_would_run_as_root(
    cairn: CairnRunner, rooty: tuple[Path, Path, Path], journal_path: Path
) -> None:
    done = cairn("run", "rooty", *args_for(rooty, "--dry-run", "--limit", "node1"))
    assert done.returncode == 1, done.stdout + done.stderr  # the pitfall is present; nothing was changed
    out = done.stdout
    assert f"dry run: not run {LABEL}" in out, out
    assert f"would run $ echo 3 > {rooty[2]}" in out
    assert not rooty[2].exists(), "a dry run changes nothing"
    assert PASSWORD not in out + done.stderr

    many = cairn("run", "rooty", *args_for(rooty, "--dry-run"))
    lines = [line for line in many.stdout.splitlines() if " drop " in line]
    assert any(line.startswith("node1") and LABEL in line for line in lines), many.stdout
    assert any(line.startswith("node2") and "as root" not in line for line in lines), many.stdout
    assert any(line.startswith("node3") and "(as postgres via sudo)" in line for line in lines), many.stdout
    assert PASSWORD not in many.stdout + many.stderr
    journal = Journal(journal_path)
    try:
        run = journal.get_run("last")
    finally:
        journal.close()
    dropped = {s.host: s.message for s in run.steps if s.step_id == "drop"}
    assert dropped == {
        "node1": f"dry run: not run {LABEL}",
        "node2": "dry run: not run",
        "node3": "dry run: not run (as postgres via sudo)",
    }


def test_the_incident_report_says_which_steps_the_runbook_runs_as_root(
    cairn: CairnRunner, rooty: tuple[Path, Path, Path]
) -> None:
    """The journal does not record how a step escalated: the report says what the runbook as journaled
    declares, and that the host's inventory had the last word."""
    ran = cairn("run", "rooty", *args_for(rooty, "--dry-run", "--limit", "node1"))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    declared = "runs as root via sudo when the host's inventory allows it"
    for fmt, code in (("md", "`{}`"), ("html", "<code>{}</code>")):
        done = cairn("report", "last", "--format", fmt)
        assert done.returncode == 0, done.stderr
        shown = html.unescape(done.stdout) if fmt == "html" else done.stdout
        steps = shown.split(f"remediate · {code.format('drop')}", 1)[1]
        drop, note = steps.split(f"remediate · {code.format('note')}", 1)
        assert declared in drop, drop
        assert declared not in note, "only the step that says become"
        assert PASSWORD not in done.stdout


def test_cairn_show_says_the_step_runs_as_root_when_the_host_allows_it(
    cairn: CairnRunner, rooty: tuple[Path, Path, Path]
) -> None:
    done = cairn("show", "rooty", "--runbooks", str(rooty[0]))
    assert done.returncode == 0, done.stderr
    drop, note = done.stdout.split("Drop the cache", 1)[1].split("Write down that it was dropped", 1)
    assert "runs as root via sudo when the host allows it (become" in " ".join(drop.split()), drop
    assert "as root" not in note

    markdown = cairn("show", "rooty", "--runbooks", str(rooty[0]), "--markdown").stdout
    assert "runs as root via sudo when the host allows it (become" in markdown


@pytest.mark.parametrize("printer", [ProgressPrinter, FanOutPrinter])
def test_cairn_run_verbose_shows_the_escalation_above_the_command(
    printer: type[ProgressPrinter] | type[FanOutPrinter],
) -> None:
    """`cairn run -v` prints each command as it starts (in-process: the printer `cairn run` subscribes)."""
    out = io.StringIO()
    show = printer(out, verbose=True)
    remediate = Phase.REMEDIATE
    show(
        StepStarted(
            host="node1",
            phase=remediate,
            step_id="drop",
            title="Drop",
            command="echo 3 > f",
            become="as root via sudo",
        )
    )
    show(StepStarted(host="node1", phase=remediate, step_id="note", title="Note", command="echo done"))
    lines = [line.strip() for line in out.getvalue().splitlines() if "$" in line or "via" in line]
    assert [line.removeprefix("node1").strip() for line in lines] == [
        LABEL,
        "$ echo 3 > f",
        "$ echo done",
    ]


# ---------------------------------------------------------------------------- the bundled runbook and its lab


@pytest.mark.lab
def test_the_bundled_runbook_declares_become_and_its_lab_turns_it_off(
    cairn: CairnRunner, lab: LabStarter
) -> None:
    """kubelet-cpu-memcg's drop_caches writes /proc/sys/vm/drop_caches: it says it runs as root. Its lab's
    files are the user's own: the lab's inventory says ``ansible_become: false``, so nothing escalates."""
    shown = cairn("show", "kubelet-cpu-memcg", "--markdown").stdout
    drop = shown.split("(`drop_caches`", 1)[1].split("(`upgrade_kernel`", 1)[0]
    assert "runs as root via sudo when the host allows it (become)" in drop

    memcg = lab("kubelet-cpu-memcg")
    inventory = Path(memcg.inventory).read_text(encoding="utf-8")
    assert "# ansible_become: false: the lab's files are the user's own: no sudo needed." in inventory
    hosts = yaml.safe_load(inventory)["all"]["children"]
    assert all(v["ansible_become"] is False for group in hosts.values() for v in group["hosts"].values())
    planned = cairn("plan", "kubelet-cpu-memcg", "-i", memcg.inventory, "-e", f"@{memcg.info['inputs']}")
    assert planned.returncode == 0, planned.stderr
    assert "drop_caches: Drop reclaimable caches" in planned.stdout
    assert "as root" not in planned.stdout, "the lab's inventory turns become off"


# ---------------------------------------------------------------------------- a real terminal


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    with tmux_terminal() as term:
        yield term


@pytest.mark.tmux
def test_the_terminals_approval_prompt_shows_the_escalation(
    terminal: Terminal, rooty: tuple[Path, Path, Path], journal_path: Path
) -> None:
    """On a terminal `cairn run` asks before each remediation step; the prompt says it runs as root on
    node1, and not on node2, whose inventory turns become off. Both are declined: nothing runs."""
    command = [*cairn_command(), "run", "rooty", *args_for(rooty, "--limit", "node1,node2", "-f", "1")]
    command += ["--journal", str(journal_path)]
    terminal.start(command, {"TERM": "xterm-256color"}, width=200, height=60)

    prompt = "(decline the rest):"
    answered = 0
    while True:  # drop and note on each host, each declined

        def asked_or_ended(screen: str, answered: int = answered) -> bool:
            return screen.count(prompt) > answered or EXITED in screen

        screen = terminal.wait_for(asked_or_ended, f"question {answered + 1} or the end", history=True)
        if EXITED in screen:
            break
        assert answered < 4, f"more questions than steps:\n{screen}"
        answered += 1
        terminal.keys("n", "Enter")
    assert EXITED in screen, screen
    assert f"┌ remediate step 'drop' on node1 {LABEL}: Drop the cache" in screen, screen
    assert f"│ $ echo 3 > {rooty[2]}" in screen
    assert "┌ remediate step 'drop' on node2: Drop the cache" in screen, "ansible_become: false removes it"
    assert "┌ remediate step 'note' on node1: Write down" in screen, "only the step that says become"
    assert PASSWORD not in screen
    assert not rooty[2].exists(), "declined: nothing ran"
