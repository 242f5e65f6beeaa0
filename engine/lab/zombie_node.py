"""The container-runtime side of the ``node-notready-zombie-shim`` lab: a shim, crictl and a web terminal.

The lab writes three scripts into its ``bin/`` folder that call these functions (standard
library only):

``containerd-shim-runc-v2 -namespace k8s.io -id ID -address LAB/containerd.sock`` → :func:`shim_main`
    A stand-in for one pod's shim. A script of that name keeps the kernel's ``comm`` at
    ``containerd-shim`` (the name truncated to 15 characters, as for the real binary) and
    the real command line after the interpreter, so ``ps`` shows what a node shows. Its
    children are what a real shim's are: the container's init, interactive ``bash`` exec
    sessions on their own pseudo-terminals (as ``kubectl exec -it … -- bash`` from a web
    terminal leaves them) and exited exec processes it has not reaped (zombies).

    The deadlock is a **model**: the shim is *wedged* while any of the sessions it started
    with ("old", forgotten web-terminal sessions) is alive — it reaps nothing and the lab's
    crictl hangs. Once they are all gone it reaps every zombie and answers again; sessions
    opened later ("young") never wedge it. (A real containerd < 1.2.8 shim that deadlocked
    may stay stuck; the runbook says so.) Its state is ``LAB/shim/state.json``, which the
    Kubernetes API stand-in and crictl read: ``{"state": "wedged"|"running", "since": …}``.

``crictl [--runtime-endpoint unix://…] [--timeout D] ps`` → :func:`crictl_main`
    Lists the node's containers while the shim reaps; while it is wedged it waits, like a
    CRI call stuck behind the shim, until its ``--timeout`` (default 2s), then fails with
    ``DeadlineExceeded`` as crictl does.

``web-terminal`` → :func:`web_terminal_main`
    Opens one more ``bash`` exec session under the shim (a young one) and prints its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POLL = 0.05
STATE = "state.json"
PROMPT = r"root@payments-api-7d4b9c6f8-kq2lz:/app# "


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``Z`` for a zombie), or ``""`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    return text[text.rindex(")") + 2 :].split()[0]


def alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z", "X")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def read_state(shim_dir: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads((shim_dir / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded


# ------------------------------------------------------------------ the shim


class Shim:
    """One pod's shim stand-in: its children, its wedge, its state file."""

    def __init__(self, shim_dir: Path, container_id: str, home: Path) -> None:
        self.dir = shim_dir
        self.requests = shim_dir / "exec"
        self.requests.mkdir(parents=True, exist_ok=True)
        self.id = container_id
        self.home = home
        self.masters: dict[int, int] = {}  # bash session pid -> its pty master (kept open: the session lives)
        self.old: list[int] = []
        self.young: list[int] = []
        self.exited: list[int] = []
        self.init = 0
        self.state = "running"
        self.since = time.time()

    def session_env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM": "xterm",
            "PS1": PROMPT,
            "HISTFILE": str(self.home / ".bash_history"),
        }

    def open_session(self) -> int:
        """An interactive ``bash`` on its own pseudo-terminal, as ``runc exec -t`` starts it."""
        pid, master = pty.fork()
        if pid == 0:  # the child: session leader with the pty as its controlling terminal
            try:
                os.execve("/bin/bash", ["bash"], self.session_env())  # noqa: S606 - argv, no shell parsing
            finally:
                os._exit(127)
        os.set_inheritable(master, False)
        self.masters[pid] = master
        return pid

    def spawn(self, argv: list[str]) -> int:
        return os.posix_spawn(argv[0], argv, self.session_env())

    def start(self, old_sessions: int, exited_sessions: int, exited_probes: int) -> None:
        self.init = self.spawn(["/bin/sleep", "infinity"])  # the container's PID 1
        self.old = [self.open_session() for _ in range(old_sessions)]
        # Exec processes that ended while the shim was not reaping: closed sessions and probes.
        self.exited = [self.spawn(["/bin/bash", "-c", "exit 0"]) for _ in range(exited_sessions)]
        self.exited += [self.spawn(["/bin/sh", "-c", "exit 0"]) for _ in range(exited_probes)]
        deadline = time.monotonic() + 10
        while any(process_state(p) not in ("Z", "") for p in self.exited) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.state = "wedged" if self.old else "running"
        self.since = time.time()
        if self.state == "running":
            self.reap()
        self.save()

    def save(self) -> None:
        write_json(
            self.dir / STATE,
            {
                "state": self.state,
                "since": self.since,
                "shim": os.getpid(),
                "id": self.id,
                "init": self.init,
                "old_sessions": self.old,
                "young_sessions": self.young,
                "exited_at_start": self.exited,
            },
        )

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            master = self.masters.pop(pid, None)
            if master is not None:
                os.close(master)

    def serve_requests(self) -> None:
        for request in sorted(self.requests.glob("*.request")):
            pid = self.open_session()
            self.young.append(pid)
            write_json(request.with_suffix(".pid"), {"pid": pid})
            request.unlink()
            self.save()

    def step(self) -> None:
        self.serve_requests()
        if self.state == "wedged" and not any(alive(p) for p in self.old):
            self.state, self.since = "running", time.time()
            self.reap()
            self.save()
        elif self.state == "running":
            self.reap()

    def stop(self) -> None:
        """On SIGTERM (``cairn lab down``): take the children along, as a node's reboot would."""
        for pid in [self.init, *self.masters]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap()


