"""What a step's command finds in its environment, and how it gets there without a command line.

Two things go into every step's environment:

* **its mark**, ``CAIRN_STEP=<random token>``: inherited by every process the command starts,
  through ``setsid``, double forks and daemonising, so a timeout or cancel can find them all
  (:mod:`engine.core.executors.process_trees`). The token is no secret.
* **the run's secret inputs** (:attr:`Shell.env <engine.core.executors.Shell.env>`), which the
  command refers to as ``"$CAIRN_SECRET_<NAME>"``. A command line is readable by every user of
  the host (``/proc/*/cmdline``, ``ps``); an environment only by the process's own user and
  root. Locally they go into the subprocess's environment. Elsewhere they travel on the
  command's **stdin** as a small script (:func:`env_payload`) that the wrapper reads and
  evaluates first (:data:`ENV_READER`): over SSH (sshd's AcceptEnv normally refuses
  ``setenv``, and an exec request is a command line) and through Ansible (whose ``environment:``
  keyword puts ``NAME=value`` on the module's ``/bin/sh -c`` command line). The stdin is at its
  end after that, as a command's stdin always is here.

A command run as another user (``become``) gets both on stdin, locally too, mark included: sudo
resets the environment (:mod:`engine.core.executors.escalation`).
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping

from engine.core.errors import ExecutorError

STEP_ENV = "CAIRN_STEP"
"""The variable that marks every process of a step."""
ENV_READER = 'IFS= read -r -d "" cairn_env_ || true; eval "$cairn_env_"; unset cairn_env_; '
"""Bash that reads the variables from stdin (all of it: the payload has no NUL) and exports them."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def new_token() -> str:
    """A fresh mark for one step's processes."""
    return secrets.token_hex(8)


def checked_env(host: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as a dict, each name a shell variable name and each value free of NUL bytes."""
    for name, value in env.items():
        if not _NAME.fullmatch(name) or name == STEP_ENV:
            raise ExecutorError(host, f"{name!r} is not a valid environment variable name for a command")
        if "\x00" in value:
            raise ExecutorError(host, f"the value of {name} holds a NUL byte, which no environment can")
    return dict(env)


def env_payload(env: Mapping[str, str]) -> bytes:
    """The script :data:`ENV_READER` evaluates: one ``export NAME='value'`` line per variable."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items()).encode()


def mark(token: str) -> str:
    """Shell that exports the step's mark (POSIX sh: it may run in a login shell that is not bash)."""
    return f"{STEP_ENV}={token}; export {STEP_ENV}; "
