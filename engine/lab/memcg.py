"""A node whose root ``memory.stat`` is slow because of zombie memory cgroups: the ``kubelet-cpu-memcg`` lab.

Everything lives in the lab folder, laid out like the real paths so the runbook's
inputs read naturally (``DIR/sys/fs/cgroup/memory/memory.stat`` stands for
``/sys/fs/cgroup/memory/memory.stat``):

* ``sys/fs/cgroup/memory/`` — a cgroup v1 memory hierarchy of 14 directories
  (``kubepods/…``, ``system.slice/…``), and in it ``memory.stat``: a FIFO that
  :mod:`engine.lab.memcg_kernel` answers after 0.4 ms per memory cgroup — 2 s
  while 4,986 zombie cgroups exist, a few milliseconds once they are freed;
* ``proc/cgroups`` — ``memory`` ``num_cgroups`` 5,000 against those 14 directories;
* ``proc/sys/vm/drop_caches`` — a FIFO: writing 2 or 3 frees the zombies;
* ``proc/sys/kernel/osrelease`` — the kernel release, ``4.19.91-18.el7.x86_64``
  (unfixed; the fix is 4.19.113-300.el7);
* ``bin/kubelet`` — a link to ``sleep``, run as the lab's kubelet (process name
  ``kubelet``, no CPU burnt), found by a pattern that names this folder.

``--healthy``: no zombies (fast reads, counts match) and the fixed kernel. Nothing
outside the folder is read for these inputs or written, ever; the real
``/proc/sys/vm/drop_caches`` is not touched.
"""

from __future__ import annotations

import os
import re
import shutil

from engine.lab.base import LabContext, LabError, LabResult, lab_env

RUNBOOK = "kubelet-cpu-memcg"
SUMMARY = "slow memory.stat from 4,986 zombie memory cgroups, an unfixed 4.19 kernel, a kubelet stand-in"
PROGRAMS = ("sleep",)  # linked as the lab's kubelet

ZOMBIES = 4986
SECONDS_PER_CGROUP = 0.0004  # 5,000 memory cgroups: 2 s per read; 14 after drop_caches: 6 ms
UNFIXED_KERNEL = "4.19.91-18.el7.x86_64"
FIXED_KERNEL = "4.19.113-300.el7.x86_64"
# A cgroupfs-driver node with two pods: the directories under the memory hierarchy's root.
CGROUPS = (
    "kubepods",
    "kubepods/burstable",
    "kubepods/burstable/pod5f0c2a7e-9b1d-4c36-a0f4-2d8e41c7b913",
    "kubepods/burstable/pod5f0c2a7e-9b1d-4c36-a0f4-2d8e41c7b913/3c9f6d2a81e4",
    "kubepods/besteffort",
    "kubepods/besteffort/pod0b7e4d51-6a2f-4e8c-9d13-7c5a90f2e846",
    "kubepods/besteffort/pod0b7e4d51-6a2f-4e8c-9d13-7c5a90f2e846/a41be07d5c93",
    "system.slice",
    "system.slice/kubelet.service",
    "system.slice/containerd.service",
    "system.slice/sshd.service",
    "user.slice",
    "user.slice/user-0.slice",
)


def ere_escape(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (what ``pgrep -f`` takes)."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def up(ctx: LabContext) -> LabResult:
    """Build the fake kernel files, start the kubelet stand-in and the kernel stand-in."""
    root = ctx.dir
    memory = root / "sys" / "fs" / "cgroup" / "memory"
    for cgroup in CGROUPS:
        (memory / cgroup).mkdir(parents=True)
    memory_stat = memory / "memory.stat"
    vm = root / "proc" / "sys" / "vm"
    kernel_dir = root / "proc" / "sys" / "kernel"
    vm.mkdir(parents=True)
    kernel_dir.mkdir(parents=True)
    drop_caches = vm / "drop_caches"
    os.mkfifo(memory_stat, 0o644)
    os.mkfifo(drop_caches, 0o644)
    osrelease = kernel_dir / "osrelease"
    osrelease.write_text((FIXED_KERNEL if ctx.healthy else UNFIXED_KERNEL) + "\n", encoding="ascii")
    proc_cgroups = root / "proc" / "cgroups"

    sleep = shutil.which("sleep")
    if sleep is None:
        raise LabError("lab kubelet-cpu-memcg: `sleep` (coreutils) is not installed")
    kubelet = root / "bin" / "kubelet"
    kubelet.parent.mkdir()
    kubelet.symlink_to(sleep)  # the process name (comm) comes from the link: `kubelet`
    ctx.spawn([str(kubelet), "infinity"], name="kubelet")

    zombies = 0 if ctx.healthy else ZOMBIES
    ctx.spawn(
        [
            ctx.python, "-m", "engine.lab.memcg_kernel",
            "--memory-stat", str(memory_stat),
            "--proc-cgroups", str(proc_cgroups),
            "--drop-caches", str(drop_caches),
            "--cgroup-root", str(memory),
            "--zombies", str(zombies),
            "--seconds-per-cgroup", str(SECONDS_PER_CGROUP),
        ],
        name="kernel",
        env=lab_env(),
    )  # fmt: skip
    ctx.wait_for(proc_cgroups.exists, "the kernel stand-in wrote proc/cgroups", process="kernel")

    live = len(CGROUPS) + 1
    if ctx.healthy:
        notes = [
            f"memory.stat answers in {live * SECONDS_PER_CGROUP * 1000:.0f} ms; proc/cgroups counts "
            f"{live} memory cgroups for {live} directories; kernel {FIXED_KERNEL}: nothing to find",
        ]
    else:
        notes = [
            f"memory.stat takes {(live + ZOMBIES) * SECONDS_PER_CGROUP:.1f} s to read: proc/cgroups counts "
            f"{live + ZOMBIES} memory cgroups for {live} directories ({ZOMBIES} zombies); kernel {UNFIXED_KERNEL}",
            "remediation writes 2 to the lab's proc/sys/vm/drop_caches (never the real one): "
            "the zombies are freed and reads take milliseconds",
            "the kernel upgrade playbook stays off (upgrade_kernel: false); "
            "try `--dry-run -e upgrade_kernel=true` to see it",
        ]
    return LabResult(
        group="k8s_nodes",
        hosts={"memcg-node": {"kernel_upgrade_allowed": False}},  # the playbook refuses this host
        inputs={
            "memory_stat": str(memory_stat),
            "memory_stat_v2": str(root / "sys" / "fs" / "cgroup" / "memory.stat"),
            "memory_cgroup_root": str(memory),
            "proc_cgroups": str(proc_cgroups),
            "drop_caches_path": str(drop_caches),
            "kernel_release_file": str(osrelease),
            "kubelet_pattern": f"^{ere_escape(str(kubelet))}( |$)",
            "cpu_sample": "500ms",
        },
        notes=notes,
    )
