"""Enough open files for a run on many hosts, or a clear word on how to get them.

A run keeps one connection per host open from its first step to its end (every phase reuses it),
so its open files grow with the hosts: ~3 per host measured over SSH (the socket and the shell
channel's pipe), a few per step running, plus the journal and the interpreter's own. The default
soft limit of a shell, ``ulimit -n`` = 1024, runs out near 300 hosts, and the failure would come
mid-run as "Too many open files" on whichever hosts came last.

:func:`ensure_open_files` raises the soft limit as far as the run needs (never above the hard
limit, which only root can raise) before anything runs, and when even the hard limit is too low
says so, with the numbers and the command, before the first host is touched.
"""

from __future__ import annotations

import logging
import resource

from engine.core.errors import CairnError
from engine.core.model import Host, HostOutcome, HostReport

log = logging.getLogger(__name__)

PER_HOST = 3
"""Files a host's connection keeps open for the whole run: its socket and its shell channel's
pipe (measured: 165 for 50 SSH hosts, 1,226 at the peak of 500)."""
PER_FORK = 4
"""Files a running step holds besides its connection: its output files, a local command's pipes."""
BASE = 64
"""The interpreter, the journal, the terminal, a margin."""


class TooFewOpenFiles(CairnError):
    """The hard open-file limit is below what the run needs."""


def files_needed(hosts: int, forks: int) -> int:
    """Open files a run on ``hosts`` hosts, ``forks`` at a time, needs at most."""
    return BASE + PER_HOST * hosts + PER_FORK * max(1, min(forks, hosts))


def ensure_open_files(hosts: int, forks: int) -> None:
    """Raise this process's soft open-file limit to what the run needs; :class:`TooFewOpenFiles`
    when the hard limit does not allow it."""
    needed = files_needed(hosts, forks)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise TooFewOpenFiles(
            f"a run on {hosts} hosts keeps about {needed} files open (a connection per host), "
            f"above this shell's hard limit of {hard} open files (`ulimit -Hn`); raise it (as root: "
            f"`ulimit -n {_round_up(needed)}` in the shell that runs cairn, or LimitNOFILE= in its "
            "systemd unit), or run on fewer hosts at a time with --limit; nothing was run"
        )
    target = needed * 2 if hard == resource.RLIM_INFINITY else min(hard, needed * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    log.debug("open-file limit raised from %d to %d for %d hosts", soft, target, hosts)


def _round_up(value: int) -> int:
    """The next power of two at or above ``value``: a limit people write."""
    return 1 << (value - 1).bit_length()


def out_of_files(host: Host) -> HostReport:
    """``host``'s report when the process ran out of open files anyway (the estimate was short)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return HostReport(
        host.name,
        HostOutcome.FAILED,
        (),
        reason=f"Cairn ran out of open files (limit {soft}, `ulimit -n`): raise the limit, "
        "or run on fewer hosts at a time with --limit",
    )
