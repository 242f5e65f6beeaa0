"""A throwaway PostgreSQL cluster on loopback for the tests, from Debian's ``postgresql`` package.

Debian keeps the server programs off PATH (``/usr/lib/postgresql/VERSION/bin``); ``cairn doctor``'s
table finds them, so a machine without them fails with the package to install. ``initdb`` and
``postgres`` refuse to run as root, and the tests run as root: the cluster then runs as the
``postgres`` system user the package creates, in a folder of its own under the system's temporary
folder (pytest's own temporary folders are closed to other users).

Every process of a cluster carries its folder's name (the data folder is inside it, and it is the
``cluster_name`` every child process shows), so :meth:`PgCluster.processes` counts only this
cluster's processes, never those of other clusters on the machine.

The server outlives whoever started it (``pg_ctl`` detaches it), and a pytest killed by SIGKILL, by
``timeout``'s SIGTERM or by pytest-timeout's ``os._exit`` runs no fixture teardown. So each cluster
has a watchdog: a small process reading a pipe only the test process holds; when that pipe closes,
however the test process ended, the watchdog stops the server and removes the folder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote

from engine.core import doctor
from engine.lab.base import free_port
from tests.procs import processes_with

HOST = "127.0.0.1"
SUPERUSER = "postgres"
"""The superuser ``initdb`` creates; it logs in without a password (trust) on loopback and the socket."""
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Database and role names the helpers accept: plain lower-case identifiers, never quoted."""
PROGRAM_TIMEOUT = 60.0
StopMode = Literal["smart", "fast", "immediate"]
"""``pg_ctl stop -m``: ``fast`` rolls back and disconnects; ``immediate`` skips the shutdown checkpoint
(like a crash: the next start recovers from the WAL)."""
SETTINGS: dict[str, str] = {
    # Several `cairn serve` with their pools share one cluster in the HA tests: room above the default 100.
    "max_connections": "200",
    "shared_buffers": "32MB",
}

HBA = f"""\
# Written by tests/postgres.py: the superuser without a password, every other role with its password.
# TYPE  DATABASE  USER         ADDRESS       METHOD
local   all       {SUPERUSER}                 trust
host    all       {SUPERUSER}  {HOST}/32  trust
local   all       all                       scram-sha-256
host    all       all          {HOST}/32  scram-sha-256
"""


WATCHDOG = """
import json, os, shutil, subprocess, sys
stop, root = json.loads(os.environ["CAIRN_PG_WATCHDOG"])
sys.stdin.buffer.read()  # returns once the test process closed the pipe, or died
if os.path.exists(os.path.join(root, "data", "postmaster.pid")):
    subprocess.run(stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
shutil.rmtree(root, ignore_errors=True)
"""
"""The watchdog's program (``python -c``). It learns the stop command and the cluster's folder from
its environment, not its arguments: :meth:`PgCluster.processes` finds processes by the folder's name."""


class PgError(Exception):
    """The cluster could not be set up, started, stopped or asked something; the message says why."""


