"""`cairn lab up/status/down`: labs are found again by a later process, stopped completely, cleaned up on failure."""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from engine.lab import lifecycle
from engine.lab.base import LabContext, LabError, LabKind, LabResult, lab_env, reap
from tests.conftest import CairnRunner, alive

pytestmark = [pytest.mark.lab]


# A process with a child; the child says it is there by creating the file named by argv[1].
SLEEPER = "import os, sys, time\nif os.fork() == 0:\n    open(sys.argv[1], 'w').close()\ntime.sleep(600)"


def sleeper_lab(*, fail: bool = False) -> types.ModuleType:
    """A lab module whose `up` starts a process that has a child, then optionally fails."""
    module = types.ModuleType("sleeper_lab")

    def up(ctx: LabContext) -> LabResult:
        ctx.spawn([sys.executable, "-c", SLEEPER, str(ctx.dir / "forked")], name="sleeper", env=lab_env())
        ctx.wait_for((ctx.dir / "forked").exists, "the sleeper's child started", process="sleeper")
        (ctx.dir / "marker").write_text("x")
        if fail:
            raise LabError("the sleeper lab failed on purpose")
        return LabResult(group="demo", hosts={"demo-host": {"color": "red"}}, inputs={"path": str(ctx.dir)})

    vars(module).update(up=up, RUNBOOK="sleeper", SUMMARY="sleeps")
    return module


@pytest.fixture
def fake_labs(monkeypatch: pytest.MonkeyPatch) -> dict[str, types.ModuleType]:
    modules = {"sleeper": sleeper_lab(), "broken": sleeper_lab(fail=True)}
    monkeypatch.setattr(lifecycle, "LABS", {name: f"fake.{name}" for name in modules})
    monkeypatch.setattr(lifecycle, "lab_module", lambda name: modules[name])
    return modules


def descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_up_writes_inventory_and_inputs_and_down_stops_every_process(
    fake_labs: dict[str, types.ModuleType], tmp_path: Path
) -> None:
    labs = lifecycle.LabRoot(tmp_path / "root")
    info = labs.up("sleeper")
    (proc,) = info.processes
    assert alive(proc.pid)
    children = descendants(proc.pid)
    assert len(children) == 1 and alive(children[0])
    inventory = yaml.safe_load(info.inventory.read_text())
    assert inventory == {
        "all": {
            "children": {
                "demo": {
                    "hosts": {
                        "demo-host": {"ansible_connection": "local", "ansible_become": False, "color": "red"}
                    }
                }
            }
        }
    }
    assert yaml.safe_load(info.inputs.read_text()) == {"path": str(info.directory)}
    assert info.command() == f"cairn run sleeper -i {info.inventory} -e @{info.inputs}"

    # A second LabRoot (as `cairn lab status` / `down` in another process) finds it again.
    again = lifecycle.LabRoot(tmp_path / "root")
    assert [i.name for i in again.status()] == ["sleeper"]
    assert again.status()[0].running() == {"sleeper": True}
    with pytest.raises(LabError, match="already up"):
        again.up("sleeper")

    assert again.down() == [lifecycle.StoppedLab("sleeper")]
    assert not alive(proc.pid)
    assert not alive(children[0])  # the child it started went too
    assert not info.directory.exists()
    assert again.status() == []
    assert again.down() == []


def test_a_lab_that_fails_to_start_leaves_nothing_behind(
    fake_labs: dict[str, types.ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[int] = []
    original = LabContext.spawn

    def spy(
        self: LabContext,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        pid = original(self, argv, name=name, env=env, cwd=cwd)
        spawned.append(pid)
        return pid

    monkeypatch.setattr(LabContext, "spawn", spy)
    labs = lifecycle.LabRoot(tmp_path / "root")
    with pytest.raises(LabError, match="failed on purpose"):
        labs.up("broken")
    assert spawned and not any(alive(pid) for pid in spawned)
    assert not (tmp_path / "root" / "broken").exists()
    assert labs.status() == []


def test_a_recycled_pid_is_never_signalled(fake_labs: dict[str, types.ModuleType], tmp_path: Path) -> None:
    """down acts on a recorded pid only if the process still has the recorded start time."""
    labs = lifecycle.LabRoot(tmp_path / "root")
    info = labs.up("sleeper")
    (proc,) = info.processes
    state_file = tmp_path / "root" / "labs.json"
    state = json.loads(state_file.read_text())
    # Pretend the lab's process was this test's own process (a recycled pid): different start time.
    state["sleeper"]["processes"][0]["pid"] = os.getpid()
    state_file.write_text(json.dumps(state))
    assert lifecycle.LabRoot(tmp_path / "root").status()[0].running() == {"sleeper": False}
    lifecycle.LabRoot(tmp_path / "root").down()  # must not kill this test
    assert alive(os.getpid())
    os.killpg(proc.pid, signal.SIGKILL)  # the real one, found by its own pid
    reap(proc.pid)


def test_every_bundled_lab_declares_its_programs() -> None:
    for name in lifecycle.LABS:
        definition = lifecycle.bundled_lab(name)
        assert definition.programs, f"{name}: PROGRAMS is missing or empty"
        assert definition.kind is LabKind.BUNDLED and definition.healthy_variant


def test_a_missing_program_stops_a_lab_before_it_starts(
    fake_labs: dict[str, types.ModuleType], tmp_path: Path
) -> None:
    called: list[str] = []
    module = fake_labs["sleeper"]
    vars(module).update(PROGRAMS=("bash", "cairn-no-such-program"), up=lambda ctx: called.append(ctx.name))
    labs = lifecycle.LabRoot(tmp_path / "root")
    with pytest.raises(LabError) as failure:
        labs.up("sleeper")
    assert str(failure.value) == (
        "lab sleeper needs cairn-no-such-program, which is not installed; `cairn doctor` lists everything missing"
    )
    assert called == []
    assert not (tmp_path / "root").exists()


def test_unknown_lab_names_are_a_clear_usage_error(cairn: CairnRunner, tmp_path: Path) -> None:
    done = cairn("lab", "up", "no-such-pitfall", "--dir", str(tmp_path / "labs"))
    assert done.returncode == 2
    assert "no lab named 'no-such-pitfall'; labs: node-notready-zombie-shim" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.cli
@pytest.mark.git
def test_cli_up_status_down_through_a_real_lab(cairn: CairnRunner, tmp_path: Path) -> None:
    root = tmp_path / "labs"
    up = cairn("lab", "up", "branch-cleanup", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    assert "lab branch-cleanup is up" in up.stdout
    command = f"cairn run branch-cleanup -i {root}/branch-cleanup/inventory.yml -e @{root}/branch-cleanup/inputs.yaml"
    assert command in up.stdout

    status = cairn("lab", "status", "--dir", str(root), "--json")
    labs = {entry["name"]: entry for entry in json.loads(status.stdout)["labs"]}
    assert labs["branch-cleanup"]["command"] == command
    assert labs["ip-whitelist-breakage"] == {
        "name": "ip-whitelist-breakage",
        "up": False,
        "kind": "bundled",
        "source": "",
    }

    practice = cairn(*command.split()[1:], "--phase", "detect")
    assert practice.returncode == 1, practice.stdout + practice.stderr  # the lab reproduces the pitfall
    assert "superseded_releases      FINDING" in practice.stdout

    down = cairn("lab", "down", "--dir", str(root))
    assert down.returncode == 0
    assert "stopped: branch-cleanup" in down.stdout
    assert not (root / "branch-cleanup").exists()
