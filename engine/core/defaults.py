"""Every default and closed choice the command line shows in ``--help``, stated once.

Standard library only, and nothing else from Cairn: building ``cairn``'s parser imports this
module, not the model or the executors, so ``cairn --help`` stays cheap
(``python -m bench cold_start``). The modules that act on these values import them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

PHASE_NAMES = ("detect", "diagnose", "remediate", "verify")
"""The phases in the order they run (:class:`engine.core.model.Phase` has the same values)."""

DEFAULT_FORKS = 5
"""Hosts worked on at once unless the front end says otherwise (``cairn run -f``; Ansible's default too)."""
MAX_FORKS = 500
"""The most hosts worked on at once that a front end accepts (``cairn run -f``, the TUI's setup)."""

Via = Literal["native", "ansible"]
"""How ``run`` steps reach hosts: natively (local/paramiko) or through ansible-runner."""
VIA: tuple[Via, ...] = get_args(Via)
"""The ``--via`` choices."""
DEFAULT_VIA: Via = "native"

DEFAULT_BREAKER = 3
"""``cairn serve``: automatic remediations per host per hour."""
DEFAULT_BUDGET = 2
"""``cairn serve``: hosts being remediated at once across the fleet."""
DEFAULT_LEASE = 3.0
"""``cairn serve --lease``: seconds a server's work stays its own after its last renewal (renewed every
third of it); a server that stops answering has its work taken over by another about this long after."""

OUTPUT_LIMIT = 8 * 1024 * 1024
"""Bytes of each output stream of a step that are streamed (to the journal's artifacts) and kept;
the rest is read and dropped, and a marker says so (``cairn run --output-limit``)."""