def server_folder() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``, ``postgres``, ``psql``)."""
    found = [doctor.check_program(doctor.by_name(name)) for name in doctor.TEST_MARKERS["postgres"]]
    missing = [f"{f.program.name} ({f.problem})" for f in found if not f.ok]
    if missing:
        packages = " ".join(dict.fromkeys(f.program.package for f in found if not f.ok))
        raise PgError(
            f"PostgreSQL is not installed here: {', '.join(missing)}; "
            f"install it with: apt-get install -y --no-install-recommends {packages}"
        )
    initdb = found[0].path
    assert initdb is not None
    # A link on PATH (/usr/local/bin/initdb) must lead to the folder that also holds postgres and psql.
    return Path(os.path.realpath(initdb)).parent


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802; the format of
    ``pg_authid.rolpassword``), so the password itself is never sent to the server or its log."""
    salt, iterations = secrets.token_bytes(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def checked_name(name: str) -> str:
    """``name`` when it is a plain identifier (so SQL can hold it unquoted); else :class:`PgError`."""
    if not NAME.fullmatch(name):
        raise PgError(f"{name!r} is not a plain lower-case identifier (letters, digits, _)")
    return name


class PgCluster:
    """One PostgreSQL cluster on 127.0.0.1 (its own port, socket folder, data and log); see the module."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.bin = server_folder()
        self.root = Path(tempfile.mkdtemp(prefix="cairn-pg-"))
        self.name = self.root.name
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgresql.log"
        self.port = free_port(HOST)
        self.settings = {**SETTINGS, **(settings or {})}
        self.os_user = SUPERUSER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._watchdog = self._start_watchdog()

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the cluster the first time, then start it and wait until it takes connections."""
        if not (self.data / "PG_VERSION").exists():
            self._create()
        ran = self._run_as_owner(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
        )
        if ran.returncode != 0:
            raise PgError(
                f"pg_ctl start failed ({ran.stdout.strip()} {ran.stderr.strip()})\n{self.log_tail()}"
            )

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (see :data:`StopMode`) and wait until none of its processes is left."""
        if mode not in ("smart", "fast", "immediate"):
            raise PgError(f"unknown stop mode {mode!r}: smart, fast or immediate")
        if self.running:
            ran = self._run_as_owner("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            if ran.returncode != 0 and self.running:
                raise PgError(f"pg_ctl stop failed: {ran.stderr.strip()}\n{self.log_tail()}")
        self._wait_until_no_process()

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (``mode``) and start again: same port, same data."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the server at once if it runs and remove its folder; safe to call twice."""
        try:
            if self.root.exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self._end_watchdog()

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Does the postmaster of this cluster run (its pid file names a live process)?"""
        try:
            pid = int((self.data / "postmaster.pid").read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid in self.processes()

    def processes(self) -> list[int]:
        """Pids of this cluster's live processes: the postmaster and every child (see the module)."""
        return processes_with(self.name)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for messages about a failure."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---------------------------------------------------------------------------------- databases
    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """``postgresql://USER[:PASSWORD]@127.0.0.1:PORT/DATABASE`` (the password URL-quoted)."""
        secret = f":{quote(password, safe='')}" if password is not None else ""
        return f"postgresql://{quote(user, safe='')}{secret}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database owned by the superuser; its URL."""
        self.psql(f"CREATE DATABASE {checked_name(name)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even while servers still hold connections to it (PostgreSQL 13's FORCE)."""
        self.psql(f"DROP DATABASE IF EXISTS {checked_name(name)} WITH (FORCE)")

    def create_role(self, name: str, password: str, database: str = "postgres") -> str:
        """A login role that must give ``password`` (scram-sha-256), owning ``database`` unless that is
        ``postgres`` (so it may create tables there); the URL carrying the password. Roles belong to the
        whole cluster: an existing role gets the new password."""
        role = checked_name(name)
        verifier = scram_verifier(password)  # only the verifier travels: no plain password in any log
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
        verb = "ALTER" if exists else "CREATE"
        sql = [f"{verb} ROLE {role} LOGIN PASSWORD '{verifier}'"]
        if database != "postgres":
            sql.append(f"ALTER DATABASE {checked_name(database)} OWNER TO {role}")
        self.psql(";\n".join(sql) + ";")
        return self.url(database, role, password)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` (statements separated by ``;``, given on stdin) as the superuser; the rows psql
        prints, unaligned and without headers. A failing statement raises :class:`PgError`."""
        command = [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "-d", checked_name(database)]
        ran = subprocess.run(
            command, input=sql, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT,
            env=_without_libpq_settings(), check=False,
        )  # fmt: skip
        if ran.returncode != 0:
            raise PgError(f"psql on {database} failed: {ran.stderr.strip()}")
        return ran.stdout

    # ---------------------------------------------------------------------------------- inside
    def _create(self) -> None:
        """``initdb`` into a folder the server's user owns, then this cluster's settings and pg_hba."""
        self.data.mkdir()
        self.sockets.mkdir()
        if self.os_user != pwd.getpwuid(os.geteuid()).pw_name:
            for folder in (self.root, self.data, self.sockets):
                shutil.chown(folder, self.os_user, self.os_user)
        ran = self._run_as_owner(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
            "--no-sync",  # initdb's own fsync guards against an OS crash: nothing to guard in a test
        )  # fmt: skip
        if ran.returncode != 0:
            raise PgError(f"initdb failed: {ran.stderr.strip() or ran.stdout.strip()}")
        settings = {
            **self.settings,
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            "cluster_name": f"'{self.name}'",  # every child process shows it: see processes()
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data / "pg_hba.conf").write_text(HBA, encoding="utf-8")  # keeps initdb's owner and mode

    def _as_owner(self, program: str, *args: str) -> list[str]:
        """The command that runs one of the server programs as the cluster's user (``runuser`` as root)."""
        command = [str(self.bin / program), *args]
        if self.os_user != pwd.getpwuid(os.geteuid()).pw_name:
            command = ["runuser", "-u", self.os_user, "--", *command]
        return command

    def _run_as_owner(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the server programs as the cluster's user."""
        command = self._as_owner(program, *args)
        try:
            return subprocess.run(
                command, cwd=self.root, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT + 10,
                stdin=subprocess.DEVNULL, env=_without_libpq_settings(), check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgError(f"{program} could not be run: {exc}") from exc

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        """The process that cleans up after a test process that died without :meth:`close` (see the module)."""
        stop = self._as_owner("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop")
        return subprocess.Popen(
            [sys.executable, "-c", WATCHDOG],
            env=os.environ | {"CAIRN_PG_WATCHDOG": json.dumps([stop, str(self.root)])},
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or a signal to pytest's process group must not end it first
        )  # fmt: skip

    def _end_watchdog(self) -> None:
        if self._watchdog.stdin is not None and not self._watchdog.stdin.closed:
            self._watchdog.stdin.close()
        self._watchdog.wait(timeout=PROGRAM_TIMEOUT + 10)

    def _wait_until_no_process(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while left := self.processes():
            if time.monotonic() > deadline:
                raise PgError(f"PostgreSQL processes {left} of {self.name} still run after stop")
            time.sleep(0.05)


def _without_libpq_settings() -> dict[str, str]:
    """This environment without libpq's ``PG*`` variables, which would redirect psql and pg_ctl."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
