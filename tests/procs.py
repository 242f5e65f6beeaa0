"""The processes of this machine as the tests look at them: by what their command line holds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def processes_with(needle: str) -> list[int]:
    """Pids of live processes (zombies excluded) whose command line contains ``needle``; not this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # it ended while we looked
        if needle.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``condition()`` every 50 ms until it is true or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
