"""Real Unix accounts for approval tests: people who run ``cairn approve`` as themselves.

Cairn takes a decider's identity from the process's uid, never from ``$USER``, so a test of
"alice approves, bob approves, alice cannot approve twice" needs processes that really run as
alice and bob. :func:`ensure_people` creates (once per machine; the test-suite runs as root, as
CI does) the group ``cairn-t-sre`` and the accounts ``cairn-t-alice`` and ``cairn-t-bob`` in it,
and ``cairn-t-carol`` outside it; :meth:`Person.run` runs a command as one of them with
``setpriv`` (uid, gid and supplementary groups switched, environment reset to the account's,
then the variables the test gives).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GROUP = "cairn-t-sre"
HOMES = Path("/var/tmp/cairn-test-people")
ACCOUNTS = {"alice": True, "bob": True, "carol": False}
"""Short name → in :data:`GROUP`."""


@dataclass(frozen=True)
class Person:
    """A Unix account the tests run commands as."""

    short: str
    account: str
    uid: int
    home: Path

    def run(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``args`` run as this account (its groups too), with ``env`` added to its own environment."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={pwd.getpwuid(self.uid).pw_gid}",
                "--init-groups",
                "--reset-env",
                "env",
                *extra,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd or self.home,
        )


def _reachable(path: Path) -> None:
    """Let other accounts traverse to ``path`` (``o+x`` on each folder above it that lacks it).

    A Python built under ``/root`` (pyenv: ``/root`` is ``0700``) cannot be run by another account
    otherwise; traversal only, no listing, on a machine the test-suite runs on as root."""
    for folder in reversed(path.resolve().parents):
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


def ensure_people() -> dict[str, Person]:
    """The test accounts by short name, created when missing (needs root: CI runs the tests as root)."""
    if os.geteuid() != 0:
        raise RuntimeError(
            "the approval tests run cairn as other Unix accounts and create them: run the tests as root "
            "(as ./scripts/test does in CI)"
        )
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True, capture_output=True)
    HOMES.mkdir(mode=0o755, parents=True, exist_ok=True)
    _reachable(Path(sys.executable))
    _reachable(Path(__file__))
    people = {}
    for short, in_group in ACCOUNTS.items():
        account = f"cairn-t-{short}"
        home = HOMES / short
        try:
            entry = pwd.getpwnam(account)
        except KeyError:
            groups = ["-G", GROUP] if in_group else []
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--home-dir",
                    str(home),
                    "--create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    *groups,
                    account,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(account)
        home.mkdir(mode=0o755, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        people[short] = Person(short, account, entry.pw_uid, home)
    return people
