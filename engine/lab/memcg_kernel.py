"""The kubelet-cpu-memcg lab's stand-in for three kernel interfaces (a lab helper program).

``python -m engine.lab.memcg_kernel --memory-stat F --proc-cgroups F --drop-caches F
--cgroup-root D --zombies N --seconds-per-cgroup S`` serves, for the lab's own files only:

* ``memory.stat`` — a FIFO. Every reader gets real-shaped cgroup v1 root ``memory.stat``
  lines after ``S * (directories + zombies)`` seconds, the way the unfixed kernel's
  ``memcg_stat_show`` walks every memory cgroup, the deleted-but-cached ("zombie") ones
  included. After each open the FIFO is replaced by a fresh one, so the next reader
  waits for its own answer instead of sharing the previous reader's pipe.
* ``/proc/cgroups`` — a regular file (rewritten atomically) whose ``memory`` line counts
  the directories under ``--cgroup-root`` plus the zombies.
* ``/proc/sys/vm/drop_caches`` — a FIFO. Writing ``2`` or ``3`` (free reclaimable slab:
  the dentries and inodes that pin the zombies here) releases every zombie: the count
  falls to the number of directories and reads get fast. ``1`` (page cache only)
  frees none of them in this lab.

Standard library only; it never touches anything outside the paths it is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

FREEING_VALUES = {b"2", b"3"}
"""drop_caches values that free reclaimable slab objects (2: slab, 3: slab and page cache)."""

# Controllers other than memory, as on a CentOS 7 node with the 4.19 kernel: (name, hierarchy).
_CONTROLLERS = (
    ("cpuset", 5),
    ("cpu", 2),
    ("cpuacct", 2),
    ("blkio", 9),
    ("memory", 4),
    ("devices", 7),
    ("freezer", 3),
    ("net_cls", 6),
    ("perf_event", 10),
    ("net_prio", 6),
    ("hugetlb", 11),
    ("pids", 8),
)
PAGE = 4096
PAGES_PER_ZOMBIE = 16  # the few cache pages that keep a deleted memory cgroup alive


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Kernel:
    """The state the three files show: how many memory cgroups exist, and how many are zombies."""

    def __init__(
        self, cgroup_root: Path, proc_cgroups: Path, zombies: int, seconds_per_cgroup: float
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_cgroups = proc_cgroups
        self.zombies = zombies
        self.seconds_per_cgroup = seconds_per_cgroup
        self.lock = threading.Lock()

    def directories(self) -> int:
        """Live memory cgroups: the hierarchy's directories, the root included (as the kernel counts)."""
        return 1 + sum(len(dirs) for _, dirs, _ in os.walk(self.cgroup_root))

    def memcgs(self) -> tuple[int, int]:
        with self.lock:
            return self.directories(), self.zombies

    def write_proc_cgroups(self) -> None:
        live, zombies = self.memcgs()
        lines = ["#subsys_name\thierarchy\tnum_cgroups\tenabled"]
        for name, hierarchy in _CONTROLLERS:
            count = live + zombies if name == "memory" else live
            lines.append(f"{name}\t{hierarchy}\t{count}\t1")
        tmp = self.proc_cgroups.with_name(f".{self.proc_cgroups.name}.new")
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
        tmp.replace(self.proc_cgroups)

    def drop_caches(self, value: bytes) -> None:
        with self.lock:
            freed = self.zombies if value in FREEING_VALUES else 0
            self.zombies -= freed
        self.write_proc_cgroups()
        live, zombies = self.memcgs()
        shown = value.decode(errors="replace")
        log(
            f"drop_caches {shown!r}: freed {freed} zombie memory cgroups ({live} live, {zombies} zombies left)"
        )

    def memory_stat(self) -> tuple[float, bytes]:
        """How long the read takes, and what it returns (root cgroup v1 memory.stat, totals over all)."""
        live, zombies = self.memcgs()
        delay = self.seconds_per_cgroup * (live + zombies)
        cache = (zombies * PAGES_PER_ZOMBIE + 180_000) * PAGE
        rss = 420_000 * PAGE
        local = {
            "cache": 25_000 * PAGE, "rss": 30_000 * PAGE, "rss_huge": 0, "shmem": 2_000 * PAGE,
            "mapped_file": 9_000 * PAGE, "dirty": 12 * PAGE, "writeback": 0, "swap": 0,
            "pgpgin": 9_000_000, "pgpgout": 8_900_000, "pgfault": 40_000_000, "pgmajfault": 3_100,
            "inactive_anon": 1_000 * PAGE, "active_anon": 29_000 * PAGE, "inactive_file": 15_000 * PAGE,
            "active_file": 10_000 * PAGE, "unevictable": 0,
        }  # fmt: skip
        totals = {
            "cache": cache, "rss": rss, "rss_huge": 40 * 2 * 1024 * 1024, "shmem": 6_000 * PAGE,
            "mapped_file": 60_000 * PAGE, "dirty": 300 * PAGE, "writeback": 0, "swap": 0,
            "pgpgin": 900_000_000, "pgpgout": 899_000_000, "pgfault": 4_000_000_000, "pgmajfault": 120_000,
            "inactive_anon": 20_000 * PAGE, "active_anon": rss - 20_000 * PAGE,
            "inactive_file": cache // 2, "active_file": cache - cache // 2, "unevictable": 0,
        }  # fmt: skip
        lines = [f"{k} {v}" for k, v in local.items()]
        lines += [
            "hierarchical_memory_limit 9223372036854771712",
            "hierarchical_memsw_limit 9223372036854771712",
        ]
        lines += [f"total_{k} {v}" for k, v in totals.items()]
        return delay, ("\n".join(lines) + "\n").encode("ascii")


