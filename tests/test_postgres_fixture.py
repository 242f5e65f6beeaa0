"""The real components the HA tests stand on: a throwaway PostgreSQL (tests/postgres.py) and clustered
Alertmanagers (tests/alertmanagers.py), each checked the way the tests will use it."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from engine.core import doctor
from tests.alertmanagers import get_json, post_alerts_to_all, post_json, webhook_config
from tests.cli.conftest import wait_for
from tests.conftest import REPO, AlertmanagerClusterStarter, alive
from tests.postgres import PgCluster, StopMode
from tests.procs import processes_with

PASSWORD = "pa:ss/w@rd%!"  # every character a URL must quote


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows ``sql`` returns (an empty list for a statement that returns none)."""
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.mark.postgres
def test_each_test_gets_a_fresh_database_that_answers_through_psycopg(postgres_url: str) -> None:
    name = urlsplit(postgres_url).path.lstrip("/")
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    assert query(postgres_url, "SELECT 1, current_database(), current_user") == [(1, name, "postgres")]
    assert query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_keeps_the_port_and_the_committed_data(
    pg_cluster: PgCluster, postgres_url: str, mode: StopMode
) -> None:
    port = pg_cluster.port
    query(postgres_url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2)")
    held = psycopg.connect(postgres_url, connect_timeout=10, autocommit=True)
    try:
        pg_cluster.restart(mode)  # immediate: like a crash, recovered from the WAL at start
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # what a server holding a connection sees across the restart
    finally:
        held.close()
    assert pg_cluster.port == port
    assert query(postgres_url, "SELECT n FROM kept ORDER BY n") == [(1,), (2,)]


@pytest.mark.postgres
def test_stop_leaves_no_postgresql_process_and_close_removes_everything(own_pg_cluster: PgCluster) -> None:
    url = own_pg_cluster.create_database("busy")
    connection = psycopg.connect(url, connect_timeout=10, autocommit=True)
    try:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        started = own_pg_cluster.processes()
        assert backend[0] in started and len(started) >= 2  # the postmaster, its helpers, this backend
        own_pg_cluster.stop("immediate")  # with a client still connected
    finally:
        connection.close()
    assert own_pg_cluster.processes() == []
    assert not [pid for pid in started if alive(pid)]
    assert not own_pg_cluster.running
    own_pg_cluster.close()
    assert not own_pg_cluster.root.exists()


@pytest.mark.postgres
def test_a_cluster_whose_test_process_is_killed_stops_and_is_removed_all_the_same() -> None:
    """SIGKILL (or `timeout`'s SIGTERM) of pytest runs no fixture teardown: a watchdog cleans up."""
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        name, root = owner.stdout.readline().split()
        try:
            assert processes_with(name), "the cluster runs while its owner lives"
        finally:
            owner.kill()
    wait_for(lambda: not processes_with(name) and not Path(root).exists(), "the cluster to go", timeout=60)


