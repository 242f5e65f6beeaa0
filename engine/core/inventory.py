"""Targets from an Ansible inventory, read with ansible-core's own inventory code.

Hosts, groups, patterns (``k8s_nodes:!node3``), ``host_vars``/``group_vars`` and
the connection variables mean exactly what they mean to ``ansible``. ansible-core
is imported only when an inventory is used, and not even then when the same question
was answered for the same files before (:mod:`engine.core.inventory_cache`): it costs ~0.4 s.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import InventoryError
from engine.core.model import LOCALHOST, Host

# Ansible's own bookkeeping, not facts about the host: left out of ``vars``.
_MAGIC = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "groups",
        "inventory_dir",
        "inventory_file",
        "playbook_dir",
        "omit",
    }
)


def _plain(value: Any) -> Any:
    """ansible-core's tagged str/int/dict subclasses -> plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


_ANSIBLE = threading.RLock()
"""Held while Ansible's inventory code runs: it sets environment variables, redirects stdout and
stderr, and loads its plugins lazily, none of it safe from two threads at once (``cairn serve``'s
workers loaded one plugin module half-imported: "module ... has no attribute 'InventoryModule'").

The one lock for it in Cairn: every caller (``cairn serve``'s catalog, the TUI's setup screen
resolving targets as one types, resume) goes through :func:`load_inventory`, :meth:`Inventory.hosts`
or :func:`resolve_targets`, which take it; none keeps a lock of its own."""


@dataclass
class Inventory:
    """An Ansible inventory loaded from one or more sources."""

    sources: tuple[str, ...]
    _manager: Any
    _variables: Any

    def hosts(self, pattern: str = "all", limit: str | None = None) -> list[Host]:
        """Hosts matching ``pattern`` and, if given, ``limit`` (both Ansible patterns)."""
        with _ANSIBLE:
            return self._hosts(pattern, limit)

    def _hosts(self, pattern: str, limit: str | None) -> list[Host]:
        manager = self._manager
        manager.clear_pattern_cache()
        quiet = io.StringIO()  # "Could not match supplied host pattern" warnings: our error says it better
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            manager.subset(limit)
            try:
                selected = manager.get_hosts(pattern)
            finally:
                manager.subset(None)
        if not selected:
            known = ", ".join(h.name for h in manager.get_hosts("all")[:20]) or "none"
            groups = ", ".join(sorted(g for g in manager.groups if g not in ("all", "ungrouped"))) or "none"
            what = f"pattern {pattern!r}" + (f" limited by {limit!r}" if limit else "")
            raise InventoryError(
                f"{what} matches no host in {', '.join(self.sources)} (hosts: {known}; groups: {groups})"
            )
        return [self._host(h) for h in selected]

    def _host(self, host: Any) -> Host:
        raw = self._variables.get_vars(host=host, include_hostvars=False)
        variables = {k: _plain(v) for k, v in raw.items() if k not in _MAGIC}
        connection = str(variables.get("ansible_connection", "ssh"))
        return Host(name=host.name, connection=connection, vars=variables)


def load_inventory(sources: Sequence[str]) -> Inventory:
    """Read ``sources`` (files or folders, YAML or INI); :class:`InventoryError` if any fails."""
    with _ANSIBLE:
        return _load_inventory(sources)


def _load_inventory(sources: Sequence[str]) -> Inventory:
    for source in sources:
        if "," not in source and not Path(source).exists():
            raise InventoryError(f"inventory {source!r} does not exist")
    captured = io.StringIO()
    with _ansible_settings(), contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
        from ansible.errors import AnsibleError  # noqa: PLC0415
        from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
        from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
        from ansible.vars.manager import VariableManager  # noqa: PLC0415

        try:
            loader = DataLoader()
            manager = InventoryManager(loader=loader, sources=list(sources))
            variables = VariableManager(loader=loader, inventory=manager)
        except AnsibleError as exc:
            details = _summarise(captured.getvalue())
            raise InventoryError(f"{exc.message}" + (f":\n{details}" if details else "")) from exc
    return Inventory(tuple(sources), manager, variables)


@contextlib.contextmanager
def _ansible_settings() -> Iterator[None]:
    """Fail on sources Ansible cannot parse (its default is to warn and go on).

    ansible-core reads these when its config is first loaded; they are restored
    afterwards so that commands Cairn runs do not inherit them.
    """
    settings = {
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_LOCALHOST_WARNING": "False",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update({k: v for k, v in settings.items() if saved[k] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def _summarise(warnings: str) -> str:
    """The useful lines of Ansible's parse warnings (what failed and where), once each."""
    keep: list[str] = []
    for line in warnings.splitlines():
        text = line.replace("[WARNING]:", "").strip()
        if (
            text.startswith(("Origin:", "YAML parsing failed", "Failed to parse inventory:"))
            and text not in keep
        ):
            keep.append(text)
    return "\n".join(f"  {line}" for line in keep[:10])


def resolve_targets(inventory_sources: Sequence[str] | None, pattern: str, limit: str | None) -> list[Host]:
    """The hosts a run goes to: the local machine without an inventory, else the matches."""
    if not inventory_sources:
        if limit and limit not in ("localhost", "all", "127.0.0.1"):
            raise InventoryError(
                f"--limit {limit!r} needs an inventory (-i); without one the target is localhost"
            )
        return [LOCALHOST]
    from engine.core import inventory_cache  # noqa: PLC0415

    key = inventory_cache.cache_key(inventory_sources, pattern, limit)
    if key is not None and (hosts := inventory_cache.lookup(key)) is not None:
        return hosts  # ansible-core's own answer to this question, for these very bytes
    with _ANSIBLE:  # loaded and matched in one go: one resolution at a time
        hosts = load_inventory(inventory_sources).hosts(pattern, limit)
    if key is not None:
        inventory_cache.store(key, hosts)
    return hosts
