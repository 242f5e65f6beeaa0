"""The run screen alone, on 50 local hosts streaming output: the load for ``bench/tui.py``'s key latency.

``python -m bench.tui_fanout SCRATCH HOSTS`` writes a one-step runbook and an
inventory of HOSTS local hosts into SCRATCH, opens the TUI's run screen on them
in a real terminal and lets the run go (``c``), with the knowledge pane shown.
The status line says ``running detect`` while output arrives.

The streamer is perl, not Python: 50 Python interpreters waking 100 times a
second took both cores of a 2-core machine (each printed ~12 lines a second
instead of 100), so the benchmark measured a starved machine rather than the
UI. Perl (``perl-base``, on every Debian) streams the 5,000 lines a second with
most of the machine idle, as remote hosts would leave it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from textual.app import App

from engine.core.executors import ExecutionOptions
from engine.core.inventory import resolve_targets
from engine.core.loader import load_library
from engine.core.spec import RunSpec, Trigger, TriggerKind
from tui.config import CairnConfig
from tui.screens.run import RunScreen

STREAMER = """
id: stream-lines
title: A step that streams output on every host
severity: info
summary: Benchmark load for the TUI.
targets: fleet
detect:
  - id: stream
    title: a line every 10 ms for three minutes
    run: perl -e '$| = 1; for my $i (0 .. 17999) { print "line $i\\n"; select(undef, undef, undef, 0.01) }'
    timeout: 5m
"""


class FanOutApp(App[None]):
    """Pushes the run screen, shows the knowledge and runs every step at once."""

    def __init__(self, scratch: Path, hosts: int) -> None:
        super().__init__()
        self.scratch = scratch
        self.hosts = hosts

    def on_mount(self) -> None:
        folder = self.scratch / "stream"
        folder.mkdir(exist_ok=True)
        (folder / "stream-lines.yaml").write_text(textwrap.dedent(STREAMER).lstrip(), encoding="utf-8")
        inventory = self.scratch / "fleet.yml"
        lines = "\n".join(f"        h{i:02d}: {{ansible_connection: local}}" for i in range(self.hosts))
        inventory.write_text(f"all:\n  children:\n    fleet:\n      hosts:\n{lines}\n", encoding="utf-8")
        runbook = load_library([folder]).get("stream-lines")
        targets = tuple(resolve_targets([str(inventory)], "fleet", None))
        spec = RunSpec(
            runbook=runbook,
            hosts=targets,
            inputs={},
            options=ExecutionOptions(inventory_sources=(str(inventory),)),
            forks=self.hosts,
            trigger=Trigger(kind=TriggerKind.TUI),
        )
        screen = RunScreen(spec, CairnConfig(runbook_dirs=(folder,)), practice="stream-lines")
        self.push_screen(screen)
        self.call_after_refresh(screen.action_continue)


if __name__ == "__main__":
    FanOutApp(Path(sys.argv[1]), int(sys.argv[2])).run()