KILLED_OWNER = """
import sys, time
from tests.postgres import PgCluster
cluster = PgCluster()
cluster.start()
print(cluster.name, cluster.root, flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
def test_a_role_with_a_password_logs_in_with_it_only_and_the_password_is_nowhere_in_the_log(
    pg_cluster: PgCluster, postgres_url: str
) -> None:
    database = urlsplit(postgres_url).path.lstrip("/")
    role = f"r_{database[-8:]}"
    url = pg_cluster.create_role(role, PASSWORD, database)
    assert url == pg_cluster.url(database, role, PASSWORD)
    assert urlsplit(url).password == "pa%3Ass%2Fw%40rd%25%21"  # quoted in the URL
    query(url, "CREATE TABLE owned (n int)")  # it owns the database, so it may create tables
    assert query(url, "SELECT current_user") == [(role,)]

    for wrong in (pg_cluster.url(database, role, "not-it"), pg_cluster.url(database, role)):
        with pytest.raises(psycopg.OperationalError) as refused:
            query(wrong, "SELECT 1")
        assert f'password authentication failed for user "{role}"' in str(refused.value) or (
            "no password supplied" in str(refused.value)
        )
    log = pg_cluster.log.read_text(encoding="utf-8", errors="replace")
    assert f'password authentication failed for user "{role}"' in log
    assert PASSWORD not in log and "pa:ss" not in log  # only its SCRAM verifier ever went to the server


def test_the_fixtures_fail_naming_the_package_where_postgresql_is_missing(tmp_path: Path) -> None:
    """Fail, never skip: a machine without /usr/lib/postgresql (hidden under an empty tmpfs)."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_needs_postgres.py").write_text(
        textwrap.dedent(
            """
            def test_store(postgres_url):
                raise AssertionError("the fixture should have stopped this test before it ran")
            """
        ),
        encoding="utf-8",
    )
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "bash").symlink_to("/bin/bash")
    unshare, mount = doctor.locate("unshare"), doctor.locate("mount")
    assert unshare and mount, "util-linux's unshare and mount build this test's machine"
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
         f'{mount} -t tmpfs cairn-no-postgres /usr/lib/postgresql && exec "$@"', "sh",
         sys.executable, "-m", "pytest", str(tests), "-p", "tests.conftest", "-q", "--rootdir", str(REPO)],
        cwd=REPO, env=os.environ | {"PATH": str(bin_folder)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout
    assert "this test needs initdb (not found on PATH, in /usr/sbin or in /usr/lib/postgresql/*/bin; " in (
        done.stdout
    )
    assert "apt-get install postgresql)" in done.stdout
    assert "should have stopped" not in done.stdout


# ---------------------------------------------------------------------------- clustered Alertmanagers

TOKEN = "am-cluster-test-token"


@dataclass
class Webhooks:
    """A loopback HTTP server standing in for `cairn serve`: records each POST by path."""

    url: str
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def alertnames(self, path: str) -> set[str]:
        return {
            alert["labels"]["alertname"]
            for got_path, bearer, body in list(self.received)
            if got_path == path and bearer == f"Bearer {TOKEN}"
            for alert in body["alerts"]
        }


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    record = Webhooks("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            record.received.append((self.path, self.headers.get("Authorization", ""), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.alertmanager
def test_two_clustered_alertmanagers_see_each_other_share_silences_and_notify_every_webhook(
    alertmanager_cluster: AlertmanagerClusterStarter, webhooks: Webhooks
) -> None:
    hooks = [f"{webhooks.url}/one/alertmanager", f"{webhooks.url}/two/alertmanager"]
    first, second = alertmanager_cluster(2, webhook_config(hooks, TOKEN)).apis

    for api in (first, second):
        cluster = get_json(api, "/api/v2/status")["cluster"]
        assert (cluster["status"], len(cluster["peers"])) == ("ready", 2)

    # Gossip: a silence made on one is there on the other (alerts themselves are not shared).
    now = datetime.datetime.now(datetime.UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "Quiet", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + datetime.timedelta(hours=1)).isoformat(),
        "createdBy": "tests",
        "comment": "gossip check",
    }
    made = post_json(first, "/api/v2/silences", silence)["silenceID"]
    wait_for(
        lambda: made in {s["id"] for s in get_json(second, "/api/v2/silences")},
        "the silence to reach the other Alertmanager",
        timeout=30,
    )

    # An alert posted to both, as Prometheus does, reaches every webhook of the receiver with the token.
    post_alerts_to_all([first, second], [{"labels": {"alertname": "DiskFull", "instance": "web-1"}}])
    for api in (first, second):
        assert [a["labels"]["alertname"] for a in get_json(api, "/api/v2/alerts")] == ["DiskFull"]
    wait_for(
        lambda: all("DiskFull" in webhooks.alertnames(f"/{hook}/alertmanager") for hook in ("one", "two")),
        "the notification at both webhook URLs",
        timeout=30,
    )