def _flag(argv: list[str], name: str) -> str:
    for i, arg in enumerate(argv):
        if arg in (f"-{name}", f"--{name}") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith((f"-{name}=", f"--{name}=")):
            return arg.split("=", 1)[1]
    raise SystemExit(f"containerd-shim (lab): missing -{name}")


def shim_main(argv: list[str]) -> int:
    """``containerd-shim-runc-v2 -namespace NS -id ID -address ADDR``; the lab's settings come from the environment."""
    address = Path(_flag(argv, "address"))
    container_id = _flag(argv, "id")
    lab = address.parent
    shim = Shim(lab / "shim", container_id, lab / "home")
    stopping = False

    def on_term(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    shim.start(
        int(os.environ.get("CAIRN_LAB_OLD_SESSIONS", "0")),
        int(os.environ.get("CAIRN_LAB_EXITED_SESSIONS", "0")),
        int(os.environ.get("CAIRN_LAB_EXITED_PROBES", "0")),
    )
    while not stopping:
        shim.step()
        time.sleep(POLL)
    shim.stop()
    return 0


# ------------------------------------------------------------------ crictl


def _duration(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
    return sum(float(n) * scale[u] for n, u in parts) if parts else 2.0


def _options(argv: list[str]) -> Iterator[tuple[str, str]]:
    """crictl's global flags before the sub-command, then ``("", sub-command)``."""
    args = iter(argv)
    for arg in args:
        if arg.startswith("-"):
            name, _, value = arg.lstrip("-").partition("=")
            if name in ("r", "runtime-endpoint", "i", "image-endpoint", "t", "timeout", "c", "config"):
                value = value or next(args, "")
            yield name, value
        else:
            yield "", arg
            return


def crictl_main(argv: list[str], lab: Path) -> int:
    """A crictl for the lab's one runtime endpoint: ``ps`` (and ``version``)."""
    endpoint, timeout, command = f"unix://{lab / 'containerd.sock'}", 2.0, ""
    for name, value in _options(argv):
        if name in ("r", "runtime-endpoint"):
            endpoint = value
        elif name in ("t", "timeout"):
            timeout = _duration(value)
        elif name == "":
            command = value
    fatal = time.strftime("FATA[0000]")
    if endpoint.removeprefix("unix://") != str(lab / "containerd.sock"):
        print(f'{fatal} validate service connection: CRI v1 runtime API is not implemented for endpoint "{endpoint}": '
              "rpc error: code = Unavailable desc = connection error: no such file or directory", file=sys.stderr)  # fmt: skip
        return 1
    if command == "version":
        print(
            "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  v1.2.6\nRuntimeApiVersion:  v1alpha2"
        )
        return 0
    if command != "ps":
        print(f"{fatal} the lab's crictl knows only `ps` and `version`", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while read_state(lab / "shim").get("state") != "running":
        if time.monotonic() > deadline:
            print(f"{fatal} listing containers: rpc error: code = DeadlineExceeded desc = context deadline exceeded",
                  file=sys.stderr)  # fmt: skip
            return 1
        time.sleep(POLL)
    print(container_table(lab))
    return 0


def container_table(lab: Path) -> str:
    """``crictl ps`` columns for the running pods the API stand-in has on this node."""
    from engine.lab.kube_standin import Cluster, human_age, parse_time  # noqa: PLC0415 - only crictl needs it

    node = (lab / "node-name").read_text(encoding="utf-8").strip()
    now = time.time()
    rows = [("CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD")]
    for pod in Cluster(lab / "shim" / STATE).pod_list():
        if pod["spec"].get("nodeName") != node:
            continue
        for status in pod["status"].get("containerStatuses", []):
            created = human_age(now - parse_time(status["state"]["running"]["startedAt"])) + " ago"
            rows.append((
                status["containerID"].split("//")[-1][:13], status["imageID"].split(":")[-1][:13], created,
                "Running", status["name"], str(status["restartCount"]), pod["metadata"]["uid"].replace("-", "")[:13],
                pod["metadata"]["name"],
            ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(rows[0]) - 1)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + r[-1] for r in rows)


# ------------------------------------------------------------------ the web terminal


def web_terminal_main(argv: list[str], lab: Path) -> int:
    """Ask the shim for one more bash exec session (as the web terminal does) and print its pid."""
    requests = lab / "shim" / "exec"
    name = secrets.token_hex(6)
    tmp = requests / f"{name}.tmp"
    tmp.write_text("bash\n", encoding="ascii")
    tmp.rename(requests / f"{name}.request")
    answer = requests / f"{name}.pid"
    deadline = time.monotonic() + 10
    while not answer.exists():
        if time.monotonic() > deadline:
            print(
                "web-terminal (lab): the shim did not open a session within 10 s; is the lab up?",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.02)
    pid = json.loads(answer.read_text(encoding="utf-8"))["pid"]
    answer.unlink()
    state = read_state(lab / "shim")
    if "--quiet" in argv:
        print(pid)
    else:
        print(
            f"opened bash exec session {pid} under containerd-shim {state.get('shim')} (leave it open: it is 'young')"
        )
    return 0


def run_script(name: str, lab: Path, argv: list[str]) -> int:
    """Entry point of the lab's bin/ scripts."""
    if name == "containerd-shim-runc-v2":
        return shim_main(argv)
    if name == "crictl":
        return crictl_main(argv, lab)
    if name == "web-terminal":
        return web_terminal_main(argv, lab)
    raise SystemExit(f"zombie_node: unknown program {name}")
