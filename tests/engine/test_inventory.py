"""Targets from real Ansible inventories, read by ansible-core."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import InventoryError
from engine.core.inventory import load_inventory, resolve_targets
from engine.core.model import LOCALHOST

pytestmark = pytest.mark.inventory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def yaml_inventory(tmp_path: Path) -> Path:
    root = tmp_path / "inv"
    (root / "group_vars").mkdir(parents=True)
    (root / "host_vars").mkdir()
    (root / "hosts.yml").write_text(
        """
all:
  children:
    k8s_nodes:
      hosts:
        node1: {ansible_host: 127.0.0.2, ansible_port: 2222}
        node2:
        node3:
    control:
      hosts:
        ctl: {ansible_connection: local}
""",
        encoding="utf-8",
    )
    (root / "group_vars" / "k8s_nodes.yml").write_text(
        "role: worker\nkernel_min: '4.19.113'\n", encoding="utf-8"
    )
    (root / "host_vars" / "node2.yml").write_text("role: special\n", encoding="utf-8")
    return root


def test_hosts_groups_patterns_and_variables(yaml_inventory: Path) -> None:
    inventory = load_inventory([str(yaml_inventory)])
    nodes = inventory.hosts("k8s_nodes")
    assert [h.name for h in nodes] == ["node1", "node2", "node3"]
    node1, node2, _ = nodes
    assert node1.connection == "ssh"  # Ansible's default, exactly as `ansible` would use
    assert node1.vars["ansible_host"] == "127.0.0.2"
    assert node1.vars["ansible_port"] == 2222
    assert node1.vars["role"] == "worker"  # group_vars
    assert node2.vars["role"] == "special"  # host_vars win over group_vars
    assert type(node1.vars["ansible_host"]) is str  # plain values, not ansible's tagged types
    assert [h.name for h in inventory.hosts("k8s_nodes:!node3")] == ["node1", "node2"]
    assert [h.name for h in inventory.hosts("all", limit="node2:ctl")] == ["node2", "ctl"]
    ctl = inventory.hosts("control")[0]
    assert ctl.connection == "local"


def test_ini_inventory(tmp_path: Path) -> None:
    ini = tmp_path / "hosts.ini"
    ini.write_text(
        "[git_servers]\ngit1 ansible_connection=local repo_path=/srv/git/shop.git\n\n[git_servers:vars]\nteam=infra\n",
        encoding="utf-8",
    )
    (host,) = load_inventory([str(ini)]).hosts("git_servers")
    assert (host.name, host.connection) == ("git1", "local")
    assert host.vars["repo_path"] == "/srv/git/shop.git"
    assert host.vars["team"] == "infra"


def test_pattern_matching_nothing_is_a_clear_error(yaml_inventory: Path) -> None:
    inventory = load_inventory([str(yaml_inventory)])
    with pytest.raises(InventoryError) as caught:
        inventory.hosts("databases")
    message = str(caught.value)
    assert "'databases' matches no host" in message
    assert "k8s_nodes" in message and "node1" in message  # says what exists


def test_malformed_and_missing_inventories(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    a: [1, 2\n", encoding="utf-8")
    with pytest.raises(InventoryError) as caught:
        load_inventory([str(bad)])
    assert "bad.yml" in str(caught.value)
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory([str(tmp_path / "nope.yml")])


def test_no_inventory_means_this_machine() -> None:
    assert resolve_targets(None, "k8s_nodes", None) == [LOCALHOST]
    with pytest.raises(InventoryError, match="needs an inventory"):
        resolve_targets(None, "all", "node1")


def test_bundled_inventory_runs_branch_cleanup_locally() -> None:
    hosts = resolve_targets([str(REPO / "inventory")], "git_servers", None)
    assert [(h.name, h.connection) for h in hosts] == [("localhost", "local")]
