"""Peak memory and open file descriptors of a whole process tree, sampled from /proc in a thread.

A method's cost is its whole tree: ``ansible`` forks a worker per host and each runs ``ssh``,
Debian's ``parallel-ssh`` runs one ``ssh`` per host, ``cairn run`` is one process with a thread
per host. Every ~15 ms the sampler finds the tree's processes (by parent pid, reading each new
pid's ``/proc/PID/stat`` once) and sums, over them, the resident set (``/proc/PID/statm``) and
the entries of ``/proc/PID/fd``. The peaks are kept.

The sum of RSS counts pages that forked processes share (copy-on-write) once per process: for
``ansible`` it overstates what the machine lost, as ``ps`` and ``top`` would.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INTERVAL_S = 0.015
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TreePeak:
    """The largest sums seen over a process tree's life."""

    rss_bytes: int
    fds: int
    processes: int
    samples: int
    sampler_cpu_s: float
    """CPU time the sampling thread itself used: what watching cost the machine."""

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / MIB


class TreeWalk:
    """Which live processes descend from ``root``, learnt a little more at each call of :meth:`members`.

    This kernel has no ``/proc/PID/task/TID/children``, so the parent of every process comes from
    ``/proc/PID/stat``. A process's place is fixed at its fork, so each pid is read once: later
    walks read only pids not seen before (a pid reused within one run would be misplaced; a run
    forks far fewer than ``pid_max`` processes).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._inside: set[int] = {root}
        self._outside: set[int] = set()

    def members(self) -> list[int]:
        """The tree's live pids now: ``root`` and all its descendants, at any depth."""
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        parents = {pid: parent_pid(pid) for pid in live - self._inside - self._outside}
        grown = True
        while grown:  # a child may be listed before its new parent: repeat until nothing joins
            joining = {pid for pid, ppid in parents.items() if ppid in self._inside}
            self._inside |= joining
            grown = bool(joining)
            for pid in joining:
                del parents[pid]
        self._outside |= parents.keys()
        self._inside &= live | {self.root}
        return sorted(self._inside & live)


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat[stat.rindex(")") + 2 :].split()[1])  # the name may hold spaces and ')'
    except (OSError, ValueError, IndexError):
        return 0


def rss_bytes(pid: int) -> int:
    """Resident set of one process (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of one process (0 if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class TreeSampler:
    """``with TreeSampler(pid) as sampler: ...`` then ``sampler.peak``: a thread samples until the exit."""

    def __init__(self, root: int, interval: float = INTERVAL_S) -> None:
        self.root, self.interval = root, interval
        self._walk = TreeWalk(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"proctree-{root}", daemon=True)
        self._rss = self._fds = self._processes = self._samples = 0
        self._cpu = 0.0

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> TreePeak:
        """The peaks so far (final once the ``with`` block has ended)."""
        return TreePeak(self._rss, self._fds, self._processes, self._samples, self._cpu)

    def sample(self) -> None:
        """Walk the tree once and raise the peaks."""
        pids = self._walk.members()
        self._rss = max(self._rss, sum(map(rss_bytes, pids)))
        self._fds = max(self._fds, sum(map(open_fds, pids)))
        self._processes = max(self._processes, len(pids))
        self._samples += 1

    def _run(self) -> None:
        began = time.thread_time()
        while True:
            spent = time.thread_time()
            self.sample()
            spent = time.thread_time() - spent
            # A big tree takes long to walk: wait at least twice that, so watching takes < 1/3 of a CPU.
            if self._stop.wait(max(self.interval, 2 * spent)):
                break
        self._cpu = time.thread_time() - began


def fd_limits() -> tuple[int, int]:
    """This process's ``ulimit -n``: (soft, hard); its children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard
