"""A platform inventory in the state a stalled migration leaves it: the ``platform-adoption`` lab.

The platform inventory is data, in Ansible's format: hosts of ``old_platform``
(VMs, in two child groups) and ``k8s_platform`` list the apps they run in a host
variable ``apps`` (``{name, team, kind}``, plus ``since`` — the go-live date — on
Kubernetes), and ``group_vars/all.yml`` maps teams to their migration champions.
Dates are relative to today. Nothing runs: the runbook reads the files with
``ansible-inventory``. ``python -m engine.lab.adoption DIR`` writes them.

What the pitfall variant holds (and what ``platform-adoption`` should conclude):

* only on the old platform: ``invoice-worker`` (payments), ``report-builder``
  (reporting), ``search-indexer`` (search) — three of seven apps not started;
* side by side: ``billing-api`` (payments) for 75 days — past the 30-day limit;
  ``login-service`` (identity) for 10 days — within it;
* fully migrated: ``accounts-ui`` (identity), ``search-api`` (search);
* champions: identity and search have one; payments and reporting, which still
  have apps on the old platform, do not.

The healthy variant: every app only on Kubernetes, every team with a champion,
and the old platform's groups still defined but empty (decommissioned).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.lab.base import LabContext, LabError, LabResult

RUNBOOK = "platform-adoption"
SUMMARY = "a platform inventory where apps stay on the old platform and teams have no migration champion"
PROGRAMS = ("ansible-inventory",)

ONLY_OLD = ("invoice-worker", "report-builder", "search-indexer")
SIDE_BY_SIDE_TOO_LONG = ("billing-api",)
TEAMS_WITHOUT_CHAMPION = ("payments", "reporting")

# (app, team, kind)
_APPS = {
    "accounts-ui": ("identity", "node-static"),
    "billing-api": ("payments", "java-tomcat"),
    "invoice-worker": ("payments", "java-tomcat"),
    "login-service": ("identity", "java-tomcat"),
    "report-builder": ("reporting", "php-fpm"),
    "search-api": ("search", "python-uwsgi"),
    "search-indexer": ("search", "python-uwsgi"),
}
# Old-platform hosts: child group -> host -> apps it still runs.
_OLD_HOSTS = {
    "tomcat_vms": {"vm-legacy-01": ["billing-api", "invoice-worker"], "vm-legacy-03": ["login-service"]},
    "script_vms": {"vm-legacy-02": ["search-indexer", "report-builder"]},
}
# App -> days since it went live on Kubernetes.
_ON_K8S = {"accounts-ui": 200, "billing-api": 75, "login-service": 10, "search-api": 120}
_CHAMPIONS = {"identity": "Tomás Ruiz", "search": "Priya Natarajan"}
_ALL_CHAMPIONS = _CHAMPIONS | {"payments": "Dana Li", "reporting": "Jonas Weber"}


def _app(name: str, *, days_on_k8s: int | None = None, today: datetime.date) -> dict[str, Any]:
    team, kind = _APPS[name]
    entry: dict[str, Any] = {"name": name, "team": team, "kind": kind}
    if days_on_k8s is not None:
        entry["since"] = (today - datetime.timedelta(days=days_on_k8s)).isoformat()
    return entry


def write_inventory(folder: Path, *, healthy: bool = False, today: datetime.date | None = None) -> Path:
    """Write the platform inventory (``hosts.yml`` and ``group_vars/all.yml``) into ``folder``; returns it."""
    today = today or datetime.date.today()
    if healthy:
        old_hosts: dict[str, dict[str, list[str]]] = {group: {} for group in _OLD_HOSTS}
        on_k8s = {name: _ON_K8S.get(name, 20) for name in _APPS}
        champions = _ALL_CHAMPIONS
    else:
        old_hosts, on_k8s, champions = _OLD_HOSTS, _ON_K8S, _CHAMPIONS
    old_children = {
        group: {
            "hosts": {host: {"apps": [_app(a, today=today) for a in apps]} for host, apps in hosts.items()}
        }
        for group, hosts in old_hosts.items()
    }
    k8s_apps = [_app(name, days_on_k8s=days, today=today) for name, days in sorted(on_k8s.items())]
    inventory = {
        "all": {
            "children": {
                "old_platform": {"children": old_children},
                "k8s_platform": {"hosts": {"k8s-prod": {"apps": k8s_apps}}},
            }
        }
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group_vars").mkdir(exist_ok=True)
    header = "# The platform inventory: which host runs which app, for the platform-adoption runbook.\n"
    (folder / "hosts.yml").write_text(
        header + yaml.safe_dump(inventory, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    (folder / "group_vars" / "all.yml").write_text(
        "# The named migration champion of each team.\n"
        + yaml.safe_dump({"migration_champions": champions}, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return folder


def up(ctx: LabContext) -> LabResult:
    """The ``platform-adoption`` lab: the platform inventory in ``ctx.dir/platform`` (``--healthy``: all migrated)."""
    ansible_inventory = Path(ctx.python).parent / "ansible-inventory"
    if not ansible_inventory.exists():
        raise LabError(
            f"lab {ctx.name}: {ansible_inventory} not found; install ansible-core into Cairn's environment"
        )
    folder = write_inventory(ctx.dir / "platform", healthy=ctx.healthy)
    if ctx.healthy:
        notes = [f"platform/ holds {len(_APPS)} apps, all only on k8s_platform, and a champion for each team"]
    else:
        notes = [
            f"platform/ holds {len(_APPS)} apps: {len(ONLY_OLD)} only on old_platform, "
            f"{len(SIDE_BY_SIDE_TOO_LONG)} side by side for 75 days (limit 30), one for 10 days",
            f"teams {' and '.join(TEAMS_WITHOUT_CHAMPION)} still have apps on old_platform and no champion",
            "the remediation is a manual checklist: --yes skips it and the pitfall stays present (exit 1)",
            "practise a team lead's part: name champions in platform/group_vars/all.yml, or move an app's "
            "entry from an old host to k8s-prod in platform/hosts.yml, then run detect again",
        ]
    return LabResult(
        group="control",
        hosts={"platform-control": {}},
        inputs={"inventory": str(folder), "ansible_inventory": str(ansible_inventory)},
        notes=notes,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m engine.lab.adoption DIR")
    print(write_inventory(Path(sys.argv[1])))
