"""What the `cairn serve` tests share: the real server on loopback, real HTTP, the journal read back.

``serve(...)`` starts a real ``cairn serve``; call it several times for several servers on one store
(the test's SQLite file by default, or ``journal=postgres_url``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from engine.core.journal_read import JournalReader, RunRecord
from engine.core.queue_read import Entry, EntryState, QueueReader
from engine.core.store.location import locate
from engine.lab.base import free_port
from tests.conftest import FIXTURES, REPO, cairn_command

TOKEN = "s3cret-webhook-token"

T = TypeVar("T")


Store = Path | str
"""A store the tests name: a SQLite file, or a PostgreSQL URL."""


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    journal: Store
    stderr: Path

    def post(
        self, body: bytes | str, *, token: str | None = TOKEN, path: str = "/alertmanager"
    ) -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        return _send(request)

    def get(self, path: str) -> tuple[int, Any]:
        return _send(urllib.request.Request(self.url + path))

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: its code and its JSON body."""
        code, body = self.get("/healthz")
        assert isinstance(body, dict), body
        return code, body

    @property
    def server_id(self) -> str:
        """This server's holder id in the store (what its entries and runs carry)."""
        return str(self.health()[1]["server"])

    def diagnosis(self) -> str:
        """What the server logged and where its queue and runs are: for a failure message."""
        lines = [
            f"entry {e.id} {e.runbook_id}@{e.target}: {e.state.value} {e.note}" for e in entries(self.journal)
        ]
        lines += [f"run {r.id} {r.hosts}: {r.status.value}" for r in runs(self.journal)]
        return "\n".join(["cairn serve's log:", self.stderr.read_text()[-4000:], *lines])


def _send(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read().decode()
            code = answer.status
    except urllib.error.HTTPError as error:
        raw, code = error.read().decode(), error.code
    try:
        return code, json.loads(raw)
    except json.JSONDecodeError:
        return code, raw


def webhook(*alerts: dict[str, Any]) -> str:
    body = json.loads((FIXTURES / "alertmanager" / "firing.json").read_text())
    body["alerts"] = list(alerts)
    return json.dumps(body)


def alert(status: str = "firing", fingerprint: str = "", **labels: str) -> dict[str, Any]:
    base: dict[str, Any] = json.loads((FIXTURES / "alertmanager" / "firing.json").read_text())["alerts"][0]
    return base | {"status": status, "labels": labels, "fingerprint": fingerprint or uuid.uuid4().hex[:16]}


def wait_for(condition: Callable[[], T | Literal[False] | None], what: str, timeout: float = 60) -> T:
    """The condition's first truthy value; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def runs(journal: Store) -> list[RunRecord]:
    """The runs in the store (the last 1000), newest first, read as `cairn history` reads them (nothing written)."""
    where = locate(journal)
    if where.path is not None and not where.path.exists():
        return []
    opened = JournalReader(where)
    try:
        return [opened.get_run(r.id) for r in opened.list_runs(limit=1000)]
    finally:
        opened.close()


def entries(journal: Store, *states: EntryState) -> list[Entry]:
    """The queue's entries (in ``states``), as `cairn queue` reads them."""
    queue = QueueReader(locate(journal))
    try:
        return queue.entries(*states)
    finally:
        queue.close()


def servers(journal: Store) -> dict[str, dict[str, Any]]:
    """Every server that held work in the store, by holder id: its state (live, released, lapsed), note …"""
    queue = QueueReader(locate(journal))
    try:
        return {str(s["id"]): s for s in queue.servers()}
    finally:
        queue.close()


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    web:\n      hosts:\n"
        "        web-1: {ansible_connection: local}\n        web-2: {ansible_connection: local}\n"
        "    db:\n      hosts:\n        db-1: {ansible_connection: local}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def serve(
    tmp_path: Path, runbook_dir: Callable[..., Path], inventory: Path, journal_path: Path
) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(
        *extra: str, runbook: str | None = None, hosts: str | None = None, journal: Store | None = None
    ) -> Served:
        """``runbook``: the YAML of the one runbook to serve (default: the bundled runbooks);
        ``hosts``: an inventory (default: web-1, web-2 in ``web``, db-1 in ``db``); ``journal``: the
        store (default: the test's journal file). Each call starts one more server: several on one
        ``journal`` share its work."""
        store = journal_path if journal is None else journal
        folder = runbook_dir(runbook) if runbook is not None else REPO / "runbooks"
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        port = free_port()
        stderr = tmp_path / f"serve-{len(started)}.log"
        log = stack.enter_context(stderr.open("w"))
        process = subprocess.Popen(
            [
                *cairn_command(),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--token-file",
                str(token_file),
                "--runbooks",
                str(folder),
                "-i",
                hosts or str(inventory),
                "--journal",
                str(store),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=os.environ,
        )
        served = Served(f"http://127.0.0.1:{port}", process, store, stderr)
        started.append(served)

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"cairn serve exited: {stderr.read_text()}")
            try:
                return served.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, "cairn serve to answer /healthz", timeout=30)
        return served

    with contextlib.ExitStack() as stack:
        yield start
        for served in started:
            if served.process.poll() is None:
                served.process.kill()
            served.process.wait()
