"""The resolved-inventory cache: ansible-core's answer reused only while its inputs are the same bytes.

Through ``cairn plan`` (what a user runs; it resolves targets exactly as ``cairn run`` does) and,
for what only an inner call can show (that a hit does not import ansible-core), a fresh Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CairnRunner

pytestmark = pytest.mark.inventory

RUNBOOK = """id: show-role
title: Show a host's role
severity: info
summary: Prints the role the inventory gives each host.
targets: nodes
detect:
  - id: role
    title: role
    run: "echo {{ vars.role }}"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A runbook folder and an inventory folder with group_vars, as teams lay them out."""
    (tmp_path / "rbs").mkdir()
    (tmp_path / "rbs" / "show-role.yaml").write_text(RUNBOOK, encoding="utf-8")
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    nodes:\n      hosts:\n"
        "        node1: {ansible_connection: local}\n        node2: {ansible_connection: local}\n",
        encoding="utf-8",
    )
    (inv / "group_vars" / "nodes.yml").write_text("role: worker\n", encoding="utf-8")
    return tmp_path


def plan(cairn: CairnRunner, site: Path, *extra: str, inventory: str = "inv") -> dict[str, str]:
    """Each host's rendered command, as ``cairn plan --json`` shows it."""
    result = cairn(
        "plan", "show-role", "--runbooks", str(site / "rbs"), "-i", str(site / inventory),
        "--no-preflight", "--json", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {h["host"]: h["steps"][0]["text"] for h in json.loads(result.stdout)["hosts"]}


def entries() -> list[Path]:
    folder = Path(os.environ["CAIRN_CACHE_DIR"]) / "inventory"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def rewrite_keeping_stat(path: Path, text: str) -> None:
    """New bytes, same size and modification time: only the content tells the change."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_the_second_run_answers_from_the_cache_with_the_same_hosts(cairn: CairnRunner, site: Path) -> None:
    first = plan(cairn, site)
    assert first == {"node1": "echo worker", "node2": "echo worker"}
    assert len(entries()) == 1
    stored = json.loads(entries()[0].read_text(encoding="utf-8"))
    assert [h["name"] for h in stored["hosts"]] == ["node1", "node2"]
    assert plan(cairn, site) == first
    assert len(entries()) == 1  # the same question: the same entry


def test_a_changed_group_vars_file_is_read_again_even_with_the_same_size_and_time(
    cairn: CairnRunner, site: Path
) -> None:
    assert plan(cairn, site)["node1"] == "echo worker"
    rewrite_keeping_stat(site / "inv" / "group_vars" / "nodes.yml", "role: broker\n")
    assert plan(cairn, site) == {"node1": "echo broker", "node2": "echo broker"}


def test_a_new_host_vars_file_and_a_changed_limit_are_new_questions(cairn: CairnRunner, site: Path) -> None:
    plan(cairn, site)
    (site / "inv" / "host_vars").mkdir()
    (site / "inv" / "host_vars" / "node2.yml").write_text("role: special\n", encoding="utf-8")
    assert plan(cairn, site) == {"node1": "echo worker", "node2": "echo special"}
    assert plan(cairn, site, "--limit", "node2") == {"node2": "echo special"}


def test_an_inventory_program_is_run_every_time_and_never_cached(cairn: CairnRunner, site: Path) -> None:
    script = site / "dynamic.py"
    counter = site / "calls"
    script.write_text(
        f"#!{sys.executable}\nimport json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
        "print(json.dumps({'nodes': {'hosts': ['node1'], 'vars': {'role': 'dynamic', "
        "'ansible_connection': 'local'}}, '_meta': {'hostvars': {}}}))\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    assert plan(cairn, site, inventory="dynamic.py") == {"node1": "echo dynamic"}
    assert plan(cairn, site, inventory="dynamic.py") == {"node1": "echo dynamic"}
    assert counter.read_text() == "2"  # Ansible ran the program both times
    assert entries() == []


def test_an_inventory_holding_a_password_is_not_copied_into_the_cache(cairn: CairnRunner, site: Path) -> None:
    (site / "inv" / "group_vars" / "nodes.yml").write_text(
        "role: worker\nansible_become_password: hunter2-not-for-disk\n", encoding="utf-8"
    )
    assert plan(cairn, site)["node1"] == "echo worker"
    cache = Path(os.environ["CAIRN_CACHE_DIR"])
    written = [p.read_bytes() for p in cache.rglob("*") if p.is_file()]
    assert all(b"hunter2" not in data for data in written)
    assert entries() == []


@pytest.mark.parametrize(
    "garbage", [b"", b"{not json", b'{"format": "1", "key": "x", "hosts": 5}', b"\xff\xfe"]
)
def test_a_damaged_entry_is_ignored_and_replaced(cairn: CairnRunner, site: Path, garbage: bytes) -> None:
    plan(cairn, site)
    (entry,) = entries()
    entry.write_bytes(garbage)
    assert plan(cairn, site) == {"node1": "echo worker", "node2": "echo worker"}
    assert json.loads(entry.read_text(encoding="utf-8"))["hosts"][0]["name"] == "node1"


def test_an_unwritable_cache_folder_changes_nothing(cairn: CairnRunner, site: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be\n", encoding="utf-8")
    result = cairn(
        "plan", "show-role", "--runbooks", str(site / "rbs"), "-i", str(site / "inv"), "--no-preflight",
        CAIRN_CACHE_DIR=str(blocked / "cache"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "echo worker" in result.stdout
    assert result.stderr == ""


def test_cairn_no_cache_reads_and_writes_nothing(cairn: CairnRunner, site: Path) -> None:
    result = cairn(
        "plan", "show-role", "--runbooks", str(site / "rbs"), "-i", str(site / "inv"), "--no-preflight",
        CAIRN_NO_CACHE="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert entries() == []


def test_a_hit_does_not_import_ansible(site: Path) -> None:
    probe = (
        "import sys\n"
        "from engine.core.inventory import resolve_targets\n"
        f"hosts = resolve_targets([{str(site / 'inv')!r}], 'nodes', None)\n"
        "print([h.name for h in hosts], 'ansible' in sys.modules)\n"
    )
    answers = [
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert answers == ["['node1', 'node2'] True\n", "['node1', 'node2'] False\n"]
