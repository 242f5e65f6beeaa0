"""Real Prometheus Alertmanagers clustered together on loopback, for the tests of `cairn serve` in HA.

Each instance gossips with the others (``--cluster.listen-address`` / ``--cluster.peer``) and has its
own API port and storage. What a cluster shares is the silences and the notification log (so one
notification goes out for a group, not one per instance); it does **not** share alerts: like
Prometheus, a test posts each alert to every instance (:func:`post_alerts_to_all`).

Gossip is made fast here (``--cluster.gossip-interval=20ms``, push-pull every second): the cluster
settles in about a second instead of about ten, and Alertmanager holds back the first notification
until it has settled.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.lab.base import free_port

HOST = "127.0.0.1"
PROGRAM = "prometheus-alertmanager"
FAST_GOSSIP = (
    "--cluster.gossip-interval=20ms",
    "--cluster.pushpull-interval=1s",
    "--cluster.settle-timeout=10s",  # a bound: the cluster settles in ~1 s with the two above
)


class AlertmanagerError(Exception):
    """A cluster did not come up (an instance ended, or it never saw all its peers): the message says why."""


def webhook_config(
    urls: Sequence[str],
    token: str,
    *,
    group_by: Sequence[str] = ("alertname",),
    group_wait: str = "0s",
    group_interval: str = "100ms",
    repeat_interval: str = "1h",
) -> str:
    """An ``alertmanager.yml`` whose one receiver sends every group to each of ``urls`` (one per
    `cairn serve`: the full webhook URL, ``…/alertmanager``) with ``token`` as bearer, resolved too."""
    hooks = "".join(
        f"      - url: {json.dumps(url)}\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials: {json.dumps(token)}\n"
        for url in urls
    )
    return (
        "route:\n"
        "  receiver: cairn\n"
        f"  group_by: {json.dumps(list(group_by))}\n"
        f"  group_wait: {group_wait}\n"
        f"  group_interval: {group_interval}\n"
        f"  repeat_interval: {repeat_interval}\n"
        "receivers:\n"
        "  - name: cairn\n"
        "    webhook_configs:\n" + hooks
    )


@dataclass
class AlertmanagerCluster:
    """Started instances: their API URLs (``http://127.0.0.1:PORT``), processes and logs, in order."""

    apis: list[str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """Kill every instance and reap it.

        SIGKILL, not SIGTERM: on SIGTERM the last instance waits 10 s for a "leave" broadcast that
        no peer is left to receive (measured), and nothing of theirs needs a graceful end.
        """
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()

    def log_tails(self, lines: int = 5) -> str:
        """The end of each instance's log, for a failure message."""
        parts = []
        for api, log in zip(self.apis, self.logs, strict=True):
            text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            parts.append(f"--- {api} ({log}):\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


def start_cluster(
    n: int, receivers_config: str, tmp_path: Path, *, peer_timeout: str = "15s", timeout: float = 60.0
) -> AlertmanagerCluster:
    """Start ``n`` instances with the config text ``receivers_config`` (see :func:`webhook_config`),
    each a peer of all the others; return once every one is ready and sees ``n`` peers.

    ``peer_timeout`` is how long the instance in position ``k`` waits ``k`` times before it notifies
    too (when the earlier ones seem not to have): Alertmanager's default, 15 s, unless a test wants a
    quicker takeover. On failure every started instance is stopped again.
    """
    if n < 1:
        raise ValueError("a cluster has at least one Alertmanager")
    config = tmp_path / "alertmanager-cluster.yml"
    config.write_text(receivers_config, encoding="utf-8")
    web_ports = [free_port(HOST) for _ in range(n)]
    gossip_ports = [free_port(HOST) for _ in range(n)]
    cluster = AlertmanagerCluster([f"http://{HOST}:{port}" for port in web_ports])
    try:
        for index in range(n):
            peers = [f"--cluster.peer={HOST}:{p}" for i, p in enumerate(gossip_ports) if i != index]
            log = tmp_path / f"alertmanager-{index}.log"
            cluster.logs.append(log)
            with log.open("wb") as sink:
                cluster.processes.append(
                    subprocess.Popen(
                        [
                            PROGRAM,
                            f"--config.file={config}",
                            f"--storage.path={tmp_path / f'alertmanager-{index}'}",
                            f"--web.listen-address={HOST}:{web_ports[index]}",
                            f"--cluster.listen-address={HOST}:{gossip_ports[index]}",
                            f"--cluster.peer-timeout={peer_timeout}",
                            *FAST_GOSSIP,
                            *peers,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=sink,
                    )
                )
        _wait_until_settled(cluster, n, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_until_settled(cluster: AlertmanagerCluster, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ended = [api for api, p in zip(cluster.apis, cluster.processes, strict=True) if p.poll() is not None]
        if ended:
            raise AlertmanagerError(f"Alertmanager {', '.join(ended)} ended at start\n{cluster.log_tails()}")
        seen = [cluster_status(api) for api in cluster.apis]
        if all(status == ("ready", n) for status in seen):
            return
        if time.monotonic() > deadline:
            raise AlertmanagerError(
                f"the {n} Alertmanagers did not all become ready with {n} peers in {timeout:.0f} s "
                f"(status, peers: {seen})\n{cluster.log_tails()}"
            )
        time.sleep(0.05)


def cluster_status(api: str) -> tuple[str, int] | None:
    """``(cluster.status, number of peers)`` from ``GET /api/v2/status``; None while it does not answer."""
    try:
        status = get_json(api, "/api/v2/status")
    except OSError:
        return None
    return str(status["cluster"]["status"]), len(status["cluster"].get("peers") or [])


def get_json(api: str, path: str) -> Any:
    """``GET api + path`` as JSON."""
    with urllib.request.urlopen(api + path, timeout=10) as answer:
        return json.load(answer)


def post_json(api: str, path: str, body: Any) -> Any:
    """``POST`` JSON to ``api + path``; the answer as JSON (None when empty)."""
    request = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        raw = answer.read()
    return json.loads(raw) if raw.strip() else None


def post_alerts(api: str, alerts: list[dict[str, Any]]) -> None:
    """Post ``alerts`` (``{"labels": …}``, and ``endsAt`` to resolve) to one instance's API."""
    post_json(api, "/api/v2/alerts", alerts)


def post_alerts_to_all(apis: Sequence[str], alerts: list[dict[str, Any]]) -> None:
    """What Prometheus does with an HA pair: the same alerts to every instance."""
    for api in apis:
        post_alerts(api, alerts)
