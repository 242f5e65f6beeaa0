"""The hosts a run resolved from an Ansible inventory, kept so the next run need not import Ansible.

ansible-core stays the parser of record: an entry is only ever what ansible-core's
``InventoryManager`` and ``VariableManager`` answered for the same question, and it is used only
while every input to that answer is byte-for-byte the same. Importing ansible-core and parsing a
50-host inventory costs ~0.4 s of a ``cairn run`` that otherwise starts in ~0.2 s; a hit costs
reading the inventory's files and one small JSON file.

**The key** is a sha256 over everything that can change the answer:

* the sources, each as an absolute path with its bytes (a folder: every file under it, by path);
* the ``group_vars/`` and ``host_vars/`` folders beside each source (Ansible reads them there);
* the Ansible configuration files it would read (``$ANSIBLE_CONFIG``, ``./ansible.cfg``,
  ``~/.ansible.cfg``, ``/etc/ansible/ansible.cfg``) and every ``ANSIBLE_*`` variable;
* the installed ansible-core (its ``release.py``) and this code (its own source and
  :mod:`engine.core.inventory`'s);
* the pattern and the ``--limit``.

**Not cached** — ansible-core answers every time:

* a source that is a program (executable: Ansible's script plugin runs it) or a plugin
  configuration (a YAML file with ``plugin:``, e.g. ``aws_ec2``, ``constructed``): its answer
  is not a function of its bytes;
* an inventory whose variables hold secrets by their name (``ansible_become_password``,
  ``*_token``, …): the cache folder is not a place for them; inline host lists (``a,b,``) are
  cheap to parse and are not cached either.

Entries live in ``cache_folder("inventory")`` (:mod:`engine.core.user_cache`), at most
:data:`KEEP` of them (the oldest are removed); deleting the folder is always safe.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.core.model import Host
from engine.core.user_cache import cache_folder, digest, read_entry, write_entry

log = logging.getLogger(__name__)

KEEP = 64
"""Entries kept; writing one more removes the oldest."""
FORMAT = "1"
_PLUGIN_CONFIG = re.compile(rb"^plugin\s*:", re.MULTILINE)
_SECRET_NAME = re.compile(r"pass|secret|token|credential|api_?key", re.IGNORECASE)
_VARS_FOLDERS = ("group_vars", "host_vars")
_MAX_BYTES = 16 * 1024 * 1024
"""Inventories bigger than this (all files together) are not hashed for a cache: parse them."""


class NotCacheable(Exception):
    """This inventory's answer is not a function of its files' bytes (or is too big to hash)."""


def cache_key(sources: Sequence[str], pattern: str, limit: str | None) -> str | None:
    """The key of this question, or ``None`` when its answer must come from ansible-core."""
    if cache_folder() is None:
        return None
    try:
        pieces = list(_pieces(sources, pattern, limit))
    except NotCacheable as why:
        log.debug("inventory not cached: %s", why)
        return None
    except OSError as exc:  # unreadable now: ansible-core will say what is wrong with it
        log.debug("inventory not cached: %s", exc)
        return None
    return digest(*pieces)


def lookup(key: str) -> list[Host] | None:
    """The hosts stored under ``key``; ``None`` on a miss or an entry that cannot be used."""
    folder = cache_folder("inventory")
    if folder is None:
        return None
    entry = read_entry(folder / f"{key}.json")
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    try:
        return [
            Host(name=str(h["name"]), connection=str(h["connection"]), vars=dict(h["vars"]))
            for h in entry["hosts"]
        ]
    except (KeyError, TypeError, ValueError):
        log.debug("inventory cache entry %s ignored: not a host list", key)
        return None


def store(key: str, hosts: list[Host]) -> None:
    """Keep ``hosts`` as the answer for ``key``, unless their variables hold secrets."""
    folder = cache_folder("inventory")
    if folder is None:
        return
    for host in hosts:
        named = [name for name in host.vars if _secret_name(name)]
        if named:
            log.debug("inventory not cached: %s has %s", host.name, ", ".join(sorted(named)))
            return
    entry = {
        "format": FORMAT,
        "key": key,
        "hosts": [{"name": h.name, "connection": h.connection, "vars": dict(h.vars)} for h in hosts],
    }
    if write_entry(folder / f"{key}.json", entry):
        _prune(folder)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.endswith(("_file", "_path"))


def _pieces(sources: Sequence[str], pattern: str, limit: str | None) -> Iterator[bytes | str]:
    yield FORMAT
    yield from _code()
    yield pattern
    yield limit if limit is not None else "\0no limit"
    budget = [_MAX_BYTES]
    for source in sources:
        if "," in source and not Path(source).exists():
            raise NotCacheable(f"{source!r} is an inline host list")
        path = Path(source).absolute()
        yield str(path)
        yield from _tree(path, budget, inventory=True)
        beside = path if path.is_dir() else path.parent
        for name in _VARS_FOLDERS:
            if not path.is_dir():  # a folder source holds its vars folders already
                yield name
                yield from _tree(beside / name, budget, inventory=False)
    for name, value in sorted(os.environ.items()):
        if name.startswith("ANSIBLE_"):
            yield f"{name}={value}"
    for config in _config_files():
        yield str(config)
        yield _read(config, budget) if config.is_file() else "\0absent"


def _code() -> Iterator[bytes | str]:
    """ansible-core's release file and this module's and the inventory module's sources."""
    here = Path(__file__).parent
    yield _read(here / "inventory_cache.py", None)
    yield _read(here / "inventory.py", None)
    spec = importlib.util.find_spec("ansible")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise NotCacheable("ansible-core is not installed")
    yield _read(Path(next(iter(spec.submodule_search_locations))) / "release.py", None)


def _tree(path: Path, budget: list[int], *, inventory: bool) -> Iterator[bytes | str]:
    """``path``'s bytes (a file) or every file under it by relative path (a folder); nothing if absent."""
    if path.is_file():
        yield from _file(path, budget, inventory=inventory)
        return
    if not path.is_dir():
        yield "\0absent"
        return
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for name in sorted(files):
            child = Path(folder) / name
            yield str(child.relative_to(path))
            yield from _file(child, budget, inventory=inventory)


def _file(path: Path, budget: list[int], *, inventory: bool) -> Iterator[bytes | str]:
    if inventory and os.access(path, os.X_OK):
        raise NotCacheable(f"{path} is a program (Ansible runs it)")
    data = _read(path, budget)
    if inventory and _PLUGIN_CONFIG.search(data):
        raise NotCacheable(f"{path} configures an inventory plugin")
    yield data


def _read(path: Path, budget: list[int] | None) -> bytes:
    data = path.read_bytes()
    if budget is not None:
        budget[0] -= len(data)
        if budget[0] < 0:
            raise NotCacheable(f"the inventory is over {_MAX_BYTES // (1024 * 1024)} MiB")
    return data


def _config_files() -> list[Path]:
    """Where ansible-core looks for its configuration, in its order."""
    found = [Path(os.environ["ANSIBLE_CONFIG"])] if os.environ.get("ANSIBLE_CONFIG") else []
    return [
        *found,
        Path.cwd() / "ansible.cfg",
        Path.home() / ".ansible.cfg",
        Path("/etc/ansible/ansible.cfg"),
    ]


def _prune(folder: Path) -> None:
    try:
        entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # another process pruned first, or the folder went away: fine
        log.debug("inventory cache not pruned: %s", exc)
