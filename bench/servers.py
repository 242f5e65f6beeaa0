"""What the store and HA benchmarks share: real ``cairn serve`` processes on loopback, the stores they
share (a SQLite file, or a database in a throwaway PostgreSQL cluster), and reads of those stores
through Cairn's own reader (:class:`~engine.core.store.database.Database` with ``write=False``), so
the same query works on both.

The PostgreSQL cluster is the tests' own (``tests/postgres.py``: Debian's ``postgresql`` package,
``initdb``/``pg_ctl`` as the ``postgres`` user when run as root, a watchdog that removes it if the
benchmark dies).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.machine import tool
from bench.timing import bench_env
from engine.lab.base import free_port

T = TypeVar("T")
TOKEN = "bench-token"
START_TIMEOUT_S = 30.0


def cairn_script() -> str:
    """The ``cairn`` console script beside this interpreter (else on PATH)."""
    found = tool("cairn")
    if found is None:
        raise RuntimeError("needs the `cairn` console script (pip install -e . in the venv)")
    return found


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    """A started throwaway PostgreSQL cluster (``tests.postgres.PgCluster``), removed afterwards."""
    from tests.postgres import PgCluster, PgError  # the tests' helper; imported only when needed

    try:
        cluster = PgCluster()
    except PgError as exc:
        raise RuntimeError(str(exc)) from exc
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def fresh_database(cluster: Any, label: str) -> str:
    """A new empty database in ``cluster``; its URL."""
    url: str = cluster.create_database(f"bench_{label}_{secrets.token_hex(3)}")
    return url


def wait_until(condition: Callable[[], T | None], what: str, timeout: float, every: float = 0.02) -> T:
    """The first value of ``condition`` that is not ``None`` (or false); RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


def read(store: str | Path, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query on ``store``, through Cairn's read-only connection (SQLite or PostgreSQL)."""
    from engine.core.store.database import Database

    db = Database(store, write=False, what="the benchmark's store")
    try:
        return db.read(statement, params)
    finally:
        db.close()


@dataclass
class Setup:
    """The files every server of one benchmark reads: runbooks, inventory, token."""

    root: Path
    runbooks: Path
    inventory: Path
    token_file: Path

    @classmethod
    def write(cls, root: Path, runbooks: dict[str, str], hosts: Sequence[str], group: str) -> Setup:
        """``runbooks`` (file stem → YAML) and an inventory of local-connection ``hosts`` in ``group``."""
        folder = root / "runbooks"
        folder.mkdir(parents=True)
        for stem, text in runbooks.items():
            (folder / f"{stem}.yaml").write_text(text.lstrip(), encoding="utf-8")
        inventory = root / "hosts.yml"
        lines = "".join(f"        {h}: {{ansible_connection: local}}\n" for h in hosts)
        inventory.write_text(f"all:\n  children:\n    {group}:\n      hosts:\n{lines}", encoding="utf-8")
        token_file = root / "token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        return cls(root, folder, inventory, token_file)


@dataclass
class Server:
    """One running ``cairn serve`` (its log in ``log``)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    id: str = ""
    """Its holder id in the store (``/healthz``'s ``server``)."""

    def get(self, path: str) -> tuple[int, Any]:
        """``GET path``: the status code and the JSON body (or the text)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def post(self, body: bytes) -> tuple[int, Any]:
        """``POST /alertmanager`` with the token."""
        request = urllib.request.Request(self.url + "/alertmanager", data=body, method="POST")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"cairn serve exited {self.process.returncode}: {self.log_tail()}")
        try:
            status, body = self.get("/healthz")
        except OSError:
            return False
        if status == 200 and isinstance(body, dict):
            self.id = str(body.get("server", ""))
            return True
        return False

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a stopped process is woken first), then SIGKILL if it has not exited in ``timeout`` s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Servers:
    """The ``cairn serve`` processes started on one store; :meth:`close` stops them all."""

    setup: Setup
    store: str | Path
    options: tuple[str, ...] = ()
    started: list[Server] = field(default_factory=list)

    def start(self, n: int = 1) -> list[Server]:
        """``n`` more servers, each answering ``/healthz`` with 200 before the next starts."""
        new = []
        for _ in range(n):
            server = self._spawn()
            self.started.append(server)
            wait_until(server.healthy, "cairn serve to answer /healthz", START_TIMEOUT_S, every=0.05)
            new.append(server)
        return new

    def _spawn(self) -> Server:
        port = free_port()
        log = self.setup.root / f"serve-{len(self.started)}.log"
        argv = [
            cairn_script(), "serve", "--listen", f"127.0.0.1:{port}",
            "--token-file", str(self.setup.token_file), "--runbooks", str(self.setup.runbooks),
            "-i", str(self.setup.inventory), "--journal", str(self.store), *self.options,
        ]  # fmt: skip
        with log.open("wb") as err:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=self._env()
            )
        return Server(f"http://127.0.0.1:{port}", process, log)

    def _env(self) -> dict[str, str]:
        # Every server keeps its run artifacts under the benchmark's folder, not the user's state folder.
        return bench_env() | {"XDG_STATE_HOME": str(self.setup.root / "state")}

    def live(self) -> list[Server]:
        return [s for s in self.started if s.process.poll() is None]

    def close(self) -> None:
        for server in self.started:
            server.stop()


def webhook(*alerts: dict[str, Any]) -> bytes:
    """An Alertmanager webhook (payload version 4) carrying ``alerts``."""
    return json.dumps(
        {"version": "4", "receiver": "cairn", "groupKey": "{}", "status": "firing", "alerts": list(alerts)}
    ).encode()


def alert(name: str, node: str, fingerprint: str) -> dict[str, Any]:
    """One firing alert ``alertname=name`` on ``node``."""
    return {
        "status": "firing",
        "labels": {"alertname": name, "node": node},
        "annotations": {},
        "fingerprint": fingerprint,
    }


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the live processes ``pids`` have used (all their threads; not their
    children). A process that ended meanwhile is not counted."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot (``/proc/stat``; idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]]
    total = sum(values[:8])  # guest time is already inside user and nice
    return total - values[3] - values[4], total


@dataclass
class CpuMeter:
    """Where the CPU went over a span: the servers, PostgreSQL's processes, this process (the clients),
    and how busy the machine was (a share of all its cores)."""

    servers: Callable[[], list[int]]
    database: Callable[[], list[int]]

    def snapshot(self) -> tuple[float, float, float, tuple[int, int]]:
        return (
            cpu_seconds(self.servers()),
            cpu_seconds(self.database()),
            time.process_time(),
            machine_ticks(),
        )

    @staticmethod
    def spent(
        before: tuple[float, float, float, tuple[int, int]],
        after: tuple[float, float, float, tuple[int, int]],
    ) -> dict[str, float]:
        busy, total = (after[3][0] - before[3][0]), (after[3][1] - before[3][1])
        return {
            "servers_s": after[0] - before[0],
            "postgresql_s": after[1] - before[1],
            "client_s": after[2] - before[2],
            "machine_busy": busy / total if total else 0.0,
        }
