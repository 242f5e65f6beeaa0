"""Real Unix accounts for approval tests: people who run ``cairn approve`` as themselves.

Cairn takes a decider's identity from the process's uid, never from ``$USER``, so a test of
"alice approves, bob approves, alice cannot approve twice" needs processes that really run as
alice and bob. :func:`ensure_people` creates (once per machine; the test-suite runs as root, as
CI does) the group ``cairn-t-sre`` and the accounts ``cairn-t-alice`` and ``cairn-t-bob`` in it,
and ``cairn-t-carol`` outside it; :meth:`Person.run` runs a command as one of them with
``setpriv`` (uid, gid and supplementary groups switched, environment reset to the account's,
then the variables the test gives).

For the ``become`` tests: :func:`sudo_rules` installs a sudoers file for the length of a test
(mode 0440, checked with ``visudo -cf`` first, removed after), :func:`password_of` gives an
account a password (``chpasswd``) and :func:`login_shell` lets it log in over SSH (bash, not
locked); both put the account back as it was afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
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
        return subprocess.run(
            self.command(args, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd or self.home,
        )

    def command(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """The argv that runs ``args`` as this account (for a test that starts it with ``Popen``)."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={pwd.getpwuid(self.uid).pw_gid}",
            "--init-groups",
            "--reset-env",
            "env",
            *extra,
            *args,
        ]


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


SUDOERS_D = Path("/etc/sudoers.d")


class SudoMissing(RuntimeError):
    """sudo (or visudo) is not installed here: the become tests need the Debian package sudo."""


@contextlib.contextmanager
def sudo_rules(text: str) -> Iterator[Path]:
    """``text`` as a sudoers file in /etc/sudoers.d for the ``with`` block (0440, checked with
    ``visudo -cf`` before it is installed, so a typo cannot break sudo for the machine); removed after."""
    if shutil.which("sudo") is None or shutil.which("visudo") is None:
        raise SudoMissing("the become tests need sudo and visudo: apt-get install sudo")
    SUDOERS_D.mkdir(mode=0o755, exist_ok=True)
    # A name without a dot: sudo's @includedir skips files whose name holds one (or ends in ~).
    path = SUDOERS_D / f"cairn-test-{secrets.token_hex(6)}"
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    staged.chmod(0o440)
    checked = subprocess.run(["visudo", "-cf", str(staged)], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        staged.unlink()
        raise ValueError(f"sudoers text refused by visudo: {checked.stdout}{checked.stderr}")
    staged.rename(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _shadow_hash(account: str) -> str:
    for line in Path("/etc/shadow").read_text(encoding="utf-8").splitlines():
        name, _, rest = line.partition(":")
        if name == account:
            return rest.split(":", 1)[0]
    raise KeyError(account)


@contextlib.contextmanager
def password_of(person: Person, password: str) -> Iterator[None]:
    """``person``'s Unix password is ``password`` for the ``with`` block (``chpasswd``); then as before."""
    before = _shadow_hash(person.account)
    subprocess.run(
        ["chpasswd"], input=f"{person.account}:{password}\n", text=True, check=True, capture_output=True
    )
    try:
        yield
    finally:
        subprocess.run(["usermod", "-p", before, person.account], check=True, capture_output=True)


@contextlib.contextmanager
def login_shell(person: Person) -> Iterator[None]:
    """``person`` may log in over SSH for the ``with`` block: bash as the shell, and (sshd without
    PAM refuses a locked account) no ``!`` lock — a password set inside stays until its own block ends."""
    entry = pwd.getpwnam(person.account)
    before = _shadow_hash(person.account)
    subprocess.run(["usermod", "-s", "/bin/bash", person.account], check=True, capture_output=True)
    if before.startswith("!"):
        subprocess.run(["usermod", "-p", "*", person.account], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["usermod", "-s", entry.pw_shell, person.account], check=True, capture_output=True)
        if before.startswith("!") and _shadow_hash(person.account) == "*":
            subprocess.run(["usermod", "-p", before, person.account], check=True, capture_output=True)
