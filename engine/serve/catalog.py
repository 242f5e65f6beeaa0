"""What ``cairn serve`` has loaded: the runbooks and the inventory, read at start and again at SIGHUP.

The webhook routes alerts to :attr:`Catalog.runbooks`; a worker finds an entry's runbook
(:meth:`Catalog.runbook`) and its exact target host (:meth:`Catalog.target_host`). A reload
swaps them under a lock; runs in progress keep what they started with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.core.errors import CairnError, InputError
from engine.core.model import Host, Runbook

if TYPE_CHECKING:
    from engine.core.alert_queue import AlertQueue
    from engine.core.inventory import Inventory
    from engine.serve.settings import ServeSettings


def load_runbooks(settings: ServeSettings, *, jobs: int = 1) -> tuple[tuple[Runbook, ...], list[str]]:
    """The runbooks to serve at start, and what is wrong with them or with the settings about them.

    An invalid runbook is skipped; an ``--automate`` pattern or ``--inputs`` runbook that
    names no loaded runbook, and a triggered runbook whose inputs cannot be resolved, are
    said (its alerts will say so too); the other runbooks still serve.
    """
    from engine.core.inputs import resolve_inputs  # noqa: PLC0415
    from engine.core.loader import load_library  # noqa: PLC0415

    said: list[str] = []
    library = load_library(settings.runbook_dirs, jobs=jobs)
    for result in library.results:
        said += [f"skipping an invalid runbook: {problem}" for problem in result.problems]
    runbooks = tuple(r.runbook for r in library.results if r.runbook is not None)
    policy = settings.policy
    for pattern in policy.automate:
        if not any(policy.automates(r) for r in runbooks):
            said.append(f"--automate {pattern}: no loaded runbook has that id")
    by_id = {r.id: r for r in runbooks}
    for runbook_id in settings.inputs.keys() - by_id.keys():
        said.append(f"--inputs {runbook_id}: no loaded runbook has that id")
    for runbook in runbooks:
        if runbook.triggers:
            try:
                resolve_inputs(runbook, settings.inputs.get(runbook.id, {}))
            except InputError as exc:
                said.append(f"{runbook.id}: its alerts cannot run: {exc}")
    return runbooks, said


class Catalog:
    """The runbooks and inventory hosts the server works with; :meth:`reload` reads them again."""

    def __init__(
        self, settings: ServeSettings, runbooks: Sequence[Runbook], queues: Sequence[AlertQueue]
    ) -> None:
        self.settings = settings
        self._queues = tuple(queues)
        """The server's queue connections: a reload makes each forget the failures before it."""
        self._runbook_list = tuple(runbooks)
        self._runbooks = {r.id: r for r in runbooks}
        self._inventory: Inventory | None = None
        self._targets: dict[str, dict[str, Host]] = {}
        """Each runbook ``targets`` pattern's hosts by name."""
        self._lock = threading.Lock()

    @property
    def runbooks(self) -> tuple[Runbook, ...]:
        """Every loaded runbook (alerts are routed to those with triggers)."""
        return self._runbook_list

    def runbook(self, runbook_id: str) -> Runbook | None:
        """The loaded runbook of that id, if any."""
        return self._runbooks.get(runbook_id)

    def forget_failed(self) -> None:
        """The inventory and runbooks are (re)read now: entries that failed before cool nothing down."""
        now = time.time()
        for queue in self._queues:
            queue.failed_forgotten_before = now

    def warm(self) -> None:
        """Read the inventory and each triggered runbook's target hosts now, before serving.

        A broken inventory stops ``cairn serve`` at start (not at the first alert), and the
        first alert finds its host by a lookup instead of waiting for Ansible's loader.
        """
        for runbook in self._runbook_list:
            if runbook.triggers and self.settings.inventory_sources:
                self._hosts_of(runbook)

    def reload(self) -> list[str]:
        """SIGHUP: read the runbook folders and the inventory again; what it did, line by line.

        Runs in progress keep what they started with. A runbook file that no longer loads
        keeps the version loaded before; an inventory that no longer loads keeps everything
        as it was (a half-reload would leave runbooks pointing at hosts that are gone).
        """
        from engine.core.inventory import load_inventory  # noqa: PLC0415
        from engine.core.loader import load_library  # noqa: PLC0415

        said: list[str] = []
        runbooks = self._runbook_list
        if self.settings.runbook_dirs:
            before = {r.source_path: r for r in self._runbook_list}
            fresh: list[Runbook] = []
            for result in load_library(self.settings.runbook_dirs, jobs=1).results:
                if result.runbook is not None:
                    fresh.append(result.runbook)
                elif result.path in before:
                    fresh.append(before[result.path])
                    said.append(f"{result.problems[0]} — kept the version loaded before")
                else:
                    said += [f"skipping an invalid runbook: {problem}" for problem in result.problems[:1]]
            runbooks = tuple(fresh)
        inventory = None
        targets: dict[str, dict[str, Host]] = {}
        try:
            if self.settings.inventory_sources:
                inventory = load_inventory(self.settings.inventory_sources)
                for runbook in runbooks:
                    if runbook.triggers and runbook.targets not in targets:
                        targets[runbook.targets] = {h.name: h for h in inventory.hosts(runbook.targets)}
        except CairnError as exc:
            return [*said, f"reload refused, nothing changed: {exc}"]
        with self._lock:
            self._runbook_list = runbooks
            self._runbooks = {r.id: r for r in runbooks}
            self._inventory, self._targets = inventory, targets
        self.forget_failed()
        triggered = [r.id for r in runbooks if r.triggers]
        hosts = len({name for found in targets.values() for name in found})
        return [
            *said,
            f"reloaded: {len(triggered)} runbooks with triggers ({', '.join(triggered) or 'none'}), "
            f"{hosts} target hosts",
        ]

    def _hosts_of(self, runbook: Runbook) -> dict[str, Host]:
        """The hosts of ``runbook.targets`` by name: the inventory read once, each pattern once."""
        from engine.core.inventory import load_inventory  # noqa: PLC0415

        with self._lock:
            if self._inventory is None:
                self._inventory = load_inventory(self.settings.inventory_sources)
            hosts = self._targets.get(runbook.targets)
            if hosts is None:
                hosts = self._targets[runbook.targets] = {
                    h.name: h for h in self._inventory.hosts(runbook.targets)
                }
            return hosts

    def target_host(self, runbook: Runbook, target: str) -> Host:
        """The inventory host named exactly ``target`` among the runbook's targets (never a pattern)."""
        from engine.core.errors import InventoryError  # noqa: PLC0415
        from engine.core.model import LOCALHOST  # noqa: PLC0415

        if not self.settings.inventory_sources:
            if target in ("localhost", "127.0.0.1"):
                return LOCALHOST
            raise InventoryError(
                f"target {target!r}: without an inventory (-i) alerts can only name localhost"
            )
        hosts = self._hosts_of(runbook)
        if target in hosts:
            return hosts[target]
        raise InventoryError(
            f"target {target!r} is not a host of {runbook.targets!r} in the inventory; nothing was run"
        )
