"""The ``node-notready-zombie-shim`` lab: one Kubernetes node whose containerd-shim stopped reaping.

``up`` builds, in ``ctx.dir``:

* ``bin/containerd-shim-runc-v2`` started as ``… -namespace k8s.io -id <64 hex> -address
  LAB/containerd.sock`` (``comm`` ``containerd-shim``): the container's init, 3 interactive
  ``bash`` exec sessions started with the lab ("old": forgotten web-terminal sessions) and
  34 exited exec processes it has not reaped — 6 ``bash`` sessions and 28 ``sh`` exec probes,
  more than the 32 slots of containerd < 1.2.8's exit-event channel. While an old session
  lives the shim is wedged (see :mod:`engine.lab.zombie_node`);
* ``bin/crictl`` (hangs while the shim is wedged), ``bin/containerd`` (``--version``: 1.2.6),
  ``bin/web-terminal`` (opens a young session);
* a Kubernetes API stand-in (:mod:`engine.lab.kube_standin`) and ``kubeconfig`` for it:
  ``k8s-node-1`` NotReady ("PLEG is not healthy") with 2 pods stuck Terminating, until the
  shim reaps again.

The inventory host is the node, ``k8s-node-1`` in group ``k8s_nodes``; ``inputs.yaml`` points
every real-world default (``/run/containerd/containerd.sock``, ``crictl``, ``kubectl``'s
kubeconfig and cache, ``/etc/cron.d/…``) into the lab. ``--healthy``: the same node with a
shim that reaps, no session, no zombie, the node Ready and no pod Terminating.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from pathlib import Path

from engine.lab.base import LabContext, LabError, LabResult, executable, lab_env, start_time
from engine.lab.zombie_node import STATE, read_state

RUNBOOK = "node-notready-zombie-shim"
SUMMARY = (
    "a containerd-shim with 34 zombies and 3 old bash exec sessions that wedge it, a crictl that hangs, "
    "and a Kubernetes API stand-in with the node NotReady (PLEG) and 2 pods stuck Terminating"
)
PROGRAMS = ("bash", "ps", "kubectl")  # its sessions; the runbook's probes read them with ps and kubectl
NODE = "k8s-node-1"
OLD_SESSIONS = 3
EXITED_SESSIONS = 6
EXITED_PROBES = 28
BASH_MAX_AGE = 5
"""The lab's ``bash_max_age`` (seconds): ``up`` returns once the sessions it started are this old."""
CONTAINERD_VERSION = (
    "containerd github.com/containerd/containerd v1.2.6 894b81a4b802e4eb2a91d1ce216b8817763c29fb"
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _python_script(ctx: LabContext, name: str) -> Path:
    """``bin/NAME``: a Python script, so the kernel names the process after it (``comm``)."""
    return executable(
        ctx.dir / "bin" / name,
        f"#!{ctx.python}\n"
        f"# Written by `cairn lab up {RUNBOOK}`: the lab's stand-in for {name}.\n"
        "import sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from engine.lab.zombie_node import run_script\n"
        f"sys.exit(run_script({name!r}, Path({str(ctx.dir)!r}), sys.argv[1:]))\n",
    )


def _kubeconfig(path: Path, port: int) -> None:
    path.write_text(
        f"# Written by `cairn lab up {RUNBOOK}`: kubectl -> the lab's Kubernetes API stand-in.\n"
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:{port}\n"
        "contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\n"
        "current-context: lab\nusers:\n- name: lab\n  user: {}\npreferences: {}\n",
        encoding="utf-8",
    )


def up(ctx: LabContext) -> LabResult:
    """Start the shim and the API stand-in; wait until the shim's zombies exist and the API answers."""
    for folder in ("bin", "shim", "home", "kube-cache", "cron.d"):
        (ctx.dir / folder).mkdir(parents=True, exist_ok=True)
    (ctx.dir / "node-name").write_text(NODE + "\n", encoding="utf-8")
    for name in ("containerd-shim-runc-v2", "crictl", "web-terminal"):
        _python_script(ctx, name)
    executable(ctx.dir / "bin" / "containerd", f"#!/bin/sh\necho {shlex.quote(CONTAINERD_VERSION)}\n")
    address = ctx.dir / "containerd.sock"
    container_id = secrets.token_hex(32)
    sessions, exited_sessions, probes = (
        (0, 0, 0) if ctx.healthy else (OLD_SESSIONS, EXITED_SESSIONS, EXITED_PROBES)
    )
    ctx.spawn(
        [str(ctx.dir / "bin" / "containerd-shim-runc-v2"), "-namespace", "k8s.io", "-id", container_id,
         "-address", str(address)],
        name="containerd-shim",
        env=lab_env(
            CAIRN_LAB_OLD_SESSIONS=str(sessions),
            CAIRN_LAB_EXITED_SESSIONS=str(exited_sessions),
            CAIRN_LAB_EXITED_PROBES=str(probes),
        ),
    )  # fmt: skip
    ctx.wait_for(
        lambda: bool(read_state(ctx.dir / "shim")),
        "the shim's state file was written",
        process="containerd-shim",
    )
    state = read_state(ctx.dir / "shim")
    if state["state"] != ("running" if ctx.healthy else "wedged"):
        raise LabError(
            f"lab {RUNBOOK}: the shim came up {state['state']}; its log: {ctx.log_path('containerd-shim')}"
        )

    port_file = ctx.dir / "kube-api.port"
    ctx.spawn(
        [ctx.python, "-m", "engine.lab.kube_standin", "--shim-state", str(ctx.dir / "shim" / STATE),
         "--port-file", str(port_file)],
        name="kube-api-standin",
        env=lab_env(),
    )  # fmt: skip
    ctx.wait_for(port_file.exists, "the Kubernetes API stand-in listened", process="kube-api-standin")
    port = int(port_file.read_text(encoding="ascii"))
    ctx.wait_for_port(port, process="kube-api-standin")
    _kubeconfig(ctx.dir / "kubeconfig", port)

    bin_dir = ctx.dir / "bin"
    inputs = {
        "bash_max_age": f"{BASH_MAX_AGE}s",
        "containerd_address": str(address),
        "crictl": str(bin_dir / "crictl"),
        "containerd": str(bin_dir / "containerd"),
        "kubeconfig": str(ctx.dir / "kubeconfig"),
        "kubectl_cache_dir": str(ctx.dir / "kube-cache"),
        "cron_file": str(ctx.dir / "cron.d" / "cairn-exec-session-cleanup"),
    }
    kubectl = f"kubectl --kubeconfig {ctx.dir / 'kubeconfig'} --cache-dir {ctx.dir / 'kube-cache'}"
    if ctx.healthy:
        notes = [
            f"{NODE} is Ready; its shim ({state['shim']}) reaps, with no exec session and no zombie",
            f"`{kubectl} get nodes` talks to the lab's Kubernetes API stand-in (recorded objects)",
        ]
    else:
        notes = [
            f"containerd-shim {state['shim']} has {EXITED_SESSIONS + EXITED_PROBES} zombie children and "
            f"{OLD_SESSIONS} bash exec sessions ({', '.join(map(str, state['old_sessions']))}); while any of "
            "those lives it is wedged and `bin/crictl ps` hangs",
            f"`{kubectl} get nodes,pods -A -o wide` shows {NODE} NotReady (PLEG is not healthy) and 2 pods "
            "Terminating (the Kubernetes API stand-in replays recorded objects)",
            f"the lab's sessions are already older than its bash_max_age ({BASH_MAX_AGE}s): the remediation "
            f"ends them; to see it spare a young one, open one with `{bin_dir / 'web-terminal'}` and run "
            "with `-e bash_max_age=30s` once the lab is a minute old",
            f"the periodic clean-up is written to {inputs['cron_file']} (no cron daemon reads it there)",
        ]
    if not ctx.healthy:  # the forgotten sessions must be "old" when the lab is handed over
        old = [int(pid) for pid in state["old_sessions"]]
        ctx.wait_for(
            lambda: all(age >= BASH_MAX_AGE for age in map(_age, old)),
            f"the lab's exec sessions became {BASH_MAX_AGE}s old",
            timeout=BASH_MAX_AGE + 15,
            process="containerd-shim",
        )
    return LabResult(
        group="k8s_nodes",
        hosts={NODE: {"ansible_python_interpreter": ctx.python}},
        inputs=inputs,
        notes=notes,
    )


def _age(pid: int) -> float:
    """Seconds since ``pid`` started (-1 if it is gone), as ``ps -o etimes`` counts them."""
    started = start_time(pid)
    if started is None:
        return -1
    uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def lab_state(directory: Path) -> dict[str, object]:
    """The shim's state file of the lab in ``directory`` (for tests and ``cairn lab status`` readers)."""
    data: dict[str, object] = json.loads((directory / "shim" / STATE).read_text(encoding="utf-8"))
    return data
