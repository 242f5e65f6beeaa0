"""``cairn serve``'s defaults: an option given wins, then ``--config``, then these.

Apart from :mod:`engine.serve.settings` so that the parser, which shows them in ``--help``, imports
nothing else (``python -m bench cold_start``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from engine.core.defaults import DEFAULT_BREAKER, DEFAULT_BUDGET, DEFAULT_LEASE

SERVE_DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "listen": "127.0.0.1:9095",
        "cooldown": 300.0,
        "workers": 8,
        "grace": 20.0,
        "lease": DEFAULT_LEASE,
        "breaker": DEFAULT_BREAKER,
        "budget": DEFAULT_BUDGET,
        "automate": (),
        "allow_no_token": False,
        # The HTTP side's limits (engine/serve/connections.py): a flood of idle or slow clients
        # cannot use up the process's file descriptors and keep a real alert out.
        "max_connections": 256,
        "header_timeout": 10.0,
        "body_timeout": 30.0,
        "idle_timeout": 60.0,
    }
)
