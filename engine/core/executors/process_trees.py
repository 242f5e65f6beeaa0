"""Ending every process of a step on timeout or cancel, including those that left its group.

Killing the step's process group misses every process that left it: ``setsid``, ``setpgid``,
a daemon's double fork. What they all keep is their environment, so every step's command
starts with ``CAIRN_STEP=<token>`` in it (:mod:`engine.core.executors.step_env`) and the kill
looks for that mark in ``/proc/*/environ`` as well as for the group's members: SIGTERM to all,
up to :data:`KILL_GRACE` seconds for them to go, then SIGKILL until none is left. Here it is
Python (:func:`end_step`); on an SSH host, or through Ansible, the same in a POSIX shell
(:func:`kill_script`, one ``grep -z`` over the environments).

A step that runs as another user (``become``: :mod:`engine.core.executors.escalation`) is
ended by the same script run as that user through the same ``sudo``: only that user (or root)
may read its processes' environments and signal them. Such a step has two groups, the login
side's and the escalated command's (sudo's ``use_pty`` starts it in a session of its own), and
the script ends both.

What it cannot find: a process that clears or rewrites its environment (``env -i``) *and*
leaves the group. What it finds but cannot end (a process stuck in the kernel, one it may read
but not signal) is reported with its pid, never passed over as killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.core.executors.step_env import STEP_ENV

KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL."""
_POLL = 0.02


def send_signal(pid: int, sig: int) -> None:
    """Signal one process (the one place signals are sent from, so a test can refuse some)."""
    os.kill(pid, sig)


def step_processes(token: str, pgid: int | None = None) -> dict[int, str]:
    """Live processes of the step, by pid, with their command line: its group's members and every
    process carrying its mark (zombies are dead already)."""
    needle = f"{STEP_ENV}={token}".encode() + b"\0"
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()
            if fields[0] in (b"Z", b"X"):
                continue
            if int(fields[2]) != pgid:
                environ = Path(entry.path, "environ").read_bytes()
                if not (environ.startswith(needle) or b"\0" + needle in environ):
                    continue
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # gone while we looked, or not ours to read
            continue
        command = cmdline.replace(b"\0", b" ").replace(b"\n", b" ").decode(errors="replace")
        found[int(entry.name)] = command.strip()[:80]
    return found


def end_step(
    token: str, pgid: int | None, *, reap: Callable[[], object] | None = None, grace: float | None = None
) -> dict[int, str]:
    """SIGTERM every process of the step, SIGKILL what is left after ``grace`` seconds; returns the
    processes still alive after that (by pid, with their command line): none, normally.

    ``reap`` is called while waiting (``Popen.poll`` of the step's leader, so that it does not
    linger as our zombie and keep its group looking alive).
    """
    grace = KILL_GRACE if grace is None else grace
    left = step_processes(token, pgid)
    if not left:
        return {}
    _signal_all(left, pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:  # a TERM handler may take its time
        _pause(reap)
        if not step_processes(token, pgid):
            return {}
    deadline = time.monotonic() + KILL_GRACE
    while left := step_processes(token, pgid):
        if time.monotonic() >= deadline:
            return left
        _signal_all(left, pgid, signal.SIGKILL)  # again each round: one may have forked meanwhile
        _pause(reap)
    return {}


def _pause(reap: Callable[[], object] | None) -> None:
    time.sleep(_POLL)
    if reap is not None:
        reap()


def _signal_all(pids: dict[int, str], pgid: int | None, sig: int) -> None:
    if pgid is not None:  # the whole group at once: a child forked after the scan is in it too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:  # gone, or not ours: reported if it is still there at the end
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send_signal(pid, sig)


def survivors_note(left: dict[int, str], where: str = "") -> str:
    """What the step's output says about processes that could not be killed (``""`` for none)."""
    if not left:
        return ""
    listed = ", ".join(f"{pid} ({command})" for pid, command in sorted(left.items()))
    plural = "es" if len(left) > 1 else ""
    them = "they are" if len(left) > 1 else "it is"
    return (
        f"cairn: could not kill process{plural} {listed} of this step{where}: {them} still running "
        "(not ours to signal, or stuck in the kernel); end it by hand\n"
    )


def kill_script(token: str, pgid: int | Sequence[int] | None, grace: float = KILL_GRACE) -> str:
    """POSIX shell that ends the step's processes on a host as :func:`end_step` does here.

    ``pgid`` is the step's process group, or its groups (an escalated step has two), or ``None``.
    ``kill`` gets no ``--``: dash (``/bin/sh`` on Debian) refuses it, and takes ``kill -TERM -PGID``
    as a group. It prints nothing when all are gone; otherwise :func:`survivors_note`'s line for what is left,
    or a line saying the host cannot look for marked processes (no ``grep -z``). Run it outside the
    step's environment: a process carrying the mark would find itself.
    """
    groups = [] if pgid is None else [pgid] if isinstance(pgid, int) else list(pgid)
    header = f"m='{STEP_ENV}={token}'; g='{' '.join(str(int(g)) for g in groups)}'"
    return header + "\n" + kill_body(grace)


def kill_body(grace: float = KILL_GRACE) -> str:
    """:func:`kill_script` without its first line: ends what carries the mark ``$m`` and the live
    members of the groups ``$g`` (space-separated; may be empty)."""
    steps = max(1, round(grace / 0.1))
    return "\n".join(
        [
            # The groups' live members (zombies do not count), then every process with the mark.
            "live() {",
            "  { for x in $g; do",
            "      if command -v ps >/dev/null 2>&1; then",
            "        ps -A -o pid=,pgid=,stat= | awk -v g=\"$x\" '$2==g && $3 !~ /^Z/ {print $1}'",
            '      elif kill -0 "-$x" 2>/dev/null; then echo "-$x"; fi',
            "    done",
            '    grep -lsxzF -- "$m" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3',
            "  } | sort -u",
            "}",
            'signal_groups() { for x in $g; do kill -$1 "-$x" 2>/dev/null; done; }',
            "if ! printf 'x\\0' | grep -qsxzF x 2>/dev/null; then",
            "  echo \"cairn: this host cannot look for processes that left the step's group"
            ' (its grep has no -z): only the group was killed"',
            "fi",
            'p=$(live); [ -z "$p" ] && exit 0',
            "signal_groups TERM; kill -TERM $p 2>/dev/null",
            f'i=0; while [ $i -lt {steps} ]; do sleep 0.1; p=$(live); [ -z "$p" ] && exit 0; i=$((i+1)); done',
            f"i=0; while [ $i -lt {steps} ]; do",
            "  signal_groups KILL; kill -KILL $p 2>/dev/null",
            '  sleep 0.1; p=$(live); [ -z "$p" ] && exit 0; i=$((i+1))',
            "done",
            'l=""; for x in $p; do case $x in -*) continue;; esac',
            "  c=$(tr '\\0\\n' '  ' < /proc/$x/cmdline 2>/dev/null | cut -c1-80)",
            '  l="${l:+$l, }$x (${c% })"',
            "done",
            'case $l in *,*) s=es; t="they are";; *) s=; t="it is";; esac',
            '[ -n "$l" ] && echo "cairn: could not kill process$s $l of this step:'
            ' $t still running (not ours to signal, or stuck in the kernel); end it by hand"',
            "exit 0",
        ]
    )
