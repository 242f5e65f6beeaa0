"""Defer a module's import until something first uses it.

paramiko imports ``invoke`` at start-up for one rare ssh_config feature (``Match exec``), and
``invoke`` brings ``unittest.mock`` and ``asyncio``: ~45 ms of the ~105 ms ``import paramiko``
costs, paid by every ``cairn run`` over SSH before its first step. :func:`defer` puts a stand-in
module in ``sys.modules``: ``import invoke`` then returns at once, and the first attribute read
from the stand-in imports the real module and answers from it — so ``Match exec`` still works,
it just pays the import when it is used.

(The standard library's ``importlib.util.LazyLoader`` does not help here: the import system
reads the module's ``__spec__`` when the name is imported again, which loads it.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_LOCK = threading.RLock()


class _Deferred(types.ModuleType):
    """Stands in for a module not imported yet; the first attribute asked of it imports it."""

    def __getattr__(self, attribute: str) -> Any:  # only for attributes a bare module lacks
        return getattr(_load(self), attribute)


def defer(name: str) -> None:
    """Make ``import name`` cheap until the module is used (no-op if imported or not installed)."""
    with _LOCK:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            return
        sys.modules[name] = _Deferred(name)


def _load(stand_in: _Deferred) -> types.ModuleType:
    with _LOCK:
        name = stand_in.__name__
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)