def _fresh_fifo(path: Path) -> None:
    """Put a new FIFO at ``path`` (atomically): the next reader opens it, not the one being served."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    os.mkfifo(tmp, 0o644)
    tmp.replace(path)


def serve_memory_stat(kernel: Kernel, path: Path) -> None:
    while True:
        fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens the FIFO
        try:
            _fresh_fifo(path)
            started = time.monotonic()
            delay, text = kernel.memory_stat()
            time.sleep(delay)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            log(f"memory.stat: answered in {time.monotonic() - started:.2f} s")
        except BrokenPipeError:
            log("memory.stat: the reader gave up before the answer (killed by its timeout)")
        finally:
            os.close(fd)


def serve_drop_caches(kernel: Kernel, path: Path) -> None:
    while True:
        with path.open("rb") as fifo:  # blocks until a writer opens the FIFO; read to its close
            data = fifo.read()
        for value in data.split():
            kernel.drop_caches(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.lab.memcg_kernel", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--memory-stat", type=Path, required=True, help="the memory.stat FIFO to serve")
    parser.add_argument("--proc-cgroups", type=Path, required=True, help="the /proc/cgroups file to keep")
    parser.add_argument("--drop-caches", type=Path, required=True, help="the drop_caches FIFO to listen on")
    parser.add_argument("--cgroup-root", type=Path, required=True, help="the memory hierarchy's directories")
    parser.add_argument(
        "--zombies", type=int, default=0, help="deleted memory cgroups still pinned by caches"
    )
    parser.add_argument(
        "--seconds-per-cgroup", type=float, default=0.0005, help="read cost per memory cgroup"
    )
    args = parser.parse_args(argv)
    for fifo in (args.memory_stat, args.drop_caches):
        if not fifo.is_fifo():
            parser.error(f"{fifo} is not a FIFO (mkfifo it first)")
    kernel = Kernel(args.cgroup_root, args.proc_cgroups, args.zombies, args.seconds_per_cgroup)
    kernel.write_proc_cgroups()
    live, zombies = kernel.memcgs()
    per_read = args.seconds_per_cgroup * (live + zombies)
    log(
        f"serving {args.memory_stat}: {live} live memory cgroups, {zombies} zombies, {per_read:.2f} s per read"
    )
    threads = [
        threading.Thread(target=serve_memory_stat, args=(kernel, args.memory_stat), daemon=True),
        threading.Thread(target=serve_drop_caches, args=(kernel, args.drop_caches), daemon=True),
    ]
    for thread in threads:
        thread.start()
    while all(t.is_alive() for t in threads):
        time.sleep(1)
    log("a server thread ended; stopping")
    return 1


if __name__ == "__main__":
    sys.exit(main())
